"""`mmpush lab up | down | status`: the local lab of real Debian hosts.

    up(LabPaths.default())       # cleans a stale lab, then builds and boots a fresh one
    status(LabPaths.default())   # the documented state (see docs/lab.md)
    down(LabPaths.default())     # removes everything the lab made

State is written to ``state.json`` as soon as something exists, so ``down`` can always find
what an interrupted ``up`` left behind; ``down`` also sweeps by name for stale labs.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mmpush import acme
from mmpush.lab import ca, containers, emulators, limits, network, rootfs
from mmpush.lab.layout import (
    BASE_HOSTS,
    BRIDGE,
    DEPLOY_USER,
    GATEWAY_IP,
    HOST_PACKAGES,
    INTERNAL_ZONE,
    LAB_DNS_MANAGEMENT_PORT,
    LAB_DNS_PORT,
    LAB_HOSTS,
    LAGGING_ZONE,
    NFT_TABLE,
    SUBNET,
    TSIG_KEY_NAME,
    LabHost,
    LabPaths,
    lab_host,
    lab_layout,
)
from mmpush.lab.sh import LabError, run, step

STATE_VERSION = 1


# --- preflight -------------------------------------------------------------------------


def check_host_support() -> None:
    """Fail early, with the reason, where the lab cannot run at all."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts, systemd-nspawn)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        run(["modprobe", "overlay"], check=False)
        if "overlay" not in Path("/proc/filesystems").read_text():
            raise LabError("this kernel has no overlayfs, which the lab hosts' rootfs needs")


def install_host_packages() -> None:
    """apt-get install what the lab needs on this machine, if anything is missing."""
    missing = sorted({pkg for cmd, pkg in HOST_PACKAGES.items() if not shutil.which(cmd)})
    if not missing:
        return
    with step(f"Installing host packages: {' '.join(missing)}"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        os.environ.update(env)
        run(["apt-get", "update", "-qq"], timeout=600)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=900)
    still = sorted(cmd for cmd in HOST_PACKAGES if not shutil.which(cmd))
    if still:
        raise LabError(f"still missing after apt-get install: {', '.join(still)}")


# --- state -----------------------------------------------------------------------------


def read_state(paths: LabPaths) -> dict[str, Any] | None:
    """The lab's state as ``up`` recorded it, or None if there is no lab."""
    try:
        return json.loads(paths.state_file.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise LabError(f"{paths.state_file} is corrupt ({error}); run `mmpush lab down`") from error


def write_state(paths: LabPaths, state: dict[str, Any]) -> None:
    """Write state.json atomically."""
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(paths.state_file)


def new_state(
    paths: LabPaths, rootfs_path: Path, hosts: tuple[LabHost, ...] = LAB_HOSTS
) -> dict[str, Any]:
    """The documented lab state (docs/lab.md), before anything runs."""
    return {
        "version": STATE_VERSION,
        "phase": "starting",
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "state_dir": str(paths.state_dir),
        "rootfs": str(rootfs_path),
        "ssh": {
            "user": DEPLOY_USER,
            "key": str(paths.ssh_key),
            "known_hosts": str(paths.known_hosts),
            "config": str(paths.ssh_config),
        },
        "acme": {
            "directory_url": ca.ACME_DIRECTORY_URL,
            "ca_bundle": str(paths.ca_bundle),
            "dns_server": f"{GATEWAY_IP}:{LAB_DNS_PORT}",
            "dns_management_url": f"http://127.0.0.1:{LAB_DNS_MANAGEMENT_PORT}",
        },
        "network": {
            "subnet": SUBNET,
            "gateway": GATEWAY_IP,
            "bridge": BRIDGE,
            "nft_table": NFT_TABLE,
        },
        "registry": {},
        "processes": {},
        "hosts": [
            {
                "name": h.name,
                "ip": h.ip,
                "fqdns": list(h.fqdns),
                "groups": list(h.groups),
                "netns": h.netns,
                "pid": None,
            }
            for h in hosts
        ],
    }


def hosts_of(state: dict[str, Any]) -> tuple[LabHost, ...]:
    """The lab hosts a state describes (its layout, extra Mattermost servers included)."""
    return tuple(lab_host(entry["name"]) for entry in state["hosts"])


# --- up --------------------------------------------------------------------------------


def up(paths: LabPaths, mattermost_hosts: int = 1) -> dict[str, Any]:
    """Bring up a fresh lab (cleaning any earlier one first) and return its state;
    ``mattermost_hosts`` file-configured Mattermost servers (mm1, mm4, mm5, ...)."""
    try:
        hosts = lab_layout(mattermost_hosts)
    except ValueError as error:
        raise LabError(str(error)) from None
    check_host_support()
    install_host_packages()
    with step("Cleaning up any earlier lab"):
        down(paths, quiet=True)
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cached = rootfs.cached_rootfs(paths)
    title = "Using the cached Debian rootfs" if cached else "Building the Debian rootfs (cold)"
    with step(title):
        rootfs_path = rootfs.ensure_rootfs(paths)
    state = new_state(paths, rootfs_path, hosts)
    state["mattermost_hosts"] = mattermost_hosts
    write_state(paths, state)
    try:
        limits.raise_for(len(hosts), paths)
        _bring_up(paths, state, rootfs_path, hosts)
    except BaseException:
        click.echo("[lab] up failed: removing what was made (logs kept in logs/)", err=True)
        down(paths, quiet=True)
        raise
    return state


def _bring_up(
    paths: LabPaths, state: dict[str, Any], rootfs_path: Path, hosts: tuple[LabHost, ...]
) -> None:
    with step("Creating the lab network (bridge, namespaces, NAT to the Debian registry)"):
        registry = network.resolve_registry(network.registry_names(rootfs_path))
        state["registry"] = registry
        write_state(paths, state)
        network.create_bridge()
        for host in hosts:
            network.create_host_network(host)
        network.install_nat([ip for ips in registry.values() for ip in ips], paths)

    with step("Packaging the push proxy release, throwaway credentials and a site PKI"):
        state["fixtures"] = emulators.make_lab_fixtures(paths.fixtures_dir)
        state["fixtures"]["pki"] = ca.make_files_pki(paths.fixtures_dir / "pki", "push.lab.test")
        push_registry = emulators.push_services_registry(state["fixtures"])
        # the TSIG key that may add _acme-challenge records in the internal zones (ns1)
        tsig_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        tsig_file = paths.fixtures_dir / "tsig.secret"
        containers.write_file(tsig_file, tsig_secret + "\n", 0o600)
        dns_host = next(h for h in hosts if "bind" in h.emulators)
        state["dns"] = {
            "server": dns_host.ip,
            "zone": INTERNAL_ZONE,
            "lagging_zone": LAGGING_ZONE,
            "tsig_key_name": TSIG_KEY_NAME,
            "tsig_secret_file": str(tsig_file),
        }
        write_state(paths, state)

    with step("Starting Pebble (ACME CA) and the lab DNS"):
        ca.make_lab_ca(paths)
        state["processes"] = ca.start_pebble(paths, dns_server=f"{dns_host.ip}:53")
        write_state(paths, state)
        pki_root = Path(state["fixtures"]["pki"]["root"])
        bundle = ca.write_ca_bundle(paths, extra_roots=[pki_root]).read_bytes()
        for host in hosts:
            for name in host.fqdns:
                ca.add_dns_record(name, host.ip)

    # the cluster's database password: in the database host's SQL and the servers' 0600
    # EnvironmentFile only (never on a command line, never in the state file)
    database_password = secrets.token_urlsafe(18)
    with step(f"Booting {len(hosts)} hosts ({', '.join(h.name for h in hosts)})"):
        client_key = containers.ensure_client_key(paths)
        host_keys = {}
        for host in hosts:
            files = {
                emulators.TRUST_STORE_FILE: (bundle, 0o644),
                **emulators.emulator_files(host, database_password),
            }
            if "push-services" in host.emulators:
                registry_path = f"{emulators.PUSH_SERVICES_DATA_DIR}/registry.json"
                files[registry_path] = (push_registry, 0o644)
            if "bind" in host.emulators:
                files.update(emulators.bind_files(host, tsig_secret, hosts))
            host_keys[host.name] = containers.prepare_host(
                paths, host, rootfs_path, client_key, registry, files, hosts
            )
        containers.write_ssh_files(paths, host_keys, hosts)
        for entry in state["hosts"]:
            entry["pid"] = containers.boot_host(paths, lab_host(entry["name"]))
            write_state(paths, state)
        with ThreadPoolExecutor(min(len(hosts), 16)) as pool:
            boot_states = list(pool.map(lambda h: containers.wait_for_boot(paths, h), hosts))
        for entry, boot_state in zip(state["hosts"], boot_states, strict=True):
            entry["boot_state"] = boot_state

    def post_boot(host: LabHost) -> None:
        script = emulators.post_boot_script(host, database_password, SUBNET)
        # the script on stdin: sudo logs command lines, and this one holds a password
        containers.ssh(paths, host, "bash -s", input=script)

    with step("Installing the lab CA and the emulators on the hosts"):
        first = [h for h in hosts if {"postgresql", "bind"} & set(h.emulators)]
        for host in first:
            post_boot(host)
        with ThreadPoolExecutor(min(len(hosts), 16)) as pool:
            list(pool.map(post_boot, [h for h in hosts if h not in first]))

    with step("Issuing the stand-ins' certificates from Pebble (ACME HTTP-01)"):
        stand_ins = [
            ("hpns", emulators.HPNS_DATA_DIR, emulators.HPNS_CERT_DIR, "hpns-emulator"),
            (
                "push-services",
                emulators.PUSH_SERVICES_DATA_DIR,
                emulators.PUSH_SERVICES_CERT_DIR,
                "push-services-emulator",
            ),
        ]
        with ThreadPoolExecutor(len(stand_ins)) as pool:
            list(pool.map(lambda args: issue_stand_in_certificate(paths, *args), stand_ins))

    state["phase"] = "up"
    write_state(paths, state)


def issue_stand_in_certificate(
    paths: LabPaths, emulator: str, data_dir: str, cert_dir: str, service: str
) -> None:
    """Give the stand-ins running ``emulator`` a Pebble certificate for the names of the first
    of them, through the project's own ACME client (HTTP-01, answered by the stand-in on port
    80 from ``<data_dir>/acme-challenge``), as a lab host would get one; the others (the
    second HPNS stand-in) get the same certificate."""
    stand_ins = [h for h in BASE_HOSTS if emulator in h.emulators]
    first = stand_ins[0]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first.fqdns[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in first.fqdns]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    challenge_dir = f"{data_dir}/acme-challenge"

    def publish(token: str, key_authorization: str) -> None:
        containers.ssh(paths, first, f"cat > {challenge_dir}/{token}", input=key_authorization)

    def unpublish(token: str) -> None:
        containers.ssh(paths, first, f"rm -f {challenge_dir}/{token}", check=False)

    settings = acme.AcmeSettings(
        directory_url=ca.ACME_DIRECTORY_URL,
        email=None,
        ca_bundle=str(paths.ca_bundle),
        timeout=120,
    )
    issued = acme.obtain_certificate(
        settings,
        acme.generate_account_key(),
        csr.public_bytes(serialization.Encoding.PEM),
        publish,
        unpublish,
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    for stand_in in stand_ins:
        containers.ssh(
            paths,
            stand_in,
            f"umask 077 && cat > {cert_dir}/privkey.pem.new && mv {cert_dir}/privkey.pem.new "
            f"{cert_dir}/privkey.pem",
            input=private_pem,
        )
        containers.ssh(
            paths,
            stand_in,
            f"cat > {cert_dir}/fullchain.pem.new && mv {cert_dir}/fullchain.pem.new "
            f"{cert_dir}/fullchain.pem && systemctl restart {service}.service",
            input=issued.fullchain_pem,
        )


# --- down ------------------------------------------------------------------------------


def down(paths: LabPaths, quiet: bool = False) -> None:
    """Remove every container, mount, namespace, veth, the bridge, the nft table and every
    process the lab made; restore ip_forward. Idempotent; finds stale labs by name."""
    state = None
    with contextlib.suppress(LabError):
        state = read_state(paths)
    pids = set(containers.lab_processes(paths))
    if state:
        pids.update(p for p in state.get("processes", {}).values() if p)
        pids.update(h["pid"] for h in state.get("hosts", []) if h.get("pid"))
    containers.stop_processes(sorted(pids))
    for mount in containers.lab_mounts(paths):
        if run(["umount", mount], check=False).returncode != 0:
            run(["umount", "--lazy", mount], check=False)
    containers.remove_cgroups()
    network.remove_network(paths)
    limits.restore(paths)
    for generated in (paths.hosts_dir, paths.fixtures_dir):
        if generated.exists():
            shutil.rmtree(generated, ignore_errors=True)
    paths.state_file.unlink(missing_ok=True)
    leftovers = containers.lab_processes(paths) + network.lab_netns() + containers.lab_mounts(paths)
    if leftovers:
        raise LabError(f"lab down left these behind: {leftovers}")
    if not quiet:
        click.echo("[lab] down: nothing of the lab is left running", err=True)


# --- status ----------------------------------------------------------------------------


def status(paths: LabPaths) -> dict[str, Any]:
    """The recorded state plus what is live now (``running`` per host and overall)."""
    state = read_state(paths)
    if state is None:
        return {"version": STATE_VERSION, "phase": "down", "running": False, "hosts": []}
    live_pids = set(containers.lab_processes(paths))
    for entry in state["hosts"]:
        entry["running"] = entry.get("pid") in live_pids
    state["running"] = state.get("phase") == "up" and all(h["running"] for h in state["hosts"])
    return state


def host_for(name: str) -> LabHost:
    """Look a lab host up by name or FQDN, for ``mmpush lab ssh``."""
    for host in BASE_HOSTS:
        if name == host.name or name in host.fqdns:
            return host
    return lab_host(name.split(".")[0] if name.endswith(".lab.test") else name)
