//! The Device Update service against a real server: imports fetched over HTTP and uploaded,
//! signed manifests checked with `duhub-proto`, groups and device classes from what real MQTT
//! devices report, deployments written to desired properties, status from device reports,
//! cancel, retry, rollback policy, paging, authentication.

use std::time::Duration;

use duhub_proto::root_key::{RootKeyPackage, parse_root_key_list};
use duhub_proto::trust::TrustStore;
use duhub_testkit::{Backend, DuClient, FileServer, ImportFixture, TEST_PAGE_SIZE, TestDevice, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn toaster(version: &str, payload: &[u8]) -> ImportFixture {
    ImportFixture::new(
        "contoso",
        "toaster",
        version,
        &[("manufacturer", "contoso"), ("model", "toaster")],
        &[("install.sh", payload), ("firmware.bin", b"firmware-bytes-0123456789")],
    )
}

/// A test server with its Device Update client and a file server for imports.
pub(crate) struct Service {
    pub(crate) server: TestServer,
    pub(crate) du: DuClient,
    pub(crate) files: FileServer,
    pub(crate) _dir: tempfile::TempDir,
}

impl Service {
    /// `None` when `backend` is not available here (see [`TestServer::start_on`]).
    pub(crate) async fn start(backend: Backend) -> Option<Self> {
        let server = TestServer::start_on(backend).await?;
        let dir = tempfile::tempdir().unwrap();
        let files = FileServer::start(dir.path()).await.unwrap();
        let du = server.du();
        Some(Self { server, du, files, _dir: dir })
    }
}

pub(crate) async fn imported(du: &DuClient, files: &FileServer, fixture: &ImportFixture) -> Value {
    fixture.write(files.dir()).unwrap();
    let operation = du.import(&json!([fixture.item(files)])).await.unwrap();
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    operation
}

/// The agent's startup report of a device of `model`.
pub(crate) fn startup(model: &str) -> Value {
    json!({"deviceUpdate": {"__t": "c", "agent": {
        "deviceProperties": {"manufacturer": "contoso", "model": model, "interfaceId": null,
            "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3", "aduVer": "DU;agent/1.1.0"},
        "compatPropertyNames": "manufacturer,model"}}})
}

pub(crate) fn report(state: i64, workflow: &str, result: i64, installed: Option<&str>) -> Value {
    let mut agent = json!({
        "state": state,
        "workflow": {"action": 3, "id": workflow},
        "lastInstallResult": {"resultCode": result, "extendedResultCodes": if result > 0 { "00000000" } else { "30501001" }, "resultDetails": null},
    });
    if let Some(version) = installed {
        agent["installedUpdateId"] =
            format!("{{\"provider\":\"contoso\",\"name\":\"toaster\",\"version\":\"{version}\"}}").into();
    }
    json!({"deviceUpdate": {"__t": "c", "agent": agent}})
}

pub(crate) async fn agent_device(server: &TestServer, id: &str, group: Option<&str>, model: &str) -> TestDevice {
    let mut device = server.new_device(id).await;
    device.subscribe_desired().await.unwrap();
    if let Some(group) = group {
        server.service().set_group(id, group).await.unwrap();
    }
    let (status, _) = device.patch_reported(&startup(model)).await.unwrap();
    assert_eq!(status, 204);
    device
}

/// Waits for a desired patch carrying a `deviceUpdate.service.workflow`; returns the service.
pub(crate) async fn next_service(device: &mut TestDevice) -> Value {
    next_service_where(device, |_| true).await
}

/// Waits for a desired patch whose `deviceUpdate.service` passes `wanted`.
pub(crate) async fn next_service_where(device: &mut TestDevice, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let patch = device.next_desired(left).await.expect("a desired patch");
        if let Some(service) = patch.body.pointer("/deviceUpdate/service")
            && service.get("workflow").is_some()
            && wanted(service)
        {
            return service.clone();
        }
    }
}

async fn server_trust(server: &TestServer) -> TrustStore {
    let roots = std::fs::read_to_string(server.admin.keys_dir.join("rootkeys.json")).unwrap();
    let du = server.du();
    let package = du.http().get(format!("{}/duhub/rootkeypackage.json", du.base_url())).send().await.unwrap();
    assert_eq!(package.status(), StatusCode::OK, "the root key package is served without a token");
    let package = RootKeyPackage::parse(&package.text().await.unwrap()).unwrap();
    TrustStore::with_package(parse_root_key_list(&roots).unwrap(), package).unwrap()
}

pub(crate) async fn import_fetches_checks_and_signs(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    let fixture = toaster("1.0", b"#!/bin/sh\necho installed > marker\n");
    let operation = imported(&du, &files, &fixture).await;
    assert_eq!(operation["update"]["updateId"], json!({"provider": "contoso", "name": "toaster", "version": "1.0"}));
    let location = operation["resourceLocation"].as_str().unwrap();
    assert!(
        location.starts_with("/deviceUpdate/default/updates/providers/contoso/names/toaster/versions/1.0"),
        "{location}"
    );

    let update = du.get("/updates/providers/contoso/names/toaster/versions/1.0").await.unwrap();
    assert_eq!(update["compatibility"], json!([{"manufacturer": "contoso", "model": "toaster"}]));
    assert_eq!(update["isDeployable"], true);
    assert_eq!(update["manifestVersion"], "5.0");
    // If-None-Match with the etag answers 304.
    let etag = update["etag"].as_str().unwrap();
    let cached = du
        .http()
        .get(du.url("/updates/providers/contoso/names/toaster/versions/1.0"))
        .bearer_auth(&server.admin.api_token)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    assert_eq!(du.list("/updates/providers").await.unwrap().0, vec![json!("contoso")]);
    assert_eq!(du.list("/updates/providers/contoso/names").await.unwrap().0, vec![json!("toaster")]);
    assert_eq!(du.list("/updates/providers/contoso/names/toaster/versions").await.unwrap().0, vec![json!("1.0")]);
    let (file_ids, _) = du.list("/updates/providers/contoso/names/toaster/versions/1.0/files").await.unwrap();
    assert_eq!(file_ids.len(), 2);
    let mut names = Vec::new();
    for id in &file_ids {
        let file = du
            .get(&format!("/updates/providers/contoso/names/toaster/versions/1.0/files/{}", id.as_str().unwrap()))
            .await
            .unwrap();
        let name = file["fileName"].as_str().unwrap().to_owned();
        assert_eq!(file["sizeInBytes"], fixture.files[&name].len());
        assert_eq!(file["hashes"]["sha256"], duhub_testkit::sha256_b64(&fixture.files[&name]));
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["firmware.bin", "install.sh"]);

    // The stored manifest verifies against the server's roots and root key package.
    let stored = server
        .du_service()
        .stored_update(&duhub_proto::UpdateId::new("contoso", "toaster", "1.0"))
        .await
        .unwrap()
        .unwrap();
    let trust = server_trust(&server).await;
    trust.verify_update_manifest(Some(&stored.update_manifest), Some(&stored.update_manifest_signature)).unwrap();
    assert!(
        TrustStore::production()
            .verify_update_manifest(Some(&stored.update_manifest), Some(&stored.update_manifest_signature))
            .is_err(),
        "Microsoft's roots do not trust this server's signing key"
    );
    let manifest: Value = serde_json::from_str(&stored.update_manifest).unwrap();
    assert_eq!(manifest["manifestVersion"], "5");
    assert_eq!(manifest["files"].as_object().unwrap().len(), 2);

    // Uploads: the same update's files through the CLI's path.
    let upload = |bytes: Vec<u8>| {
        let du = du.clone();
        let token = server.admin.api_token.clone();
        async move {
            let response =
                du.http().post(du.url("/duhub/uploads")).bearer_auth(token).body(bytes).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.unwrap()
        }
    };
    let fixture2 = toaster("1.1", b"#!/bin/sh\necho 1.1\n");
    let manifest_upload = upload(fixture2.manifest_bytes()).await;
    let mut file_items = Vec::new();
    for (name, content) in &fixture2.files {
        let uploaded = upload(content.clone()).await;
        assert_eq!(uploaded["sizeInBytes"], content.len());
        file_items.push(json!({"filename": name, "url": uploaded["url"]}));
    }
    let operation = du
        .import(&json!([{"importManifest": {"url": manifest_upload["url"], "sizeInBytes": manifest_upload["sizeInBytes"], "hashes": manifest_upload["hashes"]}, "files": file_items, "friendlyName": "Toaster 1.1"}]))
        .await
        .unwrap();
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    let update = du.get("/updates/providers/contoso/names/toaster/versions/1.1").await.unwrap();
    assert_eq!(update["friendlyName"], "Toaster 1.1");

    // Delete is a long-running operation and removes the update.
    let response =
        du.send(Method::DELETE, "/updates/providers/contoso/names/toaster/versions/1.1", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["operation-location"].to_str().unwrap().to_owned();
    assert_eq!(du.wait_operation(&location).await.unwrap()["status"], "Succeeded");
    du.expect(Method::GET, "/updates/providers/contoso/names/toaster/versions/1.1", None, StatusCode::NOT_FOUND)
        .await
        .unwrap();
    server.shutdown().await;
}

fn blob_count(server: &TestServer) -> usize {
    std::fs::read_dir(server.data_dir().join("content").join("blobs")).map(|d| d.count()).unwrap_or(0)
}

pub(crate) async fn bad_imports_fail_with_a_reason_and_leave_nothing_behind(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    imported(&du, &files, &toaster("1.0", b"#!/bin/sh\n")).await;
    let updates_before = du.list("/updates").await.unwrap().0;
    let blobs_before = blob_count(&server);

    // An invalid manifest: the error names the JSON pointer and the rule.
    let mut invalid = toaster("2.0", b"#!/bin/sh\necho two\n");
    invalid.manifest["updateId"]["version"] = "two".into();
    invalid.manifest["compatibility"] = json!([]);
    invalid.write(files.dir()).unwrap();
    let operation = du.import(&json!([invalid.item(&files)])).await.unwrap();
    assert_eq!(operation["status"], "Failed");
    assert_eq!(operation["error"]["code"], "InvalidImportManifest");
    let details = operation["error"]["details"].to_string();
    assert!(details.contains("/updateId/version") && details.contains("pattern"), "{details}");
    assert!(details.contains("/compatibility") && details.contains("minItems"), "{details}");

    // A file whose bytes do not match the manifest's hash.
    let wrong_hash = toaster("2.1", b"#!/bin/sh\necho 2.1\n");
    wrong_hash.write(files.dir()).unwrap();
    std::fs::write(files.dir().join("firmware.bin"), b"firmware-bytes-0123456780").unwrap(); // same size
    let operation = du.import(&json!([wrong_hash.item(&files)])).await.unwrap();
    assert_eq!(operation["error"]["code"], "FileHashMismatch", "{operation}");

    // A file of another size.
    let wrong_size = toaster("2.2", b"#!/bin/sh\necho 2.2\n");
    wrong_size.write(files.dir()).unwrap();
    std::fs::write(files.dir().join("firmware.bin"), b"firmware-bytes-0123456789-and-more").unwrap();
    let operation = du.import(&json!([wrong_size.item(&files)])).await.unwrap();
    assert_eq!(operation["error"]["code"], "FileSizeMismatch", "{operation}");

    // A file the request gives no URL for, and one the file server does not have.
    let missing = toaster("2.3", b"#!/bin/sh\necho 2.3\n");
    missing.write(files.dir()).unwrap();
    let mut item = missing.item(&files);
    item["files"].as_array_mut().unwrap().retain(|f| f["filename"] != "firmware.bin");
    let operation = du.import(&json!([item])).await.unwrap();
    assert_eq!(operation["error"]["code"], "MissingFile", "{operation}");
    assert!(operation["error"]["message"].as_str().unwrap().contains("firmware.bin"));
    std::fs::remove_file(files.dir().join("install.sh")).unwrap();
    let operation = du.import(&json!([missing.item(&files)])).await.unwrap();
    assert_eq!(operation["error"]["code"], "FileDownloadFailed", "{operation}");

    // The same update again.
    let duplicate = toaster("1.0", b"#!/bin/sh\n");
    duplicate.write(files.dir()).unwrap();
    let operation = du.import(&json!([duplicate.item(&files)])).await.unwrap();
    assert_eq!(operation["error"]["code"], "UpdateAlreadyExists", "{operation}");

    // A reference to an update that is not imported.
    let mut parent = toaster("3.0", b"#!/bin/sh\necho parent\n");
    parent.manifest["instructions"]["steps"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "reference", "updateId": {"provider": "contoso", "name": "motor", "version": "1.0"}}));
    parent.write(files.dir()).unwrap();
    let operation = du.import(&json!([parent.item(&files)])).await.unwrap();
    assert_eq!(operation["error"]["code"], "ReferencedUpdateNotFound", "{operation}");

    // A malformed request never becomes an operation.
    du.expect(Method::POST, "/updates:import", Some(&json!([])), StatusCode::BAD_REQUEST).await.unwrap();
    du.expect(Method::POST, "/updates:import", Some(&json!({"no": "array"})), StatusCode::BAD_REQUEST).await.unwrap();

    assert_eq!(du.list("/updates").await.unwrap().0, updates_before, "failed imports stored no update");
    assert_eq!(blob_count(&server), blobs_before, "failed imports left no file behind");
    let (failed, _) = du.list("/updates/operations").await.unwrap();
    assert_eq!(failed.iter().filter(|o| o["status"] == "Failed").count(), 7);
    server.shutdown().await;
}

pub(crate) async fn reference_steps_ship_child_manifests(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    let mut child = ImportFixture::new(
        "contoso",
        "motor",
        "1.0",
        &[("manufacturer", "contoso"), ("model", "motor")],
        &[("motor.bin", b"motor")],
    );
    child.manifest["isDeployable"] = false.into();
    let mut parent = toaster("4.0", b"#!/bin/sh\n");
    parent.manifest["instructions"]["steps"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "reference", "updateId": {"provider": "contoso", "name": "motor", "version": "1.0"}}));
    child.write(files.dir()).unwrap();
    parent.write(files.dir()).unwrap();
    // Parent first in the request: the server imports the child first.
    let operation = du.import(&json!([parent.item(&files), child.item(&files)])).await.unwrap();
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    let child_rest = du.get("/updates/providers/contoso/names/motor/versions/1.0").await.unwrap();
    assert_eq!(child_rest["referencedBy"], json!([{"provider": "contoso", "name": "toaster", "version": "4.0"}]));
    let (deployable, _) = du.list("/updates?filter=isDeployable%20eq%20false").await.unwrap();
    assert_eq!(deployable.len(), 1);
    let stored = server
        .du_service()
        .stored_update(&duhub_proto::UpdateId::new("contoso", "toaster", "4.0"))
        .await
        .unwrap()
        .unwrap();
    let manifest: Value = serde_json::from_str(&stored.update_manifest).unwrap();
    let steps = manifest["instructions"]["steps"].as_array().unwrap();
    let child_file = steps[1]["detachedManifestFileId"].as_str().unwrap();
    let entry = &manifest["files"][child_file];
    assert_eq!(entry["fileName"], "contoso.motor.1.0.updatemanifest.json");
    // The child manifest file holds the child's manifest, as the agent reads it.
    let file = stored.files.iter().find(|f| f.file_id == child_file).unwrap();
    let bytes = server.du_service().content().read(&file.blob, 1 << 20).await.unwrap();
    let wrapped: Value = serde_json::from_slice(&bytes).unwrap();
    let child_manifest: Value = serde_json::from_str(wrapped["updateManifest"].as_str().unwrap()).unwrap();
    assert_eq!(child_manifest["updateId"]["name"], "motor");
    // A deployment of a referenced update is refused; deleting it while referenced too.
    du.expect(Method::DELETE, "/updates/providers/contoso/names/motor/versions/1.0", None, StatusCode::CONFLICT)
        .await
        .unwrap();
    server.shutdown().await;
}

async fn deployment_status(du: &DuClient, group: &str, id: &str) -> Value {
    du.get(&format!("/management/groups/{group}/deployments/{id}/status")).await.unwrap()
}

pub(crate) async fn a_deployment_reaches_devices_and_their_reports_drive_its_status(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    imported(&du, &files, &toaster("1.0", b"#!/bin/sh\necho 1\n")).await;
    imported(&du, &files, &toaster("2.0", b"#!/bin/sh\necho 2\n")).await;

    let mut a = agent_device(&server, "toaster-a", Some("north"), "toaster").await;
    let mut b = agent_device(&server, "toaster-b", Some("north"), "toaster").await;
    let _kettle = agent_device(&server, "kettle-a", Some("north"), "kettle").await;
    let mut untagged = agent_device(&server, "toaster-c", None, "toaster").await;
    server.new_device("no-agent").await; // no Device Update agent: not in the fleet

    // Groups, classes, subgroups, best updates and compliance come from the twins.
    let (groups, _) = du.list("/management/groups").await.unwrap();
    let ids: Vec<&str> = groups.iter().map(|g| g["groupId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["$default", "north"]);
    let north = du.get("/management/groups/north").await.unwrap();
    assert_eq!(north["deviceCount"], 3);
    assert_eq!(north["groupType"], "IoTHubTag");
    let (classes, _) = du.list("/management/deviceClasses").await.unwrap();
    assert_eq!(classes.len(), 2);
    let toaster_class = classes
        .iter()
        .find(|c| c["deviceClassProperties"]["compatProperties"]["model"] == "toaster")
        .unwrap()["deviceClassId"]
        .as_str()
        .unwrap()
        .to_owned();
    let class = du.get(&format!("/management/deviceClasses/{toaster_class}")).await.unwrap();
    assert_eq!(class["bestCompatibleUpdate"]["updateId"]["version"], "2.0");
    assert_eq!(class["deviceClassProperties"]["contractModel"]["id"], "dtmi:azure:iot:deviceUpdateContractModel;3");
    let (installable, _) =
        du.list(&format!("/management/deviceClasses/{toaster_class}/installableUpdates")).await.unwrap();
    assert_eq!(installable.len(), 2);
    let (subgroups, _) = du.list("/management/groups/north/deviceClassSubgroups").await.unwrap();
    assert_eq!(subgroups.len(), 2);
    let (filtered, _) = du
        .list("/management/groups/north/deviceClassSubgroups?filter=compatProperties%2Fmodel%20eq%20%27kettle%27")
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
    let (best, _) = du.list("/management/groups/north/bestUpdates").await.unwrap();
    assert_eq!(
        best,
        vec![
            json!({"groupId": "north", "deviceClassId": toaster_class, "update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "2.0"}}, "deviceCount": 2})
        ]
    );
    let compliance = du.get("/management/updateCompliance").await.unwrap();
    assert_eq!(compliance["totalDeviceCount"], 4);
    assert_eq!(compliance["onLatestUpdateDeviceCount"], 1, "the kettle has no update, so it is on its latest");
    assert_eq!(compliance["newUpdatesAvailableDeviceCount"], 3);

    // An update that was never imported (a typo) is refused, not kept as a deployment that
    // never reaches anyone; so is a rollback to one.
    for (update, rollback) in [("2.1", "1.0"), ("2.0", "0.9")] {
        let error = du
            .expect(
                Method::PUT,
                "/management/groups/north/deployments/typo",
                Some(&json!({"deploymentId": "typo", "groupId": "north", "startDateTime": "2026-01-01T00:00:00Z",
                    "update": {"updateId": {"provider": "contoso", "name": "toaster", "version": update}},
                    "rollbackPolicy": {"update": {"updateId": {"provider": "contoso", "name": "toaster", "version": rollback}},
                        "failure": {"devicesFailedPercentage": 50, "devicesFailedCount": 1}}})),
                StatusCode::NOT_FOUND,
            )
            .await
            .unwrap();
        assert_eq!(error["error"]["code"], "NotFound", "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("import it first"), "{error}");
    }
    du.expect(Method::GET, "/management/groups/north/deployments/typo", None, StatusCode::NOT_FOUND).await.unwrap();

    // Deploy 2.0 to north: both toasters get the signed manifest, the kettle and others nothing.
    let deployment = du
        .expect(
            Method::PUT,
            "/management/groups/north/deployments/dep1",
            Some(&json!({"deploymentId": "dep1", "groupId": "north", "startDateTime": "2026-01-01T00:00:00Z",
                "update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "2.0"}}})),
            StatusCode::OK,
        )
        .await
        .unwrap();
    assert_eq!(deployment["deviceClassSubgroups"], json!([toaster_class]));
    let service_a = next_service(&mut a).await;
    let service_b = next_service(&mut b).await;
    let workflow = service_a["workflow"]["id"].as_str().unwrap().to_owned();
    assert_eq!(service_a["workflow"]["action"], 3);
    assert_eq!(service_b["workflow"]["id"], workflow.as_str(), "one workflow id per subgroup");
    let trust = server_trust(&server).await;
    trust
        .verify_update_manifest(service_a["updateManifest"].as_str(), service_a["updateManifestSignature"].as_str())
        .unwrap();
    assert!(service_a["rootKeyPackageUrl"].as_str().unwrap().ends_with("/duhub/rootkeypackage.json"));
    // Every file URL serves its file, with Range support, without a token.
    let manifest: Value = serde_json::from_str(service_a["updateManifest"].as_str().unwrap()).unwrap();
    for (id, url) in service_a["fileUrls"].as_object().unwrap() {
        let entry = &manifest["files"][id];
        let body = du.http().get(url.as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(duhub_testkit::sha256_b64(&body), entry["hashes"]["sha256"].as_str().unwrap());
        let partial = du.http().get(url.as_str().unwrap()).header("Range", "bytes=2-").send().await.unwrap();
        assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(partial.bytes().await.unwrap(), body.slice(2..));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), untagged.next_desired(Duration::from_millis(500)))
            .await
            .map(|r| r.is_err())
            .unwrap_or(true),
        "a device of another group gets nothing"
    );
    let status = deployment_status(&du, "north", "dep1").await;
    assert_eq!(status["deploymentState"], "Active");
    assert_eq!(status["subgroupStatus"][0]["totalDevices"], 2);
    assert_eq!(status["subgroupStatus"][0]["devicesInProgressCount"], 2);

    // a succeeds, b fails: the status follows.
    a.patch_reported(&report(6, &workflow, 1, None)).await.unwrap();
    a.patch_reported(&report(0, &workflow, 700, Some("2.0"))).await.unwrap();
    b.patch_reported(&report(6, &workflow, 1, None)).await.unwrap();
    b.patch_reported(&report(255, &workflow, 0, None)).await.unwrap();
    let status = deployment_status(&du, "north", "dep1").await;
    let subgroup = &status["subgroupStatus"][0];
    assert_eq!(subgroup["devicesCompletedSucceededCount"], 1, "{status}");
    assert_eq!(subgroup["devicesCompletedFailedCount"], 1, "{status}");
    assert_eq!(status["deploymentState"], "ActiveWithSubgroupFailures");
    let (states, _) = du
        .list(&format!("/management/groups/north/deviceClassSubgroups/{toaster_class}/deployments/dep1/devicestates"))
        .await
        .unwrap();
    let state_of = |id: &str| states.iter().find(|s| s["deviceId"] == id).unwrap()["deviceState"].clone();
    assert_eq!(state_of("toaster-a"), "Succeeded");
    assert_eq!(state_of("toaster-b"), "Failed");
    let (failed, _) = du
        .list(&format!("/management/groups/north/deviceClassSubgroups/{toaster_class}/deployments/dep1/devicestates?filter=deviceState%20eq%20%27Failed%27"))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let device = du.get("/management/devices/toaster-a").await.unwrap();
    assert_eq!(device["installedUpdate"]["updateId"]["version"], "2.0");
    assert_eq!(device["onLatestUpdate"], true);
    assert_eq!(device["deploymentStatus"], "Succeeded");
    let device = du.get("/management/devices/toaster-b").await.unwrap();
    assert_eq!(device["lastInstallResult"]["extendedResultCode"], 0x3050_1001);
    let (failed_devices, _) = du.list("/management/devices?filter=deploymentStatus%20eq%20%27Failed%27").await.unwrap();
    assert_eq!(failed_devices.len(), 1);
    // Defect 6.4-1 of agent 1.1.0: "in progress" again after success keeps Succeeded.
    a.patch_reported(&report(6, &workflow, 1, Some("2.0"))).await.unwrap();
    let status = deployment_status(&du, "north", "dep1").await;
    assert_eq!(status["subgroupStatus"][0]["devicesCompletedSucceededCount"], 1);

    // Retry: the failed device gets the same workflow id with a retryTimestamp; a does not.
    let retried = du
        .expect(
            Method::POST,
            &format!("/management/groups/north/deviceClassSubgroups/{toaster_class}/deployments/dep1:retry"),
            None,
            StatusCode::OK,
        )
        .await
        .unwrap();
    assert_eq!(retried["isRetried"], true);
    let service = next_service_where(&mut b, |s| s["workflow"].get("retryTimestamp").is_some()).await;
    assert_eq!(service["workflow"]["id"], workflow.as_str());
    assert!(service["workflow"]["retryTimestamp"].is_string(), "{service}");

    // A device that joins the group later gets the deployment too.
    let mut late = agent_device(&server, "toaster-late", Some("north"), "toaster").await;
    let service = next_service(&mut late).await;
    assert_eq!(service["workflow"]["id"], workflow.as_str());

    // Cancel: action 255 with the workflow id, manifest and files removed.
    du.expect(
        Method::POST,
        &format!("/management/groups/north/deviceClassSubgroups/{toaster_class}/deployments/dep1:cancel"),
        None,
        StatusCode::OK,
    )
    .await
    .unwrap();
    let service = next_service_where(&mut late, |s| s["workflow"]["action"] == 255).await;
    assert_eq!(service["workflow"], json!({"action": 255, "id": workflow}));
    assert_eq!(service["updateManifest"], Value::Null);
    assert_eq!(service["fileUrls"], Value::Null);
    let twin = server.service().twin("toaster-late").await.unwrap();
    assert!(twin.pointer("/properties/desired/deviceUpdate/service/fileUrls").is_none(), "{twin}");
    let status = deployment_status(&du, "north", "dep1").await;
    assert_eq!(status["deploymentState"], "Canceled");
    let retry_canceled = du
        .send(
            Method::POST,
            &format!("/management/groups/north/deviceClassSubgroups/{toaster_class}/deployments/dep1:retry"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(retry_canceled.status(), StatusCode::CONFLICT);

    // Deployments list, get, delete.
    let (deployments, _) = du.list("/management/groups/north/deployments").await.unwrap();
    assert_eq!(deployments.len(), 1);
    du.expect(Method::DELETE, "/management/groups/north/deployments/dep1", None, StatusCode::NO_CONTENT).await.unwrap();
    du.expect(Method::GET, "/management/groups/north/deployments/dep1", None, StatusCode::NOT_FOUND).await.unwrap();
    server.shutdown().await;
}

pub(crate) async fn a_rollback_policy_redeploys_to_the_failed_devices(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    imported(&du, &files, &toaster("1.0", b"#!/bin/sh\necho 1\n")).await;
    imported(&du, &files, &toaster("2.0", b"#!/bin/sh\necho 2\n")).await;
    let mut a = agent_device(&server, "toaster-a", Some("south"), "toaster").await;
    let mut b = agent_device(&server, "toaster-b", Some("south"), "toaster").await;
    du.expect(
        Method::PUT,
        "/management/groups/south/deployments/dep2",
        Some(&json!({"deploymentId": "dep2", "groupId": "south", "startDateTime": "2026-01-01T00:00:00Z",
            "update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "2.0"}},
            "rollbackPolicy": {"update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "1.0"}},
                "failure": {"devicesFailedPercentage": 50, "devicesFailedCount": 1}}})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    let workflow = next_service(&mut a).await["workflow"]["id"].as_str().unwrap().to_owned();
    next_service(&mut b).await;
    a.patch_reported(&report(0, &workflow, 700, Some("2.0"))).await.unwrap();
    b.patch_reported(&report(255, &workflow, 0, None)).await.unwrap();
    // The failed device gets the rollback update, under a new workflow id; the other nothing.
    let service = next_service_where(&mut b, |s| s["workflow"]["id"] != workflow.as_str()).await;
    assert_ne!(service["workflow"]["id"], workflow.as_str());
    let manifest: Value = serde_json::from_str(service["updateManifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["updateId"]["version"], "1.0");
    let (deployments, _) = du.list("/management/groups/south/deployments").await.unwrap();
    let rollback = deployments.iter().find(|d| d["isCloudInitiatedRollback"] == true).expect("a rollback deployment");
    assert_eq!(rollback["update"]["updateId"]["version"], "1.0");
    let status = deployment_status(&du, "south", "dep2").await;
    assert_eq!(status["subgroupStatus"][0]["deploymentState"], "Failed", "{status}");
    // Each page of device states derives every device's state and whether it moved on (the
    // failed device follows the rollback now) from its own record and the deployments.
    let class = rollback["deviceClassSubgroups"][0].as_str().unwrap();
    let states_of =
        |id: &str| format!("/management/groups/south/deviceClassSubgroups/{class}/deployments/{id}/devicestates");
    let (states, _) = du.list(&states_of("dep2")).await.unwrap();
    let state_of = |id: &str| states.iter().find(|s| s["deviceId"] == id).cloned().unwrap_or_default();
    assert_eq!(state_of("toaster-a")["deviceState"], "Succeeded", "{states:?}");
    assert_eq!(state_of("toaster-a")["movedOnToNewDeployment"], false, "{states:?}");
    assert_eq!(state_of("toaster-b")["deviceState"], "Failed", "{states:?}");
    assert_eq!(state_of("toaster-b")["movedOnToNewDeployment"], true, "{states:?}");
    let (rolled_back, _) = du.list(&states_of(rollback["deploymentId"].as_str().unwrap())).await.unwrap();
    assert_eq!(rolled_back.len(), 1, "a rollback lists its targets only: {rolled_back:?}");
    assert_eq!(rolled_back[0]["deviceId"], "toaster-b");
    assert_eq!(rolled_back[0]["movedOnToNewDeployment"], false);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), a.next_desired(Duration::from_millis(500)))
            .await
            .map(|r| r.is_err())
            .unwrap_or(true),
        "the succeeded device is not rolled back"
    );
    server.shutdown().await;
}

pub(crate) async fn lists_page_and_requests_are_authenticated(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    for version in ["1.0", "1.1", "1.2", "1.3", "1.10"] {
        imported(&du, &files, &toaster(version, version.as_bytes())).await;
    }
    let (versions, pages) = du.list("/updates/providers/contoso/names/toaster/versions").await.unwrap();
    assert_eq!(versions, vec![json!("1.0"), json!("1.1"), json!("1.2"), json!("1.3"), json!("1.10")], "numeric order");
    assert_eq!(pages, 5usize.div_ceil(TEST_PAGE_SIZE));
    let first = du.get("/updates").await.unwrap();
    assert_eq!(first["value"].as_array().unwrap().len(), TEST_PAGE_SIZE);
    assert!(first["nextLink"].as_str().unwrap().contains("skipToken="));

    // Authentication, instance, api-version.
    let anonymous = du.http().get(du.url("/updates")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    du.with_token("not-a-token").expect(Method::GET, "/updates", None, StatusCode::UNAUTHORIZED).await.unwrap();
    let other_instance = du
        .http()
        .get(du.url("/updates").replace("/deviceUpdate/default/", "/deviceUpdate/other/"))
        .bearer_auth(&server.admin.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(other_instance.status(), StatusCode::NOT_FOUND);
    let no_version = du
        .http()
        .get(format!("{}/deviceUpdate/default/updates", du.base_url()))
        .bearer_auth(&server.admin.api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), StatusCode::BAD_REQUEST);

    // Tokens: created, used, listed, revoked.
    let created =
        du.expect(Method::POST, "/duhub/tokens", Some(&json!({"name": "ci"})), StatusCode::CREATED).await.unwrap();
    let token = created["token"].as_str().unwrap();
    let ci = du.with_token(token);
    ci.get("/updates/providers").await.unwrap();
    let (tokens, _) = du.list("/duhub/tokens").await.unwrap();
    assert!(tokens.iter().any(|t| t["name"] == "ci" && t["id"] == created["id"]));
    du.expect(
        Method::DELETE,
        &format!("/duhub/tokens/{}", created["id"].as_str().unwrap()),
        None,
        StatusCode::NO_CONTENT,
    )
    .await
    .unwrap();
    ci.expect(Method::GET, "/updates/providers", None, StatusCode::UNAUTHORIZED).await.unwrap();

    // Log collection and device health answer a clear error.
    let unsupported = du
        .send(Method::GET, "/management/deviceDiagnostics/deviceHealth?filter=state%20eq%20%27healthy%27", None)
        .await
        .unwrap();
    assert_eq!(unsupported.status(), StatusCode::NOT_FOUND);
    assert_eq!(unsupported.json::<Value>().await.unwrap()["error"]["code"], "NotSupported");
    server.shutdown().await;
}
