"""duhub's Device Update REST API against Microsoft's own contract for it: the 2022-10-01 swagger
(`fixtures/deviceupdate-2022-10-01.swagger.json`, a copy of `shared/spec/azure-api/`), checked with
schemathesis (property-based requests generated from the swagger).

Every operation gets a few generated requests (`DUHUB_TEST_CONTRACT_EXAMPLES`, default 10) to
`https://127.0.0.1:<https port>` (the swagger's host is the `x-ms-parameterized-host` `{endpoint}`;
the base URL replaces it) with the admin Bearer token, verified against the server's CA. The path
parameters name resources that exist — an imported update and its files, an import operation, a
device with an agent in a group, its device class and subgroup, a deployment with a device's
results — so the generated queries, headers and bodies reach real answers, whose bodies must
match the swagger's schema (`response_schema_conformance`), and nothing may answer 5xx
(`not_a_server_error`). `api-version` is 2022-10-01 and `instanceId` admin.json's: anything else
only ever gets the guard's 400/404.

Reads and writes run first, then the deletes, the group's last (so that deleting the group, the
deployment or the update does not take the resources away from the other operations' requests).
Last, every operation must refuse requests without a valid token.
Generation is deterministic (the same requests every run) unless `DUHUB_TEST_CONTRACT_SEED` names
a seed.
"""

import contextlib
import json
import os
from pathlib import Path

import pytest
import requests
import schemathesis
from azure.core.exceptions import HttpResponseError
from azure.iot.hub.models import Twin
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import support
from support import DU_MODEL_ID, call, listed

SWAGGER = Path(__file__).parent / "fixtures" / "deviceupdate-2022-10-01.swagger.json"
API_VERSION = "2022-10-01"
EXAMPLES = int(os.environ.get("DUHUB_TEST_CONTRACT_EXAMPLES", "10"))
SEED = os.environ.get("DUHUB_TEST_CONTRACT_SEED")

PROVIDER = "Contract"
NAME = "Widget"
VERSION = "1.0"
MODEL = "widget-contract"
GROUP = "contract-group"
DEPLOYMENT = "contract-deployment"
OLD_DEPLOYMENT = "contract-deployment-old"
GENERATED_DEPLOYMENT = "contract-deployment-generated"

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def world(duhub, registry, du_client, file_server):
    """Resources for the generated requests to find: returns the path parameter values."""
    from azure.iot.device import IoTHubDeviceClient

    du = du_client.device_update

    # Widget 1.0: a script step and a reference step to a child update (not deployable on its
    # own), and a delta-capable payload file (properties, download handler, related file).
    uid = {"provider": PROVIDER, "name": NAME, "version": VERSION}
    child_uid = {"provider": PROVIDER, "name": f"{NAME}Motor", "version": VERSION}
    child_files = {"motor.bin": b"motor firmware\n" * 8}
    child = support.import_manifest_v5(child_uid, [{"manufacturer": "contoso", "model": f"{MODEL}-motor"}],
                                       child_files)
    child["isDeployable"] = False
    files = {"install.sh": b"#!/bin/sh\necho widget\n", "widget.bin": b"\x00widget\xff" * 64}
    delta = b"delta from widget 0.9\n" * 4
    manifest = support.import_manifest_v5(uid, [{"manufacturer": "contoso", "model": MODEL}], files,
                                          handler_properties={"installedCriteria": VERSION},
                                          description="Widget firmware")
    manifest["instructions"]["steps"].append({"type": "reference", "updateId": child_uid})
    widget_bin = next(f for f in manifest["files"] if f["filename"] == "widget.bin")
    widget_bin.update(
        properties={"microsoft.sourceFileHashAlgorithm": "sha256", "chunks": 4},
        downloadHandler={"id": "microsoft/delta:1"},
        relatedFiles=[{"filename": "widget.delta", "sizeInBytes": len(delta),
                       "hashes": {"sha256": support.sha256_b64(delta)},
                       "properties": {"microsoft.sourceFileHashAlgorithm": "sha256",
                                      "microsoft.sourceFileHash": support.sha256_b64(b"widget 0.9")}}])
    call(call(du.begin_import_update, [
        support.publish_update(file_server, manifest, dict(files, **{"widget.delta": delta}),
                               friendly_name="Widget 1.0"),
        support.publish_update(file_server, child, child_files)]).result)
    file_id = next(f for f in listed(du.list_files(PROVIDER, NAME, VERSION))
                   if call(du.get_file, PROVIDER, NAME, VERSION, f)["fileName"] == "widget.bin")
    # A failed import, whose operation carries an error with details.
    broken = support.import_manifest_v5({"provider": PROVIDER, "name": NAME, "version": "one"},
                                        [{"manufacturer": "contoso", "model": MODEL}], files)
    with pytest.raises(HttpResponseError):
        call(call(du.begin_import_update, [support.publish_update(file_server, broken, files)]).result)
    update_operation = next(op for op in listed(du.list_operation_statuses())
                            if op["status"] == "Failed")["operationId"]
    call(call(du_client.device_management.begin_import_devices, "Devices").result)
    device_operation = listed(du_client.device_management.list_operation_statuses())[0]["operationId"]

    device_id = f"contract-{support.random_device_id('dev')}"
    key = support.random_key()
    call(registry.create_device_with_sas, device_id, key, support.random_key(), "enabled")
    client = IoTHubDeviceClient.create_from_connection_string(
        duhub.device_connection_string(device_id, key), server_verification_cert=duhub.ca_pem,
        product_info=DU_MODEL_ID)
    try:
        call(registry.update_twin, device_id, Twin(tags={"ADUGroup": GROUP}))
        call(client.connect)

        def report(agent):
            call(client.patch_twin_reported_properties, {"deviceUpdate": {"__t": "c", "agent": agent}})

        report({"deviceProperties": {"manufacturer": "contoso", "model": MODEL, "interfaceId": None,
                                     "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3",
                                     "aduVer": "DU;agent/1.1.0"},
                "compatPropertyNames": "manufacturer,model"})
        class_id = next(c["deviceClassId"] for c in listed(du_client.device_management.list_device_classes())
                        if c["deviceClassProperties"]["compatProperties"].get("model") == MODEL)
        # DEPLOYMENT governs the subgroup; OLD_DEPLOYMENT (started earlier) is what the
        # subgroup-deployment delete deletes, so that the group-wide delete finds DEPLOYMENT.
        for deployment_id, start in ((OLD_DEPLOYMENT, -120), (DEPLOYMENT, -60)):
            call(du_client.device_management.create_or_update_deployment, GROUP, deployment_id, {
                "deploymentId": deployment_id, "groupId": GROUP, "startDateTime": support.utc_now(start),
                "update": {"updateId": uid}})
        workflow_id = support.wait_until(
            lambda: ((call(registry.get_twin, device_id).properties.desired.get("deviceUpdate") or {}).get("service")
                     or {}).get("workflow", {}).get("id"), "the deployment reaching the device")
        # What the agent 1.1.0 reports after a failed install, nulls included (§5.5).
        report({"lastInstallResult": {
                    "stepResults": {"step_0": {"resultCode": 0, "extendedResultCodes": "30501001",
                                               "resultDetails": None}},
                    "resultCode": 0, "extendedResultCodes": "30501001", "resultDetails": None},
                "state": 255, "workflow": {"action": 3, "id": workflow_id}})
        yield {
            "parameters": {
                "instanceId": duhub.instance_id,
                "provider": PROVIDER,
                "name": NAME,
                "version": VERSION,
                "fileId": file_id,
                "deviceId": device_id,
                "moduleId": "module1",
                "deviceClassId": class_id,
                "groupId": GROUP,
                "deploymentId": DEPLOYMENT,
            },
            # Per operation.
            "operations": {
                "DeviceUpdate_GetOperation": {"operationId": update_operation},
                "DeviceManagement_GetOperation": {"operationId": device_operation},
                "DeviceManagement_DeleteDeploymentForDeviceClassSubgroup": {"deploymentId": OLD_DEPLOYMENT},
                "DeviceManagement_CreateOrUpdateDeployment": {"deploymentId": GENERATED_DEPLOYMENT},
            },
        }
    finally:
        with contextlib.suppress(Exception):
            support.within(15, client.shutdown)
        with contextlib.suppress(Exception):
            call(registry.delete_device, device_id)


def base_config():
    config = {
        "parameters": {"api-version": API_VERSION},
        "generation": {"max-examples": EXAMPLES, "database": "none", "deterministic": SEED is None},
        "phases": {"stateful": {"enabled": False}},
        # Every example is a round trip to the server: Hypothesis' speed and filtering health
        # checks are about generators, not about that.
        "suppress-health-check": ["all"],
    }
    if SEED is not None:
        config["seed"] = int(SEED)
    return schemathesis.Config.from_dict(config)


# Loaded at import, the server's address and the resources' ids given at call time
# (`call_and_validate`): schemathesis 4.32.5's fixture-based loader (`schemathesis.pytest.
# from_fixture`) fails on pytest 9.2 (`Function._nodeid` is gone).
#
# Log collection and device health need agent support duhub does not have: these five operations
# answer 404 "NotSupported" by design, so they can never answer what the swagger promises.
schema = schemathesis.openapi.from_path(SWAGGER, config=base_config()).exclude(
    path_regex=r"/management/deviceDiagnostics/")


def call_and_validate(case, duhub, world):
    """Sends `case` to the running server, its path parameters naming `world`'s resources, and
    runs CHECKS on the answer (the Content-Type check only on answers with a body: a 202 or 204
    without one has no media type to declare)."""
    operation_id = case.operation.definition.raw["operationId"]
    values = dict(world["parameters"], **world["operations"].get(operation_id, {}))
    for name in case.path_parameters or {}:
        if name in values:
            case.path_parameters[name] = values[name]
    if operation_id == "DeviceManagement_CreateOrUpdateDeployment" and isinstance(case.body, dict):
        # A generated deployment names the deployment and group of its path and an imported
        # update, or it never gets past the checks to be stored and answered.
        case.body.update(deploymentId=case.path_parameters["deploymentId"], groupId=GROUP,
                         update={"updateId": {"provider": PROVIDER, "name": NAME, "version": VERSION}})
    kwargs = {"headers": {"Authorization": f"Bearer {duhub.api_token}"}, "verify": str(duhub.ca_path),
              "timeout": support.CALL_TIMEOUT}
    response = case.call(base_url=f"https://127.0.0.1:{duhub.https_port}", **kwargs)
    checks = CHECKS if response.content else [c for c in CHECKS if c is not content_type_conformance]
    case.validate_response(response, checks=checks, headers=kwargs["headers"], transport_kwargs=kwargs)


# Every operation but the deletes.
@schema.exclude(method="DELETE").parametrize()
def test_reads_and_writes_conform_to_the_swagger(case, duhub, world):
    call_and_validate(case, duhub, world)


# Then the deletes; the group's last: deleting it also deletes its deployments.
@schema.include(method="DELETE").exclude(operation_id="DeviceManagement_DeleteGroup").parametrize()
def test_deletes_conform_to_the_swagger(case, duhub, world):
    call_and_validate(case, duhub, world)


@schema.include(operation_id="DeviceManagement_DeleteGroup").parametrize()
def test_deleting_a_group_conforms_to_the_swagger(case, duhub, world):
    call_and_validate(case, duhub, world)


def swagger_operations():
    swagger = json.loads(SWAGGER.read_text())
    return [pytest.param(method.upper(), path, id=definition["operationId"])
            for path, methods in swagger["paths"].items()
            for method, definition in methods.items() if method != "parameters"]


@pytest.mark.parametrize(("method", "path"), swagger_operations())
def test_every_operation_requires_the_api_token(duhub, method, path):
    # The swagger's security requirement (`azure_auth`) covers all 50 operations: without a
    # token, or with one the server did not issue, each answers 401 with an ErrorResponse.
    url = f"https://127.0.0.1:{duhub.https_port}" + path.replace("{instanceId}", duhub.instance_id)
    for name in ("provider", "name", "version", "fileId", "operationId", "deviceClassId", "deviceId", "moduleId",
                 "groupId", "deploymentId"):
        url = url.replace("{" + name + "}", "x")
    body = None if method in ("GET", "DELETE") else "{}"
    for headers in ({}, {"Authorization": f"Bearer {support.random_key()}"}):
        response = requests.request(method, url, params={"api-version": API_VERSION}, data=body,
                                    headers=dict(headers, **{"Content-Type": "application/json"}),
                                    verify=str(duhub.ca_path), timeout=support.CALL_TIMEOUT)
        assert response.status_code == 401, (headers, response.status_code, response.text)
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
        error = response.json()["error"]
        assert error["code"] == "Unauthorized" and error["message"]
