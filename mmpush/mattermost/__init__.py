"""Mattermost servers' push settings, edited safely in config.json.

    configure_push(settings)     # in a deploy, for hosts in mattermost

Only the keys this project owns change (``EmailSettings.SendPushNotifications``,
``PushNotificationServer``, ``PushNotificationContents``, optionally ``LogSettings.FileLevel``);
every other byte of config.json stays as it was. Mattermost is restarted only when the file
changed. An ``MM_*`` environment override that would silently win over the file stops the run
(unless accepted).
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError

from mmpush.facts import MattermostEnvironment, PrivateFileState, UnitExists
from mmpush.jsonedit import JsonEditError, parse_object
from mmpush.operations import json_values, read_private_file, restart_and_wait
from mmpush.settings import Settings


def push_values(settings: Settings) -> dict[tuple[str, ...], Any]:
    """The config.json keys and values for the host's push mode (``off``: push disabled and
    no push server, so nothing of an earlier mode is left behind).

    push_values(eas_settings)[("EmailSettings", "PushNotificationServer")]
    # "https://push.example.com"
    """
    values: dict[tuple[str, ...], Any] = {
        ("EmailSettings", "SendPushNotifications"): settings.push_mode != "off",
        ("EmailSettings", "PushNotificationServer"): settings.push_server_url or "",
    }
    if settings.push_server_url is not None:
        values[("EmailSettings", "PushNotificationContents")] = settings.mattermost.contents
    if settings.mattermost.log_level:
        values[("LogSettings", "FileLevel")] = settings.mattermost.log_level
    return values


def env_name(keys: tuple[str, ...]) -> str:
    """The environment variable that overrides a config key: MM_EMAILSETTINGS_PUSHNOTIF..."""
    return "MM_" + "_".join(key.upper() for key in keys)


class MattermostConfigError(PyinfraError):
    """config.json cannot be edited safely; nothing was changed on any host."""


def check_config_json(path: str) -> None:
    """Stop the run before any host is touched if config.json is missing, not valid JSON, or
    cannot be written (checked while pyinfra prepares; the operation checks again when it
    runs). The file is read without printing it: it holds the database password."""
    info = host.get_fact(PrivateFileState, path=path)
    raw = read_private_file(host, path) if info["exists"] else None
    if raw is None:
        raise MattermostConfigError(
            f"host {host.name}: {path} does not exist (is Mattermost installed there? "
            "set mattermost_config_path)"
        )
    try:
        parse_object(raw.decode("utf-8"))
    except (UnicodeDecodeError, JsonEditError) as error:
        raise MattermostConfigError(
            f"host {host.name}: {path} is not valid JSON ({error}); nothing was changed on any "
            "host and the file is left untouched"
        ) from error


def check_service(unit: str) -> None:
    """Stop the run before any host is touched when the Mattermost unit does not exist (a
    restart after changing config.json would fail, leaving the run half done)."""
    if not host.get_fact(UnitExists, unit=unit):
        raise MattermostConfigError(
            f"host {host.name}: mattermost_service = {unit!r}: systemd has no such unit "
            "(set mattermost_service to the unit that runs Mattermost); nothing was changed"
        )


def check_overrides(settings: Settings, values: dict[tuple[str, ...], Any]) -> None:
    """An ``MM_*`` environment variable that overrides a push setting wins over config.json:
    the deploy would report success and change nothing. Stop the run (before any host is
    touched) naming the variable and where it is set, unless the data says
    ``mattermost_accept_env_overrides = True``; then warn."""
    found = host.get_fact(MattermostEnvironment, unit=settings.mattermost.service)
    defeated = {env_name(keys): found[env_name(keys)] for keys in values if env_name(keys) in found}
    if not defeated:
        return
    details = "; ".join(f"{name} (set in {', '.join(where)})" for name, where in defeated.items())
    message = (
        f"host {host.name}: {details} overrides config.json for {settings.mattermost.service}, "
        "so the push settings set here would have no effect"
    )
    if settings.mattermost.accept_env_overrides:
        logger.warning(f"    {message} (accepted: mattermost_accept_env_overrides = True)")
        return
    raise MattermostConfigError(
        f"{message}: remove the override, or set mattermost_accept_env_overrides = True to "
        "deploy anyway; nothing was changed on any host"
    )


@deploy("Mattermost push settings")
def configure_push(settings: Settings) -> None:
    """Point the Mattermost server at the push service of the host's push mode."""
    values = push_values(settings)
    check_service(settings.mattermost.service)
    check_config_json(settings.mattermost.config_path)
    check_overrides(settings, values)
    changed = json_values(
        name=f"Push settings in {settings.mattermost.config_path}",
        path=settings.mattermost.config_path,
        values=values,
        precheck=push_url_check(settings.push_server_url),
    )
    if changed.will_change:
        restart_and_wait(
            name=f"Restart {settings.mattermost.service} (push settings changed), "
            f"{settings.mattermost.restart_batch} at a time",
            service=settings.mattermost.service,
            ping_url=settings.mattermost.ping_url,
            _if=changed.did_change,
            _parallel=settings.mattermost.restart_batch,
        )


def push_url_check(url: str | None) -> str | None:
    """The shell check, run on the Mattermost server before it is pointed at ``url``: the push
    service answers ``/version`` over TLS this server trusts (its own trust store, DNS and
    egress, as Mattermost will reach it). None when push is off."""
    if url is None:
        return None
    version = shlex.quote(url + "/version")
    return (
        "set -uo pipefail\n"
        f"if ! out=$(curl -sS --fail --proto =https --max-time 15 -o /dev/null {version} 2>&1); "
        "then\n"
        f"  echo \"mmpush: this server cannot use the push service {url}: GET /version failed "
        '($out); its push settings were left as they were" >&2\n'
        "  exit 1\n"
        "fi\n"
    )
