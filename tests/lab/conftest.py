"""Lab tests: real booted Debian hosts, brought up once per session with the real
`mmpush lab up` and always torn down with `mmpush lab down`, even when tests fail.

Teardown then checks that nothing of the lab is left (namespaces, containers, Pebble,
the nft table): a leak fails the run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from mmpush.lab.layout import LabPaths, lab_host
from tests.lab.helpers import SshRunner, leftovers, mmpush


@pytest.fixture(scope="session")
def lab() -> Iterator[dict[str, Any]]:
    """The running lab's state (`mmpush lab status --json`)."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (namespaces, mounts, systemd-nspawn)")
    try:
        up = mmpush("lab", "up")
        sys.stderr.write(up.stderr)
        assert up.returncode == 0, f"mmpush lab up failed:\n{up.stderr}"
        status = mmpush("lab", "status", "--json")
        assert status.returncode == 0, status.stderr
        yield json.loads(status.stdout)
    finally:
        down = mmpush("lab", "down", timeout=300)
        assert down.returncode == 0, f"mmpush lab down failed:\n{down.stderr}"
        assert leftovers() == [], "the lab left things behind"


@pytest.fixture(scope="session")
def lab_paths(lab: dict[str, Any]) -> LabPaths:
    return LabPaths.default()


@pytest.fixture(scope="session")
def on(lab: dict[str, Any]) -> SshRunner:
    """Run a shell command on a lab host over SSH: ``on("mm1", "systemctl is-active x")``.

    Raises with the host's stderr when the command fails, unless ``check=False``.
    """
    from mmpush.lab.containers import ssh

    def run(name: str, command: str, check: bool = True, **kwargs: Any) -> Any:
        return ssh(LabPaths.default(), lab_host(name), command, check=check, **kwargs)

    return run
