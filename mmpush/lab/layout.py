"""What the lab is made of: its hosts, its network and where its generated state lives.

Generated state (keys, known_hosts, Pebble's files, each host's writable layer) lives under
``/var/lib/mmpush-lab`` and the rootfs cache under ``/var/cache/mmpush-lab``; both can be moved
with ``MMPUSH_LAB_DIR`` and ``MMPUSH_LAB_CACHE``. Nothing generated is ever inside the repo.

    >>> [h.name for h in LAB_HOSTS]
    ['mm1', 'push1', 'proxy1', 'upstream1', 'upstream2', 'apns1']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: The lab's own subnet on the host bridge. Private, and used by nothing but the lab.
SUBNET_PREFIX = "10.77.44"
SUBNET = f"{SUBNET_PREFIX}.0/24"
GATEWAY_IP = f"{SUBNET_PREFIX}.1"
BRIDGE = "mmplab0"
NFT_TABLE = "mmpush_lab"
NETNS_PREFIX = "mmplab-"
VETH_PREFIX = "mmpl-"

#: Pebble (ACME CA) and pebble-challtestsrv (lab DNS), on the host.
PEBBLE_ACME_PORT = 14000
PEBBLE_MANAGEMENT_PORT = 15000
LAB_DNS_PORT = 8053
LAB_DNS_MANAGEMENT_PORT = 8055

#: The Debian release the lab hosts run and what the cached rootfs contains.
SUITE = "bookworm"
ROOTFS_PACKAGES = (
    "bind9",
    "bind9-dnsutils",
    "ca-certificates",
    "curl",
    "dbus",
    "iproute2",
    "openssh-server",
    "postgresql",
    "python3",
    "python3-cryptography",
    "python3-psycopg2",
    "sudo",
    "systemd",
    "systemd-sysv",
)

#: The user deploys connect as, with passwordless sudo, as production does; root may not log
#: in over SSH (a test turns that on for one host to keep the root path covered).
DEPLOY_USER = "deploy"
DEPLOY_UID = 1000

#: Debian packages the lab itself needs on the host.
HOST_PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "systemd-nspawn": "systemd-container",
    "pebble": "pebble",
    "pebble-challtestsrv": "pebble",
    "nft": "nftables",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
}

#: Mattermost's hosted push services, answered in the lab by the HPNS stand-in on upstream1.
HOSTED_PUSH_NAMES = (
    "push.mattermost.com",
    "global.push.mattermost.com",
    "us.push.mattermost.com",
    "eu.push.mattermost.com",
    "ap.push.mattermost.com",
    "hpns-de.mattermost.com",
    "push-test.mattermost.com",
)


#: Apple's and Google's push services, answered in the lab by the APNs/FCM stand-in on apns1.
APPLE_GOOGLE_NAMES = (
    "api.push.apple.com",
    "api.sandbox.push.apple.com",
    "fcm.googleapis.com",
    "oauth2.googleapis.com",
)


@dataclass(frozen=True)
class LabHost:
    """One booted Debian container of the lab.

    ``fqdns[0]`` is the host's own name; every name resolves to ``ip`` inside the lab.
    """

    name: str
    ip: str
    fqdns: tuple[str, ...]
    groups: tuple[str, ...]
    emulators: tuple[str, ...] = field(default=())

    @property
    def netns(self) -> str:
        """The network namespace the container lives in: ``mmplab-mm1``."""
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        """The host side of the container's veth pair: ``mmpl-mm1``."""
        return f"{VETH_PREFIX}{self.name}"

    @property
    def machine(self) -> str:
        """The nspawn machine name: ``mmplab-mm1``."""
        return f"{NETNS_PREFIX}{self.name}"


BASE_HOSTS: tuple[LabHost, ...] = (
    LabHost("mm1", f"{SUBNET_PREFIX}.11", ("mm.lab.test",), ("mattermost",), ("mattermost",)),
    LabHost("push1", f"{SUBNET_PREFIX}.12", ("push.lab.test",), ("push_proxies",)),
    # its name is internal (internal.test): a certificate through ACME DNS-01 only
    LabHost(
        "proxy1",
        f"{SUBNET_PREFIX}.13",
        ("outbound.internal.test", "outbound.lab.test"),
        ("outbound_proxies",),
    ),
    LabHost("upstream1", f"{SUBNET_PREFIX}.14", HOSTED_PUSH_NAMES, ("lab_upstreams",), ("hpns",)),
    # A second stand-in with the same certificate: tests point the hosted names at it in the
    # lab DNS to see the outbound proxy follow an address change.
    LabHost(
        "upstream2", f"{SUBNET_PREFIX}.15", ("upstream2.lab.test",), ("lab_upstreams",), ("hpns",)
    ),
    # Apple's and Google's push services (APNs, FCM, Google's OAuth2), for the push proxy.
    LabHost(
        "apns1", f"{SUBNET_PREFIX}.19", APPLE_GOOGLE_NAMES, ("lab_upstreams",), ("push-services",)
    ),
    # A two-node cluster whose configuration is in PostgreSQL on db1 (MM_CONFIG), with local
    # mode on: the config API is the only way to change it.
    LabHost(
        "mm2",
        f"{SUBNET_PREFIX}.16",
        ("mm2.lab.test",),
        ("mattermost",),
        ("mattermost", "mattermost-db"),
    ),
    LabHost(
        "mm3",
        f"{SUBNET_PREFIX}.17",
        ("mm3.lab.test",),
        ("mattermost",),
        ("mattermost", "mattermost-db"),
    ),
    LabHost("db1", f"{SUBNET_PREFIX}.18", ("db.lab.test",), ("lab_databases",), ("postgresql",)),
    # The authoritative DNS of the internal zones (BIND), taking TSIG-signed updates; Pebble
    # asks it, and it forwards every other name to the lab DNS (pebble-challtestsrv).
    LabHost("ns1", f"{SUBNET_PREFIX}.20", ("ns1.internal.test",), ("lab_dns",), ("bind",)),
)

#: Internal zones on ns1: internal.test holds the outbound proxy's name; lag.test also names a
#: second authoritative server that never answers (a propagation timeout to test).
INTERNAL_ZONE = "internal.test"
LAGGING_ZONE = "lag.test"
LAGGING_SERVER_IP = f"{SUBNET_PREFIX}.251"
TSIG_KEY_NAME = "acme-update"

#: The lab database for the cluster's configuration (the password is made at `up`).
LAB_DATABASE = "mattermost"
LAB_DATABASE_USER = "mmuser"
LAB_CLUSTER_NAME = "mmlab"


#: More file-configured Mattermost servers (`mmpush lab up --mattermost-hosts N`) are
#: mm4, mm5, ... at 10.77.44.104, .105, ... (mm2 and mm3 are names the lab keeps for a
#: database-configured cluster).
FIRST_EXTRA_MATTERMOST = 4
MAX_MATTERMOST_HOSTS = 150


def extra_mattermost_host(number: int) -> LabHost:
    """The file-configured Mattermost server ``mm<number>`` (number 4 and up)."""
    return LabHost(
        f"mm{number}",
        f"{SUBNET_PREFIX}.{100 + number}",
        (f"mm{number}.lab.test",),
        ("mattermost",),
        ("mattermost",),
    )


def lab_layout(mattermost_hosts: int = 1) -> tuple[LabHost, ...]:
    """The lab's hosts with ``mattermost_hosts`` file-configured Mattermost servers (mm1,
    then mm4, mm5, ...): ``[h.name for h in lab_layout(3)][-2:] == ["mm4", "mm5"]``."""
    if not 1 <= mattermost_hosts <= MAX_MATTERMOST_HOSTS:
        raise ValueError(f"--mattermost-hosts {mattermost_hosts}: from 1 to {MAX_MATTERMOST_HOSTS}")
    extra = range(FIRST_EXTRA_MATTERMOST, FIRST_EXTRA_MATTERMOST + mattermost_hosts - 1)
    return BASE_HOSTS + tuple(extra_mattermost_host(n) for n in extra)


#: The default lab (one Mattermost server).
LAB_HOSTS = lab_layout()


def lab_host(name: str) -> LabHost:
    """The lab host called ``name`` (``lab_host("mm1").ip == "10.77.44.11"``), in any
    layout (``lab_host("mm7")`` is the seventh file-configured server's host)."""
    for host in BASE_HOSTS:
        if host.name == name:
            return host
    number = name.removeprefix("mm")
    if name.startswith("mm") and number.isdigit() and int(number) >= FIRST_EXTRA_MATTERMOST:
        return extra_mattermost_host(int(number))
    known = ", ".join(h.name for h in BASE_HOSTS)
    raise KeyError(f"no lab host named {name!r} (lab hosts: {known}, mm4, mm5, ...)")


@dataclass(frozen=True)
class LabPaths:
    """Where the lab keeps what it generates. ``LabPaths.default().state_file``."""

    state_dir: Path
    cache_dir: Path

    @classmethod
    def default(cls) -> LabPaths:
        return cls(
            Path(os.environ.get("MMPUSH_LAB_DIR", "/var/lib/mmpush-lab")),
            Path(os.environ.get("MMPUSH_LAB_CACHE", "/var/cache/mmpush-lab")),
        )

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "ca"

    @property
    def ca_bundle(self) -> Path:
        return self.ca_dir / "ca-bundle.pem"

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def fixtures_dir(self) -> Path:
        return self.state_dir / "fixtures"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def ip_forward_backup(self) -> Path:
        return self.state_dir / "ip_forward.orig"

    @property
    def rootfs_cache(self) -> Path:
        return self.cache_dir / "rootfs"
