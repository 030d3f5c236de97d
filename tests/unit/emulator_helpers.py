"""Shared helpers for the emulator tests: a running push proxy emulator and the HPNS
emulator's command line (on top of tests/emulators/harness.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
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

    def deliveries(self) -> list[dict[str, Any]]:
        return h.read_jsonl(self.record)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        status, _, raw = h.http_request("POST", self.url + path, body, headers)
        assert status == 200, raw
        return json.loads(raw)


@contextlib.contextmanager
def running_push_proxy(root: Path, port: int, config: dict[str, Any]) -> Iterator[PushProxy]:
    """The push proxy emulator in ``root`` with ``config`` (listening on ``port``), recording
    its deliveries in root/deliveries.jsonl; stopped on exit."""
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / PUSH_PROXY_CONFIG_NAME).write_text(json.dumps(config))
    record = root / "deliveries.jsonl"
    process = h.EmulatorProcess(
        h.python_argv(h.PUSH_PROXY_EMULATOR),
        cwd=root,
        env=h.base_env(PUSH_PROXY_EMULATOR_RECORD=str(record)),
        log_dir=root / "out",
    )
    with h.running(process):
        process.wait_port(port)
        yield PushProxy(url=f"http://127.0.0.1:{port}", process=process, record=record)


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
