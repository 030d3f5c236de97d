"""`mmpush lab up` twice replaces the lab and reuses the cached rootfs; `down` is idempotent
and leaves nothing behind."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.lab.helpers import leftovers, mmpush, pyinfra

pytestmark = pytest.mark.lab


def test_up_again_reuses_the_rootfs_and_replaces_the_running_lab(lab: dict[str, Any]) -> None:
    again = mmpush("lab", "up")
    assert again.returncode == 0, again.stderr
    assert "Using the cached Debian rootfs" in again.stderr
    assert "Cleaning up any earlier lab" in again.stderr
    state = json.loads(mmpush("lab", "status", "--json").stdout)
    assert state["rootfs"] == lab["rootfs"]
    assert {h["pid"] for h in state["hosts"]}.isdisjoint({h["pid"] for h in lab["hosts"]})
    result = pyinfra("-y", "inventories/lab.py", "exec", "--", "systemctl", "is-system-running")
    assert result.returncode == 0, result.stderr


def test_down_twice_leaves_nothing_then_up_works(lab: dict[str, Any]) -> None:
    assert mmpush("lab", "down").returncode == 0
    assert leftovers() == []
    assert mmpush("lab", "down").returncode == 0
    assert mmpush("lab", "status").returncode == 3
    result = pyinfra("inventories/lab.py", "exec", "--", "true")
    assert result.returncode != 0 and "mmpush lab up" in result.stdout + result.stderr
    assert mmpush("lab", "up").returncode == 0
