"""The push proxy as it really behaves, on the lab: credentials parsed as the real proxy
parses them, Apple's and Google's answers (the APNs/FCM stand-in on apns1), an egress proxy,
/metrics and the front's allow-list, and taking over an install made by hand."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness
from tests.lab.helpers import (
    SshRunner,
    android_device,
    apple_device,
    deploy,
    grand_total,
    lab_skips,
    mmpush,
    pushes,
    revoked_apple_data,
    send_dm,
    verify,
)

pytestmark = pytest.mark.lab

ROOT = "/opt/mattermost-push-proxy"
ANDROID_ONLY = "push_proxy_apple=[]"


@pytest.fixture(scope="module")
def proxy_lab(lab: dict[str, Any]) -> dict[str, Any]:
    up = mmpush("lab", "up")
    assert up.returncode == 0, up.stderr[-3000:]
    return json.loads(mmpush("lab", "status", "--json").stdout)


def ip_of(state: dict[str, Any], name: str) -> str:
    return next(h["ip"] for h in state["hosts"] if h["name"] == name)


# --- taking over a hand-made install ----------------------------------------------------------


def install_by_hand(state: dict[str, Any], on: SshRunner) -> None:
    """push1 as Mattermost's install guide leaves it: the release unpacked flat in /opt, a
    config from the sample, its own system user and unit, running."""
    fixtures = state["fixtures"]
    on("push1", "cat > /root/release.tar.gz", input=Path(fixtures["archive"]).read_bytes())
    on("push1", "cat > /root/fcm.json", input=Path(fixtures["fcm_service_account"]).read_bytes())
    config = {
        "ListenAddress": ":8066",
        "ApplePushSettings": [],
        "AndroidPushSettings": [
            {"Type": "android_rn", "ServiceFileLocation": f"{ROOT}/config/fcm.json"}
        ],
    }
    on(
        "push1",
        "set -e; useradd --system --user-group mattermost-push-proxy; "
        "tar -xzf /root/release.tar.gz -C /opt; "
        f"mv /opt/mattermost-push-proxy-linux-amd64 {ROOT}; "
        f"cp /root/fcm.json {ROOT}/config/fcm.json; "
        f"cat > {ROOT}/config/mattermost-push-proxy.json",
        input=json.dumps(config),
    )
    on(
        "push1",
        f"set -e; chown -R mattermost-push-proxy:mattermost-push-proxy {ROOT}; "
        "cat > /etc/systemd/system/mattermost-push-proxy.service; systemctl daemon-reload; "
        "systemctl enable --now mattermost-push-proxy",
        input=(
            "[Unit]\nDescription=Mattermost Push Notification Service\n\n[Service]\n"
            "Type=simple\nUser=mattermost-push-proxy\n"
            f"ExecStart={ROOT}/bin/mattermost-push-proxy --config "
            f"{ROOT}/config/mattermost-push-proxy.json\n"
            f"WorkingDirectory={ROOT}\n\n[Install]\nWantedBy=multi-user.target\n"
        ),
    )
    on("push1", "for i in $(seq 50); do curl -sf localhost:8066/version && exit 0; sleep 0.2; done")


def test_a_hand_made_install_is_taken_over_with_one_restart(
    proxy_lab: dict[str, Any], on: SshRunner
) -> None:
    install_by_hand(proxy_lab, on)
    uid = on("push1", "id -u mattermost-push-proxy").stdout.strip()
    old_pid = on("push1", "systemctl show -p MainPID --value mattermost-push-proxy").stdout.strip()
    since = on("push1", "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    result = deploy("deploys/eas.py")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert on("push1", "id -u mattermost-push-proxy").stdout.strip() == uid, "the user is kept"
    aside = on("push1", f"ls -d {ROOT}/releases/hand-installed-*").stdout.split()
    assert len(aside) == 1
    assert on("push1", f"test -x {aside[0]}/bin/mattermost-push-proxy && echo ok").stdout == "ok\n"
    assert on("push1", f"readlink {ROOT}/current").stdout.strip() == f"{ROOT}/releases/6.5.0"
    # the old process ran until the switch: exactly one stop of the service since
    stops = on(
        "push1",
        f"journalctl -u mattermost-push-proxy --since '{since}' -o cat --no-pager "
        "| grep -c '^Stopping ' || true",  # systemd logs "Stopping X..." once per stop
    ).stdout.strip()
    assert stops == "1", stops
    new_pid = on("push1", "systemctl show -p MainPID --value mattermost-push-proxy").stdout
    assert new_pid.strip() not in ("0", old_pid)
    again = deploy("deploys/eas.py")
    assert grand_total(again)["success"] == 0, again.stdout[-3000:]
    verify().assert_passed(lab_skips("eas"))


# --- credentials and what Apple and Google answer ---------------------------------------------


def test_an_android_only_site_passes_the_verify_suite(
    proxy_lab: dict[str, Any], on: SshRunner
) -> None:
    try:
        result = deploy("deploys/eas.py", ANDROID_ONLY)
        assert result.returncode == 0, result.stderr[-3000:]
        verify(ANDROID_ONLY).assert_passed(lab_skips("eas"))
        post = send_dm(proxy_lab, "android only", device := android_device(3))
        assert [r.outcome for r in pushes(post["id"], device)] == ["delivered"]
    finally:
        assert deploy("deploys/eas.py").returncode == 0


def test_a_revoked_apns_key_fails_the_verify_suite_naming_host_and_app_type(
    proxy_lab: dict[str, Any],
) -> None:
    fixtures = proxy_lab["fixtures"]
    data = revoked_apple_data(fixtures)
    try:
        assert deploy("deploys/eas.py", data).returncode == 0
        result = verify(data)
        assert result.returncode != 0
        assert result.failures_naming("push1") == [
            "test_eas.py::test_every_app_types_credentials_are_accepted[push1]"
        ]
        [failure] = [o for o in result.outcomes if o.outcome == "failed"]
        assert "apple_rn: credentials rejected" in failure.message
        assert "android_rn" not in failure.message
    finally:
        assert deploy("deploys/eas.py").returncode == 0


@pytest.mark.parametrize("form", ["sec1", "rsa-pkcs8", "encrypted-pkcs8", "not-pem"])
def test_a_bad_apns_key_is_refused_before_any_host_changes(
    proxy_lab: dict[str, Any], on: SshRunner, tmp_path: Path, form: str
) -> None:
    key, _ = harness.make_apns_key_file(tmp_path / "AuthKey.p8", form)
    apple = [
        {
            "type": "apple_rn",
            "topic": "com.mattermost.rnbeta",
            "auth_key_file": str(key),
            "auth_key_id": "LABKEY0001",
            "team_id": "LABTEAM001",
        }
    ]
    before = on("push1", "find /etc/mattermost-push-proxy /opt -xdev 2>/dev/null | sort").stdout
    result = deploy("deploys/eas.py", f"push_proxy_apple={json.dumps(apple)}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "push_proxy_apple[0].auth_key_file" in output and "apple_rn" in output
    assert "Starting operation" not in output and "Traceback" not in output
    assert on("push1", "find /etc/mattermost-push-proxy /opt -xdev 2>/dev/null | sort").stdout == (
        before
    )


# --- the front: only the push API, only for the Mattermost servers, no public metrics ------


def test_metrics_and_other_paths_are_not_served_and_outsiders_are_refused(
    proxy_lab: dict[str, Any], on: SshRunner
) -> None:
    mm = [f"{ip_of(proxy_lab, name)}/32" for name in ("mm1", "mm2", "mm3")]
    data = (
        "push_proxy_metrics=true",
        f"push_proxy_metrics_allowed_networks={json.dumps([mm[2]])}",
        f"push_front_allowed_networks={json.dumps(mm)}",
    )
    try:
        assert deploy("deploys/eas.py", *data).returncode == 0
        url = "https://push.lab.test"

        def status(host: str, path: str, method: str = "GET") -> str:
            return on(
                host, f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} {url}{path}"
            ).stdout

        assert status("mm1", "/metrics") == "404"  # a server, but not a metrics scraper
        assert status("mm3", "/metrics") == "200"
        assert status("mm2", "/version") == "200"
        assert status("proxy1", "/version") == "403"  # not a Mattermost server
        assert status("mm2", "/") == "404"
        on("push1", "curl -sf http://127.0.0.1:8066/metrics >/dev/null")  # loopback reads it
        # the verify suite: from this control node (outside the list) it is refused, and it
        # sends its requests from a Mattermost server instead
        skips = lab_skips("eas")
        del skips["test_eas.py::test_clients_outside_the_allowed_networks_are_refused[push1]"]
        verify(*data).assert_passed(skips)
    finally:
        assert deploy("deploys/eas.py").returncode == 0


# --- an egress proxy ------------------------------------------------------------------------------


@pytest.fixture
def egress_only_through_proxy1(proxy_lab: dict[str, Any], on: SshRunner) -> Iterator[str]:
    """tinyproxy on proxy1 (port 8888, push1 allowed, CONNECT to 443), and push1's direct
    route to Apple's and Google's stand-in closed: only the proxy path can work."""
    on(
        "proxy1",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "tinyproxy >/dev/null",
        timeout=300,
    )
    on(
        "proxy1",
        "cat > /etc/tinyproxy/tinyproxy.conf && systemctl restart tinyproxy",
        input=(
            "User tinyproxy\nGroup tinyproxy\nPort 8888\nTimeout 60\nLogLevel Info\n"
            f"Allow {ip_of(proxy_lab, 'push1')}\nConnectPort 443\nMaxClients 50\n"
        ),
    )
    apns1 = ip_of(proxy_lab, "apns1")
    netns = "mmplab-push1"
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=(
            "table inet mmpush_test_egress {\n chain out {\n"
            "  type filter hook output priority 0;\n"
            f"  ip daddr {apns1} tcp dport 443 drop\n }}\n}}\n"
        ),
        text=True,
        check=True,
    )
    yield f"http://{ip_of(proxy_lab, 'proxy1')}:8888"
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "mmpush_test_egress"],
        check=False,
    )
    on("proxy1", "systemctl stop tinyproxy", check=False)


def test_pushes_go_through_the_egress_proxy_and_fail_without_it(
    proxy_lab: dict[str, Any], on: SshRunner, egress_only_through_proxy1: str
) -> None:
    data = f"push_proxy_https_proxy={egress_only_through_proxy1}"
    try:
        assert deploy("deploys/eas.py", data).returncode == 0
        unit = on("push1", "systemctl show -p Environment --value mattermost-push-proxy").stdout
        assert f"HTTPS_PROXY={egress_only_through_proxy1}" in unit
        for device in (apple_device(), android_device(4)):
            post = send_dm(proxy_lab, "through the proxy", device)
            [record] = pushes(post["id"], device)
            assert record.outcome == "delivered", record.line()
            assert record.data["egress_proxy"] == egress_only_through_proxy1
        on("proxy1", "systemctl stop tinyproxy")
        post = send_dm(proxy_lab, "no proxy, no push", device := apple_device())
        [record] = pushes(post["id"], device)
        assert record.outcome == "undelivered", record.line()
    finally:
        assert deploy("deploys/eas.py").returncode == 0
