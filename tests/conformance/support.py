"""Helpers shared by the conformance tests: bounded waiting and random identities.

Every blocking SDK call goes through `within()`, so a server that never answers fails the test
after a deadline instead of hanging the run; every wait for an event is a polling loop with a
deadline (`wait_until()`), never a bare sleep.
"""

import base64
import datetime
import hashlib
import json
import os
import secrets
import threading
import time

# Seconds one SDK call (connect, twin GET, reported PATCH, REST request) may take.
CALL_TIMEOUT = float(os.environ.get("DUHUB_TEST_CALL_TIMEOUT", "30"))
# Seconds to wait for an event (a desired patch reaching a device, a state change).
EVENT_TIMEOUT = float(os.environ.get("DUHUB_TEST_EVENT_TIMEOUT", "15"))

# The model id the Device Update agent 1.1.0 announces (`product_info` in the SDK).
DU_MODEL_ID = "dtmi:azure:iot:deviceUpdateModel;3"


class CallTimeout(AssertionError):
    """An SDK call did not return before its deadline."""


def within(timeout, function, *args, **kwargs):
    """Calls `function(*args, **kwargs)` and returns its result, or fails after `timeout` seconds.

    The call runs on a daemon thread, so one stuck inside the SDK cannot keep the interpreter
    alive at exit. Exceptions raised by the call propagate unchanged, so `pytest.raises` works
    through it.
    """
    outcome = {}
    done = threading.Event()

    def run():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # handed to the caller
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name="sdk-call", daemon=True).start()
    if not done.wait(timeout):
        name = getattr(function, "__qualname__", repr(function))
        raise CallTimeout(f"{name} did not return within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def call(function, *args, **kwargs):
    """`within(CALL_TIMEOUT, ...)`."""
    return within(CALL_TIMEOUT, function, *args, **kwargs)


def listed(pager):
    """Every item of an Azure SDK pager (`ItemPaged`, all pages), within CALL_TIMEOUT."""
    return call(lambda: list(pager))


def wait_until(predicate, what, timeout=EVENT_TIMEOUT, interval=0.05):
    """Polls `predicate()` until it returns a truthy value, which is returned; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def random_key():
    """A base64 symmetric key as IoT Hub generates them (32 random bytes)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def random_device_id(prefix="conf"):
    """A device id that no other test uses."""
    return f"{prefix}-{secrets.token_hex(6)}"


def without_version(properties):
    """A desired/reported document without its `$version` (and `$metadata`, if any)."""
    return {k: v for k, v in properties.items() if k not in ("$version", "$metadata")}


def websocket_enabled():
    """`DUHUB_TEST_WEBSOCKET_PORT443=1`: the server's HTTPS runs on 443, so MQTT over WebSocket is testable."""
    return os.environ.get("DUHUB_TEST_WEBSOCKET_PORT443") == "1"


def sha256_b64(data):
    """Base64 of the SHA-256 of `data`, as import manifests and the REST API write hashes."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def utc_now(offset_seconds=0):
    """UTC now (plus `offset_seconds`) as `2026-01-01T12:00:00Z`."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def import_manifest_v5(update_id, compatibility, files, handler="microsoft/script:1", handler_properties=None,
                       description=None):
    """An import manifest v5 as `az iot du update init v5` writes it (protocol reference §2.1):
    one inline step over every file of `files` (name -> bytes)."""
    manifest = {
        "manifestVersion": "5.0",
        "createdDateTime": utc_now(),
        "updateId": {"name": update_id["name"], "provider": update_id["provider"], "version": update_id["version"]},
    }
    if description is not None:
        manifest["description"] = description
    step = {"type": "inline", "handler": handler, "files": list(files)}
    if handler_properties is not None:
        step["handlerProperties"] = handler_properties
    manifest.update({
        "compatibility": compatibility,
        "instructions": {"steps": [step]},
        "files": [{"hashes": {"sha256": sha256_b64(data)}, "filename": name, "sizeInBytes": len(data)}
                  for name, data in files.items()],
    })
    return manifest


def publish_update(file_server, manifest, files, friendly_name=None):
    """Serves an import manifest and its files from `file_server` (under a directory of their
    own) and returns the `ImportUpdateInputItem` that imports them."""
    update_id = manifest["updateId"]
    folder = f"{update_id['provider']}.{update_id['name']}.{update_id['version']}-{secrets.token_hex(4)}"
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    manifest_name = f"{update_id['provider']}.{update_id['name']}.{update_id['version']}.importmanifest.json"
    item = {
        "importManifest": {
            "url": file_server.put(f"{folder}/{manifest_name}", manifest_bytes),
            "sizeInBytes": len(manifest_bytes),
            "hashes": {"sha256": sha256_b64(manifest_bytes)},
        },
        "files": [{"filename": name, "url": file_server.put(f"{folder}/{name}", data)} for name, data in files.items()],
    }
    if friendly_name is not None:
        item["friendlyName"] = friendly_name
    return item


class DesiredPatches:
    """Collects what `on_twin_desired_properties_patch_received` is handed, thread-safely."""

    def __init__(self):
        self._lock = threading.Lock()
        self._patches = []

    def __call__(self, patch):
        with self._lock:
            self._patches.append(patch)

    def all(self):
        with self._lock:
            return list(self._patches)

    def wait_for(self, predicate, what, timeout=EVENT_TIMEOUT):
        return wait_until(lambda: next((p for p in self.all() if predicate(p)), None), what, timeout=timeout)

    def service(self, predicate, what):
        """Waits for a patch with a `deviceUpdate.service` passing `predicate`; returns (service, $version)."""
        def found():
            for patch in self.all():
                service = (patch.get("deviceUpdate") or {}).get("service")
                if isinstance(service, dict) and service.get("workflow") and predicate(service):
                    return service, patch["$version"]
            return None
        return wait_until(found, what)
