"""Every host of the inventory: reachable, booted, and managed by systemd."""

from __future__ import annotations

import testinfra


def test_systemd_has_booted(host: testinfra.host.Host) -> None:
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), f"systemd state is {state!r}"


def test_no_failed_units(host: testinfra.host.Host) -> None:
    failed = host.run("systemctl list-units --failed --no-legend --plain").stdout.strip()
    assert failed == "", f"failed units:\n{failed}"


def test_sshd_is_running(host: testinfra.host.Host) -> None:
    assert host.service("ssh").is_running
