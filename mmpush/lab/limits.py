"""Kernel limits the lab's hosts share with the machine running them, raised while the lab is
up and put back by `mmpush lab down`.

Every container's systemd takes inotify instances from the machine's
``fs.inotify.max_user_instances`` (128 by default): at about 24 hosts, boot fails with "Failed
to create inotify object: Too many open files" (see lab-facts). The lab raises what N hosts
need, keeps the original values in its state directory, and restores them at `down`.

    raise_for(50, paths)    # before booting 50 hosts
    restore(paths)          # in down
"""

from __future__ import annotations

import json
from pathlib import Path

from mmpush.lab.layout import LabPaths

SYSCTL = Path("/proc/sys")
#: Per host: what one booted Debian host's systemd and services use, with room to spare.
PER_HOST = {"fs/inotify/max_user_instances": 16, "fs/inotify/max_user_watches": 4096}
#: Never go below what the machine had, nor below these.
FLOORS = {"fs/inotify/max_user_instances": 1024, "fs/inotify/max_user_watches": 65536}


def _backup(paths: LabPaths) -> Path:
    return paths.state_dir / "sysctl.orig.json"


def needed(hosts: int) -> dict[str, int]:
    """The value each limit needs for ``hosts`` lab hosts: ``needed(50)``."""
    return {name: max(FLOORS[name], per * hosts) for name, per in PER_HOST.items()}


def raise_for(hosts: int, paths: LabPaths, root: Path = SYSCTL) -> dict[str, int]:
    """Raise the limits to what ``hosts`` lab hosts need (never lower them); remember the
    original values (once: a second `up` keeps the first originals). Returns what changed."""
    backup = _backup(paths)
    originals = json.loads(backup.read_text()) if backup.exists() else {}
    changed = {}
    for name, value in needed(hosts).items():
        current = int((root / name).read_text())
        if current < value:
            originals.setdefault(name, current)
            (root / name).write_text(f"{value}\n")
            changed[name] = value
    if originals:
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        backup.write_text(json.dumps(originals))
    return changed


def restore(paths: LabPaths, root: Path = SYSCTL) -> None:
    """Put back the values `raise_for` changed, if any."""
    backup = _backup(paths)
    if not backup.exists():
        return
    for name, value in json.loads(backup.read_text()).items():
        (root / name).write_text(f"{value}\n")
    backup.unlink()
