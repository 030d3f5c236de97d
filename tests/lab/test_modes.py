"""HPNS (through the outbound proxy and direct), TPNS and off on a fresh lab, and switching a
site between modes, with the real `pyinfra` and `pytest tests/verify` commands."""

from __future__ import annotations

import difflib
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from mmpush.lab.ca import new_ca, new_server_certificate
from tests.lab.helpers import (
    SshRunner,
    deploy,
    grand_total,
    lab_skips,
    mmpush,
    pushes,
    send_dm,
    verify,
)

pytestmark = pytest.mark.lab

CONFIG = "/opt/mattermost/config/config.json"
RECORDS = "/var/lib/hpns-emulator/received.jsonl"
PROXY_URL = "https://outbound.internal.test:8000"
HPNS_NAME = "global.push.mattermost.com"
HPNS = ("push_mode=hpns",)
DIRECT = ("push_mode=hpns", "hpns_use_outbound_proxy=false")
TPNS = ("push_mode=tpns",)
OFF = ("push_mode=off",)
SEND, SERVER, CONTENTS = (
    ("EmailSettings", "SendPushNotifications"),
    ("EmailSettings", "PushNotificationServer"),
    ("EmailSettings", "PushNotificationContents"),
)


@pytest.fixture(scope="module")
def modes_lab(lab: dict[str, Any], on: SshRunner) -> dict[str, Any]:
    """A fresh lab; mm1's pristine config.json; then HPNS through the outbound proxy."""
    up = mmpush("lab", "up")
    assert up.returncode == 0, up.stderr
    state = json.loads(mmpush("lab", "status", "--json").stdout)
    pristine = on("mm1", f"cat {CONFIG}").stdout
    first = deploy("deploys/hpns.py", *HPNS)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    return {"state": state, "pristine": pristine}


def ip_of(state: dict[str, Any], name: str) -> str:
    return next(h["ip"] for h in state["hosts"] if h["name"] == name)


def records(on: SshRunner, upstream: str = "upstream1") -> list[dict[str, Any]]:
    text = on(upstream, f"cat {RECORDS} 2>/dev/null || true").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def dm(state: dict[str, Any], text: str, device: str) -> dict[str, Any]:
    return send_dm(state, text, device)


def hpns_push(state: dict[str, Any], text: str, device: str) -> dict[str, Any]:
    """Account B sends Account A ``text``; the one push the HPNS stand-ins received for it
    (``{"path", "host", "sni", "body", "client", ...}``)."""
    post = send_dm(state, text, device)
    found = pushes(post["id"], device)
    assert [r.outcome for r in found] == ["received"], [r.line() for r in found]
    return found[0].data


def push_through_proxy(on: SshRunner, device: str) -> tuple[int, str]:
    """POST one push to the outbound proxy from mm1 (as Mattermost does); (status, body)."""
    body = json.dumps(
        {"server_id": "lab", "device_id": device, "platform": "apple_rn", "type": "message"}
    )
    out = on(
        "mm1",
        f"curl -s -m 20 -o /tmp/push.out -w '%{{http_code}}' -H 'Content-Type: application/json' "
        f"-d '{body}' {PROXY_URL}/api/v1/send_push; echo; cat /tmp/push.out",
    ).stdout.split("\n", 1)
    return int(out[0]), out[1] if len(out) > 1 else ""


def assert_idempotent(deploy_file: str, *data: str) -> None:
    again = deploy(deploy_file, *data)
    assert again.returncode == 0, again.stderr[-2000:]
    assert grand_total(again)["success"] == 0, again.stdout[-3000:]


# --- HPNS through the outbound proxy ---------------------------------------------------------


def test_hpns_push_travels_mm1_outbound_proxy_upstream_with_host_and_sni(
    modes_lab: dict[str, Any], on: SshRunner
) -> None:
    config = json.loads(on("mm1", f"cat {CONFIG}").stdout)
    assert config["EmailSettings"]["PushNotificationServer"] == PROXY_URL
    push = hpns_push(modes_lab["state"], "via the proxy", "apple_rn-v2:hpns-proxy-0001")
    assert push["path"] == "/api/v1/send_push"
    assert push["host"] == HPNS_NAME
    assert push["sni"] == HPNS_NAME
    assert push["client"].removeprefix("::ffff:") == ip_of(modes_lab["state"], "proxy1")
    assert "X-Forwarded-For" not in push["headers"], "internal addresses are not sent upstream"
    assert "via the proxy" not in json.dumps(push["body"])


def test_hpns_second_run_reports_no_change_and_verify_passes(modes_lab: dict[str, Any]) -> None:
    assert_idempotent("deploys/hpns.py", *HPNS)
    verify(*HPNS).assert_passed(lab_skips("hpns"))


def test_the_proxy_forwards_only_the_push_api(modes_lab: dict[str, Any], on: SshRunner) -> None:
    for path in ("/", "/api/v4/system/ping", "/metrics", "/api/v1/other"):
        code = on("mm1", f"curl -s -o /dev/null -w '%{{http_code}}' {PROXY_URL}{path}").stdout
        assert code == "404", (path, code)
    before = len(records(on))
    code = on("mm1", f"curl -s -o /dev/null -w '%{{http_code}}' {PROXY_URL}/api/v1/send_push")
    assert code.stdout in ("403", "405"), "GET on the push API is refused"
    assert len(records(on)) == before
    status, body = push_through_proxy(on, "hpns-forward-0001")
    assert status == 200 and json.loads(body)["status"] == "OK"


def test_only_allowed_client_networks_may_use_the_proxy(
    modes_lab: dict[str, Any], on: SshRunner
) -> None:
    push1 = ip_of(modes_lab["state"], "push1")
    try:
        narrowed = deploy(
            "deploys/outbound_proxy.py", *HPNS, f'outbound_proxy_allowed_networks=["{push1}/32"]'
        )
        assert narrowed.returncode == 0, narrowed.stderr[-2000:]
        status, _ = push_through_proxy(on, "hpns-denied-0001")
        assert status == 403
    finally:
        assert deploy("deploys/outbound_proxy.py", *HPNS).returncode == 0
    status, _ = push_through_proxy(on, "hpns-allowed-0001")
    assert status == 200


@pytest.fixture
def upstream1_certificate_restored(on: SshRunner) -> Iterator[None]:
    on("upstream1", "cp -a /etc/hpns-emulator /root/hpns-emulator.orig")
    yield
    on(
        "upstream1",
        "rm -rf /etc/hpns-emulator && cp -a /root/hpns-emulator.orig /etc/hpns-emulator && "
        "systemctl restart hpns-emulator",
    )


def _install_upstream1_certificate(on: SshRunner, fullchain: str, key: str) -> None:
    on("upstream1", "cat > /etc/hpns-emulator/fullchain.pem", input=fullchain)
    on("upstream1", "cat > /etc/hpns-emulator/privkey.pem", input=key)
    on("upstream1", "systemctl restart hpns-emulator")


def _untrusted_certificate(name: str) -> tuple[str, str]:
    """(fullchain, key) for ``name`` from a CA nobody trusts: what an impostor would have."""
    ca_key, ca_cert = new_ca("impostor CA", days=30)
    key, cert = new_server_certificate(ca_key, ca_cert, [name])
    pem = serialization.Encoding.PEM
    fullchain = cert.public_bytes(pem) + ca_cert.public_bytes(pem)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return fullchain.decode(), key_pem.decode()


def test_an_upstream_with_an_untrusted_certificate_gets_nothing(
    modes_lab: dict[str, Any], on: SshRunner, upstream1_certificate_restored: None
) -> None:
    _install_upstream1_certificate(on, *_untrusted_certificate(HPNS_NAME))
    before = len(records(on))
    status, _ = push_through_proxy(on, "impostor-untrusted-01")
    assert status == 502
    assert len(records(on)) == before, "nothing reached the impostor's application"


def test_an_upstream_with_a_trusted_certificate_for_another_name_gets_nothing(
    modes_lab: dict[str, Any], on: SshRunner, upstream1_certificate_restored: None
) -> None:
    # a real certificate from the lab CA, but for outbound.internal.test (from proxy1)
    tls = "/etc/mmpush/tls/outbound.internal.test"
    fullchain = on("proxy1", f"cat {tls}/fullchain.pem").stdout
    key = on("proxy1", f"cat {tls}/privkey.pem").stdout
    _install_upstream1_certificate(on, fullchain, key)
    before = len(records(on))
    status, _ = push_through_proxy(on, "impostor-name-00001")
    assert status == 502
    assert len(records(on)) == before, "nothing reached the impostor's application"


def _set_lab_dns(state: dict[str, Any], name: str, ip: str) -> None:
    management = state["acme"]["dns_management_url"]
    for path, body in (("/clear-a", {"host": name}), ("/add-a", {"host": name, "addresses": [ip]})):
        request = urllib.request.Request(
            management + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 200


def test_pushes_follow_the_upstream_to_a_new_address_within_60_s(
    modes_lab: dict[str, Any], on: SshRunner
) -> None:
    state = modes_lab["state"]
    try:
        _set_lab_dns(state, HPNS_NAME, ip_of(state, "upstream2"))
        moved_at = time.monotonic()
        answers = []
        while time.monotonic() - moved_at < 75:
            status, body = push_through_proxy(on, f"moving-{len(answers):04d}")
            answers.append((status, body))
            if any(
                p["body"]["device_id"].startswith("moving-")
                for p in records(on, "upstream2")
                if isinstance(p["body"], dict)
            ):
                break
            time.sleep(3)
        followed_after = time.monotonic() - moved_at
        assert followed_after <= 60, f"still on the old address after {followed_after:.0f} s"
        assert all(s == 200 and json.loads(b)["status"] == "OK" for s, b in answers), answers
    finally:
        _set_lab_dns(state, HPNS_NAME, ip_of(state, "upstream1"))


# --- HPNS direct, TPNS, off -----------------------------------------------------------------


def test_hpns_direct_points_mattermost_at_the_region(
    modes_lab: dict[str, Any], on: SshRunner
) -> None:
    try:
        result = deploy("deploys/hpns.py", *DIRECT)
        assert result.returncode == 0, result.stderr[-2000:]
        # the lab's servers hold a licence with MHPNS: no licence warning (one without it is
        # warned about, naming it: test_config_sources.py, test_runbooks.py)
        assert "licen" not in result.stdout + result.stderr, result.stdout[-3000:]
        config = json.loads(on("mm1", f"cat {CONFIG}").stdout)
        assert config["EmailSettings"]["PushNotificationServer"] == f"https://{HPNS_NAME}"
        push = hpns_push(modes_lab["state"], "direct", "apple_rn-v2:hpns-direct-0001")
        assert push["host"] == HPNS_NAME and push["sni"] == HPNS_NAME
        assert push["client"].removeprefix("::ffff:") == ip_of(modes_lab["state"], "mm1")
        assert_idempotent("deploys/hpns.py", *DIRECT)
        # the outbound proxy is still deployed (and checked); only the servers go direct
        verify(*DIRECT).assert_passed(lab_skips("hpns"))
    finally:
        assert deploy("deploys/hpns.py", *HPNS).returncode == 0


def test_tpns_refuses_full_contents_unless_forced(modes_lab: dict[str, Any], on: SshRunner) -> None:
    before = on("mm1", f"sha256sum {CONFIG}").stdout
    refused = deploy("deploys/tpns.py", *TPNS, "push_contents=full")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "push_contents" in output and "encrypt" in output and "push_contents_force" in output
    assert "Starting operation" not in output
    assert on("mm1", f"sha256sum {CONFIG}").stdout == before
    forced = deploy("deploys/tpns.py", *TPNS, "push_contents=full", "push_contents_force=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    push = hpns_push(
        modes_lab["state"], "readable by the test service", "apple_rn-v2:tpns-full-0001"
    )
    assert push["host"] == "push-test.mattermost.com"
    assert "readable by the test service" in push["body"]["message"]


def test_a_mode_deploy_refuses_data_that_says_another_mode(modes_lab: dict[str, Any]) -> None:
    result = deploy("deploys/tpns.py", *HPNS)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "push_mode" in output and "'hpns'" in output and "deploys/tpns.py" in output
    assert "Starting operation" not in output


def assert_only_push_keys_changed(
    pristine: str, actual: str, expected: dict[tuple[str, str], Any]
) -> None:
    """``actual`` is ``pristine`` with exactly ``expected`` set: as JSON, and byte for byte
    everywhere else (only lines naming a push key differ)."""
    document = json.loads(pristine)
    for (section, key), value in expected.items():
        document[section][key] = value
    assert json.loads(actual) == document
    changed = [
        line
        for line in difflib.unified_diff(pristine.splitlines(), actual.splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    keys = [f'"{key}":' for _, key in expected]
    assert all(any(key in line for key in keys) for line in changed), changed


def test_switching_modes_leaves_exactly_the_latest_modes_keys(
    modes_lab: dict[str, Any], on: SshRunner
) -> None:
    """eas -> hpns -> tpns -> off -> eas: after each deploy, config.json is the pristine file
    with only the push keys of that mode changed (byte for byte); the run after it is a no-op;
    the verify suite passes."""
    steps = [
        ("deploys/eas.py", (), {SEND: True, SERVER: "https://push.lab.test", CONTENTS: "generic"}),
        ("deploys/hpns.py", HPNS, {SEND: True, SERVER: PROXY_URL, CONTENTS: "generic"}),
        (
            "deploys/tpns.py",
            TPNS,
            {SEND: True, SERVER: "https://push-test.mattermost.com", CONTENTS: "generic"},
        ),
        ("deploys/off.py", OFF, {SEND: False, SERVER: "", CONTENTS: "generic"}),
        ("deploys/eas.py", (), {SEND: True, SERVER: "https://push.lab.test", CONTENTS: "generic"}),
    ]
    for deploy_file, data, expected in steps:
        result = deploy(deploy_file, *data)
        assert result.returncode == 0, (deploy_file, result.stderr[-2000:])
        actual = on("mm1", f"cat {CONFIG}").stdout
        assert_only_push_keys_changed(modes_lab["pristine"], actual, expected)
        assert_idempotent(deploy_file, *data)
        mode = next((d.split("=")[1] for d in data if d.startswith("push_mode=")), "eas")
        verify(*data).assert_passed(lab_skips(mode))


def test_off_sends_no_push(modes_lab: dict[str, Any], on: SshRunner) -> None:
    try:
        assert deploy("deploys/off.py", *OFF).returncode == 0
        post = dm(modes_lab["state"], "silence", "apple_rn-v2:off-0001")
        # nothing may arrive: give the (asynchronous) push hub time it would need to send one
        assert pushes(post["id"], timeout=5) == []
        journal = on(
            "push1",
            "journalctl -u mattermost-push-proxy -o cat --no-pager 2>/dev/null "
            "| grep -c off-0001 || true",
        ).stdout.strip()
        assert journal in ("", "0")
    finally:
        assert deploy("deploys/hpns.py", *HPNS).returncode == 0
