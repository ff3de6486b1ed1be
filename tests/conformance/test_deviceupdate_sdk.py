"""Microsoft's Device Update SDK (`azure-iot-deviceupdate` 1.1.0, unmodified) against duhub's
Device Update REST API, with real devices (`azure-iot-device`) playing the agent's part over MQTT.

The client is `DeviceUpdateClient(endpoint="localhost:<https port>", instance_id=<admin.json
instanceId>, credential=<get_token -> admin.json apiToken>, connection_verify=<ca.pem>,
raw_request_hook=<restores the port the SDK URL-quotes>, polling_interval=1)` (conftest
`du_client`, protocol reference §10.5). Imports fetch their import manifest and files from a
plain-HTTP server on 127.0.0.1 (conftest `file_server`). Devices are created and tagged
`ADUGroup` with `azure-iot-hub`'s `IoTHubRegistryManager`, connect with `IoTHubDeviceClient`,
report what the agent 1.1.0 reports (§5.4, §5.5) and receive the deployment as a desired
property patch (§5.2).

The module's updates and devices are shared fixtures; the tests run in file order: imports (and a
failed one), the fleet's view before any deployment, a deployment's whole life, deleting an update.
"""

import contextlib
import json
import secrets

import pytest
import requests
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
)
from azure.iot.hub.models import Twin

import support
from support import DU_MODEL_ID, DesiredPatches, call, listed, wait_until

SUFFIX = secrets.token_hex(3)
PROVIDER = f"Conformance-{SUFFIX}"
NAME = "Toaster"
MANUFACTURER = "contoso"
MODEL = f"toaster-{SUFFIX}"  # a device class of this module's own
GROUP = f"sdk-group-{SUFFIX}"
DEPLOYMENT = f"sdk-deployment-{SUFFIX}"
CONTRACT_MODEL = "dtmi:azure:iot:deviceUpdateContractModel;3"


def update_id(version, name=NAME):
    return {"provider": PROVIDER, "name": name, "version": version}


V1 = update_id("1.0")
V2 = update_id("2.0")


def installed_update_id(uid):
    """`installedUpdateId` as the agent reports it: a JSON string (§5.5)."""
    return json.dumps({"provider": uid["provider"], "name": uid["name"], "version": uid["version"]},
                      separators=(",", ":"))


# ----- imports ----------------------------------------------------------------------------------

UPDATE_FILES = {
    "1.0": {"install.sh": b"#!/bin/sh\necho installing 1.0\n", "firmware-1.0.bin": bytes(range(256)) * 16},
    "2.0": {"install.sh": b"#!/bin/sh\necho installing 2.0\n", "firmware-2.0.bin": bytes(range(255, -1, -1)) * 20},
}


def toaster_manifest(version, name=NAME):
    return support.import_manifest_v5(
        update_id(version, name), [{"manufacturer": MANUFACTURER, "model": MODEL}], UPDATE_FILES[version],
        handler_properties={"scriptFileName": "install.sh", "installedCriteria": version},
        description=f"Toaster firmware {version}")


def operation_of(du_client, uid):
    """The import operation that produced update `uid`."""
    operations = listed(du_client.device_update.list_operation_statuses())
    return next(op for op in operations if op.get("update", {}).get("updateId") == uid)


@pytest.fixture(scope="module")
def imported(du_client, file_server):
    """Updates 1.0 and then 2.0 of PROVIDER/NAME, imported with `begin_import_update(...).result()`;
    returns the import manifests by version."""
    manifests = {}
    for version in ("1.0", "2.0"):
        manifest = toaster_manifest(version)
        item = support.publish_update(file_server, manifest, UPDATE_FILES[version],
                                      friendly_name=f"Toaster {version}")
        poller = call(du_client.device_update.begin_import_update, [item])
        assert call(poller.result) is None
        assert poller.status().lower() == "succeeded"
        manifests[version] = manifest
    return manifests


def test_import_update_and_read_it_back(duhub, du_client, imported):
    du = du_client.device_update

    # Operations: both imports succeeded and say what they imported and where it is.
    for uid in (V1, V2):
        operation = operation_of(du_client, uid)
        assert operation["status"] == "Succeeded"
        assert operation["update"]["updateId"] == uid
        assert operation["resourceLocation"].startswith(
            f"/deviceUpdate/{duhub.instance_id}/updates/providers/{PROVIDER}/names/{NAME}/versions/{uid['version']}")
        assert "error" not in operation
        assert operation["createdDateTime"] <= operation["lastActionDateTime"]
        fetched = call(du.get_operation_status, operation["operationId"])
        assert fetched == operation
        with pytest.raises(ResourceNotModifiedError):
            call(du.get_operation_status, operation["operationId"], etag=operation["etag"],
                 match_condition=MatchConditions.IfModified)
    assert listed(du.list_operation_statuses(filter="status eq 'NotStarted' or status eq 'Running'")) == []
    assert len(listed(du.list_operation_statuses(top=1))) == 1
    with pytest.raises(ResourceNotFoundError):
        call(du.get_operation_status, "00000000-0000-0000-0000-000000000000")

    # Providers, names, versions.
    assert PROVIDER in listed(du.list_providers())
    assert listed(du.list_names(PROVIDER)) == [NAME]
    assert listed(du.list_versions(PROVIDER, NAME)) == ["1.0", "2.0"]
    assert listed(du.list_versions(PROVIDER, NAME, filter="isDeployable eq true")) == ["1.0", "2.0"]
    assert listed(du.list_versions(PROVIDER, NAME, filter="isDeployable eq false")) == []

    # The update as imported.
    update = call(du.get_update, PROVIDER, NAME, "1.0")
    assert update["updateId"] == V1
    assert update["friendlyName"] == "Toaster 1.0"
    assert update["description"] == "Toaster firmware 1.0"
    assert update["isDeployable"] is True
    assert update["compatibility"] == [{"manufacturer": MANUFACTURER, "model": MODEL}]
    assert update["manifestVersion"] == "5.0"
    steps = update["instructions"]["steps"]
    assert len(steps) == 1
    assert steps[0]["handler"] == "microsoft/script:1"
    assert steps[0]["handlerProperties"] == {"scriptFileName": "install.sh", "installedCriteria": "1.0"}
    assert update["importedDateTime"] and update["createdDateTime"]
    assert "referencedBy" not in update
    with pytest.raises(ResourceNotModifiedError):
        call(du.get_update, PROVIDER, NAME, "1.0", etag=update["etag"], match_condition=MatchConditions.IfModified)
    assert call(du.get_update, PROVIDER, NAME, "1.0", etag='"stale"',
                match_condition=MatchConditions.IfModified) == update
    with pytest.raises(ResourceNotFoundError):
        call(du.get_update, PROVIDER, NAME, "9.9")

    # Files: ids the server assigned, each with its name, size and hash; the steps list them.
    file_ids = listed(du.list_files(PROVIDER, NAME, "1.0"))
    assert len(file_ids) == 2 and len(set(file_ids)) == 2
    assert sorted(steps[0]["files"]) == sorted(UPDATE_FILES["1.0"]), "steps name their files"
    by_name = {}
    for file_id in file_ids:
        file = call(du.get_file, PROVIDER, NAME, "1.0", file_id)
        assert file["fileId"] == file_id
        content = UPDATE_FILES["1.0"][file["fileName"]]
        assert file["sizeInBytes"] == len(content)
        assert file["hashes"]["sha256"] == support.sha256_b64(content)
        with pytest.raises(ResourceNotModifiedError):
            call(du.get_file, PROVIDER, NAME, "1.0", file_id, etag=file["etag"],
                 match_condition=MatchConditions.IfModified)
        by_name[file["fileName"]] = file_id
    assert set(by_name) == set(UPDATE_FILES["1.0"])
    with pytest.raises(ResourceNotFoundError):
        call(du.get_file, PROVIDER, NAME, "1.0", "f0000000000000000")

    # The update list: search and filter.
    found = listed(du.list_updates(search=PROVIDER))
    assert sorted(u["updateId"]["version"] for u in found) == ["1.0", "2.0"]
    assert {json.dumps(u["updateId"], sort_keys=True) for u in found} == {
        json.dumps(V1, sort_keys=True), json.dumps(V2, sort_keys=True)}
    assert next(u for u in found if u["updateId"] == V2)["friendlyName"] == "Toaster 2.0"
    deployable = listed(du.list_updates(filter="isDeployable eq true"))
    assert {V1["version"], V2["version"]} <= {u["updateId"]["version"] for u in deployable
                                              if u["updateId"]["provider"] == PROVIDER}


def test_failed_import_raises_with_the_reason(du_client, file_server):
    du = du_client.device_update
    files = dict(UPDATE_FILES["1.0"])
    manifest = support.import_manifest_v5(update_id("3.0", "Broken"), [{"manufacturer": MANUFACTURER, "model": MODEL}],
                                          files)
    # Serve bytes of the same size but another hash than the manifest says.
    files["install.sh"] = files["install.sh"].replace(b"1.0", b"1.1")
    item = support.publish_update(file_server, manifest, files)
    poller = call(du.begin_import_update, [item])
    with pytest.raises(HttpResponseError):
        call(poller.result)
    assert poller.status().lower() == "failed"
    failed = [op for op in listed(du.list_operation_statuses()) if op["status"] == "Failed"
              and "install.sh" in json.dumps(op.get("error", {}))]
    assert failed, "the failed import operation is listed with an error naming the file"
    assert failed[0]["error"]["code"] == "FileHashMismatch"
    with pytest.raises(ResourceNotFoundError):
        call(du.get_update, PROVIDER, "Broken", "3.0")
    with pytest.raises(ResourceNotFoundError):
        listed(du.list_versions(PROVIDER, "Broken"))


# ----- devices ----------------------------------------------------------------------------------

class Agent:
    """A device playing the Device Update agent 1.1.0's part over `azure-iot-device`."""

    def __init__(self, device_id, client, patches):
        self.device_id = device_id
        self.client = client
        self.patches = patches

    def report(self, agent):
        call(self.client.patch_twin_reported_properties, {"deviceUpdate": {"__t": "c", "agent": agent}})

    def acknowledge(self, service, version):
        """The writable-property ACK (§5.3)."""
        value = dict(service, updateManifestSignature=None, fileUrls=None)
        call(self.client.patch_twin_reported_properties,
             {"deviceUpdate": {"__t": "c", "service": {"value": value, "ac": 200, "ad": "", "av": version}}})

    def report_in_progress(self, workflow):
        self.report({"lastInstallResult": {"resultCode": 1, "extendedResultCodes": "00000000", "resultDetails": None,
                                           "stepResults": None},
                     "state": 6, "workflow": workflow})

    def report_success(self, workflow, uid):
        self.report({"lastInstallResult": {
            "stepResults": {"step_0": {"resultCode": 700, "extendedResultCodes": "00000000", "resultDetails": None}},
            "resultCode": 700, "extendedResultCodes": "00000000", "resultDetails": None},
            "state": 0, "workflow": workflow, "installedUpdateId": installed_update_id(uid)})

    def report_failure(self, workflow):
        self.report({"lastInstallResult": {
            "stepResults": {"step_0": {"resultCode": 0, "extendedResultCodes": "30501001",
                                       "resultDetails": "install.sh exited with 1"}},
            "resultCode": 0, "extendedResultCodes": "30501001", "resultDetails": "install.sh exited with 1"},
            "state": 255, "workflow": workflow})


def startup_report(installed=None):
    """The agent's startup message (§5.4), optionally with what it has installed."""
    agent = {"deviceProperties": {"manufacturer": MANUFACTURER, "model": MODEL, "interfaceId": None,
                                  "contractModelId": CONTRACT_MODEL, "aduVer": "DU;agent/1.1.0"},
             "compatPropertyNames": "manufacturer,model"}
    if installed is not None:
        agent.update({"state": 0, "installedUpdateId": installed_update_id(installed)})
    return agent


@pytest.fixture(scope="module")
def fleet(duhub, registry, imported):
    """Three connected agents `a`, `b`, `c` in GROUP, all of this module's device class; `a` has
    update 1.0 installed."""
    from azure.iot.device import IoTHubDeviceClient

    agents = {}
    created = []
    try:
        for role in ("a", "b", "c"):
            device_id = f"sdk-{SUFFIX}-{role}"
            key = support.random_key()
            call(registry.create_device_with_sas, device_id, key, support.random_key(), "enabled")
            created.append(device_id)
            twin = call(registry.update_twin, device_id, Twin(tags={"ADUGroup": GROUP}))
            assert twin.tags == {"ADUGroup": GROUP}
            client = IoTHubDeviceClient.create_from_connection_string(
                duhub.device_connection_string(device_id, key), server_verification_cert=duhub.ca_pem,
                product_info=DU_MODEL_ID)
            patches = DesiredPatches()
            client.on_twin_desired_properties_patch_received = patches
            agents[role] = Agent(device_id, client, patches)
            call(client.connect)
            agents[role].report(startup_report(installed=V1 if role == "a" else None))
        yield agents
    finally:
        for agent in agents.values():
            with contextlib.suppress(Exception):
                support.within(15, agent.client.shutdown)
        for device_id in created:
            with contextlib.suppress(Exception):
                call(registry.delete_device, device_id)


def device_class_of(du_client):
    classes = [c for c in listed(du_client.device_management.list_device_classes())
               if c["deviceClassProperties"]["compatProperties"].get("model") == MODEL]
    assert len(classes) == 1, classes
    return classes[0]


def compliance(total, latest, available, progress):
    return {"totalDeviceCount": total, "onLatestUpdateDeviceCount": latest,
            "newUpdatesAvailableDeviceCount": available, "updatesInProgressDeviceCount": progress}


def test_groups_device_classes_and_compliance(du_client, fleet):
    dm = du_client.device_management
    ids = sorted(agent.device_id for agent in fleet.values())

    # The group comes from the ADUGroup tag.
    group = next(g for g in listed(dm.list_groups()) if g["groupId"] == GROUP)
    assert group["groupType"] == "IoTHubTag"
    assert group["deviceCount"] == 3
    assert group["subgroupsWithNewUpdatesAvailableCount"] == 1
    assert group["subgroupsWithUpdatesInProgressCount"] == 0
    assert group["subgroupsWithOnLatestUpdateCount"] == 0
    assert group.get("deployments", []) == []
    assert call(dm.get_group, GROUP) == group
    assert [g["groupId"] for g in listed(dm.list_groups(order_by="groupId desc"))] == sorted(
        (g["groupId"] for g in listed(dm.list_groups())), reverse=True)
    with pytest.raises(ResourceNotFoundError):
        call(dm.get_group, f"no-such-group-{SUFFIX}")

    # The device class comes from the reported compatibility properties and contract model.
    device_class = device_class_of(du_client)
    class_id = device_class["deviceClassId"]
    assert device_class["deviceClassProperties"] == {
        "compatProperties": {"manufacturer": MANUFACTURER, "model": MODEL},
        "contractModel": {"id": CONTRACT_MODEL, "name": "deviceUpdateContractModel"}}
    assert device_class["bestCompatibleUpdate"]["updateId"] == V2
    assert call(dm.get_device_class, class_id) == device_class
    friendly = f"Toasters {SUFFIX}"
    renamed = call(dm.update_device_class, class_id, {"friendlyName": friendly})
    assert renamed["friendlyName"] == friendly and renamed["deviceClassId"] == class_id
    assert [c["deviceClassId"] for c in listed(dm.list_device_classes(filter=f"friendlyName eq '{friendly}'"))] == [
        class_id]
    installable = listed(dm.list_installable_updates_for_device_class(class_id))
    assert sorted(u["updateId"]["version"] for u in installable) == ["1.0", "2.0"]
    assert all(u["updateId"]["provider"] == PROVIDER for u in installable)

    # One subgroup: the group's devices of that class.
    subgroups = listed(dm.list_device_class_subgroups_for_group(GROUP))
    assert len(subgroups) == 1
    subgroup = subgroups[0]
    assert (subgroup["groupId"], subgroup["deviceClassId"], subgroup["deviceCount"]) == (GROUP, class_id, 3)
    assert subgroup["createdDateTime"] and "deploymentId" not in subgroup
    assert listed(dm.list_device_class_subgroups_for_group(GROUP, filter=f"compatProperties/model eq '{MODEL}'")) == [
        subgroup]
    assert listed(dm.list_device_class_subgroups_for_group(GROUP, filter="compatProperties/model eq 'kettle'")) == []
    assert call(dm.get_device_class_subgroup, GROUP, class_id) == subgroup

    # Best updates: 2.0, for all three (a has 1.0).
    best = {"groupId": GROUP, "deviceClassId": class_id,
            "update": {"updateId": V2, "description": "Toaster firmware 2.0", "friendlyName": "Toaster 2.0"},
            "deviceCount": 3}
    assert listed(dm.list_best_updates_for_group(GROUP)) == [best]
    assert call(dm.get_best_updates_for_device_class_subgroup, GROUP, class_id) == best

    # Compliance: nobody is on 2.0, nothing is in progress.
    assert call(dm.get_update_compliance_for_group, GROUP) == compliance(3, 0, 3, 0)
    assert call(dm.get_device_class_subgroup_update_compliance, GROUP, class_id) == compliance(3, 0, 3, 0)
    everyone = listed(dm.list_devices())
    overall = call(dm.get_update_compliance)
    assert overall["totalDeviceCount"] == len(everyone) >= 3
    assert overall["onLatestUpdateDeviceCount"] == sum(1 for d in everyone if d["onLatestUpdate"])

    # Devices.
    devices = listed(dm.list_devices(filter=f"groupId eq '{GROUP}'"))
    assert sorted(d["deviceId"] for d in devices) == ids
    for device in devices:
        assert device["deviceClassId"] == class_id
        assert device["groupId"] == GROUP
        assert device["onLatestUpdate"] is False
        assert "deploymentStatus" not in device
    assert sorted(d["deviceId"] for d in listed(dm.list_devices(filter=f"deviceClassId eq '{class_id}'"))) == ids
    a = call(dm.get_device, fleet["a"].device_id)
    assert a["deviceId"] == fleet["a"].device_id
    assert a["installedUpdate"]["updateId"] == V1
    assert a["onLatestUpdate"] is False
    assert "installedUpdate" not in call(dm.get_device, fleet["b"].device_id)
    with pytest.raises(ResourceNotFoundError):
        call(dm.get_device, f"no-such-device-{SUFFIX}")


def check_deployment(deployment, class_id, start):
    assert deployment["deploymentId"] == DEPLOYMENT
    assert deployment["groupId"] == GROUP
    assert deployment["startDateTime"] == start
    assert deployment["update"]["updateId"] == V2
    assert deployment["deviceClassSubgroups"] == [class_id]
    assert deployment["isCloudInitiatedRollback"] is False


def device_states(dm, class_id, **kwargs):
    states = listed(dm.list_device_states_for_device_class_subgroup_deployment(GROUP, class_id, DEPLOYMENT, **kwargs))
    return {s["deviceId"]: s for s in states}


def subgroup_status(total, progress, failed, succeeded, canceled, state, class_id):
    return {"groupId": GROUP, "deviceClassId": class_id, "deploymentState": state, "totalDevices": total,
            "devicesInProgressCount": progress, "devicesCompletedFailedCount": failed,
            "devicesCompletedSucceededCount": succeeded, "devicesCanceledCount": canceled}


def test_deployment_reaches_devices_and_their_reports_drive_its_status(duhub, registry, du_client, fleet):
    dm = du_client.device_management
    a, b, c = fleet["a"], fleet["b"], fleet["c"]
    class_id = device_class_of(du_client)["deviceClassId"]
    start = support.utc_now(-60)

    deployment = call(dm.create_or_update_deployment, GROUP, DEPLOYMENT, {
        "deploymentId": DEPLOYMENT, "groupId": GROUP, "startDateTime": start,
        "update": {"updateId": V2}})
    check_deployment(deployment, class_id, start)
    assert deployment["isCanceled"] is False and deployment["isRetried"] is False

    # Every device of the subgroup receives the deployment: action 3, one workflow id, the signed
    # manifest of 2.0 and where to download its files.
    services = {}
    for agent in (a, b, c):
        services[agent.device_id] = agent.patches.service(
            lambda s: s["workflow"].get("action") == 3, f"the deployment reaching {agent.device_id}")
    workflow_ids = {s["workflow"]["id"] for s, _ in services.values()}
    assert len(workflow_ids) == 1, workflow_ids
    service, version = services[a.device_id]
    workflow = {"action": 3, "id": workflow_ids.pop()}
    assert isinstance(service["updateManifest"], str)
    manifest = json.loads(service["updateManifest"])
    assert manifest["updateId"] == V2
    assert manifest["manifestVersion"] == "5"
    assert manifest["compatibility"] == [{"manufacturer": MANUFACTURER, "model": MODEL}]
    file_ids = listed(du_client.device_update.list_files(PROVIDER, NAME, "2.0"))
    assert sorted(manifest["files"]) == sorted(file_ids)
    assert sorted(service["fileUrls"]) == sorted(file_ids)
    assert len(service["updateManifestSignature"].split(".")) == 3, "a compact JWS"
    assert service["rootKeyPackageUrl"]
    for file_id, url in service["fileUrls"].items():
        body = requests.get(url, verify=str(duhub.ca_path), timeout=support.CALL_TIMEOUT)
        assert body.status_code == 200
        assert support.sha256_b64(body.content) == manifest["files"][file_id]["hashes"]["sha256"]
    # The twin the service sees says the same.
    desired = call(registry.get_twin, a.device_id).properties.desired["deviceUpdate"]["service"]
    assert desired["workflow"]["id"] == workflow["id"] and desired["updateManifest"] == service["updateManifest"]

    # Nothing reported yet: all in progress.
    status = call(dm.get_deployment_status, GROUP, DEPLOYMENT)
    assert status == {"groupId": GROUP, "deploymentState": "Active",
                      "subgroupStatus": [subgroup_status(3, 3, 0, 0, 0, "Active", class_id)]}

    # a installs it, b fails, c is still at it.
    for agent in (a, b, c):
        agent.acknowledge(*services[agent.device_id])
        agent.report_in_progress(workflow)
    a.report_success(workflow, V2)
    b.report_failure(workflow)

    status = call(dm.get_deployment_status, GROUP, DEPLOYMENT)
    assert status == {"groupId": GROUP, "deploymentState": "ActiveWithSubgroupFailures",
                      "subgroupStatus": [subgroup_status(3, 1, 1, 1, 0, "Active", class_id)]}
    assert call(dm.get_device_class_subgroup_deployment_status, GROUP, class_id, DEPLOYMENT) == \
        subgroup_status(3, 1, 1, 1, 0, "Active", class_id)
    states = device_states(dm, class_id)
    assert {d: s["deviceState"] for d, s in states.items()} == {
        a.device_id: "Succeeded", b.device_id: "Failed", c.device_id: "InProgress"}
    assert all(s["retryCount"] == 0 and s["movedOnToNewDeployment"] is False for s in states.values())
    assert list(device_states(dm, class_id, filter="deviceState eq 'Failed'")) == [b.device_id]

    # The devices as the service sees them now.
    device = call(dm.get_device, a.device_id)
    assert device["installedUpdate"]["updateId"] == V2
    assert device["lastAttemptedUpdate"]["updateId"] == V2
    assert device["onLatestUpdate"] is True
    assert device["deploymentStatus"] == "Succeeded"
    assert device["lastDeploymentId"] == DEPLOYMENT
    assert device["lastInstallResult"]["resultCode"] == 700
    assert device["lastInstallResult"]["extendedResultCode"] == 0
    assert "resultDetails" not in device["lastInstallResult"], "the agent's null is no string: left out"
    device = call(dm.get_device, b.device_id)
    assert device["deploymentStatus"] == "Failed"
    assert device["onLatestUpdate"] is False
    assert device["lastInstallResult"]["resultCode"] == 0
    assert device["lastInstallResult"]["extendedResultCode"] == 0x30501001
    assert device["lastInstallResult"]["resultDetails"] == "install.sh exited with 1"
    assert call(dm.get_device, c.device_id)["deploymentStatus"] == "InProgress"
    failed = listed(dm.list_devices(filter=f"groupId eq '{GROUP}' and deploymentStatus eq 'Failed'"))
    assert [d["deviceId"] for d in failed] == [b.device_id]
    assert call(dm.get_update_compliance_for_group, GROUP) == compliance(3, 1, 1, 1)
    group = call(dm.get_group, GROUP)
    assert group["deployments"] == [DEPLOYMENT]
    assert group["subgroupsWithUpdatesInProgressCount"] == 1
    subgroup = call(dm.get_device_class_subgroup, GROUP, class_id)
    assert subgroup["deploymentId"] == DEPLOYMENT

    # The deployment, by group and by subgroup.
    assert [d["deploymentId"] for d in listed(dm.list_deployments_for_group(GROUP))] == [DEPLOYMENT]
    check_deployment(call(dm.get_deployment, GROUP, DEPLOYMENT), class_id, start)
    assert [d["deploymentId"] for d in listed(dm.list_deployments_for_device_class_subgroup(GROUP, class_id))] == [
        DEPLOYMENT]
    check_deployment(call(dm.get_deployment_for_device_class_subgroup, GROUP, class_id, DEPLOYMENT), class_id, start)

    # An update a deployment uses cannot be deleted.
    with pytest.raises(ResourceExistsError):
        call(du_client.device_update.begin_delete_update, PROVIDER, NAME, "2.0")

    # Retry: the failed device gets the same workflow again with a retryTimestamp.
    retried = call(dm.retry_deployment, GROUP, class_id, DEPLOYMENT)
    assert retried["isRetried"] is True and retried["deploymentId"] == DEPLOYMENT
    retry, retry_version = b.patches.service(
        lambda s: s["workflow"].get("action") == 3 and "retryTimestamp" in s["workflow"], "the retry reaching b")
    assert retry["workflow"]["id"] == workflow["id"]
    assert json.loads(retry["updateManifest"])["updateId"] == V2
    assert device_states(dm, class_id)[b.device_id]["retryCount"] == 1
    for agent in (a, c):
        twin_workflow = call(registry.get_twin, agent.device_id).properties.desired["deviceUpdate"]["service"][
            "workflow"]
        assert "retryTimestamp" not in twin_workflow, f"{agent.device_id} did not fail, so it is not retried"
    retry_workflow = dict(workflow, retryTimestamp=retry["workflow"]["retryTimestamp"])
    b.acknowledge(retry, retry_version)
    b.report_in_progress(retry_workflow)
    b.report_success(retry_workflow, V2)
    assert call(dm.get_device_class_subgroup_deployment_status, GROUP, class_id, DEPLOYMENT) == \
        subgroup_status(3, 1, 0, 2, 0, "Active", class_id)
    assert call(dm.get_deployment_status, GROUP, DEPLOYMENT)["deploymentState"] == "Active"

    # Cancel: the devices are told action 255 for the workflow, without manifest or files; c,
    # still installing, reports the cancellation.
    canceled = call(dm.stop_deployment, GROUP, class_id, DEPLOYMENT)
    assert canceled["isCanceled"] is True and canceled["deploymentId"] == DEPLOYMENT
    cancel, _ = c.patches.service(lambda s: s["workflow"].get("action") == 255, "the cancel reaching c")
    assert cancel["workflow"]["id"] == workflow["id"]
    assert cancel.get("updateManifest") is None and cancel.get("fileUrls") is None
    c.report({"lastInstallResult": {"resultCode": -1, "extendedResultCodes": "00000000", "resultDetails": None},
              "state": 0, "workflow": {"action": 255, "id": workflow["id"]}})
    assert call(dm.get_deployment_status, GROUP, DEPLOYMENT) == {
        "groupId": GROUP, "deploymentState": "Canceled",
        "subgroupStatus": [subgroup_status(3, 0, 0, 2, 1, "Canceled", class_id)]}
    assert device_states(dm, class_id)[c.device_id]["deviceState"] == "Canceled"
    assert call(dm.get_deployment, GROUP, DEPLOYMENT)["isCanceled"] is True
    with pytest.raises(ResourceExistsError):
        call(dm.retry_deployment, GROUP, class_id, DEPLOYMENT)

    # Delete.
    assert call(dm.delete_deployment, GROUP, DEPLOYMENT) is None
    with pytest.raises(ResourceNotFoundError):
        call(dm.get_deployment, GROUP, DEPLOYMENT)
    with pytest.raises(ResourceNotFoundError):
        call(dm.get_deployment_status, GROUP, DEPLOYMENT)
    assert listed(dm.list_deployments_for_group(GROUP)) == []
    assert call(dm.get_group, GROUP).get("deployments", []) == []


def test_delete_update_not_in_use(du_client, file_server, imported):
    du = du_client.device_update
    name = "Toaster-Tools"
    manifest = toaster_manifest("1.0", name=name)
    item = support.publish_update(file_server, manifest, UPDATE_FILES["1.0"])
    call(call(du.begin_import_update, [item]).result)
    assert call(du.get_update, PROVIDER, name, "1.0")["updateId"] == update_id("1.0", name)
    assert sorted(listed(du.list_names(PROVIDER))) == sorted([NAME, name])

    poller = call(du.begin_delete_update, PROVIDER, name, "1.0")
    assert call(poller.result) is None
    assert poller.status().lower() == "succeeded"

    with pytest.raises(ResourceNotFoundError):
        call(du.get_update, PROVIDER, name, "1.0")
    with pytest.raises(ResourceNotFoundError):
        call(du.begin_delete_update, PROVIDER, name, "1.0")
    assert listed(du.list_names(PROVIDER)) == [NAME]
    assert listed(du.list_versions(PROVIDER, NAME)) == ["1.0", "2.0"], "the other updates stay"


def test_list_operation_statuses_leaves_out_deletes(du_client, file_server):
    du = du_client.device_update
    name = "Toaster-Scratch"
    item = support.publish_update(file_server, toaster_manifest("1.0", name=name), UPDATE_FILES["1.0"])
    call(call(du.begin_import_update, [item]).result)
    call(call(du.begin_delete_update, PROVIDER, name, "1.0").result)
    listed_for_it = [op for op in listed(du.list_operation_statuses())
                     if op.get("update", {}).get("updateId") == update_id("1.0", name)]
    assert ["resourceLocation" in op for op in listed_for_it] == [True], "only the import is listed"
