"""Build pyinfra inventory groups from the running lab's state (``mmpush lab status``).

Used by ``inventories/lab.py``:

    mattermost = lab_group("mattermost")    # [("mm1", {"ssh_hostname": "10.77.44.11", ...})]
"""

from __future__ import annotations

from typing import Any

from mmpush.lab.layout import LabPaths


class LabNotRunning(RuntimeError):
    """inventories/lab.py was used while the lab is down."""


def lab_state(paths: LabPaths | None = None) -> dict[str, Any]:
    """The state ``mmpush lab up`` recorded; a clear error when there is no lab."""
    from mmpush.lab.lab import read_state

    state = read_state(paths or LabPaths.default())
    if not state or state.get("phase") != "up":
        raise LabNotRunning("the lab is not up: run `mmpush lab up` (or `make demo`) first")
    return state


def host_data(state: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """pyinfra host data to reach one lab host over SSH, as production would, with its key
    pinned in the lab's known_hosts (strict host key checking stays on)."""
    return {
        "ssh_hostname": entry["ip"],
        "ssh_user": state["ssh"]["user"],
        "ssh_key": state["ssh"]["key"],
        "ssh_known_hosts_file": state["ssh"]["known_hosts"],
        "ssh_strict_host_key_checking": "yes",
        "lab_fqdns": entry["fqdns"],
    }


def lab_group(group: str, paths: LabPaths | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The lab hosts in ``group`` as a pyinfra inventory group: [(name, data), ...]."""
    state = lab_state(paths)
    return [
        (entry["name"], host_data(state, entry))
        for entry in state["hosts"]
        if group in entry["groups"]
    ]
