"""Lab hosts as booted systemd-nspawn containers over a shared, cached rootfs.

Each host gets an overlayfs view of the rootfs (its writes land in its own upper directory,
so a fresh host costs megabytes), its own SSH host key, machine id, /etc/hosts, and boots a
real systemd as PID 1 in its own network namespace.

    prepare_host(paths, host, rootfs, files={"/etc/motd": b"lab"})
    pid = boot_host(paths, host)
    wait_for_ssh(paths, host)
    ssh(paths, host, "systemctl is-system-running")
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mmpush.lab.layout import (
    DEPLOY_UID,
    DEPLOY_USER,
    GATEWAY_IP,
    LAB_HOSTS,
    LabHost,
    LabPaths,
)
from mmpush.lab.sh import LabError, run, wait_until


def host_dir(paths: LabPaths, host: LabHost) -> Path:
    """The directory holding one host's overlay layers and its merged root."""
    return paths.hosts_dir / host.name


def root_of(paths: LabPaths, host: LabHost) -> Path:
    """The host's merged root filesystem (as the container sees it)."""
    return host_dir(paths, host) / "root"


def new_ssh_keypair() -> tuple[bytes, str]:
    """A fresh Ed25519 key: (private key in OpenSSH format, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


def write_file(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte on (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def ensure_client_key(paths: LabPaths) -> str:
    """The lab's SSH client key (made once, kept across labs); returns its public line."""
    paths.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_file = paths.ssh_key.with_suffix(".pub")
    if not paths.ssh_key.exists() or not public_file.exists():
        private, public = new_ssh_keypair()
        write_file(paths.ssh_key, private, 0o600)
        write_file(public_file, public + " mmpush-lab\n")
    return public_file.read_text().strip()


def etc_hosts(
    host: LabHost, registry: Mapping[str, list[str]], hosts: tuple[LabHost, ...] = LAB_HOSTS
) -> str:
    """The /etc/hosts every lab host gets: all lab names, and the package registry pinned to
    the addresses the host's NAT allows (lab hosts have no DNS of their own)."""
    lines = [
        "# Managed by mmpush lab: lab names resolve here only.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{GATEWAY_IP}\tgateway.lab.test",
    ]
    for other in hosts:
        lines.append(f"{other.ip}\t{' '.join(other.fqdns)} {other.name}")
    for name, ips in sorted(registry.items()):
        lines.append(f"{ips[0]}\t{name}")
    return "\n".join(lines) + "\n"


def mount_overlay(paths: LabPaths, host: LabHost, rootfs: Path) -> Path:
    """Mount the host's root: the cached rootfs below, the host's own upper dir on top."""
    base = host_dir(paths, host)
    for part in ("upper", "work", "root"):
        (base / part).mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={rootfs},upperdir={base / 'upper'},workdir={base / 'work'}"
    run(["mount", "-t", "overlay", "overlay", "-o", options, str(base / "root")])
    return base / "root"


def prepare_host(
    paths: LabPaths,
    host: LabHost,
    rootfs: Path,
    client_public_key: str,
    registry: Mapping[str, list[str]],
    files: Mapping[str, tuple[bytes, int]] | None = None,
    hosts: tuple[LabHost, ...] = LAB_HOSTS,
) -> str:
    """Create the host's filesystem before boot; return its SSH host public key line.

    ``files`` maps absolute paths inside the host to (content, mode), e.g. emulators.
    """
    root = mount_overlay(paths, host, rootfs)
    host_private, host_public = new_ssh_keypair()
    write_file(root / "etc/ssh/ssh_host_ed25519_key", host_private, 0o600)
    write_file(root / "etc/ssh/ssh_host_ed25519_key.pub", host_public + "\n")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    write_file(root / "root/.ssh/authorized_keys", client_public_key + "\n", 0o600)
    home = root / "home" / DEPLOY_USER
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    write_file(home / ".ssh/authorized_keys", client_public_key + "\n", 0o600)
    for path in (home / ".ssh", home / ".ssh/authorized_keys"):
        os.chown(path, DEPLOY_UID, DEPLOY_UID)
    write_file(root / "etc/machine-id", secrets.token_hex(16) + "\n", 0o444)
    write_file(root / "etc/hostname", host.name + "\n")
    write_file(root / "etc/hosts", etc_hosts(host, registry, hosts))
    write_file(
        root / "etc/resolv.conf",
        "# Lab hosts resolve from /etc/hosts only (mmpush lab).\n"
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    for inside, (content, mode) in (files or {}).items():
        write_file(root / inside.lstrip("/"), content, mode)
    return host_public


CGROUP_PREFIX = "mmpush-lab-"


def systemd_cgroup_dirs() -> list[Path]:
    """The directories of this process's cgroup in the hierarchies systemd uses
    (cgroup v2, and v1's ``name=systemd`` on hybrid hosts)."""
    mounts = {}
    with open("/proc/self/mounts") as table:
        for line in table:
            _, point, kind, options = line.split()[:4]
            if kind == "cgroup2":
                mounts.setdefault("", point)
            elif kind == "cgroup" and "name=systemd" in options.split(","):
                mounts["name=systemd"] = point
    dirs = []
    with open("/proc/self/cgroup") as own:
        for line in own:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers in mounts:
                dirs.append(Path(mounts[controllers] + path))
    return dirs


def host_cgroups(host: LabHost) -> list[Path]:
    """One cgroup per lab host in each systemd hierarchy, so that the containers' systemd
    instances never share (and fight over) a cgroup tree when the machine running the lab
    has no systemd to give each its own scope (``--keep-unit`` keeps the caller's cgroup)."""
    return [parent / f"{CGROUP_PREFIX}{host.name}" for parent in systemd_cgroup_dirs()]


def _enter_cgroups(cgroups: list[Path]) -> None:
    for cgroup in cgroups:
        (cgroup / "cgroup.procs").write_text("0")


def remove_cgroups() -> None:
    """Remove the lab hosts' cgroups (once their processes are gone)."""
    for parent in systemd_cgroup_dirs():
        for cgroup in parent.glob(f"{CGROUP_PREFIX}*"):
            for child in sorted(cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if child.is_dir():
                    child.rmdir()
            cgroup.rmdir()


def boot_host(paths: LabPaths, host: LabHost) -> int:
    """Boot the host's systemd in its network namespace; return the nspawn PID.

    ``--register=no --keep-unit``: the machine running the lab may have no systemd itself,
    so nspawn is first moved into a cgroup of the host's own (:func:`host_cgroups`).
    """
    log = paths.logs_dir / f"{host.name}.console.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cgroups = host_cgroups(host)
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                "systemd-nspawn",
                "--boot",
                "--register=no",
                "--keep-unit",
                f"--machine={host.machine}",
                f"--hostname={host.name}",
                f"--directory={root_of(paths, host)}",
                f"--network-namespace-path=/run/netns/{host.netns}",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                "--console=passive",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _enter_cgroups(cgroups),
        )
    return process.pid


def write_ssh_files(
    paths: LabPaths, host_keys: Mapping[str, str], hosts: tuple[LabHost, ...] = LAB_HOSTS
) -> None:
    """Write known_hosts (every host's key pinned by IP and names) and an ssh_config that
    uses it with strict host key checking."""
    known, config = [], []
    for host in hosts:
        if host.name not in host_keys:
            continue
        names = ",".join([host.ip, host.name, *host.fqdns])
        known.append(f"{names} {host_keys[host.name]}")
        config += [
            f"Host {host.name} {' '.join(host.fqdns)} {host.ip}",
            f"    HostName {host.ip}",
            f"    User {DEPLOY_USER}",
            f"    IdentityFile {paths.ssh_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {paths.known_hosts}",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "    ConnectTimeout 5",
            "    LogLevel ERROR",
            "",
        ]
    write_file(paths.known_hosts, "\n".join(known) + "\n")
    write_file(paths.ssh_config, "\n".join(config))


def ssh(
    paths: LabPaths,
    host: LabHost,
    command: str,
    *,
    input: str | bytes | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a shell command as root on a lab host: over SSH as the deploy user (strict host
    keys, the lab key), through sudo, as an admin would.

    ssh(paths, lab_host("mm1"), "systemctl is-active mattermost").stdout
    """
    return run(
        ["ssh", "-F", str(paths.ssh_config), host.name, as_root(command)],
        input=input,
        timeout=timeout,
        check=check,
    )


def as_root(command: str) -> str:
    """The remote command line that runs ``command`` as root through the deploy user's sudo."""
    return f"sudo -n bash -c {shlex.quote(command)}"


def port_open(ip: str, port: int) -> bool:
    """True when something accepts TCP connections on ip:port."""
    try:
        with socket.create_connection((ip, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for_boot(paths: LabPaths, host: LabHost, timeout: float = 60) -> str:
    """Wait for sshd, then for systemd to finish booting; return its state.

    ``running`` or ``degraded`` are accepted; anything else is an error naming the host.
    """
    wait_until(f"sshd on {host.name} ({host.ip}:22)", lambda: port_open(host.ip, 22), timeout)
    result = ssh(paths, host, "systemctl is-system-running --wait", timeout=timeout, check=False)
    state = result.stdout.strip()
    if state not in ("running", "degraded"):
        raise LabError(f"{host.name} booted into state {state!r}; see its console log")
    return state


def stop_processes(pids: Iterable[int], timeout: float = 15) -> None:
    """TERM the processes (nspawn powers its container off cleanly), KILL what remains."""
    alive = [pid for pid in pids if _alive(pid)]
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in alive):
        time.sleep(0.1)
    for pid in alive:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in alive):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def lab_processes(paths: LabPaths) -> list[int]:
    """PIDs of every process the lab started that is still running (stale labs included):
    nspawn and Pebble name the lab directory on their command line, challtestsrv its DNS
    address on the lab bridge."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or not args[0]:
            continue
        program = os.path.basename(args[0].decode(errors="replace"))
        text = b" ".join(args).decode(errors="replace")
        ours = program in ("systemd-nspawn", "pebble") and str(paths.state_dir) in text
        ours = ours or (program == "pebble-challtestsrv" and GATEWAY_IP in text)
        if ours:
            found.append(int(entry.name))
    return found


def lab_mounts(paths: LabPaths) -> list[str]:
    """Mount points under the lab's hosts directory, deepest first."""
    prefix = str(paths.hosts_dir) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    return sorted(points, key=len, reverse=True)
