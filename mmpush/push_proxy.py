"""The Mattermost Push Proxy as a hardened systemd service.

    from mmpush.push_proxy import install_push_proxy
    install_push_proxy(settings)          # in a deploy, for hosts in push_proxies

Layout on the host:

    /opt/mattermost-push-proxy/releases/<version>/   unpacked release (root-owned, read-only)
    /opt/mattermost-push-proxy/current -> releases/<version>
    /etc/mattermost-push-proxy/mattermost-push-proxy.json    config (0600, service user)
    /etc/mattermost-push-proxy/credentials/                  APNs / FCM files (0600)

Upgrade: set a new version + sha256 and deploy; rollback: set the old ones again (the old
release directory is still there, so it is just a symlink switch and a restart).
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.server import Arch
from pyinfra.operations import files, server, systemd

from mmpush.operations import (
    daemon_reload_if_changed,
    release,
    restart_if_changed,
    secret_file,
    symlink,
    system_user,
)
from mmpush.render import render
from mmpush.settings import (
    EasSettings,
    PushProxyArtifact,
    Secret,
    Settings,
    SettingsError,
    release_arch,
)
from mmpush.transactions import bash

SERVICE = "mattermost-push-proxy"
USER = "mattermost-push-proxy"
ROOT = "/opt/mattermost-push-proxy"
CONFIG_DIR = "/etc/mattermost-push-proxy"
CONFIG_FILE = f"{CONFIG_DIR}/mattermost-push-proxy.json"
CREDENTIALS_DIR = f"{CONFIG_DIR}/credentials"
BINARY = "bin/mattermost-push-proxy"
UNIT_FILE = f"/etc/systemd/system/{SERVICE}.service"


@dataclass(frozen=True)
class Credential:
    """A credential file as it lands on the host."""

    path: str
    secret: Secret


def credentials(eas: EasSettings) -> list[Credential]:
    """Where each configured credential goes on the host (one file per app entry)."""
    placed = []
    for entry in eas.apple:
        if entry.auth_key:
            placed.append(Credential(f"{CREDENTIALS_DIR}/{entry.type}.p8", entry.auth_key))
        if entry.certificate:
            placed.append(Credential(f"{CREDENTIALS_DIR}/{entry.type}.pem", entry.certificate))
    for android in eas.android:
        placed.append(Credential(f"{CREDENTIALS_DIR}/{android.type}.json", android.service_account))
    return placed


def proxy_config(eas: EasSettings) -> dict[str, Any]:
    """The push proxy's config file, from settings (keys as the proxy reads them).

    proxy_config(settings.eas)["ListenAddress"] == "127.0.0.1:8066"
    """
    apple = []
    for entry in eas.apple:
        item: dict[str, Any] = {
            "Type": entry.type,
            "ApplePushUseDevelopment": entry.development,
            "ApplePushTopic": entry.topic,
            "ApplePushCertPrivate": "",
            "ApplePushCertPassword": "",
            "AppleAuthKeyFile": "",
            "AppleAuthKeyID": "",
            "AppleTeamID": "",
        }
        if entry.auth_key:
            item.update(
                AppleAuthKeyFile=f"{CREDENTIALS_DIR}/{entry.type}.p8",
                AppleAuthKeyID=entry.auth_key_id,
                AppleTeamID=entry.team_id,
            )
        else:
            item["ApplePushCertPrivate"] = f"{CREDENTIALS_DIR}/{entry.type}.pem"
            if entry.certificate_password:
                item["ApplePushCertPassword"] = entry.certificate_password.content.decode().strip()
        apple.append(item)
    android = [
        {
            "Type": entry.type,
            "AndroidApiKey": "",
            "ServiceFileLocation": f"{CREDENTIALS_DIR}/{entry.type}.json",
        }
        for entry in eas.android
    ]
    return {
        "ListenAddress": f"127.0.0.1:{eas.listen_port}",
        "ThrottlePerSec": eas.throttle_per_sec,
        "ThrottleMemoryStoreSize": eas.throttle_memory_store_size,
        "ThrottleVaryByHeader": "X-Forwarded-For",
        "EnableMetrics": eas.enable_metrics,
        "SendTimeoutSec": eas.send_timeout_sec,
        "RetryTimeoutSec": min(eas.retry_timeout_sec, eas.send_timeout_sec),
        "ApplePushSettings": apple,
        "AndroidPushSettings": android,
        "EnableConsoleLog": True,
        "EnableFileLog": False,
        "LogFileLocation": "",
        "LogFormat": eas.log_format,
    }


def release_url(artifact: PushProxyArtifact) -> str | None:
    """The release URL for this host's architecture (``uname -m``), or None for a local
    archive; an architecture the push proxy has no release for stops the run, naming it."""
    if artifact.url_template is None:
        return None
    machine = host.get_fact(Arch)
    try:
        return artifact.url_for(release_arch(machine))
    except ValueError as error:
        raise SettingsError(
            host.name, "push_proxy_url", artifact.url_template, f"{error} (uname -m is {machine})"
        ) from None


class FlatInstall(FactBase[list[str]]):
    """The entries of a push proxy unpacked flat in ``root`` by hand (Mattermost's install
    guide, or an Ansible role: ``root/bin/mattermost-push-proxy``, ``root/config/``...), that
    is every name in ``root`` but ``releases`` and ``current``; [] when there is none.

        host.get_fact(FlatInstall, root="/opt/mattermost-push-proxy")   # ["bin", "config"]
    """

    def command(self, root: str) -> str:
        r = shlex.quote(root)
        return (
            f"if [ -e {r}/bin/{shlex.quote(BINARY.rsplit('/', 1)[-1])} ]; then "
            f"find {r} -mindepth 1 -maxdepth 1 -printf '%f\\n'; fi; true"
        )

    def process(self, output: list[str]) -> list[str]:
        names = [line.strip() for line in output if line.strip()]
        return sorted(n for n in names if n not in ("releases", "current"))

    def default(self) -> list[str]:
        return []


@operation()
def set_aside_flat_install(root: str):
    """Move a push proxy installed flat in ``root`` by hand into
    ``root/releases/hand-installed-<UTC time>/``, whole, so it can be rolled back to; the
    process running from it keeps running (a rename keeps the files it has open) until the
    deploy restarts the service with the new release.

        set_aside_flat_install(name="The hand-made install, kept aside", root=ROOT)
    """
    names = host.get_fact(FlatInstall, root=root)
    if not names:
        host.noop(f"no hand-made install in {root}")
        return
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{root}/releases/hand-installed-{stamp}"
    logger.info(f"    [{host.name}] {', '.join(names)}: moved to {aside} (kept for a rollback)")
    moves = " && ".join(f"mv -- {shlex.quote(f'{root}/{n}')} {shlex.quote(aside)}/" for n in names)
    yield bash(f"set -euo pipefail; mkdir -p -- {shlex.quote(aside)} && {moves}")


@deploy("Mattermost Push Proxy")
def install_push_proxy(settings: Settings) -> None:
    """Install, configure and run the push proxy for a host in ``push_proxies``."""
    eas = settings.eas
    assert eas is not None, "install_push_proxy needs EAS settings (push_mode eas)"
    server.packages(name="Tools to fetch and check releases", packages=["curl", "tar"])
    system_user(name=f"System user {USER}", user=USER, home=ROOT)
    files.directory(name=f"{ROOT}", path=ROOT, user="root", group="root", mode="755")
    files.directory(name=CONFIG_DIR, path=CONFIG_DIR, user="root", group=USER, mode="750")
    files.directory(name=CREDENTIALS_DIR, path=CREDENTIALS_DIR, user=USER, group=USER, mode="700")
    installed = release(
        name=f"Release {eas.artifact.version} (sha256 {eas.artifact.sha256[:12]}...)",
        root=ROOT,
        artifact=eas.artifact,
        binary=BINARY,
        url=release_url(eas.artifact),
    )
    switched = symlink(
        name=f"{ROOT}/current -> releases/{eas.artifact.version}",
        path=f"{ROOT}/current",
        target=f"{ROOT}/releases/{eas.artifact.version}",
    )
    changes = [installed, switched]
    for credential in credentials(eas):
        changes.append(
            secret_file(
                name=f"Credential {credential.path}",
                dest=credential.path,
                secret=credential.secret,
                user=USER,
                group=USER,
            )
        )
    config_text = json.dumps(proxy_config(eas), indent=4) + "\n"
    changes.append(
        secret_file(
            name=CONFIG_FILE,
            dest=CONFIG_FILE,
            secret=Secret("settings", config_text.encode()),
            user=USER,
            group=USER,
        )
    )
    unit = files.put(
        name=UNIT_FILE,
        src=StringIO(
            render(
                "systemd/mattermost-push-proxy.service.j2",
                user=USER,
                root=ROOT,
                config_file=CONFIG_FILE,
                https_proxy=eas.https_proxy,
                no_proxy=",".join(eas.no_proxy),
            )
        ),
        dest=UNIT_FILE,
        user="root",
        group="root",
        mode="644",
    )
    changes.append(unit)
    daemon_reload_if_changed(unit)
    # a hand-made install (taken over): its user was kept above; its files go aside now that
    # the new release, config and unit are in place, and the one restart below switches over
    changes.append(
        set_aside_flat_install(name=f"A hand-made install in {ROOT}, kept aside", root=ROOT)
    )
    systemd.service(
        name=f"{SERVICE} enabled and running",
        service=SERVICE,
        running=True,
        enabled=True,
    )
    restart_if_changed(
        SERVICE, changes, name=f"Restart {SERVICE} (binary, config or credentials changed)"
    )
