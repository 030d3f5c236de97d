"""Installing the test emulators (tests/emulators/) on lab hosts.

The lab installs them, never the deploys: a deploy must not know it talks to an emulator.
Files are placed in the host's filesystem before boot; :func:`post_boot_script` then creates
users and starts services over SSH.

    files = emulator_files(lab_host("mm1"))      # {"/opt/mattermost/bin/mattermost": (...)}
    ssh(paths, host, post_boot_script(host))
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from mmpush.lab.layout import (
    GATEWAY_IP,
    INTERNAL_ZONE,
    LAB_CLUSTER_NAME,
    LAB_DATABASE,
    LAB_DATABASE_USER,
    LAB_DNS_PORT,
    LAGGING_SERVER_IP,
    LAGGING_ZONE,
    TSIG_KEY_NAME,
    LabHost,
)

#: The emulators live with the tests, in the repository this package is installed from.
EMULATORS_DIR = Path(__file__).resolve().parents[2] / "tests" / "emulators"

#: The lab CA bundle's place in every lab host's trust store.
TRUST_STORE_FILE = "/usr/local/share/ca-certificates/mmpush-lab.crt"

MATTERMOST_HOME = "/opt/mattermost"
HPNS_DATA_DIR = "/var/lib/hpns-emulator"
HPNS_CERT_DIR = "/etc/hpns-emulator"
PUSH_SERVICES_DATA_DIR = "/var/lib/push-services-emulator"
PUSH_SERVICES_CERT_DIR = "/etc/push-services-emulator"

#: The lab's Mattermost servers are licensed (HPNS and id_loaded need a licence); a test
#: removes the file to see the unlicensed behaviour.
LAB_LICENSE = {
    "id": "mmpush-lab",
    "sku_short_name": "enterprise",
    "features": {"cluster": True, "mhpns": True, "id_loaded": True},
}
#: The lab's app credentials as Apple and Google know them (the stand-in's registry).
LAB_TEAM_ID = "LABTEAM001"
LAB_KEY_ID = "LABKEY0001"
LAB_REVOKED_KEY_ID = "LABKEY0002"
LAB_APNS_TOPICS = ("com.mattermost.rnbeta", "com.mattermost.react.native")
LAB_FCM_PROJECT = "mmpush-lab"
#: FCM registration tokens the stand-in knows (FCM refuses any other with INVALID_ARGUMENT,
#: as it refuses a fake one): lab tests and `mmpush lab send-dm` use these.
LAB_FCM_DEVICES = tuple(f"lab-android-{n:04d}" for n in range(1, 51))


def _read(relative: str) -> bytes:
    path = EMULATORS_DIR / relative
    if not path.exists():
        raise FileNotFoundError(f"emulator file missing from the repository: {path}")
    return path.read_bytes()


#: Where a database-configured lab server's MM_CONFIG lives (root only: it holds a password).
DATABASE_ENV_FILE = "/etc/mattermost/db.env"
DATABASE_DROPIN = "/etc/systemd/system/mattermost.service.d/mmpush-lab-database.conf"
#: The lab database host's name, as the cluster's servers reach it.
DATABASE_HOST = "db1"


def database_dsn(password: str) -> str:
    """The lab cluster's MM_CONFIG: ``postgres://mmuser:...@db1:5432/mattermost?...``."""
    return (
        f"postgres://{LAB_DATABASE_USER}:{password}@{DATABASE_HOST}:5432/{LAB_DATABASE}"
        "?sslmode=disable&connect_timeout=10"
    )


def emulator_files(host: LabHost, database_password: str = "") -> dict[str, tuple[bytes, int]]:
    """The emulator files ``host`` gets before boot: {path inside host: (content, mode)}.
    ``database_password``: the lab database's, for the database-configured servers."""
    files: dict[str, tuple[bytes, int]] = {}
    if "mattermost-db" in host.emulators:
        # as a site configures it: MM_CONFIG in an EnvironmentFile, local mode on, a cluster
        environment = "\n".join(
            [
                f"MM_CONFIG={database_dsn(database_password)}",
                "MM_SERVICESETTINGS_ENABLELOCALMODE=true",
                "MM_CLUSTERSETTINGS_ENABLE=true",
                f"MM_CLUSTERSETTINGS_CLUSTERNAME={LAB_CLUSTER_NAME}",
            ]
        )
        files[DATABASE_ENV_FILE] = (environment.encode() + b"\n", 0o600)
        files[DATABASE_DROPIN] = (
            f"[Unit]\nAfter=network-online.target\nWants=network-online.target\n\n"
            f"[Service]\nEnvironmentFile={DATABASE_ENV_FILE}\n".encode(),
            0o644,
        )
    if "mattermost" in host.emulators:
        files[f"{MATTERMOST_HOME}/bin/mattermost"] = (
            _read("mattermost/mattermost_emulator.py"),
            0o755,
        )
        files[f"{MATTERMOST_HOME}/config/config.json"] = (_read("mattermost/config.json"), 0o600)
        files["/etc/systemd/system/mattermost.service"] = (
            _read("mattermost/mattermost.service"),
            0o644,
        )
        files[f"{MATTERMOST_HOME}/data/license.json"] = (
            json.dumps(LAB_LICENSE).encode(),
            0o644,
        )
    if "hpns" in host.emulators:
        files["/usr/local/bin/hpns-emulator"] = (_read("hpns/hpns_emulator.py"), 0o755)
        files["/etc/systemd/system/hpns-emulator.service"] = (
            _read("hpns/hpns-emulator.service"),
            0o644,
        )
    if "push-services" in host.emulators:
        files["/usr/local/bin/push-services-emulator"] = (
            _read("apple_google/push_services_emulator.py"),
            0o755,
        )
        files["/etc/systemd/system/push-services-emulator.service"] = (
            _read("apple_google/push-services-emulator.service"),
            0o644,
        )
    return files


def zone_file(
    zone: str, records: dict[str, str], extra_ns: tuple[tuple[str, str], ...] = ()
) -> str:
    """A small zone: SOA, ns1 as its name server (plus ``extra_ns``: (name, address)), and A
    records ``{label: address}``."""
    lines = [
        "$TTL 60",
        f"@ IN SOA ns1.{INTERNAL_ZONE}. hostmaster.{zone}. ( 1 60 60 600 60 )",
        f"@ IN NS ns1.{INTERNAL_ZONE}.",
    ]
    for name, address in extra_ns:
        lines += [f"@ IN NS {name}.{zone}.", f"{name} IN A {address}"]
    lines += [f"{label} IN A {address}" for label, address in records.items()]
    return "\n".join(lines) + "\n"


def bind_files(
    host: LabHost, tsig_secret: str, hosts: tuple[LabHost, ...]
) -> dict[str, tuple[bytes, int]]:
    """BIND on the lab's DNS host: authoritative for the internal zones, taking updates of
    _acme-challenge TXT records signed with the lab's TSIG key (the `update-policy` a site
    needs), forwarding every other name to the lab DNS (pebble-challtestsrv)."""
    addresses = {h.name: h.ip for h in hosts}
    internal = {"ns1": host.ip, "outbound": addresses["proxy1"], "push": addresses["push1"]}
    grants = "\n".join(
        f"        grant {TSIG_KEY_NAME}. name _acme-challenge.{label}.{zone}. TXT;"
        for zone in (INTERNAL_ZONE, LAGGING_ZONE)
        for label in ("outbound", "push")
    )
    local = f"""key "{TSIG_KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{tsig_secret}";
}};
"""
    for zone in (INTERNAL_ZONE, LAGGING_ZONE):
        local += f"""zone "{zone}" {{
    type primary;
    file "/var/lib/bind/db.{zone}";
    update-policy {{
{grants}
    }};
}};
"""
    options = f"""options {{
    directory "/var/cache/bind";
    listen-on {{ any; }};
    listen-on-v6 {{ none; }};
    allow-query {{ any; }};
    recursion yes;
    allow-recursion {{ {host.ip.rsplit(".", 1)[0]}.0/24; 127.0.0.1; }};
    forward only;
    forwarders {{ {GATEWAY_IP} port {LAB_DNS_PORT}; }};
    dnssec-validation no;
}};
"""
    return {
        "/etc/bind/named.conf.options": (options.encode(), 0o644),
        "/etc/bind/named.conf.local": (local.encode(), 0o600),
        f"/var/lib/bind/db.{INTERNAL_ZONE}": (zone_file(INTERNAL_ZONE, internal).encode(), 0o644),
        f"/var/lib/bind/db.{LAGGING_ZONE}": (
            zone_file(
                LAGGING_ZONE,
                {"outbound": addresses["proxy1"]},
                extra_ns=(("ns2", LAGGING_SERVER_IP),),
            ).encode(),
            0o644,
        ),
    }


def post_boot_script(host: LabHost, database_password: str = "", subnet: str = "") -> str:
    """Shell run once on ``host`` after boot: trust the lab CA, then start its emulators (the
    database host first: the database-configured servers need it)."""
    lines = ["set -e", "update-ca-certificates >/dev/null"]
    if "bind" in host.emulators:
        lines += [
            "chgrp bind /etc/bind/named.conf.local && chmod 640 /etc/bind/named.conf.local",
            "chown bind:bind /var/lib/bind/db.*",
            "named-checkconf -z >/dev/null",
            "systemctl enable --now named.service",
            "for i in $(seq 100); do dig +short +time=1 @127.0.0.1 ns1.internal.test A "
            "| grep -q . && break; sleep 0.2; done",
        ]
    if "postgresql" in host.emulators:
        conf = "/etc/postgresql/15/main"
        lines += [
            f"echo \"listen_addresses = '*'\" > {conf}/conf.d/mmpush-lab.conf",
            # every database of the lab's user: a test gives a node a database of its own
            f"echo 'host all {LAB_DATABASE_USER} {subnet} scram-sha-256' "
            f">> {conf}/pg_hba.conf",
            "systemctl enable --now postgresql.service",
            "for i in $(seq 100); do runuser -u postgres -- pg_isready -q && break; sleep 0.2;"
            " done",
            # the password on stdin: never on a command line (sudo logs those)
            "runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<'SQL'",
            f"CREATE ROLE {LAB_DATABASE_USER} LOGIN PASSWORD '{database_password}';",
            f"CREATE DATABASE {LAB_DATABASE} OWNER {LAB_DATABASE_USER};",
            "SQL",
        ]
    if "mattermost" in host.emulators:
        lines += [
            "id mattermost >/dev/null 2>&1 || useradd --system --user-group "
            f"--home-dir {MATTERMOST_HOME} --shell /usr/sbin/nologin mattermost",
            f"mkdir -p {MATTERMOST_HOME}/logs {MATTERMOST_HOME}/data",
            f"chown -R mattermost:mattermost {MATTERMOST_HOME}",
            "systemctl daemon-reload",
            "systemctl enable --now mattermost.service",
        ]
        lines.append(f"chmod 755 {MATTERMOST_HOME}/data")
    if "hpns" in host.emulators:
        lines += [
            f"mkdir -p {HPNS_DATA_DIR}/acme-challenge {HPNS_CERT_DIR}",
            "systemctl daemon-reload",
            "systemctl enable --now hpns-emulator.service",
        ]
    if "push-services" in host.emulators:
        lines += [
            f"mkdir -p {PUSH_SERVICES_DATA_DIR}/acme-challenge {PUSH_SERVICES_CERT_DIR}",
            "systemctl daemon-reload",
            "systemctl enable --now push-services-emulator.service",
        ]
    return "\n".join(lines) + "\n"


def _load(relative: str, name: str) -> ModuleType:
    """Import one of the emulators' helper modules by path (they live with the tests)."""
    spec = importlib.util.spec_from_file_location(name, EMULATORS_DIR / relative)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_lab_fixtures(fixtures_dir: Path, version: str = "6.5.0") -> dict[str, str]:
    """What a site would bring to an EAS deploy, made for the lab: the push proxy release
    (the emulator, packaged like the official tarball) and throwaway APNs/FCM credentials,
    plus an APNs key that Apple (the stand-in) has revoked.

    Returns {"archive", "sha256", "version", "apns_key", "apns_revoked_key",
    "fcm_service_account"} (paths).
    """
    build = _load("push_proxy/build.py", "mmpush_lab_push_proxy_build")
    harness = _load("harness.py", "mmpush_lab_emulator_harness")
    fixtures_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    archive = build.build_release_tarball(fixtures_dir, version=version)
    credentials = fixtures_dir / "credentials"
    credentials.mkdir(exist_ok=True, mode=0o700)
    apns = harness.make_apns_p8_key(credentials / "apns-authkey.p8")
    revoked = harness.make_apns_p8_key(credentials / "apns-revoked-authkey.p8")
    fcm = harness.make_fcm_service_account(
        credentials / "fcm-service-account.json", project_id=LAB_FCM_PROJECT
    )
    for path in (apns, revoked, fcm):
        path.chmod(0o600)
    return {
        "archive": str(archive),
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "version": version,
        "apns_key": str(apns),
        "apns_revoked_key": str(revoked),
        "fcm_service_account": str(fcm),
    }


def push_services_registry(fixtures: dict[str, str]) -> bytes:
    """registry.json for the APNs/FCM stand-in: what Apple and Google know of the lab's app
    credentials (the revoked key included) and the lab's FCM devices."""
    harness = _load("harness.py", "mmpush_lab_emulator_harness")
    registry = harness.PushServicesRegistry()
    registry.add_apns_key_file(
        Path(fixtures["apns_key"]), LAB_TEAM_ID, LAB_KEY_ID, topics=LAB_APNS_TOPICS
    )
    registry.add_apns_key_file(
        Path(fixtures["apns_revoked_key"]),
        LAB_TEAM_ID,
        LAB_REVOKED_KEY_ID,
        topics=LAB_APNS_TOPICS,
        revoked=True,
    )
    registry.add_service_account_file(Path(fixtures["fcm_service_account"]))
    for token in LAB_FCM_DEVICES:
        registry.add_fcm_device(token, LAB_FCM_PROJECT)
    return json.dumps(registry.data, indent=2).encode()
