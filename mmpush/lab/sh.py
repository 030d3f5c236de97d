"""Small, bounded wrappers around the host commands the lab runs (ip, nft, mount, ssh...).

Every call has a timeout: the lab must never hang.

    >>> run(["ip", "link", "show", "lo"]).returncode
    0
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import click


class LabError(RuntimeError):
    """A lab step failed; the message says which step and why."""


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    input: str | bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output as text, and raise LabError if it fails.

    run(["ip", "netns", "add", "mmplab-mm1"])
    run(["nft", "-f", "-"], input=ruleset)
    """
    data = input.encode() if isinstance(input, str) else input
    try:
        result = subprocess.run(
            list(args), input=data, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise LabError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from error
    except FileNotFoundError as error:
        raise LabError(f"`{args[0]}` is not installed") from error
    completed = subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )
    if check and completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()
        raise LabError(f"`{' '.join(args)}` failed (exit {completed.returncode}): {detail}")
    return completed


def succeeds(args: Sequence[str], timeout: float = 30) -> bool:
    """True when the command exits 0: ``succeeds(["ip", "netns", "pids", "x"])``."""
    return run(args, check=False, timeout=timeout).returncode == 0


@contextmanager
def step(title: str) -> Iterator[None]:
    """Print what the lab is doing and how long it took.

    with step("Building rootfs"):
        build()
    """
    click.echo(f"[lab] {title} ...", err=True)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        click.echo(f"[lab] {title}: FAILED after {time.monotonic() - started:.1f} s", err=True)
        raise
    click.echo(f"[lab] {title}: done in {time.monotonic() - started:.1f} s", err=True)


def wait_until(what: str, probe: object, timeout: float, interval: float = 0.2) -> None:
    """Call ``probe()`` until it returns true, or raise LabError naming ``what``.

    wait_until("sshd on mm1", lambda: port_open("10.77.44.11", 22), timeout=30)
    """
    assert callable(probe)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as error:  # the probe's own failure is the reason we report
            last_error = error
        time.sleep(interval)
    reason = f" (last error: {last_error})" if last_error else ""
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}{reason}")
