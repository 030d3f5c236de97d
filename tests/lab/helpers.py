"""Helpers for lab tests: run the real commands a user types, and look for leftovers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

SshRunner = Callable[..., subprocess.CompletedProcess[str]]


def mmpush(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real `mmpush` command."""
    return subprocess.run(
        [str(BIN / "mmpush"), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def pyinfra(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real `pyinfra` command from the repository root, as a user would."""
    return subprocess.run(
        [str(BIN / "pyinfra"), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def leftovers() -> list[str]:
    """Whatever of the lab still exists on this machine."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in netns.split() if n.startswith("mmplab-")]
    for pattern in ("systemd-nspawn", "pebble"):
        pids = subprocess.run(["pgrep", "-a", pattern], capture_output=True, text=True).stdout
        found += [f"process {line}" for line in pids.splitlines() if line.strip()]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {t}" for t in tables.splitlines() if "mmpush_lab" in t]
    return found
