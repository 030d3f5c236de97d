"""The APNs / FCM / Google OAuth2 stand-in, spoken to directly (no push proxy in between).

Each answer kind of Apple's "Handling notification responses from APNs" and of Google's FCM v1
and OAuth2 service-account flows that the stand-in models, over HTTPS on loopback with a
throwaway CA whose certificate names all four hosts.
"""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.emulators import harness as h

TEAM = "TEAMID1234"
KEY_ID = "KEYID12345"
TOPIC = "com.mattermost.react.native"
PROJECT = "mmpush-emulator-test"
TOKEN_URL = "https://oauth2.googleapis.com/token"
LIVE = "a" * 64
GONE = "b" * 64
OTHER_APP = "c" * 64
SANDBOX = "d" * 64


@dataclass
class World:
    services: h.PushServices
    p8: Path
    revoked_p8: Path
    unknown_p8: Path
    fcm: Path
    other_fcm: Path
    revoked_fcm: Path
    client_ca: h.ApnsClientCa
    cert: Path
    cert_sha256: str
    stray_cert: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("push-services")
    p8, public = h.make_apns_key_file(root / "AuthKey.p8")
    revoked_p8, revoked_public = h.make_apns_key_file(root / "Revoked.p8")
    unknown_p8, _ = h.make_apns_key_file(root / "Unknown.p8")
    fcm = h.make_fcm_service_account(root / "fcm.json", PROJECT)
    other_fcm = h.make_fcm_service_account(root / "other.json", "other-project")
    revoked_fcm = h.make_fcm_service_account(root / "revoked.json", "revoked-project")
    client_ca = h.make_apns_client_ca(root / "apns-ca")
    cert = root / "apns-cert.pem"
    sha256 = h.make_apns_certificate(cert, "com.mattermost.cert", client_ca)
    stray = root / "stray-cert.pem"
    h.make_apns_certificate(stray, "com.mattermost.cert", client_ca)  # issued, not registered
    registry = (
        h.PushServicesRegistry()
        .add_apns_key(TEAM, KEY_ID, str(public), topics=[TOPIC])
        .add_apns_key(TEAM, "REVOKED123", str(revoked_public), revoked=True)
        .add_apns_certificate(sha256, ["com.mattermost.cert"])
        .add_apns_device(GONE, unregistered=True)
        .add_apns_device(OTHER_APP, topic="com.example.other")
        .add_apns_device(SANDBOX, environment="development")
        .add_service_account_file(fcm)
        .add_service_account_file(other_fcm)
        .add_service_account_file(revoked_fcm, revoked=True)
        .add_fcm_device("fcm-live", PROJECT)
        .add_fcm_device("fcm-gone", PROJECT, unregistered=True)
        .add_fcm_device("fcm-other", "other-project")
    )
    with h.running_push_services(root / "svc", registry, client_ca=client_ca.cert) as services:
        yield World(
            services,
            p8,
            revoked_p8,
            unknown_p8,
            fcm,
            other_fcm,
            revoked_fcm,
            client_ca,
            cert,
            sha256,
            stray,
        )


# --------------------------------------------------------------------------------------------
# A small client: TLS to 127.0.0.1 with the real name as SNI and Host
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def call(
    world: World,
    host: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    client_cert: Path | None = None,
) -> Reply:
    context = ssl.create_default_context(cafile=str(world.services.pki.ca_cert))
    if client_cert is not None:
        context.load_cert_chain(str(client_cert))
    raw = socket.create_connection(("127.0.0.1", world.services.port), timeout=10)
    with context.wrap_socket(raw, server_hostname=host) as sock:
        connection = http.client.HTTPConnection(host, 443)
        connection.sock = sock
        connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        data = response.read()
    text = data.decode()
    return Reply(
        response.status,
        {name.lower(): value for name, value in response.getheaders()},
        json.loads(text) if text else None,
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def apns_jwt(p8: Path, team: str = TEAM, key_id: str = KEY_ID, iat: int | None = None) -> str:
    key = serialization.load_pem_private_key(p8.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    claims = {"iss": team, "iat": int(time.time()) if iat is None else iat}
    return jwt({"alg": "ES256", "kid": key_id}, claims, sign)


def push(
    world: World,
    token: str = LIVE,
    bearer: str | None = None,
    host: str = "api.push.apple.com",
    topic: str | None = TOPIC,
    body: bytes = b'{"aps":{"alert":"hi"}}',
    **headers: str,
) -> Reply:
    all_headers = {"apns-push-type": "alert", "apns-priority": "10"}
    if topic is not None:
        all_headers["apns-topic"] = topic
    if bearer is not None:
        all_headers["authorization"] = f"bearer {bearer}"
    all_headers.update({name.replace("_", "-"): value for name, value in headers.items()})
    return call(world, host, "POST", f"/3/device/{token}", all_headers, body)


def assertion(service_file: Path, **claims: Any) -> str:
    account = json.loads(service_file.read_text())
    key = serialization.load_pem_private_key(account["private_key"].encode(), None)
    now = int(time.time())
    payload = {
        "iss": account["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 3600,
    }
    payload.update(claims)
    header = {"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]}
    return jwt(header, payload, lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()))  # type: ignore[union-attr]


def token_request(world: World, form: dict[str, str]) -> Reply:
    body = urllib.parse.urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return call(world, "oauth2.googleapis.com", "POST", "/token", headers, body)


def access_token(world: World, service_file: Path) -> str:
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    reply = token_request(world, {"grant_type": grant, "assertion": assertion(service_file)})
    assert reply.status == 200, reply.body
    return str(reply.body["access_token"])


def fcm_send(world: World, bearer: str, token: str, project: str = PROJECT) -> Reply:
    body = json.dumps({"message": {"token": token, "data": {"k": "v"}}}).encode()
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    return call(
        world, "fcm.googleapis.com", "POST", f"/v1/projects/{project}/messages:send", headers, body
    )


# --------------------------------------------------------------------------------------------
# APNs
# --------------------------------------------------------------------------------------------


def test_apns_accepts_a_good_token_push(world: World) -> None:
    reply = push(world, bearer=apns_jwt(world.p8))
    assert (reply.status, reply.body) == (200, None)
    assert len(reply.headers["apns-id"]) == 36
    assert "apns-unique-id" not in reply.headers  # development only
    sandbox = push(world, bearer=apns_jwt(world.p8), host="api.sandbox.push.apple.com")
    assert sandbox.status == 200
    assert "apns-unique-id" in sandbox.headers


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("no authorization", 403, "MissingProviderToken"),
        ("unknown key", 403, "InvalidProviderToken"),
        ("revoked key", 403, "InvalidProviderToken"),
        ("signed by another key", 403, "InvalidProviderToken"),
        ("wrong team", 403, "InvalidProviderToken"),
        ("not ES256", 403, "InvalidProviderToken"),
        ("issued two hours ago", 403, "ExpiredProviderToken"),
        ("no topic", 400, "MissingTopic"),
        ("token not hex", 400, "BadDeviceToken"),
        ("token too short", 400, "BadDeviceToken"),
        ("sandbox token to production", 400, "BadDeviceToken"),
        ("topic not of the team", 400, "DeviceTokenNotForTopic"),
        ("device of another app", 400, "DeviceTokenNotForTopic"),
        ("unregistered device", 410, "Unregistered"),
        ("empty payload", 400, "PayloadEmpty"),
        ("payload over 4 KB", 413, "PayloadTooLarge"),
        ("bad priority", 400, "BadPriority"),
        ("bad push type", 400, "InvalidPushType"),
    ],
)
def test_apns_rejections(world: World, case: str, status: int, reason: str) -> None:
    good = apns_jwt(world.p8)
    unsigned_header = b64url(json.dumps({"alg": "none", "kid": KEY_ID}).encode())
    arguments: dict[str, Any] = {
        "no authorization": {},
        "unknown key": {"bearer": apns_jwt(world.unknown_p8, key_id="UNKNOWN123")},
        "revoked key": {"bearer": apns_jwt(world.revoked_p8, key_id="REVOKED123")},
        "signed by another key": {"bearer": apns_jwt(world.unknown_p8)},
        "wrong team": {"bearer": apns_jwt(world.p8, team="OTHERTEAM1")},
        "not ES256": {"bearer": f"{unsigned_header}.{good.split('.')[1]}."},
        "issued two hours ago": {"bearer": apns_jwt(world.p8, iat=int(time.time()) - 7200)},
        "no topic": {"bearer": good, "topic": None},
        "token not hex": {"bearer": good, "token": "not-a-device-token"},
        "token too short": {"bearer": good, "token": "ab" * 8},
        "sandbox token to production": {"bearer": good, "token": SANDBOX},
        "topic not of the team": {"bearer": good, "topic": "com.example.other"},
        "device of another app": {"bearer": good, "token": OTHER_APP},
        "unregistered device": {"bearer": good, "token": GONE},
        "empty payload": {"bearer": good, "body": b""},
        "payload over 4 KB": {"bearer": good, "body": b'{"x":"' + b"y" * 4100 + b'"}'},
        "bad priority": {"bearer": good, "apns_priority": "7"},
        "bad push type": {"bearer": good, "apns_push_type": "shout"},
    }[case]
    reply = push(world, **arguments)
    assert (reply.status, reply.body["reason"]) == (status, reason)
    assert reply.headers["apns-id"]
    if reason == "Unregistered":
        assert reply.body["timestamp"] <= time.time() * 1000


def test_apns_voip_topic_and_larger_payload(world: World) -> None:
    body = b'{"x":"' + b"y" * 4500 + b'"}'
    reply = push(
        world, bearer=apns_jwt(world.p8), topic=TOPIC + ".voip", body=body, apns_push_type="voip"
    )
    assert reply.status == 200


def test_apns_method_and_path(world: World) -> None:
    bearer = {"authorization": f"bearer {apns_jwt(world.p8)}"}
    reply = call(world, "api.push.apple.com", "GET", f"/3/device/{LIVE}", bearer)
    assert (reply.status, reply.body) == (405, {"reason": "MethodNotAllowed"})
    reply = call(world, "api.push.apple.com", "POST", "/4/device/x", bearer, b"{}")
    assert (reply.status, reply.body) == (404, {"reason": "BadPath"})


def test_apns_certificate_authentication(world: World) -> None:
    assert push(world, topic="com.mattermost.cert").body == {"reason": "MissingProviderToken"}
    reply = call_with_cert(world, world.cert, "com.mattermost.cert")
    assert reply.status == 200
    # one topic in the certificate: apns-topic may be left out
    assert call_with_cert(world, world.cert, None).status == 200
    wrong_topic = call_with_cert(world, world.cert, TOPIC)
    assert (wrong_topic.status, wrong_topic.body["reason"]) == (400, "TopicDisallowed")
    stray = call_with_cert(world, world.stray_cert, "com.mattermost.cert")
    assert (stray.status, stray.body["reason"]) == (403, "BadCertificate")
    accepted = [
        record["identity"]
        for record in world.services.received()
        if record["answer"]["status"] == 200
        and (record["identity"] or {}).get("kind") == "certificate"
    ]
    assert accepted[0]["sha256"] == world.cert_sha256


def call_with_cert(world: World, cert: Path, topic: str | None) -> Reply:
    headers = {"apns-push-type": "alert"}
    if topic:
        headers["apns-topic"] = topic
    return call(
        world, "api.push.apple.com", "POST", f"/3/device/{LIVE}", headers, b"{}", client_cert=cert
    )


def test_a_certificate_from_another_ca_fails_the_handshake(world: World, tmp_path: Path) -> None:
    other_ca = h.make_apns_client_ca(tmp_path / "other-ca")
    foreign = tmp_path / "foreign.pem"
    h.make_apns_certificate(foreign, "com.mattermost.cert", other_ca)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        call_with_cert(world, foreign, "com.mattermost.cert")


# --------------------------------------------------------------------------------------------
# Google OAuth2 and FCM
# --------------------------------------------------------------------------------------------

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.mark.parametrize(
    ("case", "error", "description"),
    [
        ("wrong grant type", "unsupported_grant_type", "Invalid grant_type: password"),
        ("no assertion", "invalid_request", "Missing required parameter: assertion"),
        ("not a JWT", "invalid_grant", "Invalid JWT Signature."),
        ("unknown account", "invalid_grant", "Invalid grant: account not found"),
        ("revoked account", "invalid_grant", "Invalid JWT Signature."),
        ("signed by another key", "invalid_grant", "Invalid JWT Signature."),
        ("wrong audience", "invalid_grant", "Invalid JWT: Failed audience check."),
        ("expired", "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
        ("too long-lived", "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
    ],
)
def test_oauth2_token_errors(
    world: World, tmp_path: Path, case: str, error: str, description: str
) -> None:
    stranger = h.make_fcm_service_account(tmp_path / "stranger.json", "stranger")
    impostor = json.loads(world.fcm.read_text())
    impostor["private_key"] = json.loads(stranger.read_text())["private_key"]
    (tmp_path / "impostor.json").write_text(json.dumps(impostor))
    now = int(time.time())
    form = {
        "wrong grant type": {"grant_type": "password"},
        "no assertion": {"grant_type": GRANT},
        "not a JWT": {"grant_type": GRANT, "assertion": "abc"},
        "unknown account": {"grant_type": GRANT, "assertion": assertion(stranger)},
        "revoked account": {"grant_type": GRANT, "assertion": assertion(world.revoked_fcm)},
        "signed by another key": {
            "grant_type": GRANT,
            "assertion": assertion(tmp_path / "impostor.json"),
        },
        "wrong audience": {
            "grant_type": GRANT,
            "assertion": assertion(world.fcm, aud="https://example.com/token"),
        },
        "expired": {
            "grant_type": GRANT,
            "assertion": assertion(world.fcm, iat=now - 7200, exp=now - 3600),
        },
        "too long-lived": {
            "grant_type": GRANT,
            "assertion": assertion(world.fcm, exp=now + 7200),
        },
    }[case]
    reply = token_request(world, form)
    assert reply.status == 400
    assert reply.body["error"] == error
    assert reply.body["error_description"].startswith(description)


def test_oauth2_grant_then_fcm_send(world: World) -> None:
    bearer = access_token(world, world.fcm)
    assert bearer.startswith("ya29.")
    reply = fcm_send(world, bearer, "fcm-live")
    assert reply.status == 200
    assert reply.body["name"].startswith(f"projects/{PROJECT}/messages/")
    records = world.services.received()
    token_records = [
        r for r in records if r["service"] == "oauth2" and r["answer"]["status"] == 200
    ]
    assert token_records
    recorded = json.dumps(records)
    assert bearer not in recorded  # access tokens and assertions are never recorded
    assert not [record for record in records if "authorization" in record["headers"]]
    assert token_records[-1]["answer"]["body"]["access_token"] == "(redacted)"
    claims = token_records[-1]["body"]["assertion_claims"]
    assert claims["aud"] == TOKEN_URL
    assert "assertion" not in token_records[-1]["body"]


def test_fcm_error_shapes(world: World) -> None:
    bearer = access_token(world, world.fcm)
    unknown = fcm_send(world, bearer, "never-issued")
    assert unknown.status == 400
    assert unknown.body["error"]["status"] == "INVALID_ARGUMENT"
    assert unknown.body["error"]["message"] == (
        "The registration token is not a valid FCM registration token"
    )
    assert unknown.body["error"]["details"][0] == {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "INVALID_ARGUMENT",
    }
    gone = fcm_send(world, bearer, "fcm-gone")
    assert (gone.status, gone.body["error"]["status"]) == (404, "NOT_FOUND")
    assert gone.body["error"]["details"][0]["errorCode"] == "UNREGISTERED"
    other = fcm_send(world, bearer, "fcm-other")
    assert other.body == {
        "error": {
            "code": 403,
            "message": "SenderId mismatch",
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "SENDER_ID_MISMATCH",
                }
            ],
        }
    }


def test_fcm_authentication_and_project(world: World) -> None:
    unauthenticated = fcm_send(world, "ya29.not-issued", "fcm-live")
    assert (unauthenticated.status, unauthenticated.body["error"]["status"]) == (
        401,
        "UNAUTHENTICATED",
    )
    other_project = fcm_send(world, access_token(world, world.other_fcm), "fcm-live")
    assert other_project.status == 403
    assert other_project.body["error"]["status"] == "PERMISSION_DENIED"
    assert "details" not in other_project.body["error"]  # IAM denial: no FcmError, so FAIL
    no_target = call(
        world,
        "fcm.googleapis.com",
        "POST",
        f"/v1/projects/{PROJECT}/messages:send",
        {"Authorization": f"Bearer {access_token(world, world.fcm)}"},
        b'{"message": {"data": {}}}',
    )
    assert (no_target.status, no_target.body["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_registry_is_reread_when_it_changes(world: World) -> None:
    bearer = access_token(world, world.fcm)
    assert fcm_send(world, bearer, "late-device").status == 400
    registry_path = world.services.data_dir / "registry.json"
    original = registry_path.read_text()
    data = json.loads(original)
    data["fcm"]["devices"]["late-device"] = {"project_id": PROJECT}
    try:
        h.PushServicesRegistry(data).write(world.services.data_dir)
        assert fcm_send(world, bearer, "late-device").status == 200
    finally:
        h.PushServicesRegistry(json.loads(original)).write(world.services.data_dir)


def test_host_routing_and_recording(world: World) -> None:
    reply = call(world, "api.push.apple.com", "GET", "/", {"Host": "example.com"})
    assert reply.status == 404
    push(world, bearer=apns_jwt(world.p8), token=LIVE, topic=TOPIC)
    record = [r for r in world.services.received() if r["service"] == "apns"][-1]
    assert (record["host"], record["sni"]) == ("api.push.apple.com", "api.push.apple.com")
    assert record["path"] == f"/3/device/{LIVE}"
    assert record["headers"]["apns-topic"] == TOPIC
    assert "authorization" not in record["headers"]
    assert record["identity"] == {
        "kind": "token",
        "team_id": TEAM,
        "key_id": KEY_ID,
        "alg": "ES256",
        "topics": [TOPIC],
    }
    assert record["body"] == {"aps": {"alert": "hi"}}
    assert record["client"] == "127.0.0.1"


def test_waits_for_its_certificate_serves_acme_tokens_and_reloads_on_sighup(
    tmp_path: Path,
) -> None:
    """Like the HPNS emulator: HTTP-01 tokens on the plain port while HTTPS waits for the
    certificate the lab's ACME CA issues; SIGHUP starts HTTPS with it."""
    https_port, http_port = h.free_port(), h.free_port()
    cert, key = tmp_path / "tls" / "fullchain.pem", tmp_path / "tls" / "privkey.pem"
    data_dir = tmp_path / "data"
    process = h.EmulatorProcess(
        h.python_argv(
            h.PUSH_SERVICES_EMULATOR,
            *("--cert", str(cert), "--key", str(key), "--data-dir", str(data_dir)),
            *("--port", str(https_port), "--http-port", str(http_port), "--bind", "127.0.0.1"),
        ),
        cwd=tmp_path,
        env=h.base_env(),
        log_dir=tmp_path / "out",
    )
    with h.running(process):
        process.wait_port(http_port)
        (data_dir / "acme-challenge" / "tok_1").write_text("tok_1.thumbprint")
        status, _, body = h.http_request(
            "GET", f"http://127.0.0.1:{http_port}/.well-known/acme-challenge/tok_1"
        )
        assert (status, body) == (200, b"tok_1.thumbprint")
        assert "HTTPS is waiting for a certificate" in process.stdout()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
        pki = h.make_test_pki(tmp_path / "pki", h.PUSH_SERVICE_HOSTS)
        cert.parent.mkdir()
        cert.write_bytes(pki.server_cert.read_bytes())
        key.write_bytes(pki.server_key.read_bytes())
        assert process.process is not None
        process.process.send_signal(signal.SIGHUP)
        process.wait_port(https_port)
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
        with context.wrap_socket(raw, server_hostname="fcm.googleapis.com") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
