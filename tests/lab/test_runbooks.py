"""The runbooks on the lab, in each mode, with the faults they exist for: each verdict must
name the fault (deploys/runbooks/test_push.py, deploys/runbooks/push_debug.py).

Expected verdicts are written out here from the lab's data (three Mattermost servers, the
push proxy's two app types), not computed by the runbook's code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mmpush.mmapi import MattermostClient
from tests.lab.helpers import (
    BIN,
    MATTERMOST_HOSTS,
    REPO,
    SshRunner,
    apple_device,
    deploy,
    mmpush,
    pushes,
    revoked_apple_data,
)

pytestmark = pytest.mark.lab

TEST_PUSH = "deploys/runbooks/test_push.py"
PUSH_DEBUG = "deploys/runbooks/push_debug.py"
#: The lab push proxy's app types (inventories/lab.py data: one Apple, one Android entry).
APP_TYPES = ("apple_rn", "android_rn")
CONFIG = "/opt/mattermost/config/config.json"
LICENCE = "/opt/mattermost/data/license.json"
FULLCHAIN = "/etc/mmpush/tls/push.lab.test/fullchain.pem"
HPNS = ("push_mode=hpns",)
TIMER = "mmpush-push-debug-revert.timer"


@pytest.fixture(scope="module")
def runbook_lab(lab: dict[str, Any]) -> dict[str, Any]:
    """A fresh lab with EAS deployed."""
    up = mmpush("lab", "up")
    assert up.returncode == 0, up.stderr[-3000:]
    state = json.loads(mmpush("lab", "status", "--json").stdout)
    first = deploy("deploys/eas.py")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    return state


def ip_of(state: dict[str, Any], name: str) -> str:
    return next(h["ip"] for h in state["hosts"] if h["name"] == name)


def run_runbook(
    deploy_file: str, *data: str, env: dict[str, str] | None = None, verbose: bool = False
) -> subprocess.CompletedProcess[str]:
    """``pyinfra -y inventories/lab.py deploys/runbooks/<file> --data k=v ...``."""
    args = [str(BIN / "pyinfra"), "-y", *(["-vvv"] if verbose else [])]
    for item in data:
        args += ["--data", item]
    return subprocess.run(
        [*args, "inventories/lab.py", deploy_file],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


def diagnose(*data: str) -> tuple[int, dict[tuple[str, str], dict[str, str]]]:
    """``mmpush diagnose inventories/lab.py --format json --data ...``: (exit code,
    {(host, check): result})."""
    args = ["diagnose", "inventories/lab.py", "--format", "json"]
    for item in data:
        args += ["--data", item]
    result = mmpush(*args)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    document = json.loads(result.stdout)
    return result.returncode, {(r["host"], r["check"]): r for r in document["results"]}


def failed(found: dict[tuple[str, str], dict[str, str]]) -> list[tuple[str, str]]:
    return sorted(key for key, r in found.items() if r["status"] == "fail")


def verdicts(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    """{(host, app type): "OK  <verdict>" | "FAIL <verdict>"} from the runbook's lines."""
    found = {}
    for line in (result.stdout + result.stderr).splitlines():
        match = re.search(r"test push: (OK  |FAIL) (\S+) (\S+): (.*)$", line)
        if match:
            mark, host, app_type, text = match.groups()
            found[(host, app_type)] = f"{mark} {text}".replace("OK   ", "OK ")
    return found


def assert_all(found: dict[tuple[str, str], str], hosts: tuple[str, ...], start: str) -> None:
    for mm in hosts:
        for app_type in APP_TYPES:
            assert found.get((mm, app_type), "").startswith(start), (mm, app_type, found)


# --- test_push in EAS, and its faults ---------------------------------------------------------


def test_every_server_can_push_through_the_push_proxy(runbook_lab: dict[str, Any]) -> None:
    result = run_runbook(TEST_PUSH)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    found = verdicts(result)
    assert sorted(found) == sorted((mm, t) for mm in MATTERMOST_HOSTS for t in APP_TYPES)
    assert_all(found, MATTERMOST_HOSTS, "OK path OK, credentials accepted")
    assert "https://push.lab.test" in found[("mm1", "apple_rn")]
    code, checks = diagnose()
    assert (code, failed(checks)) == (0, [])
    for mm in MATTERMOST_HOSTS:
        for check in ("push-settings", "push-url", "certificate", "push-credentials"):
            assert checks[(mm, check)]["status"] == "ok", checks[(mm, check)]
    assert checks[("push1", "push-proxy-service")]["status"] == "ok"


def test_a_stopped_push_proxy_is_named(runbook_lab: dict[str, Any], on: SshRunner) -> None:
    on("push1", "systemctl stop mattermost-push-proxy")
    try:
        result = run_runbook(TEST_PUSH)
        code, checks = diagnose()
    finally:
        on("push1", "systemctl start mattermost-push-proxy")
    assert code == 1
    assert "the push proxy is down" in checks[("push1", "push-proxy-service")]["evidence"]
    assert checks[("push1", "push-proxy-service")]["status"] == "fail"
    assert "HTTP 502" in checks[("mm1", "push-url")]["evidence"]
    assert result.returncode != 0
    assert_all(verdicts(result), MATTERMOST_HOSTS, "FAIL the push proxy is not answering")
    assert "HTTP 502 from NGINX" in verdicts(result)[("mm2", "android_rn")]


def test_rejected_credentials_are_named_per_app_type(runbook_lab: dict[str, Any]) -> None:
    fixtures = runbook_lab["fixtures"]
    data = revoked_apple_data(fixtures)
    try:
        assert deploy("deploys/eas.py", data).returncode == 0
        result = run_runbook(TEST_PUSH, data)
        code, checks = diagnose(data)
    finally:
        assert deploy("deploys/eas.py").returncode == 0
    assert result.returncode != 0
    found = verdicts(result)
    for mm in MATTERMOST_HOSTS:
        assert found[(mm, "apple_rn")].startswith("FAIL credentials rejected"), found
        assert found[(mm, "android_rn")].startswith("OK path OK"), found
    assert code == 1
    credentials = checks[("mm1", "push-credentials")]
    assert credentials["status"] == "fail"
    assert "apple_rn: credentials rejected by Apple or Google" in credentials["evidence"]


def test_a_certificate_without_its_intermediate_is_named(
    runbook_lab: dict[str, Any], on: SshRunner
) -> None:
    """The classic "works in the browser, fails on Android": the front sends its leaf only."""
    on(
        "push1",
        f"set -e; cp -p {FULLCHAIN} /root/fullchain.keep; "
        f"awk '{{print}} /END CERTIFICATE/{{exit}}' /root/fullchain.keep > {FULLCHAIN}; "
        "nginx -s reload; sleep 1",
    )
    try:
        result = run_runbook(TEST_PUSH)
        code, checks = diagnose()
    finally:
        on("push1", f"cp -p /root/fullchain.keep {FULLCHAIN}; nginx -s reload; sleep 1")
    assert code == 1
    assert "incomplete-chain" in checks[("mm1", "certificate")]["evidence"]
    assert "curl: (60)" in checks[("mm1", "push-url")]["evidence"]
    assert result.returncode != 0
    found = verdicts(result)
    assert_all(found, MATTERMOST_HOSTS, "FAIL TLS not trusted")
    evidence = found[("mm1", "apple_rn")]
    assert "not trusted by this server's trust store" in evidence
    assert "subject=CN=push.lab.test" in evidence.replace(" = ", "=")
    assert "issuer=" in evidence


def test_a_mode_mismatch_is_named(runbook_lab: dict[str, Any]) -> None:
    """The servers push to the push proxy while the data says TPNS."""
    tpns = ("push_mode=tpns", "push_contents_force=true")
    result = run_runbook(TEST_PUSH, *tpns)
    code, checks = diagnose(*tpns)
    assert code == 1
    for mm in MATTERMOST_HOSTS:
        assert checks[(mm, "push-settings")]["evidence"].startswith("mode mismatch"), checks[
            (mm, "push-settings")
        ]
    assert result.returncode != 0
    found = verdicts(result)
    for mm in MATTERMOST_HOSTS:
        assert found[(mm, "config")].startswith("FAIL mode mismatch"), found
        assert "https://push.lab.test" in found[(mm, "config")]
        assert "https://push-test.mattermost.com" in found[(mm, "config")]


# --- the end-to-end DM ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def account_b_token(runbook_lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Account B's personal access token in a file (0600), as a site keeps it."""
    mm = MattermostClient(f"http://{ip_of(runbook_lab, 'mm1')}:8065")
    admin, _ = mm.login("sysadmin")
    mm.patch_config(admin, {"ServiceSettings": {"EnableUserAccessTokens": True}})
    _, account_b = mm.login("accountb")
    token = mm.create_access_token(admin, "mmpush runbook", account_b["id"])["token"]
    path = tmp_path_factory.mktemp("runbook") / "account-b.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def test_account_as_device_receives_account_bs_dm(
    runbook_lab: dict[str, Any], account_b_token: Path
) -> None:
    mm = MattermostClient(f"http://{ip_of(runbook_lab, 'mm1')}:8065")
    token_a, _ = mm.login("accounta")
    device = apple_device()
    mm.call("PUT", "/api/v4/users/sessions/device", token_a, {"device_id": device})
    result = run_runbook(
        TEST_PUSH,
        "runbook_send_dm=true",
        f"runbook_dm_sender_token={account_b_token}",
        "runbook_dm_recipient=accounta",
        "runbook_dm_wait_sec=5",
        f"mattermost_api_url=http://{ip_of(runbook_lab, 'mm1')}:8065",
        verbose=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    [post_id] = set(re.findall(r"end-to-end DM: OK\s+post (\w+)", output))
    # the independent proof: the APNs stand-in delivered B's DM to A's device
    assert [r.outcome for r in pushes(post_id, device)] == ["delivered"]
    assert account_b_token.read_text().strip() not in output


# --- DEBUG, lowered again by the host ---------------------------------------------------------


def levels_on(on: SshRunner, mm: str) -> tuple[str, str]:
    """(LogSettings.FileLevel, NotificationLogSettings.FileLevel) as the running server has
    them: through its local-mode socket (mm2, mm3: database) or in its file (mm1)."""
    if mm == "mm1":
        text = on(mm, f"cat {CONFIG}").stdout
    else:
        text = on(
            mm,
            "curl -sS --fail --unix-socket /var/tmp/mattermost_local.socket "
            "http://localhost/api/v4/config",
        ).stdout
    config = json.loads(text)
    return (
        config.get("LogSettings", {}).get("FileLevel", "INFO"),
        config.get("NotificationLogSettings", {}).get("FileLevel", "INFO"),
    )


def test_debug_is_raised_and_the_host_lowers_it_again(
    runbook_lab: dict[str, Any], on: SshRunner
) -> None:
    before = {mm: levels_on(on, mm) for mm in MATTERMOST_HOSTS}
    assert all(level != ("DEBUG", "DEBUG") for level in before.values()), before
    result = run_runbook(PUSH_DEBUG, "runbook_debug_minutes=1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for mm in MATTERMOST_HOSTS:
        assert levels_on(on, mm) == ("DEBUG", "DEBUG"), mm
        assert on(mm, f"systemctl is-active {TIMER}").stdout.strip() == "active", mm
    # the control node goes away: nothing more from it; the hosts' timers fire
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        pending = [
            mm
            for mm in MATTERMOST_HOSTS
            if on(mm, f"systemctl is-active {TIMER}", check=False).stdout.strip() == "active"
        ]
        if not pending and all(levels_on(on, mm) == before[mm] for mm in MATTERMOST_HOSTS):
            break
        time.sleep(5)
    assert {mm: levels_on(on, mm) for mm in MATTERMOST_HOSTS} == before
    for mm in MATTERMOST_HOSTS:
        journal = on(mm, "journalctl -u mmpush-push-debug-revert --no-pager -o cat").stdout
        assert "push logging lowered again" in journal, (mm, journal)
        assert on(mm, "test -e /var/lib/mmpush/push-debug/originals.json", check=False).returncode
    assert on("mm1", "systemctl is-active mattermost").stdout.strip() == "active"


def test_a_second_debug_run_keeps_the_levels_recorded_first(
    runbook_lab: dict[str, Any], on: SshRunner
) -> None:
    before = levels_on(on, "mm1")
    try:
        assert run_runbook(PUSH_DEBUG, "runbook_debug_minutes=30").returncode == 0
        again = run_runbook(PUSH_DEBUG, "runbook_debug_minutes=30")
        assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
        recorded = json.loads(on("mm1", "cat /var/lib/mmpush/push-debug/originals.json").stdout)
        assert (
            recorded["LogSettings.FileLevel"],
            recorded["NotificationLogSettings.FileLevel"],
        ) == before
    finally:
        for mm in MATTERMOST_HOSTS:  # lower it now, as the runbook page says
            on(
                mm,
                "systemctl start mmpush-push-debug-revert.service; "
                "systemctl stop mmpush-push-debug-revert.timer",
                check=False,
            )
    assert levels_on(on, "mm1") == before


# --- HPNS through the outbound proxy, licence, TPNS, off --------------------------------------


def test_hpns_through_the_outbound_proxy_and_its_faults(
    runbook_lab: dict[str, Any], on: SshRunner
) -> None:
    hpns = deploy("deploys/hpns.py", *HPNS)
    assert hpns.returncode == 0, (hpns.stdout + hpns.stderr)[-4000:]
    ok = run_runbook(TEST_PUSH, *HPNS)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-4000:]
    assert_all(verdicts(ok), MATTERMOST_HOSTS, "OK path OK")
    assert "https://outbound.internal.test:8000" in verdicts(ok)[("mm1", "apple_rn")]

    code, checks = diagnose(*HPNS)
    assert (code, failed(checks)) == (0, [])

    on("proxy1", "systemctl stop nginx")
    try:
        down = run_runbook(TEST_PUSH, *HPNS)
        code, checks = diagnose(*HPNS)
    finally:
        on("proxy1", "systemctl start nginx")
    assert code == 1
    assert "the outbound proxy is down" in checks[("proxy1", "outbound-proxy-service")]["evidence"]
    assert "connect" in checks[("mm1", "outbound-proxy")]["evidence"]
    assert down.returncode != 0
    found = verdicts(down)
    assert_all(found, MATTERMOST_HOSTS, "FAIL unreachable: connect")
    assert "(the outbound proxy)" in found[("mm3", "android_rn")]

    push1 = ip_of(runbook_lab, "push1")
    only_push1 = f'outbound_proxy_allowed_networks=["{push1}/32"]'
    try:
        assert deploy("deploys/outbound_proxy.py", *HPNS, only_push1).returncode == 0
        refused = run_runbook(TEST_PUSH, *HPNS, only_push1)
        code, checks = diagnose(*HPNS, only_push1)
    finally:
        assert deploy("deploys/outbound_proxy.py", *HPNS).returncode == 0
    assert refused.returncode != 0
    assert_all(verdicts(refused), MATTERMOST_HOSTS, "FAIL refused by the outbound proxy")
    assert code == 1
    evidence = checks[("mm1", "outbound-proxy")]["evidence"]
    assert "HTTP 403" in evidence and "outbound_proxy_allowed_networks" in evidence


def test_hpns_without_a_licence_is_named(runbook_lab: dict[str, Any], on: SshRunner) -> None:
    direct = (*HPNS, "hpns_use_outbound_proxy=false")
    assert deploy("deploys/hpns.py", *direct).returncode == 0
    on("mm1", f"mv {LICENCE} {LICENCE}.away")
    try:
        result = run_runbook(TEST_PUSH, *direct)
    finally:
        on("mm1", f"mv {LICENCE}.away {LICENCE}")
    assert result.returncode != 0
    found = verdicts(result)
    for app_type in APP_TYPES:
        assert found[("mm1", app_type)].startswith("FAIL HPNS needs a licence"), found
        assert found[("mm2", app_type)].startswith("OK"), found


def test_tpns_and_off(runbook_lab: dict[str, Any]) -> None:
    tpns = ("push_mode=tpns", "push_contents_force=true")
    assert deploy("deploys/tpns.py", *tpns).returncode == 0
    result = run_runbook(TEST_PUSH, *tpns)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert_all(verdicts(result), MATTERMOST_HOSTS, "OK path OK")
    code, checks = diagnose(*tpns)
    assert (code, failed(checks)) == (0, [])

    assert deploy("deploys/off.py", "push_mode=off").returncode == 0
    off = run_runbook(TEST_PUSH, "push_mode=off")
    assert off.returncode == 0, (off.stdout + off.stderr)[-4000:]
    found = verdicts(off)
    for mm in MATTERMOST_HOSTS:
        assert found[(mm, "all")].startswith("OK push is disabled, as push_mode off says ("), found
    code, checks = diagnose("push_mode=off")
    assert (code, failed(checks)) == (0, [])
