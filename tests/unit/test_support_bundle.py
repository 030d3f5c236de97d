"""mmpush.runbooks.bundle: the push-debug runbook's support bundle. The redaction of every
secret form and pattern, the secrets found in real settings (credential files made with
``cryptography``), the host-side read scripts (run here by bash on files in tmp_path), the
collection from a fake host, the writer (modes, MANIFEST, no secret byte in any file), and the
operation through the real `pyinfra` CLI on @local (--dry collects nothing)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import http.server
import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mmpush.runbooks import bundle
from mmpush.runbooks.bundle import (
    FILES,
    MANIFEST,
    REDACTED,
    BundleError,
    Redactor,
    host_secrets,
    write_bundle,
)
from mmpush.settings import (
    RunbookSettings,
    Secret,
    Settings,
    runbook_settings_from_data,
    settings_from_data,
)
from tests.unit.defaults import DEFAULTS, SHA, write_credentials

HOST = "mm1.example.net"
ALL_GROUPS = ("mattermost", "push_proxies", "outbound_proxies")
#: An admin token as Mattermost makes them (26 lowercase letters and digits).
ADMIN_TOKEN = "k3j9x7mqp4b8wz2r5t6y1n0cvd"
DM_TOKEN = "dmsender0token0abcdefghijk"
TSIG_SECRET = base64.b64encode(b"tsig secret for the unit tests!!").decode()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, Path]:
    """Valid credential files (tests.unit.defaults), plus a DM sender token and a TSIG key."""
    files = write_credentials(tmp_path)
    files["dm_token"] = tmp_path / "dm-token"
    files["dm_token"].write_text(DM_TOKEN + "\n")
    files["tsig"] = tmp_path / "tsig.secret"
    files["tsig"].write_text(TSIG_SECRET + "\n")
    return files


@pytest.fixture
def host_data(creds: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """EAS data with every kind of credential: an APNs .p8 key, an APNs certificate with its
    password, an FCM service account, the admin token (env:), a DM sender token (a file) and
    a TSIG secret for DNS-01."""
    monkeypatch.setenv("MMPUSH_UNIT_ADMIN_TOKEN", ADMIN_TOKEN)
    return {
        **DEFAULTS,
        "push_name": "push.example.com",
        "push_proxy_sha256": SHA,
        "push_proxy_apple": [
            {
                "type": "apple_rn",
                "topic": "com.example.mattermost",
                "auth_key_file": str(creds["auth_key"]),
                "auth_key_id": "ABCDE12345",
                "team_id": "TEAM123456",
            },
            {
                "type": "apple",
                "topic": "com.example.mattermost",
                "certificate_file": str(creds["apns_pem"]),
                "certificate_password_file": str(creds["apns_password"]),
            },
        ],
        "push_proxy_android": [{"type": "android_rn", "service_account_file": str(creds["fcm"])}],
        "mattermost_api_url": "https://mm.example.com",
        "mattermost_admin_token": "env:MMPUSH_UNIT_ADMIN_TOKEN",
        "runbook_dm_sender_token": str(creds["dm_token"]),
        "runbook_dm_recipient": "accounta",
        "tls_certificate_source": "acme-dns01",
        "acme_dns_server": "ns1.example.com",
        "acme_dns_zone": "example.com",
        "acme_dns_tsig_key_name": "acme-update",
        "acme_dns_tsig_secret": str(creds["tsig"]),
    }


@pytest.fixture
def settings(host_data: dict[str, Any]) -> Settings:
    return settings_from_data(HOST, ALL_GROUPS, host_data)


@pytest.fixture
def runbook(host_data: dict[str, Any], tmp_path: Path) -> RunbookSettings:
    data = {**host_data, "runbook_support_dir": str(tmp_path / "support")}
    return runbook_settings_from_data(HOST, ALL_GROUPS, data)


@pytest.fixture
def secrets_(creds: dict[str, Path]) -> dict[str, bytes]:
    """What must never reach a bundle, by name."""
    return {
        "auth_key": creds["auth_key"].read_bytes(),
        "apns_pem": creds["apns_pem"].read_bytes(),
        "apns_password": creds["apns_password"].read_bytes(),
        "fcm": creds["fcm"].read_bytes(),
        "admin_token": ADMIN_TOKEN.encode(),
        "dm_token": creds["dm_token"].read_bytes(),
        "tsig": creds["tsig"].read_bytes(),
    }


def forbidden(secret: bytes) -> list[str]:
    """What of ``secret`` may not be in a bundle: the whole (stripped) content, and each line
    of 16 characters or more of it, and of the PEM keys inside JSON strings."""
    text = secret.decode()
    pieces = [text.strip()]
    for value in [text, *json_private_keys(text)]:
        pieces += [line.strip() for line in value.splitlines() if len(line.strip()) >= 16]
    return [p for p in pieces if p and not re.fullmatch(r"-----(BEGIN|END) [A-Z ]+-----", p)]


def json_private_keys(text: str) -> list[str]:
    try:
        document = json.loads(text)
    except ValueError:
        return []
    return [str(document["private_key"])] if isinstance(document, dict) else []


def leaks(text: str, secrets: dict[str, bytes]) -> list[str]:
    """Which secrets (by name) have a piece in ``text``."""
    return [name for name, secret in secrets.items() if any(p in text for p in forbidden(secret))]


# --- the Redactor: each pattern -------------------------------------------------------------

KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\n"
    "OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n"
    "1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"key: {KEY} after", ["key: ", " after"], ["MIGHAgEAMBMG", "BEGIN PRIVATE"]),
        (
            "rsa " + KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY") + " end",
            ["rsa ", " end"],
            ["MIGHAgEAMBMG"],
        ),
        ("cut: " + KEY[:120], ["cut: "], ["MIGHAgEAMBMG", "OF/2NxApJCz"]),
        (
            json.dumps({"msg": "loaded", "key": KEY}),
            ['"msg": "loaded"'],
            ["MIGHAgEAMBMG", "OF/2NxApJCz"],
        ),
        ("GET / Authorization: Bearer abcdef123456xyz", ["Authorization: Bearer "], ["abcdef"]),
        ('{"Authorization": "Token sekrit0value"}', ['"Authorization": '], ["sekrit0"]),
        ("curl -H 'Authorization: Basic dXNlcjpwYXNz'", ["Authorization: Basic "], ["dXNlc"]),
        ("sent with bearer eyJhbGciOi.eyJzdWIi.sig", ["sent with bearer "], ["eyJhbGciOi"]),
        ("GET /api/v4/files?token=abc123secret&x=1", ["?token=", "&x=1"], ["abc123secret"]),
        ("access_token=ya29.a0Af sent", ["access_token=", " sent"], ["ya29"]),
        ('password="two words" next', ["password=", " next"], ["two words"]),
        (
            "MM_CONFIG=postgres://mmuser:Str0ngPass@db1:5432/mattermost?sslmode=disable",
            ["postgres://mmuser:", "@db1:5432/mattermost?sslmode=disable"],
            ["Str0ngPass"],
        ),
        (
            "https://user:p4ss@proxy.example:3128",
            ["https://user:", "@proxy.example:3128"],
            ["p4ss"],
        ),
        (
            "mmuser:mysqlPass@tcp(db1:3306)/mattermost?charset=utf8mb4",
            ["mmuser:", "@tcp(db1:3306)/mattermost"],
            ["mysqlPass"],
        ),
        (
            '{"SqlSettings": {"DataSource": "anything at all", "DriverName": "postgres"}}',
            ['"DataSource": "********"', '"DriverName": "postgres"'],
            ["anything at all"],
        ),
        (
            '{"SMTPPassword": "hunter22", "PublicLinkSalt": "salty", "AtRestEncryptKey": "k"}',
            ['"SMTPPassword": "********"', '"AtRestEncryptKey": "********"'],
            ["hunter22", "salty"],
        ),
        ('{"PrivateKey":"abc","Token":"def","Secret":"ghi"}', ['"PrivateKey":"********"'], ["abc"]),
        (
            'msg="{\\"Password\\":\\"escaped1\\",\\"type\\":\\"push\\"}"',
            ['\\"Password\\":\\"********\\"', '\\"type\\":\\"push\\"'],
            ["escaped1"],
        ),
    ],
)
def test_each_pattern_is_redacted_and_the_rest_kept(
    text: str, kept: list[str], gone: list[str]
) -> None:
    redacted = Redactor([]).redact(text)
    assert REDACTED in redacted
    for piece in kept:
        assert piece in redacted, redacted
    for piece in gone:
        assert piece not in redacted, redacted


def test_what_is_not_secret_is_kept_and_not_counted() -> None:
    text = (
        '{"timestamp":"2025-01-01 10:00:00.000 Z","level":"error","msg":"Failed to send to push '
        'proxy","type":"push","ack_id":"x1","device_id":"abc","AppleAuthKeyID":"ABCDE12345",'
        '"AppleAuthKeyFile":"/etc/x.p8","PushNotificationServer":"https://push.example.com",'
        '"Password":""}\n'
        '10.0.0.11 - - [01/Jan/2025:10:00:00 +0000] "POST /api/v1/send_push HTTP/1.1" 200 31\n'
        "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK\n-----END CERTIFICATE-----\n"
    )
    redactor = Redactor([])
    assert redactor.redact_counted(text) == (text, 0)
    assert redactor.count == 0


def test_the_count_is_of_occurrences_and_already_redacted_values_do_not_count() -> None:
    redactor = Redactor([ADMIN_TOKEN.encode()])
    text = f"a {ADMIN_TOKEN} b {ADMIN_TOKEN} token=xyz123 token={REDACTED}"
    redacted, found = redactor.redact_counted(text)
    assert found == 3 and redactor.count == 3
    assert redacted == f"a {REDACTED} b {REDACTED} token={REDACTED} token={REDACTED}"
    assert redactor.redact_counted(redacted) == (redacted, 0)


# --- the Redactor: the secrets it is given, in every form -------------------------------------


def test_a_secret_is_redacted_whole(secrets_: dict[str, bytes]) -> None:
    redactor = Redactor(secrets_.values())
    for name, secret in secrets_.items():
        text = f"before {secret.decode().strip()} after"
        redacted = redactor.redact(text)
        assert leaks(redacted, secrets_) == [], name
        assert redacted.startswith("before ") and redacted.endswith(" after"), name


def test_a_key_quoted_line_by_line_is_caught(secrets_: dict[str, bytes]) -> None:
    """Each body line of the key in a log line of its own (no BEGIN/END to match a block)."""
    redactor = Redactor(secrets_.values())
    body = [line for line in secrets_["auth_key"].decode().splitlines() if "-----" not in line]
    text = "\n".join(f"2025-01-01 debug read line {n}: {line}" for n, line in enumerate(body))
    redacted, found = redactor.redact_counted(text)
    assert leaks(redacted, secrets_) == []
    assert found == len(body)
    assert "debug read line 0: ********" in redacted


def test_a_service_account_json_escaped_in_a_log_is_caught(secrets_: dict[str, bytes]) -> None:
    """The private_key as JSON writes it (``\\n``), inside a log line, without its BEGIN line
    (cut by the logger), and as Go escapes it."""
    redactor = Redactor(secrets_.values())
    key = json.loads(secrets_["fcm"])["private_key"]
    escaped = json.dumps(key)[1:-1]
    assert "\\n" in escaped
    without_begin = escaped.split("\\n", 1)[1]
    go_escaped = json.dumps({"k": key + "<&>"}).replace("<", "\\u003c").replace("&", "\\u0026")
    for text in (
        f'{{"msg":"credentials","value":"{escaped}"}}',
        f"parse error near {without_begin[:300]}",
        go_escaped,
    ):
        redacted = redactor.redact(text)
        assert leaks(redacted, secrets_) == [], text[:80]


def test_a_password_escaped_by_json_is_caught() -> None:
    """Quotes and backslashes escaped as JSON writes them, and <, >, & as Go does."""
    password = 'pa"ss<w0rd>&\\x'
    redactor = Redactor([password.encode() + b"\n"])
    python = json.dumps({"value": password})
    go = python.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    for text in (python, go):
        assert "w0rd" not in redactor.redact(f"config {text}"), text


def test_a_service_account_written_with_escaped_slashes_is_caught(
    secrets_: dict[str, bytes],
) -> None:
    """Some tools write "/" as "\\/" in JSON: the key's lines in the file are not the lines a
    program logs once it has parsed the file."""
    escaped_file = secrets_["fcm"].replace(b"/", b"\\/")
    key = json.loads(escaped_file)["private_key"]
    lines = [line for line in key.splitlines() if "/" in line and "-----" not in line]
    assert lines
    redacted = Redactor([escaped_file]).redact("\n".join(f"log: {line}" for line in lines))
    assert not [line for line in lines if line in redacted]


def test_a_secret_in_base64_is_caught(secrets_: dict[str, bytes]) -> None:
    redactor = Redactor(secrets_.values())
    for name in ("auth_key", "apns_password", "admin_token", "fcm"):
        encoded = base64.b64encode(secrets_[name]).decode()
        wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
        for text in (f"blob={encoded};", f"data:\n{wrapped}\n"):
            redacted = redactor.redact(text)
            assert encoded not in redacted, name
            assert not [
                line for line in wrapped.splitlines() if len(line) >= 16 and line in redacted
            ], name


def test_a_binary_secret_is_caught_in_base64() -> None:
    p12 = bytes(range(256)) * 4  # not UTF-8, as a .p12 is
    redactor = Redactor([p12])
    encoded = base64.b64encode(p12).decode()
    assert encoded not in redactor.redact(f"x {encoded} y")


def test_short_secrets_and_boundaries_are_not_searched_for_whole() -> None:
    """A 3-character "secret" (or its base64) would match everywhere; PEM boundaries are not
    secret."""
    certificate = (
        "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHHIG+abcdefgh\n-----END CERTIFICATE-----\n"
    )
    short_value = b'{"private_key_id": "ab", "client_id": "a long enough document"}'
    redactor = Redactor([b"abc\n", certificate.encode(), short_value])
    other = "abc YWJj -----BEGIN CERTIFICATE-----\nMIIother\n-----END CERTIFICATE----- xyz"
    assert redactor.redact(other) == other
    assert redactor.redact(certificate) == REDACTED + "\n"


def test_the_redactor_never_shows_its_secrets() -> None:
    redactor = Redactor([ADMIN_TOKEN.encode()])
    assert ADMIN_TOKEN not in repr(redactor) and ADMIN_TOKEN not in str(redactor)


# --- host_secrets: every credential in real settings ----------------------------------------


def test_host_secrets_finds_every_credential_in_the_settings(
    settings: Settings, runbook: RunbookSettings, secrets_: dict[str, bytes]
) -> None:
    found = host_secrets(settings, runbook)
    assert set(secrets_.values()) <= set(found), [
        name for name, secret in secrets_.items() if secret not in found
    ]
    assert len(found) == len(set(found)), "each secret once"


def test_host_secrets_of_the_settings_alone_miss_only_the_dm_token(
    settings: Settings, secrets_: dict[str, bytes]
) -> None:
    found = host_secrets(settings)
    assert [n for n, s in secrets_.items() if s not in found] == ["dm_token"]


def test_host_secrets_walks_any_dataclass_field(settings: Settings) -> None:
    """A Secret added anywhere in the settings tomorrow is found without changing the code."""

    @dataclass(frozen=True)
    class Future:
        nested: dict[str, list[tuple[Secret, ...]]]

    new = Secret("env:NEW", b"a brand new kind of secret")
    found = host_secrets(settings, Future({"x": [(new,)]}))  # type: ignore[arg-type]
    assert new.content in found


# --- the host-side scripts, run here by bash --------------------------------------------------


def run_read(body: str) -> tuple[int, str, str]:
    """Run a read like the host does: returns (exit code, decoded text, stderr)."""
    result = subprocess.run(
        ["sh", "-c", bundle.read_command(body)], capture_output=True, text=True, timeout=30
    )
    text = bundle.decode_output(result.stdout) if result.returncode == 0 else ""
    return result.returncode, text, result.stderr


def test_log_lines_keep_the_last_push_lines(tmp_path: Path) -> None:
    log = tmp_path / "mattermost.log"
    lines = [f"line {n} push" if n % 2 else f"line {n} other" for n in range(3000)]
    lines += ["Notification sent", "a notification in lowercase", "PUSH in capitals"]
    log.write_text("\n".join(lines) + "\n")
    code, text, _ = run_read(bundle.log_lines_body(str(log), bundle.PUSH_LINE_PATTERN, limit=5))
    assert code == 0
    assert text.splitlines() == [
        "line 2995 push",
        "line 2997 push",
        "line 2999 push",
        "Notification sent",
        "PUSH in capitals",
    ]


def test_a_missing_log_is_recorded_not_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.log")
    assert run_read(bundle.log_lines_body(path, "push")) == (0, f"(not found: {path})\n", "")


def test_no_matching_line_is_not_an_error_but_an_unreadable_log_is(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    log.write_text("nothing here\n")
    assert run_read(bundle.log_lines_body(str(log), "push"))[:2] == (0, "")
    code, _, stderr = run_read(bundle.log_lines_body(str(tmp_path), "push"))  # a directory
    assert code != 0 and "directory" in stderr.lower()


def test_rotated_nginx_logs_are_read_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    Path(f"{log}.1").write_text('1.2.3.4 - - [x] "POST /api/v1/send_push HTTP/1.1" 200 1\n')
    log.write_text(
        '1.2.3.4 - - [x] "GET /metrics HTTP/1.1" 404 1\n'
        '1.2.3.4 - - [x] "POST /api/v1/ack HTTP/1.1" 200 1\n'
        '1.2.3.4 - - [x] "GET /version HTTP/1.1" 200 1\n'
        '1.2.3.4 - - [x] "GET /versions HTTP/1.1" 404 1\n'
        '1.2.3.4 - - [x] "GET /api/v1/send_push?x=1 HTTP/1.1" 405 1\n'
    )
    body = bundle.log_lines_body(str(log), bundle.access_pattern(), rotated=True)
    code, text, _ = run_read(body)
    assert code == 0
    assert [line.split('"')[1] for line in text.splitlines()] == [
        "POST /api/v1/send_push HTTP/1.1",
        "POST /api/v1/ack HTTP/1.1",
        "GET /version HTTP/1.1",
        "GET /api/v1/send_push?x=1 HTTP/1.1",
    ]


def test_certificates_show_dates_and_never_a_key(tmp_path: Path, creds: dict[str, Path]) -> None:
    domain = tmp_path / "push.example.com"
    domain.mkdir()
    cert = creds["apns_pem"].read_text().split("-----BEGIN RSA PRIVATE KEY-----")[0]
    (domain / "fullchain.pem").write_text(cert)
    (domain / "privkey.pem").write_bytes(creds["auth_key"].read_bytes())
    (domain / "source").write_text("acme https://acme.example/directory\n")
    broken = tmp_path / "broken.example.com"
    broken.mkdir()
    (broken / "fullchain.pem").write_text("not a certificate\n")
    code, text, _ = run_read(bundle.certificates_body(str(tmp_path)))
    assert code == 0
    assert f"== {domain}/fullchain.pem" in text and "notAfter=" in text
    assert "subject=" in text and "issuer=" in text
    assert "source: acme https://acme.example/directory" in text
    assert f"(openssl cannot read {broken}/fullchain.pem)" in text
    assert "PRIVATE KEY" not in text
    assert run_read(bundle.certificates_body(str(tmp_path / "none")))[:2] == (
        0,
        f"(no certificate under {tmp_path / 'none'})\n",
    )


def test_versions_never_fail(tmp_path: Path) -> None:
    code, text, _ = run_read(bundle.packages_body(("no-such-package-mmpush",)))
    assert (code, text.splitlines()) == (
        0,
        ["packages (dpkg-query):", "un  no-such-package-mmpush (not installed)"],
    )
    assert run_read(bundle.push_proxy_version_body(str(tmp_path)))[:2] == (
        0,
        f"push proxy: (not found: {tmp_path}/current)\n",
    )
    code, text, _ = run_read(bundle.debian_body())
    assert code == 0 and text.startswith("debian: ")


def test_the_mattermost_version_is_the_running_server_s_or_unknown() -> None:
    class Server(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("X-Version-Id", "10.11.0.10.11.0.abc.false")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = settings_from_data(HOST, ("mattermost",), {**DEFAULTS, "push_mode": "off"})
        for url, expected in (
            (f"http://127.0.0.1:{server.server_port}/api/v4/system/ping",
             "mattermost: 10.11.0.10.11.0.abc.false (X-Version-Id)\n"),
            ("http://127.0.0.1:9/nothing-listens", "mattermost: unknown\n"),
        ):  # fmt: skip
            mattermost = dataclasses.replace(base.mattermost, service="no-such-unit", ping_url=url)
            assert run_read(bundle.mattermost_version_body(mattermost)) == (0, expected, "")
    finally:
        server.shutdown()


def test_the_push_proxy_version_names_the_current_release(tmp_path: Path) -> None:
    release = tmp_path / "releases" / "6.5.0"
    (release / "bin").mkdir(parents=True)
    (tmp_path / "current").symlink_to(release)
    code, text, _ = run_read(bundle.push_proxy_version_body(str(tmp_path)))
    assert code == 0
    assert text.splitlines()[0] == f"push proxy release: {release}"
    assert text.splitlines()[1].startswith("push proxy -version: ")


# --- collecting from a fake host ---------------------------------------------------------------

#: What the fake Mattermost server's configuration holds: secrets beside the push settings.
CONFIG = {
    "SqlSettings": {"DataSource": "postgres://mmuser:dbPassw0rd@db1/mattermost?sslmode=disable"},
    "EmailSettings": {
        "SendPushNotifications": True,
        "PushNotificationServer": "https://push.example.com",
        "PushNotificationContents": "generic",
        "SMTPPassword": "smtp-passw0rd",
    },
    "LogSettings": {"FileLevel": "DEBUG", "ConsoleLevel": "INFO", "FileLocation": "logs/srv"},
    "NotificationLogSettings": {"FileLevel": "DEBUG", "FileLocation": ""},
}
CONFIG_SECRETS = ("dbPassw0rd", "smtp-passw0rd")


@dataclass
class Output:
    stdout: str
    stderr: str = ""


@dataclass
class FakeHost:
    """Answers the bundle's reads like a host whose logs and journal hold every secret;
    records each call's printing arguments."""

    secrets: dict[str, bytes]
    name: str = HOST
    fail: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)

    def leaky_text(self, label: str) -> str:
        """A log as a careless program writes it: every secret, in several forms."""
        lines = [f"{label} push line one", f"{label} Notification sent"]
        for name, secret in self.secrets.items():
            text = secret.decode().strip()
            lines.append(f"{label} push debug {name}: {text}")
            lines.append(f"{label} push json {json.dumps({'value': text})}")
            lines.append(f"{label} push b64 {base64.b64encode(secret).decode()}")
        return "\n".join(lines) + "\n"

    def answer(self, command: str) -> str:
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        if "MainPID" in command:  # where the configuration lives
            return "from the unit\nfile /opt/mattermost/config/config.json\n"
        if command.startswith("cat "):
            return json.dumps(CONFIG)
        if "WorkingDirectory" in command and "base64" not in command:
            return "/srv/mattermost\n"
        if "journalctl" in command:
            return b64(self.leaky_text("journal"))
        for path, label in (
            ("/srv/mattermost/logs/srv/mattermost.log", "server"),
            ("/srv/mattermost/logs/notifications.log", "notifications"),
            ("/var/log/nginx/error.log", "nginx-error"),
        ):
            if path in command:
                return b64(self.leaky_text(label))
        if "/var/log/nginx/access.log" in command:
            return b64(f'1.2.3.4 - - [x] "POST /api/v1/send_push?token={ADMIN_TOKEN} HTTP/1.1"\n')
        if "fullchain.pem" in command:
            return b64("== /etc/mmpush/tls/push.example.com/fullchain.pem\nnotAfter=Jan 1\n")
        if "dpkg-query" in command:
            return b64("ii  nginx 1.22.1-9\n")
        return b64(f"output of {command[:20]}\n")

    def run_shell_command(self, command: Any, **kwargs: Any) -> tuple[bool, Output]:
        text = command.get_raw_value()
        self.calls.append({"command": text, **kwargs})
        if self.fail and self.fail in text:
            return False, Output("", f"journalctl: failed, token={ADMIN_TOKEN}")
        return True, Output(self.answer(text))

    def log_styled(self, message: str, **kwargs: Any) -> None:
        self.logged.append(message)


@dataclass
class FakeState:
    print_input: bool = True
    print_output: bool = True


@pytest.fixture
def fake_host(secrets_: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHost]:
    monkeypatch.setattr(bundle, "connector_arguments", lambda target: {"_sudo": True})
    yield FakeHost(secrets_)


def bundle_files(support: Path) -> dict[str, Path]:
    (directory,) = support.iterdir()
    return {path.name: path for path in directory.iterdir()}


def test_a_bundle_from_a_leaky_host_holds_no_secret(
    fake_host: FakeHost,
    settings: Settings,
    runbook: RunbookSettings,
    secrets_: dict[str, bytes],
) -> None:
    assert bundle._collect(FakeState(), fake_host, settings, runbook) is True
    support = Path(runbook.support_dir)
    files = bundle_files(support)
    assert sorted(files) == sorted([*FILES, MANIFEST])
    for name, path in files.items():
        text = path.read_text()
        assert leaks(text, secrets_) == [], name
        assert not [s for s in CONFIG_SECRETS if s in text], name
        assert ADMIN_TOKEN not in text
    # the logs were collected (only their secrets are gone)
    assert "server push line one" in files["mattermost.log"].read_text()
    assert "notifications Notification sent" in files["notifications.log"].read_text()
    assert "journal push line one" in files["push-proxy.journal"].read_text()
    assert "/api/v1/send_push?token=********" in files["nginx-access-push.log"].read_text()
    (line,) = fake_host.logged
    match = re.fullmatch(r"support bundle: (\S+) \(9 files, (\d+) secrets redacted\)", line)
    assert match and Path(match.group(1)).parent == support, line
    manifest = files[MANIFEST].read_text()
    assert f"secrets redacted: {match.group(2)} occurrences" in manifest
    assert int(match.group(2)) > 6 * len(secrets_)


def test_every_read_is_sudo_and_its_output_never_printed(
    fake_host: FakeHost, settings: Settings, runbook: RunbookSettings
) -> None:
    bundle._collect(FakeState(print_output=True), fake_host, settings, runbook)
    assert len(fake_host.calls) >= 12
    for call in fake_host.calls:
        assert call["print_output"] is False, call["command"][:60]
        assert call["_sudo"] is True
        assert ADMIN_TOKEN not in call["command"] and TSIG_SECRET not in call["command"]


def test_push_settings_are_the_push_settings_only(
    fake_host: FakeHost, settings: Settings, runbook: RunbookSettings
) -> None:
    bundle._collect(FakeState(), fake_host, settings, runbook)
    document = json.loads(bundle_files(Path(runbook.support_dir))["push-settings.json"].read_text())
    assert document == {
        "read_from": "/opt/mattermost/config/config.json",
        "settings": {
            "EmailSettings.SendPushNotifications": True,
            "EmailSettings.PushNotificationServer": "https://push.example.com",
            "EmailSettings.PushNotificationContents": "generic",
            "LogSettings.FileLevel": "DEBUG",
            "LogSettings.ConsoleLevel": "INFO",
            "NotificationLogSettings.FileLevel": "DEBUG",
        },
        "log_files": {
            "mattermost.log": "/srv/mattermost/logs/srv/mattermost.log",
            "notifications.log": "/srv/mattermost/logs/notifications.log",
        },
    }


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (("mattermost",), ["push-settings.json", "notifications.log", "mattermost.log"]),
        (
            ("push_proxies",),
            ["push-proxy.journal", "nginx-error.log", "nginx-access-push.log", "certificates.txt"],
        ),
        (("outbound_proxies",), ["nginx-error.log", "nginx-access-push.log", "certificates.txt"]),
        ((), []),
    ],
)
def test_the_files_follow_the_host_groups(
    fake_host: FakeHost,
    host_data: dict[str, Any],
    runbook: RunbookSettings,
    groups: tuple[str, ...],
    expected: list[str],
) -> None:
    data = {**host_data, "push_mode": "hpns"} if groups == ("outbound_proxies",) else host_data
    if groups == ("outbound_proxies",):
        data = {**data, "outbound_proxy_name": "push.example.com"}
    settings = settings_from_data(HOST, groups, data)
    assert bundle._collect(FakeState(), fake_host, settings, runbook) is True
    files = bundle_files(Path(runbook.support_dir))
    assert sorted(files) == sorted([*expected, "versions.txt", MANIFEST])
    versions = files["versions.txt"].read_text()
    assert "ii  nginx" in versions
    commands = " ".join(call["command"] for call in fake_host.calls)
    assert ('/bin/mattermost"' in commands) == ("mattermost" in groups)
    assert ("-version" in commands) == ("push_proxies" in groups)


def test_a_failing_read_names_host_and_item_redacted_and_writes_nothing(
    fake_host: FakeHost, settings: Settings, runbook: RunbookSettings
) -> None:
    fake_host.fail = "journalctl"
    assert bundle._collect(FakeState(), fake_host, settings, runbook) is False
    (message,) = fake_host.logged
    assert message.startswith("support bundle: the push proxy's journal failed on " + HOST)
    assert ADMIN_TOKEN not in message and "token=********" in message
    assert not Path(runbook.support_dir).exists()


def test_a_read_error_is_redacted_at_the_source(
    fake_host: FakeHost, secrets_: dict[str, bytes]
) -> None:
    fake_host.fail = "journalctl"
    run = bundle._runner(FakeState(), fake_host, Redactor(secrets_.values()))
    with pytest.raises(BundleError) as caught:
        run(bundle.read_command(bundle.journal_body("x")), "the journal")
    assert str(caught.value) == f"the journal failed on {HOST}: journalctl: failed, token=********"


# --- the writer ----------------------------------------------------------------------------------


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_the_bundle_is_private_and_its_manifest_lists_every_file(
    tmp_path: Path, secrets_: dict[str, bytes], wide_umask: None
) -> None:
    redactor = Redactor(secrets_.values())
    contents = {
        "mattermost.log": "push " + secrets_["admin_token"].decode() + "\n",
        "versions.txt": "ii nginx 1\n",
        "certificates.txt": "",
    }
    when = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    directory = bundle.bundle_directory(tmp_path / "support", "deploy@mm1", when)
    assert directory.name == "deploy_mm1-20250304T050607Z"
    written = write_bundle(directory, contents, redactor, {"host": "deploy@mm1"})
    assert written.directory == directory and written.redacted == 1
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted(["mattermost.log", "versions.txt", "certificates.txt", MANIFEST])
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    manifest = (directory / MANIFEST).read_text()
    assert "host: deploy@mm1" in manifest
    assert "secrets redacted: 1 occurrences" in manifest
    for name in ("mattermost.log", "versions.txt", "certificates.txt"):
        size = (directory / name).stat().st_size
        assert re.search(rf"^  {re.escape(name)} +{size} bytes$", manifest, re.M), manifest
    assert written.files[MANIFEST] == (directory / MANIFEST).stat().st_size
    assert (directory / "mattermost.log").read_text() == f"push {REDACTED}\n"


def test_no_secret_byte_reaches_any_file(tmp_path: Path, secrets_: dict[str, bytes]) -> None:
    redactor = Redactor(secrets_.values())
    leaky = "\n".join(
        f"{name}: {secret.decode()} | {base64.b64encode(secret).decode()} | "
        f"{json.dumps(secret.decode())}"
        for name, secret in secrets_.items()
    )
    contents = dict.fromkeys(FILES, leaky)
    written = write_bundle(tmp_path / "b", contents, redactor)
    assert len(written.files) == len(FILES) + 1
    for path in written.directory.iterdir():
        data = path.read_bytes()
        assert leaks(data.decode(), secrets_) == [], path.name
        for secret in secrets_.values():
            assert base64.b64encode(secret) not in data, path.name


def test_two_bundles_in_one_second_do_not_collide(tmp_path: Path) -> None:
    first = write_bundle(tmp_path / "mm1-x", {"versions.txt": "a"}, Redactor([]))
    second = write_bundle(tmp_path / "mm1-x", {"versions.txt": "b"}, Redactor([]))
    assert (first.directory.name, second.directory.name) == ("mm1-x", "mm1-x-2")


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[Path] = []
    real = bundle._write_private

    def full_disk(path: Path, data: bytes) -> None:
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        real(path, data)

    monkeypatch.setattr(bundle, "_write_private", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_bundle(tmp_path / "b", {"versions.txt": "a", "mattermost.log": "b"}, Redactor([]))
    assert list(tmp_path.iterdir()) == []


def test_only_bundle_files_are_written(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"config\.json"):
        write_bundle(tmp_path / "b", {"config.json": "{}"}, Redactor([]))


# --- the operation, through the real pyinfra CLI on @local ------------------------------------

DEPLOY = """
import json, os
from pyinfra import host
from mmpush.runbooks.bundle import collect_support_bundle
from mmpush.settings import runbook_settings_from_data, settings_from_data

data = json.loads(os.environ["MMPUSH_UNIT_BUNDLE_DATA"])
collect_support_bundle(
    name="Support bundle",
    settings=settings_from_data(host.name, (), data),
    runbook=runbook_settings_from_data(host.name, (), data),
)
"""


def run_pyinfra(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    deploy = tmp_path / "deploy.py"
    deploy.write_text(DEPLOY)
    data = {
        **DEFAULTS,
        "push_mode": "off",
        "mattermost_admin_token": "env:MMPUSH_UNIT_ADMIN_TOKEN",
        "runbook_support_dir": str(tmp_path / "support"),
    }
    env = {
        **os.environ,
        "MMPUSH_UNIT_BUNDLE_DATA": json.dumps(data),
        "MMPUSH_UNIT_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    pyinfra = Path(sys.executable).parent / "pyinfra"
    return subprocess.run(
        [str(pyinfra), *args, "@local", str(deploy)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_says_where_and_collects_nothing(tmp_path: Path) -> None:
    result = run_pyinfra(tmp_path, "--dry")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    assert f"would collect a support bundle into {tmp_path}/support/" in output
    assert "support bundle: " not in output
    assert not (tmp_path / "support").exists()


def test_a_real_run_writes_the_bundle_and_prints_no_secret(tmp_path: Path) -> None:
    result = run_pyinfra(tmp_path, "-y", "-vvv")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    match = re.search(r"support bundle: (\S+) \((\d+) files, 0 secrets redacted\)", output)
    assert match, output[-3000:]
    directory = Path(match.group(1))
    assert re.fullmatch(r"_local-\d{8}T\d{6}Z", directory.name), directory.name
    assert sorted(p.name for p in directory.iterdir()) == ["MANIFEST.txt", "versions.txt"]
    assert "kernel: " in (directory / "versions.txt").read_text()
    assert ADMIN_TOKEN not in output


def test_users_message_text_is_left_out_of_the_bundle() -> None:
    line = (
        "[2026-11-25 10:00:00.000 Z] [debug] Sending push notification to 1a2b wi msg of "
        "'alice: the launch code is 0000' caller=app/notification_push.go"
    )
    redacted = Redactor([]).redact(line)
    assert "launch code" not in redacted
    assert "Sending push notification to 1a2b wi msg of '<message text removed>'" in redacted
    assert redacted.endswith("caller=app/notification_push.go")


def test_message_text_is_left_out_of_json_lines_too() -> None:
    line = (
        '{"level":"debug","msg":"Sending push notification to 1a2b wi msg of \'it\'s secret\'",'
        '"caller":"app/notification_push.go"}'
    )
    redacted = Redactor([]).redact(line)
    assert "secret'" not in redacted and "<message text removed>'\"," in redacted
