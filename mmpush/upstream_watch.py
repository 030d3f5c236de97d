"""The upstream watcher for the outbound proxy's pooled upstream (``outbound_proxy_keepalive``).

NGINX 1.22 resolves an ``upstream`` block's server names only when it starts or reloads, and
then with the host's resolver (getaddrinfo), not with its ``resolver`` directive. So a pooled
upstream keeps the address it had at the last reload. The watcher is a systemd timer and a
oneshot service on the proxy host running one script: it resolves the upstream name every
``interval`` seconds with the configured resolvers and, when the address set changes, writes
the addresses as ``server`` lines into a file the upstream block includes, checks the config
with ``nginx -t`` and reloads NGINX gracefully. A failed lookup never empties the pool; a failed
``nginx -t`` or reload puts the old lines back and is retried on the next run.

Pure text: the three files come from the settings, and unit tests run the script for real
with fake ``dig``, ``getent``, ``nginx`` and ``systemctl`` commands.

    files = watch_files("global.push.mattermost.com", 443, ["10.0.0.53"], interval=15)
    # {WATCH_SCRIPT: "#!/bin/bash ...", ".../mmpush-upstream-watch.service": ..., ".timer": ...}
    packages = required_packages(["10.0.0.53"])      # ["bind9-dnsutils"]: dig
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from mmpush.render import render
from mmpush.settings import is_dns_name, resolver_problem

UNIT_NAME = "mmpush-upstream-watch"
SERVICE_FILE = f"/etc/systemd/system/{UNIT_NAME}.service"
TIMER_FILE = f"/etc/systemd/system/{UNIT_NAME}.timer"
WATCH_SCRIPT = "/usr/local/sbin/mmpush-upstream-watch"
#: The sorted addresses NGINX was last reloaded with (one a line).
STATE_FILE = "/var/lib/mmpush/upstream-addresses"
LOCK_FILE = "/var/lib/mmpush/upstream-watch.lock"
#: The ``server`` lines the outbound proxy's upstream block includes; the watcher owns them.
SERVERS_FILE = "/etc/nginx/mmpush-upstream/servers.conf"
#: Seconds between two lookups: a change is followed within this, plus the DNS answer's TTL
#: at the resolver, plus a reload.
DEFAULT_INTERVAL_S = 15
MAX_INTERVAL_S = 60
#: dig (to ask the configured resolvers) is in this Debian package (Debian 12 and 13); the
#: host's resolver needs only getent (libc-bin, always there).
DIG_PACKAGE = "bind9-dnsutils"


@dataclass(frozen=True)
class WatchPaths:
    """Where the watcher's files live on the host (tests put them in a temporary directory)."""

    script: str = WATCH_SCRIPT
    state_file: str = STATE_FILE
    servers_file: str = SERVERS_FILE
    lock_file: str = LOCK_FILE


def dig_server(resolver: str) -> tuple[str, int]:
    """An NGINX-style resolver address as (address, port) for ``dig @address -p port``.

    dig_server("10.0.0.53") == ("10.0.0.53", 53)
    dig_server("192.0.2.1:8053") == ("192.0.2.1", 8053)
    dig_server("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    """
    problem = resolver_problem(resolver)
    if problem:
        raise ValueError(f"resolver {resolver!r}: {problem}")
    if resolver.startswith("["):
        address, _, rest = resolver[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        address, _, port = resolver.partition(":")
    return str(ipaddress.ip_address(address)), int(port) if port else 53


def required_packages(resolvers: Sequence[str]) -> list[str]:
    """The Debian packages the script needs beyond a minimal Debian (bash, util-linux's flock,
    libc-bin's getent): ``required_packages(["10.0.0.53"]) == ["bind9-dnsutils"]``."""
    return [DIG_PACKAGE] if resolvers else []


def _check(upstream_host: str, upstream_port: int) -> None:
    if not is_dns_name(upstream_host):
        raise ValueError(f"upstream {upstream_host!r} is not a DNS name")
    if not 1 <= upstream_port <= 65535:
        raise ValueError(f"upstream port {upstream_port} is not from 1 to 65535")


def check_interval(interval: int) -> int:
    """``interval`` if it lets the watcher follow a change within a minute, else ValueError."""
    if not 1 <= interval <= MAX_INTERVAL_S:
        raise ValueError(
            f"interval {interval} s: from 1 to {MAX_INTERVAL_S} s (a change must be followed "
            "within 60 s)"
        )
    return interval


def watch_script(
    upstream_host: str,
    upstream_port: int,
    resolvers: Sequence[str],
    paths: WatchPaths = WatchPaths(),
) -> str:
    """The watcher script (bash). ``resolvers`` empty: the host's resolver (getent).

    watch_script("global.push.mattermost.com", 443, ["10.0.0.53", "10.0.0.54:5353"])
    """
    _check(upstream_host, upstream_port)
    servers = [dig_server(resolver) for resolver in resolvers]
    if servers:
        lookup_how = "dig, asking " + ", ".join(f"{a} port {p}" for a, p in servers)
    else:
        lookup_how = "getent ahostsv4, the host's resolver"
    return render(
        "mmpush-upstream-watch.sh.j2",
        upstream_host=upstream_host,
        upstream_host_q=shlex.quote(upstream_host),
        upstream_port=upstream_port,
        lookup_how=lookup_how,
        state_file=paths.state_file,
        state_file_q=shlex.quote(paths.state_file),
        servers_file=paths.servers_file,
        servers_file_q=shlex.quote(paths.servers_file),
        lock_file_q=shlex.quote(paths.lock_file),
        resolver_hosts_q=" ".join(shlex.quote(address) for address, _ in servers),
        resolver_ports_q=" ".join(str(port) for _, port in servers),
    )


def watch_service(upstream_host: str, paths: WatchPaths = WatchPaths()) -> str:
    """The oneshot service that runs the script once (hardened; it may write only its own
    files, NGINX's logs and /run)."""
    _check(upstream_host, 443)
    return render(
        "systemd/mmpush-upstream-watch.service.j2",
        upstream_host=upstream_host,
        script=paths.script,
        servers_dir=str(PurePosixPath(paths.servers_file).parent),
        state_dir=str(PurePosixPath(paths.state_file).parent),
    )


def watch_timer(upstream_host: str, interval: int = DEFAULT_INTERVAL_S) -> str:
    """The timer that starts the service every ``interval`` seconds (first at boot + interval,
    or at once when enabled later)."""
    _check(upstream_host, 443)
    return render(
        "systemd/mmpush-upstream-watch.timer.j2",
        upstream_host=upstream_host,
        interval=check_interval(interval),
    )


def watch_files(
    upstream_host: str,
    upstream_port: int,
    resolvers: Sequence[str],
    interval: int = DEFAULT_INTERVAL_S,
    paths: WatchPaths = WatchPaths(),
) -> dict[str, str]:
    """{path on the host: text} for the script (mode 755) and the two units (644).

    watch_files("global.push.mattermost.com", 443, [], 15)[WATCH_SCRIPT].startswith("#!")
    """
    return {
        paths.script: watch_script(upstream_host, upstream_port, resolvers, paths),
        SERVICE_FILE: watch_service(upstream_host, paths),
        TIMER_FILE: watch_timer(upstream_host, interval),
    }
