"""Helpers shared by the conformance tests: bounded waiting and random identities.

Every blocking SDK call goes through `within()`, so a server that never answers fails the test
after a deadline instead of hanging the run; every wait for an event is a polling loop with a
deadline (`wait_until()`), never a bare sleep.
"""

import base64
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
