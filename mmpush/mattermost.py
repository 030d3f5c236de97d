"""Mattermost servers' push settings, edited safely in config.json.

    configure_push(settings)     # in a deploy, for hosts in mattermost

Only the keys this project owns change (``EmailSettings.SendPushNotifications``,
``PushNotificationServer``, ``PushNotificationContents``, optionally ``LogSettings.FileLevel``);
every other byte of config.json stays as it was. Mattermost is restarted only when the file
changed. An ``MM_*`` environment override that would silently win over the file is reported.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError

from mmpush.facts import FileBytes, MattermostEnvironment
from mmpush.jsonedit import JsonEditError, parse_object
from mmpush.operations import json_values, restart_if_changed
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
    """Stop the run before any host is touched if config.json is missing or not valid JSON
    (checked while pyinfra prepares; the operation checks again when it runs)."""
    raw = host.get_fact(FileBytes, path=path)
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


@deploy("Mattermost push settings")
def configure_push(settings: Settings) -> None:
    """Point the Mattermost server at the push service of the host's push mode."""
    values = push_values(settings)
    check_config_json(settings.mattermost.config_path)
    overrides = set(host.get_fact(MattermostEnvironment, unit=settings.mattermost.service))
    for keys in values:
        if env_name(keys) in overrides:
            logger.warning(
                f"    [{host.name}] {env_name(keys)} is set in {settings.mattermost.service}'s "
                f"environment: it wins over config.json, so {'.'.join(keys)} set here will "
                "have no effect until that override is removed"
            )
    changed = json_values(
        name=f"Push settings in {settings.mattermost.config_path}",
        path=settings.mattermost.config_path,
        values=values,
    )
    restart_if_changed(
        settings.mattermost.service,
        [changed],
        name=f"Restart {settings.mattermost.service} (push settings changed)",
    )
