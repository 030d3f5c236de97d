"""Shared test data: the documented defaults every host starts from (group_data/all.py), and
real credentials made with ``cryptography`` (the settings parse them as the push proxy would).

    write_credentials(tmp_path)["auth_key"]     # a valid APNs .p8 file
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import runpy
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
#: The documented defaults (group_data/all.py), public names only.
DEFAULTS: dict[str, Any] = {
    key: value
    for key, value in runpy.run_path(str(ROOT / "group_data" / "all.py")).items()
    if not key.startswith("_")
}
#: A well-formed push_proxy_sha256 (64 lowercase hex characters).
SHA = "0123456789abcdef" * 4
#: The bundle id the test APNs certificate is issued for (its subject UID).
TOPIC = "com.example.mattermost"
#: The password of the test APNs certificate's legacy-encrypted key.
APNS_PASSWORD = "s3cret password"

PEM = serialization.Encoding.PEM


@functools.cache
def ec_key(curve: type[ec.EllipticCurve] = ec.SECP256R1) -> ec.EllipticCurvePrivateKey:
    """One EC key per curve for the whole run (generation is the slow part)."""
    return ec.generate_private_key(curve())


@functools.cache
def rsa_key(number: int = 0) -> rsa.RSAPrivateKey:
    """RSA 2048 keys, ``number`` telling distinct keys apart."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(
    key: Any,
    form: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    password: str | None = None,
) -> bytes:
    """A private key as PEM: PKCS8 ('PRIVATE KEY') by default, TraditionalOpenSSL for
    'RSA PRIVATE KEY' / 'EC PRIVATE KEY'; with a password, TraditionalOpenSSL gives the legacy
    DEK-Info form and PKCS8 gives 'ENCRYPTED PRIVATE KEY'."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = serialization.BestAvailableEncryption(password.encode())
    return key.private_bytes(PEM, form, encryption)


def p8_key() -> bytes:
    """A valid APNs auth key: EC P-256 in PKCS#8 PEM."""
    return private_pem(ec_key())


def certificate(
    key: Any,
    uid: str | None = TOPIC,
    valid_days: float = 365,
    common_name: str = "Apple Push Services: com.example.mattermost",
    ca: bool = False,
) -> x509.Certificate:
    """A self-signed certificate for ``key``, valid from yesterday for ``valid_days`` (from
    now; negative: already expired), with subject UID ``uid`` like Apple's push certificates."""
    now = dt.datetime.now(dt.UTC)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if uid is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.USER_ID, uid))
    name = x509.Name(attributes)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now + dt.timedelta(days=valid_days))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(key, hashes.SHA256())


def apns_pem(
    cert: x509.Certificate | None = None,
    key: Any = None,
    password: str | None = APNS_PASSWORD,
    form: serialization.PrivateFormat = serialization.PrivateFormat.TraditionalOpenSSL,
) -> bytes:
    """An APNs certificate PEM: certificate then private key (legacy DEK-Info encryption with
    ``password`` by default, as the push proxy can read it)."""
    key = rsa_key() if key is None else key
    cert = certificate(key) if cert is None else cert
    return cert.public_bytes(PEM) + private_pem(key, form, password)


def fcm_document(**overrides: Any) -> dict[str, Any]:
    """A valid FCM service-account document (its RSA key is real), with ``overrides``."""
    return {
        "type": "service_account",
        "project_id": "mmpush-test",
        "private_key_id": "0" * 40,
        "private_key": private_pem(rsa_key(1)).decode(),
        "client_email": "push@mmpush-test.iam.gserviceaccount.com",
        "client_id": "1" * 21,
        "token_uri": "https://oauth2.googleapis.com/token",
        **overrides,
    }


def fcm_json(**overrides: Any) -> bytes:
    return json.dumps(fcm_document(**overrides), indent=2).encode()


def ca_bundle() -> bytes:
    """A PEM bundle holding one CA certificate."""
    return certificate(ec_key(), uid=None, common_name="mmpush test CA", ca=True).public_bytes(PEM)


def write_credentials(directory: Path) -> dict[str, Path]:
    """Valid credential files in ``directory``: ``auth_key`` (.p8), ``fcm`` (service account
    JSON), ``apns_pem`` (certificate + encrypted key for TOPIC), ``apns_password``,
    ``ca_bundle``."""
    contents = {
        "auth_key": ("AuthKey_ABCDE12345.p8", p8_key()),
        "fcm": ("fcm.json", fcm_json()),
        "apns_pem": ("apns.pem", apns_pem()),
        "apns_password": ("apns.password", APNS_PASSWORD.encode() + b"\n"),
        "ca_bundle": ("ca.pem", ca_bundle()),
    }
    paths = {}
    for name, (filename, content) in contents.items():
        paths[name] = directory / filename
        paths[name].write_bytes(content)
    return paths
