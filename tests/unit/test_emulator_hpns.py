"""The HPNS emulator: HTTPS push answers with request recording (Host + SNI), ACME on HTTP."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.unit.emulator_helpers import hpns_process


@dataclass
class Hpns:
    https_port: int
    http_port: int
    data_dir: Path
    pki: h.TestPki
    process: h.EmulatorProcess

    def received(self) -> list[dict[str, Any]]:
        return h.read_jsonl(self.data_dir / "received.jsonl")


def https_request(
    hpns: Hpns,
    method: str,
    path: str,
    body: Any = None,
    server_name: str | None = "push.mattermost.com",
    host_header: str | None = None,
) -> tuple[int, bytes]:
    """Connect to 127.0.0.1 but present ``server_name`` as SNI and Host (like a client that
    resolved push.mattermost.com to the lab)."""
    context = ssl.create_default_context(cafile=str(hpns.pki.ca_cert))
    if server_name is None:
        context.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", hpns.https_port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname=server_name)
    connection = http.client.HTTPConnection("127.0.0.1", hpns.https_port, timeout=10)
    connection.sock = tls
    payload = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    headers = {"Host": host_header or server_name or "127.0.0.1"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@contextlib.contextmanager
def hpns_emulator(root: Path, with_cert: bool = True) -> Iterator[Hpns]:
    pki = h.make_test_pki(root / "pki", ["push.mattermost.com", "global.push.mattermost.com"])
    cert_dir = root / "etc"
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert, key = cert_dir / "fullchain.pem", cert_dir / "privkey.pem"
    if with_cert:
        cert.write_bytes(pki.server_cert.read_bytes())
        key.write_bytes(pki.server_key.read_bytes())
    process, https_port, http_port = hpns_process(root, cert, key, root / "data", root / "out")
    with h.running(process):
        process.wait_port(http_port)
        if with_cert:
            process.wait_port(https_port)
        yield Hpns(https_port, http_port, root / "data", pki, process)


@pytest.fixture(scope="module")
def hpns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hpns]:
    with hpns_emulator(tmp_path_factory.mktemp("hpns")) as running_hpns:
        yield running_hpns


def test_send_push_is_answered_and_recorded_with_host_and_sni(hpns: Hpns) -> None:
    body = {
        "platform": "apple_rn-v2",
        "server_id": "s" * 26,
        "device_id": "token",
        "type": "message",
    }
    status, raw = https_request(hpns, "POST", "/api/v1/send_push", body)
    assert (status, json.loads(raw)) == (200, {"status": "OK"})
    entry = hpns.received()[-1]
    assert entry["path"] == "/api/v1/send_push"
    assert entry["method"] == "POST"
    assert entry["host"] == "push.mattermost.com"
    assert entry["sni"] == "push.mattermost.com"
    assert entry["body"] == body
    assert entry["headers"]["Content-Type"] == "application/json"
    assert entry["received_at"].endswith("Z")


def test_sni_and_host_are_recorded_independently(hpns: Hpns) -> None:
    https_request(
        hpns,
        "POST",
        "/api/v1/ack",
        {"id": "a"},
        server_name="global.push.mattermost.com",
        host_header="push.mattermost.com:8000",
    )
    https_request(hpns, "GET", "/version", server_name=None, host_header="10.0.0.1")
    ack, version = hpns.received()[-2:]
    assert (ack["sni"], ack["host"]) == ("global.push.mattermost.com", "push.mattermost.com:8000")
    assert (version["sni"], version["host"]) == (None, "10.0.0.1")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"platform": "apple_rn", "device_id": "t"}, "Failed because of missing server Id"),
        ({"platform": "apple_rn", "server_id": "s"}, "Failed because of missing device Id"),
        (b"not json", "Failed to read message body"),
    ],
)
def test_send_push_fail_answers(hpns: Hpns, body: Any, error: str) -> None:
    status, raw = https_request(hpns, "POST", "/api/v1/send_push", body)
    answer = json.loads(raw)
    assert status == 200
    assert answer["status"] == "FAIL"
    assert answer["error"].startswith(error)
    expected_body = body.decode() if isinstance(body, bytes) else body
    assert hpns.received()[-1]["body"] == expected_body


def test_ack_version_and_unknown_paths(hpns: Hpns) -> None:
    assert json.loads(https_request(hpns, "POST", "/api/v1/ack", {"id": "x"})[1]) == {
        "status": "OK"
    }
    assert json.loads(https_request(hpns, "POST", "/api/v1/ack", {})[1])["status"] == "FAIL"
    status, raw = https_request(hpns, "GET", "/version")
    assert status == 200 and set(json.loads(raw)) == {"hash", "version"}
    status, _ = https_request(hpns, "GET", "/api/v4/system/ping")
    assert status == 404
    assert hpns.received()[-1]["path"] == "/api/v4/system/ping"  # recorded all the same


def test_acme_challenge_on_plain_http(hpns: Hpns) -> None:
    token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
    (hpns.data_dir / "acme-challenge" / token).write_text(f"{token}.thumbprint")
    base = f"http://127.0.0.1:{hpns.http_port}"
    status, _, body = h.http_request("GET", f"{base}/.well-known/acme-challenge/{token}")
    assert (status, body.decode()) == (200, f"{token}.thumbprint")
    assert h.http_request("GET", f"{base}/.well-known/acme-challenge/unknown")[0] == 404
    assert h.http_request("GET", f"{base}/.well-known/acme-challenge/..%2Freceived.jsonl")[0] == 404
    assert h.http_request("GET", f"{base}/api/v1/send_push")[0] == 404
    assert h.http_request("POST", f"{base}/api/v1/send_push", {"server_id": "s"})[0] == 404
    assert all(entry["path"] != "/api/v1/send_push" or entry["sni"] for entry in hpns.received())


def _status_or_none(running: Any) -> int | None:
    """GET /version's status over HTTPS, or None while the handshake cannot complete yet."""
    try:
        return https_request(running, "GET", "/version")[0]
    except (OSError, ssl.SSLError):
        return None


def test_without_certificate_only_http_runs_until_sighup(tmp_path: Path) -> None:
    with hpns_emulator(tmp_path, with_cert=False) as running:
        # the emulator logs this before it serves anything: wait for the line, never for time
        h.wait_for(
            lambda: "HTTPS is waiting for a certificate" in running.process.stdout(),
            timeout=20,
            what="the emulator's log line",
        )
        with (
            pytest.raises(OSError),
            socket.create_connection(("127.0.0.1", running.https_port), timeout=1),
        ):
            pass
        token_dir = running.data_dir / "acme-challenge"
        (token_dir / "tok").write_text("proof")
        url = f"http://127.0.0.1:{running.http_port}/.well-known/acme-challenge/tok"
        assert h.http_request("GET", url)[2] == b"proof"
        # The lab installs the certificate, then reloads (or restarts) the service.
        (tmp_path / "etc" / "fullchain.pem").write_bytes(running.pki.server_cert.read_bytes())
        (tmp_path / "etc" / "privkey.pem").write_bytes(running.pki.server_key.read_bytes())
        assert running.process.process is not None
        os.kill(running.process.process.pid, signal.SIGHUP)
        running.process.wait_port(running.https_port)
        status = h.wait_for(
            lambda: _status_or_none(running), timeout=20, what="HTTPS after the reload"
        )
        assert status == 200
