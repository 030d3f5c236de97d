"""Where a Mattermost server writes ``mattermost.log`` and ``notifications.log``, as the running
server has it: ``LogSettings.FileLocation`` / ``NotificationLogSettings.FileLocation`` (a
directory; relative to the service's working directory), else ``<working directory>/logs``
(mattermost/mattermost ``server/config/logger.go``: ``GetLogFileLocation``,
``GetNotificationsLogFileLocation``).

    paths = log_paths(effective_text, working_directory="/opt/mattermost")
    paths.notifications   # "/opt/mattermost/logs/notifications.log"
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra.api import OperationError

from mmpush.checks.config import ConfigReadError, read_effective_config
from mmpush.jsonedit import JsonEditError, effective_value
from mmpush.operations import run_quiet
from mmpush.settings import MattermostSettings
from mmpush.transactions import bash

LOG_FILE = "mattermost.log"
NOTIFICATIONS_FILE = "notifications.log"
#: Mattermost's install directory, where its unit runs when it names no WorkingDirectory.
DEFAULT_WORKING_DIRECTORY = "/opt/mattermost"


@dataclass(frozen=True)
class LogPaths:
    """The two log files of one server (absolute paths on the host)."""

    server: str
    notifications: str


def working_directory_command(unit: str) -> str:
    """The unit's working directory (empty when it names none)."""
    return f"systemctl show -p WorkingDirectory --value {shlex.quote(unit)} 2>/dev/null || true"


def _setting(text: str, keys: tuple[str, ...]) -> str:
    """A string setting as Mattermost reads it ("" when missing, not a string, or unreadable)."""
    try:
        value = effective_value(text, keys)
    except JsonEditError:
        return ""
    return value if isinstance(value, str) else ""


def _directory(text: str, working_directory: str) -> str:
    if not text:
        return posixpath.join(working_directory, "logs")
    return posixpath.normpath(posixpath.join(working_directory, text))


def log_paths(effective_text: str, working_directory: str = "") -> LogPaths:
    """The log files the server writes, from its effective configuration (JSON text)."""
    base = working_directory.strip() or DEFAULT_WORKING_DIRECTORY
    server = _directory(_setting(effective_text, ("LogSettings", "FileLocation")), base)
    notifications = _directory(
        _setting(effective_text, ("NotificationLogSettings", "FileLocation")), base
    )
    return LogPaths(
        server=posixpath.join(server, LOG_FILE),
        notifications=posixpath.join(notifications, NOTIFICATIONS_FILE),
    )


def server_log_paths(target: Any, mm: MattermostSettings) -> LogPaths:
    """The log files of the running server on ``target`` (read while preparing, never
    printed: the configuration may hold the database DSN).

        server_log_paths(host, settings.mattermost).notifications
    """

    def run(command: str) -> str:
        return run_quiet(target, bash(command), "reading the server's configuration")

    try:
        effective = read_effective_config(run, mm)
    except (ConfigReadError, OperationError) as error:
        raise OperationError(f"host {target.name}: {error}") from None
    return log_paths(effective.text, run(working_directory_command(mm.service)))
