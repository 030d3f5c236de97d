"""The push-debug runbook's support bundle on the lab, run as a user runs it:

    pyinfra -y -vvv --debug inventories/lab.py deploys/runbooks/push_debug.py \\
        --data runbook_collect=true --data runbook_support_dir=<dir> \\
        --data mattermost_admin_token=env:MMPUSH_TEST_TOKEN --data mattermost_api_url=...

after an EAS deploy and two DMs (one delivered to an iPhone, one refused for an Android
token FCM does not know), with secrets planted in the logs it reads: the admin token on mm1
and push1, a line of the APNs key on push1. Each bundle holds the push evidence of its host,
is private (0700/0600), and holds no byte of the lab's push credentials or of the admin token;
neither does pyinfra's output at -vvv --debug."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mmpush.lab.inventory import lab_group
from mmpush.mmapi import MattermostClient
from tests.lab.helpers import BIN, REPO, SshRunner, apple_device, pushes, send_dm

pytestmark = pytest.mark.lab

REDACTED = "********"
MM_LOG = "/opt/mattermost/logs/mattermost.log"
NOTIFICATIONS_LOG = "/opt/mattermost/logs/notifications.log"
NGINX_ERROR_LOG = "/var/log/nginx/error.log"
BUNDLE_NAME = r"{host}-\d{{8}}T\d{{6}}Z(-\d+)?"
MM1_FILES = {
    "push-settings.json",
    "notifications.log",
    "mattermost.log",
    "versions.txt",
    "MANIFEST.txt",
}
PUSH1_FILES = {
    "push-proxy.journal",
    "nginx-error.log",
    "nginx-access-push.log",
    "certificates.txt",
    "versions.txt",
    "MANIFEST.txt",
}


def ip_of(state: dict[str, Any], name: str) -> str:
    return next(h["ip"] for h in state["hosts"] if h["name"] == name)


def credential_files() -> dict[str, bytes]:
    """The lab's push credentials, as the lab inventory's group data names them (the push
    proxy's apps, and the TSIG secret of DNS-01): file name -> content."""
    data = dict(lab_group("push_proxies"))["push1"]
    paths = []
    for entry in data.get("push_proxy_apple") or []:
        paths += [
            entry.get(key)
            for key in ("auth_key_file", "certificate_file", "certificate_password_file")
        ]
    for entry in data.get("push_proxy_android") or []:
        paths.append(entry.get("service_account_file"))
    paths.append(data.get("acme_dns_tsig_secret"))
    found = {str(path): Path(path).read_bytes() for path in paths if path}
    assert any(name.endswith(".json") for name in found), found.keys()
    return found


def key_lines(content: bytes) -> list[str]:
    """The lines (over 16 characters) of the PEM private key in a credential: the file's own
    lines, or those of a JSON document's ``private_key``."""
    text = content.decode()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    keys = [text]
    if isinstance(document, dict):
        keys = [str(document.get("private_key", ""))]
    lines = []
    for key in keys:
        if "PRIVATE KEY" not in key:
            continue
        for line in key.splitlines():
            line = line.strip()
            if len(line) > 16 and not line.startswith("-----"):
                lines.append(line)
    return lines


def forbidden(credentials: dict[str, bytes], token: str) -> dict[str, str]:
    """Every string that must not be in a bundle or in pyinfra's output: what -> its name."""
    pieces = {token: "the admin token"}
    for name, content in credentials.items():
        pieces[content.decode().strip()] = f"{name} (whole)"
        for number, line in enumerate(key_lines(content)):
            pieces[line] = f"{name} (key line {number})"
    return pieces


def leaks(text: str, pieces: dict[str, str]) -> list[str]:
    return [what for piece, what in pieces.items() if piece in text]


def admin_token(state: dict[str, Any]) -> str:
    """A system admin's personal access token on mm1 (tokens enabled first)."""
    client = MattermostClient(f"http://{ip_of(state, 'mm1')}:8065")
    session, _ = client.login("sysadmin")
    client.patch_config(session, {"ServiceSettings": {"EnableUserAccessTokens": True}})
    return str(client.create_access_token(session, "mmpush support bundle test")["token"])


def run_push_debug(support: Path, token: str, mm1_ip: str) -> subprocess.CompletedProcess[str]:
    """The runbook with a support bundle, at -vvv --debug, the admin token in the environment
    only (helpers.pyinfra takes no environment)."""
    data = (
        "runbook_collect=true",
        f"runbook_support_dir={support}",
        "mattermost_admin_token=env:MMPUSH_TEST_TOKEN",
        f"mattermost_api_url=http://{mm1_ip}:8065",
    )
    args = [str(BIN / "pyinfra"), "-y", "-vvv", "--debug"]
    for item in data:
        args += ["--data", item]
    args += ["inventories/lab.py", "deploys/runbooks/push_debug.py"]
    return subprocess.run(
        args,
        cwd=REPO,
        env={**os.environ, "MMPUSH_TEST_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def collected(
    eas_site: dict[str, Any], on: SshRunner, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """EAS deployed, pushes in the logs, secrets planted, then the runbook with a bundle."""
    state = eas_site["state"]
    assert eas_site["first"].returncode == 0, eas_site["first"].stderr[-3000:]
    token = admin_token(state)
    credentials = credential_files()
    apns_key = next(c for name, c in credentials.items() if name.endswith(".p8"))
    marker = f"mmpush-bundle-test-{secrets.token_hex(4)}"
    # a careless program logging secrets where the bundle reads
    on("mm1", f"cat >> {MM_LOG}", input=f"{marker} push debug: token {token}\n")
    planted = f"{marker} debug: token {token} key {key_lines(apns_key)[0]}\n"
    on("push1", f"cat >> {NGINX_ERROR_LOG}", input=planted)
    # a push delivered to an iPhone, and one refused (a token FCM does not know)
    iphone = apple_device()
    delivered = send_dm(state, "support bundle test", iphone)
    assert pushes(delivered["id"], iphone), "the iPhone push was not delivered"
    unknown = f"bundle{secrets.token_hex(6)}"
    send_dm(state, "support bundle test, android", f"android_rn-v2:{unknown}")
    on(
        "mm1",
        f"for i in $(seq 60); do grep -qF {unknown} {NOTIFICATIONS_LOG} && exit 0; sleep 0.5; "
        "done; exit 1",
    )
    support = tmp_path_factory.mktemp("support")
    result = run_push_debug(support, token, ip_of(state, "mm1"))
    return {
        "result": result,
        "support": support,
        "token": token,
        "credentials": credentials,
        "marker": marker,
        "post_id": delivered["id"],
        "unknown_device": unknown,
    }


def bundle_of(collected: dict[str, Any], host: str) -> Path:
    """The one bundle directory of ``host``."""
    support: Path = collected["support"]
    found = [p for p in support.iterdir() if re.fullmatch(BUNDLE_NAME.format(host=host), p.name)]
    assert len(found) == 1, sorted(p.name for p in support.iterdir())
    return found[0]


def read(directory: Path, name: str) -> str:
    text = (directory / name).read_text()
    assert text.strip(), f"{directory.name}/{name} is empty"
    return text


def test_the_runbook_succeeds_and_logs_each_bundle(collected: dict[str, Any]) -> None:
    result = collected["result"]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for host in ("mm1", "push1"):
        directory = bundle_of(collected, host)
        line = rf"\[{host}\]\s+support bundle: {re.escape(str(directory))} \(\d+ files, \d+ secrets"
        assert re.search(line, output), f"no bundle line for {host}"


def test_mm1_has_the_push_lines_and_settings(collected: dict[str, Any]) -> None:
    directory = bundle_of(collected, "mm1")
    assert {p.name for p in directory.iterdir()} == MM1_FILES
    server = read(directory, "mattermost.log")
    assert all(re.search("push|Notification", line, re.I) for line in server.splitlines())
    assert "Push notification settings" in server  # logged at every start
    planted = [line for line in server.splitlines() if collected["marker"] in line]
    assert planted == [f"{collected['marker']} push debug: token {REDACTED}"], planted
    notifications = read(directory, "notifications.log")
    refused = [line for line in notifications.splitlines() if collected["unknown_device"] in line]
    assert refused and "Failed to send to push proxy" in refused[-1], notifications[-2000:]
    settings = json.loads(read(directory, "push-settings.json"))
    assert settings["settings"]["EmailSettings.SendPushNotifications"] is True
    assert settings["settings"]["EmailSettings.PushNotificationServer"] == "https://push.lab.test"
    assert "LogSettings.FileLevel" in settings["settings"]
    assert settings["read_from"] == "/opt/mattermost/config/config.json"
    assert settings["log_files"] == {
        "mattermost.log": MM_LOG,
        "notifications.log": NOTIFICATIONS_LOG,
    }
    assert "DataSource" not in json.dumps(settings) and "SqlSettings" not in json.dumps(settings)
    versions = read(directory, "versions.txt")
    assert re.search(r"^mattermost: \d+\.\d+", versions, re.M), versions
    assert "packages (dpkg-query):" in versions and "kernel: " in versions
    assert re.search(r"^debian: 12", versions, re.M), versions


def test_push1_has_the_journal_nginx_lines_and_certificate(collected: dict[str, Any]) -> None:
    directory = bundle_of(collected, "push1")
    assert {p.name for p in directory.iterdir()} == PUSH1_FILES
    assert collected["post_id"] in read(directory, "push-proxy.journal")
    access = read(directory, "nginx-access-push.log")
    assert '"POST /api/v1/send_push' in access
    assert all(
        re.search(r'"[A-Z]+ (/api/v1/send_push|/api/v1/ack|/version)', line)
        for line in access.splitlines()
    ), access[-2000:]
    errors = read(directory, "nginx-error.log")
    planted = [line for line in errors.splitlines() if collected["marker"] in line]
    assert planted == [f"{collected['marker']} debug: token {REDACTED} key {REDACTED}"], planted
    certificates = read(directory, "certificates.txt")
    assert "/etc/mmpush/tls/push.lab.test/fullchain.pem" in certificates
    assert re.search(r"notAfter=", certificates) and "push.lab.test" in certificates
    assert "PRIVATE KEY" not in certificates
    versions = read(directory, "versions.txt")
    assert "push proxy release: /opt/mattermost-push-proxy/releases/" in versions
    assert re.search(r"^ii +nginx ", versions, re.M), versions


def test_bundles_are_private_and_listed_in_their_manifest(collected: dict[str, Any]) -> None:
    support: Path = collected["support"]
    bundles = list(support.iterdir())
    assert len(bundles) >= 2
    for directory in bundles:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        manifest = (directory / "MANIFEST.txt").read_text()
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            if path.name != "MANIFEST.txt":
                assert f"  {path.name}" in manifest and f"{path.stat().st_size} bytes" in manifest
    for host in ("mm1", "push1"):
        manifest = (bundle_of(collected, host) / "MANIFEST.txt").read_text()
        count = re.search(r"^secrets redacted: (\d+) occurrences$", manifest, re.M)
        assert count and int(count.group(1)) >= 1, manifest  # the planted ones at least


def test_no_secret_is_in_any_bundle(collected: dict[str, Any]) -> None:
    pieces = forbidden(collected["credentials"], collected["token"])
    assert len(pieces) > 4, "the lab's credentials were not found"
    for directory in collected["support"].iterdir():
        for path in directory.iterdir():
            text = path.read_bytes().decode("utf-8", "replace")
            assert leaks(text, pieces) == [], f"{directory.name}/{path.name}"


def test_no_secret_is_in_pyinfra_output_at_any_verbosity(collected: dict[str, Any]) -> None:
    result = collected["result"]
    assert ">>> " in result.stderr + result.stdout, "not run at -vvv"
    pieces = forbidden(collected["credentials"], collected["token"])
    assert leaks(result.stdout, pieces) == []
    assert leaks(result.stderr, pieces) == []
