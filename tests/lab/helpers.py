"""Helpers for lab tests: run the real commands a user types, and look for leftovers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

LAB_PROGRAMS = ("systemd-nspawn", "pebble", "pebble-challtestsrv")

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
    # zombies are dead (their parent, PID 1 here, reaps them a moment later): not leftovers
    processes = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True)
    for line in processes.stdout.splitlines():
        stat, _, args = line.strip().partition(" ")
        program = args.split(" ", 1)[0].rsplit("/", 1)[-1]
        if not stat.startswith("Z") and program in (
            "systemd-nspawn",
            "pebble",
            "pebble-challtestsrv",
        ):
            found.append(f"process {args}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {t}" for t in tables.splitlines() if "mmpush_lab" in t]
    return found
