#!/usr/bin/python3
"""Mattermost Push Proxy EMULATOR (tests only, not the real mattermost-push-proxy).

A single-file, standard-library-only stand-in for the Go program released as
``mattermost-push-proxy``. ``build.py`` ships it as ``bin/mattermost-push-proxy`` inside a
release-shaped tarball. Faithful to ``reference/push-service-facts.md``:

* flags ``-config FILE`` (default ``mattermost-push-proxy.json``) and ``-version``;
* the config name is looked up like the real FindConfigFile: ``/tmp/<name>``,
  ``./config/<name>``, ``../config/<name>``, then ``<name>`` literally (relative to the working
  directory); a missing, unreadable or invalid config refuses to start (exit 1);
* config keys and defaults of the real proxy; an Apple or Android entry whose credentials cannot
  be loaded is logged ("Failed to initialize client") and skipped, not fatal;
* routes ``GET /``, ``GET /version``, ``POST /api/v1/send_push``, ``POST /api/v1/ack`` and
  ``GET /metrics`` (only when EnableMetrics); answers ``{"status":"OK"}`` or
  ``{"status":"FAIL","error":...}``; HTTP 429 over ThrottlePerSec per ThrottleVaryByHeader value.

Instead of talking to APNs/FCM, every accepted push is "delivered" to a recorder: a log line
``EMULATOR-DELIVERY {json}`` on the console (stdout, hence journald) and in the file log, and,
when ``$PUSH_PROXY_EMULATOR_RECORD`` names a file, the same JSON appended there as one line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

# Replaced by build.py when the release tarball is built.
EMULATOR_VERSION = "6.5.0"
EMULATOR_HASH = "0000000000000000000000000000000000000000"
EMULATOR_BUILD_DATE = "unknown"
EMULATOR_PLATFORM = "linux/amd64"

DEFAULT_CONFIG_NAME = "mattermost-push-proxy.json"
DELIVERY_MARKER = "EMULATOR-DELIVERY "
RECORD_ENV = "PUSH_PROXY_EMULATOR_RECORD"
MAX_MESSAGE_CHARS = 2047
MAX_CHANNEL_NAME_CHARS = 64
CONNECTION_TIMEOUT_SECONDS = 60
ROOT_BANNER = b"<html><body>Mattermost Push Proxy</body></html>"

CONFIG_DEFAULTS: dict[str, Any] = {
    "ListenAddress": ":8066",
    "ThrottlePerSec": 300,
    "ThrottleMemoryStoreSize": 50000,
    "ThrottleVaryByHeader": "X-Forwarded-For",
    "EnableMetrics": False,
    "SendTimeoutSec": 30,
    "RetryTimeoutSec": 8,
    "EnableConsoleLog": True,
    "EnableFileLog": False,
    "LogFileLocation": "",
    "LogFormat": "plain",
    "LogLevel": "info",
    "ApplePushSettings": [],
    "AndroidPushSettings": [],
}
APPLE_SETTING_TYPES: dict[str, type] = {
    "Type": str,
    "ApplePushUseDevelopment": bool,
    "ApplePushCertPrivate": str,
    "ApplePushCertPassword": str,
    "ApplePushTopic": str,
    "AppleAuthKeyFile": str,
    "AppleAuthKeyID": str,
    "AppleTeamID": str,
}
ANDROID_SETTING_TYPES: dict[str, type] = {
    "Type": str,
    "ServiceFileLocation": str,
    "AndroidApiKey": str,
}
GO_TYPE_NAMES = {bool: "bool", int: "int", str: "string", list: "slice"}
PLATFORM_SUFFIX = re.compile(r"^(?P<platform>.+)-v\d+$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ConfigError(Exception):
    """The configuration cannot be used: the proxy refuses to start."""


def log_timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d} Z"


def iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def find_config_file(file_name: str) -> str:
    """Exactly the real FindConfigFile: /tmp, ./config, ../config, then literally."""
    for candidate in ("/tmp/" + file_name, "./config/" + file_name, "../config/" + file_name):
        if _stat_ok(candidate):
            return os.path.abspath(candidate)
    if _stat_ok(file_name):
        return os.path.abspath(file_name)
    return file_name


def _stat_ok(path: str) -> bool:
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def _check_type(where: str, key: str, value: Any, expected: type) -> None:
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if value is not None and not ok:
        actual = {
            bool: "bool",
            int: "number",
            float: "number",
            str: "string",
            list: "array",
            dict: "object",
        }.get(type(value), type(value).__name__)
        raise ConfigError(
            f"json: cannot unmarshal {actual} into Go struct field {where}.{key} of type "
            f"{GO_TYPE_NAMES.get(expected, expected.__name__)}"
        )


def load_config(path: str) -> dict[str, Any]:
    """Read, parse and complete the config; raise ConfigError naming the file on any problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"open {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    try:
        config = _complete_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config


def _complete_config(raw: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, default in CONFIG_DEFAULTS.items():
        value = raw.get(key)
        _check_type("ConfigPushProxy", key, value, type(default))
        config[key] = default if value is None else value
    for key, value in raw.items():
        config.setdefault(key, value)  # unknown keys are ignored, like encoding/json
    for list_key, field_types in (
        ("ApplePushSettings", APPLE_SETTING_TYPES),
        ("AndroidPushSettings", ANDROID_SETTING_TYPES),
    ):
        entries = []
        for entry in config[list_key]:
            if not isinstance(entry, dict):
                raise ConfigError(f"{list_key} entries must be JSON objects")
            struct = list_key[:-1]
            for field, field_type in field_types.items():
                _check_type(struct, field, entry.get(field), field_type)
            entries.append(
                {
                    field: entry.get(field) or field_type()
                    for field, field_type in field_types.items()
                }
            )
        config[list_key] = entries
    # Zero values mean "default", as in the real LoadConfig / throttle setup.
    for key in ("ThrottlePerSec", "ThrottleMemoryStoreSize", "SendTimeoutSec", "RetryTimeoutSec"):
        if config[key] <= 0:
            config[key] = CONFIG_DEFAULTS[key]
    config["RetryTimeoutSec"] = min(config["RetryTimeoutSec"], config["SendTimeoutSec"])
    if not config["EnableConsoleLog"] and not config["EnableFileLog"]:
        config["EnableConsoleLog"] = True  # both logs off forces console on
    if not config["LogFileLocation"]:
        config["LogFileLocation"] = "./logs/push_proxy.log"
    if config["LogFormat"] not in ("plain", "json"):
        raise ConfigError(f'LogFormat must be "plain" or "json", not {config["LogFormat"]!r}')
    return config


def parse_listen_address(address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ConfigError(f"ListenAddress {address!r} has no port")
    try:
        return host.strip("[]"), int(port_text)
    except ValueError as exc:
        raise ConfigError(f"ListenAddress {address!r}: bad port") from exc


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


class ProxyLogger:
    """Console (stdout) and optional file log, plain or JSON, like the real proxy's mlog setup."""

    LEVELS: ClassVar[dict[str, int]] = {"debug": 10, "info": 20, "warn": 30, "error": 40}

    def __init__(self, config: dict[str, Any]):
        self._lock = threading.Lock()
        self.json_format = config["LogFormat"] == "json"
        self.level = self.LEVELS.get(str(config.get("LogLevel", "info")).lower(), 20)
        self.console = bool(config["EnableConsoleLog"])
        self._file = None
        if config["EnableFileLog"]:
            path = Path(config["LogFileLocation"])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def _write(self, line: str) -> None:
        with self._lock:
            if self.console:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def log(self, level: str, msg: str, **fields: Any) -> None:
        if self.LEVELS[level] < self.level:
            return
        if self.json_format:
            record = {"timestamp": log_timestamp(), "level": level, "msg": msg}
            record.update(fields)
            self._write(json.dumps(record, default=str))
            return
        line = f"{level:<5} [{log_timestamp()}] {msg}"
        for key, value in fields.items():
            text = str(value)
            if not text or any(ch in text for ch in ' "='):
                text = json.dumps(text)
            line += f" {key}={text}"
        self._write(line)

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)

    def debug(self, msg: str, **fields: Any) -> None:
        self.log("debug", msg, **fields)

    def delivery(self, record: dict[str, Any]) -> None:
        """Always ``<prefix> EMULATOR-DELIVERY <one-line JSON>``, whatever LogFormat says."""
        payload = json.dumps(record, sort_keys=True, separators=(",", ":"))
        self._write(f"info  [{log_timestamp()}] {DELIVERY_MARKER}{payload}")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --------------------------------------------------------------------------------------------
# Push clients (APNs / FCM stand-ins)
# --------------------------------------------------------------------------------------------


def _pem_blocks(text: str) -> list[tuple[str, bytes]]:
    """Return (label, DER bytes) for every well-formed PEM block in text."""
    blocks = []
    pattern = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
    for match in pattern.finditer(text):
        body = "".join(
            line.strip() for line in match.group(2).splitlines() if line.strip() and ":" not in line
        )
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            continue
        if der:
            blocks.append((match.group(1), der))
    return blocks


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"open {path}: {exc.strerror or exc}") from exc


class PushClient:
    """An initialised push client: what the real proxy would use to reach APNs or FCM."""

    def __init__(self, push_type: str, kind: str, details: dict[str, Any]):
        self.push_type = push_type
        self.kind = kind  # "apple" or "android"
        self.details = details


def init_apple_client(settings: dict[str, Any]) -> PushClient:
    """Token auth when AuthKeyFile, AuthKeyID and TeamID are all set, else the PEM certificate."""
    details: dict[str, Any] = {
        "delivered_via": "apns",
        "apns_topic": settings["ApplePushTopic"],
        "apns_environment": "development" if settings["ApplePushUseDevelopment"] else "production",
    }
    key_file = settings["AppleAuthKeyFile"]
    if key_file and settings["AppleAuthKeyID"] and settings["AppleTeamID"]:
        labels = [label for label, _ in _pem_blocks(_read_text(key_file))]
        if "PRIVATE KEY" not in labels and "EC PRIVATE KEY" not in labels:
            raise ValueError(f"AuthKey {key_file}: no PEM PRIVATE KEY block (a .p8 key)")
        details.update(
            apns_auth="token",
            apns_key_id=settings["AppleAuthKeyID"],
            apns_team_id=settings["AppleTeamID"],
        )
        return PushClient(settings["Type"], "apple", details)
    cert_file = settings["ApplePushCertPrivate"]
    if cert_file:
        labels = [label for label, _ in _pem_blocks(_read_text(cert_file))]
        if "CERTIFICATE" not in labels:
            raise ValueError(f"failed to load the apple pem cert {cert_file}: no certificate")
        if not any(label.endswith("PRIVATE KEY") for label in labels):
            raise ValueError(f"failed to load the apple pem cert {cert_file}: no private key")
        details.update(apns_auth="certificate")
        return PushClient(settings["Type"], "apple", details)
    raise ValueError(
        "Apple push notifications not configured: missing ApplePushCertPrivate or "
        "AppleAuthKeyFile/AppleAuthKeyID/AppleTeamID"
    )


def init_android_client(settings: dict[str, Any]) -> PushClient:
    """FCM v1: ServiceFileLocation must be a readable service-account JSON."""
    location = settings["ServiceFileLocation"]
    if not location:
        raise ValueError("Android push notifications not configured: missing ServiceFileLocation")
    try:
        service_account = json.loads(_read_text(location))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{location}: invalid JSON: {exc.msg}") from exc
    if not isinstance(service_account, dict) or service_account.get("type") != "service_account":
        raise ValueError(f'{location}: not a service account file ("type": "service_account")')
    details = {"delivered_via": "fcm", "fcm_project_id": service_account.get("project_id", "")}
    return PushClient(settings["Type"], "android", details)


def init_clients(config: dict[str, Any], logger: ProxyLogger) -> dict[str, PushClient]:
    clients: dict[str, PushClient] = {}
    for kind, key, initialise in (
        ("apple", "ApplePushSettings", init_apple_client),
        ("android", "AndroidPushSettings", init_android_client),
    ):
        for settings in config[key]:
            push_type = settings["Type"]
            logger.info(f"Initializing {kind} notification server for type={push_type}")
            try:
                client = initialise(settings)
            except ValueError as exc:
                logger.error("Failed to initialize client", type=push_type, error=str(exc))
                continue
            clients[push_type] = client
            logger.info("Initialized client", type=push_type, **client.details)
    if clients:
        logger.info("Initialized clients: " + ", ".join(sorted(clients)))
    else:
        logger.error("No push client could be initialised: every push will FAIL")
    return clients


# --------------------------------------------------------------------------------------------
# Throttle and metrics
# --------------------------------------------------------------------------------------------


class Throttle:
    """Per-key fixed one-second window, keyed on the ThrottleVaryByHeader header values only."""

    def __init__(self, per_sec: int, store_size: int, vary_by_headers: list[str]):
        self.per_sec = per_sec
        self.store_size = store_size
        self.headers = vary_by_headers
        self._windows: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def key(self, headers: Any) -> str:
        return "\n".join(str(headers.get(name, "")) for name in self.headers)

    def check(self, key: str) -> tuple[bool, int, float]:
        """Count one request; return (allowed, remaining, seconds until the window resets)."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= 1.0:
                window = [now, 0]
            window[1] += 1
            self._windows[key] = window
            self._windows.move_to_end(key)
            while len(self._windows) > self.store_size:
                self._windows.popitem(last=False)
            remaining = max(self.per_sec - int(window[1]), 0)
            return window[1] <= self.per_sec, remaining, max(1.0 - (now - window[0]), 0.0)


class Metrics:
    """The real proxy's Prometheus counters and histogram, in text exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success: collections.Counter[str] = collections.Counter()
        self.failure: collections.Counter[str] = collections.Counter()
        self.bad_request = 0
        self.ack = 0
        self.bucket_counts = [0] * len(LATENCY_BUCKETS)
        self.duration_sum = 0.0
        self.duration_count = 0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.duration_sum += seconds
            self.duration_count += 1
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[index] += 1

    def increment(self, name: str, push_type: str = "") -> None:
        with self._lock:
            if name == "success":
                self.success[push_type] += 1
            elif name == "failure":
                self.failure[push_type] += 1
            elif name == "bad_request":
                self.bad_request += 1
            elif name == "ack":
                self.ack += 1

    def render(self) -> str:
        with self._lock:
            lines = []
            for name, help_text, counter in (
                ("service_success_total", "Number of push success.", self.success),
                ("service_failure_total", "Number of push errors.", self.failure),
            ):
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                lines += [
                    f'{name}{{type="{key}"}} {value}' for key, value in sorted(counter.items())
                ]
            lines += [
                "# HELP service_bad_request_total Request to pushproxy was a bad request",
                "# TYPE service_bad_request_total counter",
                f"service_bad_request_total {self.bad_request}",
                "# HELP service_notification_ack_total Number of acks received.",
                "# TYPE service_notification_ack_total counter",
                f"service_notification_ack_total {self.ack}",
                "# HELP service_request_duration_seconds Request latency distribution",
                "# TYPE service_request_duration_seconds histogram",
            ]
            for bound, count in zip(LATENCY_BUCKETS, self.bucket_counts, strict=True):
                lines.append(f'service_request_duration_seconds_bucket{{le="{bound}"}} {count}')
            lines += [
                f'service_request_duration_seconds_bucket{{le="+Inf"}} {self.duration_count}',
                f"service_request_duration_seconds_sum {self.duration_sum}",
                f"service_request_duration_seconds_count {self.duration_count}",
            ]
            return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


class PushProxyEmulatorServer(ThreadingHTTPServer):
    """HTTP server carrying the proxy's state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, config: dict[str, Any], logger: ProxyLogger, clients: dict[str, PushClient]):
        host, port = parse_listen_address(config["ListenAddress"])
        if host and ":" in host:
            self.address_family = socket.AF_INET6
        elif not host and socket.has_ipv6:
            self.address_family = socket.AF_INET6  # ":8066": every interface, dual stack
            host = "::"
        self.config = config
        self.logger = logger
        self.clients = clients
        self.metrics = Metrics()
        self.throttle = Throttle(
            int(config["ThrottlePerSec"]),
            int(config["ThrottleMemoryStoreSize"]),
            str(config["ThrottleVaryByHeader"]).split(),
        )
        self.record_path = os.environ.get(RECORD_ENV) or None
        self.record_lock = threading.Lock()
        try:
            super().__init__((host, port), PushProxyHandler)
        except OSError:
            if host != "::":
                raise
            self.address_family = socket.AF_INET
            super().__init__(("", port), PushProxyHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def record_delivery(self, record: dict[str, Any]) -> None:
        self.logger.delivery(record)
        if self.record_path:
            line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
            try:
                with self.record_lock, open(self.record_path, "a", encoding="utf-8") as handle:
                    handle.write(line)
            except OSError as exc:
                self.logger.error(
                    "Cannot write delivery record", path=self.record_path, error=str(exc)
                )


class PushProxyHandler(BaseHTTPRequestHandler):
    """Routes of the real push proxy."""

    server: PushProxyEmulatorServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http sets: headers and body are separate writes here, and
    # Nagle + delayed ACK would add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "MattermostPushProxyEmulator"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    timeout = CONNECTION_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        self.server.logger.debug("HTTP request", request=format % args)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: dict[str, Any]) -> None:
        self._send(200, json.dumps(payload).encode(), "application/json")

    def _fail(self, error: str) -> None:
        """Log the error and answer {"status":"FAIL"}, counting a bad request."""
        self.server.logger.error(error)
        self.server.metrics.increment("bad_request")
        self._send_json({"status": "FAIL", "error": error})

    def _client_ip(self) -> str:
        return (
            self.headers.get("X-Forwarded-For")
            or self.headers.get("X-Real-IP")
            or self.client_address[0]
        )

    def _throttled(self) -> bool:
        throttle = self.server.throttle
        allowed, remaining, reset = throttle.check(throttle.key(self.headers))
        if allowed:
            return False
        path = urlsplit(self.path).path
        self.server.logger.error(f"{path}: code=429 ip={self._client_ip()}")
        self._send(
            429,
            b"limit exceeded\n",
            "text/plain; charset=utf-8",
            {
                "X-RateLimit-Limit": str(throttle.per_sec),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(max(int(reset + 0.999), 1)),
                "Retry-After": str(max(int(reset + 0.999), 1)),
            },
        )
        return True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _route(self, method: str) -> None:
        if self._throttled():
            return
        path = urlsplit(self.path).path
        routes: dict[str, dict[str, Any]] = {
            "/": {"GET": self.handle_root},
            "/version": {"GET": self.handle_version},
            "/api/v1/send_push": {"POST": self.handle_send_push},
            "/api/v1/ack": {"POST": self.handle_ack},
        }
        if self.server.config["EnableMetrics"]:
            routes["/metrics"] = {"GET": self.handle_metrics}
        methods = routes.get(path)
        if methods is None:
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
        elif method not in methods:
            self._send(405, b"", "text/plain; charset=utf-8")
        else:
            methods[method]()

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def handle_root(self) -> None:
        self._send(200, ROOT_BANNER, "text/html; charset=utf-8")

    def handle_version(self) -> None:
        self._send_json({"hash": EMULATOR_HASH, "version": EMULATOR_VERSION})

    def handle_metrics(self) -> None:
        body = self.server.metrics.render().encode()
        self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def handle_send_push(self) -> None:
        started = time.monotonic()
        try:
            self._send_push()
        finally:
            if self.server.config["EnableMetrics"]:
                self.server.metrics.observe(time.monotonic() - started)

    def _send_push(self) -> None:
        try:
            body = json.loads(self._read_body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self._fail("Failed to read message body")
            return
        server_id = str(body.get("server_id") or "")
        device_id = str(body.get("device_id") or "")
        if not server_id:
            self._fail("Failed because of missing server Id")
            return
        if not device_id:
            self._fail(f"Failed because of missing device Id serverId={server_id}")
            return
        raw_platform = str(body.get("platform") or "")
        suffix = PLATFORM_SUFFIX.match(raw_platform)
        platform = suffix.group("platform") if suffix else raw_platform
        for key, limit in (
            ("message", MAX_MESSAGE_CHARS),
            ("channel_name", MAX_CHANNEL_NAME_CHARS),
        ):
            if isinstance(body.get(key), str) and len(body[key]) > limit:
                body[key] = body[key][:limit]
        client = self.server.clients.get(platform)
        if client is None:
            self._fail(
                "Did not send message because of missing platform property "
                f"type={platform} serverId={server_id}"
            )
            return
        record: dict[str, Any] = {
            key: None
            for key in (
                "type",
                "message",
                "channel_name",
                "sender_name",
                "sender_id",
                "post_id",
                "channel_id",
                "ack_id",
            )
        }
        record.update(body)
        record.update(client.details)
        record.update(
            platform=platform,
            platform_raw=raw_platform,
            client_type=client.kind,
            device_id=device_id,
            received_at=iso_now(),
            x_forwarded_for=self.headers.get("X-Forwarded-For"),
            emulator=True,
        )
        self.server.logger.info(
            f"Sending {client.kind} push notification",
            type=platform,
            push_type=record["type"],
            ack_id=record["ack_id"] or "",
        )
        self.server.record_delivery(record)
        self.server.metrics.increment("success", platform)
        self._send_json({"status": "OK"})

    def handle_ack(self) -> None:
        try:
            ack = json.loads(self._read_body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            ack = None
        if not isinstance(ack, dict):
            self._fail("Failed to read ack body")
            return
        if not ack.get("id"):
            self._fail("Failed because of missing ack Id")
            return
        if not ack.get("received_at"):
            self._fail("Failed because of missing received at date")
            return
        self.server.logger.info(
            "Acknowledge delivery receipt",
            ack_id=ack["id"],
            platform=ack.get("platform", ""),
            type=ack.get("type", ""),
        )
        self.server.metrics.increment("ack")
        self._send_json({"status": "OK"})


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def version_text() -> str:
    """Like the real ``-version`` (a tab-aligned table from internal/version)."""
    rows = [
        ("GitVersion:", f"v{EMULATOR_VERSION}"),
        ("GitCommit:", EMULATOR_HASH),
        ("GitTreeState:", "clean"),
        ("BuildDate:", EMULATOR_BUILD_DATE),
        ("GoVersion:", "python3 (emulator)"),
        ("Compiler:", "emulator"),
        ("Platform:", EMULATOR_PLATFORM),
    ]
    return "\n".join(f"{label:<15}{value}" for label, value in rows) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mattermost-push-proxy",
        description="Mattermost Push Proxy EMULATOR for tests (not the real push proxy).",
        allow_abbrev=False,
    )
    parser.add_argument("-config", "--config", default=DEFAULT_CONFIG_NAME, metavar="FILE")
    parser.add_argument("-version", "--version", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        sys.stdout.write(version_text())
        return 0
    file_name = find_config_file(args.config)
    try:
        config = load_config(file_name)
        logger = ProxyLogger(config)
    except (ConfigError, OSError) as exc:
        message = f"Failed to load config file {file_name}: {exc}"
        print(message, file=sys.stderr)
        print(message)
        return 1
    logger.info(f"Loading {file_name}")
    logger.info("Push proxy server is initializing...", version=EMULATOR_VERSION, emulator=True)
    logger.info(
        "Settings",
        throttle_per_sec=config["ThrottlePerSec"],
        throttle_vary_by_header=config["ThrottleVaryByHeader"],
        send_timeout_sec=config["SendTimeoutSec"],
        retry_timeout_sec=config["RetryTimeoutSec"],
        metrics=config["EnableMetrics"],
        https_proxy=os.environ.get("HTTPS_PROXY") or os.environ.get("HTTP_PROXY") or "",
    )
    clients = init_clients(config, logger)
    try:
        server = PushProxyEmulatorServer(config, logger, clients)
    except (OSError, ConfigError) as exc:
        logger.error(f"Cannot listen on {config['ListenAddress']}: {exc}")
        print(f"Cannot listen on {config['ListenAddress']}: {exc}", file=sys.stderr)
        return 1

    def stop(_signum: int, _frame: Any) -> None:
        logger.info("Stopping Server...")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("Server is listening on " + config["ListenAddress"])
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        logger.info("Server stopped")
        logger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
