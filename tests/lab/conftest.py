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
from tests.lab.helpers import SshRunner, deploy, leftovers, mmpush

#: Set by `make test` (and so CI): lab tests that cannot run are a failure, not a skip.
REQUIRED = "MMPUSH_LAB_REQUIRED"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `make test`, being unable to run the lab stops the run with the reason (a green
    run must never mean that no lab test ran)."""
    if os.geteuid() != 0 and os.environ.get(REQUIRED) and items:
        raise pytest.UsageError(
            "the lab tests need root (network namespaces, mounts, systemd-nspawn): run "
            "`make test` as root on a Debian 12 machine; none of them ran"
        )


@pytest.fixture(scope="session")
def lab() -> Iterator[dict[str, Any]]:
    """The running lab's state (`mmpush lab status --json`)."""
    if not os.environ.get(REQUIRED):
        # a bare `pytest` must never replace or tear down a lab someone is using
        pytest.skip(f"lab tests run only with {REQUIRED}=1 (`make test` sets it)")
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


def fresh_lab() -> dict[str, Any]:
    """Replace the running lab with a fresh one (earlier modules changed its hosts) and return
    its state."""
    up = mmpush("lab", "up")
    assert up.returncode == 0, up.stderr[-4000:]
    return json.loads(mmpush("lab", "status", "--json").stdout)


@pytest.fixture(scope="module")
def eas_site(lab: dict[str, Any]) -> dict[str, Any]:
    """A fresh lab with EAS deployed (`pyinfra -y inventories/lab.py deploys/eas.py`), for the
    modules that start from a working EAS site: {"state": lab state, "first": the deploy}."""
    state = fresh_lab()
    first = deploy("deploys/eas.py")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    return {"state": state, "first": first}
