"""The lab network: one bridge on the host, one network namespace per lab host, and NAT
that lets lab hosts reach the Debian package registry and nothing else.

    create_bridge()
    create_host_network(lab_host("mm1"))
    install_nat(registry_ips=["203.0.113.80"], paths=paths)
    ...
    remove_network(paths)
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from mmpush.lab.layout import (
    BRIDGE,
    GATEWAY_IP,
    NETNS_PREFIX,
    NFT_TABLE,
    SUBNET,
    VETH_PREFIX,
    LabHost,
    LabPaths,
)
from mmpush.lab.sh import LabError, run, succeeds

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def create_bridge() -> None:
    """Create the lab bridge with the gateway address (the lab hosts' default route)."""
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{GATEWAY_IP}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def create_host_network(host: LabHost) -> None:
    """Give ``host`` its own network namespace, wired to the bridge by a veth pair.

    Inside, the interface is ``eth0`` with the host's lab address and a default route via the
    bridge; ``lo`` is up.
    """
    ns = host.netns
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", host.veth, "master", BRIDGE])
    run(["ip", "link", "set", host.veth, "up"])
    run(["ip", "-n", ns, "addr", "add", f"{host.ip}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "route", "add", "default", "via", GATEWAY_IP])


def resolve_registry(names: list[str]) -> dict[str, list[str]]:
    """Resolve the package registry's host names (IPv4) on the host, as apt there would.

    resolve_registry(["deb.debian.org"]) == {"deb.debian.org": ["203.0.113.80"]}
    """
    resolved: dict[str, list[str]] = {}
    for name in names:
        try:
            infos = socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise LabError(f"cannot resolve the package registry {name!r}: {error}") from error
        resolved[name] = sorted({str(info[4][0]) for info in infos})
    return resolved


def registry_names(rootfs: Path) -> list[str]:
    """The host names the lab hosts' apt sources point at (from the rootfs)."""
    names: set[str] = set()
    sources = [rootfs / "etc/apt/sources.list", *(rootfs / "etc/apt/sources.list.d").glob("*")]
    for source in sources:
        if source.is_file():
            names.update(re.findall(r"https?://([^/\s:]+)", source.read_text()))
    return sorted(names)


def nat_ruleset(registry_ips: list[str]) -> str:
    """The lab's nft table: masquerade lab traffic leaving the host, and forward only
    HTTP(S) to the package registry's addresses; everything else from the lab is dropped."""
    allowed = ", ".join(sorted(set(registry_ips)))
    return f"""
table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "{BRIDGE}" oifname "{BRIDGE}" accept
        oifname "{BRIDGE}" ct state established,related accept
        iifname "{BRIDGE}" ip daddr {{ {allowed} }} tcp dport {{ 80, 443 }} accept
        iifname "{BRIDGE}" counter drop
        oifname "{BRIDGE}" counter drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {SUBNET} oifname != "{BRIDGE}" masquerade
    }}
}}
"""


def install_nat(registry_ips: list[str], paths: LabPaths) -> None:
    """Load the lab's nft table and turn on IPv4 forwarding, remembering its old value
    so :func:`remove_network` can restore it."""
    if not registry_ips:
        raise LabError("no package registry address to allow through NAT")
    run(["nft", "-f", "-"], input=nat_ruleset(registry_ips))
    if not paths.ip_forward_backup.exists():
        paths.ip_forward_backup.write_text(IP_FORWARD.read_text())
    IP_FORWARD.write_text("1\n")


def lab_netns() -> list[str]:
    """Names of the lab's network namespaces that exist now (stale ones included)."""
    listing = run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [name for name in names if name.startswith(NETNS_PREFIX)]


def lab_links() -> list[str]:
    """Names of the lab's bridge and veths on the host (stale ones included)."""
    listing = run(["ip", "-o", "link", "show"], check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines()]
    return [n for n in names if n == BRIDGE or n.startswith(VETH_PREFIX)]


def remove_network(paths: LabPaths) -> None:
    """Remove namespaces, veths, the bridge and the nft table; restore ip_forward.

    Safe to call when some or all of it is already gone.
    """
    for ns in lab_netns():
        run(["ip", "netns", "delete", ns], check=False)
    for link in lab_links():
        run(["ip", "link", "delete", link], check=False)
    if succeeds(["nft", "list", "table", "inet", NFT_TABLE]):
        run(["nft", "delete", "table", "inet", NFT_TABLE])
    if paths.ip_forward_backup.exists():
        IP_FORWARD.write_text(paths.ip_forward_backup.read_text())
        paths.ip_forward_backup.unlink()
