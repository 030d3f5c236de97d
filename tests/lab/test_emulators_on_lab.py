"""The emulators, as installed by the lab, behave like the real services on real hosts."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness
from tests.emulators.push_proxy.build import build_release_tarball
from tests.lab.helpers import SshRunner, pushes, send_dm

pytestmark = pytest.mark.lab

CONFIG = "/opt/mattermost/config/config.json"


def set_config(on: SshRunner, values: dict[str, Any]) -> None:
    """Edit mm1's config.json (as an admin would) and restart Mattermost."""
    script = (
        "import json,sys; p=sys.argv[1]; c=json.load(open(p)); v=json.loads(sys.argv[2])\n"
        "for k, x in v.items(): s, n = k.split('.'); c[s][n] = x\n"
        "open(p, 'w').write(json.dumps(c, indent=4))"
    )
    on("mm1", f"python3 -c \"{script}\" {CONFIG} '{json.dumps(values)}'")
    on("mm1", "systemctl restart mattermost")


@pytest.fixture
def mm1_config_restored(on: SshRunner) -> Iterator[None]:
    on("mm1", f"cp -p {CONFIG} /root/config.json.before-test")
    yield
    on("mm1", f"cp -p /root/config.json.before-test {CONFIG} && systemctl restart mattermost")


def test_hpns_standin_serves_a_pebble_certificate_for_the_hosted_names(
    lab: dict[str, Any],
) -> None:
    upstream = next(h for h in lab["hosts"] if h["name"] == "upstream1")
    context = ssl.create_default_context(cafile=lab["acme"]["ca_bundle"])
    for name in ("push.mattermost.com", "global.push.mattermost.com", "push-test.mattermost.com"):
        with (
            socket.create_connection((upstream["ip"], 443), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_mattermost_pushes_a_dm_to_the_hosted_service_standin_over_verified_tls(
    lab: dict[str, Any], on: SshRunner, mm1_config_restored: None
) -> None:
    set_config(
        on,
        {
            "EmailSettings.SendPushNotifications": True,
            "EmailSettings.PushNotificationServer": "https://push.mattermost.com/",
            "EmailSettings.PushNotificationContents": "generic",
            "LogSettings.FileLevel": "DEBUG",
        },
    )
    post = send_dm(lab, "Hello from the lab", "apple_rn-v2:labdevice0001")
    push = [r.data for r in pushes(post["id"], "apple_rn-v2:labdevice0001")]
    assert len(push) == 1, push
    assert push[0]["path"] == "/api/v1/send_push"
    assert push[0]["host"] == "push.mattermost.com"
    assert push[0]["sni"] == "push.mattermost.com"
    assert push[0]["body"]["device_id"] == "labdevice0001"
    assert "Hello from the lab" not in json.dumps(push[0]["body"]), "generic: no message text"
    log = on("mm1", "cat /opt/mattermost/logs/mattermost.log").stdout
    assert "Sending push notification to labdevice0001 wi msg of" in log


def test_a_bad_push_server_certificate_is_refused_by_mattermost(
    lab: dict[str, Any], on: SshRunner, mm1_config_restored: None
) -> None:
    # upstream1's certificate is not for push.lab.test's address name: TLS must fail
    set_config(
        on,
        {
            "EmailSettings.SendPushNotifications": True,
            "EmailSettings.PushNotificationServer": "https://upstream1:443",
        },
    )
    device = "apple_rn-v2:badcertdevice02"
    post = send_dm(lab, "x", device)
    assert pushes(post["id"], device, timeout=5) == []
    # the server's own account of it: notifications.log, with the TLS reason
    line = on(
        "mm1",
        "for i in $(seq 60); do grep -F badcertdevice02 /opt/mattermost/logs/notifications.log "
        "&& break; sleep 0.5; done",
    ).stdout.splitlines()[-1]
    entry = json.loads(line)
    assert entry["msg"] == "Failed to send to push proxy", entry
    assert entry["device_id"] == "badcertdevice02"
    assert "CERTIFICATE_VERIFY_FAILED" in entry["error"] or "certificate" in entry["error"], entry


def test_push_proxy_release_tarball_runs_on_a_lab_host(
    lab: dict[str, Any], on: SshRunner, tmp_path: Path
) -> None:
    """The release-shaped tarball runs as the real one does on a lab host, and delivers to
    Google's FCM (the lab's stand-in) with the lab's registered service account."""
    tarball = build_release_tarball(tmp_path, version="6.5.0")
    service_account = Path(lab["fixtures"]["fcm_service_account"])
    config = {
        "ListenAddress": "127.0.0.1:18066",
        "AndroidPushSettings": [{"Type": "android_rn", "ServiceFileLocation": "/root/pp/fcm.json"}],
        "ApplePushSettings": [],
    }
    on("push1", "rm -rf /root/pp && mkdir -p /root/pp")
    on("push1", "cat > /root/pp/release.tar.gz", input=tarball.read_bytes())
    on("push1", "cat > /root/pp/fcm.json", input=service_account.read_bytes())
    on("push1", "tar -xzf /root/pp/release.tar.gz -C /root/pp")
    root = "/root/pp/mattermost-push-proxy-linux-amd64"
    on("push1", f"cat > {root}/config/mattermost-push-proxy.json", input=json.dumps(config))
    on(
        "push1",
        f"systemd-run --unit=mmpush-test-proxy --working-directory={root} "
        f"{root}/bin/mattermost-push-proxy -config mattermost-push-proxy.json",
    )
    try:
        on(
            "push1",
            "for i in $(seq 50); do curl -sf localhost:18066/version && break; sleep 0.1; done",
        )
        version = json.loads(on("push1", "curl -sf localhost:18066/version").stdout)
        assert version["version"] == "6.5.0"
        ok = on(
            "push1",
            'curl -s -H \'X-Forwarded-For: 10.0.0.9\' -d \'{"server_id":"s",'
            '"device_id":"lab-android-0042","platform":"android_rn-v2","type":"message",'
            '"message":"hi"}\' localhost:18066/api/v1/send_push',
        ).stdout
        assert json.loads(ok) == {"status": "OK"}
        fail = on(
            "push1",
            'curl -s -d \'{"server_id":"s","platform":"android_rn"}\' '
            "localhost:18066/api/v1/send_push",
        ).stdout
        assert json.loads(fail)["status"] == "FAIL"
        journal = on("push1", "journalctl -u mmpush-test-proxy --no-pager -o cat").stdout
        records = harness.parse_delivery_records(journal)
        assert [(r["x_forwarded_for"], r["device_id"]) for r in records] == [
            ("10.0.0.9", "lab-android-0042")
        ]
        received = on("apns1", "cat /var/lib/push-services-emulator/received.jsonl").stdout
        sends = [json.loads(line) for line in received.splitlines()]
        fcm = [r for r in sends if r["service"] == "fcm" and "lab-android-0042" in json.dumps(r)]
        assert fcm and fcm[-1]["answer"]["status"] == 200, sends[-3:]
    finally:
        on(
            "push1",
            "systemctl stop mmpush-test-proxy; systemctl reset-failed mmpush-test-proxy",
            check=False,
        )
        on("push1", "rm -rf /root/pp", check=False)
