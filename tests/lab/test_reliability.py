"""Nothing lost, nothing leaked, nothing broken deployed: faults and hostile input on a real
EAS site (full disks, read-only and symlinked config files, overrides hidden in the service
manager, secrets at every verbosity), with the real `pyinfra` command.

Each case is listed, with what happens, in docs/reliability.md."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.helpers import REPO, SshRunner, deploy, grand_total, lab_skips, verify

pytestmark = pytest.mark.lab

CONFIG = "/opt/mattermost/config/config.json"
SITE = "/etc/nginx/conf.d/mmpush-push-front.conf"
PUSH_NAME = "push.lab.test"


@pytest.fixture(scope="module")
def site(eas_site: dict[str, Any]) -> dict[str, Any]:
    return eas_site


def sha(on: SshRunner, host: str, path: str) -> str:
    return on(host, f"sha256sum {path}").stdout.split()[0]


def refused(result: subprocess.CompletedProcess[str], *texts: str) -> str:
    """The run failed, saying each of ``texts``; its output."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for text in texts:
        assert text in output, (text, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    return output


def refused_before_any_change(result: subprocess.CompletedProcess[str], *texts: str) -> None:
    assert "Starting operation" not in refused(result, *texts), "no operation may run"


def serves_push_version(on: SshRunner) -> None:
    version = on("mm1", f"curl -sf https://{PUSH_NAME}/version").stdout
    assert json.loads(version)["version"] == "6.5.0"


# --- full disks ------------------------------------------------------------------------------

#: About 16 KB of NGINX comments for the push front (a site of realistic size).
BIG_EXTRA = "\n".join(f"# padding line {n:04d} " + "x" * 100 for n in range(140))


@pytest.fixture
def big_front(site: dict[str, Any], on: SshRunner) -> Iterator[None]:
    result = deploy("deploys/eas.py", f"push_front_extra_config={BIG_EXTRA}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(on("push1", f"stat -c %s {SITE}").stdout) > 15_000
    yield
    on("push1", "umount /var/lib/mmpush/backup /var/lib/mmpush/staging 2>/dev/null; true")
    assert deploy("deploys/eas.py").returncode == 0


def fill_up(on: SshRunner, directory: str) -> None:
    """Put ``directory`` on push1 on a disk with room for 8 KB (the site needs 16)."""
    on("push1", f"mkdir -p {directory} && mount -t tmpfs -o size=8k tmpfs {directory}")


def test_a_full_disk_while_saving_the_nginx_config_changes_nothing(
    big_front: None, on: SshRunner
) -> None:
    before = sha(on, "push1", SITE)
    fill_up(on, "/var/lib/mmpush/backup")
    try:
        failing = f"push_front_extra_config={BIG_EXTRA}\nno_such_directive on;"
        output = refused(deploy("deploys/eas.py", failing), "could not save a verified copy")
        assert "nothing was changed" in output and "rolled back" not in output
    finally:
        on("push1", "umount /var/lib/mmpush/backup")
    assert sha(on, "push1", SITE) == before
    assert on("push1", "nginx -t -q && echo ok").stdout.strip() == "ok"
    # what was lost before: NGINX must still start from what is on disk
    on("push1", "systemctl restart nginx && systemctl is-active nginx")
    serves_push_version(on)


def test_a_full_disk_while_uploading_the_nginx_config_changes_nothing(
    big_front: None, on: SshRunner
) -> None:
    before = sha(on, "push1", SITE)
    fill_up(on, "/var/lib/mmpush/staging")
    try:
        changed = f"push_front_extra_config={BIG_EXTRA}\n# changed"
        refused(deploy("deploys/eas.py", changed), "disk full?")
        assert on("push1", "ls -A /var/lib/mmpush/staging").stdout.strip() == ""
    finally:
        on("push1", "umount /var/lib/mmpush/staging")
    assert sha(on, "push1", SITE) == before
    assert on("push1", "ls /tmp | grep -c mmpush- || true").stdout.strip() == "0"
    serves_push_version(on)


@pytest.fixture
def small_config_disk(site: dict[str, Any], on: SshRunner) -> Iterator[None]:
    """config.json on a tmpfs with room for one more copy of it, not two."""
    on(
        "mm1",
        "cp -a /opt/mattermost/config /root/config.saved && "
        "mount -t tmpfs -o size=48k,mode=755 tmpfs /opt/mattermost/config && "
        "cp -a /root/config.saved/config.json /opt/mattermost/config/ && "
        "chown mattermost:mattermost /opt/mattermost/config",
    )
    yield
    on("mm1", "umount /opt/mattermost/config && rm -rf /root/config.saved")


def test_a_full_disk_while_writing_config_json_changes_nothing(
    small_config_disk: None, on: SshRunner
) -> None:
    before = on("mm1", f"stat -c '%a %U %s' {CONFIG} && sha256sum {CONFIG}").stdout
    refused(deploy("deploys/eas.py", "push_contents=full"), CONFIG, "was not changed")
    assert on("mm1", f"stat -c '%a %U %s' {CONFIG} && sha256sum {CONFIG}").stdout == before
    assert on("mm1", "ls -A /opt/mattermost/config").stdout.split() == ["config.json"]


# --- config files that are not plain files -------------------------------------------------


def test_a_read_only_config_json_is_refused_naming_the_file_and_why(
    site: dict[str, Any], on: SshRunner
) -> None:
    before = sha(on, "mm1", CONFIG)
    on(
        "mm1",
        "mount --bind /opt/mattermost/config /opt/mattermost/config && "
        "mount -o remount,bind,ro /opt/mattermost/config",
    )
    try:
        result = deploy("deploys/eas.py", "push_contents=full")
        refused_before_any_change(result, CONFIG, "read-only", "nothing was changed")
    finally:
        on("mm1", "umount /opt/mattermost/config")
    assert sha(on, "mm1", CONFIG) == before


def test_a_symlinked_config_json_is_edited_at_its_target(
    site: dict[str, Any], on: SshRunner
) -> None:
    real = "/etc/mattermost-config/config.json"
    on("mm1", f"mkdir -p /etc/mattermost-config && mv {CONFIG} {real} && ln -s {real} {CONFIG}")
    try:
        result = deploy("deploys/eas.py", "push_contents=full")
        assert result.returncode == 0, result.stderr[-2000:]
        assert on("mm1", f"readlink {CONFIG}").stdout.strip() == real
        settings = json.loads(on("mm1", f"cat {real}").stdout)["EmailSettings"]
        assert settings["PushNotificationContents"] == "full"
        backups = on("mm1", "ls /etc/mattermost-config").stdout.split()
        assert any(name.startswith("config.json.bak.") for name in backups), backups
        assert on("mm1", "systemctl is-active mattermost").stdout.strip() == "active"
    finally:
        on("mm1", f"rm -f {CONFIG} && mv {real} {CONFIG}")
        assert deploy("deploys/eas.py").returncode == 0


def test_a_missing_mattermost_unit_is_refused_before_any_change(
    site: dict[str, Any], on: SshRunner
) -> None:
    before = sha(on, "mm1", CONFIG)
    result = deploy("deploys/eas.py", "push_contents=full", "mattermost_service=mattermost-nope")
    refused_before_any_change(result, "mattermost-nope", "no such unit")
    assert sha(on, "mm1", CONFIG) == before


# --- overrides -----------------------------------------------------------------------------


def test_an_override_in_the_service_managers_environment_stops_the_run(
    site: dict[str, Any], on: SshRunner
) -> None:
    variable = "MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER"
    before = sha(on, "mm1", CONFIG)
    on("mm1", f"systemctl stop mattermost && systemctl set-environment {variable}=https://x.test")
    try:
        result = deploy("deploys/eas.py", "push_contents=full")
        refused_before_any_change(result, variable, "set-environment", "nothing was changed")
        assert sha(on, "mm1", CONFIG) == before
        accepted = deploy(
            "deploys/eas.py", "push_contents=full", "mattermost_accept_env_overrides=true"
        )
        assert accepted.returncode == 0, accepted.stderr[-2000:]
        assert "accepted" in accepted.stdout + accepted.stderr
    finally:
        on("mm1", f"systemctl unset-environment {variable} && systemctl restart mattermost")
        assert deploy("deploys/eas.py").returncode == 0


# --- names this host does not serve -----------------------------------------------------------


def _status_for_host_header(state: dict[str, Any], host_header: str) -> int:
    """HTTP status of GET /version on push1:443 with SNI push.lab.test and ``host_header``."""
    push1 = next(h["ip"] for h in state["hosts"] if h["name"] == "push1")
    context = ssl.create_default_context(cafile=state["acme"]["ca_bundle"])
    with (
        socket.create_connection((push1, 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=PUSH_NAME) as tls,
    ):
        request = f"GET /version HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        head = tls.recv(200).decode(errors="replace")
    return int(head.split()[1])


def test_a_request_for_another_name_is_misdirected_not_answered(site: dict[str, Any]) -> None:
    assert _status_for_host_header(site["state"], PUSH_NAME) == 200
    assert _status_for_host_header(site["state"], "evil.example") == 421
    assert _status_for_host_header(site["state"], "localhost") == 421


# --- secrets at every verbosity -----------------------------------------------------------------

#: Made up at every run (so the working tree cannot hold them by accident).
MARKERS = {
    place: f"MMPUSHLEAK{place.upper()}{secrets.token_hex(6)}"
    for place in ("fcm", "dropin", "envfile", "sql")
}


def encodings(marker: str) -> list[str]:
    """``marker`` as it could appear encoded: itself, hex, and base64 at every alignment."""
    forms = [marker, marker.encode().hex(), marker.encode().hex().upper()]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + marker.encode()).decode()
        # the characters that do not depend on the neighbouring bytes
        start = {0: 0, 1: 4, 2: 4}[pad]
        forms.append(encoded[start : start + 12])
    return forms


def leaks(text: str, hidden: list[str]) -> list[str]:
    return [form for secret in hidden for form in encodings(secret) if form in text]


@pytest.fixture
def planted(site: dict[str, Any], on: SshRunner, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Marker secrets in the push credentials, a Mattermost Environment= drop-in, an
    EnvironmentFile and config.json's SqlSettings; removed afterwards."""
    fixtures = site["state"]["fixtures"]
    account = json.loads(Path(fixtures["fcm_service_account"]).read_text())
    account["private_key_id"] = MARKERS["fcm"]
    fcm = tmp_path / "fcm.json"
    fcm.write_text(json.dumps(account))
    apns_body = Path(fixtures["apns_key"]).read_text().splitlines()[1]
    on("mm1", f"cp -p {CONFIG} /root/config.json.before-secrets")
    config = json.loads(on("mm1", f"cat {CONFIG}").stdout)
    config.setdefault("SqlSettings", {})["DataSource"] = (
        f"postgres://mmuser:{MARKERS['sql']}@localhost/mattermost?sslmode=disable"
    )
    config["SqlSettings"]["AtRestEncryptKey"] = MARKERS["sql"] + "rest"
    on("mm1", f"cat > {CONFIG}", input=json.dumps(config, indent=4))
    dropin = "/etc/systemd/system/mattermost.service.d/mmpush-test-secrets.conf"
    # planted through stdin: a secret on a command line would be logged by sudo
    on(
        "mm1",
        f"mkdir -p $(dirname {dropin}) && cat > {dropin}",
        input=(
            "[Service]\n"
            f"Environment=MM_SQLSETTINGS_DATASOURCE=postgres://u:{MARKERS['dropin']}@db/mm\n"
            "EnvironmentFile=-/etc/default/mmpush-test-secrets\n"
        ),
    )
    on(
        "mm1",
        "cat > /etc/default/mmpush-test-secrets",
        input=f"MM_SQLSETTINGS_ATRESTENCRYPTKEY={MARKERS['envfile']}\n",
    )
    on("mm1", "systemctl daemon-reload && systemctl restart mattermost")
    # the private scalar's first bytes: the first 40 characters are the DER header every
    # P-256 PKCS#8 key shares (MIGHAgEAMBMG...), no secret
    yield {"fcm": fcm, "secrets": [*MARKERS.values(), apns_body[40:]]}
    on(
        "mm1",
        f"rm -f {dropin} /etc/default/mmpush-test-secrets && systemctl daemon-reload && "
        f"cp -p /root/config.json.before-secrets {CONFIG} && systemctl restart mattermost",
    )
    assert deploy("deploys/eas.py").returncode == 0


def test_no_secret_appears_in_any_output_journal_or_file_at_any_verbosity(
    planted: dict[str, Any], on: SshRunner, site: dict[str, Any]
) -> None:
    android = json.dumps([{"type": "android_rn", "service_account_file": str(planted["fcm"])}])
    runs = [
        ("deploys/eas.py", (f"push_proxy_android={android}",)),
        ("deploys/eas.py", (f"push_proxy_android={android}", "push_contents=full")),
        ("deploys/certs.py", ("acme_renew_days=91",)),
        ("deploys/hpns.py", ("push_mode=hpns",)),
        ("deploys/outbound_proxy.py", ("push_mode=hpns",)),
        ("deploys/tpns.py", ("push_mode=tpns",)),
        ("deploys/off.py", ("push_mode=off",)),
    ]
    for deploy_file, data in runs:
        result = deploy(deploy_file, *data, extra=("-vvv", "--debug"))
        output = result.stdout + result.stderr
        assert result.returncode == 0, (deploy_file, output[-3000:])
        assert "-->" in output and "Connected" in output, "the run was verbose"
        assert leaks(output, planted["secrets"]) == [], deploy_file
    for host in ("mm1", "push1", "proxy1"):
        journal = on(host, "journalctl --no-pager -o cat").stdout
        assert leaks(journal, planted["secrets"]) == [], host
        tmp = on(host, "ls -A /tmp /var/tmp").stdout
        assert "mmpush-" not in tmp, (host, tmp)
    for path in REPO.rglob("*"):
        if path.is_file() and not {".git", ".venv"} & set(path.relative_to(REPO).parts):
            text = path.read_bytes().decode(errors="replace")
            assert leaks(text, planted["secrets"]) == [], path


def test_secret_files_and_backups_on_the_hosts_are_private(
    site: dict[str, Any], on: SshRunner
) -> None:
    modes = on("mm1", f"stat -c '%a %n' {CONFIG} {CONFIG}.bak.*").stdout.splitlines()
    assert modes and all(line.split()[0] == "600" for line in modes), modes
    private = on(
        "push1",
        "stat -c '%a %U %n' /etc/mattermost-push-proxy/credentials/* "
        "/etc/mattermost-push-proxy/mattermost-push-proxy.json /etc/mmpush/tls/*/privkey.pem",
    ).stdout.splitlines()
    assert all(line.split()[0] == "600" for line in private), private


# --- NGINX static analysis -----------------------------------------------------------------------

RELIABILITY_DOC = REPO / "docs" / "reliability.md"


def justified_gixy_findings() -> set[tuple[str, str]]:
    """(check, host) pairs docs/reliability.md justifies, from its gixy table rows:
    ``| gixy | proxy_pass_normalized | proxy1 | why |``."""
    found = set()
    for line in RELIABILITY_DOC.read_text().splitlines():
        cells = [cell.strip(" `") for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] == "gixy":
            found.add((cells[1], cells[2]))
    return found


def test_gixy_finds_nothing_that_is_not_justified(site: dict[str, Any], on: SshRunner) -> None:
    hpns = deploy("deploys/outbound_proxy.py", "push_mode=hpns")
    assert hpns.returncode == 0, hpns.stderr[-2000:]
    gixy = Path(REPO / ".venv" / "bin" / "gixy")
    findings = set()
    for host in ("push1", "proxy1"):
        dump = on(host, "nginx -T 2>/dev/null").stdout
        assert "# configuration file /etc/nginx/nginx.conf:" in dump
        run = subprocess.run(
            [str(gixy), "-f", "json", "-"], input=dump, capture_output=True, text=True, timeout=120
        )
        report = json.loads(run.stdout[run.stdout.index("[") :])
        findings |= {(item["plugin"], host) for item in report}
    unjustified = findings - justified_gixy_findings()
    assert not unjustified, f"gixy findings not justified in {RELIABILITY_DOC.name}: {unjustified}"


def test_the_site_still_verifies_after_every_fault(site: dict[str, Any]) -> None:
    assert deploy("deploys/eas.py").returncode == 0
    verify().assert_passed(lab_skips("eas"))
    again = deploy("deploys/eas.py")
    assert grand_total(again)["success"] == 0
