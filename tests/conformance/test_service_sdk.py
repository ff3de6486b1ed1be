"""Microsoft's service SDK (`azure-iot-hub` 2.7.0, unmodified) against duhub's IoT Hub REST subset.

Everything goes through `IoTHubRegistryManager.from_connection_string(<admin.json
serviceConnectionString>)` with `REQUESTS_CA_BUNDLE=<ca.pem>`, exactly as a user would call it.
"""

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

import support
from support import call


def status_of(error):
    return error.response.status_code


def test_service_connection_string_names_this_server(duhub):
    parts = dict(item.split("=", 1) for item in duhub.service_connection_string.split(";"))
    port = int(duhub.https.rsplit(":", 1)[1])
    # IoT Hub host names carry no port; duhub adds one unless HTTPS is on 443.
    assert parts["HostName"] == ("localhost" if port == 443 else f"localhost:{port}")
    assert duhub.admin["httpsUrl"] == f"https://{parts['HostName']}"
    assert duhub.admin["mqttHost"] == "localhost"
    assert duhub.admin["mqttPort"] == 8883
    assert parts["SharedAccessKeyName"] == "iothubowner"
    assert duhub.admin["serviceConnectionString"] == duhub.service_connection_string


def test_create_device_with_sas_keeps_the_given_keys(registry):
    device_id = support.random_device_id()
    primary, secondary = support.random_key(), support.random_key()
    try:
        device = call(registry.create_device_with_sas, device_id, primary, secondary, "enabled")
        assert device.device_id == device_id
        assert device.status == "enabled"
        assert device.authentication.type == "sas"
        assert device.authentication.symmetric_key.primary_key == primary
        assert device.authentication.symmetric_key.secondary_key == secondary
        assert device.etag
        assert device.connection_state == "Disconnected"
    finally:
        call(registry.delete_device, device_id)


def test_create_existing_device_is_a_conflict(registry, new_device):
    device_id, primary, secondary = new_device()
    with pytest.raises(HttpOperationError) as raised:
        call(registry.create_device_with_sas, device_id, primary, secondary, "enabled")
    assert status_of(raised.value) == 409


def test_get_device(registry, new_device):
    device_id, primary, secondary = new_device()
    device = call(registry.get_device, device_id)
    assert device.device_id == device_id
    assert device.status == "enabled"
    assert device.authentication.symmetric_key.primary_key == primary
    assert device.authentication.symmetric_key.secondary_key == secondary
    assert device.connection_state == "Disconnected"
    assert device.capabilities.iot_edge is False


def test_get_unknown_device_is_404(registry):
    with pytest.raises(HttpOperationError) as raised:
        call(registry.get_device, support.random_device_id("missing"))
    assert status_of(raised.value) == 404


def test_get_devices_lists_created_devices(registry, new_device):
    first, _, _ = new_device()
    second, _, _ = new_device()
    ids = {device.device_id for device in call(registry.get_devices)}
    assert {first, second} <= ids
    assert len(call(registry.get_devices, 1)) == 1


def test_get_twin_of_a_new_device(registry, new_device):
    device_id, _, _ = new_device()
    twin = call(registry.get_twin, device_id)
    assert twin.device_id == device_id
    assert twin.etag
    assert isinstance(twin.version, int)
    assert support.without_version(twin.properties.desired) == {}
    assert support.without_version(twin.properties.reported) == {}
    assert isinstance(twin.properties.desired["$version"], int)
    assert isinstance(twin.properties.reported["$version"], int)


def test_update_twin_desired_and_tags_with_etag(registry, new_device):
    device_id, _, _ = new_device()
    before = call(registry.get_twin, device_id)
    patch = Twin(tags={"ADUGroup": "canary", "site": {"building": "B1"}},
                 properties=TwinProperties(desired={"targetFw": "2.0", "config": {"interval": 30}}))

    updated = call(registry.update_twin, device_id, patch, before.etag)

    assert updated.tags == {"ADUGroup": "canary", "site": {"building": "B1"}}
    assert updated.properties.desired["targetFw"] == "2.0"
    assert updated.properties.desired["config"] == {"interval": 30}
    assert updated.etag != before.etag
    assert updated.version > before.version
    assert updated.properties.desired["$version"] == before.properties.desired["$version"] + 1

    read = call(registry.get_twin, device_id)
    assert read.tags == updated.tags
    assert support.without_version(read.properties.desired) == {"targetFw": "2.0", "config": {"interval": 30}}
    assert read.properties.desired["$version"] == updated.properties.desired["$version"]
    assert read.etag == updated.etag
    assert read.version == updated.version


def test_update_twin_without_etag_matches_any(registry, new_device):
    # The SDK sends `If-Match: "*"` when no etag is given.
    device_id, _, _ = new_device()
    twin = call(registry.update_twin, device_id, Twin(properties=TwinProperties(desired={"a": 1})))
    assert twin.properties.desired["a"] == 1
    twin = call(registry.update_twin, device_id, Twin(tags={"ADUGroup": "g1"}))
    assert twin.tags == {"ADUGroup": "g1"}
    assert twin.properties.desired["a"] == 1


def test_update_twin_with_stale_etag_is_412(registry, new_device):
    device_id, _, _ = new_device()
    stale = call(registry.get_twin, device_id)
    call(registry.update_twin, device_id, Twin(properties=TwinProperties(desired={"v": 1})), stale.etag)

    with pytest.raises(HttpOperationError) as raised:
        call(registry.update_twin, device_id, Twin(properties=TwinProperties(desired={"v": 2})), stale.etag)
    assert status_of(raised.value) == 412
    with pytest.raises(HttpOperationError) as raised:
        call(registry.update_twin, device_id, Twin(tags={"t": "x"}), "AAAAAAAAAAA=")
    assert status_of(raised.value) == 412

    twin = call(registry.get_twin, device_id)
    assert support.without_version(twin.properties.desired) == {"v": 1}
    assert twin.tags in (None, {})


def test_desired_patch_merges_and_null_deletes(registry, new_device):
    device_id, _, _ = new_device()
    call(registry.update_twin, device_id,
         Twin(properties=TwinProperties(desired={"a": 1, "b": {"c": 2, "d": 3}, "e": "x"})))
    twin = call(registry.update_twin, device_id,
                Twin(properties=TwinProperties(desired={"a": None, "b": {"d": None, "f": 4}})))
    assert support.without_version(twin.properties.desired) == {"b": {"c": 2, "f": 4}, "e": "x"}


def test_replace_twin(registry, new_device):
    device_id, _, _ = new_device()
    call(registry.update_twin, device_id,
         Twin(tags={"old": 1}, properties=TwinProperties(desired={"old": 1, "keep": 1})))
    current = call(registry.get_twin, device_id)
    replaced = call(registry.replace_twin, device_id,
                    Twin(tags={"new": 2}, properties=TwinProperties(desired={"new": 2})), current.etag)
    assert replaced.tags == {"new": 2}
    assert support.without_version(replaced.properties.desired) == {"new": 2}
    assert replaced.etag != current.etag


def test_delete_device(registry):
    device_id = support.random_device_id()
    call(registry.create_device_with_sas, device_id, support.random_key(), support.random_key(), "enabled")
    device = call(registry.get_device, device_id)

    call(registry.delete_device, device_id, device.etag)

    with pytest.raises(HttpOperationError) as raised:
        call(registry.get_device, device_id)
    assert status_of(raised.value) == 404
    with pytest.raises(HttpOperationError) as raised:
        call(registry.get_twin, device_id)
    assert status_of(raised.value) == 404
    assert device_id not in {d.device_id for d in call(registry.get_devices)}


def test_delete_device_without_etag(registry):
    # The SDK sends `If-Match: "*"` when no etag is given.
    device_id = support.random_device_id()
    call(registry.create_device_with_sas, device_id, support.random_key(), support.random_key(), "enabled")
    call(registry.delete_device, device_id)
    with pytest.raises(HttpOperationError) as raised:
        call(registry.get_device, device_id)
    assert status_of(raised.value) == 404


def test_delete_unknown_device_is_404(registry):
    with pytest.raises(HttpOperationError) as raised:
        call(registry.delete_device, support.random_device_id("missing"))
    assert status_of(raised.value) == 404


def test_query_iot_hub_pages_twins_and_filters_by_tag(registry, new_device):
    ids = sorted(new_device()[0] for _ in range(3))
    group = support.random_device_id("group")
    for device_id in ids[:2]:
        call(registry.update_twin, device_id, Twin(tags={"ADUGroup": group}))

    def every(query, page):
        spec = QuerySpecification(query=query)
        result = call(registry.query_iot_hub, spec, None, page)
        twins, pages = list(result.items), 1
        while result.continuation_token:
            result = call(registry.query_iot_hub, spec, result.continuation_token, page)
            twins += result.items
            pages += 1
        assert result.type == "twin"
        return twins, pages

    twins, pages = every(f"SELECT * FROM devices WHERE tags.ADUGroup = '{group}'", 1)
    assert [twin.device_id for twin in twins] == ids[:2]
    assert pages == 2
    assert all(twin.tags == {"ADUGroup": group} for twin in twins)
    twins, _ = every("SELECT * FROM devices", 2)
    listed = [twin.device_id for twin in twins]
    assert set(ids) <= set(listed)
    assert listed == sorted(listed)
    assert all(twin.connection_state == "Disconnected" for twin in twins if twin.device_id in ids)

    with pytest.raises(HttpOperationError) as raised:
        call(registry.query_iot_hub, QuerySpecification(query="SELECT deviceId FROM devices"))
    assert status_of(raised.value) == 400


def _with_replaced(connection_string, **changes):
    parts = dict(item.split("=", 1) for item in connection_string.split(";"))
    parts.update(changes)
    return ";".join(f"{k}={v}" for k, v in parts.items())


def test_bad_service_key_is_401(duhub):
    bad = IoTHubRegistryManager.from_connection_string(
        _with_replaced(duhub.service_connection_string, SharedAccessKey=support.random_key()))
    with pytest.raises(HttpOperationError) as raised:
        call(bad.get_devices)
    assert status_of(raised.value) == 401
    with pytest.raises(HttpOperationError) as raised:
        call(bad.create_device_with_sas, support.random_device_id(), support.random_key(), support.random_key(),
             "enabled")
    assert status_of(raised.value) == 401


def test_unknown_policy_is_401(duhub):
    bad = IoTHubRegistryManager.from_connection_string(
        _with_replaced(duhub.service_connection_string, SharedAccessKeyName="nosuchpolicy"))
    with pytest.raises(HttpOperationError) as raised:
        call(bad.get_devices)
    assert status_of(raised.value) == 401
