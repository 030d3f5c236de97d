"""EAS end to end on a fresh lab, with the real `pyinfra` and `pytest tests/verify` commands:
deploy, verify, push a DM through NGINX to the push proxy, re-run with no change, --dry,
bad inputs that stop the run, certificate renewal, upgrade and rollback."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.emulators.push_proxy.build import build_release_tarball
from tests.lab.helpers import (
    SshRunner,
    android_device,
    apple_device,
    deploy,
    grand_total,
    lab_skips,
    planned_changes,
    pushes,
    send_dm,
    verify,
)

pytestmark = pytest.mark.lab

CONFIG = "/opt/mattermost/config/config.json"
PUSH_NAME = "push.lab.test"


@pytest.fixture(scope="module")
def eas(eas_site: dict[str, Any]) -> dict[str, Any]:
    """A fresh lab (other test modules changed hosts), then the first EAS deploy."""
    return eas_site


def ip_of(state: dict[str, Any], name: str) -> str:
    return next(h["ip"] for h in state["hosts"] if h["name"] == name)


def delivered(state: dict[str, Any], text: str, device: str) -> list[dict[str, Any]]:
    """Account B sends Account A ``text``; what the push proxy delivered to ``device`` (the
    APNs/FCM stand-in accepted it) for that post."""
    post = send_dm(state, text, device)
    records = pushes(post["id"], device)
    assert all(r.outcome == "delivered" for r in records), [r.line() for r in records]
    return [r.data for r in records]


def served_certificate(state: dict[str, Any]) -> x509.Certificate:
    """The certificate push1 serves for the push name, verified against the lab CA bundle."""
    context = ssl.create_default_context(cafile=state["acme"]["ca_bundle"])
    with (
        socket.create_connection((ip_of(state, "push1"), 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=PUSH_NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_first_deploy_on_a_fresh_lab_succeeds(eas: dict[str, Any]) -> None:
    totals = grand_total(eas["first"])
    assert totals["error"] == 0 and totals["success"] > 10


def test_verify_suite_passes_after_the_deploy(eas: dict[str, Any]) -> None:
    verify().assert_passed(lab_skips("eas"))


def test_second_run_reports_no_change(eas: dict[str, Any]) -> None:
    again = deploy("deploys/eas.py")
    assert again.returncode == 0, again.stderr[-2000:]
    totals = grand_total(again)
    assert totals["success"] == 0 and totals["error"] == 0, again.stdout[-3000:]


def test_dry_run_after_one_setting_change_reports_exactly_that_change(
    eas: dict[str, Any],
) -> None:
    assert planned_changes() == {}
    assert planned_changes("push_contents=full") == {
        f"Mattermost push settings | Push settings in {CONFIG}": ["mm1"],
        "Mattermost push settings | Restart mattermost (push settings changed), 1 at a time?": [
            "mm1"
        ],
        # the database-configured cluster: its one shared configuration changes (applied live,
        # no restart); each node says so
        "Mattermost push settings | Push settings through the config API (the database "
        "postgres://db1:5432/mattermost, once per cluster)": ["mm2", "mm3"],
    }


def test_a_dm_push_arrives_through_nginx_with_generic_contents_by_default(
    eas: dict[str, Any], on: SshRunner
) -> None:
    device = apple_device()
    [push] = delivered(eas["state"], "Lunch at noon?", device)
    assert push["device_id"] == device.split(":")[1]
    assert push["apns_topic"] == "com.mattermost.rnbeta"
    assert "Lunch at noon?" not in json.dumps(push), "generic contents carry no message text"
    # set by NGINX on its way through the TLS front: the Mattermost server's address
    assert push["x_forwarded_for"] == ip_of(eas["state"], "mm1")


def test_full_contents_only_when_the_setting_says_so(eas: dict[str, Any], on: SshRunner) -> None:
    try:
        result = deploy("deploys/eas.py", "push_contents=full")
        assert result.returncode == 0, result.stderr[-2000:]
        [push] = delivered(eas["state"], "Lunch at noon?", android_device(1))
        assert "Lunch at noon?" in push["message"]
        assert push["delivered_via"] == "fcm"
    finally:
        assert deploy("deploys/eas.py").returncode == 0
    [push] = delivered(eas["state"], "Back to generic", apple_device())
    assert "Back to generic" not in json.dumps(push)


def test_the_push_proxy_comes_back_after_it_is_killed(eas: dict[str, Any], on: SshRunner) -> None:
    before = on("push1", "systemctl show -p MainPID --value mattermost-push-proxy").stdout.strip()
    on("push1", f"kill -9 {before}")
    # Restart=on-failure, RestartSec=5s: back within a bounded wait, serving pushes again
    on(
        "push1",
        "for i in $(seq 60); do curl -sf --max-time 2 http://127.0.0.1:8066/version && exit 0; "
        "sleep 0.5; done; exit 1",
    )
    after = on("push1", "systemctl show -p MainPID --value mattermost-push-proxy").stdout.strip()
    assert after not in ("0", before)
    assert delivered(eas["state"], "after the crash", apple_device())


def _refused_before_any_change(result: subprocess.CompletedProcess[str], key: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in output, output[-2000:]
    assert "Starting operation" not in output, "no operation may run"
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (f"push_proxy_sha256={'0' * 64}", "push_proxy_sha256"),
        ("push_proxy_sha256=not-a-sha", "push_proxy_sha256"),
        (
            'push_proxy_android=[{"type": "android_rn", '
            '"service_account_file": "/nonexistent/fcm.json"}]',
            "push_proxy_android[0].service_account_file",
        ),
        ("push_name=https://push.lab.test", "push_name"),
        ("push_name=push_lab", "push_name"),
        ("push_contents=everything", "push_contents"),
        ("push_https_port=70000", "push_https_port"),
        ("push_mode=hpns", "push_mode"),
    ],
)
def test_bad_settings_stop_the_run_before_any_host_changes(
    eas: dict[str, Any], on: SshRunner, data: str, key: str
) -> None:
    before = on("mm1", f"sha256sum {CONFIG}").stdout
    _refused_before_any_change(deploy("deploys/eas.py", data), key)
    assert on("mm1", f"sha256sum {CONFIG}").stdout == before


def test_a_corrupt_config_json_stops_the_run_and_is_left_untouched(
    eas: dict[str, Any], on: SshRunner
) -> None:
    on("mm1", f"cp -p {CONFIG} /root/config.json.good")
    try:
        on("mm1", f"printf '{{\"EmailSettings\": {{' > {CONFIG}")
        before = on("mm1", f"sha256sum {CONFIG}").stdout
        result = deploy("deploys/eas.py", "push_contents=full")
        _refused_before_any_change(result, "not valid JSON")
        assert CONFIG in result.stdout + result.stderr
        assert on("mm1", f"sha256sum {CONFIG}").stdout == before
    finally:
        on("mm1", f"cp -p /root/config.json.good {CONFIG}")


def test_an_nginx_setting_that_fails_nginx_t_is_rolled_back_and_the_old_site_serves(
    eas: dict[str, Any], on: SshRunner
) -> None:
    site = "/etc/nginx/conf.d/mmpush-push-front.conf"
    before = on("push1", f"sha256sum {site}").stdout
    result = deploy("deploys/eas.py", "push_front_extra_config=no_such_directive on;")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'unknown directive "no_such_directive"' in output
    assert "rolled back" in output
    assert on("push1", f"sha256sum {site}").stdout == before
    assert on("push1", "nginx -t -q && echo ok").stdout.strip() == "ok"
    version = on("mm1", f"curl -sf https://{PUSH_NAME}/version").stdout
    assert json.loads(version)["version"] == "6.5.0"


def test_certs_deploy_renews_only_inside_the_window_and_keeps_the_old_cert_on_ca_failure(
    eas: dict[str, Any],
) -> None:
    state = eas["state"]
    serial = served_certificate(state).serial_number
    idle = deploy("deploys/certs.py")
    assert idle.returncode == 0 and grand_total(idle)["success"] == 0
    assert served_certificate(state).serial_number == serial

    # the CA is down while a renewal is due: the run fails, the old certificate still serves
    failed = deploy(
        "deploys/certs.py", "acme_renew_days=91", "acme_directory_url=https://127.0.0.1:1/dir"
    )
    assert failed.returncode != 0
    assert "the previous certificate (if any) is kept" in failed.stdout + failed.stderr
    assert served_certificate(state).serial_number == serial

    # inside the window (fewer than 91 days left on a 90-day certificate): renewed, reloaded
    renewed = deploy("deploys/certs.py", "acme_renew_days=91")
    assert renewed.returncode == 0, renewed.stderr[-2000:]
    assert "certificate for push.lab.test issued" in renewed.stdout + renewed.stderr
    # an NGINX reload is graceful: old workers finish, new ones take over within moments
    deadline = time.monotonic() + 10
    while (new := served_certificate(state)).serial_number == serial:
        assert time.monotonic() < deadline, "NGINX still serves the old certificate"
        time.sleep(0.5)
    assert new.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == PUSH_NAME


def test_upgrade_to_another_release_and_roll_back(
    eas: dict[str, Any], on: SshRunner, tmp_path: Path
) -> None:
    newer = build_release_tarball(tmp_path, version="6.6.0")
    sha = hashlib.sha256(newer.read_bytes()).hexdigest()
    upgrade = deploy(
        "deploys/eas.py",
        "push_proxy_version=6.6.0",
        f"push_proxy_archive={newer}",
        f"push_proxy_sha256={sha}",
    )
    assert upgrade.returncode == 0, upgrade.stderr[-2000:]
    assert json.loads(on("mm1", f"curl -sf https://{PUSH_NAME}/version").stdout)["version"] == (
        "6.6.0"
    )
    assert on("push1", "systemctl is-active mattermost-push-proxy").stdout.strip() == "active"

    rollback = deploy("deploys/eas.py")
    assert rollback.returncode == 0, rollback.stderr[-2000:]
    assert json.loads(on("mm1", f"curl -sf https://{PUSH_NAME}/version").stdout)["version"] == (
        "6.5.0"
    )
    releases = on("push1", "ls /opt/mattermost-push-proxy/releases").stdout.split()
    assert releases == ["6.5.0", "6.6.0"]
    assert delivered(eas["state"], "after rollback", apple_device())


def test_credentials_never_appear_in_output_and_land_0600(
    eas: dict[str, Any], on: SshRunner, tmp_path: Path
) -> None:
    marker = "MMPUSH-SECRET-MARKER-7f3a9c"
    account = json.loads(Path(eas["state"]["fixtures"]["fcm_service_account"]).read_text())
    account["private_key_id"] = marker
    secret = tmp_path / "fcm.json"
    secret.write_text(json.dumps(account))
    data = json.dumps([{"type": "android_rn", "service_account_file": str(secret)}])
    for extra in ((), ("--diff",), ("-vvv",)):
        result = deploy("deploys/eas.py", f"push_proxy_android={data}", extra=extra)
        assert result.returncode == 0, result.stderr[-2000:]
        assert marker not in result.stdout + result.stderr
    path = "/etc/mattermost-push-proxy/credentials/android_rn.json"
    assert on("push1", f"stat -c '%a %U' {path}").stdout.strip() == "600 mattermost-push-proxy"
    assert marker in on("push1", f"cat {path}").stdout
    assert deploy("deploys/eas.py").returncode == 0


def test_an_environment_override_that_would_win_over_config_json_stops_the_run(
    eas: dict[str, Any], on: SshRunner
) -> None:
    dropin = "/etc/systemd/system/mattermost.service.d/mmpush-test-override.conf"
    variable = "MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER"
    before = on("mm1", f"sha256sum {CONFIG}").stdout
    try:
        on(
            "mm1",
            f"mkdir -p $(dirname {dropin}) && printf '[Service]\\nEnvironment={variable}="
            f"https://elsewhere.example\\n' > {dropin} && systemctl daemon-reload",
        )
        result = deploy("deploys/eas.py", "push_contents=full")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-2000:]
        assert variable in output and "Environment=" in output
        assert "mattermost_accept_env_overrides" in output
        assert "Starting operation" not in output
        assert on("mm1", f"sha256sum {CONFIG}").stdout == before
        verified = verify()
        assert verified.returncode != 0
        assert verified.failures_naming(variable) == [
            "test_modes.py::test_no_environment_variable_overrides_the_push_settings[mm1]"
        ]
    finally:
        on("mm1", f"rm -f {dropin} && systemctl daemon-reload")
