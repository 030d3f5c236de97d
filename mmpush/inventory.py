"""Read a pyinfra inventory the way `pyinfra` itself does, for tools that check hosts
(the testinfra suite in tests/verify) rather than change them.

    hosts = load_inventory("inventories/lab.py")
    hosts[0].name, hosts[0].groups, hosts[0].data["ssh_hostname"]
    Path("ssh_config").write_text(ssh_config(hosts))
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InventoryError(RuntimeError):
    """The inventory could not be read; the message says why."""


@dataclass(frozen=True)
class InventoryHost:
    """One host of an inventory: its name, groups and (group data merged) host data."""

    name: str
    groups: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)

    def in_group(self, group: str) -> bool:
        return group in self.groups


def load_inventory(
    inventory: str | Path, cwd: str | Path = ".", data: list[str] | None = None
) -> list[InventoryHost]:
    """Load an inventory with pyinfra's own loader (group_data/ included), by running
    ``pyinfra INVENTORY debug-inventory --json``; ``data`` items (``key=value``) override
    every host's data as ``pyinfra --data key=value`` does in a deploy.

        load_inventory("inventories/lab.py", cwd=repo_root)
        load_inventory("inventories/lab.py", cwd=repo_root, data=["push_mode=hpns"])
    """
    pyinfra = Path(sys.executable).with_name("pyinfra")
    command = [str(pyinfra), str(inventory), "debug-inventory", "--json"]
    for item in data or []:
        command += ["--data", item]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise InventoryError(f"cannot load inventory {inventory}: {detail[-1] if detail else ''}")
    try:
        rows = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise InventoryError(f"pyinfra printed no JSON inventory for {inventory}") from error
    return [InventoryHost(row["name"], tuple(row["groups"]), row["data"]) for row in rows]


def ssh_config(hosts: list[InventoryHost]) -> str:
    """An OpenSSH client config reaching each host as pyinfra would (same address, user,
    port, key and known_hosts), with strict host key checking unless the data turns it off.

        Host mm1
            HostName 10.77.44.11
            User root
            ...
    """
    blocks = []
    for host in hosts:
        data = host.data
        lines = [f"Host {host.name}", f"    HostName {data.get('ssh_hostname') or host.name}"]
        if data.get("ssh_user"):
            lines.append(f"    User {data['ssh_user']}")
        if data.get("ssh_port"):
            lines.append(f"    Port {int(data['ssh_port'])}")
        if data.get("ssh_key"):
            lines += [f"    IdentityFile {data['ssh_key']}", "    IdentitiesOnly yes"]
        if data.get("ssh_known_hosts_file"):
            lines.append(f"    UserKnownHostsFile {data['ssh_known_hosts_file']}")
        strict = str(data.get("ssh_strict_host_key_checking") or "yes")
        lines += [
            f"    StrictHostKeyChecking {strict}",
            "    BatchMode yes",
            "    ConnectTimeout 10",
            "    LogLevel ERROR",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
