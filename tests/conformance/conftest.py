"""Starts one `duhub serve` for the test session and hands Microsoft's SDKs what they need.

The server binary is `$DUHUB_BIN` (default `target/debug/duhub` under the repository root). It runs
with a fresh temporary data directory, listens on 127.0.0.1 with MQTT/TLS on 8883 (the port
`azure-iot-device` 2.14.0 dials; it cannot be changed) and HTTPS on a free port, and prints its
ports and `admin.json` path as one JSON line (`--json`).

The database is SQLite in the data directory, or PostgreSQL when `--database-url` /
`$DUHUB_TEST_DATABASE_URL` names one: a fresh database `duhub_conf_<random>` is created there with
`psql` for the run and dropped at the end.

`$DUHUB_TEST_WEBSOCKET_PORT443=1` starts HTTPS on port 443 (MQTT over WebSocket is only reachable
there for the SDK) and enables the WebSocket test.

For the Device Update tests: `du_client` is Microsoft's `DeviceUpdateClient` for the server's
REST API (Bearer token from admin.json), and `file_server` a plain-HTTP server on 127.0.0.1 that
imports fetch import manifests and payload files from.
"""

import contextlib
import functools
import http.server
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

import support

REPO_ROOT = Path(__file__).resolve().parents[2]
MQTT_TLS_PORT = 8883  # hard-coded in azure-iot-device 2.14.0
WEBSOCKET_PORT = 443  # hard-coded in azure-iot-device 2.14.0 (websockets=True)
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

_server = None  # the running Server, for the failure report hook


def pytest_addoption(parser):
    group = parser.getgroup("duhub")
    group.addoption(
        "--duhub-bin",
        default=os.environ.get("DUHUB_BIN", str(REPO_ROOT / "target" / "debug" / "duhub")),
        help="the duhub binary to test [$DUHUB_BIN, default target/debug/duhub]",
    )
    group.addoption(
        "--database-url",
        default=os.environ.get("DUHUB_TEST_DATABASE_URL", ""),
        help="run the server on PostgreSQL: postgres://USER@HOST:PORT/DB of a database to create "
        "a fresh test database from [$DUHUB_TEST_DATABASE_URL; default SQLite]",
    )


def pytest_configure(config):
    # Hypothesis (under schemathesis, test_contract.py) keeps caches in ./.hypothesis: a temporary
    # directory instead, so that a run writes nothing into the source tree.
    if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
        directory = tempfile.mkdtemp(prefix="duhub-conformance-hypothesis-")
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = directory
        config.stash[_HYPOTHESIS_DIRECTORY] = directory


def pytest_unconfigure(config):
    directory = config.stash.get(_HYPOTHESIS_DIRECTORY, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)


_HYPOTHESIS_DIRECTORY = pytest.StashKey[str]()


def pytest_report_header(config):
    url = config.getoption("--database-url")
    database = f"PostgreSQL, a fresh database on {_redact(url)}" if url else "SQLite (in the temporary data directory)"
    return [f"duhub binary: {config.getoption('--duhub-bin')}", f"duhub database: {database}"]


@dataclass
class Server:
    """A running `duhub serve` and how to reach it."""

    process: subprocess.Popen
    data_dir: Path
    log_path: Path
    https: str  # host:port the HTTPS listener is bound to
    mqtt: str  # host:port the MQTT/TLS listener is bound to
    admin: dict  # admin.json
    ca_path: Path
    ca_pem: str  # PEM text, as `server_verification_cert` takes it
    service_connection_string: str
    database: str  # redacted database URL the server reports

    def log_since(self, offset):
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def device_connection_string(self, device_id, key, hostname="localhost"):
        """The connection string a user builds for a device: IoT Hub's format, no port."""
        return f"HostName={hostname};DeviceId={device_id};SharedAccessKey={key}"

    @property
    def https_port(self):
        return int(self.https.rsplit(":", 1)[1])

    @property
    def api_token(self):
        """The Bearer token of the Device Update REST API (admin.json `apiToken`)."""
        return self.admin["apiToken"]

    @property
    def instance_id(self):
        """The Device Update instance id (admin.json `instanceId`)."""
        return self.admin.get("instanceId", "default")

    @property
    def du_endpoint(self):
        """What `DeviceUpdateClient(endpoint=...)` takes: a host name, with the port unless 443."""
        return "localhost" if self.https_port == 443 else f"localhost:{self.https_port}"


def _redact(url):
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _psql(url, sql):
    psql = shutil.which("psql")
    if psql is None:
        pytest.exit("the PostgreSQL run needs `psql` on PATH (apt-get install postgresql-client)", returncode=2)
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    result = subprocess.run(
        [psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"psql {_redact(url)} -c {sql!r} failed: {result.stderr.strip()}")


@contextlib.contextmanager
def _database(url):
    """Yields the database URL for the server: None (SQLite) or a fresh PostgreSQL database."""
    if not url:
        yield None
        return
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        pytest.exit(f"--database-url / DUHUB_TEST_DATABASE_URL must be postgres://..., not {_redact(url)}", returncode=2)
    name = f"duhub_conf_{secrets.token_hex(6)}"
    try:
        _psql(url, f"CREATE DATABASE {name}")
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        pytest.exit(f"cannot create the test database on {_redact(url)}: {error}", returncode=2)
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        try:
            _psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"warning: could not drop the test database {name}: {error}")


def _read_startup(process, log_path, timeout):
    """The server's JSON startup summary, parsed; fails with the server's log if it does not come."""
    lines = queue.Queue()

    def pump():  # keeps draining stdout for the whole run, so the server never blocks on it
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="duhub-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"duhub serve printed no JSON startup summary within {timeout:g} s; log: {log_path}")
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            try:
                status = process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = "unknown (closed its stdout)"
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuntimeError(f"duhub serve exited with status {status} before it was ready:\n{log}")
        # `--json` prints one JSON object, pretty-printed over several lines.
        if text or line.lstrip().startswith("{"):
            text += line
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                continue


def _stop(process):
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="session")
def duhub(pytestconfig, tmp_path_factory):
    """The running server (one per session)."""
    global _server
    binary = Path(pytestconfig.getoption("--duhub-bin"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.is_file():
        pytest.exit(f"the duhub binary {binary} does not exist: build it with `cargo build -p duhub` "
                    "or point DUHUB_BIN at it", returncode=2)
    if not _port_is_free(MQTT_TLS_PORT):
        pytest.exit(f"port {MQTT_TLS_PORT} on 127.0.0.1 is busy: azure-iot-device can only dial 8883 for MQTT, "
                    "so the conformance tests need it free (is another duhub or MQTT broker running?)",
                    returncode=2)
    https_port = 0
    if support.websocket_enabled():
        if not _port_is_free(WEBSOCKET_PORT):
            pytest.exit(f"DUHUB_TEST_WEBSOCKET_PORT443=1 but port {WEBSOCKET_PORT} on 127.0.0.1 is busy", returncode=2)
        https_port = WEBSOCKET_PORT

    data_dir = tmp_path_factory.mktemp("duhub-data")
    log_path = data_dir.parent / "duhub-serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUHUB_")}
    env.setdefault("RUST_LOG", "info")
    with _database(pytestconfig.getoption("--database-url")) as database_url:
        command = [str(binary), "serve", "--data-dir", str(data_dir), "--hostname", "localhost",
                   "--bind", "127.0.0.1", "--https-port", str(https_port), "--mqtt-port", str(MQTT_TLS_PORT),
                   "--json"]
        if database_url:
            command += ["--database-url", database_url]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                       env=env, text=True, cwd=data_dir.parent)
        try:
            startup = _read_startup(process, log_path, STARTUP_TIMEOUT)
        except RuntimeError as error:
            _stop(process)
            pytest.exit(str(error), returncode=2)
        except BaseException:
            _stop(process)
            raise
        try:
            admin = json.loads(Path(startup["admin"]).read_text())
            ca_path = Path(startup["caCertificate"])
            server = Server(
                process=process,
                data_dir=data_dir,
                log_path=log_path,
                https=startup["https"],
                mqtt=startup["mqtt"],
                admin=admin,
                ca_path=ca_path,
                ca_pem=ca_path.read_text(),
                # Not on stdout when it is not a terminal (it holds the owner key): admin.json has it.
                service_connection_string=admin["serviceConnectionString"],
                database=startup["database"],
            )
            _server = server
            # The service SDK (requests) trusts the private CA through REQUESTS_CA_BUNDLE, as a user would.
            previous_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
            os.environ["REQUESTS_CA_BUNDLE"] = str(ca_path)
            try:
                yield server
            finally:
                if previous_bundle is None:
                    os.environ.pop("REQUESTS_CA_BUNDLE", None)
                else:
                    os.environ["REQUESTS_CA_BUNDLE"] = previous_bundle
        finally:
            _server = None
            crashed = process.poll()
            status = _stop(process)
            if crashed is not None:
                raise AssertionError(f"duhub serve died during the tests (status {crashed}); "
                                     f"log: {log_path}\n{log_path.read_text(errors='replace')[-4000:]}")
            print(f"\nduhub serve stopped with status {status}; log: {log_path}")


@pytest.fixture(scope="session")
def registry(duhub):
    """`IoTHubRegistryManager` from the service connection string in admin.json."""
    from azure.iot.hub import IoTHubRegistryManager

    return IoTHubRegistryManager.from_connection_string(duhub.admin["serviceConnectionString"])


@pytest.fixture
def new_device(registry):
    """Factory: `new_device(status="enabled") -> (device_id, primary_key, secondary_key)`, created with
    `create_device_with_sas` and deleted after the test."""
    created = []

    def create(status="enabled", prefix="conf"):
        device_id = support.random_device_id(prefix)
        primary, secondary = support.random_key(), support.random_key()
        support.call(registry.create_device_with_sas, device_id, primary, secondary, status)
        created.append(device_id)
        return device_id, primary, secondary

    yield create
    for device_id in created:
        with contextlib.suppress(Exception):
            support.call(registry.delete_device, device_id)


@pytest.fixture
def device_client(duhub):
    """Factory: `device_client(device_id, key, **kwargs) -> IoTHubDeviceClient` (not connected) built
    from a connection string with the CA's PEM text and the Device Update model id; shut down after
    the test."""
    from azure.iot.device import IoTHubDeviceClient

    clients = []

    def create(device_id, key, **kwargs):
        kwargs.setdefault("server_verification_cert", duhub.ca_pem)
        kwargs.setdefault("product_info", support.DU_MODEL_ID)
        client = IoTHubDeviceClient.create_from_connection_string(
            duhub.device_connection_string(device_id, key), **kwargs)
        clients.append(client)
        return client

    yield create
    for client in clients:
        with contextlib.suppress(Exception):
            support.within(15, client.shutdown)


class FileServer:
    """A plain-HTTP server on 127.0.0.1 serving `directory` (what imports fetch from)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        handler = functools.partial(_QuietFileHandler, directory=str(self.directory))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="file-server", daemon=True)
        self._thread.start()

    def url(self, relative_path):
        return f"{self.base_url}/{urllib.parse.quote(str(relative_path))}"

    def put(self, relative_path, data):
        """Writes `data` (bytes) to `relative_path` under the served directory; returns its URL."""
        path = self.directory / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self.url(relative_path)

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="session")
def file_server(tmp_path_factory):
    """A `FileServer` for the session."""
    server = FileServer(tmp_path_factory.mktemp("import-files"))
    yield server
    server.close()


def _restore_port(request):
    """`raw_request_hook` for `azure-iot-deviceupdate` 1.1.0, which URL-quotes the endpoint
    (`localhost:8443` becomes `localhost%3A8443`): puts the `:` back into the host."""
    http_request = request.http_request
    host = http_request.url.split("/")[2]
    if "%3A" in host:
        http_request.url = http_request.url.replace(host, host.replace("%3A", ":"), 1)


@pytest.fixture(scope="session")
def du_client(duhub):
    """Microsoft's `DeviceUpdateClient` (azure-iot-deviceupdate, unmodified) for duhub's Device
    Update REST API, authenticated with admin.json's API token, trusting the server's CA."""
    from azure.core.credentials import AccessToken
    from azure.iot.deviceupdate import DeviceUpdateClient

    class StaticToken:
        def get_token(self, *scopes, **kwargs):
            return AccessToken(duhub.api_token, int(time.time()) + 3600)

    # retry_total=0: azure-core would retry a 5xx three times and hide a flaky server error.
    client = DeviceUpdateClient(endpoint=duhub.du_endpoint, instance_id=duhub.instance_id, credential=StaticToken(),
                                connection_verify=str(duhub.ca_path), raw_request_hook=_restore_port,
                                polling_interval=1, retry_total=0)
    yield client
    client.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if _server is not None:
        item.stash[_LOG_OFFSET] = _server.log_size()


_LOG_OFFSET = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _server is not None:
        offset = item.stash.get(_LOG_OFFSET, 0) if report.when == "call" else 0
        log = _server.log_since(offset)
        if len(log) > 20000:
            log = "...\n" + log[-20000:]
        report.sections.append(("duhub serve log", log or "(empty)"))
