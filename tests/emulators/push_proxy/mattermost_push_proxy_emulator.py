#!/usr/bin/python3
"""Mattermost Push Proxy EMULATOR (tests only, not the real mattermost-push-proxy).

A single-file stand-in for the Go program released as ``mattermost-push-proxy`` v6.5.0
(mattermost/mattermost-push-proxy, ``server/*.go``) and the libraries it sends with
(sideshow/apns2 v0.25.0, firebase.google.com/go/v4 v4.18.0, golang.org/x/oauth2).
``build.py`` ships it as ``bin/mattermost-push-proxy`` inside a release-shaped tarball. It
needs ``python3`` and ``python3-cryptography`` (Debian 12), nothing else.

* flags ``-config FILE`` (default ``mattermost-push-proxy.json``) and ``-version``; the config
  is looked up like the real FindConfigFile (``/tmp/<name>``, ``./config/<name>``,
  ``../config/<name>``, then ``<name>``); a missing or invalid config refuses to start;
* credentials are parsed at start exactly as the real code parses them (apns2
  ``token.AuthKeyFromBytes`` / ``certificate.FromPemBytes``, oauth2 ``google.JWTConfigFromJSON``);
  a rejected one is logged ("Failed to initialize client"), its type is skipped, the service
  stays up, and every push of that type answers FAIL "Did not send message because of missing
  platform property ...";
* pushes are really sent, over HTTPS (HTTP/1.1, not HTTP/2), where the real proxy sends them:
  APNs ``https://api.push.apple.com`` / ``https://api.sandbox.push.apple.com``
  ``/3/device/<token>`` (JWT ES256 bearer or TLS client certificate), and FCM v1
  ``https://fcm.googleapis.com/v1/projects/<project>/messages:send`` after an OAuth2 JWT-bearer
  grant at the service file's ``token_uri``. TLS is verified against the system trust store
  (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured, as Go does). Egress proxies as the real
  code uses them: APNs through ``HTTPS_PROXY`` (else ``HTTP_PROXY``) always, FCM and OAuth2 as
  Go's ``http.ProxyFromEnvironment`` (``HTTPS_PROXY``/``https_proxy``, ``NO_PROXY``/``no_proxy``);
* the answers of APNs / FCM are mapped as the real proxy maps them (OK / REMOVE / FAIL), with the
  real retries bounded by SendTimeoutSec and RetryTimeoutSec;
* routes ``GET /``, ``GET /version``, ``POST /api/v1/send_push``, ``POST /api/v1/ack`` and
  ``GET /metrics`` (only when EnableMetrics, on the same listener); HTTP 429 over
  ThrottlePerSec per ThrottleVaryByHeader value.

Test hooks: every push the upstream accepted is logged as ``EMULATOR-DELIVERY {json}`` (console
and file log) and appended to ``$PUSH_PROXY_EMULATOR_RECORD`` when set; a push that was not
delivered is logged as ``EMULATOR-UNDELIVERED {json}``. ``$PUSH_PROXY_EMULATOR_UPSTREAMS``
(tests only) maps the real host names to loopback addresses, e.g.
``api.push.apple.com=127.0.0.1:8443,fcm.googleapis.com=127.0.0.1:8443``; in the lab, DNS
resolves the real names and port 443 is used.
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import hashlib
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlencode, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Replaced by build.py when the release tarball is built.
EMULATOR_VERSION = "6.5.0"
EMULATOR_HASH = "0000000000000000000000000000000000000000"
EMULATOR_BUILD_DATE = "unknown"
EMULATOR_PLATFORM = "linux/amd64"

DEFAULT_CONFIG_NAME = "mattermost-push-proxy.json"
DELIVERY_MARKER = "EMULATOR-DELIVERY "
UNDELIVERED_MARKER = "EMULATOR-UNDELIVERED "
RECORD_ENV = "PUSH_PROXY_EMULATOR_RECORD"
UPSTREAMS_ENV = "PUSH_PROXY_EMULATOR_UPSTREAMS"
# server/server.go: messages over 2047 bytes are cut to msg.Message[0:2046]; channel names to 64.
MAX_MESSAGE_BYTES = 2047
MESSAGE_CUT_BYTES = 2046
MAX_CHANNEL_NAME_BYTES = 64
# server/server.go: CONNECTION_TIMEOUT_SECONDS (read and write timeouts), MAX_RETRIES.
CONNECTION_TIMEOUT_SECONDS = 60
MAX_RETRIES = 3
ROOT_BANNER = b"<html><body>Mattermost Push Proxy</body></html>"
GO_USER_AGENT = "Go-http-client/1.1"

# apns2 client.go: HostDevelopment / HostProduction.
APNS_HOST_PRODUCTION = "https://api.push.apple.com"
APNS_HOST_DEVELOPMENT = "https://api.sandbox.push.apple.com"
# apns2 token/token.go: TokenTimeout, the bearer is regenerated after 3000 s.
APNS_TOKEN_TIMEOUT_SECONDS = 3000
# apns2 notification.go: PriorityHigh.
APNS_PRIORITY_HIGH = "10"
# push-proxy server/apple_notification_server.go: these reasons answer REMOVE.
APNS_REMOVE_REASONS = {
    "BadDeviceToken",
    "Unregistered",
    "MissingDeviceToken",
    "DeviceTokenNotForTopic",
}
# firebase-admin-go messaging/messaging.go: defaultMessagingEndpoint.
FCM_ENDPOINT = "https://fcm.googleapis.com/v1"
FIREBASE_SDK_VERSION = "4.18.0"
GO_VERSION = "1.26.3"  # go.mod of push-proxy v6.5.0
# push-proxy server/android_notification_server.go: scope.
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# golang.org/x/oauth2 google/google.go: JWTTokenURL, the default token_uri.
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# golang.org/x/oauth2 token.go: expiryDelta, a token is refreshed 10 s before it expires.
OAUTH2_EXPIRY_DELTA_SECONDS = 10
# firebase-admin-go internal/http_client.go: WithDefaultRetryConfig.
FIREBASE_MAX_RETRIES = 4
FIREBASE_BACKOFF_FACTOR = 0.5
FIREBASE_MAX_DELAY_SECONDS = 120
FIREBASE_RETRY_STATUSES = {503}
# firebase-admin-go internal/errors.go: httpStatusToErrorCodes.
FIREBASE_STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "CONFLICT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

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
# server/push_notification.go: the PushNotification fields that are not strings.
PUSH_INT_FIELDS = ("app_version", "badge", "cont_ava")
PUSH_BOOL_FIELDS = ("is_crt_enabled", "is_id_loaded")
ACK_FIELDS = ("id", "platform", "type")  # PushNotificationAck
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

    def warn(self, msg: str, **fields: Any) -> None:
        self.log("warn", msg, **fields)

    def marker(self, marker: str, record: dict[str, Any]) -> None:
        """Always ``<prefix> <marker><one-line JSON>``, whatever LogFormat says."""
        payload = json.dumps(record, sort_keys=True, separators=(",", ":"))
        self._write(f"info  [{log_timestamp()}] {marker}{payload}")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --------------------------------------------------------------------------------------------
# Errors as the Go program reports them
# --------------------------------------------------------------------------------------------


class GoError(Exception):
    """An error with the text the Go program would show, and what kind of failure it is.

    kind: "refused" (a dial or read failure: firebase-admin-go internal/errors.go
    isConnectionRefused), "timeout" (a request cut by its context), "deadline" (a bare
    context.DeadlineExceeded), "firebase" (a FirebaseError), "other".

        raise GoError("dial tcp 127.0.0.1:443: connect: connection refused", "refused")
    """

    def __init__(
        self, text: str, kind: str = "other", platform_code: str = "", messaging_code: str = ""
    ):
        super().__init__(text)
        self.text = text
        self.kind = kind
        self.platform_code = platform_code
        self.messaging_code = messaging_code

    def wrapped(self, prefix: str) -> GoError:
        """The same failure with ``prefix`` before its text (Go's fmt.Errorf / url.Error)."""
        return GoError(prefix + self.text, self.kind, self.platform_code, self.messaging_code)


DEADLINE_EXCEEDED = "context deadline exceeded"


def go_quote(text: str) -> str:
    """Go's %q for plain text."""
    return json.dumps(text, ensure_ascii=False)


def go_os_error(op: str, path: str, exc: OSError) -> str:
    """Go's *PathError text: ``open /x: no such file or directory``."""
    reason = (exc.strerror or str(exc)).lower()
    return f"{op} {path}: {reason}"


def go_json_syntax_error(exc: json.JSONDecodeError) -> str:
    """Roughly encoding/json's SyntaxError text for a Python decode error."""
    rest = exc.doc[exc.pos :].strip()
    if not rest:
        return "unexpected end of JSON input"
    char = rest[0]
    return f"invalid character {go_char(char)} looking for beginning of value"


def go_char(char: str) -> str:
    return "'\\''" if char == "'" else f"'{char}'"


def go_json_type(value: Any) -> str:
    """encoding/json's name of a JSON value's type in UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def go_field(obj: dict[str, Any], name: str) -> Any:
    """encoding/json's key matching: exact first, then case-insensitive."""
    if name in obj:
        return obj[name]
    for key, value in obj.items():
        if key.lower() == name.lower():
            return value
    return None


# --------------------------------------------------------------------------------------------
# PEM and private keys, parsed as Go's encoding/pem and crypto/x509 do
# --------------------------------------------------------------------------------------------

PEM_BEGIN = re.compile(rb"-----BEGIN (?P<type>[^\r\n-]*)-----[ \t]*\r?\n")


@dataclass
class PemBlock:
    type: str
    headers: dict[str, str]
    der: bytes


def pem_decode(data: bytes) -> tuple[PemBlock | None, bytes]:
    """encoding/pem Decode: the first well-formed block and what follows it, or (None, data).

    A BEGIN line whose block does not parse is skipped and the search goes on after it.

        block, rest = pem_decode(Path("AuthKey.p8").read_bytes())
    """
    rest = data
    while True:
        begin = PEM_BEGIN.search(rest)
        if begin is None:
            return None, data
        after = rest[begin.end() :]
        end_marker = b"-----END " + begin.group("type") + b"-----"
        end = after.find(end_marker)
        if end < 0:
            return None, data
        headers: dict[str, str] = {}
        lines = after[:end].splitlines()
        while lines and b":" in lines[0]:
            key, _, value = lines.pop(0).partition(b":")
            headers[key.decode("latin-1").strip()] = value.decode("latin-1").strip()
        try:
            der = base64.b64decode(b"".join(b"".join(lines).split()), validate=True)
        except ValueError:
            rest = after
            continue
        tail = after[end + len(end_marker) :]
        return PemBlock(begin.group("type").decode("latin-1"), headers, der), tail


def der_sequence_tags(der: bytes) -> list[int] | None:
    """The tags of the children of the outer DER SEQUENCE, or None when it is not one."""

    def read(pos: int) -> tuple[int, int, int]:
        tag = der[pos]
        length = der[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4:
                raise ValueError("bad length")
            length = int.from_bytes(der[pos : pos + count], "big")
            pos += count
        if pos + length > len(der):
            raise ValueError("truncated")
        return tag, pos, pos + length

    try:
        tag, start, end = read(0)
        if tag != 0x30:
            return None
        tags = []
        while start < end:
            child, _, start = read(start)
            tags.append(child)
        return tags
    except (IndexError, ValueError):
        return None


ASN1_STRUCTURE_ERROR = "asn1: structure error: tags don't match"
GO_EC_CURVES = {"secp224r1", "secp256r1", "secp384r1", "secp521r1"}


def parse_pkcs8_private_key(der: bytes) -> Any:
    """crypto/x509 ParsePKCS8PrivateKey, with its hints for SEC1 and PKCS#1 input."""
    tags = der_sequence_tags(der) or []
    if tags[:3] != [0x02, 0x30, 0x04]:
        if tags[:2] == [0x02, 0x04]:
            raise GoError(
                "x509: failed to parse private key (use ParseECPrivateKey instead for this key "
                "format)"
            )
        if len(tags) >= 9 and set(tags[:9]) == {0x02}:
            raise GoError(
                "x509: failed to parse private key (use ParsePKCS1PrivateKey instead for this "
                "key format)"
            )
        raise GoError(ASN1_STRUCTURE_ERROR)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise GoError(f"x509: failed to parse private key: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in GO_EC_CURVES:
        raise GoError(
            "x509: failed to parse EC private key embedded in PKCS#8: x509: unknown elliptic curve"
        )
    return key


def parse_pkcs1_private_key(der: bytes) -> rsa.RSAPrivateKey:
    """crypto/x509 ParsePKCS1PrivateKey, with its hints for PKCS#8 and SEC1 input."""
    tags = der_sequence_tags(der) or []
    if not (len(tags) >= 9 and set(tags[:9]) == {0x02}):
        if tags[:3] == [0x02, 0x30, 0x04]:
            raise GoError(
                "x509: failed to parse private key (use ParsePKCS8PrivateKey instead for this "
                "key format)"
            )
        if tags[:2] == [0x02, 0x04]:
            raise GoError(
                "x509: failed to parse private key (use ParseECPrivateKey instead for this key "
                "format)"
            )
        raise GoError(ASN1_STRUCTURE_ERROR)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise GoError(f"x509: failed to parse private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise GoError(ASN1_STRUCTURE_ERROR)
    return key


def apns_auth_key_from_bytes(data: bytes) -> ec.EllipticCurvePrivateKey:
    """apns2 token/token.go AuthKeyFromBytes: the FIRST PEM block only, PKCS#8, ECDSA."""
    block, _ = pem_decode(data)
    if block is None:
        raise GoError("token: AuthKey must be a valid .p8 PEM file")
    key = parse_pkcs8_private_key(block.der)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise GoError("token: AuthKey must be of type ecdsa.PrivateKey")
    return key


def _legacy_cipher(name: str, key: bytes, iv: bytes) -> Cipher[Any]:
    """The ciphers of crypto/x509 pem_decrypt.go rfc1423Algos."""
    if name.startswith("AES-"):
        return Cipher(algorithms.AES(key), modes.CBC(iv))
    try:  # cryptography >= 43 keeps 3DES in the "decrepit" module
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # Debian 12's python3-cryptography 38
        TripleDES = algorithms.TripleDES  # type: ignore[attr-defined]
    return Cipher(TripleDES(key * 3 if len(key) == 8 else key), modes.CBC(iv))


LEGACY_PEM_CIPHERS = {
    "DES-CBC": (8, 8),
    "DES-EDE3-CBC": (24, 8),
    "AES-128-CBC": (16, 16),
    "AES-192-CBC": (24, 16),
    "AES-256-CBC": (32, 16),
}


def decrypt_legacy_pem_block(block: PemBlock, password: bytes) -> bytes:
    """crypto/x509 DecryptPEMBlock (RFC 1423, the ``DEK-Info`` header): EVP_BytesToKey with MD5,
    CBC, and the padding check that reports a wrong password."""
    mode, _, iv_hex = block.headers.get("DEK-Info", "").partition(",")
    if mode not in LEGACY_PEM_CIPHERS:
        raise GoError("x509: unknown encryption mode")
    key_size, block_size = LEGACY_PEM_CIPHERS[mode]
    try:
        iv = bytes.fromhex(iv_hex)
    except ValueError as exc:
        raise GoError("x509: invalid IV") from exc
    if len(iv) != block_size:
        raise GoError("x509: incorrect IV size")
    key, digest = b"", b""
    while len(key) < key_size:
        digest = hashlib.md5(digest + password + iv[:8]).digest()  # RFC 1423 key derivation
        key += digest
    data = block.der
    if len(data) % block_size:
        raise GoError("x509: encrypted PEM data is not a multiple of the block size")
    decryptor = _legacy_cipher(mode, key[:key_size], iv).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    if not plain:
        raise GoError("x509: invalid padding")
    last = plain[-1]
    if last == 0 or last > block_size or plain[-last:] != bytes([last]) * last:
        raise GoError("x509: decryption password incorrect")
    return plain[:-last]


@dataclass
class ClientCertificate:
    """A loaded APNs certificate: the DER certificates and the private key (never logged)."""

    certificates: list[bytes]
    key: Any = dataclasses.field(repr=False)

    def chain_pem(self) -> bytes:
        pem = b"".join(
            b"-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(der)
            + b"-----END CERTIFICATE-----\n"
            for der in self.certificates
        )
        return pem + self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def apns_certificate_from_pem_bytes(data: bytes, password: str) -> ClientCertificate:
    """apns2 certificate/certificate.go FromPemBytes: every CERTIFICATE block, and every
    ``*PRIVATE KEY`` block (the last wins) decrypted only in the legacy DEK-Info form, then
    parsed as PKCS#1 or PKCS#8."""
    certificates: list[bytes] = []
    key: Any = None
    rest = data
    while True:
        block, rest = pem_decode(rest)
        if block is None:
            break
        if block.type == "CERTIFICATE":
            certificates.append(block.der)
        if block.type.endswith("PRIVATE KEY"):
            der = block.der
            if "DEK-Info" in block.headers:  # x509.IsEncryptedPEMBlock
                try:
                    der = decrypt_legacy_pem_block(block, password.encode())
                except GoError as exc:
                    raise GoError("failed to decrypt private key") from exc  # ErrFailedToDecryptKey
            key = _parse_pkcs1_or_pkcs8(der)
        if not rest:
            break
    if not certificates:
        raise GoError("no certificate")
    if key is None:
        raise GoError("no private key")
    return ClientCertificate(certificates, key)


def _parse_pkcs1_or_pkcs8(der: bytes) -> Any:
    """apns2 certificate.go parsePrivateKey: PKCS#1, then PKCS#8, else
    ErrFailedToParsePrivateKey."""
    for parse in (parse_pkcs1_private_key, parse_pkcs8_private_key):
        try:
            return parse(der)
        except GoError:
            continue
    raise GoError("failed to parse private key")


def google_private_key(text: str) -> rsa.RSAPrivateKey:
    """golang.org/x/oauth2 internal/oauth2.go ParseKey: first PEM block if any, PKCS#8 then
    PKCS#1, and it must be RSA."""
    data = text.encode()
    block, _ = pem_decode(data)
    der = block.der if block is not None else data
    try:
        key = parse_pkcs8_private_key(der)
    except GoError:
        try:
            key = parse_pkcs1_private_key(der)
        except GoError as exc:
            raise GoError(
                f"private key should be a PEM or plain PKCS1 or PKCS8; parse error: {exc.text}"
            ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise GoError("private key is invalid")
    return key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_compact(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    """The JWS signing input ``b64url(header).b64url(claims)`` (Go's json.Marshal key order)."""
    encode = lambda value: b64url(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())  # noqa: E731
    return f"{encode(header)}.{encode(claims)}".encode("ascii")


def sign_es256(key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> str:
    """golang-jwt SigningMethodES256: raw r||s; a key that is not P-256 is ErrInvalidKey."""
    if key.curve.key_size != 256:
        raise GoError("key is invalid")
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def sign_rs256(key: rsa.RSAPrivateKey, signing_input: bytes) -> str:
    return b64url(key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))


# --------------------------------------------------------------------------------------------
# Egress: where a request goes (upstream map, proxies), and the HTTPS client
# --------------------------------------------------------------------------------------------


def parse_upstreams(text: str) -> dict[str, tuple[str, int]]:
    """``host=ip:port,host=ip:port`` (tests only) -> {host: (ip, port)}."""
    upstreams: dict[str, tuple[str, int]] = {}
    for item in text.split(","):
        name, sep, address = item.strip().partition("=")
        if not sep:
            continue
        host, _, port = address.strip().rpartition(":")
        upstreams[name.strip().lower()] = (host.strip("[]"), int(port))
    return upstreams


def apns_proxy_server(environ: dict[str, str]) -> str:
    """push-proxy server/server.go getProxyServer: HTTPS_PROXY, then HTTP_PROXY (upper case
    only). When set, apple_notification_server.go setupProxySettings sends EVERY APNs request
    through it (a Proxy func returning that URL: no NO_PROXY, no loopback exception)."""
    return environ.get("HTTPS_PROXY") or environ.get("HTTP_PROXY") or ""


@dataclass
class GoProxyFromEnvironment:
    """net/http ProxyFromEnvironment (golang.org/x/net/http/httpproxy proxy.go), as used by
    firebase-admin-go and golang.org/x/oauth2 (both on a clone of http.DefaultTransport).

        proxy = GoProxyFromEnvironment.from_environ(os.environ)
        proxy.proxy_for("https://fcm.googleapis.com/v1/...")  # "http://proxy1:3128" or None
    """

    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> GoProxyFromEnvironment:
        def any_of(*names: str) -> str:
            return next((environ[name] for name in names if environ.get(name)), "")

        return cls(
            http_proxy=any_of("HTTP_PROXY", "http_proxy"),
            https_proxy=any_of("HTTPS_PROXY", "https_proxy"),
            no_proxy=any_of("NO_PROXY", "no_proxy"),
        )

    @staticmethod
    def _parse_proxy(value: str) -> str | None:
        """parseProxy: a value without a scheme or host is read as ``http://<value>``."""
        if not value:
            return None
        parts = urlsplit(value)
        if not parts.scheme or not parts.netloc:
            return "http://" + value
        return value

    def proxy_for(self, url: str) -> str | None:
        parts = urlsplit(url)
        proxy = self._parse_proxy(self.https_proxy if parts.scheme == "https" else self.http_proxy)
        if proxy is None:
            return None
        port = str(parts.port or (443 if parts.scheme == "https" else 80))
        return proxy if self.use_proxy((parts.hostname or "").lower(), port) else None

    def use_proxy(self, host: str, port: str) -> bool:
        """useProxy: never for localhost or a loopback IP; NO_PROXY entries are ``*``, CIDRs,
        IPs (optionally with a port) and domains (``example.com`` matches itself and its
        subdomains, ``.example.com`` and ``*.example.com`` only its subdomains)."""
        if host == "localhost":
            return False
        ip = _ip_or_none(host)
        if ip is not None and ip.is_loopback:
            return False
        for entry in self.no_proxy.split(","):
            entry = entry.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return False
            if "/" in entry:  # net.ParseCIDR
                try:
                    network = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    network = None
                if network is not None:
                    if ip is not None and ip in network:
                        return False
                    continue
            entry_host, entry_port = _split_host_port(entry)
            if not entry_host:
                continue
            entry_ip = _ip_or_none(entry_host)
            if entry_ip is not None:
                if ip is not None and ip == entry_ip and entry_port in ("", port):
                    return False
                continue
            if ip is not None:
                continue  # domainMatch never matches an IP address
            match_host = not entry_host.startswith(".") and not entry_host.startswith("*.")
            suffix = "." + entry_host.removeprefix("*.").lstrip(".")
            if (host.endswith(suffix) or (match_host and host == suffix[1:])) and entry_port in (
                "",
                port,
            ):
                return False
        return True


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _split_host_port(entry: str) -> tuple[str, str]:
    """net.SplitHostPort when the entry has a port, else the entry itself."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest.removeprefix(":")
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def redact_url(url: str) -> str:
    """A proxy URL without its password, for logs and records."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:xxxxx@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


@dataclass
class HttpAnswer:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise GoError(DEADLINE_EXCEEDED, "timeout")
    return remaining


def _dial(host: str, port: int, deadline: float) -> socket.socket:
    """net.Dial("tcp", host:port) within the deadline, with Go's error texts."""
    try:
        return socket.create_connection((host, port), timeout=_remaining(deadline))
    except TimeoutError as exc:
        raise GoError(DEADLINE_EXCEEDED, "timeout") from exc
    except socket.gaierror as exc:
        raise GoError(f"dial tcp: lookup {host}: no such host", "refused") from exc
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise GoError(f"dial tcp {host}:{port}: connect: {reason}", "refused") from exc


def _connect_tunnel(proxy_url: str, host: str, port: int, deadline: float) -> socket.socket:
    """net/http Transport dialConn through a proxy: CONNECT host:port, 200 or the status text."""
    proxy = urlsplit(proxy_url)
    if proxy.scheme != "http":
        raise GoError(
            f"proxyconnect tcp: proxy scheme {proxy.scheme!r} is not modelled by the emulator "
            "(http:// only)"
        )
    try:
        sock = _dial(proxy.hostname or "", proxy.port or 80, deadline)
    except GoError as exc:
        raise exc.wrapped("proxyconnect tcp: ") from None
    target = f"{host}:{port}"
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {GO_USER_AGENT}\r\n"
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        request += (
            f"Proxy-Authorization: Basic {base64.b64encode(credentials.encode()).decode()}\r\n"
        )
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall((request + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                raise GoError("unexpected EOF")
            head += chunk
    except TimeoutError as exc:
        sock.close()
        raise GoError(DEADLINE_EXCEEDED, "timeout") from exc
    except GoError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise GoError(f"read tcp: {(exc.strerror or str(exc)).lower()}", "refused") from exc
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    _, code, text = [*status_line.split(" ", 2), "", ""][:3]
    if code != "200":
        sock.close()
        raise GoError(text or "unknown status code")
    return sock


def _tls_error(exc: ssl.SSLError, host: str) -> GoError:
    """crypto/tls error texts for what Python's ssl reports."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = (exc.verify_message or "").lower()
        if "hostname mismatch" in message or "ip address mismatch" in message:
            detail = f"x509: certificate is not valid for {host}"
        elif "expired" in message or "not yet valid" in message:
            detail = "x509: certificate has expired or is not yet valid"
        else:
            detail = "x509: certificate signed by unknown authority"
        return GoError(f"tls: failed to verify certificate: {detail}")
    return GoError(f"remote error: tls: {(exc.reason or str(exc)).lower().replace('_', ' ')}")


class HttpsClient:
    """A tiny HTTP/1.1 client with Go's behaviour where it matters: the system trust store,
    the given egress proxy (CONNECT), a deadline for the whole request, Go's error texts.

        client = HttpsClient(parse_upstreams(os.environ.get(UPSTREAMS_ENV, "")))
        answer = client.request("POST", url, headers, body, deadline, proxy_url=None)
    """

    def __init__(self, upstreams: dict[str, tuple[str, int]]):
        self.upstreams = upstreams

    def tls_context(self, client_certificate: ClientCertificate | None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.set_alpn_protocols(["http/1.1"])
        if client_certificate is not None:
            _load_cert_chain_in_memory(context, client_certificate.chain_pem())
        return context

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
        proxy_url: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> HttpAnswer:
        """Send one request; raise GoError ``Post "<url>": <reason>`` (net/http url.Error)."""
        op = method[:1].upper() + method[1:].lower()
        try:
            return self._request(method, url, headers, body, deadline, proxy_url, context)
        except GoError as exc:
            raise exc.wrapped(f"{op} {go_quote(url)}: ") from None

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
        proxy_url: str | None,
        context: ssl.SSLContext | None,
    ) -> HttpAnswer:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if proxy_url:
            sock = _connect_tunnel(proxy_url, host, port, deadline)
        else:
            dial_host, dial_port = self.upstreams.get(host, (host, port))
            sock = _dial(dial_host, dial_port, deadline)
        try:
            if parts.scheme == "https":
                sock.settimeout(_remaining(deadline))
                try:
                    sock = (context or self.tls_context(None)).wrap_socket(
                        sock, server_hostname=host
                    )
                except ssl.SSLError as exc:
                    raise _tls_error(exc, host) from exc
            return self._exchange(sock, method, parts, host, port, headers, body, deadline)
        except TimeoutError as exc:
            raise GoError(DEADLINE_EXCEEDED, "timeout") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise GoError(f"read tcp: {(exc.strerror or str(exc)).lower()}", "refused") from exc
        except (http.client.HTTPException, OSError) as exc:
            raise GoError(
                "EOF" if isinstance(exc, http.client.RemoteDisconnected) else str(exc)
            ) from exc
        finally:
            sock.close()

    @staticmethod
    def _exchange(
        sock: socket.socket,
        method: str,
        parts: Any,
        host: str,
        port: int,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
    ) -> HttpAnswer:
        connection = http.client.HTTPConnection(host, port)
        connection.sock = sock
        sock.settimeout(_remaining(deadline))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        default_port = 443 if parts.scheme == "https" else 80
        connection.putheader("Host", host if port == default_port else f"{host}:{port}")
        connection.putheader("User-Agent", GO_USER_AGENT)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        return HttpAnswer(response.status, response.reason, answer_headers, data)


def _load_cert_chain_in_memory(context: ssl.SSLContext, pem: bytes) -> None:
    """Load a certificate chain + key without writing the key to disk (memfd on Linux)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("apns-client-certificate", 0)
        try:
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    import tempfile

    with tempfile.NamedTemporaryFile() as handle:  # 0600, removed at once
        handle.write(pem)
        handle.flush()
        context.load_cert_chain(handle.name)


def wait_until(moment: float) -> None:
    """Sleep until a monotonic moment (a retry backoff, as Go's time.After)."""
    delay = moment - time.monotonic()
    if delay > 0:
        threading.Event().wait(delay)


# --------------------------------------------------------------------------------------------
# Push clients
# --------------------------------------------------------------------------------------------


@dataclass
class SendOutcome:
    """What a push became: the proxy's answer and what the upstream said."""

    answer: dict[str, str]
    upstream_status: int | None = None
    upstream_reason: str | None = None
    upstream_id: str | None = None
    error: str | None = None
    egress_proxy: str | None = None
    attempts: int = 0

    @property
    def delivered(self) -> bool:
        return self.answer.get("status") == "OK"


def ok_answer() -> dict[str, str]:
    return {"status": "OK"}  # server/push_response.go NewOkPushResponse


def remove_answer() -> dict[str, str]:
    return {"status": "REMOVE"}  # NewRemovePushResponse


def fail_answer(message: str) -> dict[str, str]:
    return {"status": "FAIL", "error": message}  # NewErrorPushResponse


def redact_token(token: str) -> str:
    """server/push_notification.go redactToken: the first 8 characters and an ellipsis."""
    return token if len(token) <= 8 else token[:8] + "…"


class PushClient:
    """An initialised push target (server/server.go NotificationServer)."""

    kind = ""

    def __init__(self, settings: dict[str, Any], runtime: ProxyRuntime):
        self.settings = settings
        self.push_type = settings["Type"]
        self.runtime = runtime

    @property
    def details(self) -> dict[str, Any]:
        return {}

    def send(self, msg: dict[str, Any]) -> SendOutcome:
        raise NotImplementedError


@dataclass
class ProxyRuntime:
    """What every client shares: logger, metrics, timeouts, the HTTPS client, the proxies."""

    logger: Any
    metrics: Any
    send_timeout: float
    retry_timeout: float
    http: HttpsClient
    apns_proxy: str
    google_proxy: GoProxyFromEnvironment


class AppleClient(PushClient):
    """server/apple_notification_server.go with apns2 (client.go, token/token.go)."""

    kind = "apple"

    def __init__(
        self,
        settings: dict[str, Any],
        runtime: ProxyRuntime,
        auth_key: ec.EllipticCurvePrivateKey | None = None,
        certificate: ClientCertificate | None = None,
    ):
        super().__init__(settings, runtime)
        self.host = (
            APNS_HOST_DEVELOPMENT if settings["ApplePushUseDevelopment"] else APNS_HOST_PRODUCTION
        )
        self.auth_key = auth_key
        self.certificate = certificate
        self._bearer = ""
        self._issued_at = 0.0
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    @property
    def details(self) -> dict[str, Any]:
        return {
            "delivered_via": "apns",
            "apns_topic": self.settings["ApplePushTopic"],
            "apns_environment": (
                "development" if self.settings["ApplePushUseDevelopment"] else "production"
            ),
            "apns_auth": "token" if self.auth_key is not None else "certificate",
        }

    def bearer(self) -> str:
        """apns2 Token.GenerateIfExpired: a new JWT every TokenTimeout seconds. A failed
        Generate is ignored there, so the old (or empty) bearer is sent."""
        assert self.auth_key is not None
        with self._lock:
            if time.time() >= self._issued_at + APNS_TOKEN_TIMEOUT_SECONDS:
                issued_at = int(time.time())
                header = {"alg": "ES256", "kid": self.settings["AppleAuthKeyID"]}
                claims = {"iat": issued_at, "iss": self.settings["AppleTeamID"]}
                signing_input = jwt_compact(header, claims)
                try:
                    signature = sign_es256(self.auth_key, signing_input)
                except GoError:
                    return self._bearer
                self._bearer = signing_input.decode() + "." + signature
                self._issued_at = issued_at
            return self._bearer

    def tls_context(self) -> ssl.SSLContext:
        """The TLS client config: system roots, plus the APNs certificate for cert auth."""
        with self._lock:
            if self._context is None:
                try:
                    self._context = self.runtime.http.tls_context(self.certificate)
                except ssl.SSLError as exc:
                    # Go only finds a key that does not match the certificate at the handshake.
                    raise GoError("remote error: tls: error decrypting message") from exc
            return self._context

    def build_notification(self, msg: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        """SendNotification / buildVoIPNotification: (topic, payload, apns-push-type)."""
        if msg.get("transport") == "voip":
            return self._voip_notification(msg)
        aps: dict[str, Any] = {}
        payload: dict[str, Any] = {"aps": aps}
        badge = msg.get("badge", 0)
        if badge == 0 and msg.get("type") == "clear" and msg.get("app_version", 1) > 1:
            aps["badge"] = 1
        elif badge != -1:
            aps["badge"] = badge
        push_type = msg.get("type", "")
        if msg.get("is_id_loaded"):
            aps.update(category=msg.get("category", ""), sound="default")
            aps.update({"mutable-content": 1, "content-available": 1})
            aps["alert"] = {"body": msg.get("message", "")}
            payload.update(version=msg.get("version", ""), id_loaded=True)
        elif push_type in ("message", "session"):
            aps.update(category=msg.get("category", ""), sound="default", **{"mutable-content": 1})
            payload["version"] = msg.get("version", "")
            if push_type == "message":
                aps["content-available"] = 1
            channel_name = msg.get("channel_name", "")
            if channel_name and msg.get("version") == "v2":
                aps["alert"] = {"title": channel_name, "body": msg.get("message", "")}
            else:
                aps["alert"] = msg.get("message", "")
            if channel_name:
                payload["channel_name"] = channel_name
        elif push_type in ("clear", "test"):
            aps["content-available"] = 1
        payload.update(
            type=push_type,
            sub_type=msg.get("sub_type", ""),
            server_id=msg.get("server_id", ""),
            is_crt_enabled=bool(msg.get("is_crt_enabled")),
            signature=msg.get("signature") or "NO_SIGNATURE",
        )
        if msg.get("ack_id"):
            payload["ack_id"] = msg["ack_id"]
        if msg.get("channel_id"):
            payload["channel_id"] = msg["channel_id"]
            crt_root = msg.get("is_crt_enabled") and msg.get("root_id")
            aps["thread-id"] = msg["root_id"] if crt_root else msg["channel_id"]
        for key in (
            "team_id",
            "sender_id",
            "sender_name",
            "post_id",
            "root_id",
            "override_username",
            "override_icon_url",
            "from_webhook",
        ):
            if msg.get(key):
                payload[key] = msg[key]
        if not aps.get("category"):
            aps.pop("category", None)  # omitempty
        return self.settings["ApplePushTopic"], payload, "alert"

    def _voip_notification(self, msg: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        payload: dict[str, Any] = {"aps": {"content-available": 1}}
        payload.update(
            type=msg.get("type", ""),
            sub_type=msg.get("sub_type", ""),
            channel_id=msg.get("channel_id", ""),
            server_id=msg.get("server_id", ""),
            post_id=msg.get("post_id", ""),
            thread_id=msg.get("root_id", ""),
            sender_id=msg.get("sender_id", ""),
            id_loaded=bool(msg.get("is_id_loaded")),
            signature=msg.get("signature") or "NO_SIGNATURE",
        )
        for key in ("sender_name", "channel_name", "ack_id"):
            if msg.get(key):
                payload[key] = msg[key]
        return self.settings["ApplePushTopic"] + ".voip", payload, "voip"

    def push(
        self,
        device_token: str,
        topic: str,
        payload: dict[str, Any],
        push_type: str,
        deadline: float,
    ) -> tuple[HttpAnswer, str]:
        """apns2 Client.PushWithContext: one POST; (answer, reason) or GoError."""
        headers = {"Content-Type": "application/json; charset=utf-8", "apns-topic": topic}
        headers.update({"apns-priority": APNS_PRIORITY_HIGH, "apns-push-type": push_type})
        if self.auth_key is not None:
            headers["authorization"] = "bearer " + self.bearer()
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        url = f"{self.host}/3/device/{device_token}"
        proxy = self.runtime.apns_proxy or None
        answer = self.runtime.http.request(
            "POST", url, headers, body, deadline, proxy, self.tls_context()
        )
        reason = ""
        if answer.body.strip():
            try:
                decoded = json.loads(answer.body)
            except ValueError as exc:
                first = answer.body.strip()[:1].decode("latin-1")
                raise GoError(
                    f"invalid character {go_char(first)} looking for beginning of value"
                ) from exc
            reason = str(decoded.get("reason", "")) if isinstance(decoded, dict) else ""
        return answer, reason

    def send(self, msg: dict[str, Any]) -> SendOutcome:
        """dispatchAndHandleResponse: OK on 200, REMOVE on the device-token reasons, FAIL else."""
        topic, payload, push_type = self.build_notification(msg)
        transport = msg.get("transport", "")
        metrics, logger = self.runtime.metrics, self.runtime.logger
        metrics.notification_total("apple", msg.get("type", ""), transport)
        log_fields: dict[str, Any] = {"device": self.push_type, "type": msg.get("type", "")}
        log_fields["ack_id"] = msg.get("ack_id", "")
        if transport:
            log_fields["transport"] = transport
        logger.info("Sending apple push notification", **log_fields)
        outcome = SendOutcome(ok_answer(), egress_proxy=redact_url(self.runtime.apns_proxy) or None)
        try:
            answer, reason = self._send_with_retry(
                msg["device_id"], topic, payload, push_type, outcome
            )
        except GoError as exc:
            logger.error(
                "Failed to send apple push",
                sid=msg.get("server_id", ""),
                did=redact_token(msg["device_id"]),
                error=exc.text,
                type=self.push_type,
            )
            metrics.failure("apple", msg.get("type", ""), transport, "RequestError")
            outcome.answer, outcome.error = fail_answer("unknown transport error"), exc.text
            return outcome
        outcome.upstream_status, outcome.upstream_id = answer.status, answer.headers.get("apns-id")
        outcome.upstream_reason = reason or None
        if answer.status != 200:
            fields = {"ApnsID": answer.headers.get("apns-id", ""), "reason": reason}
            fields.update(code=answer.status, type=self.push_type)
            if reason in APNS_REMOVE_REASONS:
                logger.info("Failed to send apple push sending remove code res", **fields)
                metrics.removal("apple", msg.get("type", ""), transport, reason)
                outcome.answer = remove_answer()
                return outcome
            logger.error("Failed to send apple push with res", **fields)
            metrics.failure("apple", msg.get("type", ""), transport, reason)
            outcome.answer = fail_answer("unknown send response error")
            return outcome
        metrics.success("apple", msg.get("type", ""), transport, bool(msg.get("ack_id")))
        return outcome

    def _send_with_retry(
        self,
        device_token: str,
        topic: str,
        payload: dict[str, Any],
        push_type: str,
        outcome: SendOutcome,
    ) -> tuple[HttpAnswer, str]:
        """SendNotificationWithRetry: MAX_RETRIES tries, each bounded by RetryTimeoutSec, all by
        SendTimeoutSec, waiting 1 s, 2 s between; only transport errors are retried."""
        logger = self.runtime.logger
        general_deadline = time.monotonic() + self.runtime.send_timeout
        wait = 1.0
        error: GoError | None = None
        for retries in range(MAX_RETRIES):
            started = time.monotonic()
            attempt_deadline = min(general_deadline, started + self.runtime.retry_timeout)
            outcome.attempts += 1
            try:
                result = self.push(device_token, topic, payload, push_type, attempt_deadline)
            except GoError as exc:
                error = exc
            else:
                self.runtime.metrics.notification_response("apple", time.monotonic() - started)
                return result
            self.runtime.metrics.notification_response("apple", time.monotonic() - started)
            logger.error(
                "Failed to send apple push",
                did=redact_token(device_token),
                retry=retries,
                error=error.text,
            )
            if retries == MAX_RETRIES - 1:
                logger.error("Max retries reached", did=redact_token(device_token))
                break
            wait_until(min(time.monotonic() + wait, general_deadline))
            if time.monotonic() >= general_deadline:
                logger.info(
                    "Not retrying because context error",
                    did=redact_token(device_token),
                    retry=retries,
                    error=DEADLINE_EXCEEDED,
                )
                error = GoError(DEADLINE_EXCEEDED, "deadline")
                break
            wait *= 2
        assert error is not None
        raise error


@dataclass
class ServiceAccount:
    """The service file fields golang.org/x/oauth2 google.credentialsFile and push-proxy's
    serviceAccount read (the private key is parsed only when a token is needed)."""

    project_id: str
    client_email: str
    private_key_id: str
    token_uri: str
    private_key: str = dataclasses.field(repr=False)


class AndroidClient(PushClient):
    """server/android_notification_server.go with firebase-admin-go (messaging/messaging.go,
    internal/http_client.go, internal/errors.go) and golang.org/x/oauth2 (jwt/jwt.go)."""

    kind = "android"

    def __init__(self, settings: dict[str, Any], runtime: ProxyRuntime, account: ServiceAccount):
        super().__init__(settings, runtime)
        self.account = account
        self._access_token = ""
        self._expiry = 0.0
        self._lock = threading.Lock()

    @property
    def details(self) -> dict[str, Any]:
        return {"delivered_via": "fcm", "fcm_project_id": self.account.project_id}

    @property
    def send_url(self) -> str:
        return f"{FCM_ENDPOINT}/projects/{self.account.project_id}/messages:send"

    def access_token(self, deadline: float) -> str:
        """oauth2 ReuseTokenSource over jwt.Config.TokenSource: reuse the token until 10 s
        before it expires; errors are not cached."""
        with self._lock:
            if self._access_token and (
                not self._expiry or time.time() < self._expiry - OAUTH2_EXPIRY_DELTA_SECONDS
            ):
                return self._access_token
            token, expires_in = self._fetch_token(deadline)
            self._access_token = token
            self._expiry = time.time() + expires_in if expires_in > 0 else 0.0
            return token

    def _fetch_token(self, deadline: float) -> tuple[str, int]:
        """jwt/jwt.go jwtSource.Token: parse the key, sign an RS256 assertion (iss, scope, aud,
        iat = now - 10 s, exp = iat + 1 h; kid = private_key_id), POST it to token_uri."""
        key = google_private_key(self.account.private_key)
        issued_at = int(time.time()) - 10
        header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
        if self.account.private_key_id:
            header["kid"] = self.account.private_key_id
        claims = {
            "iss": self.account.client_email,
            "scope": FCM_SCOPE,
            "aud": self.account.token_uri,
            "exp": issued_at + 3600,
            "iat": issued_at,
        }
        signing_input = jwt_compact(header, claims)
        assertion = signing_input.decode() + "." + sign_rs256(key, signing_input)
        body = urlencode({"assertion": assertion, "grant_type": JWT_BEARER_GRANT}).encode()
        url = self.account.token_uri
        try:
            answer = self.runtime.http.request(
                "POST",
                url,
                {"Content-Type": "application/x-www-form-urlencoded"},
                body,
                deadline,
                self.runtime.google_proxy.proxy_for(url),
            )
        except GoError as exc:
            # fmt.Errorf("...: %v", err): a new plain error, the cause's kind is lost.
            raise GoError(f"oauth2: cannot fetch token: {exc.text}") from None
        if not 200 <= answer.status <= 299:
            text = answer.body[: 1 << 20].decode("utf-8", "replace")
            raise GoError(
                f"oauth2: cannot fetch token: {answer.status} {answer.reason}\nResponse: {text}"
            )
        try:
            decoded = json.loads(answer.body)
        except ValueError as exc:
            raise GoError(f"oauth2: cannot fetch token: {exc}") from exc
        expires_in = decoded.get("expires_in") if isinstance(decoded, dict) else 0
        token = decoded.get("access_token") if isinstance(decoded, dict) else ""
        return str(token or ""), int(expires_in or 0)

    def build_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """SendNotification: the FCM v1 request body ({"message": {data, android, token}})."""
        push_type = msg.get("type", "")
        data = {
            "ack_id": msg.get("ack_id", ""),
            "type": push_type,
            "sub_type": msg.get("sub_type", ""),
            "version": msg.get("version", ""),
            "channel_id": msg.get("channel_id", ""),
            "is_crt_enabled": "true" if msg.get("is_crt_enabled") else "false",
            "server_id": msg.get("server_id", ""),
            "category": msg.get("category", ""),
            "signature": msg.get("signature") or "NO_SIGNATURE",
        }
        if msg.get("badge", 0) != -1:
            data["badge"] = str(msg.get("badge", 0))
        if msg.get("root_id"):
            data["root_id"] = msg["root_id"]
        if msg.get("is_id_loaded"):
            data.update(post_id=msg.get("post_id", ""), message=msg.get("message", ""))
            data.update(id_loaded="true", sender_id=msg.get("sender_id", ""))
            data.update(sender_name="Someone", team_id=msg.get("team_id", ""))
        elif push_type in ("message", "session"):
            for key in (
                "team_id",
                "sender_id",
                "sender_name",
                "message",
                "channel_name",
                "post_id",
                "override_username",
                "override_icon_url",
                "from_webhook",
            ):
                data[key] = msg.get(key, "")
        return {
            "message": {
                "data": dict(sorted(data.items())),
                "android": {"priority": "high"},
                "token": msg["device_id"],
            }
        }

    def _attempt(self, body: bytes, deadline: float) -> HttpAnswer:
        """One HTTP attempt through oauth2.Transport: the token first (its errors are transport
        errors of the send), then the POST with the firebase headers."""
        url = self.send_url
        try:
            token = self.access_token(deadline)
        except GoError as exc:
            raise exc.wrapped(f"Post {go_quote(url)}: ") from None
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Goog-Api-Format-Version": "2",
            "X-Firebase-Client": f"fire-admin-go/{FIREBASE_SDK_VERSION}",
            "X-Goog-Api-Client": f"gl-go/{GO_VERSION} fire-admin/{FIREBASE_SDK_VERSION}",
        }
        return self.runtime.http.request(
            "POST", url, headers, body, deadline, self.runtime.google_proxy.proxy_for(url)
        )

    def firebase_send(self, body: bytes, deadline: float, outcome: SendOutcome) -> HttpAnswer:
        """internal/http_client.go HTTPClient.Do with the default retry config: up to 4 retries
        on network errors and 503, waiting 0, 1, 2, 4 s (or Retry-After), within the context."""
        retries = 0
        while True:
            outcome.attempts += 1
            answer: HttpAnswer | None = None
            error: GoError | None = None
            try:
                answer = self._attempt(body, deadline)
            except GoError as exc:
                error = exc
            retry = retries < FIREBASE_MAX_RETRIES and (
                error is not None
                or (answer is not None and answer.status in FIREBASE_RETRY_STATUSES)
            )
            delay = 0.0 if retries == 0 else float(int(2**retries * FIREBASE_BACKOFF_FACTOR))
            if answer is not None and answer.headers.get("retry-after", "").isdigit():
                delay = max(delay, float(answer.headers["retry-after"]))
            if delay > FIREBASE_MAX_DELAY_SECONDS:
                retry = False
            if not retry:
                break
            wait_until(min(time.monotonic() + delay, deadline))
            if time.monotonic() >= deadline:
                raise GoError(DEADLINE_EXCEEDED, "deadline")  # waitForRetry: ctx.Err()
            retries += 1
        if error is not None:
            raise firebase_transport_error(error)
        assert answer is not None
        outcome.upstream_status = answer.status
        if 200 <= answer.status < 300:
            return answer
        raise fcm_error(answer)

    def send(self, msg: dict[str, Any]) -> SendOutcome:
        """SendNotification: REMOVE on UNREGISTERED / SENDER_ID_MISMATCH, FAIL with the error
        text otherwise."""
        push_type = msg.get("type", "")
        metrics, logger = self.runtime.metrics, self.runtime.logger
        metrics.notification_total("android", push_type, "")
        logger.info(
            "Sending android push notification",
            device=self.push_type,
            type=push_type,
            ack_id=msg.get("ack_id", ""),
        )
        body = json.dumps(self.build_message(msg), separators=(",", ":"), ensure_ascii=False)
        proxy = self.runtime.google_proxy.proxy_for(self.send_url)
        outcome = SendOutcome(ok_answer(), egress_proxy=redact_url(proxy) if proxy else None)
        try:
            answer = self._send_with_retry(body.encode(), msg["device_id"], outcome)
        except GoError as exc:
            outcome.error = exc.text
            outcome.upstream_reason = exc.messaging_code or exc.platform_code or None
            logger.error(
                "Failed to send FCM push",
                sid=msg.get("server_id", ""),
                did=redact_token(msg["device_id"]),
                error=exc.text,
                type=self.push_type,
                errorCode=exc.platform_code if exc.kind == "firebase" else "NONE",
            )
            if exc.messaging_code in ("UNREGISTERED", "SENDER_ID_MISMATCH"):
                logger.info("Android response failure sending remove code", type=self.push_type)
                metrics.removal("android", push_type, "", "UNREGISTERED")
                outcome.answer = remove_answer()
                return outcome
            reasons = {
                "INTERNAL": "INTERNAL",
                "INVALID_ARGUMENT": "INVALID_ARGUMENT",
                "QUOTA_EXCEEDED": "QUOTA_EXCEEDED",
                "THIRD_PARTY_AUTH_ERROR": "THIRD_PARTY_AUTH_ERROR",
                "APNS_AUTH_ERROR": "THIRD_PARTY_AUTH_ERROR",
                "UNAVAILABLE": "UNAVAILABLE",
            }
            reason = reasons.get(exc.messaging_code, "unknown transport error")
            metrics.failure("android", push_type, "", reason)
            outcome.answer = fail_answer(exc.text)
            return outcome
        try:
            outcome.upstream_id = json.loads(answer.body).get("name")
        except (ValueError, AttributeError):
            metrics.success("android", push_type, "", bool(msg.get("ack_id")))
        return outcome

    def _send_with_retry(self, body: bytes, device_token: str, outcome: SendOutcome) -> HttpAnswer:
        """SendNotificationWithRetry: up to MAX_RETRIES on a bare deadline error or INTERNAL /
        QUOTA_EXCEEDED, waiting 1 s, 2 s; the whole bounded by SendTimeoutSec."""
        logger = self.runtime.logger
        general_deadline = time.monotonic() + self.runtime.send_timeout
        wait = 1.0
        error: GoError | None = None
        for retries in range(MAX_RETRIES):
            started = time.monotonic()
            attempt_deadline = min(general_deadline, started + self.runtime.retry_timeout)
            try:
                answer = self.firebase_send(body, attempt_deadline, outcome)
            except GoError as exc:
                error = exc
            else:
                self.runtime.metrics.notification_response("android", time.monotonic() - started)
                return answer
            self.runtime.metrics.notification_response("android", time.monotonic() - started)
            retryable = error.kind == "deadline" or error.messaging_code in (
                "INTERNAL",
                "QUOTA_EXCEEDED",
            )
            if not retryable:
                break
            logger.error(
                "Failed to send android push",
                did=redact_token(device_token),
                retry=retries,
                error=error.text,
            )
            if retries == MAX_RETRIES - 1:
                logger.error("Max retries reached", did=redact_token(device_token))
                break
            wait_until(min(time.monotonic() + wait, general_deadline))
            if time.monotonic() >= general_deadline:
                logger.info(
                    "Not retrying because context error",
                    did=redact_token(device_token),
                    retry=retries,
                    error=DEADLINE_EXCEEDED,
                )
                raise GoError(DEADLINE_EXCEEDED, "deadline")
            wait *= 2
        assert error is not None
        raise error


def firebase_transport_error(error: GoError) -> GoError:
    """internal/errors.go newFirebaseErrorTransport."""
    if error.kind in ("timeout", "deadline"):
        return GoError(
            f"timed out while making an http call: {error.text}", "firebase", "DEADLINE_EXCEEDED"
        )
    if error.kind == "refused":
        return GoError(f"failed to establish a connection: {error.text}", "firebase", "UNAVAILABLE")
    return GoError(f"unknown error while making an http call: {error.text}", "firebase", "UNKNOWN")


def fcm_error(answer: HttpAnswer) -> GoError:
    """messaging/messaging.go handleFCMError over internal/errors.go NewFirebaseErrorOnePlatform:
    the platform code from the HTTP status or error.status, the text from error.message, and the
    FcmError detail's errorCode."""
    text = answer.body.decode("utf-8", "replace")
    code = FIREBASE_STATUS_CODES.get(answer.status, "UNKNOWN")
    message = f"unexpected http response with status: {answer.status}\n{text}"
    messaging_code = ""
    try:
        error = json.loads(text).get("error", {})
    except (ValueError, AttributeError):
        error = {}
    if isinstance(error, dict):
        code = str(error.get("status") or code)
        message = str(error.get("message") or message)
        for detail in error.get("details") or []:
            if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
                messaging_code = str(detail.get("errorCode", ""))
                break
    return GoError(message, "firebase", code, messaging_code)


# --------------------------------------------------------------------------------------------
# Client initialisation (server/server.go Start)
# --------------------------------------------------------------------------------------------


def init_apple_client(settings: dict[str, Any], runtime: ProxyRuntime) -> AppleClient:
    """AppleNotificationServer.Initialize: token auth when AuthKeyFile, AuthKeyID and TeamID
    are all set, else the PEM certificate; errors with the real texts."""
    logger = runtime.logger
    if settings["AppleAuthKeyFile"] and settings["AppleAuthKeyID"] and settings["AppleTeamID"]:
        path = settings["AppleAuthKeyFile"]
        try:
            key = apns_auth_key_from_bytes(_read_bytes(path))
        except GoError as exc:
            raise GoError(
                f"failed to initialize apple notification service with AuthKey file err={exc.text} "
            ) from None
        logger.info("Initializing apple notification server with AuthKey", type=settings["Type"])
        return AppleClient(settings, runtime, auth_key=key)
    if settings["ApplePushCertPrivate"]:
        path = settings["ApplePushCertPrivate"]
        try:
            certificate = apns_certificate_from_pem_bytes(
                _read_bytes(path), settings["ApplePushCertPassword"]
            )
        except GoError as exc:
            raise GoError(
                "failed to initialize apple notification service with pem cert "
                f"err={exc.text} for type={settings['Type']}"
            ) from None
        logger.info(
            "Initializing apple notification server with PEM certificate", type=settings["Type"]
        )
        return AppleClient(settings, runtime, certificate=certificate)
    raise GoError(
        "apple push notifications not configured: missing ApplePushCertPrivate for "
        f"type={settings['Type']}"
    )


def _read_bytes(path: str) -> bytes:
    """os.ReadFile with Go's error text."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise GoError(go_os_error("open", path, exc)) from exc


CREDENTIAL_STRING_FIELDS = (
    "type",
    "client_email",
    "private_key_id",
    "private_key",
    "auth_uri",
    "token_uri",
    "project_id",
    "universe_domain",
    "client_secret",
    "client_id",
    "refresh_token",
)


def parse_service_file(data: bytes) -> dict[str, str]:
    """google.JWTConfigFromJSON's json.Unmarshal into credentialsFile, with Go's errors."""
    try:
        raw = json.loads(data.decode("utf-8", "replace"))
    except json.JSONDecodeError as exc:
        raise GoError(go_json_syntax_error(exc)) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise GoError(
            f"json: cannot unmarshal {go_json_type(raw)} into Go value of type "
            "google.credentialsFile"
        )
    fields: dict[str, str] = {}
    for name in CREDENTIAL_STRING_FIELDS:
        value = go_field(raw, name)
        if value is not None and not isinstance(value, str):
            raise GoError(
                f"json: cannot unmarshal {go_json_type(value)} into Go struct field "
                f"credentialsFile.{name} of type string"
            )
        fields[name] = value or ""
    return fields


def init_android_client(settings: dict[str, Any], runtime: ProxyRuntime) -> AndroidClient:
    """AndroidNotificationServer.Initialize: read the service file, google.JWTConfigFromJSON
    (type must be service_account; the private key is NOT parsed here), then the firebase app
    (a project id is required). A bad private_key shows only at the first send."""
    logger = runtime.logger
    logger.info("Initializing Android notification server", type=settings["Type"])
    if settings["AndroidApiKey"]:
        logger.info(
            "AndroidPushSettings.AndroidAPIKey is no longer used. Please remove this config value."
        )
    location = settings["ServiceFileLocation"]
    if not location:
        raise GoError("android push notifications not configured: missing ServiceFileLocation")
    try:
        data = _read_bytes(location)
    except GoError as exc:
        raise GoError(f"error reading service file: {exc.text}") from None
    try:
        fields = parse_service_file(data)
    except GoError as exc:
        raise GoError(f"error getting JWT config: {exc.text}") from None
    if fields["type"] != "service_account":
        raise GoError(
            "error getting JWT config: google: read JWT from JSON credentials: 'type' field is "
            f'{go_quote(fields["type"])} (expected "service_account")'
        )
    # firebase.go getProjectID: the config's project, then GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT.
    project_id = (
        fields["project_id"]
        or os.environ.get("GOOGLE_CLOUD_PROJECT", "")
        or os.environ.get("GCLOUD_PROJECT", "")
    )
    if not project_id:
        raise GoError(
            "error initializing client: project ID is required to access Firebase Cloud "
            "Messaging client"
        )
    account = ServiceAccount(
        project_id=project_id,
        client_email=fields["client_email"],
        private_key_id=fields["private_key_id"],
        token_uri=fields["token_uri"] or GOOGLE_TOKEN_URL,
        private_key=fields["private_key"],
    )
    return AndroidClient(settings, runtime, account)


def init_clients(config: dict[str, Any], runtime: ProxyRuntime) -> dict[str, PushClient]:
    """server.go Start: every entry initialised in order; a failure is logged and skipped."""
    clients: dict[str, PushClient] = {}
    initialisers: tuple[tuple[str, Callable[[dict[str, Any], ProxyRuntime], PushClient]], ...] = (
        ("ApplePushSettings", init_apple_client),
        ("AndroidPushSettings", init_android_client),
    )
    for key, initialise in initialisers:
        for settings in config[key]:
            try:
                client = initialise(settings, runtime)
            except GoError as exc:
                runtime.logger.error("Failed to initialize client", error=exc.text)
                continue
            clients[settings["Type"]] = client
    return clients


# --------------------------------------------------------------------------------------------
# Throttle and metrics
# --------------------------------------------------------------------------------------------


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


class Histogram:
    """A Prometheus histogram with the client library's default buckets."""

    def __init__(self) -> None:
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        prefix = labels + "," if labels else ""
        lines = [
            f'{name}_bucket{{{prefix}le="{bound}"}} {count}'
            for bound, count in zip(LATENCY_BUCKETS, self.buckets, strict=True)
        ]
        lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines += [f"{name}_sum{suffix} {self.total}", f"{name}_count{suffix} {self.count}"]
        return lines


class Metrics:
    """server/metrics.go: the real metric names, help texts and labels (text exposition).

    metrics.success("apple", "message", "", with_ack=False)
    metrics.render()
    """

    COUNTERS: ClassVar[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
        (
            "service_notifications_total",
            "Number of notifications sent",
            ("platform", "type", "transport"),
        ),
        ("service_success_total", "Number of push success.", ("platform", "type", "transport")),
        (
            "service_success_with_ack_total",
            "Number of push success that contains ackId.",
            ("platform", "type", "transport"),
        ),
        ("service_delivered_total", "Number of push delivered.", ("platform", "type", "transport")),
        ("service_failure_total", "Number of push errors.", ("platform", "type", "transport")),
        (
            "service_failure_with_reason_total",
            "Number of push errors with reasons.",
            ("platform", "type", "transport", "reason"),
        ),
        (
            "service_removal_total",
            "Number of device token errors.",
            ("platform", "transport", "reason"),
        ),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, collections.Counter[tuple[str, ...]]] = {
            name: collections.Counter() for name, _, _ in self.COUNTERS
        }
        self.bad_request = 0
        self.service = Histogram()
        self.apns = Histogram()
        self.fcm = Histogram()
        self.notification: dict[str, Histogram] = collections.defaultdict(Histogram)

    def _inc(self, name: str, *labels: str) -> None:
        with self._lock:
            self.counters[name][labels] += 1

    def notification_total(self, platform: str, push_type: str, transport: str) -> None:
        self._inc("service_notifications_total", platform, push_type, transport)

    def success(self, platform: str, push_type: str, transport: str, with_ack: bool) -> None:
        self._inc("service_success_total", platform, push_type, transport)
        if with_ack:
            self._inc("service_success_with_ack_total", platform, push_type, transport)

    def delivered(self, platform: str, push_type: str, transport: str) -> None:
        self._inc("service_delivered_total", platform, push_type, transport)

    def failure(self, platform: str, push_type: str, transport: str, reason: str) -> None:
        self._inc("service_failure_total", platform, push_type, transport)
        if reason:
            self._inc("service_failure_with_reason_total", platform, push_type, transport, reason)

    def removal(self, platform: str, push_type: str, transport: str, reason: str) -> None:
        self._inc("service_removal_total", platform, transport, reason)
        self.failure(platform, push_type, transport, reason)

    def increment_bad_request(self) -> None:
        with self._lock:
            self.bad_request += 1

    def service_response(self, seconds: float) -> None:
        with self._lock:
            self.service.observe(seconds)

    def notification_response(self, platform: str, seconds: float) -> None:
        with self._lock:
            self.notification[platform].observe(seconds)
            {"apple": self.apns, "android": self.fcm}[platform].observe(seconds)

    def render(self) -> str:
        with self._lock:
            lines: list[str] = []
            for name, help_text, label_names in self.COUNTERS:
                if not self.counters[name]:
                    continue  # a CounterVec shows nothing until a label set is used
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                for labels, value in sorted(self.counters[name].items()):
                    pairs = ",".join(
                        f'{key}="{val}"' for key, val in zip(label_names, labels, strict=True)
                    )
                    lines.append(f"{name}{{{pairs}}} {value}")
            lines += [
                "# HELP service_bad_request_total Request to push proxy was a bad request",
                "# TYPE service_bad_request_total counter",
                f"service_bad_request_total {self.bad_request}",
            ]
            for name, histogram in (
                ("service_apns_request_duration_seconds", self.apns),
                ("service_fcm_request_duration_seconds", self.fcm),
                ("service_request_duration_seconds", self.service),
            ):
                lines += [
                    f"# HELP {name} Request latency distribution",
                    f"# TYPE {name} histogram",
                    *histogram.render(name),
                ]
            if self.notification:
                name = "service_notification_duration_seconds"
                lines += [
                    f"# HELP {name} Notifiction request latency distribution",
                    f"# TYPE {name} histogram",
                ]
                for platform, histogram in sorted(self.notification.items()):
                    lines += histogram.render(name, f'platform="{platform}"')
            return "\n".join(lines) + "\n"


class NoMetrics:
    """EnableMetrics false: the real proxy passes a nil *metrics and counts nothing."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


class PushProxyEmulatorServer(ThreadingHTTPServer):
    """HTTP server carrying the proxy's state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        config: dict[str, Any],
        logger: ProxyLogger,
        clients: dict[str, PushClient],
        metrics: Metrics | NoMetrics,
    ):
        host, port = parse_listen_address(config["ListenAddress"])
        if host and ":" in host:
            self.address_family = socket.AF_INET6
        elif not host and socket.has_ipv6:
            self.address_family = socket.AF_INET6  # ":8066": every interface, dual stack
            host = "::"
        self.config = config
        self.logger = logger
        self.clients = clients
        self.metrics = metrics
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

    def record_outcome(self, record: dict[str, Any], delivered: bool) -> None:
        """EMULATOR-DELIVERY (and the record file) for a delivered push, EMULATOR-UNDELIVERED
        on the logs for one that was not."""
        self.logger.marker(DELIVERY_MARKER if delivered else UNDELIVERED_MARKER, record)
        if not (delivered and self.record_path):
            return
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        try:
            with self.record_lock, open(self.record_path, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            self.logger.error("Cannot write delivery record", path=self.record_path, error=str(exc))


def decode_push_notification(
    raw: bytes, struct: str = "PushNotification", fields: dict[str, str] | None = None
) -> dict[str, Any]:
    """json.NewDecoder(r.Body).Decode(&msg) into server/push_notification.go PushNotification
    (or, with ``fields``, another struct whose other keys are ignored): the first JSON value
    only, ``null`` is an empty message, fields keep their Go types."""
    text = raw.decode("utf-8", "replace").lstrip()
    if not text:
        raise GoError("EOF")
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()):
            raise GoError("unexpected EOF") from exc
        raise GoError(go_json_syntax_error(exc)) from exc
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise GoError(
            f"json: cannot unmarshal {go_json_type(value)} into Go value of type server.{struct}"
        )
    msg: dict[str, Any] = {}
    for key, item in value.items():
        name = key.lower()
        if fields is not None and name not in fields:
            continue  # encoding/json ignores unknown keys
        expected = (fields or {}).get(name) or (
            "int" if name in PUSH_INT_FIELDS else "bool" if name in PUSH_BOOL_FIELDS else "string"
        )
        checks = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "string": lambda v: isinstance(v, str),
        }
        if item is not None and not checks[expected](item):
            raise GoError(
                f"json: cannot unmarshal {go_json_type(item)} into Go struct field "
                f"{struct}.{name} of type {expected}"
            )
        if item is not None:
            msg[name] = item
    return msg


def cut_utf8(text: str, limit: int) -> str:
    """Go's byte slicing of a string; a cut rune becomes U+FFFD when JSON-encoded."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="replace")


class PushProxyHandler(BaseHTTPRequestHandler):
    """Routes of the real push proxy (server/server.go Start)."""

    server: PushProxyEmulatorServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http sets: headers and body are separate writes here, and
    # Nagle + delayed ACK would add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "MattermostPushProxyEmulator"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_SECONDS

    def version_string(self) -> str:
        return self.server_version

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
        """json.NewEncoder(w).Encode: compact JSON and a newline; no Content-Type is set, so
        net/http sniffs "text/plain; charset=utf-8"."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        self._send(200, body, "text/plain; charset=utf-8")

    def _fail(self, error: str) -> None:
        """Log the error and answer {"status":"FAIL"}, counting a bad request."""
        self.server.logger.error(error)
        self.server.metrics.increment_bad_request()
        self._send_json(fail_answer(error))

    def _client_ip(self) -> str:
        """getIpAddress: X-Forwarded-For, then X-Real-IP, then the peer address."""
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
        self.server.logger.error("Error: code=429", path=path, ip=self._client_ip())
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
        routes: dict[str, dict[str, Callable[[], None]]] = {
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
        body = json.dumps({"hash": EMULATOR_HASH, "version": EMULATOR_VERSION}) + "\n"
        self._send(200, body.encode(), "application/json")

    def handle_metrics(self) -> None:
        body = self.server.metrics.render().encode()
        self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def handle_send_push(self) -> None:
        started = time.monotonic()
        try:
            self._send_push()
        finally:
            self.server.metrics.service_response(time.monotonic() - started)

    def _send_push(self) -> None:
        """handleSendNotification."""
        try:
            msg = decode_push_notification(self._read_body())
        except GoError as exc:
            self._fail(f"Failed to read message body: {exc.text}")
            return
        server_id = str(msg.get("server_id", ""))
        device_id = str(msg.get("device_id", ""))
        if not server_id:
            self._fail("Failed because of missing server Id")
            return
        if not device_id:
            self._fail(f"Failed because of missing device Id serverId={server_id}")
            return
        if len(str(msg.get("message", "")).encode()) > MAX_MESSAGE_BYTES:
            msg["message"] = cut_utf8(msg["message"], MESSAGE_CUT_BYTES)
        if len(str(msg.get("channel_name", "")).encode()) > MAX_CHANNEL_NAME_BYTES:
            msg["channel_name"] = cut_utf8(msg["channel_name"], MAX_CHANNEL_NAME_BYTES)
        raw_platform = str(msg.get("platform", ""))
        platform, sep, app_version = raw_platform.partition("-v")  # strings.Index(platform, "-v")
        msg["app_version"] = 1
        if sep:
            if app_version.isdigit() or re.fullmatch(r"[+-]?\d+", app_version):
                msg["app_version"] = int(app_version)
            else:
                self.server.logger.error(
                    f"Could not determine the app version in {platform} appVersion={app_version}"
                )
        msg["platform"] = platform
        client = self.server.clients.get(platform)
        if client is None:
            self._fail(
                "Did not send message because of missing platform property "
                f"type={platform} serverId={server_id}"
            )
            return
        outcome = client.send(msg)
        self.server.record_outcome(
            self._record(msg, raw_platform, client, outcome), outcome.delivered
        )
        self._send_json(outcome.answer)

    def _record(
        self, msg: dict[str, Any], raw_platform: str, client: PushClient, outcome: SendOutcome
    ) -> dict[str, Any]:
        """The EMULATOR-DELIVERY / EMULATOR-UNDELIVERED record of one push."""
        record: dict[str, Any] = dict.fromkeys(
            (
                "type",
                "message",
                "channel_name",
                "sender_name",
                "sender_id",
                "post_id",
                "channel_id",
                "ack_id",
            )
        )
        record.update({key: value for key, value in msg.items() if key != "app_version"})
        record.update(client.details)
        if isinstance(client, AppleClient) and msg.get("transport") == "voip":
            record["apns_topic"] = client.settings["ApplePushTopic"] + ".voip"
        record.update(
            platform=msg["platform"],
            platform_raw=raw_platform,
            client_type=client.kind,
            device_id=msg["device_id"],
            received_at=iso_now(),
            x_forwarded_for=self.headers.get("X-Forwarded-For"),
            emulator=True,
            answer=outcome.answer,
            upstream_status=outcome.upstream_status,
            upstream_reason=outcome.upstream_reason,
            upstream_id=outcome.upstream_id,
            upstream_error=outcome.error,
            egress_proxy=outcome.egress_proxy,
            attempts=outcome.attempts,
        )
        return record

    def handle_ack(self) -> None:
        started = time.monotonic()
        try:
            self._ack()
        finally:
            self.server.metrics.service_response(time.monotonic() - started)

    def _ack(self) -> None:
        """handleAckNotification: id, platform and type are required."""
        try:
            ack = decode_push_notification(
                self._read_body(), "PushNotificationAck", dict.fromkeys(ACK_FIELDS, "string")
            )
        except GoError as exc:
            self._fail(f"Failed to read ack body: {exc.text}")
            return
        for key, message in (
            ("id", "Failed because of missing ack Id"),
            ("platform", "Failed because of missing ack platform"),
            ("type", "Failed because of missing ack type"),
        ):
            if not ack.get(key):
                self._fail(message)
                return
        self.server.logger.info("Acknowledged delivery receipt", ack_id=ack["id"])
        self.server.metrics.delivered(ack["platform"], ack["type"], "")
        self._send_json(ok_answer())


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def version_text() -> str:
    """Like the real ``-version`` (internal/version/version.go: a tabwriter table)."""
    rows = [
        ("GitVersion:", f"v{EMULATOR_VERSION}"),
        ("BuildHash:", EMULATOR_HASH),
        ("BuildVersion:", EMULATOR_VERSION),
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


def build_runtime(config: dict[str, Any], logger: ProxyLogger) -> ProxyRuntime:
    """What the clients share, from the config and the environment."""
    environ = dict(os.environ)
    return ProxyRuntime(
        logger=logger,
        metrics=Metrics() if config["EnableMetrics"] else NoMetrics(),
        send_timeout=float(config["SendTimeoutSec"]),
        retry_timeout=float(config["RetryTimeoutSec"]),
        http=HttpsClient(parse_upstreams(environ.get(UPSTREAMS_ENV, ""))),
        apns_proxy=apns_proxy_server(environ),
        google_proxy=GoProxyFromEnvironment.from_environ(environ),
    )


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
    runtime = build_runtime(config, logger)
    if runtime.apns_proxy:
        logger.info("Proxy server detected.", proxyServer=redact_url(runtime.apns_proxy))
    clients = init_clients(config, runtime)
    try:
        server = PushProxyEmulatorServer(config, logger, clients, runtime.metrics)
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
