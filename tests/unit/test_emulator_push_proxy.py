"""The push proxy emulator against the APNs / FCM stand-in, and its release-shaped tarball.

Every push really goes over HTTPS to the stand-in (apple_google/push_services_emulator.py) on
loopback, with a throwaway CA; $PUSH_PROXY_EMULATOR_UPSTREAMS points the real host names at it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import hashlib
import importlib.util
import json
import os
import select
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.emulators.push_proxy import build
from tests.unit.emulator_helpers import PUSH_PROXY_CONFIG_NAME as CONFIG_NAME
from tests.unit.emulator_helpers import PushProxy, running_push_proxy_with

TEAM = "TEAMID1234"
KEY_ID = "KEYID12345"
TOPIC = "com.mattermost.react.native"
CERT_TOPIC = "com.mattermost.cert"
CERT_PASSWORD = "apns-cert-password"
PROJECT = "mmpush-emulator-test"
LIVE = "0123456789abcdef" * 4
GONE = "b" * 64
OTHER_APP = "c" * 64
SANDBOX = "d" * 64
FCM_SEND_URL = f"https://fcm.googleapis.com/v1/projects/{PROJECT}/messages:send"


@dataclass
class Credentials:
    root: Path
    p8: Path
    revoked_p8: Path
    unknown_p8: Path
    p384_p8: Path
    fcm: Path
    unregistered_fcm: Path
    bad_key_fcm: Path
    client_ca: h.ApnsClientCa
    cert: Path
    cert_sha256: str


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    root = tmp_path_factory.mktemp("credentials")
    client_ca = h.make_apns_client_ca(root / "apns-ca")
    cert = root / "apns-cert.pem"
    sha256 = h.make_apns_certificate(
        cert, CERT_TOPIC, client_ca, key_form="legacy-encrypted", password=CERT_PASSWORD
    )
    return Credentials(
        root=root,
        p8=h.make_apns_key_file(root / "AuthKey.p8")[0],
        revoked_p8=h.make_apns_key_file(root / "Revoked.p8")[0],
        unknown_p8=h.make_apns_key_file(root / "Unknown.p8")[0],
        p384_p8=h.make_apns_key_file(root / "P384.p8", "p384-pkcs8")[0],
        fcm=h.make_fcm_service_account(root / "fcm.json", PROJECT),
        unregistered_fcm=h.make_fcm_service_account(root / "stranger.json", PROJECT),
        bad_key_fcm=h.make_fcm_service_account(
            root / "bad-key.json", PROJECT, private_key=h.PLACEHOLDER_PRIVATE_KEY
        ),
        client_ca=client_ca,
        cert=cert,
        cert_sha256=sha256,
    )


def registry_for(creds: Credentials) -> h.PushServicesRegistry:
    registry = (
        h.PushServicesRegistry()
        .add_apns_key_file(creds.p8, TEAM, KEY_ID, topics=[TOPIC])
        .add_apns_key_file(creds.revoked_p8, TEAM, "REVOKED123", revoked=True)
        .add_apns_key(TEAM, "P384KEY123", h.public_key_pem(creds.p384_p8.read_bytes()))
        .add_apns_certificate(creds.cert_sha256, [CERT_TOPIC])
        .add_apns_device(GONE, unregistered=True)
        .add_apns_device(OTHER_APP, topic="com.example.other")
        .add_apns_device(SANDBOX, environment="development")
        .add_service_account_file(creds.fcm)
        .add_fcm_device("fcm-live", PROJECT)
        .add_fcm_device("fcm-gone", PROJECT, unregistered=True)
        .add_fcm_device("fcm-other", "another-project")
    )
    # The bad-key service file's account exists at Google; its key never parses locally.
    account = json.loads(creds.fcm.read_text())
    registry.add_service_account(
        "push@bad-key.iam.gserviceaccount.com", PROJECT, h.public_key_pem(account["private_key"])
    )
    return registry


@pytest.fixture(scope="module")
def services(
    creds: Credentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[h.PushServices]:
    directory = tmp_path_factory.mktemp("push-services")
    with h.running_push_services(directory, registry_for(creds), creds.client_ca.cert) as running:
        yield running


def apple(
    push_type: str, p8: Path, key_id: str = KEY_ID, development: bool = False
) -> dict[str, Any]:
    return {
        "Type": push_type,
        "ApplePushTopic": TOPIC,
        "ApplePushUseDevelopment": development,
        "AppleAuthKeyFile": str(p8),
        "AppleAuthKeyID": key_id,
        "AppleTeamID": TEAM,
    }


def android(push_type: str, service_file: Path | str) -> dict[str, Any]:
    return {"Type": push_type, "ServiceFileLocation": str(service_file)}


def main_settings(creds: Credentials) -> dict[str, Any]:
    """apple_rn, apple_dev, apple_cert and android_rn are good; the others are refused by the
    stand-in (revoked / unknown key, a P-384 key) or fail at the first send (FCM). The retry
    timeout is long enough for firebase's own backoff (0, 1, 2, 4 s) to finish on a busy host."""
    return {
        "SendTimeoutSec": 25,
        "RetryTimeoutSec": 20,
        "ApplePushSettings": [
            apple("apple_rn", creds.p8),
            apple("apple_dev", creds.p8, development=True),
            apple("apple_revoked", creds.revoked_p8, key_id="REVOKED123"),
            apple("apple_unknown", creds.unknown_p8, key_id="UNKNOWN123"),
            apple("apple_p384", creds.p384_p8, key_id="P384KEY123"),
            {
                "Type": "apple_cert",
                "ApplePushTopic": CERT_TOPIC,
                "ApplePushCertPrivate": str(creds.cert),
                "ApplePushCertPassword": CERT_PASSWORD,
            },
            {"Type": "apple", "ApplePushTopic": "com.mattermost.Mattermost"},
        ],
        "AndroidPushSettings": [
            android("android_rn", creds.fcm),
            android("android_stranger", creds.unregistered_fcm),
            android("android_bad_key", bad_key_file(creds)),
            android("android", creds.root / "missing.json"),
        ],
    }


def bad_key_file(creds: Credentials) -> Path:
    path = creds.root / "bad-key-account.json"
    account = json.loads(creds.bad_key_fcm.read_text())
    account["client_email"] = "push@bad-key.iam.gserviceaccount.com"
    path.write_text(json.dumps(account))
    return path


@contextlib.contextmanager
def push_proxy(
    root: Path, services: h.PushServices, settings: dict[str, Any], **env: str
) -> Iterator[PushProxy]:
    """A push proxy emulator in root delivering to ``services``; settings override the config."""
    root.mkdir(parents=True, exist_ok=True)
    port = h.free_port()
    config = {"ListenAddress": f"127.0.0.1:{port}", "ThrottlePerSec": 1000, **settings}
    with running_push_proxy_with(root, port, config, services, **env) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def proxy(
    creds: Credentials, services: h.PushServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PushProxy]:
    with push_proxy(tmp_path_factory.mktemp("proxy"), services, main_settings(creds)) as running:
        yield running


def push_body(**fields: Any) -> dict[str, Any]:
    body = {
        "platform": "apple_rn-v2",
        "server_id": "serverid0000000000000000aa",
        "device_id": LIVE,
        "type": "message",
        "version": "v2",
        "message": "@accounta: Hello",
        "channel_name": "@accounta",
        "channel_id": "channelid000000000000000cc",
        "sender_name": "@accounta",
        "post_id": uuid.uuid4().hex[:26],
    }
    body.update(fields)
    return body


def delivery(proxy: PushProxy, post_id: str) -> dict[str, Any]:
    [record] = [r for r in proxy.deliveries() if r["post_id"] == post_id]
    return record


def undelivered(proxy: PushProxy, post_id: str) -> dict[str, Any]:
    [record] = h.wait_for(
        lambda: [r for r in proxy.undelivered() if r["post_id"] == post_id],
        what=f"EMULATOR-UNDELIVERED for {post_id}",
    )
    return record


def received(services: h.PushServices, **match: Any) -> list[dict[str, Any]]:
    """The stand-in's records whose fields equal ``match`` (``path``, ``service``...)."""
    return [r for r in services.received() if all(r.get(k) == v for k, v in match.items())]


def run_config_lookup(cwd: Path, *args: str) -> tuple[int, str]:
    """Run the proxy expecting it to stop on the config; return (exit code, all output)."""
    result = subprocess.run(
        [sys.executable, str(h.PUSH_PROXY_EMULATOR), *args],
        cwd=cwd,
        env=h.base_env(),
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.returncode, result.stdout + result.stderr


def emulator_module() -> ModuleType:
    """The emulator imported as a module, for its pure functions."""
    name = "push_proxy_emulator_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, h.PUSH_PROXY_EMULATOR)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# --------------------------------------------------------------------------------------------
# A tiny HTTP CONNECT proxy on loopback (the egress proxy of a site)
# --------------------------------------------------------------------------------------------


@dataclass
class ConnectProxy:
    """Tunnels CONNECT host:443 to ``routes[host]`` and records every CONNECT it got.

    with ConnectProxy.running({"api.push.apple.com": ("127.0.0.1", 8443)}) as egress: ...
    """

    routes: dict[str, tuple[str, int]]
    connects: list[dict[str, str]] = field(default_factory=list)
    listener: socket.socket = field(default_factory=socket.socket)
    port: int = 0

    @classmethod
    @contextlib.contextmanager
    def running(cls, routes: dict[str, tuple[str, int]]) -> Iterator[ConnectProxy]:
        proxy = cls(routes)
        proxy.listener.bind(("127.0.0.1", 0))
        proxy.listener.listen(16)
        proxy.port = int(proxy.listener.getsockname()[1])
        threading.Thread(target=proxy._accept, daemon=True).start()
        try:
            yield proxy
        finally:
            proxy.listener.close()

    def targets(self) -> set[str]:
        return {connect["target"] for connect in self.connects}

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            self.connects.append(
                {"target": target, "authorization": headers.get("Proxy-Authorization", "")}
            )
            host = target.rsplit(":", 1)[0]
            if method != "CONNECT" or host not in self.routes:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(self.routes[host], timeout=10) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._pump(client, upstream)

    @staticmethod
    def _pump(one: socket.socket, other: socket.socket) -> None:
        peers = {one: other, other: one}
        while True:
            readable, _, _ = select.select(list(peers), [], [], 10)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)


def standin_routes(services: h.PushServices) -> dict[str, tuple[str, int]]:
    return {host: ("127.0.0.1", services.port) for host in h.PUSH_SERVICE_HOSTS}


def closed_port() -> int:
    """A loopback port nothing listens on (a proxy that is down)."""
    return h.free_port()


# --------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------


def test_root_version_and_unknown_routes(proxy: PushProxy) -> None:
    status, headers, body = h.http_request("GET", proxy.url + "/")
    assert (status, body) == (200, b"<html><body>Mattermost Push Proxy</body></html>")
    assert headers["Content-Type"].startswith("text/html")
    status, _, body = h.http_request("GET", proxy.url + "/version")
    assert status == 200
    assert json.loads(body) == {"hash": "0" * 40, "version": "6.5.0"}
    assert h.http_request("GET", proxy.url + "/nope")[0] == 404
    assert h.http_request("GET", proxy.url + "/metrics")[0] == 404  # EnableMetrics is false
    assert h.http_request("GET", proxy.url + "/api/v1/send_push")[0] == 405


# --------------------------------------------------------------------------------------------
# APNs
# --------------------------------------------------------------------------------------------


def test_apns_token_push_is_delivered_to_the_stand_in(
    proxy: PushProxy, services: h.PushServices
) -> None:
    body = push_body(ack_id="ackid0001")
    answer = proxy.post("/api/v1/send_push", body, {"X-Forwarded-For": "192.0.2.7"})
    assert answer == {"status": "OK"}
    record = delivery(proxy, body["post_id"])
    assert record["platform"] == "apple_rn"
    assert record["platform_raw"] == "apple_rn-v2"
    assert (record["client_type"], record["delivered_via"]) == ("apple", "apns")
    assert (record["apns_topic"], record["apns_auth"]) == (TOPIC, "token")
    assert record["apns_environment"] == "production"
    assert (record["device_id"], record["message"]) == (LIVE, "@accounta: Hello")
    assert record["x_forwarded_for"] == "192.0.2.7"
    assert record["answer"] == {"status": "OK"}
    assert (record["upstream_status"], record["egress_proxy"]) == (200, None)
    assert record in h.parse_delivery_records(proxy.process.stdout())
    [request] = received(services, path=f"/3/device/{LIVE}", service="apns", client="127.0.0.1")[
        -1:
    ]
    assert request["answer"]["headers"]["apns-id"] == record["upstream_id"]
    assert (request["host"], request["sni"]) == ("api.push.apple.com", "api.push.apple.com")
    headers = request["headers"]
    assert headers["apns-topic"] == TOPIC
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("alert", "10")
    assert "apns-expiration" not in headers and "apns-id" not in headers
    assert request["identity"]["kind"] == "token"
    assert (request["identity"]["team_id"], request["identity"]["key_id"]) == (TEAM, KEY_ID)
    payload = request["body"]
    assert payload["aps"]["alert"] == {"title": "@accounta", "body": "@accounta: Hello"}
    assert payload["aps"]["thread-id"] == body["channel_id"]
    assert (payload["aps"]["mutable-content"], payload["aps"]["content-available"]) == (1, 1)
    assert (payload["post_id"], payload["ack_id"]) == (body["post_id"], "ackid0001")
    assert payload["signature"] == "NO_SIGNATURE"


def test_apns_development_host_and_voip_topic(proxy: PushProxy, services: h.PushServices) -> None:
    dev = push_body(platform="apple_dev")
    assert proxy.post("/api/v1/send_push", dev) == {"status": "OK"}
    assert delivery(proxy, dev["post_id"])["apns_environment"] == "development"
    voip = push_body(transport="voip", type="message", sub_type="calls")
    assert proxy.post("/api/v1/send_push", voip) == {"status": "OK"}
    assert delivery(proxy, voip["post_id"])["apns_topic"] == TOPIC + ".voip"
    requests = [r for r in received(services, service="apns") if isinstance(r["body"], dict)]
    by_post = {r["body"].get("post_id"): r for r in requests}
    assert by_post[dev["post_id"]]["host"] == "api.sandbox.push.apple.com"
    voip_request = by_post[voip["post_id"]]
    assert voip_request["headers"]["apns-topic"] == TOPIC + ".voip"
    assert voip_request["headers"]["apns-push-type"] == "voip"
    assert voip_request["body"]["aps"] == {"content-available": 1}


@pytest.mark.parametrize(
    ("platform", "device", "answer", "reason"),
    [
        ("apple_rn", "not-a-device-token", {"status": "REMOVE"}, "BadDeviceToken"),
        ("apple_rn", GONE, {"status": "REMOVE"}, "Unregistered"),
        ("apple_rn", OTHER_APP, {"status": "REMOVE"}, "DeviceTokenNotForTopic"),
        ("apple_rn", SANDBOX, {"status": "REMOVE"}, "BadDeviceToken"),
        (
            "apple_revoked",
            LIVE,
            {"status": "FAIL", "error": "unknown send response error"},
            "InvalidProviderToken",
        ),
        (
            "apple_unknown",
            "not-a-device-token",
            {"status": "FAIL", "error": "unknown send response error"},
            "InvalidProviderToken",
        ),
        # apns2 ignores the ES256 signing error of a P-384 key and sends an empty bearer.
        (
            "apple_p384",
            LIVE,
            {"status": "FAIL", "error": "unknown send response error"},
            "MissingProviderToken",
        ),
    ],
)
def test_apns_answers_are_mapped_like_the_real_proxy(
    proxy: PushProxy, platform: str, device: str, answer: dict[str, str], reason: str
) -> None:
    body = push_body(platform=platform, device_id=device)
    assert proxy.post("/api/v1/send_push", body) == answer
    record = undelivered(proxy, body["post_id"])
    assert (record["answer"], record["upstream_reason"]) == (answer, reason)
    assert not [r for r in proxy.deliveries() if r["post_id"] == body["post_id"]]
    log = proxy.process.stdout()
    expected = (
        "Failed to send apple push sending remove code res"
        if answer["status"] == "REMOVE"
        else "Failed to send apple push with res"
    )
    assert any(expected in line and f"reason={reason}" in line for line in log.splitlines())


def test_apns_certificate_auth_uses_the_tls_client_certificate(
    proxy: PushProxy, services: h.PushServices, creds: Credentials
) -> None:
    body = push_body(platform="apple_cert")
    assert proxy.post("/api/v1/send_push", body) == {"status": "OK"}
    assert delivery(proxy, body["post_id"])["apns_auth"] == "certificate"
    [request] = [
        r
        for r in received(services, service="apns")
        if isinstance(r["body"], dict) and r["body"].get("post_id") == body["post_id"]
    ]
    assert request["identity"] == {
        "kind": "certificate",
        "sha256": creds.cert_sha256,
        "topics": [CERT_TOPIC],
    }
    assert "authorization" not in request["headers"]


# --------------------------------------------------------------------------------------------
# FCM
# --------------------------------------------------------------------------------------------


def test_fcm_push_is_delivered_after_an_oauth2_grant(
    proxy: PushProxy, services: h.PushServices
) -> None:
    bodies = [push_body(platform="android_rn", device_id="fcm-live") for _ in range(2)]
    for body in bodies:
        assert proxy.post("/api/v1/send_push", body) == {"status": "OK"}
    record = delivery(proxy, bodies[0]["post_id"])
    assert (record["client_type"], record["delivered_via"]) == ("android", "fcm")
    assert record["fcm_project_id"] == PROJECT
    assert record["upstream_id"].startswith(f"projects/{PROJECT}/messages/")
    grants = [
        r
        for r in received(services, service="oauth2", path="/token")
        if (r["identity"] or {}).get("client_email") == f"push@{PROJECT}.iam.gserviceaccount.com"
        and r["answer"]["status"] == 200
    ]
    assert len(grants) == 1  # the access token is reused (oauth2 ReuseTokenSource)
    claims = grants[0]["body"]["assertion_claims"]
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["aud"] == "https://oauth2.googleapis.com/token"
    assert claims["exp"] - claims["iat"] == 3600
    assert grants[0]["body"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    sends = [
        r
        for r in received(services, service="fcm", path=f"/v1/projects/{PROJECT}/messages:send")
        if r["body"]["message"]["data"].get("post_id") == bodies[0]["post_id"]
    ]
    [send] = sends
    assert send["headers"]["x-goog-api-format-version"] == "2"
    assert send["headers"]["x-firebase-client"] == "fire-admin-go/4.18.0"
    message = send["body"]["message"]
    assert message["token"] == "fcm-live"
    assert message["android"] == {"priority": "high"}
    assert message["data"]["message"] == "@accounta: Hello"
    assert message["data"]["type"] == "message"


@pytest.mark.parametrize(
    ("device", "answer", "reason"),
    [
        ("fcm-gone", {"status": "REMOVE"}, "UNREGISTERED"),
        ("fcm-other", {"status": "REMOVE"}, "SENDER_ID_MISMATCH"),
        (
            "fake-device-token",
            {
                "status": "FAIL",
                "error": "The registration token is not a valid FCM registration token",
            },
            "INVALID_ARGUMENT",
        ),
    ],
)
def test_fcm_answers_are_mapped_like_the_real_proxy(
    proxy: PushProxy, device: str, answer: dict[str, str], reason: str
) -> None:
    body = push_body(platform="android_rn", device_id=device)
    assert proxy.post("/api/v1/send_push", body) == answer
    record = undelivered(proxy, body["post_id"])
    assert (record["upstream_reason"], record["attempts"]) == (reason, 1)


def test_fcm_credential_problems_show_only_at_the_first_send(proxy: PushProxy) -> None:
    """A service file whose key does not parse, or whose account Google does not know, starts
    fine; every send then fails after firebase's own retries (0, 1, 2, 4 s)."""
    bodies = {
        "android_bad_key": push_body(platform="android_bad_key", device_id="fcm-live"),
        "android_stranger": push_body(platform="android_stranger", device_id="fcm-live"),
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = dict(
            zip(
                bodies,
                pool.map(lambda body: proxy.post("/api/v1/send_push", body), bodies.values()),
                strict=True,
            )
        )
    prefix = f'unknown error while making an http call: Post "{FCM_SEND_URL}": '
    assert answers["android_bad_key"] == {
        "status": "FAIL",
        "error": prefix + "private key should be a PEM or plain PKCS1 or PKCS8; parse error: "
        "asn1: structure error: tags don't match",
    }
    stranger = answers["android_stranger"]
    assert stranger["status"] == "FAIL"
    assert stranger["error"].startswith(prefix + "oauth2: cannot fetch token: 400 Bad Request")
    assert '"error": "invalid_grant"' in stranger["error"]
    assert undelivered(proxy, bodies["android_stranger"]["post_id"])["attempts"] == 5


# --------------------------------------------------------------------------------------------
# Credentials parsed at start as the real proxy parses them
# --------------------------------------------------------------------------------------------


def wrong_password_certificate(path: Path, ca: h.ApnsClientCa) -> None:
    """A legacy-encrypted APNs PEM whose key a wrong password fails to decrypt (about 1 in 256
    wrong passwords passes Go's padding check; pick a file where this one does not)."""
    emulator = emulator_module()
    for _ in range(20):
        h.make_apns_certificate(path, CERT_TOPIC, ca, "legacy-encrypted", "right-password")
        block = emulator.pem_decode(path.read_bytes().split(b"-----END CERTIFICATE-----")[1])[0]
        try:
            emulator.decrypt_legacy_pem_block(block, b"wrong-password")
        except emulator.GoError:
            return
    raise AssertionError("no certificate whose wrong password fails the padding check")


def test_bad_credentials_are_refused_at_start_and_their_type_skipped(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    keys = {
        form: h.make_apns_key_file(tmp_path / f"{form}.p8", form)[0] for form in h.APNS_KEY_FORMS
    }
    certs = {}
    for form in ("pkcs8-encrypted", "none", "pkcs1"):
        certs[form] = tmp_path / f"cert-{form}.pem"
        h.make_apns_certificate(certs[form], CERT_TOPIC, creds.client_ca, form, "pw")
    wrong_password_certificate(tmp_path / "cert-wrong-password.pem", creds.client_ca)
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"type": "authorized_user", "client_id": "x"}))
    no_project = tmp_path / "no-project.json"
    account = json.loads(creds.fcm.read_text())
    no_project.write_text(json.dumps({**account, "project_id": ""}))
    (tmp_path / "not-json.json").write_text("not json")

    def cert_entry(push_type: str, path: Path, password: str = "") -> dict[str, Any]:
        entry = {"Type": push_type, "ApplePushTopic": CERT_TOPIC, "ApplePushCertPrivate": str(path)}
        return {**entry, "ApplePushCertPassword": password}

    settings = {
        "ApplePushSettings": [
            apple("apple_rn", creds.p8),  # good: the service must stay up for it
            apple("apple_sec1", keys["sec1"]),
            apple("apple_rsa", keys["rsa-pkcs8"]),
            apple("apple_encrypted", keys["encrypted-pkcs8"]),
            apple("apple_cert_first", keys["certificate-first"]),
            apple("apple_not_pem", keys["not-pem"]),
            apple("apple_missing", tmp_path / "missing.p8"),
            cert_entry("apple_pkcs8_encrypted", certs["pkcs8-encrypted"], "pw"),
            cert_entry(
                "apple_wrong_password", tmp_path / "cert-wrong-password.pem", "wrong-password"
            ),
            cert_entry("apple_no_key", certs["none"]),
            {"Type": "apple_none", "ApplePushTopic": TOPIC},
        ],
        "AndroidPushSettings": [
            {"Type": "android_no_location"},
            android("android_missing", tmp_path / "missing.json"),
            android("android_not_json", tmp_path / "not-json.json"),
            android("android_user", user),
            android("android_no_project", no_project),
        ],
    }
    token_error = "failed to initialize apple notification service with AuthKey file err="
    expected = {
        "apple_sec1": token_error + "x509: failed to parse private key (use ParseECPrivateKey "
        "instead for this key format) ",
        "apple_rsa": token_error + "token: AuthKey must be of type ecdsa.PrivateKey ",
        "apple_encrypted": token_error + "asn1: structure error: tags don't match ",
        "apple_cert_first": token_error + "asn1: structure error: tags don't match ",
        "apple_not_pem": token_error + "token: AuthKey must be a valid .p8 PEM file ",
        "apple_missing": token_error
        + f"open {tmp_path / 'missing.p8'}: no such file or directory ",
        "apple_pkcs8_encrypted": "failed to initialize apple notification service with pem cert "
        "err=failed to parse private key for type=apple_pkcs8_encrypted",
        "apple_wrong_password": "failed to initialize apple notification service with pem cert "
        "err=failed to decrypt private key for type=apple_wrong_password",
        "apple_no_key": "failed to initialize apple notification service with pem cert "
        "err=no private key for type=apple_no_key",
        "apple_none": "apple push notifications not configured: missing ApplePushCertPrivate for "
        "type=apple_none",
        "android_no_location": "android push notifications not configured: missing "
        "ServiceFileLocation",
        "android_missing": "error reading service file: "
        f"open {tmp_path / 'missing.json'}: no such file or directory",
        "android_not_json": "error getting JWT config: invalid character 'n' looking for "
        "beginning of value",
        "android_user": "error getting JWT config: google: read JWT from JSON credentials: "
        '\'type\' field is "authorized_user" (expected "service_account")',
        "android_no_project": "error initializing client: project ID is required to access "
        "Firebase Cloud Messaging client",
    }
    with push_proxy(tmp_path / "proxy", services, settings) as running:
        good = push_body()
        assert running.post("/api/v1/send_push", good) == {"status": "OK"}
        for push_type in expected:
            answer = running.post("/api/v1/send_push", push_body(platform=push_type))
            assert answer == {
                "status": "FAIL",
                "error": "Did not send message because of missing platform property "
                f"type={push_type} serverId=serverid0000000000000000aa",
            }
        out = running.process.stdout()
    failures = [
        json.loads(line.split(" error=", 1)[1])
        for line in out.splitlines()
        if "Failed to initialize client" in line
    ]
    assert failures == list(expected.values())
    assert "PRIVATE KEY" not in out  # never log credential contents


def test_a_legacy_encrypted_certificate_with_the_right_password_is_accepted(
    proxy: PushProxy,
) -> None:
    out = proxy.process.stdout()
    assert "Initializing apple notification server with PEM certificate type=apple_cert" in out
    assert "Initializing apple notification server with AuthKey type=apple_rn" in out


# --------------------------------------------------------------------------------------------
# Egress: proxies, TLS trust, an unreachable service
# --------------------------------------------------------------------------------------------


def test_pushes_go_through_the_https_proxy(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    settings = {
        "ApplePushSettings": [apple("apple_rn", creds.p8)],
        "AndroidPushSettings": [android("android_rn", creds.fcm)],
    }
    with ConnectProxy.running(standin_routes(services)) as egress:
        proxy_url = f"http://squid:secret-pass@127.0.0.1:{egress.port}"
        with push_proxy(tmp_path, services, settings, HTTPS_PROXY=proxy_url) as running:
            ios, droid = push_body(), push_body(platform="android_rn", device_id="fcm-live")
            assert running.post("/api/v1/send_push", ios) == {"status": "OK"}
            assert running.post("/api/v1/send_push", droid) == {"status": "OK"}
            out = running.process.stdout()
    assert egress.targets() == {
        "api.push.apple.com:443",
        "oauth2.googleapis.com:443",
        "fcm.googleapis.com:443",
    }
    assert {c["authorization"] for c in egress.connects} == {"Basic c3F1aWQ6c2VjcmV0LXBhc3M="}
    redacted = f"http://squid:xxxxx@127.0.0.1:{egress.port}"
    assert delivery(running, ios["post_id"])["egress_proxy"] == redacted
    assert delivery(running, droid["post_id"])["egress_proxy"] == redacted
    assert f"Proxy server detected. proxyServer={redacted}" in out
    assert "secret-pass" not in out


def test_a_proxy_that_is_down_makes_the_send_fail(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    settings = {
        "ApplePushSettings": [apple("apple_rn", creds.p8)],
        "AndroidPushSettings": [android("android_rn", creds.fcm)],
        "SendTimeoutSec": 25,
        "RetryTimeoutSec": 20,
    }
    down = f"http://127.0.0.1:{closed_port()}"
    with push_proxy(tmp_path, services, settings, HTTPS_PROXY=down) as running:
        ios, droid = push_body(), push_body(platform="android_rn", device_id="fcm-live")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            ios_answer, droid_answer = pool.map(
                lambda body: running.post("/api/v1/send_push", body), (ios, droid)
            )
        ios_record = undelivered(running, ios["post_id"])
    port = down.rsplit(":", 1)[1]
    refused = f"proxyconnect tcp: dial tcp 127.0.0.1:{port}: connect: connection refused"
    assert ios_answer == {"status": "FAIL", "error": "unknown transport error"}
    assert (
        ios_record["upstream_error"]
        == f'Post "https://api.push.apple.com/3/device/{LIVE}": {refused}'
    )
    assert ios_record["attempts"] == 3  # MAX_RETRIES
    assert droid_answer == {
        "status": "FAIL",
        "error": f'unknown error while making an http call: Post "{FCM_SEND_URL}": '
        f'oauth2: cannot fetch token: Post "https://oauth2.googleapis.com/token": {refused}',
    }


def test_proxy_variables_are_read_as_the_real_code_reads_them(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    """APNs: HTTPS_PROXY / HTTP_PROXY (upper case) for every request, NO_PROXY ignored.
    FCM and OAuth2: Go's ProxyFromEnvironment (https_proxy too, NO_PROXY honoured)."""
    settings = {
        "ApplePushSettings": [apple("apple_rn", creds.p8)],
        "AndroidPushSettings": [android("android_rn", creds.fcm)],
        "SendTimeoutSec": 1,
    }
    down = f"http://127.0.0.1:{closed_port()}"
    no_proxy = {"HTTPS_PROXY": down, "NO_PROXY": "localhost,10.0.0.0/8,.googleapis.com"}
    with push_proxy(tmp_path / "no-proxy", services, settings, **no_proxy) as running:
        droid = push_body(platform="android_rn", device_id="fcm-live")
        assert running.post("/api/v1/send_push", droid) == {"status": "OK"}
        ios = push_body()
        assert running.post("/api/v1/send_push", ios)["status"] == "FAIL"
        assert "proxyconnect tcp" in running.process.stdout()
    with ConnectProxy.running(standin_routes(services)) as egress:
        lower = {"https_proxy": f"http://127.0.0.1:{egress.port}"}
        with push_proxy(tmp_path / "lower-case", services, settings, **lower) as running:
            assert running.post("/api/v1/send_push", push_body()) == {"status": "OK"}
            droid = push_body(platform="android_rn", device_id="fcm-live")
            assert running.post("/api/v1/send_push", droid) == {"status": "OK"}
    assert egress.targets() == {"oauth2.googleapis.com:443", "fcm.googleapis.com:443"}


@pytest.mark.parametrize(
    ("no_proxy", "host", "proxied"),
    [
        ("", "fcm.googleapis.com", True),
        ("*", "fcm.googleapis.com", False),
        ("googleapis.com", "fcm.googleapis.com", False),
        ("googleapis.com", "googleapis.com", False),
        (".googleapis.com", "googleapis.com", True),
        ("*.googleapis.com", "fcm.googleapis.com", False),
        ("oogleapis.com", "fcm.googleapis.com", True),
        ("fcm.googleapis.com:443", "fcm.googleapis.com", False),
        ("fcm.googleapis.com:8443", "fcm.googleapis.com", True),
        ("10.0.0.0/8", "10.1.2.3", False),
        ("10.0.0.0/8", "11.1.2.3", True),
        ("192.0.2.1", "192.0.2.1", False),
        ("192.0.2.0/24", "fcm.googleapis.com", True),
        (" example.org , FCM.googleapis.com ", "fcm.googleapis.com", False),
        ("", "localhost", False),
        ("", "127.0.0.1", False),
    ],
)
def test_no_proxy_rules_follow_go(no_proxy: str, host: str, proxied: bool) -> None:
    emulator = emulator_module()
    proxies = emulator.GoProxyFromEnvironment.from_environ(
        {"https_proxy": "proxy1:3128", "no_proxy": no_proxy}
    )
    expected = "http://proxy1:3128" if proxied else None
    assert proxies.proxy_for(f"https://{host}/v1/x") == expected
    assert proxies.proxy_for(f"http://{host}/") is None  # HTTP_PROXY is for http:// only


def test_tls_is_verified_against_the_system_trust_store(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    other_ca = h.make_test_pki(tmp_path / "other-ca", ["example.org"]).ca_cert
    settings = {"ApplePushSettings": [apple("apple_rn", creds.p8)], "SendTimeoutSec": 3}
    with push_proxy(tmp_path, services, settings, SSL_CERT_FILE=str(other_ca)) as running:
        body = push_body()
        assert running.post("/api/v1/send_push", body) == {
            "status": "FAIL",
            "error": "unknown transport error",
        }
        out = running.process.stdout()
    assert "tls: failed to verify certificate: x509: certificate signed by unknown authority" in out


def test_an_unreachable_service_fails_after_the_retries(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    settings = {"ApplePushSettings": [apple("apple_rn", creds.p8)], "SendTimeoutSec": 1}
    down = h.push_services_upstreams(closed_port())
    with push_proxy(tmp_path, services, settings, PUSH_PROXY_EMULATOR_UPSTREAMS=down) as running:
        body = push_body()
        assert running.post("/api/v1/send_push", body)["status"] == "FAIL"
        record = undelivered(running, body["post_id"])
        out = running.process.stdout()
    assert "connect: connection refused" in out
    assert "Not retrying because context error" in out
    assert record["upstream_error"] == "context deadline exceeded"


# --------------------------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (push_body(server_id=""), "Failed because of missing server Id"),
        (push_body(device_id=""), "Failed because of missing device Id serverId="),
        (push_body(platform="apple"), "Did not send message because of missing platform property"),
        (push_body(platform="android-v2"), "missing platform property type=android "),
        (push_body(platform="windows"), "missing platform property type=windows"),
        (
            push_body(badge="1"),
            "Failed to read message body: json: cannot unmarshal string into "
            "Go struct field PushNotification.badge of type int",
        ),
    ],
)
def test_send_push_fail_answers(proxy: PushProxy, body: dict[str, Any], error: str) -> None:
    answer = proxy.post("/api/v1/send_push", body)
    assert answer["status"] == "FAIL"
    assert error in answer["error"]
    assert not [r for r in proxy.deliveries() if r["post_id"] == body["post_id"]]


def test_send_push_invalid_json(proxy: PushProxy) -> None:
    status, headers, raw = h.http_request(
        "POST", proxy.url + "/api/v1/send_push", raw_body=b'{"platform": "apple_rn",'
    )
    assert status == 200
    assert raw == b'{"status":"FAIL","error":"Failed to read message body: unexpected EOF"}\n'
    assert headers["Content-Type"] == "text/plain; charset=utf-8"  # net/http content sniffing
    status, _, raw = h.http_request("POST", proxy.url + "/api/v1/send_push", raw_body=b"")
    assert json.loads(raw)["error"] == "Failed to read message body: EOF"


def test_message_is_cut_at_2046_bytes_and_channel_name_at_64(proxy: PushProxy) -> None:
    body = push_body(message="x" * 3000, channel_name="c" * 100)
    assert proxy.post("/api/v1/send_push", body) == {"status": "OK"}
    record = delivery(proxy, body["post_id"])
    assert record["message"] == "x" * 2046  # msg.Message[0:2046]
    assert record["channel_name"] == "c" * 64
    short = push_body(message="y" * 2047)
    assert proxy.post("/api/v1/send_push", short) == {"status": "OK"}
    assert delivery(proxy, short["post_id"])["message"] == "y" * 2047


def test_ack(proxy: PushProxy) -> None:
    ack = {"id": "ackid", "platform": "apple_rn", "type": "message", "received_at": 1}
    assert proxy.post("/api/v1/ack", ack) == {"status": "OK"}
    assert proxy.post("/api/v1/ack", {**ack, "id": ""}) == {
        "status": "FAIL",
        "error": "Failed because of missing ack Id",
    }
    assert proxy.post("/api/v1/ack", {**ack, "platform": ""})["error"] == (
        "Failed because of missing ack platform"
    )
    assert proxy.post("/api/v1/ack", {**ack, "type": ""})["error"] == (
        "Failed because of missing ack type"
    )
    assert "Acknowledged delivery receipt ack_id=ackid" in proxy.process.stdout()


def test_throttle_answers_429_per_vary_by_header_value(
    tmp_path: Path, services: h.PushServices
) -> None:
    with push_proxy(tmp_path, services, {"ThrottlePerSec": 3}) as running_proxy:
        statuses = [
            h.http_request("GET", running_proxy.url + "/", headers={"X-Forwarded-For": "1.1.1.1"})[
                0
            ]
            for _ in range(6)
        ]
        other = h.http_request(
            "GET", running_proxy.url + "/", headers={"X-Forwarded-For": "2.2.2.2"}
        )
        status, headers, body = h.http_request(
            "POST",
            running_proxy.url + "/api/v1/send_push",
            push_body(),
            {"X-Forwarded-For": "1.1.1.1"},
        )
        log = running_proxy.process.stdout()
    # A fixed one-second window: normally 3 allowed then 429s; a slow machine may cross into a
    # new window once, so only require that the limit was enforced.
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses
    assert other[0] == 200
    assert "Error: code=429 path=/ ip=1.1.1.1" in log
    if status == 429:
        assert body == b"limit exceeded\n"
        assert headers["X-RateLimit-Limit"] == "3"


def test_metrics_only_when_enabled_with_the_real_names(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    settings = {"ApplePushSettings": [apple("apple_rn", creds.p8)], "EnableMetrics": True}
    with push_proxy(tmp_path, services, settings) as running_proxy:
        running_proxy.post("/api/v1/send_push", push_body(ack_id="a1"))
        running_proxy.post("/api/v1/send_push", push_body(device_id="bad-token"))
        running_proxy.post("/api/v1/send_push", push_body(server_id=""))
        status, headers, body = h.http_request("GET", running_proxy.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    labels = 'platform="apple",type="message",transport=""'
    assert f"service_notifications_total{{{labels}}} 2" in text
    assert f"service_success_total{{{labels}}} 1" in text
    assert f"service_success_with_ack_total{{{labels}}} 1" in text
    assert f"service_failure_total{{{labels}}} 1" in text
    assert 'service_removal_total{platform="apple",transport="",reason="BadDeviceToken"} 1' in text
    assert "service_bad_request_total 1" in text
    assert "service_request_duration_seconds_count 3" in text
    assert "service_apns_request_duration_seconds_count 2" in text


def test_file_log_in_json_format(
    tmp_path: Path, services: h.PushServices, creds: Credentials
) -> None:
    log_file = tmp_path / "logs" / "proxy.log"
    settings = {
        "ApplePushSettings": [apple("apple_rn", creds.p8)],
        "EnableConsoleLog": False,
        "EnableFileLog": True,
        "LogFileLocation": str(log_file),
        "LogFormat": "json",
    }
    with push_proxy(tmp_path, services, settings) as running_proxy:
        body = push_body()
        running_proxy.post("/api/v1/send_push", body)
        console = running_proxy.process.stdout()
    assert console == ""
    lines = log_file.read_text().splitlines()
    assert json.loads(lines[0])["msg"].startswith("Loading ")
    [record] = h.parse_delivery_records("\n".join(lines))
    assert record["post_id"] == body["post_id"]


def test_secrets_never_reach_the_logs_or_records(
    proxy: PushProxy, services: h.PushServices, creds: Credentials
) -> None:
    out = proxy.process.stdout() + proxy.process.stderr()
    records = json.dumps(proxy.deliveries()) + json.dumps(services.received())
    assert "PRIVATE KEY" not in out and "PRIVATE KEY" not in records
    assert CERT_PASSWORD not in out
    assert "ya29." not in out and "ya29." not in records
    assert "bearer ey" not in out.lower() and "bearer ey" not in records.lower()


# --------------------------------------------------------------------------------------------
# Flags and config lookup
# --------------------------------------------------------------------------------------------


def test_version_flag(tmp_path: Path) -> None:
    for flag in ("-version", "--version"):
        code, out = run_config_lookup(tmp_path, flag)
        assert code == 0
        assert "GitVersion:    v6.5.0" in out
        assert "BuildHash:     " + "0" * 40 in out
        assert "BuildVersion:  6.5.0" in out
        assert "Platform:      linux/amd64" in out


def test_config_lookup_dot_config_then_dot_dot_config_then_literal(tmp_path: Path) -> None:
    install = tmp_path / "install"
    (install / "config").mkdir(parents=True)
    (install / "bin").mkdir()
    name = f"pp-{uuid.uuid4().hex}.json"
    # An invalid file stops the proxy with its absolute path: that shows which one was chosen.
    (install / "config" / name).write_text("{not json")
    (install / "bin" / name).write_text("{not json either")

    code, out = run_config_lookup(install, "-config", name)
    assert code == 1
    assert str(install / "config" / name) in out  # ./config wins over the literal name

    code, out = run_config_lookup(install / "bin", "-config", name)
    assert code == 1
    assert str(install / "config" / name) in out  # ../config wins over ./<name>

    (install / "config" / name).unlink()
    code, out = run_config_lookup(install / "bin", "-config", name)
    assert code == 1
    assert str(install / "bin" / name) in out  # then the literal name, relative to the cwd

    (install / "bin" / name).unlink()
    code, out = run_config_lookup(install / "bin", "-config", name)
    assert code == 1
    assert name in out
    assert "No such file or directory" in out


def test_config_lookup_checks_tmp_first(tmp_path: Path) -> None:
    name = f"mmpush-emulator-test-{uuid.uuid4().hex}.json"
    in_tmp = Path("/tmp") / name
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / name).write_text("{}")
    try:
        in_tmp.write_text('{"ListenAddress": ')
        code, out = run_config_lookup(tmp_path, f"-config={name}")
    finally:
        in_tmp.unlink(missing_ok=True)
    assert code == 1
    assert str(in_tmp) in out


def test_default_config_name_from_install_dir(tmp_path: Path) -> None:
    code, out = run_config_lookup(tmp_path)
    assert code == 1
    assert "mattermost-push-proxy.json" in out


def test_config_type_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / CONFIG_NAME).write_text(json.dumps({"ThrottlePerSec": "300"}))
    code, out = run_config_lookup(tmp_path)
    assert code == 1
    assert "ConfigPushProxy.ThrottlePerSec" in out
    assert str(tmp_path / "config" / CONFIG_NAME) in out


# --------------------------------------------------------------------------------------------
# Release tarball
# --------------------------------------------------------------------------------------------


def test_tarball_is_deterministic_and_versioned(tmp_path: Path) -> None:
    first = build.build_release_tarball(tmp_path / "a")
    second = build.build_release_tarball(tmp_path / "b", version="6.5.0")
    other = build.build_release_tarball(tmp_path / "c", version="6.4.1")
    assert first.name == "mattermost-push-proxy-linux-amd64.tar.gz"
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    raw = first.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    assert gzip.decompress(raw)  # a valid gzip stream


def test_tarball_layout(tmp_path: Path) -> None:
    tarball = build.build_release_tarball(tmp_path, version="6.5.0", arch="linux-arm64")
    assert tarball.name == "mattermost-push-proxy-linux-arm64.tar.gz"
    top = "mattermost-push-proxy-linux-arm64"
    with tarfile.open(tarball) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert sorted(members) == list(members)  # sorted entries
        assert set(members) == {
            top,
            f"{top}/bin",
            f"{top}/bin/mattermost-push-proxy",
            f"{top}/config",
            f"{top}/config/build.txt",
            f"{top}/config/mattermost-push-proxy.sample.json",
            f"{top}/logs",
            f"{top}/LICENSE.txt",
            f"{top}/NOTICE.txt",
            f"{top}/README.md",
        }
        for member in members.values():
            assert (member.uid, member.gid) == (0, 0)
            assert member.mtime == build.FIXED_MTIME
        assert members[f"{top}/logs"].isdir()
        binary = members[f"{top}/bin/mattermost-push-proxy"]
        assert stat.S_IMODE(binary.mode) == 0o755
        source = tar.extractfile(binary).read().decode()  # type: ignore[union-attr]
        sample = json.load(tar.extractfile(f"{top}/config/mattermost-push-proxy.sample.json"))  # type: ignore[arg-type]
        readme = tar.extractfile(f"{top}/README.md").read().decode()  # type: ignore[union-attr]
    assert source.startswith("#!/usr/bin/python3\n")
    assert 'EMULATOR_VERSION = "6.5.0"' in source
    assert 'EMULATOR_PLATFORM = "linux/arm64"' in source
    assert f'EMULATOR_HASH = "{build.emulator_hash("6.5.0")}"' in source
    assert sample["ListenAddress"] == ":8066"
    assert [s["Type"] for s in sample["ApplePushSettings"]] == ["apple", "apple_rn"]
    assert [s["Type"] for s in sample["AndroidPushSettings"]] == ["android", "android_rn"]
    assert "EMULATOR" in readme


def test_unpacked_release_runs_from_its_install_dir(tmp_path: Path) -> None:
    tarball = build.build_release_tarball(tmp_path / "dist", version="7.0.1")
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "opt", filter="data")
    install = tmp_path / "opt" / "mattermost-push-proxy-linux-amd64"
    binary = install / "bin" / "mattermost-push-proxy"
    assert os.access(binary, os.X_OK)
    port = h.free_port()
    sample = json.loads((install / "config" / "mattermost-push-proxy.sample.json").read_text())
    sample["ListenAddress"] = f"127.0.0.1:{port}"
    (install / "config" / CONFIG_NAME).write_text(json.dumps(sample))
    process = h.EmulatorProcess(
        [sys.executable, str(binary)], cwd=install, env=h.base_env(), log_dir=tmp_path / "out"
    )
    with h.running(process):
        process.wait_port(port)
        status, _, body = h.http_request("GET", f"http://127.0.0.1:{port}/version")
    assert status == 200
    assert json.loads(body) == {"hash": build.emulator_hash("7.0.1"), "version": "7.0.1"}
    # The sample has no credentials: every client is skipped, the proxy still runs.
    assert process.stdout().count("Failed to initialize client") == 4


def test_build_cli_prints_path_and_sha256(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.emulators.push_proxy.build",
            str(tmp_path),
            "--version",
            "6.5.0",
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    path_line, digest = result.stdout.split()
    assert Path(path_line) == tmp_path / "mattermost-push-proxy-linux-amd64.tar.gz"
    assert digest == hashlib.sha256(Path(path_line).read_bytes()).hexdigest()
