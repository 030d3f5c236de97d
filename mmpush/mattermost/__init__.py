"""Mattermost servers' push settings, changed where the server's configuration lives.

    configure_push(settings)     # in a deploy, for hosts in mattermost

Only the keys this project owns change (``EmailSettings.SendPushNotifications``,
``PushNotificationServer``, ``PushNotificationContents``, optionally ``LogSettings.FileLevel``).
Where they live is detected from the running service (``mattermost_config_source = "auto"``):

- a file (``config.json``, or the path of ``--config``/``MM_CONFIG``): edited in place, every
  other byte kept, atomically with a backup; Mattermost restarted only when it changed, a
  batch of servers at a time;
- a database (``MM_CONFIG=postgres://...``, every High Availability cluster): changed only
  through the config API (the local-mode socket, else ``mattermost_api_url`` with a token),
  once per cluster, checked on every node, applied live without a restart.

An ``MM_*`` environment override that would silently win stops the run (unless accepted);
a server without the licence HPNS or ``id_loaded`` needs gets a warning naming it.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError

from mmpush.facts import MattermostEnvironment, PrivateFileState, UnitExists
from mmpush.jsonedit import JsonEditError, parse_object
from mmpush.mattermost.access import (
    ConfigAccess,
    TokenAccess,
    api_access,
    read_licence,
)
from mmpush.mattermost.api import (
    ConfigApiError,
    effective_push_settings,
    licence_problems,
)
from mmpush.mattermost.cluster import (
    ClusterError,
    cluster_key,
    cluster_mismatch_message,
    verify_cluster,
)
from mmpush.mattermost.operations import api_push_settings
from mmpush.mattermost.source import ConfigSource, MattermostConfigSource, source_problem
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


def detect_source(settings: Settings) -> ConfigSource:
    """Where this server's configuration lives, as the running service says (or as
    ``mattermost_config_source`` forces); stops the run before any host is touched when the
    deploy cannot change it safely."""
    mm = settings.mattermost
    detected = host.get_fact(MattermostConfigSource, unit=mm.service, socket_path=mm.local_socket)
    has_token = mm.api_url is not None and mm.admin_token is not None
    problem = source_problem(host.name, mm.config_source, detected, has_token)
    if problem:
        raise MattermostConfigError(problem)
    if mm.config_source == "file" or (detected.kind == "file" and detected.path is None):
        return replace(detected, kind="file", path=mm.config_path)
    if detected.kind == "file" and detected.path != mm.config_path:
        logger.info(
            f"    [{host.name}] the server reads {detected.path}{_origin(detected)}, not "
            f"{mm.config_path}: that file is the one edited"
        )
    return detected


def _origin(source: ConfigSource) -> str:
    return f" ({source.origin})" if source.origin else ""


def warn_about_licence(settings: Settings) -> None:
    """Warn, naming the host, when the server's licence does not cover what the mode needs
    (HPNS: pushes are not sent at all; ``id_loaded``: contents fall back to generic)."""
    url = settings.push_server_url
    if url is None:
        return
    licence = read_licence(host, settings.mattermost)
    if licence is None:
        logger.warning(
            f"    [{host.name}] could not read the server's licence (is it running?): HPNS and "
            "id_loaded contents need one"
        )
        return
    for problem in licence_problems(licence, url, settings.mattermost.contents):
        logger.warning(f"    [{host.name}] {problem}")


@deploy("Mattermost push settings")
def configure_push(settings: Settings) -> None:
    """Point the Mattermost server at the push service of the host's push mode, where its
    configuration lives (file or database)."""
    values = push_values(settings)
    check_service(settings.mattermost.service)
    source = detect_source(settings)
    check_overrides(settings, values)
    warn_about_licence(settings)
    if source.kind == "file":
        assert source.path is not None
        configure_file(settings, source.path, values)
    else:
        configure_database(settings, source, values)


def configure_file(settings: Settings, path: str, values: dict[tuple[str, ...], Any]) -> None:
    """config.json: edited in place (checked, atomic, backed up), then a restart, a batch of
    servers at a time, each waiting until the server answers again."""
    check_config_json(path)
    changed = json_values(
        name=f"Push settings in {path}",
        path=path,
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


def configure_database(
    settings: Settings, source: ConfigSource, values: dict[tuple[str, ...], Any]
) -> None:
    """A database configuration: through the config API only, once per cluster (servers one
    at a time: the first patches, the others check they see it), no restart."""
    mm = settings.mattermost
    access = api_access(mm, source)
    assert access is not None  # detect_source refused the host otherwise
    try:
        key = cluster_key(host.data, source)
    except ClusterError as error:
        raise MattermostConfigError(f"host {host.name}: {error}") from None
    current = read_effective_push_settings(access, values)
    record_cluster_view(key, current)
    api_push_settings(
        name=f"Push settings through the config API ({source.describe()}, once per cluster)",
        access=access,
        values=values,
        cluster=key,
        precheck=push_url_check(settings.push_server_url),
        _serial=True,
    )


def read_effective_push_settings(
    access: ConfigAccess, values: dict[tuple[str, ...], Any]
) -> dict[tuple[str, ...], Any]:
    """The push settings the running server has now (from the API); a server the deploy
    cannot read stops the run before any host is touched, naming host and how it was reached."""
    try:
        config = access.get(host)
    except ConfigApiError as error:
        setting = (
            "mattermost_admin_token"
            if isinstance(access, TokenAccess)
            else ("mattermost_local_socket")
        )
        raise MattermostConfigError(
            f"host {host.name}: {setting}: {error}; nothing was changed on any host"
        ) from None
    return effective_push_settings(config, list(values))


#: What each cluster's nodes reported while preparing: {cluster key: {host: values}}.
CLUSTER_VIEWS: dict[str, dict[str, dict[tuple[str, ...], Any]]] = {}


def record_cluster_view(key: str | None, current: dict[tuple[str, ...], Any]) -> None:
    """Nodes of one cluster must report the same push settings before anything changes: they
    share one configuration. Otherwise stop the run, naming the nodes (whichever node prepares
    last sees the others)."""
    if key is None:
        return
    view = CLUSTER_VIEWS.setdefault(key, {})
    view[host.name] = current
    different = verify_cluster(view)
    if different:
        raise MattermostConfigError(
            cluster_mismatch_message(key, view)
            + "; they do not share one configuration (check MM_CONFIG and mattermost_cluster); "
            "nothing was changed on any host"
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
        f'  echo "mmpush: this server cannot use the push service {url}: GET /version failed '
        '($out); its push settings were left as they were" >&2\n'
        "  exit 1\n"
        "fi\n"
    )
