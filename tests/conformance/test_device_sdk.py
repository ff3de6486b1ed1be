"""Microsoft's device SDK (`azure-iot-device` 2.14.0, unmodified) against duhub's MQTT endpoint,
with the service SDK on the other side of the twin.

Devices connect as a user would: `IoTHubDeviceClient.create_from_connection_string(
"HostName=localhost;DeviceId=<id>;SharedAccessKey=<key>", server_verification_cert=<CA PEM text>,
product_info="dtmi:azure:iot:deviceUpdateModel;3")`, which dials localhost:8883 over TLS.
"""

import copy
import json
import socket
import ssl
import time

import pytest
from azure.iot.device import exceptions as device_errors
from azure.iot.hub.models import Twin, TwinProperties

import support
from support import DU_MODEL_ID, DesiredPatches, call, wait_until, websocket_enabled


def set_desired(registry, device_id, desired):
    return call(registry.update_twin, device_id, Twin(properties=TwinProperties(desired=desired)))


def raw_twin(registry, device_id):
    """The twin JSON as the server sent it (the SDK's `Twin` model has no `modelId` field), read
    through the SDK's generated protocol client."""
    return call(registry.protocol.devices.get_twin, device_id, raw=True).response.json()


def raw_device(registry, device_id):
    return call(registry.protocol.devices.get_identity, device_id, raw=True).response.json()


def connected(registry, device_id):
    return call(registry.get_device, device_id).connection_state == "Connected"


@pytest.fixture
def device(new_device, device_client):
    """A new device and a connected client for it: `(device_id, client)`."""
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary)
    call(client.connect)
    return device_id, client


def test_connect_and_get_twin(registry, device):
    device_id, client = device
    assert client.connected
    twin = call(client.get_twin)
    assert set(twin) == {"desired", "reported"}
    assert support.without_version(twin["desired"]) == {}
    assert support.without_version(twin["reported"]) == {}
    service = call(registry.get_twin, device_id)
    assert twin["desired"]["$version"] == service.properties.desired["$version"]
    assert twin["reported"]["$version"] == service.properties.reported["$version"]


def test_secondary_key_connects(new_device, device_client):
    device_id, _, secondary = new_device()
    client = device_client(device_id, secondary)
    call(client.connect)
    assert client.connected
    assert "desired" in call(client.get_twin)


def test_device_sees_desired_written_before_connect(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    written = set_desired(registry, device_id, {"targetFw": "3.1", "nested": {"x": [1, 2]}})
    client = device_client(device_id, primary)
    call(client.connect)
    twin = call(client.get_twin)
    assert support.without_version(twin["desired"]) == {"targetFw": "3.1", "nested": {"x": [1, 2]}}
    assert twin["desired"]["$version"] == written.properties.desired["$version"]


def test_reported_patch_is_visible_to_the_service(registry, device):
    device_id, client = device
    before = call(registry.get_twin, device_id)

    call(client.patch_twin_reported_properties, {"firmware": "1.0", "battery": {"level": 97}})

    after = call(registry.get_twin, device_id)
    assert support.without_version(after.properties.reported) == {"firmware": "1.0", "battery": {"level": 97}}
    assert after.properties.reported["$version"] == before.properties.reported["$version"] + 1
    assert after.etag != before.etag
    assert after.version > before.version
    twin = call(client.get_twin)
    assert twin["reported"] == after.properties.reported

    call(client.patch_twin_reported_properties, {"battery": {"level": 96, "charging": True}, "firmware": None})
    after2 = call(registry.get_twin, device_id)
    assert support.without_version(after2.properties.reported) == {"battery": {"level": 96, "charging": True}}
    assert after2.properties.reported["$version"] == after.properties.reported["$version"] + 1


def test_desired_patch_handler_set_before_connect(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary)
    patches = DesiredPatches()
    client.on_twin_desired_properties_patch_received = patches
    call(client.connect)
    # With ensure_desired_properties (the default) the SDK GETs the twin after connecting and hands
    # the full desired document to the handler; wait for that so the next patch is the service's.
    patches.wait_for(lambda p: "$version" in p, "the desired state the SDK fetches after connect")

    written = set_desired(registry, device_id, {"targetFw": "2.0", "settings": {"interval": 5}})
    version = written.properties.desired["$version"]

    patch = patches.wait_for(lambda p: p.get("$version") == version, f"the desired patch $version {version}")
    assert support.without_version(patch) == {"targetFw": "2.0", "settings": {"interval": 5}}

    # A second patch delivers only what changed, with the next $version.
    written = set_desired(registry, device_id, {"settings": {"interval": None, "mode": "eco"}})
    version2 = written.properties.desired["$version"]
    assert version2 == version + 1
    patch = patches.wait_for(lambda p: p.get("$version") == version2, f"the desired patch $version {version2}")
    assert support.without_version(patch) == {"settings": {"interval": None, "mode": "eco"}}
    desired = call(client.get_twin)["desired"]
    assert support.without_version(desired) == {"targetFw": "2.0", "settings": {"mode": "eco"}}
    assert desired["$version"] == version2


def test_receive_twin_desired_properties_patch(registry, device):
    device_id, client = device
    # The first call subscribes to desired patches (lazily, as the SDK does) and finds none yet.
    assert call(client.receive_twin_desired_properties_patch, block=False) is None

    written = set_desired(registry, device_id, {"targetFw": "4.2"})
    version = written.properties.desired["$version"]

    deadline_patches = []

    def received_expected():
        patch = client.receive_twin_desired_properties_patch(block=True, timeout=1)
        if patch is not None:
            deadline_patches.append(patch)
        return next((p for p in deadline_patches if p.get("$version") == version), None)

    patch = wait_until(received_expected, f"receive_twin_desired_properties_patch to return $version {version}")
    assert support.without_version(patch) == {"targetFw": "4.2"}


def test_model_id_and_connection_state_are_visible_to_the_service(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    assert call(registry.get_device, device_id).connection_state == "Disconnected"
    client = device_client(device_id, primary)
    call(client.connect)

    assert wait_until(lambda: connected(registry, device_id), "connectionState Connected")
    assert raw_device(registry, device_id)["modelId"] == DU_MODEL_ID
    twin = raw_twin(registry, device_id)
    assert twin["modelId"] == DU_MODEL_ID
    assert twin["connectionState"] == "Connected"

    call(client.disconnect)
    wait_until(lambda: not connected(registry, device_id), "connectionState Disconnected")


def test_device_without_model_id_announces_none(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary, product_info="")
    call(client.connect)
    wait_until(lambda: connected(registry, device_id), "connectionState Connected")
    assert raw_device(registry, device_id).get("modelId") in (None, "")
    assert raw_twin(registry, device_id).get("modelId") in (None, "")


def test_reconnect_sees_latest_desired_state(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary)
    patches = DesiredPatches()
    client.on_twin_desired_properties_patch_received = patches
    call(client.connect)
    set_desired(registry, device_id, {"phase": "before"})
    wait_until(lambda: call(client.get_twin)["desired"].get("phase") == "before", "desired phase=before")

    call(client.disconnect)
    assert not client.connected
    wait_until(lambda: not connected(registry, device_id), "connectionState Disconnected")
    written = set_desired(registry, device_id, {"phase": "while-offline", "extra": 1})
    version = written.properties.desired["$version"]

    call(client.connect)
    assert client.connected
    twin = call(client.get_twin)
    assert support.without_version(twin["desired"]) == {"phase": "while-offline", "extra": 1}
    assert twin["desired"]["$version"] == version
    # The SDK re-reads the twin after connecting and hands the handler the newer desired state.
    patch = patches.wait_for(lambda p: p.get("$version") == version, f"the desired state $version {version}")
    assert patch["phase"] == "while-offline"


# azure-iot-device connects with clean_session=0 and subscribes once per session: the server must
# keep the desired-patch subscription across connections (and answer session_present=1).
def test_desired_patches_still_delivered_after_reconnect(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary)
    patches = DesiredPatches()
    client.on_twin_desired_properties_patch_received = patches
    call(client.connect)
    patches.wait_for(lambda p: "$version" in p, "the desired state the SDK fetches after connect")

    call(client.disconnect)
    wait_until(lambda: not connected(registry, device_id), "connectionState Disconnected")
    call(client.connect)
    wait_until(lambda: connected(registry, device_id), "connectionState Connected")

    written = set_desired(registry, device_id, {"phase": "after-reconnect"})
    version = written.properties.desired["$version"]
    # Patches arrive within milliseconds elsewhere; a short wait keeps the expected failure cheap.
    patch = patches.wait_for(lambda p: p.get("$version") == version, f"the live desired patch $version {version}",
                             timeout=5)
    assert support.without_version(patch) == {"phase": "after-reconnect"}


def test_wrong_key_fails_to_connect(registry, new_device, device_client):
    device_id, _, _ = new_device()
    client = device_client(device_id, support.random_key())
    with pytest.raises(device_errors.CredentialError):
        call(client.connect)
    assert not client.connected
    assert call(registry.get_device, device_id).connection_state == "Disconnected"


def test_unknown_device_fails_to_connect(device_client):
    client = device_client(support.random_device_id("missing"), support.random_key())
    with pytest.raises(device_errors.CredentialError):
        call(client.connect)
    assert not client.connected


def test_disabled_device_fails_to_connect(new_device, device_client):
    device_id, primary, _ = new_device(status="disabled")
    client = device_client(device_id, primary)
    with pytest.raises(device_errors.CredentialError):
        call(client.connect)


def system_trusts_duhub(duhub):
    """Whether the system CAs verify duhub's certificate (its CA was installed system-wide)."""
    context = ssl.create_default_context()
    host, port = duhub.mqtt.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost"):
                return True
    except ssl.SSLError:
        return False


def test_untrusted_server_certificate_fails_to_connect(duhub, new_device, device_client):
    # Without server_verification_cert the SDK trusts only the system CAs, not duhub's private CA.
    if system_trusts_duhub(duhub):
        pytest.skip("this machine's system CAs include duhub's CA")
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary, server_verification_cert=None)
    with pytest.raises(device_errors.ClientError) as raised:
        call(client.connect)
    # The SDK reports a failed certificate check as a ClientError caused by TlsExchangeAuthError.
    assert raised.type is device_errors.ClientError
    assert type(raised.value.__cause__).__name__ == "TlsExchangeAuthError"
    assert not client.connected


# The Device Update agent's reported startup message (protocol reference §5.4) and a result (§5.5).
DU_STARTUP = {"deviceUpdate": {"__t": "c", "agent": {
    "deviceProperties": {"manufacturer": "Contoso", "model": "Toaster", "location": "lab",
                         "interfaceId": None,
                         "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3",
                         "aduVer": "DU;agent/1.1.0"},
    "compatPropertyNames": "manufacturer,model"}}}
DU_RESULT = {"deviceUpdate": {"__t": "c", "agent": {
    "lastInstallResult": {"stepResults": {"step_0": {"resultCode": 700, "extendedResultCodes": "00000000",
                                                     "resultDetails": None}},
                          "resultCode": 700, "extendedResultCodes": "00000000,A0000FFF", "resultDetails": None},
    "state": 0,
    "workflow": {"action": 3, "id": "dcb112da-bfc9-47b7-b7ed-617feba1e6c4"},
    "installedUpdateId": "{\"provider\":\"Contoso\",\"name\":\"Toaster\",\"version\":\"1.0\"}"}}}
# What a deployment writes (protocol reference §5.2).
DU_SERVICE = {"deviceUpdate": {"__t": "c", "service": {
    "workflow": {"action": 3, "id": "dcb112da-bfc9-47b7-b7ed-617feba1e6c4"},
    "rootKeyPackageUrl": "http://localhost/rootkeypackages/rootkeypackage-1.json",
    "updateManifest": json.dumps({"manifestVersion": "5", "updateId": {"provider": "Contoso", "name": "Toaster",
                                                                       "version": "1.0"}},
                                 separators=(",", ":")),
    "updateManifestSignature": "eyJhbGciOiJSUzI1NiJ9.eyJzaGEyNTYiOiIifQ.c2ln",
    "fileUrls": {"f483750ebb885d32c": "http://localhost/content/toaster-1.0.swu"}}}}


def without_nulls(value):
    """A merge patch applied to nothing: the document it leaves (null members removed)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


def test_device_update_reported_component_round_trip(registry, device):
    device_id, client = device
    call(client.patch_twin_reported_properties, DU_STARTUP)
    call(client.patch_twin_reported_properties, DU_RESULT)

    expected = copy.deepcopy(without_nulls(DU_STARTUP))
    expected["deviceUpdate"]["agent"].update(without_nulls(DU_RESULT)["deviceUpdate"]["agent"])
    reported = call(registry.get_twin, device_id).properties.reported
    assert support.without_version(reported) == expected
    assert reported["deviceUpdate"]["agent"]["installedUpdateId"] == DU_RESULT["deviceUpdate"]["agent"][
        "installedUpdateId"]

    # The agent's next deployment: state 6 and `stepResults: null`, which deletes the old map.
    call(client.patch_twin_reported_properties, {"deviceUpdate": {"__t": "c", "agent": {
        "state": 6, "lastInstallResult": {"resultCode": 1, "extendedResultCodes": "00000000",
                                          "stepResults": None}}}})
    agent = call(registry.get_twin, device_id).properties.reported["deviceUpdate"]["agent"]
    assert agent["state"] == 6
    assert agent["lastInstallResult"] == {"resultCode": 1, "extendedResultCodes": "00000000"}
    assert agent["deviceProperties"] == expected["deviceUpdate"]["agent"]["deviceProperties"]
    assert agent["workflow"] == DU_RESULT["deviceUpdate"]["agent"]["workflow"]
    assert call(client.get_twin)["reported"]["deviceUpdate"]["agent"] == agent


def test_device_update_desired_component_round_trip(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary)
    patches = DesiredPatches()
    client.on_twin_desired_properties_patch_received = patches
    call(client.connect)

    written = set_desired(registry, device_id, DU_SERVICE)
    version = written.properties.desired["$version"]
    patch = patches.wait_for(lambda p: p.get("$version") == version, f"the deployment patch $version {version}")
    assert support.without_version(patch) == DU_SERVICE
    assert isinstance(patch["deviceUpdate"]["service"]["updateManifest"], str)

    # The agent's acknowledgement of the writable property (§5.3).
    ack_value = copy.deepcopy(DU_SERVICE["deviceUpdate"]["service"])
    ack_value["updateManifestSignature"] = None
    ack_value["fileUrls"] = None
    call(client.patch_twin_reported_properties,
         {"deviceUpdate": {"__t": "c", "service": {"value": ack_value, "ac": 200, "ad": "", "av": version}}})
    ack = call(registry.get_twin, device_id).properties.reported["deviceUpdate"]["service"]
    assert ack["ac"] == 200 and ack["av"] == version
    assert ack["value"]["workflow"] == DU_SERVICE["deviceUpdate"]["service"]["workflow"]
    assert "fileUrls" not in ack["value"] and "updateManifestSignature" not in ack["value"]

    # Cancel (§5.2): nulls delete the manifest, its signature and the file URLs.
    cancel = {"deviceUpdate": {"__t": "c", "service": {"workflow": {"action": 255, "id": "nodeployment"},
                                                       "updateManifest": None, "updateManifestSignature": None,
                                                       "fileUrls": None}}}
    written = set_desired(registry, device_id, cancel)
    version = written.properties.desired["$version"]
    patch = patches.wait_for(lambda p: p.get("$version") == version, f"the cancel patch $version {version}")
    assert support.without_version(patch) == cancel
    service = call(client.get_twin)["desired"]["deviceUpdate"]["service"]
    assert service == {"workflow": {"action": 255, "id": "nodeployment"},
                       "rootKeyPackageUrl": DU_SERVICE["deviceUpdate"]["service"]["rootKeyPackageUrl"]}
    assert call(registry.get_twin, device_id).properties.desired["deviceUpdate"] == {"__t": "c", "service": service}


@pytest.mark.skipif(not websocket_enabled(),
                    reason="azure-iot-device dials MQTT over WebSocket on port 443 only (hard-coded); "
                           "set DUHUB_TEST_WEBSOCKET_PORT443=1 to run the server's HTTPS on 443 and test it")
def test_websocket_transport(registry, new_device, device_client):
    device_id, primary, _ = new_device()
    client = device_client(device_id, primary, websockets=True)
    patches = DesiredPatches()
    client.on_twin_desired_properties_patch_received = patches
    call(client.connect)
    assert wait_until(lambda: connected(registry, device_id), "connectionState Connected")
    call(client.patch_twin_reported_properties, {"transport": "websocket"})
    assert call(registry.get_twin, device_id).properties.reported["transport"] == "websocket"
    written = set_desired(registry, device_id, {"over": "websocket"})
    version = written.properties.desired["$version"]
    patch = patches.wait_for(lambda p: p.get("$version") == version, f"the desired patch $version {version}")
    assert patch["over"] == "websocket"


def test_send_message_is_acknowledged(device):
    # duhub accepts telemetry (and does not store it yet): the SDK's send completes on PUBACK.
    from azure.iot.device import Message

    _, client = device
    message = Message(json.dumps({"temperature": 21.5}), message_id="t1", content_encoding="utf-8",
                      content_type="application/json")
    message.custom_properties["alert"] = "no"
    call(client.send_message, message)
    call(client.send_message, "plain text")
    assert client.connected


def test_expired_sas_token_ends_the_session_and_the_sdk_reconnects_losing_nothing(registry, new_device,
                                                                                    device_client, monkeypatch):
    """Issue 11 item 6: IoT Hub closes a device connection when its SAS token expires and the SDK
    reconnects with a fresh token. duhub kept such sessions forever; now it closes them at expiry,
    and nothing sent or written around the reconnect is lost.

    The SDK renews its token (and reconnects) 120 s before expiry (`DEFAULT_TOKEN_UPDATE_MARGIN`),
    which with a token of a few seconds would renew in a tight loop; the margin is 2 s here. (With
    a margin of 0 the server's close at expiry races the SDK's renewal and the SDK's first
    reconnect reuses the expired token: refused, as IoT Hub would. The Rust test
    `a_session_closes_when_its_sas_token_expires` shows the close itself.)"""
    from azure.iot.device.common.pipeline import pipeline_stages_base

    monkeypatch.setattr(pipeline_stages_base.SasTokenStage, "DEFAULT_TOKEN_UPDATE_MARGIN", 2)
    device_id, primary, _ = new_device()
    ttl = 8
    client = device_client(device_id, primary, sastoken_ttl=ttl)
    patches = DesiredPatches()
    client.on_twin_desired_properties_patch_received = patches
    call(client.connect)
    patches.wait_for(lambda p: "$version" in p, "the desired state the SDK fetches after connect")
    first = call(registry.get_device, device_id).connection_state_updated_time

    # Keep reporting and writing desired properties across at least two token lifetimes.
    reported = {}
    written = []
    deadline = time.monotonic() + 2.5 * ttl
    step = 0
    while time.monotonic() < deadline:
        step += 1
        reported[f"r{step}"] = step
        call(client.patch_twin_reported_properties, {f"r{step}": step})
        twin = set_desired(registry, device_id, {f"d{step}": step})
        written.append(twin.properties.desired["$version"])
        time.sleep(0.5)  # the pace of a device that reports twice a second

    # The session was renewed: its connection state changed after the first connect.
    assert call(registry.get_device, device_id).connection_state_updated_time != first
    wait_until(lambda: connected(registry, device_id), "connectionState Connected after the renewals")
    service = call(registry.get_twin, device_id)
    for name, value in reported.items():
        assert service.properties.reported.get(name) == value, f"reported {name} was lost"
    # Every desired write reached the device: live, or in the twin it read on reconnect.
    twin = call(client.get_twin)
    for step in range(1, len(written) + 1):
        assert twin["desired"].get(f"d{step}") == step, f"desired d{step} missing on the device"
