#!/usr/bin/python3
"""APNs / FCM / Google OAuth2 STAND-IN (tests only; not Apple's or Google's services).

One HTTPS server that answers, by Host header (or TLS server name), as:

* ``api.push.apple.com`` (production) and ``api.sandbox.push.apple.com`` (development): APNs
  provider API, ``POST /3/device/<token>`` with token (JWT ES256) or certificate auth;
* ``oauth2.googleapis.com``: ``POST /token``, the OAuth2 JWT-bearer grant of service accounts;
* ``fcm.googleapis.com``: FCM HTTP v1, ``POST /v1/projects/<project>/messages:send``.

It speaks HTTP/1.1 over TLS (ALPN ``http/1.1``); the real APNs requires HTTP/2, so a real
push proxy cannot talk to it, only the push proxy emulator can. Its behaviour follows Apple's
"Sending notification requests to APNs", "Handling notification responses from APNs" and
"Establishing a token-based connection to APNs", and Google's "FCM HTTP v1 API" reference
(projects.messages.send, ErrorCode), "Using OAuth 2.0 for Server to Server Applications"; each
rule below names its page.

What it knows comes from ``<data-dir>/registry.json`` (re-read whenever the file changes):
registered APNs keys, APNs client certificates, teams' topics, device tokens, Google service
accounts and FCM registration tokens; the format is in tests/emulators/README.md. Every request
is appended to ``<data-dir>/received.jsonl`` (authorization headers and OAuth2 assertions are
never written; the verified identity is recorded instead).

Runs on a bare Debian 12 host with ``python3`` and ``python3-cryptography`` only.

    push_services_emulator.py --cert fullchain.pem --key privkey.pem --port 443 \\
        --data-dir /var/lib/push-services-emulator [--bind ADDR] [--http-port 80]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

EMULATOR_VERSION = "push-services-emulator-1.0"
DEFAULT_CERT = "/etc/push-services-emulator/fullchain.pem"
DEFAULT_KEY = "/etc/push-services-emulator/privkey.pem"
DEFAULT_DATA_DIR = "/var/lib/push-services-emulator"
REGISTRY_FILE_NAME = "registry.json"
RECORD_FILE_NAME = "received.jsonl"
APNS_CLIENT_CA_FILE_NAME = "apns-client-ca.pem"
ACME_DIR_NAME = "acme-challenge"
ACME_PATH_PREFIX = "/.well-known/acme-challenge/"
ACME_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
TLS_HANDSHAKE_TIMEOUT_SECONDS = 30

APNS_HOSTS = {"api.push.apple.com": "production", "api.sandbox.push.apple.com": "development"}
FCM_HOST = "fcm.googleapis.com"
OAUTH2_HOST = "oauth2.googleapis.com"
SERVED_HOSTS = (*APNS_HOSTS, FCM_HOST, OAUTH2_HOST)

# Apple, "Establishing a token-based connection to APNs": a token older than one hour is
# rejected with ExpiredProviderToken.
APNS_TOKEN_MAX_AGE_SECONDS = 3600
# Apple, "Sending notification requests to APNs": payload limits (VoIP 5 KB, others 4 KB).
APNS_MAX_PAYLOAD = 4096
APNS_MAX_VOIP_PAYLOAD = 5120
# Apple, "Sending notification requests to APNs": the apns-push-type values.
APNS_PUSH_TYPES = {
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "widgets",
}
# Apple, "Sending notification requests to APNs": apns-topic suffixes per push type.
APNS_TOPIC_SUFFIXES = (".voip", ".complication", ".pushkit.fileprovider", ".push-type.liveactivity")
APNS_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")

# Google, "Using OAuth 2.0 for Server to Server Applications".
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCES = {
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
}
GOOGLE_MAX_ASSERTION_LIFETIME = 3600
GOOGLE_CLOCK_SKEW = 300
ACCESS_TOKEN_LIFETIME = 3599
FCM_SCOPES = {
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
}
FCM_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def log(message: str, **fields: Any) -> None:
    """One plain line on stdout (journald under systemd)."""
    extra = "".join(f" {key}={json.dumps(value)}" for key, value in fields.items())
    sys.stdout.write(f"{iso_now()} push-services-emulator: {message}{extra}\n")
    sys.stdout.flush()


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; no-op outside systemd."""
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


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class Registry:
    """``<data-dir>/registry.json``, re-read when its mtime or size changes.

    registry = Registry(Path("/var/lib/push-services-emulator/registry.json"))
    registry.current()["apns"]["keys"]
    """

    EMPTY: ClassVar[dict[str, Any]] = {
        "apns": {"keys": [], "certificates": [], "teams": {}, "devices": {}},
        "google": {"service_accounts": []},
        "fcm": {"devices": {}, "accept_unknown_tokens": False},
    }

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._data: dict[str, Any] = json.loads(json.dumps(self.EMPTY))

    def current(self) -> dict[str, Any]:
        """The registry as last read; a file that fails to parse keeps the previous one."""
        with self._lock:
            try:
                stat = self.path.stat()
            except OSError:
                return self._data
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                try:
                    raw = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    log("registry unreadable; keeping the previous one", error=str(exc))
                else:
                    self._data = self._complete(raw)
                    log("registry loaded", path=str(self.path))
                self._stamp = stamp
            return self._data

    def _complete(self, raw: Any) -> dict[str, Any]:
        data = json.loads(json.dumps(self.EMPTY))
        if isinstance(raw, dict):
            for section, defaults in data.items():
                value = raw.get(section)
                if isinstance(value, dict):
                    defaults.update(value)
        return data


# --------------------------------------------------------------------------------------------
# JWT (RFC 7515 / 7519) verification
# --------------------------------------------------------------------------------------------


class JwtError(Exception):
    """The JWT cannot be trusted (malformed, wrong algorithm, bad signature)."""


def b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise JwtError("not base64url") from exc


def split_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """``(header, claims, signing_input, signature)`` of a compact JWS, unverified."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError as exc:
        raise JwtError("header or claims are not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("header or claims are not JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2])


def load_public_key(pem: str) -> Any:
    """A public key from a PEM SubjectPublicKeyInfo (or a certificate) in the registry."""
    data = pem.encode()
    if b"CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def verify_es256(public_pem: str, signing_input: bytes, signature: bytes) -> bool:
    """RFC 7518 section 3.4: ES256 signatures are the raw 32-byte r and s, concatenated."""
    try:
        key = load_public_key(public_pem)
    except (ValueError, TypeError):
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey) or len(signature) != 64:
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_rs256(public_pem: str, signing_input: bytes, signature: bytes) -> bool:
    """RFC 7518 section 3.3: RSASSA-PKCS1-v1_5 with SHA-256."""
    try:
        key = load_public_key(public_pem)
    except (ValueError, TypeError):
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


class Answer:
    """An HTTP answer: status, JSON (or empty) body, extra headers, and what to record."""

    def __init__(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        identity: dict[str, Any] | None = None,
    ):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.identity = identity

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


class ApnsService:
    """APNs provider API (Apple: "Sending notification requests to APNs", "Handling
    notification responses from APNs")."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def answer(
        self,
        environment: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        client_cert: bytes | None,
    ) -> Answer:
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        reply_headers = {"apns-id": apns_id}
        if environment == "development":
            # "Handling notification responses": apns-unique-id, development server only.
            reply_headers["apns-unique-id"] = str(uuid.uuid4())

        def reject(status: int, reason: str, **extra: Any) -> Answer:
            return Answer(status, {"reason": reason, **extra}, reply_headers, identity)

        identity: dict[str, Any] | None = None
        if method != "POST":
            return reject(405, "MethodNotAllowed")
        match = re.fullmatch(r"/3/device/([^/]*)", path)
        if not match:
            return reject(404, "BadPath")
        device_token = match.group(1)
        registry = self.registry.current()["apns"]
        identity, problem = self._authenticate(registry, environment, headers, client_cert)
        if problem:
            return reject(403, problem)
        assert identity is not None
        topic = headers.get("apns-topic", "")
        if not topic:
            cert_topics = identity.get("topics") or []
            if identity["kind"] == "certificate" and len(cert_topics) == 1:
                topic = cert_topics[0]
            else:
                return reject(400, "MissingTopic")
        push_type = headers.get("apns-push-type", "alert")
        if push_type not in APNS_PUSH_TYPES:
            return reject(400, "InvalidPushType")
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return reject(400, "BadPriority")
        if not re.fullmatch(r"\d*", headers.get("apns-expiration", "")):
            return reject(400, "BadExpirationDate")
        if not body:
            return reject(400, "PayloadEmpty")
        limit = APNS_MAX_VOIP_PAYLOAD if push_type == "voip" else APNS_MAX_PAYLOAD
        if len(body) > limit:
            return reject(413, "PayloadTooLarge")
        if not APNS_DEVICE_TOKEN.match(device_token):
            return reject(400, "BadDeviceToken")
        base_topic = topic
        for suffix in APNS_TOPIC_SUFFIXES:
            base_topic = base_topic.removesuffix(suffix)
        allowed = identity.get("topics")
        if allowed and base_topic not in allowed:
            reason = "TopicDisallowed" if identity["kind"] == "certificate" else None
            return reject(400, reason or "DeviceTokenNotForTopic")
        device = registry["devices"].get(device_token.lower())
        if isinstance(device, dict):
            if device.get("environment", "production") != environment:
                return reject(400, "BadDeviceToken")  # a sandbox token sent to production
            if device.get("topic") and device["topic"] != base_topic:
                return reject(400, "DeviceTokenNotForTopic")
            if device.get("unregistered"):
                gone = device["unregistered"]
                stamp = gone if isinstance(gone, int) and gone > 1 else int(time.time() * 1000)
                return reject(410, "Unregistered", timestamp=stamp)
        return Answer(200, None, reply_headers, identity)

    def _authenticate(
        self,
        registry: dict[str, Any],
        environment: str,
        headers: dict[str, str],
        client_cert: bytes | None,
    ) -> tuple[dict[str, Any] | None, str]:
        """``(identity, "")`` or ``(partial identity, reason)`` for a 403."""
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "MissingProviderToken"
            return self._token_identity(registry, token.strip())
        if client_cert:
            fingerprint = hashlib.sha256(client_cert).hexdigest()
            identity: dict[str, Any] = {"kind": "certificate", "sha256": fingerprint}
            entry = next(
                (
                    cert
                    for cert in registry["certificates"]
                    if str(cert.get("sha256", "")).lower().replace(":", "") == fingerprint
                ),
                None,
            )
            if entry is None or entry.get("revoked"):
                return identity, "BadCertificate"
            if entry.get("environment", "both") not in ("both", environment):
                return identity, "BadCertificateEnvironment"
            identity["topics"] = list(entry.get("topics") or [])
            return identity, ""
        return None, "MissingProviderToken"

    def _token_identity(
        self, registry: dict[str, Any], token: str
    ) -> tuple[dict[str, Any] | None, str]:
        """Apple, "Establishing a token-based connection to APNs": header alg ES256 + kid,
        claims iss (team id) + iat; signed by a key the team registered."""
        try:
            header, claims, signing_input, signature = split_jwt(token)
        except JwtError:
            return None, "InvalidProviderToken"
        identity = {
            "kind": "token",
            "team_id": claims.get("iss"),
            "key_id": header.get("kid"),
            "alg": header.get("alg"),
        }
        if header.get("alg") != "ES256":
            return identity, "InvalidProviderToken"
        key = next(
            (
                key
                for key in registry["keys"]
                if key.get("team_id") == claims.get("iss")
                and key.get("key_id") == header.get("kid")
            ),
            None,
        )
        if key is None or key.get("revoked"):
            return identity, "InvalidProviderToken"
        if not verify_es256(str(key.get("public_key_pem", "")), signing_input, signature):
            return identity, "InvalidProviderToken"
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int) or time.time() - issued_at > APNS_TOKEN_MAX_AGE_SECONDS:
            return identity, "ExpiredProviderToken"
        team = registry["teams"].get(str(claims.get("iss")), {})
        identity["topics"] = list(key.get("topics") or team.get("topics") or [])
        return identity, ""


def google_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Google's JSON error shape (AIP-193): ``{"error": {code, message, status, details}}``."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def fcm_error(code: int, status: str, message: str, fcm_code: str, *more: dict[str, Any]) -> Answer:
    """An FCM v1 error (FCM reference, "ErrorCode"): the FcmError detail names the cause."""
    details = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}, *more]
    return Answer(code, google_error(code, status, message, details))


class GoogleServices:
    """OAuth2 token endpoint and FCM v1 send, sharing the access tokens issued."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._tokens: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # Google, "Using OAuth 2.0 for Server to Server Applications": the JWT-bearer grant.
    def token(self, method: str, path: str, form: dict[str, str]) -> Answer:
        if path != "/token":
            return Answer(404, google_error(404, "NOT_FOUND", "Not Found"))
        if method != "POST":
            return Answer(405, google_error(405, "METHOD_NOT_ALLOWED", "Method Not Allowed"))
        grant_type = form.get("grant_type", "")
        if grant_type != JWT_BEARER_GRANT:
            return self._oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        assertion = form.get("assertion", "")
        if not assertion:
            return self._oauth_error("invalid_request", "Missing required parameter: assertion")
        try:
            header, claims, signing_input, signature = split_jwt(assertion)
        except JwtError:
            return self._oauth_error("invalid_grant", "Invalid JWT Signature.")
        identity = {"kind": "service_account", "client_email": claims.get("iss")}
        account = next(
            (
                account
                for account in self.registry.current()["google"]["service_accounts"]
                if account.get("client_email") == claims.get("iss")
            ),
            None,
        )
        if account is None:
            return self._oauth_error("invalid_grant", "Invalid grant: account not found", identity)
        identity["project_id"] = account.get("project_id")
        key_id = account.get("private_key_id")
        if (
            header.get("alg") != "RS256"
            or account.get("revoked")
            or (key_id and header.get("kid") not in (None, key_id))
            or not verify_rs256(str(account.get("public_key_pem", "")), signing_input, signature)
        ):
            return self._oauth_error("invalid_grant", "Invalid JWT Signature.", identity)
        if claims.get("aud") not in GOOGLE_TOKEN_AUDIENCES:
            return self._oauth_error(
                "invalid_grant",
                "Invalid JWT: Failed audience check. The right audience is "
                "https://oauth2.googleapis.com/token",
                identity,
            )
        now = time.time()
        issued, expires = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(issued, int)
            or not isinstance(expires, int)
            or expires - issued > GOOGLE_MAX_ASSERTION_LIFETIME
            or expires < now
            or issued > now + GOOGLE_CLOCK_SKEW
        ):
            return self._oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
                identity,
            )
        scopes = str(claims.get("scope", "")).split()
        identity["scopes"] = scopes
        access_token = "ya29.emulator-" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[access_token] = {
                "project_id": account.get("project_id"),
                "client_email": account.get("client_email"),
                "scopes": scopes,
                "expires": now + ACCESS_TOKEN_LIFETIME,
            }
        body = {"access_token": access_token, "expires_in": ACCESS_TOKEN_LIFETIME}
        body["token_type"] = "Bearer"
        return Answer(200, body, identity=identity)

    @staticmethod
    def _oauth_error(
        error: str, description: str, identity: dict[str, Any] | None = None
    ) -> Answer:
        return Answer(400, {"error": error, "error_description": description}, identity=identity)

    # Google, FCM HTTP v1 "projects.messages.send" and "ErrorCode".
    def send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        match = FCM_SEND_PATH.match(path)
        if not match:
            return Answer(404, google_error(404, "NOT_FOUND", "Not Found"))
        if method != "POST":
            return Answer(405, google_error(405, "METHOD_NOT_ALLOWED", "Method Not Allowed"))
        project = match.group("project")
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        with self._lock:
            grant = self._tokens.get(bearer.strip()) if scheme.lower() == "bearer" else None
        if grant is None or grant["expires"] < time.time():
            return Answer(
                401,
                google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential. See "
                    "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                ),
            )
        identity = {
            "kind": "access_token",
            "project_id": grant["project_id"],
            "client_email": grant["client_email"],
        }
        answer = self._send_as(project, grant, body)
        answer.identity = identity
        return answer

    def _send_as(self, project: str, grant: dict[str, Any], body: bytes) -> Answer:
        if not FCM_SCOPES.intersection(grant["scopes"]):
            return Answer(
                403,
                google_error(
                    403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."
                ),
            )
        if grant["project_id"] != project:
            message = (
                "Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
            )
            return Answer(403, google_error(403, "PERMISSION_DENIED", message))
        try:
            request = json.loads(body or b"null")
        except ValueError:
            return fcm_error(
                400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "INVALID_ARGUMENT"
            )
        message = request.get("message") if isinstance(request, dict) else None
        targets = (
            [key for key in ("token", "topic", "condition") if message.get(key)]
            if isinstance(message, dict)
            else []
        )
        if len(targets) != 1:
            return fcm_error(
                400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT"
            )
        assert isinstance(message, dict)
        registry = self.registry.current()["fcm"]
        token = str(message.get("token") or "")
        if token:
            device = registry["devices"].get(token)
            if not isinstance(device, dict) and not registry.get("accept_unknown_tokens"):
                violation = {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"field": "message.token", "description": "Invalid registration token"}
                    ],
                }
                return fcm_error(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token",
                    "INVALID_ARGUMENT",
                    violation,
                )
            if isinstance(device, dict):
                if device.get("project_id") and device["project_id"] != project:
                    return fcm_error(
                        403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"
                    )
                if device.get("unregistered"):
                    return fcm_error(
                        404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"
                    )
        message_id = f"0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"
        return Answer(200, {"name": f"projects/{project}/messages/{message_id}"})


# --------------------------------------------------------------------------------------------
# HTTPS server
# --------------------------------------------------------------------------------------------


def load_tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """Server context; when an APNs client CA is given, client certificates are requested
    (optional) and must chain to it, as APNs certificates chain to Apple's WWDR CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["http/1.1"])
    if client_ca is not None and client_ca.is_file():
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL

    def remember_server_name(
        tls_socket: ssl.SSLSocket, server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        tls_socket.emulator_sni = server_name  # type: ignore[attr-defined]

    context.sni_callback = remember_server_name
    return context


class DualStackServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on ``bind`` ("" = every interface, IPv6 and IPv4 when available)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, bind: str, port: int, handler: type[BaseHTTPRequestHandler]):
        host = bind
        if host and ":" in host:
            self.address_family = socket.AF_INET6
        elif not host and socket.has_ipv6:
            self.address_family = socket.AF_INET6
            host = "::"
        try:
            super().__init__((host, port), handler)
        except OSError:
            if host != "::":
                raise
            self.address_family = socket.AF_INET
            super().__init__(("", port), handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class PushServicesServer(DualStackServer):
    """HTTPS server: TLS handshake in the worker thread, SNI kept on the TLS socket."""

    def __init__(self, bind: str, port: int, context: ssl.SSLContext, data_dir: Path):
        self.context = context
        self.record_path = data_dir / RECORD_FILE_NAME
        self.record_lock = threading.Lock()
        self.registry = Registry(data_dir / REGISTRY_FILE_NAME)
        self.apns = ApnsService(self.registry)
        self.google = GoogleServices(self.registry)
        super().__init__(bind, port, PushServicesHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(TLS_HANDSHAKE_TIMEOUT_SECONDS)
        try:
            tls_socket = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log("TLS handshake failed", client=str(client_address[0]), error=str(exc))
            return
        try:
            self.RequestHandlerClass(tls_socket, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls_socket.close()

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.record_lock, open(self.record_path, "a", encoding="utf-8") as handle:
            handle.write(line)


SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie"}


def redact_answer(body: Any) -> Any:
    """An answer body as recorded: an issued access token is a credential, never written."""
    if isinstance(body, dict) and "access_token" in body:
        return {**body, "access_token": "(redacted)"}
    return body


class PushServicesHandler(BaseHTTPRequestHandler):
    """Routes by Host (then SNI) to APNs, OAuth2 or FCM, and records every request."""

    server: PushServicesServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "push-services-emulator"
    sys_version = ""
    timeout = 60

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log("https " + (format % args), client=self.client_address[0])

    def _service_host(self) -> str:
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            host = host.split("]", 1)[0] + "]"
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        sni = getattr(self.connection, "emulator_sni", None)
        return host or (sni or "").lower()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = urlsplit(self.path).path
        host = self._service_host()
        headers = {name.lower(): value for name, value in self.headers.items()}
        recorded_body: Any = None
        if host in APNS_HOSTS:
            service = "apns"
            client_cert = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
            answer = self.server.apns.answer(
                APNS_HOSTS[host], self.command, path, headers, raw, client_cert
            )
            recorded_body = self._json_or_text(raw)
        elif host == OAUTH2_HOST:
            service = "oauth2"
            form = {
                key: values[0] for key, values in parse_qs(raw.decode("utf-8", "replace")).items()
            }
            answer = self.server.google.token(self.command, path, form)
            # The assertion is a credential: record only its unverified claims.
            recorded_body = {key: value for key, value in form.items() if key != "assertion"}
            with contextlib.suppress(JwtError):
                recorded_body["assertion_claims"] = split_jwt(form.get("assertion", ""))[1]
        elif host == FCM_HOST:
            service = "fcm"
            answer = self.server.google.send(self.command, path, headers, raw)
            recorded_body = self._json_or_text(raw)
        else:
            service = "unknown"
            answer = Answer(404, {"error": f"{host or 'no host'} is not served here"})
            recorded_body = self._json_or_text(raw)
        self.server.record(
            {
                "service": service,
                "host": host,
                "sni": getattr(self.connection, "emulator_sni", None),
                "method": self.command,
                "path": path,
                "headers": {k: v for k, v in headers.items() if k not in SECRET_HEADERS},
                "body": recorded_body,
                "identity": answer.identity,
                "answer": {
                    "status": answer.status,
                    "body": redact_answer(answer.body),
                    "headers": answer.headers,
                },
                "client": self.client_address[0],
                "received_at": iso_now(),
            }
        )
        self._reply(answer)

    @staticmethod
    def _json_or_text(raw: bytes) -> Any:
        if not raw:
            return None
        text = raw.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _reply(self, answer: Answer) -> None:
        payload = answer.encoded()
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle
    do_HEAD = _handle
    do_PATCH = _handle


class AcmeChallengeHandler(BaseHTTPRequestHandler):
    """Optional plain-HTTP port: ``/.well-known/acme-challenge/<token>`` only (HTTP-01)."""

    protocol_version = "HTTP/1.1"
    server_version = "push-services-emulator"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log("http " + (format % args), client=self.client_address[0])

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        token = path[len(ACME_PATH_PREFIX) :] if path.startswith(ACME_PATH_PREFIX) else ""
        content = None
        if ACME_TOKEN.match(token):
            with contextlib.suppress(OSError):
                content = (self.server.challenge_dir / token).read_bytes()  # type: ignore[attr-defined]
        status, body = (200, content) if content is not None else (404, b"404 page not found\n")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="push-services-emulator",
        description="STAND-IN for APNs, FCM and Google OAuth2 (tests only).",
    )
    parser.add_argument("--cert", default=DEFAULT_CERT, help="PEM certificate chain (all names)")
    parser.add_argument("--key", default=DEFAULT_KEY, help="PEM private key")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--bind", default="", help='address to listen on ("" = all)')
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--apns-client-ca",
        default="",
        help=f"CA of APNs client certificates (default <data-dir>/{APNS_CLIENT_CA_FILE_NAME})",
    )
    parser.add_argument(
        "--http-port", type=int, default=0, help="serve ACME HTTP-01 tokens here (0 = off)"
    )
    return parser.parse_args(argv)


class PushServicesEmulator:
    """Owns the HTTPS server (started once the certificate can be loaded; SIGHUP reloads it)
    and the optional plain-HTTP ACME port."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.data_dir = Path(args.data_dir)
        self.client_ca = Path(args.apns_client_ca or self.data_dir / APNS_CLIENT_CA_FILE_NAME)
        self.servers: list[ThreadingHTTPServer] = []
        self.https: PushServicesServer | None = None
        self._lock = threading.Lock()

    def _serve(self, server: ThreadingHTTPServer) -> None:
        self.servers.append(server)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.args.http_port:
            challenge = DualStackServer(self.args.bind, self.args.http_port, AcmeChallengeHandler)
            challenge.challenge_dir = self.data_dir / ACME_DIR_NAME  # type: ignore[attr-defined]
            (self.data_dir / ACME_DIR_NAME).mkdir(exist_ok=True)
            self._serve(challenge)
            log("HTTP listening (ACME HTTP-01 tokens only)", port=challenge.server_address[1])
        self.load_certificate()

    def load_certificate(self) -> None:
        """Start HTTPS, or swap its certificate; keep serving the old one on failure."""
        cert, key = Path(self.args.cert), Path(self.args.key)
        with self._lock:
            if not (cert.is_file() and key.is_file()):
                log("HTTPS is waiting for a certificate", cert=str(cert), key=str(key))
                return
            try:
                context = load_tls_context(cert, key, self.client_ca)
            except (OSError, ssl.SSLError) as exc:
                log("cannot load the certificate; HTTPS not (re)started", error=str(exc))
                return
            if self.https is not None:
                self.https.context = context
                log("certificate reloaded", cert=str(cert))
                return
            self.https = PushServicesServer(self.args.bind, self.args.port, context, self.data_dir)
            self._serve(self.https)
            log(
                "HTTPS listening",
                port=self.https.server_address[1],
                hosts=list(SERVED_HOSTS),
                data_dir=str(self.data_dir),
                apns_client_ca=str(self.client_ca) if self.client_ca.is_file() else None,
                version=EMULATOR_VERSION,
            )

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    emulator = PushServicesEmulator(args)
    try:
        emulator.start()
    except OSError as exc:
        print(f"push-services-emulator: cannot start: {exc}", file=sys.stderr)
        return 1
    stopped = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: emulator.load_certificate())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    sd_notify("READY=1")
    stopped.wait()
    emulator.stop()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
