"""Host helpers for the verify suite: run a command on a testinfra host, see what listens
there, find NGINX directives. Shared by the test modules; not a test module itself."""

from __future__ import annotations

import re
import shlex

import testinfra

#: Seconds for any network call, on this control node or on a host.
TIMEOUT = 10
LOOPBACK = ("127.0.0.1", "::1")

Host = testinfra.host.Host


def q(value: object) -> str:
    return shlex.quote(str(value))


def check(host: Host, command: str) -> str:
    """Run ``command`` on ``host``; its stdout, or fail naming the command and its error."""
    result = host.run(command)
    assert result.rc == 0, (
        f"`{command}` failed (exit {result.rc}): {(result.stderr or result.stdout).strip()}"
    )
    return result.stdout


def listening(host: Host) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket: ("127.0.0.1", 8066), ("*", 80)..."""
    sockets = []
    for line in check(host, "ss -ltnH").splitlines():
        fields = line.split()
        if len(fields) >= 4:
            address, _, port = fields[3].rpartition(":")
            sockets.append((address.strip("[]").split("%")[0], int(port)))
    return sockets


def active_directives(host: Host, directive: str, root: str = "/etc/nginx") -> list[str]:
    """``file:line: arguments`` of every uncommented ``directive`` under ``root``."""
    result = host.run(f"grep -RHn -w {q(directive)} {q(root)}")
    assert result.rc in (0, 1), f"grep -R {directive} {root} failed: {result.stderr.strip()}"
    found = []
    pattern = re.compile(rf"(?:^|[\s;{{]){re.escape(directive)}\s+([^;]*)")
    for line in result.stdout.splitlines():
        path, line_number, text = line.split(":", 2)
        match = pattern.search(text.split("#", 1)[0])
        if match:
            found.append(f"{path}:{line_number}: {' '.join(match.group(1).split())}")
    return found
