#!/usr/bin/python3
"""Mattermost server EMULATOR (tests only, not the real Mattermost server).

A single-file stand-in for the parts of the Mattermost server that push notifications and their
configuration depend on. Standard library only, plus ``psycopg2`` (Debian ``python3-psycopg2``)
when the configuration lives in PostgreSQL. Installed in the lab as
``/opt/mattermost/bin/mattermost`` and run by ``mattermost.service``. Each modelled behaviour
names the real source file it follows (repository mattermost/mattermost, under ``server/``):

* configuration source (``cmd/mattermost/commands``: ``getConfigDSN``): ``--config``/``-c``,
  else ``MM_CONFIG``, else ``config.json``. A ``postgres://``/``postgresql://``/``mysql://`` value
  is a database store (``config/utils.go`` ``IsDatabaseDSN``): the active row of
  ``Configurations`` is the configuration (``config/database.go``); anything else is a file
  (``config/file.go``). ``MM_<SECTION>_<KEY>`` environment variables win in both
  (``config/environment.go``) and are never written back (``config/store.go``);
* the config API (``channels/api4/config.go``, ``config_local.go``): ``GET``/``PUT
  /api/v4/config``, ``PUT /api/v4/config/patch`` (``config/utils.go`` ``Merge``),
  ``POST /api/v4/config/reload``, ``GET /api/v4/config/environment``, over HTTP for a system
  admin (session or personal access token) and without authentication over the local-mode unix
  socket (``channels/app/server.go`` ``startLocalModeServer``); changes apply at once;
* clusters: nodes sharing one database configuration see each other's changes. The real server
  sends a cluster message (``channels/app/platform/config.go`` ``SaveConfig`` ->
  ``ClusterInterface.ConfigChanged``, Enterprise only); the emulator polls the active row every
  second, only where a real node would be in a cluster (licence with Cluster,
  ``ClusterSettings.Enable``);
* licence gating (``channels/app/notification.go`` ``canSendPushNotifications``,
  ``public/model/push_notification.go`` ``IsMHPNSEndpoint``, ``channels/app/notification_push.go``
  ``BuildPushNotificationMessage``), with the licence emulated by ``<data dir>/license.json``;
* pushes through an asynchronous buffered hub (``notification_push.go``
  ``PushNotificationsHub``) to recipients whose status allows it (``notification_push.go``
  ``doesStatusAllowPushNotification``, ``channels/api4/status.go``); a ``REMOVE`` answer marks
  the session's device as removed (``notification_push.go`` ``sendToPushProxy``);
* push outcomes in ``notifications.log`` (``NotificationLogSettings``, ``config/logger.go``) with
  the real messages and fields; ``mattermost.log`` keeps the DEBUG troubleshooting line
  ``Sending push notification to <device id> wi msg of '<message>'``.

Users ``accounta``, ``accountb`` and the system admin ``sysadmin`` (password ``Password1!``) are
seeded in ``$MM_EMULATOR_DATA_DIR/emulator-db.json`` (default ``/opt/mattermost/data``), or, on a
database-configured server, in the table ``EmulatorData`` of ``SqlSettings.DataSource`` so that
cluster nodes share them as real nodes share their database.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import hmac
import ipaddress
import json
import os
import queue
import re
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

EMULATED_SERVER_VERSION = "10.11.0"
DEFAULT_CONFIG_DSN = "config.json"
DEFAULT_DATA_DIR = "/opt/mattermost/data"
DATA_DIR_ENV = "MM_EMULATOR_DATA_DIR"
DB_FILE_NAME = "emulator-db.json"
LICENSE_FILE_NAME = "license.json"
LOG_FILE_NAME = "mattermost.log"
NOTIFICATION_LOG_FILE_NAME = "notifications.log"
SEED_PASSWORD = "Password1!"
# (username, roles): model.User roles; "system_admin" grants every permission.
SEED_USERS = (
    ("accounta", "system_user"),
    ("accountb", "system_user"),
    ("sysadmin", "system_user system_admin"),
)
PUSH_SEND_TIMEOUT_SECONDS = 30
CLUSTER_POLL_SECONDS = 1.0
PASSWORD_HASH_ITERATIONS = 20_000
FAKE_SETTING = "*" * 32  # model.FakeSetting
SANITIZED_PASSWORD = "****"  # model.SanitizedPassword
ID_LOADED_DEFAULT_MESSAGE = "You've received a new message."  # i18n en.json
PUSH_MESSAGE_DM = "sent you a message."  # api.post.send_notifications_and_forget.push_message
PUSH_SEND_PREPARE = "Prepared to send"  # model.PushSendPrepare
PUSH_SEND_SUCCESS = "Successful"  # model.PushSendSuccess
PUSH_RECEIVED = "Received by device"  # model.PushReceived
NOTIFICATION_ERROR_REMOVE_DEVICE = "device was reported as removed"
SESSION_PROP_LAST_REMOVED_DEVICE_ID = "last_removed_device_id"
LICENSE_WARNING = (
    "Push notifications have been disabled. Update your license or go to System Console > "
    "Environment > Push Notification Server to use a different server"
)
# public/model/push_notification.go: IsMHPNSEndpoint compares the setting with these, exactly.
HPNS_URLS = (
    "https://push.mattermost.com",
    "https://hpns-de.mattermost.com",
    "https://global.push.mattermost.com",
    "https://us.push.mattermost.com",
    "https://eu.push.mattermost.com",
    "https://ap.push.mattermost.com",
)
DATABASE_DSN_PREFIXES = ("mysql://", "postgres://", "postgresql://")
# lib/pq (Go) options that libpq (psycopg2) does not know.
LIB_PQ_ONLY_OPTIONS = ("binary_parameters", "disable_prepared_binary_result")

# Mattermost ids: 16 random bytes, base32 with this alphabet, no padding -> 26 characters.
_MATTERMOST_ID_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ID_TRANSLATION = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _MATTERMOST_ID_ALPHABET.encode()
)

# mlog standard levels (config/logger.go stdLevels); a target logs its level and those above.
LOG_LEVELS = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "WARN": 30,
    "ERROR": 40,
    "FATAL": 50,
    "PANIC": 60,
}
PLAIN_LEVEL_TAGS = {
    "TRACE": "TRCE",
    "DEBUG": "DEBG",
    "INFO": "INFO",
    "WARN": "WARN",
    "ERROR": "EROR",
    "FATAL": "FATL",
    "PANIC": "PANC",
}

# The settings the emulator models, with the real defaults (public/model/config.go SetDefaults
# as reached through config.Store.Load, which sets SiteURL first: "isUpdate" is then true, so
# SendPushNotifications defaults to false and PushNotificationServer to ""). Their types are
# also the types environment overrides and API bodies are checked against.
DEFAULT_CONFIG: dict[str, dict[str, Any]] = {
    "ServiceSettings": {
        "SiteURL": "",
        "ListenAddress": ":8065",
        "ConnectionSecurity": "",
        "EnableDeveloper": False,
        "EnableUserAccessTokens": False,
        "EnablePostUsernameOverride": False,
        "ThreadAutoFollow": True,
        "CollapsedThreads": "always_on",
        "EnableLocalMode": False,
        "LocalModeSocketLocation": "/var/tmp/mattermost_local.socket",
        "SplitKey": "",
    },
    "TeamSettings": {
        "SiteName": "Mattermost",
        "TeammateNameDisplay": "username",
        "LockTeammateNameDisplay": False,
    },
    "SqlSettings": {
        "DriverName": "postgres",
        "DataSource": "postgres://mmuser:mostest@localhost/mattermost_test?sslmode=disable"
        "&connect_timeout=10&binary_parameters=yes",
        "DataSourceReplicas": [],
        "DataSourceSearchReplicas": [],
        "AtRestEncryptKey": "",
    },
    "LogSettings": {
        "EnableConsole": True,
        "ConsoleLevel": "DEBUG",
        "ConsoleJson": True,
        "EnableColor": False,
        "EnableFile": True,
        "FileLevel": "INFO",
        "FileJson": True,
        "FileLocation": "",
    },
    "NotificationLogSettings": {
        "EnableConsole": True,
        "ConsoleLevel": "DEBUG",
        "ConsoleJson": True,
        "EnableColor": False,
        "EnableFile": True,
        "FileLevel": "INFO",
        "FileJson": True,
        "FileLocation": "",
    },
    "FileSettings": {"DriverName": "local", "Directory": "./data/", "PublicLinkSalt": ""},
    "EmailSettings": {
        "SMTPPassword": "",
        "ConnectionSecurity": "",
        "SendPushNotifications": False,
        "PushNotificationServer": "",
        "PushNotificationContents": "full",
        "PushNotificationBuffer": 1000,
    },
    "ClusterSettings": {"Enable": False, "ClusterName": "", "ReadOnlyConfig": True},
    "PluginSettings": {"EnableUploads": False},
    "ExperimentalSettings": {"RestrictSystemAdmin": False},
}
# Struct fields nested one level deeper than a section (merged and overridden field by field);
# every other object-valued setting is a Go map or raw JSON, replaced whole by a patch.
NESTED_STRUCTS = {("MessageExportSettings", "GlobalRelaySettings")}
# public/model/config.go Sanitize: (path, masked only when non-empty).
SANITIZED_SETTINGS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("LdapSettings", "BindPassword"), True),
    (("FileSettings", "PublicLinkSalt"), False),
    (("FileSettings", "AmazonS3SecretAccessKey"), True),
    (("EmailSettings", "SMTPPassword"), True),
    (("GitLabSettings", "Secret"), True),
    (("GoogleSettings", "Secret"), True),
    (("Office365Settings", "Secret"), True),
    (("OpenIdSettings", "Secret"), True),
    (("SqlSettings", "DataSource"), False),
    (("SqlSettings", "AtRestEncryptKey"), False),
    (("ElasticsearchSettings", "Password"), False),
    (("MessageExportSettings", "GlobalRelaySettings", "SMTPPassword"), True),
    (("ServiceSettings", "SplitKey"), False),
    (("CacheSettings", "RedisPassword"), False),
)


class ConfigError(Exception):
    """The configuration cannot be used: the server refuses to start or the change is refused."""

    def __init__(self, message: str, error_id: str = "", status: int = 400):
        super().__init__(message)
        self.error_id = error_id
        self.status = status


def new_id() -> str:
    """Return a new 26-character Mattermost-style id."""
    encoded = base64.b32encode(os.urandom(16)).translate(_ID_TRANSLATION)
    return encoded.decode().rstrip("=").lower()[:26]


def now_millis() -> int:
    """Milliseconds since the epoch, like Mattermost's model.GetMillis()."""
    return int(time.time() * 1000)


def log_timestamp() -> str:
    """Timestamp in Mattermost's log format, e.g. ``2026-11-25 12:00:00.000 Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d} Z"


def _go_escape(text: str) -> str:
    """Go's encoding/json escapes <, >, & and U+2028/U+2029 (HTML-safe output)."""
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def go_marshal_indent(value: Any) -> str:
    """``json.MarshalIndent(cfg, "", "    ")`` (config/utils.go marshalConfig): no final newline."""
    return _go_escape(json.dumps(value, indent=4, ensure_ascii=False))


def go_encode(value: Any) -> str:
    """``json.NewEncoder(w).Encode(v)``: compact, HTML-escaped, one final newline."""
    return _go_escape(json.dumps(value, separators=(",", ":"), ensure_ascii=False)) + "\n"


# --------------------------------------------------------------------------------------------
# Configuration values (public/model/config.go, config/environment.go, config/utils.go)
# --------------------------------------------------------------------------------------------


def go_type_name(value: Any) -> str:
    """The Go type a JSON value of this shape decodes into."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]string"
    return "object"


def json_kind(value: Any) -> str:
    """The JSON kind of a decoded value, as Go's decoder names it in its errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def check_value_type(expected: Any, value: Any, where: str) -> None:
    """Raise ConfigError as Go's decoder does when ``value`` cannot go into ``expected``'s type.

    >>> check_value_type(True, "yes", "EmailSettings.SendPushNotifications")
    Traceback (most recent call last):
    ConfigError: json: cannot unmarshal string into Go struct field ... of type bool
    """
    if value is None or expected is None:
        return
    ok = True
    if isinstance(expected, bool):
        ok = isinstance(value, bool)
    elif isinstance(expected, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(expected, str):
        ok = isinstance(value, str)
    elif isinstance(expected, list):
        ok = isinstance(value, list)
    if not ok:
        raise ConfigError(
            f"json: cannot unmarshal {json_kind(value)} into Go struct field {where} "
            f"of type {go_type_name(expected)}"
        )


def check_config_types(cfg: dict[str, Any]) -> None:
    """Check the modelled settings of a decoded config, section shapes included."""
    for section, keys in DEFAULT_CONFIG.items():
        data = cfg.get(section)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError(
                f"json: cannot unmarshal {json_kind(data)} into Go struct field "
                f"Config.{section} of type model.{section}"
            )
        for key, default in keys.items():
            check_value_type(default, data.get(key), f"{section}.{key}")


def set_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with every modelled setting present (model.Config.SetDefaults).

    Keys the emulator does not model are kept as they are, in their order.
    """
    result = copy.deepcopy(cfg)
    for section, keys in DEFAULT_CONFIG.items():
        data = result.get(section)
        if not isinstance(data, dict):
            data = result[section] = {}
        for key, default in keys.items():
            if data.get(key) is None:
                data[key] = copy.deepcopy(default)
    # Secrets the real server generates on first use (FileSettings/SqlSettings SetDefaults).
    for section, key in (("FileSettings", "PublicLinkSalt"), ("SqlSettings", "AtRestEncryptKey")):
        if not result[section][key]:
            result[section][key] = (new_id() + new_id())[:32]
    if result["EmailSettings"]["ConnectionSecurity"] == "PLAIN":
        result["EmailSettings"]["ConnectionSecurity"] = ""
    return result


def fix_config(cfg: dict[str, Any]) -> None:
    """config/utils.go fixConfig: SiteURL loses trailing slashes; a local Directory gains one."""
    service = cfg["ServiceSettings"]
    service["SiteURL"] = str(service["SiteURL"]).rstrip("/")
    files = cfg["FileSettings"]
    directory = str(files.get("Directory") or "")
    if files.get("DriverName") == "local" and directory and not directory.endswith("/"):
        files["Directory"] = directory + "/"


def mm_environment(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """config/environment.go GetEnvironment: the variables whose upper-cased name starts MM."""
    return {key.upper(): value for key, value in environ.items() if key.upper().startswith("MM")}


_GO_INT = re.compile(r"^[+-]?[0-9]+$")
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_env_value(raw: str, current: Any) -> tuple[bool, Any]:
    """environment.go applyEnvKey: parse by the setting's type; an unparsable value is ignored.

    Returns (applied, value).
    """
    if isinstance(current, bool):
        if raw in _GO_TRUE:
            return True, True
        if raw in _GO_FALSE:
            return True, False
        return False, None
    if isinstance(current, int):
        return (True, int(raw)) if _GO_INT.match(raw) else (False, None)
    if isinstance(current, str):
        return True, raw
    if isinstance(current, list):
        return True, raw.split(" ")
    try:
        return True, json.loads(raw)
    except json.JSONDecodeError:
        return False, None


def _find_key(data: dict[str, Any], upper_name: str) -> str | None:
    """The key of ``data`` whose upper-cased name is ``upper_name`` (Go FieldByNameFunc)."""
    for key in data:
        if key.upper() == upper_name:
            return key
    return None


def _apply_env_key(data: dict[str, Any], name: str, raw: str, path: tuple[str, ...]) -> None:
    section_name, _, rest = name.partition("_")
    key = _find_key(data, section_name)
    if key is None:
        return
    value = data[key]
    nested = len(path) == 0 or (*path, key) in NESTED_STRUCTS
    if isinstance(value, dict) and nested:
        if rest:
            _apply_env_key(value, rest, raw, (*path, key))
        return
    applied, parsed = parse_env_value(raw, value)
    if applied:
        data[key] = parsed


def apply_environment(cfg: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """environment.go applyEnvironmentMap: a copy of ``cfg`` with MM_<SECTION>_<KEY> applied."""
    result = copy.deepcopy(cfg)
    for name, raw in env.items():
        _apply_env_key(result, name.removeprefix("MM_"), raw, ())
    return result


def environment_map(cfg: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """environment.go generateEnvironmentMap: {Section: {Key: true}} for overridden settings."""

    def walk(data: dict[str, Any], base: str, path: tuple[str, ...]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in data.items():
            nested = len(path) == 0 or (*path, key) in NESTED_STRUCTS
            if isinstance(value, dict) and nested:
                sub = walk(value, f"{base}_{key}", (*path, key))
                if sub:
                    found[key] = sub
            elif f"{base}_{key}".upper() in env:
                found[key] = True
        return found

    return walk(cfg, "MM", ())


def _paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _get_path(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def remove_env_overrides(
    cfg: dict[str, Any], no_env: dict[str, Any], env_map: dict[str, Any]
) -> dict[str, Any]:
    """environment.go removeEnvOverrides: overridden settings get back their stored value."""
    result = copy.deepcopy(cfg)
    for path in _paths(env_map):
        _set_path(result, path, copy.deepcopy(_get_path(no_env, path)))
    return result


def sanitize(cfg: dict[str, Any]) -> dict[str, Any]:
    """public/model/config.go Sanitize: a copy with secrets replaced by the fake setting."""
    result = copy.deepcopy(cfg)
    for path, only_when_set in SANITIZED_SETTINGS:
        value = _get_path(result, path)
        if value is None or (only_when_set and value == ""):
            continue
        _set_path(result, path, FAKE_SETTING)
    sql = result.get("SqlSettings", {})
    for key in ("DataSourceReplicas", "DataSourceSearchReplicas"):
        if isinstance(sql.get(key), list):
            sql[key] = [FAKE_SETTING for _ in sql[key]]
    if isinstance(sql.get("ReplicaLagSettings"), list):
        for item in sql["ReplicaLagSettings"]:
            if isinstance(item, dict):
                item["DataSource"] = FAKE_SETTING
    return result


def desanitize(actual: dict[str, Any], target: dict[str, Any]) -> None:
    """config/utils.go desanitize: fake settings in ``target`` take the actual values back."""
    for path, _ in SANITIZED_SETTINGS:
        if _get_path(target, path) == FAKE_SETTING:
            _set_path(target, path, copy.deepcopy(_get_path(actual, path)))
    for key in ("DataSourceReplicas", "DataSourceSearchReplicas"):
        wanted, real = target["SqlSettings"].get(key), actual["SqlSettings"].get(key)
        if isinstance(wanted, list) and isinstance(real, list) and len(wanted) == len(real):
            target["SqlSettings"][key] = [
                real[i] if value == FAKE_SETTING else value for i, value in enumerate(wanted)
            ]


def split_host_port(address: str) -> tuple[str, str] | None:
    """Go net.SplitHostPort; None when the address has no port."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            return None
        return address[1:end], address[end + 2 :]
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:
        return None
    return host, port


def _is_domain_name(host: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}\.?)*", host)) and any(
        ch.isalpha() or ch == "_" for ch in host
    )


def parse_listen_address(address: str) -> tuple[str, int]:
    """``:8065``, ``127.0.0.1:8065``, ``[::]:8065`` -> (host, port); ConfigError otherwise."""
    parts = split_host_port(address)
    error = ConfigError(
        "Invalid listen address for service settings Must be set.",
        "model.config.is_valid.listen_address.app_error",
    )
    if parts is None or not parts[1].isdigit() or int(parts[1]) > 65535:
        raise error
    host = parts[0]
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _is_domain_name(host):
                raise error from None
    return host, int(parts[1])


def is_valid(cfg: dict[str, Any]) -> None:
    """The part of model.Config.IsValid the emulator models; raises ConfigError (400)."""
    service = cfg["ServiceSettings"]
    if service["ConnectionSecurity"] not in ("", "TLS"):
        raise ConfigError(
            "Invalid value for webserver connection security.",
            "model.config.is_valid.webserver_security.app_error",
        )
    site_url = str(service["SiteURL"])
    if site_url and not (site_url.startswith("/") or urlsplit(site_url).scheme):
        raise ConfigError(
            "Site URL must be a valid URL and start with http:// or https://.",
            "model.config.is_valid.site_url.app_error",
        )
    parse_listen_address(str(service["ListenAddress"]))
    if service["CollapsedThreads"] not in ("disabled", "default_on", "default_off", "always_on"):
        raise ConfigError(
            "Invalid value for collapsed threads setting.",
            "model.config.is_valid.collapsed_threads.app_error",
        )
    if service["EnableLocalMode"]:
        parent = Path(str(service["LocalModeSocketLocation"])).parent
        if not parent.is_dir():
            raise ConfigError(
                f"Invalid local mode socket location: stat {parent}: no such file or directory",
                "model.config.is_valid.local_mode_socket.app_error",
            )
    sql = cfg["SqlSettings"]
    if sql["DriverName"] not in ("mysql", "postgres"):
        raise ConfigError(
            "Invalid driver name for SQL settings. Must be 'mysql' or 'postgres'.",
            "model.config.is_valid.sql_driver.app_error",
        )
    if not sql["DataSource"]:
        raise ConfigError(
            "Invalid data source for SQL settings. Must be set.",
            "model.config.is_valid.sql_data_src.app_error",
        )
    if cfg["EmailSettings"]["ConnectionSecurity"] not in ("", "TLS", "STARTTLS", "PLAIN"):
        raise ConfigError(
            "Invalid value for connection security for email settings. Must be '', 'TLS', "
            "or 'STARTTLS'.",
            "model.config.is_valid.email_security.app_error",
        )


def check_log_levels(cfg: dict[str, Any]) -> None:
    """config/logger.go stringToStdLevel: an enabled target needs a standard level."""
    for section in ("LogSettings", "NotificationLogSettings"):
        data = cfg[section]
        for enabled, key in (("EnableConsole", "ConsoleLevel"), ("EnableFile", "FileLevel")):
            level = str(data[key])
            if data[enabled] and level.upper() not in LOG_LEVELS:
                raise ConfigError(
                    f"invalid config source for {section}, {section}.{key}: "
                    f"{level.lower()} is not a standard level"
                )


def canonical_patch(base: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Decode an API body as Go decodes it into *model.Config.

    Keys match case-insensitively (exact match first); ``null`` means "not set"; a value of the
    wrong type is an error; keys of unknown sections are kept (the emulator does not know every
    setting) but never change a known setting's type.
    """
    if not isinstance(patch, dict):
        raise ConfigError("json: cannot unmarshal into Go value of type model.Config")
    result: dict[str, Any] = {}
    for raw_section, section_value in patch.items():
        section = raw_section if raw_section in base else _find_key(base, raw_section.upper())
        section = section or raw_section
        if section_value is None:
            continue
        base_section = base.get(section)
        if not isinstance(section_value, dict):
            raise ConfigError(
                f"json: cannot unmarshal {json_kind(section_value)} into Go struct field "
                f"Config.{section} of type model.{section}"
            )
        result[section] = _canonical_section(
            base_section if isinstance(base_section, dict) else {}, section_value, (section,)
        )
    return result


def _canonical_section(
    base: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    defaults = DEFAULT_CONFIG.get(path[0], {}) if len(path) == 1 else {}
    for raw_key, value in patch.items():
        key = raw_key if raw_key in base else _find_key(base, raw_key.upper()) or raw_key
        if value is None:
            continue
        expected = defaults.get(key, base.get(key))
        where = ".".join((*path, key))
        if (*path, key) in NESTED_STRUCTS and isinstance(value, dict):
            nested_base = base.get(key) if isinstance(base.get(key), dict) else {}
            result[key] = _canonical_section(nested_base, value, (*path, key))
            continue
        check_value_type(expected, value, where)
        result[key] = value
    return result


def merge_config(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """config/utils.go Merge (channels/utils/merge.go): a copy of ``base`` where every setting
    present in ``patch`` replaces its value; slices and maps are replaced whole."""
    result = copy.deepcopy(base)
    for section, values in patch.items():
        target = result.setdefault(section, {})
        for key, value in values.items():
            if (section, key) in NESTED_STRUCTS and isinstance(target.get(key), dict):
                target[key] = merge_config({"x": target[key]}, {"x": value})["x"]
            else:
                target[key] = copy.deepcopy(value)
    return result


# --------------------------------------------------------------------------------------------
# Configuration stores (config/store.go, config/file.go, config/database.go)
# --------------------------------------------------------------------------------------------


def is_database_dsn(dsn: str) -> bool:
    """config/utils.go IsDatabaseDSN."""
    return dsn.startswith(DATABASE_DSN_PREFIXES)


def sanitize_dsn(dsn: str) -> str:
    """public/model SanitizeDataSource: user and password become ****."""
    parts = urlsplit(dsn)
    if not parts.scheme:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("user", "password")]
    netloc = f"{SANITIZED_PASSWORD}:{SANITIZED_PASSWORD}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(sorted(query)), ""))


def libpq_dsn(dsn: str) -> str:
    """A lib/pq DSN that libpq accepts: the lib/pq-only options are dropped."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in LIB_PQ_ONLY_OPTIONS]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="/"), ""))


def resolve_config_file(name: str, cwd: Path, exe_dir: Path) -> Path:
    """config/file.go resolveConfigFilePath: absolute as given; a relative name is looked for
    as config/<name> near the working directory or the program, then as <name> itself."""
    path = Path(name)
    if path.is_absolute():
        return path
    bases = [cwd, cwd.parent, cwd.parent.parent, exe_dir, exe_dir.parent, exe_dir.parent.parent]
    for base in bases:
        for candidate in (base / "channels" / "config" / name, base / "config" / name):
            if candidate.is_file():
                return candidate
    if (cwd / name).is_file():
        return cwd / name
    for base in bases:
        if (base / "config").is_dir():
            return base / "config" / name
    raise ConfigError(f"failed to find config file {name}")


class ReadOnlyConfigurationError(Exception):
    """config/file.go ErrReadOnlyConfiguration: a clustered file store with ReadOnlyConfig."""


class FileConfigStore:
    """The file backing store: config.json, rewritten in Go's format, atomically."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():  # NewFileStore(createFileIfNotExists=true)
            try:
                path.touch(mode=0o600)
            except OSError as exc:
                raise ConfigError(f"could not create config file: {exc}") from exc

    def describe(self) -> str:
        return f"file://{self.path}"

    def load(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"failed to open {self.path} for reading: {exc}") from exc

    def set(self, cfg: dict[str, Any]) -> None:
        """file.go Set: refused when clustered with ReadOnlyConfig, else persisted."""
        cluster = cfg.get("ClusterSettings", {})
        if cluster.get("Enable") and cluster.get("ReadOnlyConfig"):
            raise ReadOnlyConfigurationError("configuration is read-only")
        data = go_marshal_indent(cfg)
        with contextlib.suppress(OSError):
            if self.path.read_text(encoding="utf-8") == data:
                return  # the real store rewrites identical bytes; the emulator keeps mtime
        mode = self.path.stat().st_mode & 0o7777 if self.path.exists() else 0o600
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def active_raw(self) -> str | None:
        return None

    def close(self) -> None:
        return None


def _import_psycopg2() -> Any:
    try:
        import psycopg2  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError(
            "a database DSN needs the PostgreSQL driver: apt-get install python3-psycopg2 "
            "(Debian) or pip install psycopg2-binary"
        ) from exc
    return psycopg2


def connect_postgres(dsn: str) -> Any:
    """A psycopg2 connection for a lib/pq DSN; errors never show the password."""
    psycopg2 = _import_psycopg2()
    try:
        return psycopg2.connect(libpq_dsn(dsn))
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"failed to connect to postgres database {sanitize_dsn(dsn)}: {reason}"
        ) from None


class PgConnection:
    """One psycopg2 connection shared by threads, one transaction at a time. A connection that
    broke (the database restarted) is replaced before it is used, as Go's database/sql retries
    a bad connection on a fresh one."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.lock = threading.Lock()
        self.conn = connect_postgres(dsn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor in a transaction: committed when the block ends, rolled back on error."""
        psycopg2 = _import_psycopg2()
        with self.lock:
            if not self.conn.closed:
                try:
                    with self.conn, self.conn.cursor() as probe:
                        probe.execute("SELECT 1")
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    with contextlib.suppress(Exception):
                        self.conn.close()
            if self.conn.closed:
                self.conn = connect_postgres(self.dsn)
            try:
                with self.conn, self.conn.cursor() as cur:
                    yield cur
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                with contextlib.suppress(Exception):
                    self.conn.close()
                raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class DatabaseConfigStore:
    """The database backing store (config/database.go), PostgreSQL only."""

    # config/migrations/postgres/00000{1,2,3}*.up.sql, applied by morph under the lock
    # "mm-config-lock-key" and recorded in db_config_migrations.
    MIGRATIONS = (
        (
            1,
            "create_configurations",
            "CREATE TABLE IF NOT EXISTS configurations (id varchar(26), value text NOT NULL, "
            "createat bigint NOT NULL, active boolean DEFAULT NULL, PRIMARY KEY (id), "
            "UNIQUE (active))",
        ),
        (
            2,
            "create_configuration_files",
            "CREATE TABLE IF NOT EXISTS configurationfiles (name VARCHAR(64), data text NOT NULL, "
            "createat bigint NOT NULL, updateat bigint NOT NULL, PRIMARY KEY (name))",
        ),
        (
            3,
            "update_configurations_sha",
            "ALTER TABLE Configurations ADD COLUMN IF NOT EXISTS SHA CHAR(64) DEFAULT ''",
        ),
    )
    LOCK_KEY = int.from_bytes(hashlib.sha256(b"mm-config-lock-key").digest()[:8], "big") >> 1

    def __init__(self, dsn: str):
        scheme = dsn.split("://", 1)[0]
        if scheme == "mysql":
            raise ConfigError("invalid DSN: the emulator supports PostgreSQL only, not mysql")
        self.dsn = dsn
        self.db = PgConnection(dsn)
        self.last_raw: str | None = None
        try:
            self._migrate()
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"failed to initialize: {exc}") from None

    def _migrate(self) -> None:
        with self.db.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self.LOCK_KEY,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS db_config_migrations "
                "(Version bigint NOT NULL PRIMARY KEY, Name varchar NOT NULL)"
            )
            for version, name, statement in self.MIGRATIONS:
                cur.execute("SELECT 1 FROM db_config_migrations WHERE Version = %s", (version,))
                if cur.fetchone() is None:
                    cur.execute(statement)
                    cur.execute(
                        "INSERT INTO db_config_migrations (Version, Name) VALUES (%s, %s)",
                        (version, name),
                    )

    def describe(self) -> str:
        return sanitize_dsn(self.dsn)

    def active_raw(self) -> str | None:
        """The Value of the active row, or None."""
        with self.db.transaction() as cur:
            cur.execute("SELECT Value FROM Configurations WHERE Active")
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def load(self) -> str:
        """database.go Load: the active row, or a config naming this database when none."""
        raw = self.active_raw()
        self.last_raw = raw
        if raw:
            return raw
        return json.dumps({"SqlSettings": {"DriverName": "postgres", "DataSource": self.dsn}})

    def set(self, cfg: dict[str, Any]) -> None:
        """database.go persist: skip an identical SHA, else a new active row."""
        value = go_marshal_indent(cfg)
        digest = hashlib.sha256(value.encode()).hexdigest()
        with self.db.transaction() as cur:
            # one writer at a time: two nodes saving at once must not leave two active rows
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self.LOCK_KEY,))
            cur.execute("SELECT SHA FROM Configurations WHERE Active")
            row = cur.fetchone()
            if row is not None and str(row[0] or "").strip() == digest:
                self.last_raw = value
                return
            cur.execute("UPDATE Configurations SET Active = NULL WHERE Active")
            cur.execute(
                "INSERT INTO Configurations (Id, Value, CreateAt, Active, SHA) "
                "VALUES (%s, %s, %s, TRUE, %s)",
                (new_id(), value, now_millis(), digest),
            )
        self.last_raw = value

    def close(self) -> None:
        self.db.close()


BackingStore = FileConfigStore | DatabaseConfigStore


def humanize_json_error(exc: json.JSONDecodeError) -> str:
    """utils.HumanizeJSONError: where in the text the JSON broke."""
    return f"parsing error at line {exc.lineno}, character {exc.colno}: {exc.msg}"


class ConfigStore:
    """config/store.go Store: the effective config (environment applied) and the stored one."""

    def __init__(self, backing: BackingStore, environ: dict[str, str] | os._Environ[str]):
        self.backing = backing
        self.env = mm_environment(environ)
        self.lock = threading.RLock()
        self.config: dict[str, Any] = {}
        self.config_no_env: dict[str, Any] = {}
        self.listeners: list[Callable[[dict[str, Any], dict[str, Any]], None]] = []

    def get(self) -> dict[str, Any]:
        """The effective configuration (do not modify)."""
        with self.lock:
            return self.config

    def environment_overrides(self) -> dict[str, Any]:
        with self.lock:
            return environment_map(self.config, self.env)

    def _decode(self, text: str) -> dict[str, Any]:
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.backing.describe()}: {humanize_json_error(exc)}") from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"{self.backing.describe()}: json: cannot unmarshal {json_kind(data)} "
                "into Go value of type model.Config"
            )
        try:
            check_config_types(data)
        except ConfigError as exc:
            raise ConfigError(f"{self.backing.describe()}: {exc}") from exc
        return data

    def load(self) -> bool:
        """store.go Load: read, default, apply the environment, validate, write back when it
        changed (every first load does). Returns whether the effective config changed."""
        with self.lock:
            text = self.backing.load()
            loaded = self._decode(text)
            service = loaded.get("ServiceSettings")
            if isinstance(service, dict) and service.get("SiteURL") is None:
                service["SiteURL"] = ""
            no_env = set_defaults(loaded)
            fix_config(no_env)
            effective = apply_environment(no_env, self.env)
            fix_config(effective)
            try:
                is_valid(effective)
            except ConfigError as exc:
                raise ConfigError(f"invalid config: {exc}", exc.error_id) from exc
            old = self.config
            changed = old != effective
            if changed or not text.strip():
                with contextlib.suppress(ReadOnlyConfigurationError):
                    self.backing.set(no_env)
            self.config, self.config_no_env = effective, no_env
        if changed and old:
            self._notify(old, effective)
        return changed

    def set(self, new_cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """store.go Set: save a whole new config; environment overrides stay in force and are
        never stored. Raises ConfigError (validation) or ReadOnlyConfigurationError."""
        with self.lock:
            old, old_no_env = self.config, self.config_no_env
            candidate = set_defaults(new_cfg)
            desanitize(old, candidate)
            effective = apply_environment(candidate, self.env)
            fix_config(effective)
            is_valid(effective)
            stored = remove_env_overrides(
                effective, old_no_env, environment_map(effective, self.env)
            )
            self.backing.set(stored)
            self.config, self.config_no_env = effective, stored
        if old != effective:
            self._notify(old, effective)
        return old, effective

    def _notify(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(old, new)


# --------------------------------------------------------------------------------------------
# Licence (public/model/license.go; emulated by <data dir>/license.json)
# --------------------------------------------------------------------------------------------


@dataclass
class License:
    """The parts of model.License the emulator uses."""

    id: str
    sku_name: str
    sku_short_name: str
    features: dict[str, bool]

    def has(self, feature: str) -> bool:
        return bool(self.features.get(feature, True))


class LicenseFile:
    """``<data dir>/license.json``, re-read whenever it changes (as an uploaded licence applies
    at once). Shaped like model.License: {"id", "sku_name", "sku_short_name", "starts_at",
    "expires_at", "features": {"mhpns": true, "cluster": true, "id_loaded": true, ...}}; a
    feature that is absent takes "future_features" (default true), as Features.SetDefaults."""

    def __init__(self, path: Path, logger: ServerLogger):
        self.path = path
        self.logger = logger
        self._stamp: tuple[int, int] | None = None
        self._license: License | None = None
        self._starts_at = 0
        self._expires_at = 0
        self._lock = threading.Lock()

    def current(self) -> License | None:
        with self._lock:
            try:
                stat = self.path.stat()
                stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                self._license = self._read() if stamp is not None else None
            license_ = self._license
        if license_ is not None and not self._in_force():
            return None
        return license_

    def _in_force(self) -> bool:
        now = now_millis()
        return self._starts_at <= now and (self._expires_at == 0 or now < self._expires_at)

    def _read(self) -> License | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            starts_at, expires_at = (
                int(data.get("starts_at") or 0),
                int(data.get("expires_at") or 0),
            )
        except (OSError, ValueError, TypeError) as exc:
            self.logger.error(
                "Found license key but it appears to be invalid.",
                "utils/license.go",
                filename=str(self.path),
                error=str(exc),
            )
            return None
        raw = data.get("features") if isinstance(data.get("features"), dict) else {}
        future = bool(raw.get("future_features", True))
        features = {key: bool(value) for key, value in raw.items()}
        for name in ("mhpns", "cluster", "id_loaded"):
            features.setdefault(name, future)
        self._starts_at, self._expires_at = starts_at, expires_at
        self.logger.info(
            "License key valid unlocking enterprise features.",
            "app/license.go",
            sku=str(data.get("sku_short_name", "")),
        )
        return License(
            id=str(data.get("id") or new_id()),
            sku_name=str(data.get("sku_name", "")),
            sku_short_name=str(data.get("sku_short_name", "")),
            features=features,
        )


def client_license(license_: License | None, full: bool) -> dict[str, str]:
    """utils/license.go GetClientLicense (GetSanitizedClientLicense without the permission)."""
    props = {"IsLicensed": "true" if license_ is not None else "false"}
    if license_ is None:
        return props
    props["SkuShortName"] = license_.sku_short_name
    if full:
        props.update(
            {
                "Id": license_.id,
                "SkuName": license_.sku_name,
                "Cluster": str(license_.has("cluster")).lower(),
                "MHPNS": str(license_.has("mhpns")).lower(),
                "IDLoadedPushNotifications": str(license_.has("id_loaded")).lower(),
            }
        )
    return props


# --------------------------------------------------------------------------------------------
# Logging (config/logger.go: mattermost.log and notifications.log)
# --------------------------------------------------------------------------------------------


class ServerLogger:
    """A Mattermost-like logger reading its settings from the live config at every line: a file
    target ``<FileLocation>/<file name>`` and a console target, each with its level and format.
    A level that is not a standard one (possible after a live change) keeps the previous one."""

    def __init__(self, settings: Callable[[], dict[str, Any]], file_name: str, working_dir: Path):
        self._settings = settings
        self._file_name = file_name
        self._working_dir = working_dir
        self._lock = threading.Lock()
        self._files: dict[Path, Any] = {}
        self._good: dict[str, Any] = {}

    def _current(self) -> dict[str, Any]:
        data = dict(self._settings())
        for key in ("ConsoleLevel", "FileLevel"):
            if str(data.get(key, "")).upper() not in LOG_LEVELS:
                data[key] = self._good.get(key, "INFO")
        self._good = data
        return data

    def file_path(self) -> Path | None:
        data = self._current()
        if not data.get("EnableFile"):
            return None
        location = str(data.get("FileLocation") or "")
        directory = Path(location) if location else self._working_dir / "logs"
        if not directory.is_absolute():
            directory = self._working_dir / directory
        return directory / self._file_name

    @staticmethod
    def _format(as_json: bool, level: str, msg: str, caller: str, fields: dict[str, Any]) -> str:
        timestamp = log_timestamp()
        if as_json:
            record: dict[str, Any] = {
                "timestamp": timestamp,
                "level": level.lower(),
                "msg": msg,
                "caller": caller,
            }
            record.update(fields)
            return json.dumps(record, default=str)
        line = f"[{timestamp}] [{PLAIN_LEVEL_TAGS[level]}] {msg}"
        for key, value in fields.items():
            text = str(value)
            if not text or any(ch in text for ch in ' "='):
                text = json.dumps(text)
            line += f" {key}={text}"
        return line

    def log(self, level: str, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        numeric = LOG_LEVELS[level]
        with self._lock:
            data = self._current()
            path = self.file_path()
            if path is not None and numeric >= LOG_LEVELS[str(data["FileLevel"]).upper()]:
                handle = self._files.get(path)
                if handle is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    handle = self._files[path] = open(path, "a", encoding="utf-8")  # noqa: SIM115
                handle.write(self._format(bool(data["FileJson"]), level, msg, caller, fields))
                handle.write("\n")
                handle.flush()
            if (
                data.get("EnableConsole")
                and numeric >= LOG_LEVELS[str(data["ConsoleLevel"]).upper()]
            ):
                line = self._format(bool(data["ConsoleJson"]), level, msg, caller, fields)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    def trace(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("TRACE", msg, caller, **fields)

    def debug(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("DEBUG", msg, caller, **fields)

    def info(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("INFO", msg, caller, **fields)

    def warn(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("WARN", msg, caller, **fields)

    def error(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("ERROR", msg, caller, **fields)

    def critical(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        """mlog.Critical: written at the error level, as mlog's critical level is."""
        self.log("ERROR", msg, caller, **fields)

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


# --------------------------------------------------------------------------------------------
# Users, sessions, channels, tokens and statuses (the emulator's stand-in for the data store)
# --------------------------------------------------------------------------------------------


def hash_password(password: str, salt: bytes | None = None) -> str:
    """PBKDF2-SHA256 (the real server uses bcrypt, which the standard library lacks)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PASSWORD_HASH_ITERATIONS)
    return f"pbkdf2_sha256${PASSWORD_HASH_ITERATIONS}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, iterations, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    salt = bytes.fromhex(salt_hex)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(iterations))
    return hmac.compare_digest(digest.hex(), digest_hex)


def seed_user(username: str, roles: str, created: int) -> dict[str, Any]:
    """A user record shaped like Mattermost's model.User (plus the password hash)."""
    first, last = ("System", "Admin") if username == "sysadmin" else ("Account", username[-1])
    return {
        "id": new_id(),
        "create_at": created,
        "update_at": created,
        "delete_at": 0,
        "username": username,
        "password": hash_password(SEED_PASSWORD),
        "auth_data": "",
        "auth_service": "",
        "email": f"{username}@mm.lab.test",
        "email_verified": True,
        "nickname": "",
        "first_name": first,
        "last_name": last.upper(),
        "position": "",
        "roles": roles,
        "notify_props": {
            "channel": "true",
            "comments": "never",
            "desktop": "mention",
            "desktop_sound": "true",
            "email": "true",
            "first_name": "false",
            "mention_keys": "",
            "push": "mention",
            "push_status": "away",
        },
        "last_password_update": created,
        "locale": "en",
        "timezone": {
            "automaticTimezone": "",
            "manualTimezone": "",
            "useAutomaticTimezone": "true",
        },
        "disable_welcome_email": False,
    }


def ensure_seeded(data: dict[str, Any]) -> bool:
    """Fill a data document: tables, server id and the seed users. Returns whether it changed."""
    before = json.dumps(data, sort_keys=True)
    data.setdefault("comment", "Mattermost EMULATOR database (tests only)")
    data.setdefault("diagnostic_id", new_id())
    for table in ("users", "sessions", "channels", "tokens", "statuses"):
        data.setdefault(table, {})
    names = {user["username"] for user in data["users"].values()}
    created = now_millis()
    for username, roles in SEED_USERS:
        if username not in names:
            user = seed_user(username, roles, created)
            data["users"][user["id"]] = user
    return json.dumps(data, sort_keys=True) != before


class JsonDataStore:
    """The data document kept in ``<data dir>/emulator-db.json`` (a file-configured server)."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / DB_FILE_NAME
        self.lock = threading.RLock()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read emulator database {self.path}: {exc}") from exc
        if ensure_seeded(self.data) or not self.path.exists():
            self._save()

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> dict[str, Any]:
        """A copy of the whole document."""
        with self.lock:
            return copy.deepcopy(self.data)

    @contextlib.contextmanager
    def write(self) -> Iterator[dict[str, Any]]:
        """The document to change in place; saved when the block ends without an error."""
        with self.lock:
            work = copy.deepcopy(self.data)
            yield work
            self.data = work
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def close(self) -> None:
        return None


class SqlDataStore:
    """The data document in table ``EmulatorData`` of ``SqlSettings.DataSource`` (a database-
    configured server), so that cluster nodes share users, sessions and tokens."""

    def __init__(self, dsn: str):
        if not dsn.startswith(("postgres://", "postgresql://")):
            raise ConfigError(
                f"SqlSettings.DataSource {sanitize_dsn(dsn)}: the emulator keeps its data in "
                "PostgreSQL only"
            )
        self.dsn = dsn
        self.db = PgConnection(dsn)
        with self.db.transaction() as cur:
            # cluster nodes start together: CREATE TABLE IF NOT EXISTS races in PostgreSQL
            # (a duplicate pg_type row), so one node at a time, as the real server runs its
            # migrations under a lock (store/sqlstore: morph's advisory lock)
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (DatabaseConfigStore.LOCK_KEY,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS EmulatorData (Name varchar(64) PRIMARY KEY, "
                "Value text NOT NULL, UpdateAt bigint NOT NULL)"
            )
            cur.execute(
                "INSERT INTO EmulatorData (Name, Value, UpdateAt) VALUES ('data', '{}', %s) "
                "ON CONFLICT (Name) DO NOTHING",
                (now_millis(),),
            )
        with self.write() as data:
            ensure_seeded(data)

    def describe(self) -> str:
        return f"{sanitize_dsn(self.dsn)} (table EmulatorData)"

    def read(self) -> dict[str, Any]:
        with self.db.transaction() as cur:
            cur.execute("SELECT Value FROM EmulatorData WHERE Name = 'data'")
            row = cur.fetchone()
        return json.loads(row[0]) if row else {}

    @contextlib.contextmanager
    def write(self) -> Iterator[dict[str, Any]]:
        with self.db.transaction() as cur:
            cur.execute("SELECT Value FROM EmulatorData WHERE Name = 'data' FOR UPDATE")
            row = cur.fetchone()
            data = json.loads(row[0]) if row else {}
            yield data
            cur.execute(
                "UPDATE EmulatorData SET Value = %s, UpdateAt = %s WHERE Name = 'data'",
                (json.dumps(data, sort_keys=True), now_millis()),
            )

    def close(self) -> None:
        self.db.close()


DataStore = JsonDataStore | SqlDataStore


def find_user_by_login(data: dict[str, Any], login_id: str) -> dict[str, Any] | None:
    wanted = login_id.strip().lower()
    for user in data["users"].values():
        if wanted in (user["username"].lower(), user["email"].lower()):
            return user
    return None


def mobile_sessions(data: dict[str, Any], user_id: str) -> list[dict[str, Any]]:
    """SessionStore.GetSessionsWithActiveDeviceIds (v10.5+): unexpired sessions with a device id
    that the push service has not reported as removed."""
    now = now_millis()
    return [
        dict(session)
        for session in data["sessions"].values()
        if session["user_id"] == user_id
        and session.get("device_id")
        and session.get("expires_at", 0) != 0
        and session.get("expires_at", 0) >= now
        and session["device_id"]
        != session.get("props", {}).get(SESSION_PROP_LAST_REMOVED_DEVICE_ID, "")
    ]


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """The user JSON the API returns (no password hash)."""
    return {key: value for key, value in user.items() if key != "password"}


STATUS_CHANNEL_TIMEOUT_MS = 20_000  # model.StatusChannelTimeout


def user_status(data: dict[str, Any], user_id: str) -> dict[str, Any]:
    """model.Status of a user; a user without one is offline (notification.go, GetStatus)."""
    status = data["statuses"].get(user_id)
    if status is None:
        return {
            "user_id": user_id,
            "status": "offline",
            "manual": False,
            "last_activity_at": 0,
            "dnd_end_time": 0,
        }
    return dict(status)


def set_user_status(
    data: dict[str, Any], user_id: str, status: str, manual: bool, dnd_end_time: int = 0
) -> None:
    """platform/status.go SetStatusOnline/Offline/AwayIfNeeded/DoNotDisturbTimed: a manual
    status is not overridden by an automatic change."""
    current = data["statuses"].get(user_id)
    if current is not None and current.get("manual") and not manual:
        return
    data["statuses"][user_id] = {
        "user_id": user_id,
        "status": status,
        "manual": manual,
        "last_activity_at": now_millis(),
        "dnd_end_time": dnd_end_time,
    }


def notify_props_reason(user: dict[str, Any], was_mentioned: bool) -> str:
    """notification_push.go doesNotifyPropsAllowPushNotification (no channel overrides)."""
    notify = user.get("notify_props", {}).get("push", "mention")
    if notify == "none":
        return "notify_level_none"
    if notify == "mention" and not was_mentioned:
        return "not_mentioned"
    return ""


def status_reason(
    notify_props: dict[str, Any], status: dict[str, Any], channel_id: str, is_crt: bool = False
) -> str:
    """notification_push.go doesStatusAllowPushNotification: "" when a push may go."""
    if status["status"] in ("dnd", "ooo"):
        return "user_status"
    push_status = notify_props.get("push_status")
    send_online = (
        status.get("active_channel", "") != channel_id
        or now_millis() - int(status.get("last_activity_at", 0)) > STATUS_CHANNEL_TIMEOUT_MS
        or is_crt
    )
    if (push_status == "online" or push_status is None) and send_online:
        return ""
    if push_status == "away" and status["status"] in ("away", "offline"):
        return ""
    if push_status == "offline" and status["status"] == "offline":
        return ""
    return "user_is_active"


# --------------------------------------------------------------------------------------------
# Push notifications (channels/app/notification_push.go, public/model/push_notification.go)
# --------------------------------------------------------------------------------------------

# model.PushNotification JSON tags: these keys are always present, the others are omitempty.
_PUSH_ALWAYS_PRESENT = (
    "ack_id",
    "platform",
    "server_id",
    "device_id",
    "post_id",
    "is_crt_enabled",
    "is_id_loaded",
    "signature",
)


def omit_empty(message: dict[str, Any]) -> dict[str, Any]:
    """Drop empty omitempty fields, as Go's encoding/json does for model.PushNotification."""
    return {
        key: value
        for key, value in message.items()
        if key in _PUSH_ALWAYS_PRESENT or value not in ("", 0, None, False)
    }


def split_device_id(device_id: str) -> tuple[str, str]:
    """SetDeviceIdAndPlatform: ``apple_rn-v2:TOKEN`` -> (``apple_rn-v2``, ``TOKEN``).

    The platform keeps its ``-v2`` suffix (the push proxy strips it). Without a ``:`` both stay
    empty, as in the real server, and the push proxy answers "missing device Id".
    """
    platform, sep, token = device_id.partition(":")
    if not sep:
        return "", ""
    return platform, token


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """A JWT-shaped signature value. The real server signs with ES256; the emulator cannot."""

    def segment(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims)}."


def is_hpns_url(url: str) -> bool:
    """public/model/push_notification.go IsMHPNSEndpoint: an exact match, no normalising."""
    return url in HPNS_URLS


def crt_enabled(cfg: dict[str, Any]) -> bool:
    """IsCRTEnabledForUser for a user without a preference."""
    return cfg["ServiceSettings"]["CollapsedThreads"] in ("always_on", "default_on")


def display_name(user: dict[str, Any], name_format: str, prefix: str = "@") -> str:
    """model.User.GetDisplayNameWithPrefix."""
    full = " ".join(part for part in (user.get("first_name"), user.get("last_name")) if part)
    name = ""
    if name_format == "nickname_full_name":
        name = user.get("nickname") or full
    elif name_format == "full_name":
        name = full
    return name or prefix + user["username"]


def clear_mention_tags(text: str) -> str:
    """model.ClearMentionTags."""
    return text.replace("<mention>", "").replace("</mention>", "")


def build_message_push(
    contents: str,
    post: dict[str, Any],
    channel: dict[str, Any],
    recipient: dict[str, Any],
    sender_name: str,
    channel_name: str,
    badge: int,
    crt: bool,
    id_loaded_licensed: bool,
) -> dict[str, Any]:
    """BuildPushNotificationMessage for a post in a direct channel.

    ``id_loaded`` without a licence falls back to ``generic``. An unknown contents value is
    used as is (model.Config.IsValid does not check it): it builds like ``generic``.
    """
    if contents == "id_loaded" and not id_loaded_licensed:
        contents = "generic"
    base: dict[str, Any] = {
        "ack_id": "",
        "platform": "",
        "server_id": "",
        "device_id": "",
        "post_id": post["id"],
        "category": "CAN_REPLY",
        "version": "v2",
        "type": "message",
        "team_id": channel.get("team_id", ""),
        "channel_id": channel["id"],
        "root_id": post.get("root_id", ""),
        "is_crt_enabled": False,
        "is_id_loaded": False,
        "signature": "",
        "badge": badge,
    }
    if contents == "id_loaded":
        # buildIdLoadedPushNotificationMessage: SenderId is the *receiving* user's id.
        base.update(
            is_crt_enabled=crt,
            is_id_loaded=True,
            sender_id=recipient["id"],
            message=ID_LOADED_DEFAULT_MESSAGE,
        )
        return base
    base["sender_id"] = post["user_id"]
    base["is_crt_enabled"] = crt
    if contents != "generic_no_channel" or channel["type"] == "D":
        base["channel_name"] = channel_name
    base["sender_name"] = sender_name
    direct = channel["type"] == "D"
    text = clear_mention_tags(post.get("message", ""))
    if contents == "full":
        base["message"] = text if direct else f"{sender_name}: {text}"
    elif direct:
        base["message"] = PUSH_MESSAGE_DM
    else:
        base["message"] = sender_name + " posted a message."
    return base


class PushError(Exception):
    """A push that did not reach the push service, or that it refused."""


@dataclass
class PushJob:
    """PushNotification{notificationType: message, ...}: one recipient of one post."""

    post: dict[str, Any]
    channel: dict[str, Any]
    recipient: dict[str, Any]
    sender_name: str
    channel_name: str


class PushHub:
    """PushNotificationsHub: a channel of PushNotificationBuffer jobs (a full buffer blocks the
    caller, as a full Go channel does) drained by a dispatcher that runs each job in its own
    thread, at most NumCPU*8 at once."""

    def __init__(self, buffer: int, handler: Callable[[PushJob], None], logger: ServerLogger):
        self.queue: queue.Queue[PushJob | None] = queue.Queue(maxsize=max(1, buffer))
        self.handler = handler
        self.logger = logger
        self.sema = threading.BoundedSemaphore((os.cpu_count() or 1) * 8)
        self.workers: set[threading.Thread] = set()
        self.workers_lock = threading.Lock()
        self.dispatcher = threading.Thread(target=self._dispatch, name="push-hub", daemon=True)
        self.dispatcher.start()

    def enqueue(self, job: PushJob) -> None:
        self.queue.put(job)

    def _dispatch(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            self.sema.acquire()
            worker = threading.Thread(target=self._work, args=(job,), daemon=True)
            with self.workers_lock:
                self.workers.add(worker)
            worker.start()

    def _work(self, job: PushJob) -> None:
        try:
            self.handler(job)
        except Exception as exc:  # the real hub logs the AppError and goes on
            self.logger.error(
                "Unable to send push notification",
                "app/notification_push.go",
                notification_type="message",
                error=repr(exc),
            )
        finally:
            self.sema.release()
            with self.workers_lock:
                self.workers.discard(threading.current_thread())

    def stop(self, timeout: float = 35) -> None:
        """Let the queued jobs run, then wait (bounded) for the running ones."""
        self.queue.put(None)
        deadline = time.monotonic() + timeout
        self.dispatcher.join(max(0.0, deadline - time.monotonic()))
        with self.workers_lock:
            workers = list(self.workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# The application: configuration, data, licence, loggers and pushes together
# --------------------------------------------------------------------------------------------


class App:
    """What a request handler works with (the real server's App/Server/PlatformService)."""

    def __init__(
        self,
        store: ConfigStore,
        logger: ServerLogger,
        notifications: ServerLogger,
        data: DataStore,
        licenses: LicenseFile,
    ):
        self.store = store
        self.logger = logger
        self.nlog = notifications
        self.data = data
        self.licenses = licenses
        self.posts: dict[str, dict[str, Any]] = {}
        self.unread: dict[str, int] = {}
        self.memory_lock = threading.Lock()
        # The system trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured), loaded once at start.
        self.tls_context = ssl.create_default_context()
        buffer = int(store.get()["EmailSettings"]["PushNotificationBuffer"])
        self.hub = PushHub(buffer, self.send_push_job, logger)
        self.diagnostic_id = str(data.read()["diagnostic_id"])

    @property
    def config(self) -> dict[str, Any]:
        return self.store.get()

    def license(self) -> License | None:
        return self.licenses.current()

    def cluster_active(self) -> bool:
        """A node is in a cluster with ClusterSettings.Enable and a licence with Cluster."""
        license_ = self.license()
        return bool(
            self.config["ClusterSettings"]["Enable"]
            and license_ is not None
            and license_.has("cluster")
        )

    # ---- notification.go ---------------------------------------------------------------------

    def can_send_push(self) -> bool:
        """notification.go canSendPushNotifications (HPNS check as IsMHPNSEndpoint)."""
        email = self.config["EmailSettings"]
        if not email["SendPushNotifications"]:
            self.nlog.debug(
                "Push notifications are disabled - server config",
                "app/notification.go",
                status="not_sent",
                reason="push_disabled",
            )
            return False
        license_ = self.license()
        if is_hpns_url(str(email["PushNotificationServer"])) and (
            license_ is None or not license_.has("mhpns")
        ):
            self.nlog.warn(
                "Push notifications are disabled - license missing",
                "app/notification.go",
                status="not_sent",
                reason="push_disabled_license",
            )
            self.logger.warn(LICENSE_WARNING, "app/notification.go")
            return False
        return True

    def send_notifications(
        self, post: dict[str, Any], channel: dict[str, Any], recipients: list[str]
    ) -> None:
        """The push part of notification.go SendNotifications for a direct message: the checks
        run now, the sending later in the hub."""
        if not self.can_send_push():
            return
        data = self.data.read()
        sender = data["users"].get(post["user_id"])
        if sender is None:
            return
        self.nlog.trace(
            "Begin sending push notifications",
            "app/notification.go",
            type="push",
            sender_id=sender["id"],
            post_id=post["id"],
        )
        cfg = self.config
        name_format = str(cfg["TeamSettings"]["TeammateNameDisplay"])
        for recipient_id in recipients:
            recipient = data["users"].get(recipient_id)
            if recipient is None:
                continue
            common = {
                "type": "push",
                "post_id": post["id"],
                "status": "not_sent",
            }
            reason = notify_props_reason(recipient, was_mentioned=True)  # a DM mentions
            if reason:
                self.nlog.debug(
                    "Notification not sent - notify props",
                    "app/notification_push.go",
                    **common,
                    reason=reason,
                    sender_id=post["user_id"],
                    receiver_id=recipient_id,
                )
                continue
            status = user_status(data, recipient_id)
            reason = status_reason(recipient.get("notify_props", {}), status, channel["id"])
            if reason:
                self.nlog.debug(
                    "Notification not sent - status",
                    "app/notification_push.go",
                    **common,
                    reason=reason,
                    sender_id=post["user_id"],
                    receiver_id=recipient_id,
                    receiver_status=status["status"],
                )
                continue
            self.hub.enqueue(
                PushJob(
                    post=copy.deepcopy(post),
                    channel=copy.deepcopy(channel),
                    recipient=copy.deepcopy(recipient),
                    sender_name=display_name(sender, name_format),
                    channel_name=display_name(sender, name_format),
                )
            )
        self.nlog.trace(
            "Finished sending push notifications",
            "app/notification.go",
            type="push",
            sender_id=sender["id"],
            post_id=post["id"],
        )

    # ---- notification_push.go ----------------------------------------------------------------

    def send_push_job(self, job: PushJob) -> None:
        """sendPushNotificationSync: build the message with the config of now, send it to every
        mobile session of the recipient."""
        cfg = self.config
        license_ = self.license()
        with self.memory_lock:
            badge = self.unread.get(job.recipient["id"], 0)
        message = build_message_push(
            str(cfg["EmailSettings"]["PushNotificationContents"]),
            job.post,
            job.channel,
            job.recipient,
            job.sender_name,
            job.channel_name,
            badge=badge,
            crt=crt_enabled(cfg),
            id_loaded_licensed=license_ is not None and license_.has("id_loaded"),
        )
        for session in mobile_sessions(self.data.read(), job.recipient["id"]):
            self.send_to_session(message, session)

    def send_to_session(self, message: dict[str, Any], session: dict[str, Any]) -> None:
        """sendPushNotificationToAllSessions, for one session."""
        body = dict(message)
        body["platform"], body["device_id"] = split_device_id(session["device_id"])
        body["ack_id"] = new_id()
        body["signature"] = unsigned_jwt({"ack_id": body["ack_id"], "device_id": body["device_id"]})
        body = omit_empty(body)
        caller = "app/notification_push.go"
        fields = {
            "type": "push",
            "ack_id": body["ack_id"],
            "push_type": body.get("type", ""),
            "user_id": session["user_id"],
            "device_id": body["device_id"],
        }
        try:
            self.send_to_push_proxy(body, session)
        except PushError as exc:
            removed = str(exc) == NOTIFICATION_ERROR_REMOVE_DEVICE
            self.nlog.error(
                "Failed to send to push proxy",
                caller,
                type="push",
                status="not_sent",
                reason="push_proxy_remove_device" if removed else "push_proxy_send_error",
                ack_id=fields["ack_id"],
                push_type=fields["push_type"],
                user_id=fields["user_id"],
                device_id=fields["device_id"],
                error=str(exc),
            )
            return
        self.nlog.trace(
            "Notification sent to push proxy", caller, **fields, status=PUSH_SEND_SUCCESS
        )

    def send_to_push_proxy(self, body: dict[str, Any], session: dict[str, Any]) -> None:
        """sendToPushProxy: log, send, and mark the session's device removed on REMOVE."""
        body["server_id"] = self.diagnostic_id
        self.nlog.trace(
            "Notification will be sent",
            "app/notification_push.go",
            type="push",
            ack_id=body["ack_id"],
            push_type=body.get("type", ""),
            user_id=session["user_id"],
            post_id=body.get("post_id", ""),
            status=PUSH_SEND_PREPARE,
        )
        self.logger.debug(
            f"Sending push notification to {body['device_id']} wi msg of "
            f"'{body.get('message', '')}'",
            "app/notification_push.go",
        )
        answer = self.raw_send("/api/v1/send_push", body)
        status = str(answer.get("status", ""))
        if status == "REMOVE":  # model.PushStatusRemove, compared exactly
            with self.data.write() as data:
                stored = data["sessions"].get(session["id"])
                if stored is not None:
                    stored.setdefault("props", {})[SESSION_PROP_LAST_REMOVED_DEVICE_ID] = session[
                        "device_id"
                    ]
            raise PushError(NOTIFICATION_ERROR_REMOVE_DEVICE)
        if status == "FAIL":
            raise PushError(str(answer.get("error", "")))

    def _opener(self, url: str) -> urllib.request.OpenerDirector:
        host = urlsplit(url).hostname or ""
        proxies: dict[str, str] = urllib.request.getproxies()
        if _is_loopback(host):
            proxies = {}  # like Go's ProxyFromEnvironment: never proxy loopback
        return urllib.request.build_opener(
            urllib.request.ProxyHandler(proxies),
            urllib.request.HTTPSHandler(context=self.tls_context),
        )

    def raw_send(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """rawSendToPushProxy: POST JSON to PushNotificationServer (trailing / trimmed) + path;
        anything but a 200 with a JSON object is an error."""
        url = str(self.config["EmailSettings"]["PushNotificationServer"]).rstrip("/") + path
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise PushError(f'Post "{url}": unsupported protocol scheme "{scheme}"')
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"},
        )
        try:
            with self._opener(url).open(request, timeout=PUSH_SEND_TIMEOUT_SECONDS) as response:
                code = response.status
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise PushError(f"response returned error code: {exc.code}") from exc
        except urllib.error.URLError as exc:
            raise PushError(f'Post "{url}": {exc.reason}') from exc
        except (OSError, ValueError) as exc:
            raise PushError(f'Post "{url}": {exc}') from exc
        if code != 200:
            raise PushError(f"response returned error code: {code}")
        try:
            answer = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise PushError(f"failed to decode from JSON: {exc}") from exc
        return answer if isinstance(answer, dict) else {}

    def send_test_push(self, user_id: str) -> None:
        """SendTestPushNotification to each mobile session of the user (synchronous)."""
        if not self.can_send_push():
            return
        for session in mobile_sessions(self.data.read(), user_id):
            platform, device_id = split_device_id(session["device_id"])
            body = omit_empty(
                {
                    "ack_id": "",
                    "platform": platform,
                    "server_id": self.diagnostic_id,
                    "device_id": device_id,
                    "post_id": "",
                    "type": "test",
                    "version": "2",
                    "badge": -1,
                    "is_crt_enabled": False,
                    "is_id_loaded": False,
                    "signature": "",
                }
            )
            fields = {
                "type": "push",
                "push_type": "test",
                "status": "error",
                "device_id": device_id,
            }
            try:
                answer = self.raw_send("/api/v1/send_push", body)
            except PushError as exc:
                self.nlog.error(
                    "Failed to send test notification to push proxy",
                    "app/notification_push.go",
                    **fields,
                    reason="push_proxy_send_error",
                    error=str(exc),
                )
                continue
            if str(answer.get("status", "")) == "FAIL":
                self.nlog.error(
                    "Push proxy failed to send test notification",
                    "app/notification_push.go",
                    **fields,
                    reason="push_proxy_error",
                    error=str(answer.get("error", "")),
                )


# --------------------------------------------------------------------------------------------
# HTTP API (channels/api4, channels/web/handlers.go)
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as Mattermost's AppError JSON."""

    def __init__(self, status: int, error_id: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


def permission_error() -> ApiError:
    """Context.SetPermissionError."""
    return ApiError(
        403, "api.context.permissions.app_error", "You do not have the appropriate permissions."
    )


def session_error() -> ApiError:
    """web/handlers.go: no valid session (or token) for a route that needs one."""
    return ApiError(
        401,
        "api.context.session_expired.app_error",
        "Invalid or expired session, please login again.",
    )


def invalid_body_param(name: str) -> ApiError:
    """Context.SetInvalidParamWithErr for a body parameter."""
    return ApiError(
        400,
        "api.context.invalid_body_param.app_error",
        f"Invalid or missing {name} in request body.",
    )


def invalid_url_param(name: str) -> ApiError:
    return ApiError(
        400,
        "api.context.invalid_url_param.app_error",
        f"Invalid or missing {name} parameter in request URL.",
    )


@dataclass
class Principal:
    """Who is calling: a session's user, a personal access token's user, or local mode."""

    user_id: str
    roles: str
    session_id: str = ""
    local: bool = False
    token_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.local or "system_admin" in self.roles.split()


class MattermostEmulatorServer(ThreadingHTTPServer):
    """The TCP listener (ServiceSettings.ListenAddress)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App):
        host = address[0]
        if host and ":" in host:
            self.address_family = socket.AF_INET6
        elif not host and socket.has_ipv6:
            # ":8065" means every interface; prefer a dual-stack socket like Go does.
            self.address_family = socket.AF_INET6
            address = ("::", address[1])
        self.app = app
        try:
            super().__init__(address, MattermostApiHandler)
        except OSError:
            if address[0] != "::":
                raise
            self.address_family = socket.AF_INET
            super().__init__(("", address[1]), MattermostApiHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class LocalModeServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """server.go startLocalModeServer: the local-mode API on a unix socket, mode 0600."""

    daemon_threads = True

    def __init__(self, path: str, app: App):
        self.app = app
        self.path = path
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil

            shutil.rmtree(path)  # os.RemoveAll
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        super().__init__(path, LocalApiHandler)
        os.chmod(path, 0o600)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # Go's UnixListener unlinks the socket it created on Close


ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", r"/api/v4/system/ping", "handle_ping"),
    ("POST", r"/api/v4/users/login", "handle_login"),
    ("POST", r"/api/v4/users/logout", "handle_logout"),
    ("GET", r"/api/v4/users/me", "handle_me"),
    ("GET", r"/api/v4/users/username/(?P<username>[^/]+)", "handle_user_by_username"),
    ("PUT", r"/api/v4/users/sessions/device", "handle_attach_device"),
    ("GET", r"/api/v4/users/(?P<user_id>[^/]+)/status", "handle_get_status"),
    ("PUT", r"/api/v4/users/(?P<user_id>[^/]+)/status", "handle_update_status"),
    ("POST", r"/api/v4/users/(?P<user_id>[^/]+)/tokens", "handle_create_token"),
    ("POST", r"/api/v4/channels/direct", "handle_direct_channel"),
    ("POST", r"/api/v4/posts", "handle_create_post"),
    ("POST", r"/api/v4/notifications/test", "handle_test_notification"),
    ("POST", r"/api/v4/notifications/ack", "handle_ack"),
    ("GET", r"/api/v4/config/client", "handle_client_config"),
    ("GET", r"/api/v4/config/environment", "handle_environment_config"),
    ("GET", r"/api/v4/config", "handle_get_config"),
    ("PUT", r"/api/v4/config", "handle_update_config"),
    ("PUT", r"/api/v4/config/patch", "handle_patch_config"),
    ("POST", r"/api/v4/config/reload", "handle_reload_config"),
    ("GET", r"/api/v4/license/client", "handle_client_license"),
)
# api4 Init*Local: the routes the local-mode socket serves (mmctl --local).
LOCAL_ROUTES = {
    "handle_ping",
    "handle_client_config",
    "handle_get_config",
    "handle_update_config",
    "handle_patch_config",
    "handle_reload_config",
    "handle_client_license",
}


class MattermostApiHandler(BaseHTTPRequestHandler):
    """The subset of the Mattermost v4 API used by push notification tests and deploys."""

    server: MattermostEmulatorServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http sets: headers and body are separate writes here, and
    # Nagle + delayed ACK would add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "MattermostEmulator"
    sys_version = ""
    local = False

    @property
    def app(self) -> App:
        return self.server.app

    def version_string(self) -> str:
        return self.server_version

    # ---- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        return None  # requests are logged by _dispatch, without query strings

    def _send_raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", new_id())
        self.send_header(
            "X-Version-Id",
            f"{EMULATED_SERVER_VERSION}.{EMULATED_SERVER_VERSION}.emulator.false",
        )
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_config(self, cfg: dict[str, Any]) -> None:
        """A config answer: json.NewEncoder(w).Encode(cfg), never cached."""
        self._send_raw(
            200,
            go_encode(cfg).encode(),
            {"Cache-Control": "no-cache, no-store, must-revalidate"},
        )

    def _send_error(self, error: ApiError) -> None:
        self._send_json(
            error.status,
            {
                "id": error.error_id,
                "message": error.message,
                "detailed_error": "",  # wiped unless EnableDeveloper (web/handlers.go)
                "request_id": new_id(),
                "status_code": error.status,
            },
        )

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_json(self, name: str = "body") -> Any:
        try:
            return json.loads(self._read_body() or b"null")
        except json.JSONDecodeError as exc:
            raise invalid_body_param(name) from exc

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def _token(self) -> str:
        """app.ParseAuthTokenFromRequest: Authorization (Bearer/Token), cookie, access_token."""
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return value.strip()
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, cookie = part.strip().partition("=")
            if name == "MMAUTHTOKEN" and cookie:
                return cookie
        return (self._query().get("access_token") or [""])[0]

    def _principal(self, required: bool = True) -> Principal | None:
        """GetSession: a session by its token, else a personal access token
        (createSessionForUserAccessToken, refused while EnableUserAccessTokens is false)."""
        if self.local:
            return Principal(user_id="", roles="system_admin", local=True)
        token = self._token()
        if token:
            data = self.app.data.read()
            now = now_millis()
            for session in data["sessions"].values():
                if hmac.compare_digest(session["token"], token) and (
                    session.get("expires_at", 0) == 0 or session["expires_at"] > now
                ):
                    return Principal(session["user_id"], session["roles"], session["id"])
            enabled = self.app.config["ServiceSettings"]["EnableUserAccessTokens"]
            for record in data["tokens"].values():
                if hmac.compare_digest(record["token"], token):
                    user = data["users"].get(record["user_id"])
                    if enabled and record.get("is_active") and user and not user["delete_at"]:
                        return Principal(user["id"], user["roles"], token_id=record["id"])
        if required:
            raise session_error()
        return None

    def _session_record(self, principal: Principal) -> dict[str, Any]:
        session = self.app.data.read()["sessions"].get(principal.session_id)
        if session is None:
            raise session_error()
        return session

    def _user_param(self, principal: Principal, user_id: str) -> str:
        """Params.UserId: ``me`` is the caller; otherwise a 26-character id."""
        if user_id == "me" and not principal.local:
            return principal.user_id
        if len(user_id) != 26 or not user_id.isalnum():
            raise invalid_url_param("user_id")
        return user_id

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        handler_name = ""
        params: dict[str, str] = {}
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                handler_name, params = name, match.groupdict()
                break
        self.app.logger.debug(
            "HTTP request",
            "web/handlers.go",
            method=method,
            url=path,
            local=self.local,
        )
        try:
            if handler_name and (not self.local or handler_name in LOCAL_ROUTES):
                getattr(self, handler_name)(**params)
            elif method == "GET" and path == "/" and not self.local:
                self._send_html()
            else:
                raise ApiError(
                    404, "api.context.404.app_error", "Sorry, we could not find the page."
                )
        except ApiError as error:
            self._send_error(error)
        except Exception as exc:  # a bug in the emulator: answer 500 and log it
            self.app.logger.error("Unexpected error", "web/handlers.go", error=repr(exc))
            self._send_error(ApiError(500, "api.emulator.internal_error", str(exc)))

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _send_html(self) -> None:
        body = b"<!doctype html><html><body>Mattermost (emulator)</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # ---- system -----------------------------------------------------------------------------

    def handle_ping(self) -> None:
        self._send_json(
            200,
            {
                "ActiveSearchBackend": "database",
                "AndroidLatestVersion": "",
                "AndroidMinVersion": "",
                "IosLatestVersion": "",
                "IosMinVersion": "",
                "status": "OK",
            },
        )

    def handle_client_config(self) -> None:
        """api4/config.go getClientConfig: ``format=old`` is required."""
        form = (self._query().get("format") or [""])[0]
        if not form:
            raise ApiError(
                501,
                "api.config.client.old_format.app_error",
                "New format for the client configuration is not supported yet. Please specify "
                "format=old in the query string.",
            )
        if form != "old":
            raise invalid_url_param("format")
        cfg = self.app.config
        self._send_json(
            200,
            {
                "BuildNumber": EMULATED_SERVER_VERSION,
                "DiagnosticId": self.app.diagnostic_id,
                "TelemetryId": self.app.diagnostic_id,
                "SendPushNotifications": str(cfg["EmailSettings"]["SendPushNotifications"]).lower(),
                "SiteURL": cfg["ServiceSettings"]["SiteURL"],
                "Version": EMULATED_SERVER_VERSION,
            },
        )

    def handle_client_license(self) -> None:
        """api4/license.go getClientLicense: the full form needs read_license_information."""
        principal = self._principal(required=False)
        full = principal is not None and principal.is_admin
        self._send_json(200, client_license(self.app.license(), full))

    # ---- config -----------------------------------------------------------------------------

    def _require_admin(self) -> Principal:
        principal = self._principal()
        assert principal is not None
        if not principal.is_admin:
            raise permission_error()
        return principal

    def handle_get_config(self) -> None:
        """getConfig / localGetConfig: the effective config, secrets masked."""
        self._require_admin()
        self._send_config(sanitize(self.app.config))

    def handle_environment_config(self) -> None:
        """getEnvironmentConfig: {Section: {Key: true}} for what MM_* variables set; the read
        filter leaves nothing for a caller without system console permissions."""
        principal = self._principal()
        assert principal is not None
        overrides = self.app.store.environment_overrides() if principal.is_admin else {}
        self._send_raw(
            200,
            json.dumps(overrides).encode(),
            {"Cache-Control": "no-cache, no-store, must-revalidate"},
        )

    def _decode_config_body(self) -> tuple[Principal, dict[str, Any]]:
        """Session first (401), then the body (400), then the permission (403), as the real
        handlers run (APISessionRequired, json.Decode, SessionHasPermissionToAny)."""
        principal = self._principal()
        assert principal is not None
        body = self._read_json("config")
        if not isinstance(body, dict):
            raise invalid_body_param("config")
        try:
            patch = canonical_patch(self.app.config, body)
        except ConfigError as exc:
            raise invalid_body_param("config") from exc
        if not principal.is_admin:
            raise permission_error()
        return principal, patch

    def _check_http_write(self, principal: Principal, patch: dict[str, Any], full: bool) -> None:
        """The extra checks of the HTTP (not local) handlers."""
        if principal.local:
            return
        current = self.app.config
        site_url = patch.get("ServiceSettings", {}).get("SiteURL")
        clears = site_url == "" or (full and site_url is None)
        if current["ServiceSettings"]["SiteURL"] and clears:
            raise ApiError(
                400,
                "api.config.update_config.clear_siteurl.app_error",
                "Site URL cannot be cleared.",
            )
        uploads = patch.get("PluginSettings", {}).get("EnableUploads")
        if (
            not full
            and uploads is not None
            and uploads != current["PluginSettings"]["EnableUploads"]
        ):
            raise ApiError(
                403,
                "api.config.update_config.not_allowed_security.app_error",
                "Changing PluginSettings.EnableUploads is not allowed for security reasons.",
            )

    def _save(self, new_cfg: dict[str, Any]) -> dict[str, Any]:
        """App.SaveConfig -> Store.Set; returns the new effective config."""
        try:
            _, effective = self.app.store.set(new_cfg)
        except ReadOnlyConfigurationError as exc:
            raise ApiError(
                403,
                "ent.cluster.save_config.error",
                "System Console is set to read-only when High Availability is enabled unless "
                "ReadOnlyConfig is disabled in the configuration file.",
            ) from exc
        except ConfigError as exc:
            raise ApiError(
                exc.status, exc.error_id or "app.save_config.app_error", str(exc)
            ) from exc
        self.app.logger.info(
            "Config saved",
            "app/platform/config.go",
            source=self.app.store.backing.describe(),
            local=self.local,
        )
        return effective

    def handle_patch_config(self) -> None:
        """patchConfig / localPatchConfig: Merge the settings present in the body, save, apply,
        answer with the sanitised config."""
        principal, patch = self._decode_config_body()
        self._check_http_write(principal, patch, full=False)
        merged = merge_config(self.app.config, patch)
        try:
            is_valid(merged)
        except ConfigError as exc:
            raise ApiError(400, exc.error_id, str(exc)) from exc
        effective = self._save(merged)
        self._send_config(sanitize(effective))

    def handle_update_config(self) -> None:
        """updateConfig / localUpdateConfig: the body is the whole config (SetDefaults fills
        what it lacks); plugin uploads cannot be changed through the API."""
        principal, body = self._decode_config_body()
        self._check_http_write(principal, body, full=True)
        candidate = set_defaults(body)
        candidate["PluginSettings"]["EnableUploads"] = self.app.config["PluginSettings"][
            "EnableUploads"
        ]
        effective = self._save(candidate)
        self._send_config(sanitize(effective))

    def handle_reload_config(self) -> None:
        """configReload: read the store again (mmctl config reload)."""
        self._require_admin()
        try:
            self.app.store.load()
        except ConfigError as exc:
            raise ApiError(500, "api.config.reload_config.app_error", str(exc)) from exc
        self._send_raw(
            200,
            b'{"status":"OK"}',
            {"Cache-Control": "no-cache, no-store, must-revalidate"},
        )

    # ---- users, sessions, statuses, tokens --------------------------------------------------

    def handle_login(self) -> None:
        body = self._read_json("login_id")
        if not isinstance(body, dict):
            raise invalid_body_param("login_id")
        data = self.app.data.read()
        user = find_user_by_login(data, str(body.get("login_id", "")))
        if user is None or not check_password(str(body.get("password", "")), user["password"]):
            raise ApiError(
                401,
                "api.user.login.invalid_credentials_email_username",
                "Enter a valid email or username and/or password.",
            )
        now = now_millis()
        session = {
            "id": new_id(),
            "token": new_id(),
            "create_at": now,
            "expires_at": now + 30 * 24 * 3600 * 1000,
            "last_activity_at": now,
            "user_id": user["id"],
            "device_id": "",
            "roles": user["roles"],
            "is_oauth": False,
            "props": {},
        }
        device_id = str(body.get("device_id", "") or "")
        with self.app.data.write() as data:
            data["sessions"][session["id"]] = session
            if device_id:
                self._attach_device(data, session, device_id)
        self.app.logger.info("User logged in", "app/login.go", user_id=user["id"])
        self._send_json(200, public_user(user), headers={"Token": session["token"]})

    def handle_logout(self) -> None:
        principal = self._principal()
        assert principal is not None
        with self.app.data.write() as data:
            data["sessions"].pop(principal.session_id, None)
        self._send_json(200, {"status": "OK"})

    def handle_me(self) -> None:
        principal = self._principal()
        assert principal is not None
        user = self.app.data.read()["users"].get(principal.user_id)
        if user is None:
            raise ApiError(404, "app.user.missing_account.const", "Unable to find the user.")
        self._send_json(200, public_user(user))

    def handle_user_by_username(self, username: str) -> None:
        self._principal()
        user = find_user_by_login(self.app.data.read(), username)
        if user is None or user["username"] != username.lower():
            raise ApiError(404, "app.user.missing_account.const", "Unable to find the user.")
        self._send_json(200, public_user(user))

    @staticmethod
    def _attach_device(data: dict[str, Any], session: dict[str, Any], device_id: str) -> None:
        """Attach a device id; like the real server, revoke the user's other sessions using it."""
        for other_id, other in list(data["sessions"].items()):
            if (
                other_id != session["id"]
                and other["user_id"] == session["user_id"]
                and other.get("device_id") == device_id
            ):
                del data["sessions"][other_id]
        stored = data["sessions"][session["id"]]
        stored["device_id"] = device_id
        stored.setdefault("props", {})["os"] = "iOS" if device_id.startswith("apple") else "Android"

    def handle_attach_device(self) -> None:
        principal = self._principal()
        assert principal is not None
        session = self._session_record(principal)
        body = self._read_json("device_id")
        device_id = str(body.get("device_id", "")) if isinstance(body, dict) else ""
        if not device_id:
            raise invalid_body_param("device_id")
        with self.app.data.write() as data:
            self._attach_device(data, session, device_id)
        self.app.logger.debug(
            "Attached device id to session",
            "app/session.go",
            user_id=session["user_id"],
            session_id=session["id"],
            device_id=device_id,
        )
        self._send_json(200, {"status": "OK"})

    def handle_get_status(self, user_id: str) -> None:
        principal = self._principal()
        assert principal is not None
        user_id = self._user_param(principal, user_id)
        data = self.app.data.read()
        if user_id not in data["users"]:
            raise ApiError(404, "api.status.user_not_found.app_error", "User not found.")
        self._send_json(200, user_status(data, user_id))

    def handle_update_status(self, user_id: str) -> None:
        """api4/status.go updateUserStatus: online/offline/away/dnd, set manually."""
        principal = self._principal()
        assert principal is not None
        user_id = self._user_param(principal, user_id)
        body = self._read_json("status")
        if not isinstance(body, dict):
            raise invalid_body_param("status")
        if body.get("user_id") != user_id:
            raise invalid_url_param("user_id")
        if principal.user_id != user_id and not principal.is_admin:
            raise permission_error()
        wanted = body.get("status")
        if wanted not in ("online", "offline", "away", "dnd"):
            raise invalid_body_param("status")
        with self.app.data.write() as data:
            if user_id not in data["users"]:
                raise ApiError(404, "api.status.user_not_found.app_error", "User not found.")
            set_user_status(data, user_id, str(wanted), True, int(body.get("dnd_end_time") or 0))
            status = user_status(data, user_id)
        self._send_json(200, status)

    def handle_create_token(self, user_id: str) -> None:
        """api4/user.go createUserAccessToken and app/session.go CreateUserAccessToken."""
        principal = self._principal()
        assert principal is not None
        user_id = self._user_param(principal, user_id)
        body = self._read_json("user_access_token")
        if not isinstance(body, dict):
            raise invalid_body_param("user_access_token")
        description = str(body.get("description") or "")
        if not description:
            raise invalid_body_param("description")
        if not principal.is_admin:  # create_user_access_token is not a system_user permission
            raise permission_error()
        data = self.app.data.read()
        user = data["users"].get(user_id)
        if user is None:
            raise ApiError(404, "app.user.missing_account.const", "Unable to find the user.")
        if not self.app.config["ServiceSettings"]["EnableUserAccessTokens"]:
            raise ApiError(
                501,
                "app.user_access_token.disabled",
                "Personal access tokens are disabled on this server. Please contact your "
                "system administrator for details.",
            )
        record = {
            "id": new_id(),
            "token": new_id(),
            "user_id": user_id,
            "description": description,
            "is_active": True,
        }
        with self.app.data.write() as data:
            data["tokens"][record["id"]] = record
        self.app.logger.info(
            "Personal access token created",
            "app/session.go",
            user_id=user_id,
            token_id=record["id"],
        )
        self._send_json(200, record)

    # ---- channels, posts, notifications -----------------------------------------------------

    def handle_direct_channel(self) -> None:
        principal = self._principal()
        assert principal is not None
        body = self._read_json("user_ids")
        if (
            not isinstance(body, list)
            or len(body) != 2
            or not all(isinstance(item, str) for item in body)
        ):
            raise invalid_body_param("user_ids")
        data = self.app.data.read()
        for user_id in body:
            if user_id not in data["users"]:
                raise ApiError(
                    400,
                    "api.channel.create_direct_channel.invalid_user.app_error",
                    "Invalid user ID for direct channel creation.",
                )
        if principal.user_id not in body:
            raise permission_error()
        name = "__".join(sorted(body))
        with self.app.data.write() as data:
            for channel in data["channels"].values():
                if channel["name"] == name:
                    self._send_json(201, channel)
                    return
            now = now_millis()
            channel = {
                "id": new_id(),
                "create_at": now,
                "update_at": now,
                "delete_at": 0,
                "team_id": "",
                "type": "D",
                "display_name": "",
                "name": name,
                "header": "",
                "purpose": "",
                "last_post_at": 0,
                "total_msg_count": 0,
                "extra_update_at": 0,
                "creator_id": "",
                "members": sorted(set(body)),
            }
            data["channels"][channel["id"]] = channel
        self._send_json(201, channel)

    def handle_create_post(self) -> None:
        """api4/post.go createPost: save, SendNotifications (checks now, pushes later in the
        hub), then set the poster online unless ``set_online=false``."""
        principal = self._principal()
        assert principal is not None
        body = self._read_json("post")
        if not isinstance(body, dict) or not body.get("channel_id"):
            raise invalid_body_param("channel_id")
        with self.app.data.write() as data:
            channel = data["channels"].get(str(body["channel_id"]))
            if channel is None or principal.user_id not in channel["members"]:
                raise permission_error()
            now = now_millis()
            post = {
                "id": new_id(),
                "create_at": now,
                "update_at": now,
                "edit_at": 0,
                "delete_at": 0,
                "is_pinned": False,
                "user_id": principal.user_id,
                "channel_id": channel["id"],
                "root_id": str(body.get("root_id", "") or ""),
                "original_id": "",
                "message": str(body.get("message", "")),
                "type": "",
                "props": {},
                "hashtags": "",
                "pending_post_id": str(body.get("pending_post_id", "") or ""),
                "reply_count": 0,
                "metadata": {},
            }
            channel["last_post_at"] = now
            channel["total_msg_count"] = channel.get("total_msg_count", 0) + 1
            channel = copy.deepcopy(channel)
        recipients = [member for member in channel["members"] if member != principal.user_id]
        with self.app.memory_lock:
            self.app.posts[post["id"]] = post
            for member in recipients:
                self.app.unread[member] = self.app.unread.get(member, 0) + 1
        self.app.send_notifications(post, channel, recipients)
        set_online = (self._query().get("set_online") or ["true"])[0]
        if set_online.lower() not in ("0", "f", "false"):
            with self.app.data.write() as data:
                set_user_status(data, principal.user_id, "online", False)
        self._send_json(201, post)

    def handle_test_notification(self) -> None:
        principal = self._principal()
        assert principal is not None
        self.app.send_test_push(principal.user_id)
        self._send_json(200, {"status": "OK"})

    def handle_ack(self) -> None:
        """api4/notification.go pushNotificationAck -> SendAckToPushProxy."""
        self._principal()
        body = self._read_json("ack")
        if not isinstance(body, dict) or not body.get("id"):
            raise ApiError(
                400,
                "api.push_notifications_ack.message.parse.app_error",
                "An error occurred building the push notification ack message.",
            )
        self.app.nlog.trace(
            "Notification successfully received",
            "app/notification_push.go",
            type="push",
            ack_id=str(body.get("id")),
            push_type=str(body.get("type", "")),
            post_id=str(body.get("post_id", "")),
            device_type=str(body.get("platform", "")),
            received_at=body.get("received_at", 0),
            status=PUSH_RECEIVED,
        )
        if self.app.config["EmailSettings"]["SendPushNotifications"]:
            try:
                self.app.raw_send("/api/v1/ack", body)
            except PushError as exc:
                self.app.logger.error(
                    "Failed to send ack to push proxy", "app/notification_push.go", error=str(exc)
                )
        self._send_json(200, {"status": "OK"})


class LocalApiHandler(MattermostApiHandler):
    """Requests on the local-mode socket: no authentication, only the local routes."""

    server: LocalModeServer  # type: ignore[assignment]
    local = True
    disable_nagle_algorithm = False  # TCP_NODELAY does not apply to a unix socket

    def address_string(self) -> str:
        return "local"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state, like the real server; no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mattermost",
        description="Mattermost server EMULATOR for tests (not the real Mattermost server).",
    )
    parser.add_argument(
        "-c",
        "--config",
        default="",
        help="configuration: a file path or a database DSN (default: $MM_CONFIG, then config.json)",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("server", "version"),
        default="server",
        help="'server' (the default) runs the server; 'version' prints the emulated version",
    )
    return parser.parse_args(argv)


def config_dsn(flag: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """commands getConfigDSN: the flag, else MM_CONFIG, else config.json."""
    return flag or mm_environment(environ).get("MM_CONFIG", "") or DEFAULT_CONFIG_DSN


def open_config_store(dsn: str, environ: dict[str, str] | os._Environ[str]) -> ConfigStore:
    """config.NewStoreFromDSN followed by the first Load; ConfigError when unusable."""
    if is_database_dsn(dsn):
        backing: BackingStore = DatabaseConfigStore(dsn)
    else:
        exe_dir = Path(sys.argv[0]).resolve().parent
        backing = FileConfigStore(resolve_config_file(dsn, Path.cwd(), exe_dir))
    store = ConfigStore(backing, environ)
    try:
        store.load()
    except ConfigError as exc:
        backing.close()
        raise ConfigError(
            f"failed to create store: unable to load on store creation: {exc}"
        ) from exc
    return store


def start_local_mode(app: App) -> LocalModeServer | None:
    """server.go startLocalModeServer: a failure is logged as critical, the server goes on."""
    path = str(app.config["ServiceSettings"]["LocalModeSocketLocation"])
    try:
        local = LocalModeServer(path, app)
    except OSError as exc:
        app.logger.critical(
            f"Failed to start server: listen unix {path}: {exc.strerror or exc}", "app/server.go"
        )
        return None
    threading.Thread(
        target=local.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    app.logger.info("Starting unix socket server", "app/server.go", socket=path)
    return local


def watch_cluster(app: App, stop: threading.Event) -> None:
    """Stand-in for the cluster's config-changed message (platform/config.go SaveConfig ->
    ClusterInterface.ConfigChanged -> ReloadConfig on the other nodes): poll the active row."""
    backing = app.store.backing
    if not isinstance(backing, DatabaseConfigStore):
        return
    while not stop.wait(CLUSTER_POLL_SECONDS):
        if not app.cluster_active():
            continue
        try:
            raw = backing.active_raw()
            if raw is not None and raw != backing.last_raw and app.store.load():
                app.logger.info(
                    "Configuration reloaded: changed by another cluster node",
                    "app/platform/cluster_handlers.go",
                )
        except Exception as exc:
            app.logger.error(
                "Failed to reload the configuration from the database",
                "app/platform/cluster_handlers.go",
                error=str(exc),
            )


def log_startup(app: App) -> None:
    cfg = app.config
    email = cfg["EmailSettings"]
    app.logger.info("Loaded config", "config/store.go", source=app.store.backing.describe())
    overridden = [".".join(path) for path in _paths(app.store.environment_overrides())]
    if overridden:
        app.logger.info("Environment overrides", "config/store.go", settings=",".join(overridden))
    license_ = app.license()
    app.logger.info(
        "Push notification settings",
        "app/server.go",
        send_push_notifications=email["SendPushNotifications"],
        push_notification_server=email["PushNotificationServer"],
        push_notification_contents=email["PushNotificationContents"],
        file_level=str(cfg["LogSettings"]["FileLevel"]).upper(),
        licensed=license_ is not None,
        server_id=app.diagnostic_id,
    )
    app.logger.info(
        "Starting Server...", "app/server.go", emulator=True, version=EMULATED_SERVER_VERSION
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "version":
        print(f"Version: {EMULATED_SERVER_VERSION}\nBuild Number: emulator\nBuild Hash: emulator")
        return 0
    working_dir = Path.cwd()
    try:
        store = open_config_store(config_dsn(args.config, os.environ), os.environ)
        cfg = store.get()
        check_log_levels(cfg)
        host, port = parse_listen_address(str(cfg["ServiceSettings"]["ListenAddress"]))
        data_dir = Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))
        if isinstance(store.backing, DatabaseConfigStore):
            data: DataStore = SqlDataStore(str(cfg["SqlSettings"]["DataSource"]))
        else:
            data = JsonDataStore(data_dir)
    except (ConfigError, OSError) as exc:
        print(f"Error: failed to load configuration: {exc}", file=sys.stderr)
        return 1

    logger = ServerLogger(lambda: store.get()["LogSettings"], LOG_FILE_NAME, working_dir)
    notifications = ServerLogger(
        lambda: store.get()["NotificationLogSettings"], NOTIFICATION_LOG_FILE_NAME, working_dir
    )
    app = App(store, logger, notifications, data, LicenseFile(data_dir / LICENSE_FILE_NAME, logger))
    log_startup(app)
    try:
        server = MattermostEmulatorServer((host, port), app)
    except OSError as exc:
        logger.error("Failed to start server", "app/server.go", error=str(exc))
        print(
            f"Error: cannot listen on {cfg['ServiceSettings']['ListenAddress']}: {exc}",
            file=sys.stderr,
        )
        return 1
    local = start_local_mode(app) if cfg["ServiceSettings"]["EnableLocalMode"] else None
    stop_watch = threading.Event()
    watcher = threading.Thread(target=watch_cluster, args=(app, stop_watch), daemon=True)
    watcher.start()

    def stop(signum: int, _frame: Any) -> None:
        logger.info("Stopping Server...", "app/server.go", signal=signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bound = server.server_address
    logger.info(
        "Server is listening on "
        + (f"[{bound[0]}]:{bound[1]}" if ":" in str(bound[0]) else f"{bound[0]}:{bound[1]}"),
        "app/server.go",
    )
    sd_notify("READY=1")
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        if local is not None:
            local.shutdown()
            local.server_close()
        stop_watch.set()
        app.hub.stop()
        watcher.join(timeout=5)
        data.close()
        store.backing.close()
        logger.info("Server stopped", "app/server.go")
        logger.close()
        notifications.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
