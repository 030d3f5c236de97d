"""`mmpush diagnose` (mmpush/checks/diagnose.py, diagnose_cli.py): every check driven with a fake
host runner and canned outputs in the real programs' words, real curl against local servers,
log lines written by the emulators themselves, the faults the lab test injects (each named by a
failing check), and the command's JSON shape and exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mmpush.checks import diagnose as d
from mmpush.checks import diagnose_cli
from mmpush.checks.certificate import ERROR, INCOMPLETE_CHAIN, UNREACHABLE, CertificateReport
from mmpush.checks.certificate import Finding as CertFinding
from mmpush.checks.diagnose import CommandResult, ControlNode, ControlProbe
from mmpush.checks.push import probe_body
from mmpush.inventory import InventoryError, InventoryHost
from mmpush.mattermost.source import config_source_command
from tests.emulators import harness as h
from tests.unit.defaults import DEFAULTS, SHA, write_credentials
from tests.unit.emulator_helpers import (
    FakePushService,
    running_mattermost,
    running_push_proxy,
    write_mattermost_config,
)

PUSH_NAME = "push.example.com"
PUSH_URL = f"https://{PUSH_NAME}"
OUTBOUND_NAME = "outbound.example.com"
OUTBOUND_URL = f"https://{OUTBOUND_NAME}:8000"
ADMIN_TOKEN = "adm1n-t0ken-never-shown-0123456789"
CONFIG_PATH = "/opt/mattermost/config/config.json"
#: A real device token (64 hex digits): it must never appear in any output.
DEVICE_TOKEN = "63c06ca8e3949ca7e5996c31fcf07ecb36c658a3e7c2c227a4af949cc4777a87"

# --- words of the real programs (as the emulators reproduce them) --------------------------
MISSING_PLATFORM = (
    '{"status":"FAIL","error":"Did not send message because of missing platform property '
    'type=apple_rn serverId=mmpush-probe"}'
)
APNS_REJECTED = '{"status":"FAIL","error":"unknown send response error"}'
FCM_BAD_TOKEN = (
    '{"status":"FAIL","error":"The registration token is not a valid FCM registration token"}'
)
CURL_TLS = "curl: (60) SSL certificate problem: unable to get local issuer certificate"
CURL_REFUSED = (
    "curl: (7) Failed to connect to outbound.example.com port 8000 after 2 ms: "
    "Couldn't connect to server"
)


# --- a fake host ----------------------------------------------------------------------------


class FakeHost:
    """A host answering commands from canned outputs: the rule added last wins, so a test adds
    its fault on top of a healthy host. Unknown commands exit 127. Records every command."""

    def __init__(self) -> None:
        self.rules: list[tuple[Callable[[str], bool], CommandResult]] = []
        self.commands: list[str] = []

    def on(
        self, match: str | Callable[[str], bool], stdout: str = "", rc: int = 0, stderr: str = ""
    ) -> FakeHost:
        predicate = match if callable(match) else (lambda c, p=match: re.search(p, c) is not None)
        self.rules.insert(0, (predicate, CommandResult(rc, stdout, stderr)))
        return self

    def __call__(self, command: str) -> CommandResult:
        self.commands.append(command)
        for predicate, result in self.rules:
            if predicate(command):
                return result
        return CommandResult(127, "", f"fake host: no answer for {command[:60]}")


def curl_out(
    status: int, body: str = "", remote: str = "10.0.0.12", local: str = "10.0.0.11"
) -> str:
    """What curl_command prints for an answer."""
    return f"{body}\nmmpush-curl {status:03d} {remote} {local}\n"


def probe_out(status: int, body: str) -> str:
    """What the test-push runbook's probe command prints (mmpush/runbooks/probe.py)."""
    return f"rc=0 status={status}\n--body--\n{body}"


def curl_fail(rc: int, stderr: str) -> dict[str, Any]:
    return {"stdout": "\nmmpush-curl 000  \n", "rc": rc, "stderr": stderr}


def mm_config(url: str = PUSH_URL, send: bool = True, contents: str = "generic") -> str:
    return json.dumps(
        {
            "ServiceSettings": {"SiteURL": "https://mm.example.com"},
            "EmailSettings": {
                "SendPushNotifications": send,
                "PushNotificationServer": url,
                "PushNotificationContents": contents,
            },
            "NotificationLogSettings": {"EnableFile": True, "FileLocation": ""},
        },
        indent=4,
    )


def source_output(kind: str = "file", socket: str | None = None) -> str:
    lines = ["from the default (config.json)"]
    lines.append(
        f"file {CONFIG_PATH}" if kind == "file" else "database postgres db1 5432 mattermost"
    )
    if socket:
        lines.append(f"socket {socket}")
    return "\n".join(lines) + "\n"


def is_source_command(command: str) -> bool:
    return command == config_source_command("mattermost", "/var/tmp/mattermost_local.socket")


def mattermost_host(url: str = PUSH_URL, **config: Any) -> FakeHost:
    """A healthy Mattermost server (config.json) using ``url``."""
    version_url = re.escape(url.rstrip("/") + "/version")
    return (
        FakeHost()
        .on(r"^id -u$", "0\n")
        .on(is_source_command, source_output())
        .on(rf"^cat {CONFIG_PATH}$", mm_config(url, **config))
        .on(rf"^bash -c .*curl .*{version_url}", curl_out(200, '{"hash":"abc","version":"6.5.0"}'))
        .on(r"^bash -c .*apple_rn.*send_push", probe_out(200, '{"status":"REMOVE"}'))
        .on(r"^bash -c .*android_rn.*send_push", probe_out(200, FCM_BAD_TOKEN))
        .on(r"^systemctl show mattermost -p Environment", "")
        .on(r"^tail -n 2000 /opt/mattermost/logs/notifications.log$", "")
    )


def push_proxy_host() -> FakeHost:
    """A healthy push proxy (service active, loopback and front answer)."""
    return (
        FakeHost()
        .on(r"^id -u$", "0\n")
        .on(
            r"^systemctl show mattermost-push-proxy ",
            "ActiveState=active\nSubState=running\nResult=success\nNRestarts=0\n",
        )
        .on(
            r"^curl .*http://127.0.0.1:8066/version",
            curl_out(200, '{"version":"6.5.0"}', "127.0.0.1"),
        )
        .on(
            r"^curl .*--resolve .*https://push.example.com/version",
            curl_out(200, '{"version":"6.5.0"}'),
        )
        .on(r"^journalctl -u mattermost-push-proxy ", "")
    )


def outbound_host() -> FakeHost:
    return (
        FakeHost()
        .on(r"^id -u$", "0\n")
        .on(r"^systemctl is-active nginx$", "active\n")
        .on(r"^ss -ltnH$", "LISTEN 0 511 0.0.0.0:8000 0.0.0.0:*\nLISTEN 0 511 [::]:8000 [::]:*\n")
    )


class FakeControl:
    """This control node: the certificate check and HTTPS probes answer as told; calls are
    recorded."""

    def __init__(self) -> None:
        self.findings: list[CertFinding] = []
        self.reachable = True
        self.probe = ControlProbe("192.0.2.1", 403)
        self.certificate_calls: list[tuple[str, int, str | None, str | None]] = []

    def certificate(
        self, name: str, port: int, connect: str | None, ca: str | None
    ) -> CertificateReport:
        self.certificate_calls.append((name, port, connect, ca))
        report = CertificateReport(f"{name}:{port}", name, connect, ca or "the system store")
        if not self.reachable:
            report.findings.append(CertFinding(UNREACHABLE, ERROR, "TCP connect: refused"))
            return report
        report.address, report.tls_version = connect or "10.0.0.12", "TLSv1.3"
        report.findings += self.findings
        return report

    def https_status(self, address: str, name: str, port: int, path: str) -> ControlProbe:
        return self.probe

    def node(self) -> ControlNode:
        return ControlNode(self.certificate, self.https_status)


# --- inventories ------------------------------------------------------------------------------


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, Path]:
    return write_credentials(tmp_path)


def host(name: str, groups: tuple[str, ...], address: str, **data: Any) -> InventoryHost:
    return InventoryHost(name, groups, {**DEFAULTS, "ssh_hostname": address, **data})


def eas_inventory(creds: dict[str, Path], **mm: Any) -> list[InventoryHost]:
    return [
        host(
            "mm1",
            ("mattermost",),
            "10.0.0.11",
            **{"push_mode": "eas", "push_name": PUSH_NAME, **mm},
        ),
        host(
            "push1",
            ("push_proxies",),
            "10.0.0.12",
            push_mode="eas",
            push_name=PUSH_NAME,
            push_proxy_sha256=SHA,
            push_proxy_apple=[
                {
                    "type": "apple_rn",
                    "topic": "com.example.mattermost",
                    "auth_key_file": str(creds["auth_key"]),
                    "auth_key_id": "ABCDE12345",
                    "team_id": "TEAM123456",
                }
            ],
            push_proxy_android=[{"type": "android_rn", "service_account_file": str(creds["fcm"])}],
        ),
    ]


def hpns_inventory(**mm: Any) -> list[InventoryHost]:
    return [
        host("mm1", ("mattermost",), "10.0.0.11", push_mode="hpns", **mm),
        host(
            "out1",
            ("outbound_proxies",),
            "10.0.0.13",
            push_mode="hpns",
            outbound_proxy_name=OUTBOUND_NAME,
            outbound_proxy_allowed_networks=["10.0.0.0/24"],
        ),
    ]


def eas_world(creds: dict[str, Path], **mm: Any) -> tuple[list[InventoryHost], dict[str, FakeHost]]:
    return eas_inventory(creds, **mm), {"mm1": mattermost_host(), "push1": push_proxy_host()}


def hpns_world(**mm: Any) -> tuple[list[InventoryHost], dict[str, FakeHost]]:
    mm1 = mattermost_host(OUTBOUND_URL)
    return hpns_inventory(**mm), {"mm1": mm1, "out1": outbound_host()}


def run(
    hosts: list[InventoryHost],
    runners: dict[str, FakeHost],
    control: FakeControl | None = None,
    **kwargs: Any,
) -> list[d.CheckResult]:
    return d.diagnose(hosts, runners, (control or FakeControl()).node(), **kwargs)


def one(results: list[d.CheckResult], host_name: str, check: str) -> d.CheckResult:
    found = [r for r in results if r.host == host_name and r.check == check]
    assert len(found) == 1, (host_name, check, [r.to_dict() for r in results])
    return found[0]


def failures(results: list[d.CheckResult]) -> list[tuple[str, str]]:
    return [(r.host, r.check) for r in results if r.status == d.FAIL]


# --- the whole checklist -----------------------------------------------------------------------


def test_a_healthy_eas_site_passes_every_check_in_the_guides_order(
    creds: dict[str, Path],
) -> None:
    hosts, runners = eas_world(creds)
    results = run(hosts, runners)
    assert failures(results) == []
    assert [r.status for r in results if r.status == d.WARN] == []
    checks = [(r.host, r.check) for r in results]
    assert checks == [
        ("mm1", "settings"),
        ("push1", "settings"),
        ("mm1", "reachable"),
        ("push1", "reachable"),
        ("mm1", "push-settings"),
        ("mm1", "push-url"),
        ("mm1", "certificate"),
        ("mm1", "outbound-proxy"),
        ("push1", "push-proxy-service"),
        ("push1", "push-proxy-version"),
        ("push1", "push-front"),
        ("mm1", "push-credentials"),
        ("mm1", "licence"),
        ("mm1", "env-overrides"),
        ("mm1", "config-agree"),
        ("mm1", "push-errors"),
        ("push1", "push-errors"),
    ]
    settings = one(results, "mm1", "push-settings")
    assert PUSH_URL in settings.evidence and CONFIG_PATH in settings.evidence
    assert "push front" in settings.evidence
    credentials = one(results, "mm1", "push-credentials").evidence
    assert "apple_rn: path OK" in credentials and "android_rn: path OK" in credentials
    assert {tuple(r.to_dict()) for r in results} == {("host", "check", "status", "evidence", "fix")}


def test_a_healthy_hpns_site_through_an_outbound_proxy_passes() -> None:
    hosts, runners = hpns_world()
    licensed = {"IsLicensed": "true", "MHPNS": "true"}
    runners["mm1"].on(r"license/client", curl_out(200, json.dumps(licensed), "127.0.0.1"))
    results = run(hosts, runners)
    assert [r for r in results if r.status in (d.FAIL, d.WARN)] == []
    path = one(results, "mm1", "outbound-proxy")
    assert "forwarded to its upstream https://global.push.mattermost.com" in path.evidence
    assert "mm1 (10.0.0.11) is in outbound_proxy_allowed_networks" in path.evidence
    assert one(results, "out1", "outbound-proxy-allow-list").status == d.OK
    assert one(results, "mm1", "push-credentials").status == d.SKIP
    assert "MHPNS = true" in one(results, "mm1", "licence").evidence


def test_the_certificate_is_checked_at_the_address_the_server_connected_to(
    creds: dict[str, Path],
) -> None:
    hosts, runners = eas_world(creds, acme_ca_bundle=str(creds["ca_bundle"]))
    control = FakeControl()
    results = run(hosts, runners, control)
    assert control.certificate_calls == [(PUSH_NAME, 443, "10.0.0.12", str(creds["ca_bundle"]))]
    assert "via 10.0.0.12 (as mm1 resolves it)" in one(results, "mm1", "certificate").evidence


def test_fault_push_proxy_stopped_is_named(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    runners["push1"].on(
        r"^systemctl show mattermost-push-proxy ",
        "ActiveState=inactive\nSubState=dead\nResult=success\nNRestarts=0\n",
    )
    runners["push1"].on(r"127.0.0.1:8066/version", **curl_fail(7, "curl: (7) Failed to connect"))
    runners["push1"].on(r"--resolve .*push.example.com/version", curl_out(502, "<html>502</html>"))
    runners["mm1"].on(
        r"curl .*push.example.com/version", curl_out(502, "<html>502 Bad Gateway</html>")
    )
    results = run(hosts, runners)
    service = one(results, "push1", "push-proxy-service")
    assert service.status == d.FAIL
    assert "push proxy is down" in service.evidence and "inactive" in service.evidence
    assert "systemctl start mattermost-push-proxy" in service.fix
    url = one(results, "mm1", "push-url")
    assert url.status == d.FAIL and "HTTP 502" in url.evidence
    assert "push proxy behind it does not answer" in url.evidence
    assert one(results, "mm1", "push-credentials").status == d.SKIP


def test_fault_credentials_rejected_is_named(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    runners["mm1"].on(r"^bash -c .*apple_rn.*send_push", probe_out(200, APNS_REJECTED))
    runners["mm1"].on(r"^bash -c .*android_rn.*send_push", probe_out(200, MISSING_PLATFORM))
    results = run(hosts, runners)
    assert failures(results) == [("mm1", "push-credentials")]
    result = one(results, "mm1", "push-credentials")
    assert "apple_rn: credentials rejected by Apple or Google" in result.evidence
    assert "android_rn: no working credentials" in result.evidence
    assert "Failed to initialize client" in result.fix and "auth_key_id" in result.fix


def test_fault_certificate_without_its_intermediate_is_named(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    runners["mm1"].on(r"curl .*push.example.com/version", **curl_fail(60, CURL_TLS))
    runners["mm1"].on(r"^getent ahosts push.example.com$", "10.0.0.12 STREAM push.example.com\n")
    control = FakeControl()
    control.findings = [
        CertFinding(
            INCOMPLETE_CHAIN,
            ERROR,
            "the server sends 'CN=push.example.com' without its issuer 'CN=Test Intermediate'",
        )
    ]
    results = run(hosts, runners, control)
    certificate = one(results, "mm1", "certificate")
    assert certificate.status == d.FAIL and "incomplete-chain" in certificate.evidence
    assert "fullchain.pem" in certificate.fix
    assert control.certificate_calls[0][2] == "10.0.0.12"  # what mm1 resolves
    url = one(results, "mm1", "push-url")
    assert url.status == d.FAIL and url.evidence.startswith(f"GET {PUSH_URL}/version: TLS:")
    assert "does not trust the certificate" in url.evidence and "local issuer" in url.evidence


def test_fault_outbound_proxy_down_is_named() -> None:
    hosts, runners = hpns_world()
    runners["out1"].on(r"^systemctl is-active nginx$", "inactive\n", rc=3)
    runners["out1"].on(r"^ss -ltnH$", "LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n")
    runners["mm1"].on(r"curl .*outbound.example.com:8000/version", **curl_fail(7, CURL_REFUSED))
    results = run(hosts, runners)
    service = one(results, "out1", "outbound-proxy-service")
    assert service.status == d.FAIL and "outbound proxy is down" in service.evidence
    assert "nginx is inactive on out1" in service.evidence
    path = one(results, "mm1", "outbound-proxy")
    assert path.status == d.FAIL and path.evidence.count("connect:") == 1
    assert "the outbound proxy on out1" in path.evidence
    assert one(results, "mm1", "push-url").status == d.FAIL


def test_fault_client_outside_the_outbound_allow_list_is_named() -> None:
    hosts, runners = hpns_world()
    hosts[1] = host(
        "out1",
        ("outbound_proxies",),
        "10.0.0.13",
        push_mode="hpns",
        outbound_proxy_name=OUTBOUND_NAME,
        outbound_proxy_allowed_networks=["10.9.9.0/24"],
    )
    runners["mm1"].on(
        r"curl .*outbound.example.com:8000/version", curl_out(403, "<html>403 Forbidden</html>")
    )
    results = run(hosts, runners)
    path = one(results, "mm1", "outbound-proxy")
    assert path.status == d.FAIL
    assert "refused mm1 (HTTP 403)" in path.evidence
    assert (
        "mm1 (10.0.0.11) is not in outbound_proxy_allowed_networks ['10.9.9.0/24']" in path.evidence
    )
    assert "outbound_proxy_allowed_networks" in path.fix


def test_fault_mode_mismatch_is_named(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    runners["mm1"].on(rf"^cat {CONFIG_PATH}$", mm_config("https://global.push.mattermost.com"))
    results = run(hosts, runners)
    settings = one(results, "mm1", "push-settings")
    assert settings.status == d.FAIL
    assert settings.evidence.startswith(
        "mode mismatch: push_mode 'eas' needs PushNotificationServer 'https://push.example.com' "
        "(the push front (NGINX before the push proxy) on push1), the server uses "
        "'https://global.push.mattermost.com' (Mattermost's hosted push service (HPNS))"
    )
    assert "pyinfra INVENTORY deploys/eas.py" in settings.fix
    # the later checks look at the URL the server really uses
    assert "https://global.push.mattermost.com/version" in one(results, "mm1", "push-url").evidence


def test_an_unreachable_host_is_a_failed_check_and_its_other_checks_do_not_run(
    creds: dict[str, Path],
) -> None:
    hosts, runners = eas_world(creds)
    runners["push1"].on(
        r"^id -u$", rc=255, stderr="ssh: connect to host 10.0.0.12 port 22: No route to host"
    )
    results = run(hosts, runners)
    reachable = one(results, "push1", "reachable")
    assert reachable.status == d.FAIL and "No route to host" in reachable.evidence
    assert [r.check for r in results if r.host == "push1"] == ["settings", "reachable"]
    assert runners["push1"].commands == ["id -u"]
    assert one(results, "mm1", "push-credentials").status == d.OK  # data of push1 still used


def test_invalid_settings_fail_without_connecting(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    hosts[0] = host("mm1", ("mattermost",), "10.0.0.11", push_mode="eas", push_name="not a name")
    results = run(hosts, runners)
    settings = one(results, "mm1", "settings")
    assert settings.status == d.FAIL and "push_name" in settings.evidence
    assert runners["mm1"].commands == []


def test_only_the_selected_hosts_are_contacted(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    results = run(hosts, runners, selected=["mm1"])
    assert {r.host for r in results} == {"mm1"}
    assert runners["push1"].commands == []
    assert one(results, "mm1", "push-credentials").status == d.OK


def test_no_secret_reaches_any_result(creds: dict[str, Path], tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    hosts, runners = eas_world(
        creds, mattermost_api_url="https://mm.example.com", mattermost_admin_token=str(token_file)
    )
    runners["mm1"].on(rf"^cat {CONFIG_PATH}$", rc=1, stderr=f"cat: denied for Bearer {ADMIN_TOKEN}")
    line = (
        '{"timestamp":"2026-11-25 12:00:00.000 Z","level":"error","msg":"Failed to send to push '
        f'proxy","device_id":"{DEVICE_TOKEN}","error":"Post \\"https://push.example.com/api/v1/'
        'send_push\\": [Errno 111] Connection refused"}'
    )
    runners["mm1"].on(r"^tail -n 2000 ", line + "\n")
    text = json.dumps([r.to_dict() for r in run(hosts, runners)])
    assert ADMIN_TOKEN not in text and DEVICE_TOKEN not in text
    for path in creds.values():
        for secret_line in path.read_text().splitlines():
            if len(secret_line) >= 20:
                assert secret_line not in text


# --- step 1: push settings ------------------------------------------------------------------


def test_an_unreadable_configuration_is_a_failure_that_says_where_it_looked(
    creds: dict[str, Path],
) -> None:
    hosts, runners = eas_world(creds)
    runners["mm1"].on(is_source_command, source_output("database"))
    results = run(hosts, runners)
    result = one(results, "mm1", "push-settings")
    assert result.status == d.FAIL
    assert "the database postgres://db1:5432/mattermost" in result.evidence
    assert "EnableLocalMode" in result.fix
    assert [r.check for r in results if r.host == "mm1"][-1] == "push-settings"


def test_push_mode_off_passes_when_push_is_off_and_skips_the_push_path(
    creds: dict[str, Path],
) -> None:
    hosts, runners = eas_world(creds, push_mode="off")
    runners["mm1"].on(rf"^cat {CONFIG_PATH}$", mm_config("", send=False))
    results = run(hosts, runners, selected=["mm1"])
    assert one(results, "mm1", "push-settings").status == d.OK
    assert one(results, "mm1", "push-url").status == d.SKIP
    assert one(results, "mm1", "licence").status == d.SKIP
    assert failures(results) == []


# --- step 2: the push URL from the server (real curl against local servers) -----------------


def local_run(command: str, **env: str) -> CommandResult:
    """Run ``command`` on this machine as a host would (no proxy variables)."""
    environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    environment.update(env)
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, env=environment
    )
    return CommandResult(done.returncode, done.stdout, done.stderr)


@contextlib.contextmanager
def https_server(
    tmp_path: Path, status: int = 200, body: bytes = b'{"version":"6.5.0"}'
) -> Iterator[tuple[int, Path]]:
    """A TLS server on 127.0.0.1 (certificate from a throwaway CA) answering every GET with
    ``status`` and ``body``; yields (port, the CA file)."""
    pki = h.make_test_pki(tmp_path / "pki", ["localhost"], ["127.0.0.1"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], pki.ca_cert
    finally:
        server.shutdown()
        server.server_close()


def view_with(run_command: Callable[[str], CommandResult], creds: dict[str, Path]) -> d.ServerView:
    hosts = eas_inventory(creds)
    settings = d.check_settings(hosts[0], hosts)[1]
    assert settings is not None
    return d.ServerView("mm1", settings, run_command)


def test_push_url_through_real_curl_names_the_tls_hop_then_passes_with_the_ca(
    tmp_path: Path, creds: dict[str, Path]
) -> None:
    with https_server(tmp_path) as (port, ca):
        target = d.push_target(f"https://127.0.0.1:{port}", [])
        untrusted, _ = d.check_push_url(view_with(local_run, creds), target)
        trusted, answer = d.check_push_url(
            view_with(lambda c: local_run(c, CURL_CA_BUNDLE=str(ca)), creds), target
        )
    assert untrusted.status == d.FAIL
    assert f"TLS: mm1 does not trust the certificate of 127.0.0.1:{port}" in untrusted.evidence
    assert "curl: (60)" in untrusted.evidence
    assert trusted.status == d.OK, trusted
    assert "HTTP 200 from 127.0.0.1" in trusted.evidence and "version 6.5.0" in trusted.evidence
    assert answer is not None and answer.local_ip == "127.0.0.1"


def test_push_url_through_real_curl_names_a_refused_connection(creds: dict[str, Path]) -> None:
    port = h.free_port()
    target = d.push_target(f"http://127.0.0.1:{port}", [])
    result, _ = d.check_push_url(view_with(local_run, creds), target)
    assert result.status == d.FAIL
    assert result.evidence.startswith(f"GET http://127.0.0.1:{port}/version: connect: no TCP")


def test_push_url_names_a_name_that_does_not_resolve(creds: dict[str, Path]) -> None:
    mm1 = mattermost_host().on(
        r"^bash -c .*curl ", **curl_fail(6, "curl: (6) Could not resolve host: push.example.com")
    )
    result, _ = d.check_push_url(view_with(mm1, creds), d.push_target(PUSH_URL, []))
    assert result.status == d.FAIL
    assert "DNS: push.example.com does not resolve on mm1" in result.evidence
    assert "/etc/hosts" in result.fix


def test_a_page_that_is_not_a_push_service_fails(creds: dict[str, Path]) -> None:
    mm1 = mattermost_host().on(r"^bash -c .*curl ", curl_out(404, "404 page not found"))
    result, _ = d.check_push_url(view_with(mm1, creds), d.push_target(PUSH_URL, []))
    assert result.status == d.FAIL and "HTTP 404" in result.evidence


def test_curl_output_is_parsed_with_and_without_an_answer() -> None:
    answered = d.parse_curl(CommandResult(0, '{"a":\n1}\nmmpush-curl 200 10.0.0.5 10.0.0.9\n', ""))
    assert (answered.status, answered.body, answered.remote_ip, answered.local_ip) == (
        200,
        '{"a":\n1}',
        "10.0.0.5",
        "10.0.0.9",
    )
    failed = d.parse_curl(CommandResult(7, "\nmmpush-curl 000  \n", "curl: (7) refused\n"))
    assert (failed.answered, failed.status, failed.error) == (False, None, "curl: (7) refused")


def test_a_probe_push_through_real_curl_reaches_the_service_with_its_body(
    creds: dict[str, Path],
) -> None:
    with FakePushService() as push:
        result = d.check_push_credentials(view_with(local_run, creds), push.url, ["apple_rn"])
        bodies = push.pushes()
    assert bodies == [probe_body("apple_rn")]
    assert result.status == d.OK and "apple_rn: path OK" in result.evidence


# --- step 3: the certificate ---------------------------------------------------------------------


def test_a_certificate_not_reachable_from_here_is_skipped_with_the_reason(
    creds: dict[str, Path],
) -> None:
    control = FakeControl()
    control.reachable = False
    result = d.check_push_certificate(
        view_with(mattermost_host(), creds),
        d.push_target(PUSH_URL, []),
        ["10.0.0.12"],
        control.node(),
        None,
    )
    assert result.status == d.SKIP and "cannot be reached from this control node" in result.evidence
    assert [call[2] for call in control.certificate_calls] == ["10.0.0.12", None]


# --- step 4: the outbound proxy's allow-list from here -------------------------------------------


@pytest.mark.parametrize(
    ("networks", "probe", "status", "words"),
    [
        ([], ControlProbe("192.0.2.1", 200), d.WARN, "is empty"),
        (["10.0.0.0/24"], ControlProbe("10.0.0.1", 200), d.SKIP, "is inside"),
        (["10.0.0.0/24"], ControlProbe(None, None, "refused"), d.SKIP, "cannot reach"),
        (["10.0.0.0/24"], ControlProbe("192.0.2.1", 403), d.OK, "gets HTTP 403"),
        (["10.0.0.0/24"], ControlProbe("192.0.2.1", 200), d.FAIL, "not enforced"),
    ],
)
def test_the_outbound_allow_list_is_tried_from_here_when_this_node_is_outside_it(
    networks: list[str], probe: ControlProbe, status: str, words: str
) -> None:
    proxy = host(
        "out1",
        ("outbound_proxies",),
        "10.0.0.13",
        push_mode="hpns",
        outbound_proxy_name=OUTBOUND_NAME,
        outbound_proxy_allowed_networks=networks,
    )
    settings = d.check_settings(proxy, [proxy])[1]
    assert settings is not None
    control = FakeControl()
    control.probe = probe
    result = d.check_outbound_allow_list(proxy, settings, control.node())
    assert (result.status, words in result.evidence) == (status, True), result


def test_https_status_from_here_reports_the_source_address_and_status(tmp_path: Path) -> None:
    with https_server(tmp_path, status=403, body=b"forbidden") as (port, _):
        probe = d.https_status_from_here("127.0.0.1", "localhost", port)
    assert probe == ControlProbe("127.0.0.1", 403)
    closed = d.https_status_from_here("127.0.0.1", "localhost", h.free_port())
    assert closed.source is None and "cannot connect" in closed.error


# --- step 5: the push proxy ---------------------------------------------------------------------


def test_a_push_proxy_running_another_release_is_a_warning(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    runners["push1"].on(
        r"127.0.0.1:8066/version", curl_out(200, '{"version":"6.4.0"}', "127.0.0.1")
    )
    result = one(run(hosts, runners), "push1", "push-proxy-version")
    assert result.status == d.WARN and "6.4.0" in result.evidence and "6.5.0" in result.evidence


@pytest.mark.parametrize(
    ("networks", "status"), [(["10.0.0.0/24"], d.SKIP), ([], d.FAIL), (["127.0.0.0/8"], d.FAIL)]
)
def test_a_front_refusing_loopback_is_skipped_only_when_its_allow_list_says_so(
    creds: dict[str, Path], networks: list[str], status: str
) -> None:
    hosts, runners = eas_world(creds)
    hosts[1] = InventoryHost(
        "push1", hosts[1].groups, {**hosts[1].data, "push_front_allowed_networks": networks}
    )
    runners["push1"].on(r"--resolve .*push.example.com/version", curl_out(403, "forbidden"))
    result = one(run(hosts, runners), "push1", "push-front")
    assert result.status == status, result


# --- step 6: the licence --------------------------------------------------------------------------


def licence_view(
    url: str, contents: str, answer: dict[str, str], creds: dict[str, Path], mode: str = "hpns"
) -> tuple[d.ServerView, FakeHost]:
    mm1 = FakeHost().on(r"license/client", curl_out(200, json.dumps(answer), "127.0.0.1"))
    hosts = eas_inventory(creds, push_mode=mode)
    settings = d.check_settings(hosts[0], hosts)[1]
    assert settings is not None
    view = d.ServerView("mm1", settings, mm1, send=True, url=url, contents=contents)
    return view, mm1


def test_hpns_without_a_licence_fails(creds: dict[str, Path]) -> None:
    view, _ = licence_view(
        "https://global.push.mattermost.com", "generic", {"IsLicensed": "false"}, creds
    )
    result = d.check_licence(view)
    assert result.status == d.FAIL and "sends no push notifications at all" in result.evidence
    assert "IsLicensed = false" in result.evidence


def test_id_loaded_without_the_feature_is_a_warning(creds: dict[str, Path]) -> None:
    answer = {"IsLicensed": "true", "MHPNS": "true", "IDLoadedPushNotifications": "false"}
    view, _ = licence_view("https://global.push.mattermost.com", "id_loaded", answer, creds)
    result = d.check_licence(view)
    assert result.status == d.WARN and "id_loaded" in result.evidence


def test_a_licensed_hpns_server_passes(creds: dict[str, Path]) -> None:
    answer = {"IsLicensed": "true", "MHPNS": "true"}
    view, _ = licence_view("https://global.push.mattermost.com", "generic", answer, creds)
    assert d.check_licence(view).status == d.OK


def test_hpns_through_the_outbound_proxy_without_a_licence_is_a_warning(
    creds: dict[str, Path],
) -> None:
    view, _ = licence_view(OUTBOUND_URL, "generic", {"IsLicensed": "false"}, creds)
    result = d.check_licence(view)
    assert result.status == d.WARN
    assert "sends through the outbound proxy https://outbound.example.com:8000 regardless" in (
        result.evidence
    )


def test_no_licence_is_read_when_nothing_needs_one(creds: dict[str, Path]) -> None:
    view, mm1 = licence_view(PUSH_URL, "generic", {}, creds, mode="eas")
    result = d.check_licence(view)
    assert result.status == d.OK and "no licence needed" in result.evidence
    assert mm1.commands == []


# --- step 7: overrides, config sources -----------------------------------------------------------


def test_an_environment_override_of_a_push_setting_fails_naming_it(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    runners["mm1"].on(
        r"^systemctl show mattermost -p Environment",
        "unit\tMM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER\nunit\tMM_SQLSETTINGS_DRIVERNAME\n",
    )
    result = one(run(hosts, runners), "mm1", "env-overrides")
    assert result.status == d.FAIL
    assert "MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER (in the unit's Environment=)" in result.evidence
    assert "MM_SQLSETTINGS" not in result.evidence


def test_a_file_changed_without_a_restart_is_found_through_the_local_socket(
    creds: dict[str, Path],
) -> None:
    hosts, runners = eas_world(creds)
    socket_path = "/var/tmp/mattermost_local.socket"
    runners["mm1"].on(is_source_command, source_output(socket=socket_path))
    runners["mm1"].on(
        r"^curl .*--unix-socket .*api/v4/config'?$", curl_out(200, mm_config(""), "", "")
    )
    result = one(run(hosts, runners), "mm1", "config-agree")
    assert result.status == d.FAIL
    assert "EmailSettings.PushNotificationServer: file 'https://push.example.com', running ''" in (
        result.evidence
    )
    assert "restart mattermost" in result.fix


def test_cluster_nodes_that_report_different_push_settings_fail(creds: dict[str, Path]) -> None:
    hosts = [
        *eas_inventory(creds),
        host("mm2", ("mattermost",), "10.0.0.14", push_mode="eas", push_name=PUSH_NAME),
    ]
    socket_path = "/var/tmp/mattermost_local.socket"
    config_api = r"^curl .*--unix-socket .*api/v4/config'?$"
    runners = {"mm1": mattermost_host(), "mm2": mattermost_host(), "push1": push_proxy_host()}
    for name, url in (("mm1", PUSH_URL), ("mm2", "")):
        runners[name].on(is_source_command, source_output("database", socket_path))
        runners[name].on(config_api, mm_config(url))
    results = d.check_config_agree(
        [view for view in _views(hosts, runners)], {h.name: h.data for h in hosts}
    )
    by_host = {r.host: r for r in results}
    assert by_host["mm1"].status == d.OK and "same push settings as mm2" in by_host["mm1"].evidence
    assert by_host["mm2"].status == d.FAIL
    assert "database postgres://db1:5432/mattermost: mm2 reports" in by_host["mm2"].evidence
    assert "(mm1: 'https://push.example.com')" in by_host["mm2"].evidence


def _views(hosts: list[InventoryHost], runners: dict[str, FakeHost]) -> list[d.ServerView]:
    views = []
    for inventory_host in hosts:
        if not inventory_host.in_group("mattermost"):
            continue
        settings = d.check_settings(inventory_host, hosts)[1]
        assert settings is not None
        view = d.ServerView(inventory_host.name, settings, runners[inventory_host.name])
        d.check_push_settings(view, inventory_host.data, [], [])
        views.append(view)
    return views


# --- step 8: logs, in the emulators' own words ----------------------------------------------------


def test_log_lines_of_both_programs_are_explained_and_redacted() -> None:
    lines = [
        '{"timestamp":"2026-11-25 12:00:00.000 Z","level":"warn","msg":"Push notifications are '
        'disabled - license missing","status":"not_sent","reason":"push_disabled_license"}',
        '{"timestamp":"2026-11-25 12:00:01.000 Z","level":"debug","msg":"Notification will be '
        'sent"}',
        f"[2026-11-25 12:00:02.000 Z] [EROR] Failed to send to push proxy device_id={DEVICE_TOKEN} "
        'error="response returned error code: 403"',
        'error [2026-11-25 12:00:03.000 Z] Failed to initialize client error="x509: failed to '
        'parse private key"',
        "error [2026-11-25 12:00:04.000 Z] Failed to send apple push with res ApnsID= "
        "reason=DeviceTokenNotForTopic code=400 type=apple_rn",
        "error [2026-11-25 12:00:05.000 Z] Did not send message because of missing platform "
        "property type=apple_rn serverId=mmpush-probe",
        "info  [2026-11-25 12:00:06.000 Z] Sending apple push notification device=apple_rn",
        "error [2026-11-25 12:00:07.000 Z] something nobody has seen before "
        f"device_id={DEVICE_TOKEN} Authorization: Bearer {ADMIN_TOKEN}",
    ]
    status, evidence, fix = d.explain_log(lines, keep=20)
    assert status == d.WARN
    for known in (
        "licence-missing x1",
        "forbidden-403 x1",
        "failed-to-initialize-client x1",
        "device-token-not-for-topic x1",
    ):
        assert known in evidence, evidence
    assert "missing-platform" not in evidence  # our own probe's line is left out
    assert "unexplained: 'something nobody has seen before device_id=<redacted>" in evidence
    assert "Authorization: <redacted>" in evidence
    assert DEVICE_TOKEN not in evidence and ADMIN_TOKEN not in evidence
    assert "outbound_proxy_allowed_networks" in fix and "bundle id" in fix


def test_only_the_last_lines_count_and_benign_ones_need_no_action() -> None:
    old = "error [2026-11-24 00:00:00.000 Z] Failed to initialize client error=x"
    removed = "info  [2026-11-25 00:00:00.000 Z] Failed to send apple push sending remove code res"
    unregistered = (
        '{"timestamp":"t","level":"error","msg":"Failed to send FCM push","error":"Requested '
        'entity was not found.","errorCode":"NOT_FOUND"}'
    )
    status, evidence, fix = d.explain_log([old, removed, unregistered], keep=1)
    assert (status, fix) == (d.OK, "")
    assert "fcm-unregistered x1" in evidence and "failed-to-initialize" not in evidence


def test_a_missing_notifications_log_is_skipped(creds: dict[str, Path]) -> None:
    hosts, runners = eas_world(creds)
    runners["mm1"].on(
        r"^tail -n 2000 ", rc=1, stderr="tail: cannot open '/opt/mattermost/logs/notifications.log'"
    )
    result = one(run(hosts, runners), "mm1", "push-errors")
    assert result.status == d.SKIP and "notifications.log" in result.evidence


@pytest.mark.parametrize(
    ("location", "working", "path"),
    [
        ("", "", "/opt/mattermost/logs/notifications.log"),
        ("", "/srv/mattermost\n", "/srv/mattermost/logs/notifications.log"),
        ("/var/log/mm", "/srv/mattermost\n", "/var/log/mm/notifications.log"),
    ],
)
def test_the_notifications_log_is_read_where_the_server_writes_it(
    creds: dict[str, Path], location: str, working: str, path: str
) -> None:
    mm1 = FakeHost().on(r"^systemctl show -p WorkingDirectory", working)
    view = view_with(mm1, creds)
    config = {"NotificationLogSettings": {"EnableFile": True, "FileLocation": location}}
    view.effective = d.EffectiveConfig(json.dumps(config), CONFIG_PATH)
    d.check_mattermost_log(view, keep=20)
    assert mm1.commands[-1] == f"tail -n 2000 {path}"


def test_the_push_proxy_emulators_own_errors_are_explained(tmp_path: Path) -> None:
    """Real lines: the emulator refuses a broken key at start, then answers a push for that
    type as push-proxy v6.5.0 does."""
    port = h.free_port()
    key = tmp_path / "AuthKey.p8"
    key.write_text("not a key")
    config = {
        "ListenAddress": f"127.0.0.1:{port}",
        "ApplePushSettings": [
            {
                "Type": "apple_rn",
                "ApplePushTopic": "com.example.app",
                "AppleAuthKeyFile": str(key),
                "AppleAuthKeyID": "KEYID12345",
                "AppleTeamID": "TEAMID1234",
            }
        ],
        "AndroidPushSettings": [],
    }
    with running_push_proxy(tmp_path / "proxy", port, config) as proxy:
        body = {"platform": "apple_rn", "server_id": "mm-server", "device_id": DEVICE_TOKEN}
        answer = proxy.post("/api/v1/send_push", body)
        output = proxy.process.stdout()
    assert answer["status"] == "FAIL"
    status, evidence, fix = d.explain_log(output.splitlines(), keep=20)
    assert status == d.WARN
    assert "failed-to-initialize-client x1" in evidence and "missing-platform x1" in evidence
    assert DEVICE_TOKEN not in evidence
    assert "push_proxy_apple" in fix


def test_the_mattermost_emulators_notifications_log_is_explained(tmp_path: Path) -> None:
    """Real lines: a push to a port where nothing listens, in notifications.log (JSON)."""
    port, closed = h.free_port(), f"http://127.0.0.1:{h.free_port()}"
    config = write_mattermost_config(tmp_path / "config.json", port, closed)
    with running_mattermost(tmp_path, port, "--config", str(config)) as mm:
        token_a, a = mm.login("accounta")
        _, b = mm.login("accountb", device_id=f"apple_rn-v2:{DEVICE_TOKEN}")
        status, channel = mm.call("POST", "/api/v4/channels/direct", token_a, [a["id"], b["id"]])
        assert status == 201
        mm.call("POST", "/api/v4/posts", token_a, {"channel_id": channel["id"], "message": "hi"})
        h.wait_for(
            lambda: mm.notification_lines("Failed to send to push proxy"), what="the failure"
        )
        lines = mm.notifications_log_file.read_text().splitlines()
    status, evidence, fix = d.explain_log(lines, keep=20)
    assert status == d.WARN
    assert "connection-refused x1" in evidence
    assert DEVICE_TOKEN not in evidence
    assert "start the service behind the URL" in fix


def test_a_host_whose_ssh_refuses_is_a_failed_reachable_check_through_real_ssh(
    tmp_path: Path,
) -> None:
    """The command's own runner (testinfra over OpenSSH), against a port where nothing
    listens: an answer with ssh's message, never an exception."""
    target = host("mm1", ("mattermost",), "127.0.0.1", ssh_port=h.free_port(), ssh_user="nobody")
    config = tmp_path / "ssh_config"
    config.write_text(diagnose_cli.ssh_config([target]))
    run_on = diagnose_cli.make_runner(target, config)
    result = d.check_reachable(target, run_on)
    assert result.status == d.FAIL
    assert "Connection refused" in result.evidence and "over SSH (127.0.0.1)" in result.evidence


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, creds: dict[str, Path]
) -> Callable[..., tuple[Any, dict[str, FakeHost]]]:
    """``cli(*args)``: run `mmpush diagnose INVENTORY *args` against a fake EAS site (its
    hosts answer from canned outputs); (click result, the fake hosts)."""
    inventory = tmp_path / "inventory.py"
    inventory.write_text("mattermost = []\n")
    hosts, runners = eas_world(creds)
    control = FakeControl()
    loaded: list[Any] = []

    def load(path: Any, data: list[str] | None = None, cwd: Any = ".") -> list[InventoryHost]:
        loaded.append(data)
        return hosts

    monkeypatch.setattr(diagnose_cli, "load_inventory", load)
    monkeypatch.setattr(diagnose_cli, "make_runner", lambda h, config: runners[h.name])
    monkeypatch.setattr(diagnose_cli, "ControlNode", control.node)

    def invoke(*args: str) -> tuple[Any, dict[str, FakeHost]]:
        result = CliRunner().invoke(diagnose_cli.diagnose, [str(inventory), *args])
        return result, runners

    return invoke


def test_the_command_prints_json_results_and_exits_0_when_nothing_fails(
    cli: Callable[..., tuple[Any, dict[str, FakeHost]]],
) -> None:
    result, _ = cli("--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"results", "summary", "ok"}
    assert payload["ok"] is True and payload["summary"]["fail"] == 0
    assert set(payload["summary"]) == {"ok", "warn", "fail", "skip"}
    assert all(set(r) == {"host", "check", "status", "evidence", "fix"} for r in payload["results"])
    assert sum(payload["summary"].values()) == len(payload["results"])


def test_the_command_exits_1_and_prints_one_line_per_check_when_a_check_fails(
    cli: Callable[..., tuple[Any, dict[str, FakeHost]]],
) -> None:
    result, runners = cli("--host", "push1")
    assert result.exit_code == 0
    runners["push1"].on(
        r"^systemctl show mattermost-push-proxy ", "ActiveState=failed\nSubState=failed\n"
    )
    result, _ = cli()
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    [failed] = [line for line in lines if line.startswith("FAIL")]
    assert re.match(r"FAIL  push1\s+push-proxy-service\s+the push proxy is down", failed)
    assert "=> fix: on push1: `systemctl start mattermost-push-proxy`" in failed
    assert lines[-1].startswith("Summary: ") and lines[-1].endswith("Result: FAIL (push1)")
    assert len(lines) == 18  # 17 checks + the summary


def test_the_command_passes_data_overrides_to_the_inventory_and_the_hosts(
    cli: Callable[..., tuple[Any, dict[str, FakeHost]]],
) -> None:
    result, _ = cli("--data", "push_mode=off", "--host", "mm1", "--format", "json")
    payload = json.loads(result.stdout)
    settings = [r for r in payload["results"] if r["check"] == "settings"]
    assert settings[0]["evidence"].startswith("inventory data valid: push_mode 'off'")


@pytest.mark.parametrize(
    "args", [("--data", "no-equals-sign"), ("--host", "nosuchhost"), ("--format", "yaml")]
)
def test_usage_errors_exit_2(
    cli: Callable[..., tuple[Any, dict[str, FakeHost]]], args: tuple[str, ...]
) -> None:
    result, runners = cli(*args)
    assert result.exit_code == 2, result.output
    assert all(not fake.commands for fake in runners.values())


def test_an_inventory_that_does_not_load_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    inventory = tmp_path / "broken.py"
    inventory.write_text("this is not python\n")

    def load(path: Any, data: list[str] | None = None, cwd: Any = ".") -> list[InventoryHost]:
        raise InventoryError(f"cannot load inventory {path}: SyntaxError")

    monkeypatch.setattr(diagnose_cli, "load_inventory", load)
    result = CliRunner().invoke(diagnose_cli.diagnose, [str(inventory)])
    assert result.exit_code == 2 and "SyntaxError" in result.output
    missing = CliRunner().invoke(diagnose_cli.diagnose, [str(tmp_path / "nope.py")])
    assert missing.exit_code == 2
