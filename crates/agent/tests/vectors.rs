//! The agent's executor on the official agent's desired-property vectors
//! (`shared/spec/vectors/desired`, copied into `crates/proto/tests/fixtures`): service-signed
//! manifests pass the signature chain with Microsoft's production roots (and then fail only later,
//! offline, on compatibility or download); tampered ones are refused before anything else with
//! the official extended result codes; reported payloads have the reference shapes.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicBool;

use duhub_agent::executor::Executor;
use duhub_agent::runtime::JobRunner;
use duhub_agent::settings::{Settings, Transport};
use duhub_agent::workflow::{Job, Outcome};
use duhub_proto::twin::{DesiredService, Workflow};
use serde_json::Value;

fn vector(name: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/tests/fixtures/vectors/desired").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn executor(dir: &std::path::Path) -> Executor {
    let settings = Settings {
        connection_string: "HostName=hub;DeviceId=d;SharedAccessKey=a2V5".into(),
        data_dir: dir.to_owned(),
        manufacturer: "contoso".into(),
        model: "virtual-vacuum-v1".into(),
        additional_device_properties: Default::default(),
        compat_property_names: "manufacturer,model".into(),
        transport: Transport::Mqtt,
        mqtt_port: None,
        https_port: None,
        ca_pem: None,
        ca_file: None,
        root_keys: None,
        root_keys_file: None,
        use_production_roots: true,
        root_key_package_url: None,
        download_timeout_minutes: 1,
        handlers: Default::default(),
        simulator_data_file: None,
        apt_command: None,
        swupdate_config_file: None,
        reboot_command: vec!["/bin/true".into()],
    };
    Executor::new(&settings).unwrap()
}

/// Runs the vector as a deployment; returns the first extended result code of the failure.
fn run(name: &str) -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let desired = DesiredService::locate(&vector(name)).unwrap().unwrap();
    let mut service = desired.service;
    // Offline: no root key package download (the production package is built in).
    service.root_key_package_url = None;
    let job = Job {
        workflow: Workflow::new(duhub_proto::twin::UpdateAction::ProcessDeployment, "w"),
        service,
        is_retry: false,
    };
    match executor(dir.path()).run(&job, &AtomicBool::new(false)) {
        Outcome::Failed(result) => result.extended_result_code().map_or(0, |c| c.0),
        other => panic!("{name}: expected a failure offline, got {other:?}"),
    }
}

#[test]
fn service_signed_manifests_pass_the_signature_chain() {
    for name in [
        "01_v4_valid_startupworkflowdata.json",
        "04_v5_valid_delta-relatedFiles-downloadHandler.json",
        "05_v4_valid_simulator.json",
        "06_v4_valid_id-compare.json",
        "07_v4_valid_rootKeyPackageUrl_no-action.json",
    ] {
        let code = run(name);
        assert_ne!(code >> 28, 0xA, "{name}: refused by the signature chain: {code:#010x}");
        assert_ne!(code, 0x8030_0001, "{name}: refused as tampered");
    }
}

#[test]
fn tampered_manifests_are_refused_with_the_official_codes() {
    for name in [
        "02_v5_hash-mismatch_adu_core_export_helpers.json",
        "03_v5_hash-mismatch_workflow_reboot_actionbundle.json",
        "08_v5_hash-mismatch_rootKeyPackageUrl_parent.json",
        "13_v4_hash-mismatch_script-filecopy.json",
        "20_azsdkc_v5_service.json",
        "21_azsdkc_v5_service_retryTimestamp.json",
        "22_azsdkc_v5_fileUrls-null-value.json",
        "23_azsdkc_v5_reverse-key-order.json",
    ] {
        assert_eq!(run(name), 0x8030_0001, "{name}: ADUC_ERC_UTILITIES_UPDATE_DATA_PARSER_MANIFEST_VALIDATION_FAILED");
    }
    assert_eq!(run("10_v5_bad-structure_somesignature.json"), 0xA020_0002, "JWS bad structure");
}

#[test]
fn reports_have_the_reference_shapes() {
    use duhub_proto::twin::AgentProperties;
    let workflow = Workflow::new(duhub_proto::twin::UpdateAction::ProcessDeployment, "w1");
    let in_progress = AgentProperties::in_progress(workflow).to_patch();
    let agent = &in_progress["deviceUpdate"]["agent"];
    assert_eq!(in_progress["deviceUpdate"]["__t"], "c");
    assert_eq!(agent["state"], 6);
    assert_eq!(agent["lastInstallResult"]["resultCode"], 1);
    assert_eq!(agent["lastInstallResult"]["extendedResultCodes"], "00000000");
    assert!(agent["lastInstallResult"]["stepResults"].is_null());
    let keys: Vec<&str> = agent.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["lastInstallResult", "state", "workflow"], "the reference member order");
}
