"""The README's commands do what it says: `make demo` brings the lab up, deploys EAS,
verifies it and prints how to send a test push; that command shows the push arriving."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.lab.helpers import REPO, SshRunner, lab_skips, mmpush, verify

pytestmark = pytest.mark.lab


def test_make_demo_deploys_eas_and_the_test_push_it_prints_arrives(lab: dict[str, Any]) -> None:
    demo = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-4000:]
    assert "mmpush lab send-dm" in demo.stdout
    # what the demo did, checked on the hosts rather than in its banner
    verify().assert_passed(lab_skips("eas"))
    sent = mmpush("lab", "send-dm", "Hello from the README")
    assert sent.returncode == 0, sent.stderr
    [record] = [line for line in sent.stdout.splitlines() if line.startswith("push proxy on")]
    data = json.loads(record.split(" delivered ", 1)[1])
    assert data["platform"] == "apple_rn" and data["delivered_via"] == "apns"
    assert data["answer"] == {"status": "OK"}


def test_send_dm_fails_when_no_push_arrives(lab: dict[str, Any], on: SshRunner) -> None:
    # with push off on mm1 (as an admin would switch it off), nothing is sent
    on(
        "mm1",
        'cp -p /opt/mattermost/config/config.json /root/c.json && python3 -c "import json;'
        "p='/opt/mattermost/config/config.json';c=json.load(open(p));"
        "c['EmailSettings']['SendPushNotifications']=False;"
        "open(p,'w').write(json.dumps(c,indent=4))\" && systemctl restart mattermost",
    )
    try:
        sent = mmpush("lab", "send-dm", "nobody hears this", "--timeout", "5")
        assert sent.returncode == 1
        assert "no push service recorded" in sent.stderr and "Traceback" not in sent.stderr
    finally:
        on(
            "mm1",
            "cp -p /root/c.json /opt/mattermost/config/config.json && systemctl restart mattermost",
        )
