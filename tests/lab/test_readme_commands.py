"""The README's commands do what it says: `make demo` brings the lab up, deploys EAS,
verifies it and prints how to send a test push; that command shows the push arriving."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.lab.helpers import REPO, mmpush

pytestmark = pytest.mark.lab


def test_make_demo_deploys_eas_and_the_test_push_it_prints_arrives(lab: dict[str, Any]) -> None:
    demo = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-4000:]
    assert "EAS is deployed on the lab" in demo.stdout
    assert "mmpush lab send-dm" in demo.stdout
    sent = mmpush("lab", "send-dm", "Hello from the README")
    assert sent.returncode == 0, sent.stderr
    assert "EMULATOR-DELIVERY" in sent.stdout
    assert '"platform":"apple_rn"' in sent.stdout
