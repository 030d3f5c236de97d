#!/usr/bin/python3
"""Mattermost server EMULATOR (tests only, not the real Mattermost server).

A single-file, standard-library-only stand-in for the parts of the Mattermost server that the push
notification infrastructure depends on. Installed in the lab as ``/opt/mattermost/bin/mattermost``
and run by ``mattermost.service``. Faithful to ``reference/push-service-facts.md``:

* reads ``config.json`` once at start (``--config``/``-c``, default
  ``/opt/mattermost/config/config.json``); ``MM_<SECTION>_<KEY>`` environment variables win over
  the file; invalid JSON is refused (exit 1);
* serves a small part of the v4 REST API: ping, login, me, attach a mobile device to a session,
  direct channels, posts, test notification, ack;
* after a post in a direct channel, sends a push notification for every mobile session of the
  other member to ``PushNotificationServer`` (trailing slashes trimmed) + ``/api/v1/send_push``,
  shaped by ``EmailSettings.PushNotificationContents``; TLS is verified against the system trust
  store, timeout 30 s; a failed push is only logged, never turned into a failed post;
* logs to ``<FileLocation>/mattermost.log`` at ``LogSettings.FileLevel`` (JSON lines when
  ``FileJson``) and to stdout at ``ConsoleLevel``; at DEBUG it logs the troubleshooting line
  ``Sending push notification to <device id> wi msg of '<message>'``.

Users ``accounta`` and ``accountb`` (password ``Password1!``) are seeded in
``$MM_EMULATOR_DATA_DIR/emulator-db.json`` (default ``/opt/mattermost/data``) on first start.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import ipaddress
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EMULATED_SERVER_VERSION = "10.11.0"
DEFAULT_CONFIG_PATH = "/opt/mattermost/config/config.json"
DEFAULT_DATA_DIR = "/opt/mattermost/data"
DATA_DIR_ENV = "MM_EMULATOR_DATA_DIR"
DB_FILE_NAME = "emulator-db.json"
LOG_FILE_NAME = "mattermost.log"
SEED_PASSWORD = "Password1!"
SEED_USERNAMES = ("accounta", "accountb")
PUSH_SEND_TIMEOUT_SECONDS = 30
PUSH_CONTENTS_VALUES = ("generic_no_channel", "generic", "full", "id_loaded")
ID_LOADED_DEFAULT_MESSAGE = "You've received a new message."
PASSWORD_HASH_ITERATIONS = 20_000

# Mattermost ids: 16 random bytes, base32 with this alphabet, no padding -> 26 characters.
_MATTERMOST_ID_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ID_TRANSLATION = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _MATTERMOST_ID_ALPHABET.encode()
)

LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40}
PLAIN_LEVEL_TAGS = {"DEBUG": "DEBG", "INFO": "INFO", "WARN": "WARN", "ERROR": "EROR"}

# (section, key) -> default. These are the settings the emulator reads; the default is also the
# type used to parse an MM_<SECTION>_<KEY> environment override.
KNOWN_SETTINGS: dict[tuple[str, str], Any] = {
    ("ServiceSettings", "ListenAddress"): ":8065",
    ("ServiceSettings", "SiteURL"): "",
    ("ServiceSettings", "CollapsedThreads"): "always_on",
    ("EmailSettings", "SendPushNotifications"): False,
    ("EmailSettings", "PushNotificationServer"): "",
    ("EmailSettings", "PushNotificationContents"): "full",
    ("EmailSettings", "PushNotificationBuffer"): 1000,
    ("LogSettings", "EnableConsole"): True,
    ("LogSettings", "ConsoleLevel"): "INFO",
    ("LogSettings", "ConsoleJson"): True,
    ("LogSettings", "EnableFile"): True,
    ("LogSettings", "FileLevel"): "INFO",
    ("LogSettings", "FileJson"): True,
    ("LogSettings", "FileLocation"): "",
}


class ConfigError(Exception):
    """The configuration cannot be used: the server refuses to start."""


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


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def parse_env_value(raw: str, default: Any) -> Any:
    """Parse an environment override with the type of the setting's default (Go semantics)."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "t", "true"):
            return True
        if lowered in ("0", "f", "false"):
            return False
        raise ConfigError(f"cannot parse boolean value {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"cannot parse integer value {raw!r}") from exc
    return raw


def env_override_name(section: str, key: str) -> str:
    """``EmailSettings.PushNotificationServer`` -> ``MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER``."""
    return f"MM_{section}_{key}".upper()


def load_config_file(path: Path) -> dict[str, Any]:
    """Read and parse config.json; raise ConfigError with a clear reason on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"failed to read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid config {path}: parsing error at line {exc.lineno}, "
            f"character {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {path}: the top level must be a JSON object")
    return data


class EffectiveConfig:
    """The settings the emulator uses: environment override > config file > built-in default."""

    def __init__(self, file_config: dict[str, Any], environ: dict[str, str] | os._Environ[str]):
        self.values: dict[tuple[str, str], Any] = {}
        self.overridden: list[str] = []
        for (section, key), default in KNOWN_SETTINGS.items():
            value = default
            section_data = file_config.get(section)
            if isinstance(section_data, dict) and key in section_data:
                value = section_data[key]
            env_name = env_override_name(section, key)
            if env_name in environ:
                try:
                    value = parse_env_value(environ[env_name], default)
                except ConfigError as exc:
                    raise ConfigError(f"environment variable {env_name}: {exc}") from exc
                self.overridden.append(f"{section}.{key}")
            self.values[(section, key)] = value
        self._validate()

    def get(self, section: str, key: str) -> Any:
        return self.values[(section, key)]

    def _validate(self) -> None:
        contents = self.push_contents
        if contents not in PUSH_CONTENTS_VALUES:
            raise ConfigError(
                f"EmailSettings.PushNotificationContents has invalid value {contents!r}; "
                f"allowed: {', '.join(PUSH_CONTENTS_VALUES)}"
            )
        for key in ("FileLevel", "ConsoleLevel"):
            level = str(self.get("LogSettings", key)).upper()
            if level not in LOG_LEVELS:
                raise ConfigError(
                    f"LogSettings.{key} has invalid value {self.get('LogSettings', key)!r}; "
                    f"allowed: {', '.join(LOG_LEVELS)}"
                )
        for section, key in (("EmailSettings", "SendPushNotifications"),):
            if not isinstance(self.get(section, key), bool):
                raise ConfigError(f"{section}.{key} must be true or false")

    @property
    def listen_address(self) -> str:
        return str(self.get("ServiceSettings", "ListenAddress"))

    @property
    def site_url(self) -> str:
        return str(self.get("ServiceSettings", "SiteURL"))

    @property
    def send_push(self) -> bool:
        return bool(self.get("EmailSettings", "SendPushNotifications"))

    @property
    def push_server(self) -> str:
        return str(self.get("EmailSettings", "PushNotificationServer") or "")

    @property
    def push_contents(self) -> str:
        return str(self.get("EmailSettings", "PushNotificationContents"))

    @property
    def collapsed_threads_enabled(self) -> bool:
        return str(self.get("ServiceSettings", "CollapsedThreads")) != "disabled"


def parse_listen_address(address: str) -> tuple[str, int]:
    """Go-style ``host:port`` (``:8065``, ``127.0.0.1:8065``, ``[::]:8065``) -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ConfigError(f"ServiceSettings.ListenAddress {address!r} has no port")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ConfigError(f"ServiceSettings.ListenAddress {address!r}: bad port") from exc
    return host, port


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


class ServerLogger:
    """Mattermost-like logger: file target and console target, each with its level and format."""

    def __init__(self, config: EffectiveConfig, working_dir: Path):
        self._lock = threading.Lock()
        self.console_enabled = bool(config.get("LogSettings", "EnableConsole"))
        self.console_level = LOG_LEVELS[str(config.get("LogSettings", "ConsoleLevel")).upper()]
        self.console_json = bool(config.get("LogSettings", "ConsoleJson"))
        self.file_level = LOG_LEVELS[str(config.get("LogSettings", "FileLevel")).upper()]
        self.file_json = bool(config.get("LogSettings", "FileJson"))
        self.file_path: Path | None = None
        self._file = None
        if config.get("LogSettings", "EnableFile"):
            location = str(config.get("LogSettings", "FileLocation") or "")
            directory = Path(location) if location else working_dir / "logs"
            if not directory.is_absolute():
                directory = working_dir / directory
            directory.mkdir(parents=True, exist_ok=True)
            self.file_path = directory / LOG_FILE_NAME
            self._file = open(self.file_path, "a", encoding="utf-8")  # noqa: SIM115

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
            if self._file is not None and numeric >= self.file_level:
                self._file.write(self._format(self.file_json, level, msg, caller, fields) + "\n")
                self._file.flush()
            if self.console_enabled and numeric >= self.console_level:
                line = self._format(self.console_json, level, msg, caller, fields)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    def debug(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("DEBUG", msg, caller, **fields)

    def info(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("INFO", msg, caller, **fields)

    def error(self, msg: str, caller: str = "app/server.go", **fields: Any) -> None:
        self.log("ERROR", msg, caller, **fields)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --------------------------------------------------------------------------------------------
# The tiny JSON "database"
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


def seed_user(username: str, created: int) -> dict[str, Any]:
    """A user record shaped like Mattermost's model.User (plus the password hash)."""
    letter = username[-1].upper()
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
        "first_name": "Account",
        "last_name": letter,
        "position": "",
        "roles": "system_user",
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


class EmulatorDatabase:
    """Users, sessions and channels persisted as one JSON file; posts kept in memory."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / DB_FILE_NAME
        self.lock = threading.RLock()
        data_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read emulator database {self.path}: {exc}") from exc
        else:
            created = now_millis()
            self.data = {
                "comment": "Mattermost EMULATOR database (tests only)",
                "diagnostic_id": new_id(),
                "users": {},
                "sessions": {},
                "channels": {},
            }
            for username in SEED_USERNAMES:
                user = seed_user(username, created)
                self.data["users"][user["id"]] = user
            self.save()
        self.data.setdefault("sessions", {})
        self.data.setdefault("channels", {})
        self.posts: dict[str, dict[str, Any]] = {}
        self.unread: dict[str, int] = {}

    def save(self) -> None:
        with self.lock:
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)

    @property
    def diagnostic_id(self) -> str:
        return str(self.data["diagnostic_id"])

    def find_user_by_login(self, login_id: str) -> dict[str, Any] | None:
        wanted = login_id.strip().lower()
        for user in self.data["users"].values():
            if wanted in (user["username"].lower(), user["email"].lower()):
                return user
        return None

    def user(self, user_id: str) -> dict[str, Any] | None:
        return self.data["users"].get(user_id)

    def mobile_sessions(self, user_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                dict(session)
                for session in self.data["sessions"].values()
                if session["user_id"] == user_id and session.get("device_id")
            ]


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """The user JSON the API returns (no password hash)."""
    return {key: value for key, value in user.items() if key != "password"}


# --------------------------------------------------------------------------------------------
# Push notifications
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
)


def omit_empty(message: dict[str, Any]) -> dict[str, Any]:
    """Drop empty omitempty fields, as Go's encoding/json does for model.PushNotification."""
    return {
        key: value
        for key, value in message.items()
        if key in _PUSH_ALWAYS_PRESENT or value not in ("", 0, None, False)
    }


def split_device_id(device_id: str) -> tuple[str, str]:
    """``apple_rn-v2:TOKEN`` -> (``apple_rn-v2``, ``TOKEN``), like SetDeviceIdAndPlatform.

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


def build_message_push(
    contents: str,
    post: dict[str, Any],
    channel: dict[str, Any],
    sender: dict[str, Any],
    badge: int,
    crt_enabled: bool,
) -> dict[str, Any]:
    """Build the push body for a direct message, shaped by PushNotificationContents."""
    sender_name = "@" + sender["username"]
    message: dict[str, Any] = {
        "ack_id": "",
        "platform": "",
        "server_id": "",
        "device_id": "",
        "post_id": post["id"],
        "category": "CAN_REPLY",
        "sound": "default",
        "message": "",
        "badge": badge,
        "team_id": channel.get("team_id", ""),
        "channel_id": channel["id"],
        "root_id": post.get("root_id", ""),
        "channel_name": "",
        "type": "message",
        "sender_id": sender["id"],
        "sender_name": "",
        "version": "v2",
        "is_crt_enabled": crt_enabled,
        "is_id_loaded": False,
    }
    if contents == "id_loaded":
        message["message"] = ID_LOADED_DEFAULT_MESSAGE
        message["is_id_loaded"] = True
        return message
    message["sender_name"] = sender_name
    if contents == "full":
        message["message"] = f"{sender_name}: {post['message']}"
    else:
        message["message"] = f"{sender_name} sent you a message."
    if contents != "generic_no_channel":
        message["channel_name"] = sender_name
    return message


class PushSender:
    """Sends push bodies to PushNotificationServer + /api/v1/send_push and logs the outcome."""

    def __init__(self, config: EffectiveConfig, logger: ServerLogger, server_id: str):
        self.config = config
        self.logger = logger
        self.server_id = server_id
        # The system trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured), loaded once at start.
        self.tls_context = ssl.create_default_context()

    def enabled(self) -> bool:
        return self.config.send_push and bool(self.config.push_server)

    def _opener(self, url: str) -> urllib.request.OpenerDirector:
        host = urlsplit(url).hostname or ""
        proxies: dict[str, str] = urllib.request.getproxies()
        if _is_loopback(host):
            proxies = {}  # like Go's ProxyFromEnvironment: never proxy loopback
        return urllib.request.build_opener(
            urllib.request.ProxyHandler(proxies),
            urllib.request.HTTPSHandler(context=self.tls_context),
        )

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to the push server; return its JSON answer or raise RuntimeError."""
        url = self.config.push_server.rstrip("/") + path
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"},
        )
        try:
            with self._opener(url).open(request, timeout=PUSH_SEND_TIMEOUT_SECONDS) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"response returned error code: {exc.code}") from exc
        except urllib.error.URLError as exc:
            raise RuntimeError(f'Post "{url}": {exc.reason}') from exc
        except (OSError, ValueError) as exc:
            raise RuntimeError(f'Post "{url}": {exc}') from exc
        try:
            answer = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"failed to decode from JSON: {exc}") from exc
        return answer if isinstance(answer, dict) else {}

    def send(self, message: dict[str, Any], session: dict[str, Any]) -> bool:
        """Send one push to one device session; log the outcome; never raise."""
        body = dict(message)
        body["platform"], body["device_id"] = split_device_id(session["device_id"])
        if body.get("type") != "test":
            body["ack_id"] = new_id()
            body["signature"] = unsigned_jwt(
                {"ack_id": body["ack_id"], "device_id": body["device_id"]}
            )
        body["server_id"] = self.server_id
        body = omit_empty(body)
        caller = "app/notification_push.go"
        self.logger.debug(
            f"Sending push notification to {body['device_id']} wi msg of "
            f"'{body.get('message', '')}'",
            caller,
        )
        fields = {
            "type": "push",
            "push_type": body.get("type", ""),
            "ack_id": body.get("ack_id", ""),
            "user_id": session["user_id"],
            "device_id": body["device_id"],
        }
        try:
            answer = self.post_json("/api/v1/send_push", body)
        except RuntimeError as exc:
            self.logger.error(
                "Failed to send to push proxy",
                caller,
                **fields,
                status="not_sent",
                reason="push_proxy_send_error",
                error=str(exc),
            )
            return False
        status = str(answer.get("status", ""))
        if status == "FAIL":
            self.logger.error(
                "Failed to send to push proxy",
                caller,
                **fields,
                status="not_sent",
                reason="push_proxy_error",
                error=str(answer.get("error", "")),
            )
            return False
        if status == "REMOVE":
            self.logger.error(
                "Failed to send to push proxy",
                caller,
                **fields,
                status="not_sent",
                reason="push_proxy_remove_device",
                error="device was reported as removed",
            )
            return False
        self.logger.debug("Notification sent to push proxy", caller, **fields, status="Successful")
        return True


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# HTTP API
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as Mattermost's AppError JSON."""

    def __init__(self, status: int, error_id: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


class MattermostEmulatorServer(ThreadingHTTPServer):
    """HTTP server carrying the emulator's state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        config: EffectiveConfig,
        logger: ServerLogger,
        db: EmulatorDatabase,
    ):
        host = address[0]
        if host and ":" in host:
            self.address_family = socket.AF_INET6
        elif not host and socket.has_ipv6:
            # ":8065" means every interface; prefer a dual-stack socket like Go does.
            self.address_family = socket.AF_INET6
            address = ("::", address[1])
        self.config = config
        self.logger = logger
        self.db = db
        self.push = PushSender(config, logger, db.diagnostic_id)
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


class MattermostApiHandler(BaseHTTPRequestHandler):
    """The subset of the Mattermost v4 API used by push notification tests."""

    server: MattermostEmulatorServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http sets: headers and body are separate writes here, and
    # Nagle + delayed ACK would add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "MattermostEmulator"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    # ---- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        self.server.logger.debug(
            "HTTP request", "web/handlers.go", request=format % args, remote=self.client_address[0]
        )

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
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

    def _send_error(self, error: ApiError) -> None:
        self._send_json(
            error.status,
            {
                "id": error.error_id,
                "message": error.message,
                "detailed_error": "",
                "request_id": new_id(),
                "status_code": error.status,
            },
        )

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise ApiError(400, "api.context.invalid_body_param.app_error", "Invalid body") from exc

    def _session(self) -> dict[str, Any]:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token.strip():
            token = ""
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "MMAUTHTOKEN":
                    token = value
        with self.server.db.lock:
            for session in self.server.db.data["sessions"].values():
                if token and session["token"] == token.strip():
                    return session
        raise ApiError(
            401,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        )

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        routes = {
            ("GET", "/api/v4/system/ping"): self.handle_ping,
            ("POST", "/api/v4/users/login"): self.handle_login,
            ("POST", "/api/v4/users/logout"): self.handle_logout,
            ("GET", "/api/v4/users/me"): self.handle_me,
            ("PUT", "/api/v4/users/sessions/device"): self.handle_attach_device,
            ("POST", "/api/v4/channels/direct"): self.handle_direct_channel,
            ("POST", "/api/v4/posts"): self.handle_create_post,
            ("POST", "/api/v4/notifications/test"): self.handle_test_notification,
            ("POST", "/api/v4/notifications/ack"): self.handle_ack,
            ("GET", "/api/v4/config/client"): self.handle_client_config,
        }
        handler = routes.get((method, path))
        try:
            if handler is not None:
                handler()
            elif method == "GET" and path.startswith("/api/v4/users/username/"):
                self.handle_user_by_username(path.rsplit("/", 1)[1])
            elif method == "GET" and path == "/":
                self._send_html()
            else:
                raise ApiError(
                    404, "api.context.404.app_error", "Sorry, we could not find the page."
                )
        except ApiError as error:
            self._send_error(error)
        except Exception as exc:  # a bug in the emulator: answer 500 and log it
            self.server.logger.error("Unexpected error", "web/handlers.go", error=repr(exc))
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

    # ---- routes -----------------------------------------------------------------------------

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
        config = self.server.config
        self._send_json(
            200,
            {
                "BuildNumber": EMULATED_SERVER_VERSION,
                "DiagnosticId": self.server.db.diagnostic_id,
                "TelemetryId": self.server.db.diagnostic_id,
                "SendPushNotifications": str(config.send_push).lower(),
                "SiteURL": config.site_url,
                "Version": EMULATED_SERVER_VERSION,
            },
        )

    def handle_login(self) -> None:
        body = self._read_json()
        if not isinstance(body, dict):
            raise ApiError(400, "api.context.invalid_body_param.app_error", "Invalid body")
        db = self.server.db
        user = db.find_user_by_login(str(body.get("login_id", "")))
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
        with db.lock:
            db.data["sessions"][session["id"]] = session
            if device_id:
                self._attach_device(session, device_id)
            db.save()
        self.server.logger.info("User logged in", "app/login.go", user_id=user["id"])
        self._send_json(200, public_user(user), headers={"Token": session["token"]})

    def handle_logout(self) -> None:
        session = self._session()
        with self.server.db.lock:
            self.server.db.data["sessions"].pop(session["id"], None)
            self.server.db.save()
        self._send_json(200, {"status": "OK"})

    def handle_me(self) -> None:
        session = self._session()
        user = self.server.db.user(session["user_id"])
        if user is None:
            raise ApiError(404, "app.user.missing_account.const", "Unable to find the user.")
        self._send_json(200, public_user(user))

    def handle_user_by_username(self, username: str) -> None:
        self._session()
        user = self.server.db.find_user_by_login(username)
        if user is None or user["username"] != username.lower():
            raise ApiError(404, "app.user.missing_account.const", "Unable to find the user.")
        self._send_json(200, public_user(user))

    def _attach_device(self, session: dict[str, Any], device_id: str) -> None:
        """Attach a device id; like the real server, revoke the user's other sessions using it."""
        db = self.server.db
        for other_id, other in list(db.data["sessions"].items()):
            if (
                other_id != session["id"]
                and other["user_id"] == session["user_id"]
                and other.get("device_id") == device_id
            ):
                del db.data["sessions"][other_id]
        session["device_id"] = device_id
        session["props"]["os"] = "iOS" if device_id.startswith("apple") else "Android"

    def handle_attach_device(self) -> None:
        session = self._session()
        body = self._read_json()
        device_id = str(body.get("device_id", "")) if isinstance(body, dict) else ""
        if not device_id:
            raise ApiError(
                400, "api.context.invalid_body_param.app_error", "Invalid or missing device_id"
            )
        with self.server.db.lock:
            self._attach_device(session, device_id)
            self.server.db.save()
        self.server.logger.debug(
            "Attached device id to session",
            "app/session.go",
            user_id=session["user_id"],
            session_id=session["id"],
            device_id=device_id,
        )
        self._send_json(200, {"status": "OK"})

    def handle_direct_channel(self) -> None:
        session = self._session()
        body = self._read_json()
        if (
            not isinstance(body, list)
            or len(body) != 2
            or not all(isinstance(item, str) for item in body)
        ):
            raise ApiError(
                400, "api.context.invalid_body_param.app_error", "Invalid or missing user_ids"
            )
        db = self.server.db
        for user_id in body:
            if db.user(user_id) is None:
                raise ApiError(
                    400,
                    "api.channel.create_direct_channel.invalid_user.app_error",
                    "Invalid user ID for direct channel creation.",
                )
        if session["user_id"] not in body:
            raise ApiError(
                403,
                "api.context.permissions.app_error",
                "You do not have the appropriate permissions.",
            )
        name = "__".join(sorted(body))
        with db.lock:
            for channel in db.data["channels"].values():
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
            db.data["channels"][channel["id"]] = channel
            db.save()
        self._send_json(201, channel)

    def handle_create_post(self) -> None:
        session = self._session()
        body = self._read_json()
        if not isinstance(body, dict) or not body.get("channel_id"):
            raise ApiError(
                400, "api.context.invalid_body_param.app_error", "Invalid or missing channel_id"
            )
        db = self.server.db
        with db.lock:
            channel = db.data["channels"].get(str(body["channel_id"]))
            if channel is None or session["user_id"] not in channel["members"]:
                raise ApiError(
                    403,
                    "api.context.permissions.app_error",
                    "You do not have the appropriate permissions.",
                )
            now = now_millis()
            post = {
                "id": new_id(),
                "create_at": now,
                "update_at": now,
                "edit_at": 0,
                "delete_at": 0,
                "is_pinned": False,
                "user_id": session["user_id"],
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
            db.posts[post["id"]] = post
            channel["last_post_at"] = now
            channel["total_msg_count"] = channel.get("total_msg_count", 0) + 1
            db.save()
            recipients = [member for member in channel["members"] if member != session["user_id"]]
            for member in recipients:
                db.unread[member] = db.unread.get(member, 0) + 1
        # The real server pushes asynchronously; the emulator pushes before answering so that a
        # test that gets the 201 can immediately look for the push. A failed push is only logged.
        self._notify_recipients(post, channel, recipients)
        self._send_json(201, post)

    def _notify_recipients(
        self, post: dict[str, Any], channel: dict[str, Any], recipients: list[str]
    ) -> None:
        server = self.server
        logger = server.logger
        sender = server.db.user(post["user_id"])
        if sender is None:
            return
        for recipient in recipients:
            if not server.push.enabled():
                logger.debug(
                    "Notification not sent - push notifications are disabled",
                    "app/notification.go",
                    type="push",
                    post_id=post["id"],
                    receiver_id=recipient,
                )
                continue
            sessions = server.db.mobile_sessions(recipient)
            if not sessions:
                logger.debug(
                    "Notification not sent - no mobile sessions",
                    "app/notification.go",
                    type="push",
                    post_id=post["id"],
                    receiver_id=recipient,
                )
                continue
            message = build_message_push(
                server.config.push_contents,
                post,
                channel,
                sender,
                badge=server.db.unread.get(recipient, 0),
                crt_enabled=server.config.collapsed_threads_enabled,
            )
            for session in sessions:
                server.push.send(copy.deepcopy(message), session)

    def handle_test_notification(self) -> None:
        session = self._session()
        server = self.server
        if not server.push.enabled():
            server.logger.debug(
                "Test notification not sent - push notifications are disabled",
                "app/notification_push.go",
            )
        else:
            # SendTestPushNotification: Version "2", type "test", badge -1, no text.
            message = {
                "ack_id": "",
                "post_id": "",
                "type": "test",
                "version": "2",
                "badge": -1,
                "is_crt_enabled": False,
                "is_id_loaded": False,
            }
            for device_session in server.db.mobile_sessions(session["user_id"]):
                server.push.send(dict(message), device_session)
        self._send_json(200, {"status": "OK"})

    def handle_ack(self) -> None:
        self._session()
        body = self._read_json()
        if not isinstance(body, dict) or not body.get("id"):
            raise ApiError(
                400,
                "api.push_notifications_ack.message.parse.app_error",
                "Failed to parse the ack message.",
            )
        if self.server.push.enabled():
            try:
                self.server.push.post_json("/api/v1/ack", body)
            except RuntimeError as exc:
                self.server.logger.error(
                    "Failed to send ack to push proxy", "app/notification_push.go", error=str(exc)
                )
        self._send_json(200, {"status": "OK"})


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
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG_PATH, help="config.json path")
    parser.add_argument(
        "command",
        nargs="?",
        choices=("server", "version"),
        default="server",
        help="'server' (the default) runs the server; 'version' prints the emulated version",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "version":
        print(f"Version: {EMULATED_SERVER_VERSION}\nBuild Number: emulator\nBuild Hash: emulator")
        return 0
    config_path = Path(args.config)
    try:
        effective = EffectiveConfig(load_config_file(config_path), os.environ)
        host, port = parse_listen_address(effective.listen_address)
        logger = ServerLogger(effective, Path.cwd())
        db = EmulatorDatabase(Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)))
    except (ConfigError, OSError) as exc:
        print(f"Error: failed to load configuration: {exc}", file=sys.stderr)
        return 1

    logger.info("Loaded config", "config/store.go", source=f"file://{config_path.resolve()}")
    if effective.overridden:
        logger.info(
            "Environment overrides", "config/store.go", settings=",".join(effective.overridden)
        )
    logger.info(
        "Push notification settings",
        "app/server.go",
        send_push_notifications=effective.send_push,
        push_notification_server=effective.push_server,
        push_notification_contents=effective.push_contents,
        file_level=str(effective.get("LogSettings", "FileLevel")).upper(),
        server_id=db.diagnostic_id,
    )
    logger.info(
        "Starting Server...", "app/server.go", emulator=True, version=EMULATED_SERVER_VERSION
    )
    try:
        server = MattermostEmulatorServer((host, port), effective, logger, db)
    except OSError as exc:
        logger.error("Failed to start server", "app/server.go", error=str(exc))
        print(f"Error: cannot listen on {effective.listen_address}: {exc}", file=sys.stderr)
        return 1

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
        logger.info("Server stopped", "app/server.go")
        logger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
