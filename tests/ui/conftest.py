"""Fixtures of the dashboard's browser tests: one real `duhub serve`, real `duhub-agent`s, and
Debian's Chromium driven by Playwright.

Binaries: `$DUHUB_BIN` (default `target/debug/duhub`) and `duhub-agent` beside it. The browser is
`$DUHUB_CHROMIUM` (default `/usr/bin/chromium`); Playwright never downloads one. Screenshots are
written to `target/ui-screenshots/`.
"""

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "target" / "ui-screenshots"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def _binary(name):
    duhub = Path(os.environ.get("DUHUB_BIN", REPO_ROOT / "target" / "debug" / "duhub"))
    path = duhub if name == "duhub" else duhub.parent / name
    if not path.is_file():
        pytest.exit(f"{path} does not exist: build it with `cargo build -p duhub -p duhub-agent`", returncode=2)
    return path


class Process:
    """A child process whose output lines are collected, so tests can wait for one."""

    def __init__(self, command, cwd, env, log_path):
        self.log_path = log_path
        self.lines = []
        self.queue = queue.Queue()
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.process.stdout:
            self.log.write(line)
            self.log.flush()
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, text, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if any(text in line for line in self.lines):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} within {timeout} s; log {self.log_path}:\n" + "".join(self.lines[-40:]))
            try:
                line = self.queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process exited before {text!r}; log {self.log_path}:\n" + "".join(self.lines[-40:]))
            self.lines.append(line)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        self.log.close()
        return self.process.returncode


class Fleet:
    """The server, its working directory (with `./duhub-data`), and helpers to run the CLI."""

    def __init__(self, workdir, env, server):
        self.workdir = workdir
        self.env = env
        self.server = server
        self.agents = []
        self.admin = json.loads((workdir / "duhub-data" / "admin.json").read_text())

    @property
    def url(self):
        """The server's HTTPS URL (admin.json `httpsUrl`)."""
        return self.admin["httpsUrl"].rstrip("/")

    def duhub(self, *args):
        result = subprocess.run([str(_binary("duhub")), *args], cwd=self.workdir, env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"duhub {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start_agent(self, device_id):
        self.duhub("device", "create", device_id)
        config = self.duhub("device", "agent-config", device_id, "--manufacturer", "contoso", "--model", "toaster")
        (self.workdir / f"{device_id}.toml").write_text(config)
        agent = Process([str(_binary("duhub-agent")), "--config", f"{device_id}.toml"], self.workdir, self.env,
                        self.workdir / f"agent-{device_id}.log")
        self.agents.append(agent)
        agent.wait_for("ready for deployments")
        return agent


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("duhub-ui")
    home = workdir / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUHUB_")}
    env.update(HOME=str(home), DUHUB_HTTPS_PORT="0", DUHUB_MQTT_PORT="0", DUHUB_BIND="127.0.0.1",
               RUST_LOG=env.get("RUST_LOG", "info"))
    server = Process([str(_binary("duhub")), "serve"], workdir, env, workdir / "serve.log")
    fleet = None
    try:
        server.wait_for("duhub is running")
        fleet = Fleet(workdir, env, server)
        yield fleet
    finally:
        for agent in (fleet.agents if fleet else []):
            agent.stop()
        crashed = server.process.poll()
        server.stop()
        assert crashed is None, f"duhub serve died during the tests; log {server.log_path}"


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("DUHUB_CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).is_file():
        pytest.exit(f"{executable} does not exist: apt-get install chromium", returncode=2)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
