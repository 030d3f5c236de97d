"""Helpers for lab tests: run the real commands a user types, and look for leftovers."""

from __future__ import annotations

import json
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


def deploy(
    deploy_file: str, *data: str, dry: bool = False, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``pyinfra [-y] inventories/lab.py deploys/<file> --data k=v ...`` as a user types it."""
    args = [] if dry else ["-y"]
    for item in data:
        args += ["--data", item]
    return pyinfra(*args, *extra, "inventories/lab.py", deploy_file, *(["--dry"] if dry else []))


def grand_total(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """pyinfra's closing "Grand total" row: {"operations", "success", "error", "no_change"}."""
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip().startswith("Grand total"):
            cells = line.split()[2:]
            values = [0 if cell == "-" else int(cell) for cell in cells]
            return dict(zip(["operations", "success", "error", "no_change"], values, strict=True))
    raise AssertionError(f"no Grand total in pyinfra's output:\n{result.stdout}\n{result.stderr}")


def planned_changes(*data: str, deploy_file: str = "deploys/eas.py") -> dict[str, list[str]]:
    """What ``--dry --json`` says would change: {operation name: [hosts]} (conditional
    operations, which depend on another one changing, are listed with a ``?`` suffix)."""
    args = ["inventories/lab.py", deploy_file, "--dry", "--json"]
    for item in data:
        args += ["--data", item]
    result = pyinfra(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)["plan"]
    changes: dict[str, list[str]] = {}
    for op in plan:
        if op["hosts_with_change"]:
            changes[op["name"]] = op["hosts_with_change"]
        if op["hosts_with_conditional_change"]:
            changes[op["name"] + "?"] = op["hosts_with_conditional_change"]
    return changes


def verify(*data: str) -> subprocess.CompletedProcess[str]:
    """``pytest tests/verify --inventory inventories/lab.py [--data k=v ...]``, as ops run it."""
    args = [str(BIN / "pytest"), "tests/verify", "--inventory", "inventories/lab.py", "-q"]
    for item in data:
        args += ["--data", item]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
