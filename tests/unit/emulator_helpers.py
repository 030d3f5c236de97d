"""Shared helpers for the emulator tests: a running push proxy emulator and the HPNS
emulator's command line (on top of tests/emulators/harness.py)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.emulators import harness as h

PUSH_PROXY_CONFIG_NAME = "mattermost-push-proxy.json"


def push_proxy_config(port: int, root: Path) -> dict[str, Any]:
    """A push proxy config on 127.0.0.1:``port`` with an apple_rn (token auth) and an
    android_rn (service account) client; their credentials are written to ``root``."""
    return {
        "ListenAddress": f"127.0.0.1:{port}",
        "ApplePushSettings": [
            {
                "Type": "apple_rn",
                "ApplePushTopic": "com.mattermost.react.native",
                "AppleAuthKeyFile": str(h.make_apns_p8_key(root / "AuthKey.p8")),
                "AppleAuthKeyID": "KEYID12345",
                "AppleTeamID": "TEAMID1234",
            }
        ],
        "AndroidPushSettings": [
            {
                "Type": "android_rn",
                "ServiceFileLocation": str(h.make_fcm_service_account(root / "fcm.json")),
            }
        ],
    }


@dataclass
class PushProxy:
    url: str
    process: h.EmulatorProcess
    record: Path
    services: h.PushServices | None = None

    def deliveries(self) -> list[dict[str, Any]]:
        return h.read_jsonl(self.record)

    def undelivered(self) -> list[dict[str, Any]]:
        """The pushes the upstream did not accept (EMULATOR-UNDELIVERED on the console)."""
        return h.parse_undelivered_records(self.process.stdout())

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        status, _, raw = h.http_request("POST", self.url + path, body, headers)
        assert status == 200, raw
        return json.loads(raw)


@contextlib.contextmanager
def running_push_proxy(root: Path, port: int, config: dict[str, Any]) -> Iterator[PushProxy]:
    """The push proxy emulator in ``root`` with ``config`` (listening on ``port``), recording
    its deliveries in root/deliveries.jsonl; it delivers to an APNs/FCM stand-in (in
    root/push-services) that knows the config's credentials and accepts any well-formed APNs
    token and any FCM token. Both are stopped on exit."""
    registry = push_services_registry_for(config)
    with (
        h.running_push_services(root / "push-services", registry) as services,
        running_push_proxy_with(root, port, config, services) as proxy,
    ):
        yield proxy


def push_services_registry_for(config: dict[str, Any]) -> h.PushServicesRegistry:
    """A stand-in registry knowing every token-auth key and service account of a push proxy
    config (files that do not parse are left out), accepting any FCM token."""
    registry = h.PushServicesRegistry().accept_unknown_fcm_tokens()
    for apple in config.get("ApplePushSettings", []):
        key_file, key_id, team_id = (
            apple.get(name) for name in ("AppleAuthKeyFile", "AppleAuthKeyID", "AppleTeamID")
        )
        if key_file and key_id and team_id:
            with contextlib.suppress(OSError, ValueError, TypeError):
                registry.add_apns_key_file(Path(key_file), team_id, key_id)
    for android in config.get("AndroidPushSettings", []):
        if android.get("ServiceFileLocation"):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
                registry.add_service_account_file(Path(android["ServiceFileLocation"]))
    return registry


@contextlib.contextmanager
def running_push_proxy_with(
    root: Path, port: int, config: dict[str, Any], services: h.PushServices, **env: str
) -> Iterator[PushProxy]:
    """The push proxy emulator in ``root`` delivering to the running stand-in ``services``;
    ``env`` adds environment variables (e.g. HTTPS_PROXY)."""
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / PUSH_PROXY_CONFIG_NAME).write_text(json.dumps(config))
    record = root / "deliveries.jsonl"
    process = h.EmulatorProcess(
        h.python_argv(h.PUSH_PROXY_EMULATOR),
        cwd=root,
        env=h.base_env(PUSH_PROXY_EMULATOR_RECORD=str(record), **{**services.proxy_env(), **env}),
        log_dir=root / "out",
    )
    with h.running(process):
        process.wait_port(port)
        yield PushProxy(
            url=f"http://127.0.0.1:{port}", process=process, record=record, services=services
        )


def hpns_process(
    cwd: Path, cert: Path, key: Path, data_dir: Path, log_dir: Path
) -> tuple[h.EmulatorProcess, int, int]:
    """The HPNS emulator (not started) on 127.0.0.1 with free ports:
    ``(process, https_port, http_port)``."""
    https_port, http_port = h.free_port(), h.free_port()
    process = h.EmulatorProcess(
        h.python_argv(
            h.HPNS_EMULATOR,
            *("--cert", str(cert), "--key", str(key), "--data-dir", str(data_dir)),
            *("--https-port", str(https_port), "--http-port", str(http_port)),
            *("--bind", "127.0.0.1"),
        ),
        cwd=cwd,
        env=h.base_env(),
        log_dir=log_dir,
    )
    return process, https_port, http_port


# --------------------------------------------------------------------------------------------
# Mattermost server emulator: running it, talking to it, a push service it can send to, and
# the PostgreSQL its database-configured mode needs
# --------------------------------------------------------------------------------------------

MM_PASSWORD = "Password1!"
NO_POSTGRES_ENV = "MMPUSH_NO_POSTGRES"


def mattermost_config(port: int, push_server: str, **settings: Any) -> dict[str, Any]:
    """The shipped default config.json listening on 127.0.0.1:``port``, pushing to
    ``push_server``, quiet on the console, with ``settings`` ({"Section.Key": value}) applied."""
    config = json.loads(h.MATTERMOST_DEFAULT_CONFIG.read_text())
    config["ServiceSettings"]["ListenAddress"] = f"127.0.0.1:{port}"
    config["EmailSettings"]["SendPushNotifications"] = True
    config["EmailSettings"]["PushNotificationServer"] = push_server
    config["LogSettings"]["ConsoleLevel"] = "ERROR"
    config["NotificationLogSettings"]["ConsoleLevel"] = "ERROR"
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config


def write_mattermost_config(path: Path, port: int, push_server: str, **settings: Any) -> Path:
    """``mattermost_config(...)`` written to ``path``, as an admin's config.json would be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mattermost_config(port, push_server, **settings), indent=4))
    return path


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log file (those that parse), none when it does not exist."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            lines.append(json.loads(line))
    return lines


@dataclass
class MattermostEmulator:
    """A running Mattermost server emulator and ways to reach it (HTTP, local-mode socket)."""

    url: str
    process: h.EmulatorProcess
    workdir: Path
    data_dir: Path
    socket_path: Path | None = None

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "mattermost.log"

    @property
    def notifications_log_file(self) -> Path:
        return self.workdir / "logs" / "notifications.log"

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        return read_json_lines(self.log_file)

    def notification_lines(self, msg: str | None = None) -> list[dict[str, Any]]:
        """notifications.log's JSON lines, only those with message ``msg`` when given."""
        lines = read_json_lines(self.notifications_log_file)
        return [line for line in lines if msg is None or line.get("msg") == msg]

    def login(self, username: str, device_id: str | None = None) -> tuple[str, dict[str, Any]]:
        """POST /users/login; returns (session token, user)."""
        body = {"login_id": username, "password": MM_PASSWORD}
        if device_id:
            body["device_id"] = device_id
        status, headers, raw = h.http_request("POST", f"{self.url}/api/v4/users/login", body)
        assert status == 200, raw
        return headers["Token"], json.loads(raw)

    def call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """One API call over HTTP with a Bearer token (or none): (status, decoded JSON)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, _, raw = h.http_request(method, self.url + path, body, headers)
        return status, json.loads(raw) if raw else None

    def local(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API call over the local-mode socket (as mmctl --local): (status, JSON)."""
        assert self.socket_path is not None, "local mode is not on"
        status, raw = h.unix_http_request(self.socket_path, method, path, body)
        return status, json.loads(raw) if raw else None

    def admin_token(self) -> str:
        """A session token of the seeded system admin."""
        return self.login("sysadmin")[0]

    def config_value(self, dotted: str, token: str | None = None) -> Any:
        """One setting of the effective config, read through the API (local mode when on)."""
        section, key = dotted.split(".")
        if self.socket_path is not None and token is None:
            status, config = self.local("GET", "/api/v4/config")
        else:
            status, config = self.call("GET", "/api/v4/config", token or self.admin_token())
        assert status == 200, config
        return config[section][key]


@contextlib.contextmanager
def running_mattermost(
    workdir: Path,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
    socket_path: Path | None = None,
) -> Iterator[MattermostEmulator]:
    """The emulator run in ``workdir`` with command-line ``args`` (e.g. ``--config PATH``) and
    ``env``, waited for on ``port``, stopped on exit. ``socket_path``: its local-mode socket."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or workdir / "data"
    process = h.EmulatorProcess(
        h.python_argv(h.MATTERMOST_EMULATOR, *args),
        cwd=workdir,
        env=h.base_env(MM_EMULATOR_DATA_DIR=str(data_dir), **(env or {})),
        log_dir=workdir / "out",
    )
    with h.running(process):
        process.wait_port(port)
        yield MattermostEmulator(
            url=f"http://127.0.0.1:{port}",
            process=process,
            workdir=workdir,
            data_dir=data_dir,
            socket_path=socket_path,
        )


def refused_mattermost_start(workdir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the emulator on a configuration it must refuse: it exits 1; its stderr."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = h.EmulatorProcess(
        h.python_argv(h.MATTERMOST_EMULATOR, *args),
        cwd=workdir,
        env=h.base_env(MM_EMULATOR_DATA_DIR=str(workdir / "data"), **(env or {})),
        log_dir=workdir / "out",
    )
    with h.running(process):
        assert process.wait_exit() == 1, process.describe()
    return process.stderr()


def local_mode_answers(socket_path: Path) -> bool:
    """Whether the local-mode socket accepts a connection yet (the file appears at bind, a
    moment before the server listens)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(socket_path))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def short_temp_dir(prefix: str = "mm-") -> Iterator[Path]:
    """A temporary directory with a short path under /tmp (unix socket paths hold 107 bytes)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FakePushService:
    """A push service on 127.0.0.1 that records every request body and answers as a push proxy
    does: {"status": "OK"} unless ``answers`` maps the device id to another answer.

        with FakePushService() as push:
            push.answers["dead-token"] = {"status": "REMOVE"}
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                with service._lock:
                    service.requests.append({"path": self.path, "body": body})
                    answer = service.answers.get(str(body.get("device_id")), {"status": "OK"})
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakePushService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def pushes(self, post_id: str | None = None) -> list[dict[str, Any]]:
        """The send_push bodies received (for ``post_id`` only, when given)."""
        with self._lock:
            bodies = [r["body"] for r in self.requests if r["path"] == "/api/v1/send_push"]
        return [b for b in bodies if post_id is None or b.get("post_id") == post_id]


@contextlib.contextmanager
def postgres_for_tests() -> Iterator[h.PostgresCluster]:
    """A throwaway PostgreSQL cluster. Missing PostgreSQL or psycopg2 fails the test with what to
    install, unless MMPUSH_NO_POSTGRES=1, which skips it with that reason."""
    import pytest

    problems = []
    bin_dir = h.find_postgres_bin_dir()
    if bin_dir is None:
        problems.append(
            "PostgreSQL server binaries (initdb, pg_ctl): apt-get install -y postgresql"
        )
    try:
        import psycopg2  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        problems.append("the psycopg2 module: .venv/bin/pip install psycopg2-binary")
    if problems:
        if os.environ.get(NO_POSTGRES_ENV) == "1":
            pytest.skip(f"{NO_POSTGRES_ENV}=1: no PostgreSQL tests")
        pytest.fail("missing " + "; ".join(problems) + f" (or set {NO_POSTGRES_ENV}=1 to skip)")
    assert bin_dir is not None
    with h.PostgresCluster.started(bin_dir) as cluster:
        yield cluster
