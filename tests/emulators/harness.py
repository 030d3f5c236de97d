"""Helpers to run the emulators in tests: subprocesses on free loopback ports, a throwaway CA,
and parsers for what the emulators record.

Runs on the control node (the project venv), so it may use ``cryptography``; the emulator
programs themselves stay standard-library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EMULATORS_DIR = Path(__file__).resolve().parent
MATTERMOST_EMULATOR = EMULATORS_DIR / "mattermost" / "mattermost_emulator.py"
MATTERMOST_DEFAULT_CONFIG = EMULATORS_DIR / "mattermost" / "config.json"
PUSH_PROXY_EMULATOR = EMULATORS_DIR / "push_proxy" / "mattermost_push_proxy_emulator.py"
HPNS_EMULATOR = EMULATORS_DIR / "hpns" / "hpns_emulator.py"
DELIVERY_MARKER = "EMULATOR-DELIVERY "
PLACEHOLDER_PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----\n"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_delivery_records(text: str) -> list[dict[str, Any]]:
    """Every ``EMULATOR-DELIVERY {json}`` record in a push proxy emulator log."""
    records = []
    for line in text.splitlines():
        _, marker, payload = line.partition(DELIVERY_MARKER)
        if marker:
            records.append(json.loads(payload))
    return records


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a record file (empty when the file does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class EmulatorProcess:
    """A running emulator subprocess; stdout and stderr go to files (no pipe can fill up)."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / "stderr.log"

    def start(self) -> EmulatorProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                list(self.argv), cwd=self.cwd, env=dict(self.env), stdout=out, stderr=err
            )
        return self

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        return (
            f"argv={list(self.argv)}\n--- stdout ---\n{self.stdout()}\n"
            f"--- stderr ---\n{self.stderr()}"
        )

    def wait_exit(self, timeout: float = 10) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def wait_port(self, port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
        """Wait until the port accepts connections; fail with the process output if it dies."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with {self.process.returncode}\n{self.describe()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                return
            time.sleep(0.03)
        raise TimeoutError(f"port {port} not open after {timeout}s\n{self.describe()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextlib.contextmanager
def running(process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """Start the process and always stop it, even when the test fails."""
    try:
        yield process.start()
    finally:
        process.stop()


def base_env(**extra: str) -> dict[str, str]:
    """A minimal environment for emulator subprocesses: no proxies, no inherited MM_ settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MM_")
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        and key not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "PUSH_PROXY_EMULATOR_RECORD")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def python_argv(script: Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


def http_request(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
    raw_body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP request (no proxies); returns (status, headers, body) even for 4xx/5xx."""
    data = (
        raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and "Content-Type" not in request.headers:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# --------------------------------------------------------------------------------------------
# Throwaway TLS material (cryptography)
# --------------------------------------------------------------------------------------------


@dataclass
class TestPki:
    ca_cert: Path
    server_cert: Path  # leaf + CA chain (fullchain.pem)
    server_key: Path


def make_test_pki(
    directory: Path, dns_names: Sequence[str], ip_addresses: Sequence[str] = ()
) -> TestPki:
    """A CA and a server certificate for the given names, written as PEM files."""
    from cryptography.hazmat.primitives import serialization

    from mmpush.lab.ca import new_ca, new_server_certificate

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = new_ca("mmpush emulator test CA", days=1)
    leaf_key, leaf_cert = new_server_certificate(ca_key, ca_cert, dns_names, ip_addresses, days=1)
    pem = serialization.Encoding.PEM
    pki = TestPki(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "fullchain.pem",
        server_key=directory / "privkey.pem",
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    pki.server_key.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


def make_apns_p8_key(path: Path) -> Path:
    """A throwaway EC P-256 key in PKCS#8 PEM, shaped like an APNs .p8 auth key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def make_fcm_service_account(path: Path, project_id: str = "mmpush-emulator-test") -> Path:
    """A service-account JSON shaped like Google's (the key is a placeholder, never used)."""
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project_id,
                "private_key_id": "0" * 40,
                "private_key": PLACEHOLDER_PRIVATE_KEY,
                "client_email": f"push@{project_id}.iam.gserviceaccount.com",
                "client_id": "1" * 21,
                "token_uri": "https://oauth2.googleapis.com/token",
            },
            indent=2,
        )
    )
    return path
