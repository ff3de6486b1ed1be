//! Twin payloads and result codes against the conformance vectors and protocol-reference §5.

use duhub_proto::UpdateId;
use duhub_proto::result::{
    ExtendedResultCode, ExtendedResultCodes, Facility, InstallResult, ResultCode, ResultCodeError,
};
use duhub_proto::twin::{
    AgentProperties, AgentState, CONTRACT_MODEL_V2, CONTRACT_MODEL_V3, DesiredService, DeviceProperties,
    LastInstallResult, ServiceAck, ServiceProperties, StepResult, TwinError, UpdateAction, UpdateManifestField,
    Workflow,
};
use indexmap::IndexMap;
use serde_json::{Value, json};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vectors");

fn vector_bytes(relative: &str) -> Vec<u8> {
    let path = format!("{VECTORS}/{relative}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn vector(relative: &str) -> Value {
    serde_json::from_slice(&vector_bytes(relative)).unwrap_or_else(|e| panic!("{relative} is not JSON: {e}"))
}

fn agent_of(doc: &Value) -> AgentProperties {
    AgentProperties::locate(doc).expect("parses").expect("holds an agent object")
}

// ---------------------------------------------------------------------------------------------
// Extended result codes
// ---------------------------------------------------------------------------------------------

#[test]
fn erc_bit_layout_and_format() {
    let erc = ExtendedResultCode(0xA020_0004);
    assert_eq!(erc.facility(), 0xA);
    assert_eq!(erc.component(), 2);
    assert_eq!(erc.value(), 4);
    assert_eq!(erc.known_facility(), Some(Facility::InfraMgmt));
    assert_eq!(erc.to_string(), "A0200004");
    assert_eq!(ExtendedResultCode::new(Facility::InfraMgmt, 2, 4), erc);
    assert_eq!(ExtendedResultCode::JWS_INVALID_SIGNATURE, erc);
    assert_eq!("0xa0200004".parse::<ExtendedResultCode>(), Ok(erc));
}

#[test]
fn erc_negative_i32_is_twos_complement() {
    assert_eq!(ExtendedResultCode::from_i32(-1).to_string(), "FFFFFFFF");
    assert_eq!(ExtendedResultCode::from_i32(-2_144_337_919), ExtendedResultCode::MANIFEST_VALIDATION_FAILED);
    assert_eq!(ExtendedResultCode::MANIFEST_VALIDATION_FAILED.as_i32(), -2_144_337_919);
    assert_eq!(ExtendedResultCode::from_i32(-2_144_337_919).to_string(), "80300001");
}

#[test]
fn extended_result_codes_round_trip() -> Result<(), ResultCodeError> {
    let codes: ExtendedResultCodes = "00000000,A0000FFF".parse()?;
    assert_eq!(codes.root(), ExtendedResultCode::NONE);
    assert_eq!(codes.extra(), [ExtendedResultCode::ROOTKEY_PKG_UNCHANGED]);
    assert_eq!(codes.to_string(), "00000000,A0000FFF");
    assert_eq!("0, a0000fff".parse::<ExtendedResultCodes>()?.to_string(), "00000000,A0000FFF");
    assert!(matches!("00000000,garbage".parse::<ExtendedResultCodes>(), Err(ResultCodeError::NotHex(_))));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reported vectors
// ---------------------------------------------------------------------------------------------

fn vacuum_bundle_report(agent: &AgentProperties) {
    let result = agent.last_install_result.as_ref().expect("lastInstallResult");
    assert_eq!(result.result_code, ResultCode::DEPLOYMENT_IN_PROGRESS);
    assert_eq!(result.legacy_extended_result_code, Some(ExtendedResultCode::NONE));
    assert_eq!(result.extended_result_codes, None);
    assert_eq!(result.result_details.as_deref(), Some(""));
    assert_eq!(result.step_results, None);
    assert_eq!(agent.state, Some(AgentState::Idle));
    assert_eq!(agent.action(), Some(UpdateAction::ProcessDeployment));
    assert_eq!(agent.workflow_id(), Some("e99c69ca-3188-43a3-80af-310616c7751d"));
    assert_eq!(agent.installed_update(), Some(UpdateId::new("Contoso", "VacuumBundleUpdate", "1.0")));
    assert_eq!(agent.device_properties, None);
}

fn check_reported_vector(name: &str) {
    let doc = vector(&format!("reported/{name}"));
    match name {
        "agent-testdata_expectedClientReportingStringAfterReboot.json" => {
            let agent = agent_of(&doc);
            assert_eq!(agent.result_code(), Some(ResultCode::APPLY_SUCCESS));
            assert_eq!(agent.extended_result_code(), Some(ExtendedResultCode::NONE));
            let result = agent.last_install_result.as_ref().expect("lastInstallResult");
            assert_eq!(result.result_details.as_deref(), Some(""));
            assert_eq!(agent.state, Some(AgentState::Idle));
            assert_eq!(
                agent.workflow,
                Some(Workflow::new(UpdateAction::ProcessDeployment, "e99c69ca-3188-43a3-80af-310616c7751d"))
            );
            assert_eq!(agent.installed_update(), Some(UpdateId::new("Contoso", "Virtual-Vacuum", "20.0")));
        }
        "agent-testdata_expectedPersistedReportingJson.json" => vacuum_bundle_report(&agent_of(&doc)),
        "agent-testdata_expectedPersistedWorkflowData.json" => {
            let reporting = doc["ReportingJson"].as_str().expect("ReportingJson string");
            let agent = AgentProperties::from_slice(reporting.as_bytes()).expect("parses").expect("agent object");
            vacuum_bundle_report(&agent);
            let persisted = agent_of(&vector("reported/agent-testdata_expectedPersistedReportingJson.json"));
            assert_eq!(agent, persisted);
        }
        "azsdkc_agent-state_idle.json" => {
            let agent = agent_of(&doc);
            let properties = agent.device_properties.as_ref().expect("deviceProperties");
            assert_eq!(properties.manufacturer, "Contoso");
            assert_eq!(properties.model, "Foobar");
            assert_eq!(properties.contract_model_id.as_deref(), Some(CONTRACT_MODEL_V2));
            assert_eq!(properties.adu_ver.as_deref(), Some("DU;agent/1.0.0"));
            assert_eq!(properties.interface_id, None);
            assert!(properties.additional.is_empty());
            assert_eq!(agent.compat_property_names.as_deref(), Some("manufacturer,model"));
            assert_eq!(agent.state, Some(AgentState::Idle));
            assert_eq!(agent.last_install_result, None);
            assert_eq!(agent.workflow, None);
            assert_eq!(agent.installed_update(), Some(UpdateId::new("Contoso", "Foobar", "1.0")));
        }
        "azsdkc_agent-state_with-result.json" | "azsdkc_agent-state_with-retryTimestamp.json" => {
            let agent = agent_of(&doc);
            assert_eq!(agent.result_code(), Some(ResultCode::FAILURE));
            assert_eq!(agent.extended_result_code(), Some(ExtendedResultCode(1234)));
            let result = agent.last_install_result.as_ref().expect("lastInstallResult");
            assert_eq!(result.result_details.as_deref(), Some("Ok"));
            assert!(result.other.is_empty());
            let steps = result.steps();
            assert_eq!(steps.len(), 1);
            assert_eq!(steps[0].0, "step_0");
            assert_eq!(steps[0].1.result_code, ResultCode::FAILURE);
            assert_eq!(steps[0].1.extended_result_code(), Some(ExtendedResultCode(0x4D2)));
            assert_eq!(steps[0].1.result_details.as_deref(), Some("Ok"));
            assert_eq!(agent.state, Some(AgentState::Idle));
            assert_eq!(agent.workflow_id(), Some("51552a54-765e-419f-892a-c822549b6f38"));
            let retry = agent.workflow.as_ref().and_then(|w| w.retry_timestamp.as_deref());
            if name.contains("retryTimestamp") {
                assert_eq!(retry, Some("2022-01-26T11:33:29.9680598Z"));
            } else {
                assert_eq!(retry, None);
            }
            let properties = agent.device_properties.as_ref().expect("deviceProperties");
            assert_eq!(properties.contract_model_id.as_deref(), Some(CONTRACT_MODEL_V2));
        }
        "azsdkc_service-ack.json" => {
            let ack = ServiceAck::locate(&doc).expect("parses").expect("ack");
            assert_eq!(ack, ServiceAck { value: json!({}), ac: 200, ad: None, av: Some(1) });
            assert_eq!(AgentProperties::locate(&doc), Ok(None));
        }
        other => panic!("reported vector {other} is not covered by this test"),
    }
}

#[test]
fn every_reported_vector_parses() {
    let mut names: Vec<String> = std::fs::read_dir(format!("{VECTORS}/reported"))
        .expect("reported vectors")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 7, "{names:?}");
    for name in &names {
        check_reported_vector(name);
    }
}

#[test]
fn reported_vectors_round_trip_through_the_model() {
    for name in [
        "agent-testdata_expectedClientReportingStringAfterReboot.json",
        "azsdkc_agent-state_idle.json",
        "azsdkc_agent-state_with-result.json",
        "azsdkc_agent-state_with-retryTimestamp.json",
    ] {
        let doc = vector(&format!("reported/{name}"));
        assert_eq!(agent_of(&doc).to_patch(), doc, "{name}");
    }
}

#[test]
fn stray_step_members_are_kept() -> Result<(), TwinError> {
    let doc = json!({"lastInstallResult": {
        "resultCode": 0, "extendedResultCode": 1234, "resultDetails": "Ok",
        "step_0": {"resultCode": 0, "extendedResultCode": 1234, "resultDetails": "Ok"},
        "step_x": "not a step"
    }, "state": 255});
    let agent = AgentProperties::locate(&doc)?.ok_or(TwinError::Json("no agent".into()))?;
    let result = agent.last_install_result.as_ref().ok_or(TwinError::Json("no result".into()))?;
    assert_eq!(result.other.keys().collect::<Vec<_>>(), ["step_0", "step_x"]);
    let steps = result.steps();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].0, "step_0");
    assert_eq!(steps[0].1.install_result(), InstallResult::failure(ExtendedResultCode(1234)).with_details("Ok"));
    assert_eq!(agent.state, Some(AgentState::Failed));
    assert_eq!(agent.to_patch()["deviceUpdate"]["agent"], doc);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Builders: byte-exact protocol-reference examples
// ---------------------------------------------------------------------------------------------

/// §5.2 example, compact, as the service writes it (without the twin's `$version`).
const DESIRED_PATCH_5_2: &str = r#"{"deviceUpdate":{"__t":"c","service":{"workflow":{"action":3,"id":"dcb112da-bfc9-47b7-b7ed-617feba1e6c4","retryTimestamp":"2022-01-26T11:33:29.9680598Z"},"rootKeyPackageUrl":"http://<instance>.b.nlu.dl.adu.microsoft.com/<region>/<package path>","updateManifest":"<manifest JSON as a string>","updateManifestSignature":"<compact JWS>","fileUrls":{"f483750ebb885d32c":"http://.../apt-manifest-tree-1.0.json"}}}}"#;

fn service_5_2() -> ServiceProperties {
    ServiceProperties::deployment(
        Workflow::new(UpdateAction::ProcessDeployment, "dcb112da-bfc9-47b7-b7ed-617feba1e6c4")
            .with_retry_timestamp("2022-01-26T11:33:29.9680598Z"),
        Some("http://<instance>.b.nlu.dl.adu.microsoft.com/<region>/<package path>".to_owned()),
        "<manifest JSON as a string>",
        "<compact JWS>",
        [("f483750ebb885d32c".to_owned(), "http://.../apt-manifest-tree-1.0.json".to_owned())],
    )
}

#[test]
fn desired_patch_matches_5_2() {
    assert_eq!(service_5_2().to_patch().to_string(), DESIRED_PATCH_5_2);
}

#[test]
fn cancel_patch_matches_5_2_and_vector_24() {
    assert_eq!(
        ServiceProperties::no_deployment().to_patch().to_string(),
        r#"{"deviceUpdate":{"__t":"c","service":{"workflow":{"action":255,"id":"nodeployment"},"updateManifest":null,"updateManifestSignature":null,"fileUrls":null}}}"#
    );
    let expected = json!({ "deviceUpdate": vector("desired/24_azsdkc_cancel_nodeployment.json") });
    assert_eq!(ServiceProperties::no_deployment().to_patch(), expected);
}

#[test]
fn acknowledgement_matches_5_3() -> Result<(), TwinError> {
    // The §5.2 example as the device receives it: a desired patch with "$version": 7.
    let mut received: Value = serde_json::from_str(DESIRED_PATCH_5_2).map_err(|e| TwinError::Json(e.to_string()))?;
    received["$version"] = json!(7);
    let located = DesiredService::locate(&received)?.ok_or(TwinError::Json("no service".into()))?;
    assert_eq!(located.version, Some(7));
    assert_eq!(located.service, service_5_2());
    let expected = r#"{"deviceUpdate":{"__t":"c","service":{"value":{"workflow":{"action":3,"id":"dcb112da-bfc9-47b7-b7ed-617feba1e6c4","retryTimestamp":"2022-01-26T11:33:29.9680598Z"},"rootKeyPackageUrl":"http://<instance>.b.nlu.dl.adu.microsoft.com/<region>/<package path>","updateManifest":"<manifest JSON as a string>","updateManifestSignature":null,"fileUrls":null},"ac":200,"ad":"","av":7}}}"#;
    assert_eq!(ServiceAck::acknowledge(&located).to_patch().to_string(), expected);
    Ok(())
}

#[test]
fn embedded_sdk_acknowledgement_is_reproduced() {
    let ack = ServiceAck::new(json!({}), Some(1));
    assert_eq!(ack.to_patch(), vector("reported/azsdkc_service-ack.json"));
}

#[test]
fn startup_message_matches_5_4() {
    let mut properties =
        DeviceProperties::new("<agents[0].manufacturer>", "<agents[0].model>").with_property("<additional k>", "<v>");
    properties.interface_id = Some(None);
    properties.contract_model_id = Some(CONTRACT_MODEL_V3.to_owned());
    properties.adu_ver = Some("DU;agent/1.1.0".to_owned());
    let startup = AgentProperties::startup(properties, "manufacturer,model");
    assert_eq!(
        startup.to_patch().to_string(),
        r#"{"deviceUpdate":{"__t":"c","agent":{"deviceProperties":{"manufacturer":"<agents[0].manufacturer>","model":"<agents[0].model>","<additional k>":"<v>","interfaceId":null,"contractModelId":"dtmi:azure:iot:deviceUpdateContractModel;3","aduVer":"DU;agent/1.1.0"},"compatPropertyNames":"manufacturer,model"}}}"#
    );
}

#[test]
fn success_report_matches_5_5() -> Result<(), ResultCodeError> {
    let codes =
        ExtendedResultCodes::new(ExtendedResultCode::NONE).with_extra(ExtendedResultCode::ROOTKEY_PKG_UNCHANGED)?;
    let result = LastInstallResult::new(InstallResult {
        result_code: ResultCode::APPLY_SUCCESS,
        extended_result_codes: codes,
        result_details: None,
    })
    .with_step(0, InstallResult::success(ResultCode::APPLY_SUCCESS));
    let workflow =
        Workflow::new(UpdateAction::ProcessDeployment, "<workflow id>").with_retry_timestamp("<only if in desired>");
    let report = AgentProperties::succeeded(Some(workflow), result, &UpdateId::new("Contoso", "Toaster", "1.0"));
    assert_eq!(
        report.to_patch().to_string(),
        r#"{"deviceUpdate":{"__t":"c","agent":{"lastInstallResult":{"stepResults":{"step_0":{"resultCode":700,"extendedResultCodes":"00000000","resultDetails":null}},"resultCode":700,"extendedResultCodes":"00000000,A0000FFF","resultDetails":null},"state":0,"workflow":{"action":3,"id":"<workflow id>","retryTimestamp":"<only if in desired>"},"installedUpdateId":"{\"provider\":\"Contoso\",\"name\":\"Toaster\",\"version\":\"1.0\"}"}}}"#
    );
    assert_eq!(report.extended_result_code(), Some(ExtendedResultCode::NONE));
    Ok(())
}

#[test]
fn in_progress_report() {
    let report = AgentProperties::in_progress(Workflow::new(UpdateAction::ProcessDeployment, "w1"));
    assert_eq!(
        report.to_patch().to_string(),
        r#"{"deviceUpdate":{"__t":"c","agent":{"lastInstallResult":{"stepResults":null,"resultCode":1,"extendedResultCodes":"00000000","resultDetails":null},"state":6,"workflow":{"action":3,"id":"w1"}}}}"#
    );
    // The explicit null survives parsing (a merge patch deleting the previous steps).
    let parsed = agent_of(&report.to_patch());
    let result = parsed.last_install_result.as_ref().expect("lastInstallResult");
    assert_eq!(result.step_results, Some(None));
    assert_eq!(parsed, report);
}

#[test]
fn failure_report() {
    let result = InstallResult::failure(ExtendedResultCode::from_script_exit_code(2)).with_details("exit 2");
    let report = AgentProperties::failed(
        Some(Workflow::new(UpdateAction::ProcessDeployment, "w1")),
        LastInstallResult::new(result.clone()).with_step(0, result),
    );
    assert_eq!(
        report.to_patch().to_string(),
        r#"{"deviceUpdate":{"__t":"c","agent":{"lastInstallResult":{"stepResults":{"step_0":{"resultCode":0,"extendedResultCodes":"30501002","resultDetails":"exit 2"}},"resultCode":0,"extendedResultCodes":"30501002","resultDetails":"exit 2"},"state":255,"workflow":{"action":3,"id":"w1"}}}}"#
    );
}

#[test]
fn cancel_report() {
    let report = AgentProperties::cancelled(Some(Workflow::no_deployment()));
    assert_eq!(
        report.to_patch().to_string(),
        r#"{"deviceUpdate":{"__t":"c","agent":{"lastInstallResult":{"resultCode":-1,"extendedResultCodes":"00000000","resultDetails":null},"state":0,"workflow":{"action":255,"id":"nodeployment"}}}}"#
    );
    assert_eq!(AgentProperties::cancelled(None).workflow, None);
}

#[test]
fn embedded_sdk_idle_report_is_reproduced() {
    let mut properties = DeviceProperties::new("Contoso", "Foobar");
    properties.contract_model_id = Some(CONTRACT_MODEL_V2.to_owned());
    properties.adu_ver = Some("DU;agent/1.0.0".to_owned());
    let report = AgentProperties::startup(properties, "manufacturer,model")
        .with_state(AgentState::Idle)
        .with_installed_update(&UpdateId::new("Contoso", "Foobar", "1.0"));
    assert_eq!(report.to_patch(), vector("reported/azsdkc_agent-state_idle.json"));
}

#[test]
fn embedded_sdk_legacy_result_report_is_reproduced() {
    let legacy = StepResult {
        result_code: ResultCode::FAILURE,
        extended_result_codes: None,
        legacy_extended_result_code: Some(ExtendedResultCode(1234)),
        result_details: Some("Ok".to_owned()),
    };
    let result = LastInstallResult {
        step_results: Some(Some(IndexMap::from([("step_0".to_owned(), legacy.clone())]))),
        result_code: legacy.result_code,
        extended_result_codes: None,
        legacy_extended_result_code: legacy.legacy_extended_result_code,
        result_details: legacy.result_details.clone(),
        other: IndexMap::new(),
    };
    let mut properties = DeviceProperties::new("Contoso", "Foobar");
    properties.contract_model_id = Some(CONTRACT_MODEL_V2.to_owned());
    properties.adu_ver = Some("DU;agent/1.0.0".to_owned());
    let report = AgentProperties::startup(properties, "manufacturer,model")
        .with_last_install_result(result)
        .with_state(AgentState::Idle)
        .with_workflow(Workflow::new(UpdateAction::ProcessDeployment, "51552a54-765e-419f-892a-c822549b6f38"))
        .with_installed_update(&UpdateId::new("Contoso", "Foobar", "1.0"));
    assert_eq!(report.to_patch(), vector("reported/azsdkc_agent-state_with-result.json"));
}

// ---------------------------------------------------------------------------------------------
// Desired vectors: locating the service object in every document shape
// ---------------------------------------------------------------------------------------------

/// The bare service object of a desired vector (some are bare, some `{"service":…}`).
fn bare_service(name: &str) -> Value {
    let doc = vector(&format!("desired/{name}"));
    match doc.get("service") {
        Some(service) => service.clone(),
        None => doc,
    }
}

/// The shapes a service object arrives in, with the `$version` each carries.
fn shapes(service: &Value) -> Vec<(&'static str, Value, Option<i64>)> {
    let component = json!({"__t": "c", "service": service});
    vec![
        ("bare", service.clone(), None),
        ("component", component.clone(), None),
        ("component without marker", json!({ "service": service }), None),
        ("desired patch", json!({"deviceUpdate": component, "$version": 8}), Some(8)),
        (
            "twin from GET",
            json!({"desired": {"deviceUpdate": component, "$version": 7}, "reported": {"$version": 3}}),
            Some(7),
        ),
        (
            "twin from the service API",
            json!({"deviceId": "d", "etag": "AAAA", "version": 12, "properties": {
                "desired": {"deviceUpdate": component, "$version": 9},
                "reported": {"deviceUpdate": {"__t": "c", "agent": {"state": 0}}, "$version": 4}
            }}),
            Some(9),
        ),
    ]
}

const LOCATED_VECTORS: [&str; 7] = [
    "01_v4_valid_startupworkflowdata.json",
    "04_v5_valid_delta-relatedFiles-downloadHandler.json",
    "07_v4_valid_rootKeyPackageUrl_no-action.json",
    "21_azsdkc_v5_service_retryTimestamp.json",
    "24_azsdkc_cancel_nodeployment.json",
    "25_azsdkc_unknown-action.json",
    "26_azsdkc_cancel_fileUrls-null-values.json",
];

#[test]
fn desired_vectors_are_found_in_every_shape() {
    for name in LOCATED_VECTORS {
        let service = bare_service(name);
        let expected: ServiceProperties =
            serde_json::from_value(service.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (shape, doc, version) in shapes(&service) {
            let found = DesiredService::locate(&doc)
                .unwrap_or_else(|e| panic!("{name} {shape}: {e}"))
                .unwrap_or_else(|| panic!("{name} {shape}: not found"));
            assert_eq!(found.service, expected, "{name} {shape}");
            assert_eq!(found.version, version, "{name} {shape}");
            assert_eq!(Value::Object(found.raw), service, "{name} {shape}");
        }
        let bytes = vector_bytes(&format!("desired/{name}"));
        let from_file = DesiredService::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not found"));
        assert_eq!(from_file.service, expected, "{name} as stored");
    }
}

#[test]
fn desired_vector_contents() {
    let located = |name: &str| -> ServiceProperties {
        DesiredService::locate(&vector(&format!("desired/{name}")))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not found"))
            .service
    };

    let v01 = located(LOCATED_VECTORS[0]);
    assert_eq!(v01.action(), Some(UpdateAction::ProcessDeployment));
    assert_eq!(v01.workflow_id(), Some("test-workflow-id"));
    assert_eq!(v01.root_key_package_url, None);
    assert!(v01.update_manifest_text().is_some_and(|m| m.starts_with(r#"{"manifestVersion":"4","#)));
    assert!(v01.update_manifest_signature.as_deref().is_some_and(|s| s.starts_with("eyJhbGciOiJSUzI1NiIs")));
    let ids: Vec<&str> = v01.file_urls.iter().flat_map(|urls| urls.keys()).map(String::as_str).collect();
    assert_eq!(ids, ["f483750ebb885d32c", "f222b9ffefaaac577", "f2c5d1f3b0295db0f", "f13b5435aab7c18da"]);

    let v04 = located(LOCATED_VECTORS[1]);
    assert!(v04.update_manifest_text().is_some_and(|m| m.starts_with(r#"{"manifestVersion":"5","#)));
    assert_eq!(
        v04.file_url("f54d16eca3561a1e0"),
        Some("http://some_host.com/path/to/0ab7cf50124548c188dca6f4da0ceff2/in2.FIT_RECOMPRESSED_and_RE-SIGNED.swu")
    );

    let v07 = located(LOCATED_VECTORS[2]);
    assert_eq!(v07.action(), None);
    assert_eq!(v07.workflow_id(), Some("aaaaaaaa-bfc9-47b7-b7ed-617feba1e6c4"));
    assert_eq!(v07.root_key_package_url.as_deref(), Some("http://foo.bar/rootkeypkg.json"));

    let v21 = located(LOCATED_VECTORS[3]);
    let retry = v21.workflow.as_ref().and_then(|w| w.retry_timestamp.as_deref());
    assert_eq!(retry, Some("2022-01-26T11:33:29.9680598Z"));

    let v24 = located(LOCATED_VECTORS[4]);
    assert_eq!(v24, ServiceProperties::no_deployment());
    assert!(v24.workflow.as_ref().is_some_and(Workflow::is_cancel));

    let v25 = located(LOCATED_VECTORS[5]);
    assert_eq!(v25.action(), Some(UpdateAction::Undefined));
    assert_eq!(v25.action().map(UpdateAction::code), Some(-1));
    assert_eq!(v25.workflow_id(), Some("nodeployment"));
    assert_eq!((v25.update_manifest, v25.file_urls), (None, None));

    let v26 = located(LOCATED_VECTORS[6]);
    assert_eq!(v26.action(), Some(UpdateAction::Cancel));
    assert_eq!(v26.file_urls, Some(IndexMap::from([("f2f4a804ca17afbae".to_owned(), None)])));
    assert_eq!(v26.file_url("f2f4a804ca17afbae"), None);
}

#[test]
fn null_file_url_values_are_tolerated() {
    let service = bare_service("22_azsdkc_v5_fileUrls-null-value.json");
    let found = DesiredService::locate(&service).expect("parses").expect("found");
    let urls = found.service.file_urls.as_ref().expect("fileUrls");
    assert_eq!(urls.len(), 2);
    assert_eq!(urls.get("f06bfc80808396ed5"), Some(&None));
    assert!(found.service.file_url("f2f4a804ca17afbae").is_some_and(|u| u.starts_with("http://contoso")));
}

#[test]
fn service_serialisation_keeps_the_service_member_order() {
    // Vector 23 lists the members in reverse; serialising restores the service's order, which
    // is the order of vector 20.
    let reversed =
        DesiredService::locate(&vector("desired/23_azsdkc_v5_reverse-key-order.json")).expect("parses").expect("found");
    let forward = bare_service("20_azsdkc_v5_service.json");
    assert_eq!(serde_json::to_string(&reversed.service).expect("serialises"), forward.to_string());
    // A cancel read back serialises to the very bytes received.
    let cancel = bare_service("24_azsdkc_cancel_nodeployment.json");
    let parsed: ServiceProperties = serde_json::from_value(cancel.clone()).expect("parses");
    assert_eq!(serde_json::to_string(&parsed).expect("serialises"), cancel.to_string());
}

#[test]
fn acknowledging_a_vector_keeps_the_manifest_and_drops_urls_and_signature() {
    let service = bare_service("21_azsdkc_v5_service_retryTimestamp.json");
    let patch = json!({"deviceUpdate": {"__t": "c", "service": service}, "$version": 8});
    let received = DesiredService::locate(&patch).expect("parses").expect("found");
    let ack = ServiceAck::acknowledge(&received);
    assert_eq!(ack.av, Some(8));
    assert_eq!(ack.value["updateManifest"], service["updateManifest"]);
    assert_eq!(ack.value["workflow"], service["workflow"]);
    assert_eq!(ack.value["updateManifestSignature"], Value::Null);
    assert_eq!(ack.value["fileUrls"], Value::Null);
    // Reading our own acknowledgement back.
    assert_eq!(ServiceAck::locate(&ack.to_patch()), Ok(Some(ack)));
}

#[test]
fn non_string_manifest_is_distinguishable() {
    let doc = json!({"workflow": {"action": 3, "id": "w"}, "updateManifest": {"manifestVersion": "5"}});
    let found = DesiredService::locate(&doc).expect("parses").expect("found");
    assert!(matches!(found.service.update_manifest, Some(UpdateManifestField::NotText(Value::Object(_)))));
    assert_eq!(found.service.update_manifest_text(), None);
}

fn outcome<T>(result: Result<Option<T>, TwinError>) -> &'static str {
    match result {
        Ok(Some(_)) => "found",
        Ok(None) => "absent",
        Err(TwinError::Json(_)) => "json",
        Err(TwinError::Type { .. }) => "type",
        Err(TwinError::Invalid { .. }) => "invalid",
    }
}

#[test]
fn odd_documents_give_precise_outcomes() {
    // (document, desired service, reported agent, reported acknowledgement)
    let cases: [(&str, [&str; 3]); 12] = [
        ("", ["json", "json", "json"]),
        ("null", ["type", "type", "type"]),
        ("[]", ["type", "type", "type"]),
        (r#""x""#, ["type", "type", "type"]),
        (r#"{"desired":[]}"#, ["type", "absent", "absent"]),
        (r#"{"properties":null}"#, ["absent", "absent", "absent"]),
        (r#"{"deviceUpdate":{"service":{"workflow":{"action":1e400}}}}"#, ["json", "json", "json"]),
        (r#"{"deviceUpdate":{"service":{"fileUrls":{"a":{}}}}}"#, ["invalid", "absent", "invalid"]),
        (r#"{"deviceUpdate":{"agent":{"state":"6"}}}"#, ["absent", "invalid", "absent"]),
        (r#"{"$version":1.5,"deviceUpdate":{}}"#, ["type", "type", "type"]),
        (r#"{"reported":{"deviceUpdate":{"agent":{"deviceProperties":{}}}}}"#, ["absent", "invalid", "absent"]),
        (
            r#"{"desired":{"deviceUpdate":{"service":{}}},"reported":{"deviceUpdate":{"service":{"ac":200}}}}"#,
            ["found", "absent", "found"],
        ),
    ];
    for (doc, expected) in cases {
        let bytes = doc.as_bytes();
        let actual = [
            outcome(DesiredService::from_slice(bytes)),
            outcome(AgentProperties::from_slice(bytes)),
            outcome(ServiceAck::from_slice(bytes)),
        ];
        assert_eq!(actual, expected, "{doc}");
    }
}

#[test]
fn truncated_vectors_are_json_errors() {
    let files = [
        "desired/24_azsdkc_cancel_nodeployment.json",
        "desired/26_azsdkc_cancel_fileUrls-null-values.json",
        "reported/azsdkc_agent-state_with-retryTimestamp.json",
        "reported/azsdkc_service-ack.json",
    ];
    for file in files {
        let bytes = vector_bytes(file);
        let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).expect("not blank");
        for cut in 0..=end {
            let prefix = &bytes[..cut];
            let outcomes = [
                outcome(DesiredService::from_slice(prefix)),
                outcome(AgentProperties::from_slice(prefix)),
                outcome(ServiceAck::from_slice(prefix)),
            ];
            assert_eq!(outcomes, ["json"; 3], "{file} cut at {cut}");
        }
        assert_ne!(outcome(DesiredService::from_slice(&bytes[..=end])), "json", "{file}");
    }
}
