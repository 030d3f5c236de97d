"""Credential checks on the control node, as the real push proxy would parse the files.

Pure functions on bytes (no file access, no pyinfra): mmpush.settings reads the files and
turns a :class:`CredentialError` into a SettingsError naming host, key, app type and file.

    check_apns_auth_key(p8_bytes)                         # APNs token key (.p8)
    check_apns_certificate(pem_bytes, "pw", "com.example.app", now)
    check_fcm_service_account(json_bytes)                 # FCM v1 service account
    check_ca_bundle(pem_bytes)                            # a CA bundle (PEM certificates)

What is accepted follows the sources the push proxy v6.5.0 is built from:
- ``sideshow/apns2`` ``token/token.go`` (``AuthKeyFromBytes``): only the first PEM block of a
  .p8 is read, and it must be PKCS#8 holding an ECDSA key (APNs signs ES256: P-256).
- ``sideshow/apns2`` ``certificate/certificate.go`` (``FromPemBytes``): every ``CERTIFICATE``
  block is collected; every block whose type ends in ``PRIVATE KEY`` must parse as PKCS#1 or
  PKCS#8, decrypted first only when it has a legacy ``DEK-Info`` header (Go's
  ``x509.DecryptPEMBlock``); at least one certificate and one key are needed.
- ``mattermost-push-proxy`` ``server/android_notification_server.go``: the service file goes
  through ``google.JWTConfigFromJSON`` (``type`` must be ``service_account``; the
  ``private_key`` is a PEM PKCS#8 or PKCS#1 RSA key) and the project id and client email
  configure the Firebase app.
- PEM blocks are found as Go's ``encoding/pem`` ``Decode`` finds them (text before, between
  and after blocks is skipped; a malformed block is skipped).

No message ever contains a credential's content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

try:  # cryptography >= 43 moved TripleDES to the "decrepit" module
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    TripleDES = algorithms.TripleDES  # type: ignore[misc,assignment]

#: A certificate that expires within this many days gets a warning.
EXPIRY_WARNING_DAYS = 30


class CredentialError(ValueError):
    """A credential the push proxy would reject: what is wrong, and how to fix it.

    ``field`` names the app entry field at fault when it is not the file itself
    (``"certificate_password_file"``, ``"topic"``); empty for the file.

        str(CredentialError("the file is empty", "download it again"))
        == "the file is empty; fix: download it again"
    """

    def __init__(self, problem: str, fix: str = "", field: str = "") -> None:
        self.problem, self.fix, self.field = problem, fix, field
        super().__init__(f"{problem}; fix: {fix}" if fix else problem)


# --- PEM, as Go's encoding/pem reads it --------------------------------------------------------


@dataclass(frozen=True)
class PemBlock:
    """One decoded PEM block: ``PemBlock("PRIVATE KEY", {}, der_bytes)``."""

    type: str
    headers: dict[str, str]
    der: bytes = field(repr=False)


_PEM_BEGIN = b"-----BEGIN "
_PEM_END = b"\n-----END "
_DASHES = b"-----"


def _line(data: bytes) -> tuple[bytes, bytes]:
    """The first line (without its newline, a final CR and trailing blanks), and the rest."""
    index = data.find(b"\n")
    if index < 0:
        line, rest = data, b""
    else:
        line, rest = data[:index], data[index + 1 :]
        line = line.removesuffix(b"\r")
    return line.rstrip(b" \t"), rest


def _decode_one(data: bytes) -> tuple[PemBlock | None, bytes]:
    """The first well-formed PEM block in ``data`` and what follows it (Go's ``pem.Decode``):
    ``(None, data)`` when there is none."""
    rest = data
    while True:
        if rest.startswith(_PEM_BEGIN):
            rest = rest[len(_PEM_BEGIN) :]
        else:
            index = rest.find(b"\n" + _PEM_BEGIN)
            if index < 0:
                return None, data
            rest = rest[index + 1 + len(_PEM_BEGIN) :]
        type_line, rest = _line(rest)
        if not type_line.endswith(_DASHES):
            continue
        block_type = type_line[: -len(_DASHES)]
        headers: dict[str, str] = {}
        while True:
            if not rest:
                return None, data
            line, following = _line(rest)
            if b":" not in line:
                break
            key, value = line.split(b":", 1)
            headers[key.strip().decode("latin-1")] = value.strip().decode("latin-1")
            rest = following
        if not headers and rest.startswith(_PEM_END[1:]):
            end, trailer_start = 0, len(_PEM_END) - 1
        else:
            end = rest.find(_PEM_END)
            trailer_start = end + len(_PEM_END)
        if end < 0:
            continue
        trailer = rest[trailer_start : trailer_start + len(block_type) + len(_DASHES)]
        after_trailer = rest[trailer_start + len(trailer) :]
        if trailer != block_type + _DASHES or _line(after_trailer)[0]:
            continue
        body = rest[:end]
        for blank in (b" ", b"\t", b"\r", b"\n"):
            body = body.replace(blank, b"")
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            continue
        _, rest = _line(rest[end + len(_PEM_END) - 1 :])
        return PemBlock(block_type.decode("latin-1"), headers, der), rest


def pem_blocks(data: bytes) -> list[PemBlock]:
    """Every PEM block in ``data``, in order, as Go's ``encoding/pem`` finds them.

    [b.type for b in pem_blocks(cert_pem + key_pem)] == ["CERTIFICATE", "PRIVATE KEY"]
    """
    blocks = []
    block, rest = _decode_one(data)
    while block is not None:
        blocks.append(block)
        block, rest = _decode_one(rest)
    return blocks


# --- private keys, as Go's crypto/x509 parses them ----------------------------------------------


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of element) of the DER element at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def der_key_format(der: bytes) -> str:
    """The syntax of a DER private key: ``"pkcs8"``, ``"pkcs1"`` (RSA), ``"sec1"`` (EC) or
    ``"unknown"`` (e.g. an encrypted PKCS#8 key, a certificate, garbage).

    All three are a SEQUENCE starting with an INTEGER version; what follows tells them apart:
    PKCS#8 an AlgorithmIdentifier SEQUENCE, PKCS#1 the modulus INTEGER, SEC1 an OCTET STRING.
    """
    try:
        tag, start, end = _der_element(der, 0)
        if tag != 0x30:
            return "unknown"
        body = der[start:end]
        version_tag, _, version_end = _der_element(body, 0)
        if version_tag != 0x02:
            return "unknown"
        next_tag, _, _ = _der_element(body, version_end)
    except (IndexError, ValueError):
        return "unknown"
    return {0x30: "pkcs8", 0x02: "pkcs1", 0x04: "sec1"}.get(next_tag, "unknown")


def _load_key(der: bytes) -> Any:
    """A PKCS#1 or PKCS#8 private key (what Go's x509 parses), or None."""
    if der_key_format(der) not in ("pkcs1", "pkcs8"):
        return None
    try:
        return serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _key_kind(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA {key.key_size}-bit key"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    return f"a {type(key).__name__}"


# --- legacy encrypted PEM (Proc-Type: 4,ENCRYPTED + DEK-Info), as Go's x509 decrypts it ----------

#: DEK-Info cipher name -> (algorithm, key size, block size), the ones Go's x509 knows.
_LEGACY_CIPHERS: dict[str, tuple[Any, int, int]] = {
    "DES-CBC": (TripleDES, 8, 8),
    "DES-EDE3-CBC": (TripleDES, 24, 8),
    "AES-128-CBC": (algorithms.AES, 16, 16),
    "AES-192-CBC": (algorithms.AES, 24, 16),
    "AES-256-CBC": (algorithms.AES, 32, 16),
}


class _WrongPassword(ValueError):
    """The password does not decrypt the key."""


def _legacy_key(password: bytes, salt: bytes, size: int) -> bytes:
    """OpenSSL's EVP_BytesToKey with MD5 and one round, as legacy PEM encryption derives keys."""
    out, digest = b"", b""
    while len(out) < size:
        digest = hashlib.md5(digest + password + salt, usedforsecurity=False).digest()
        out += digest
    return out[:size]


def decrypt_legacy_pem(block: PemBlock, password: str) -> bytes:
    """The DER inside a ``DEK-Info`` encrypted block (raises ValueError when it cannot be
    decrypted: unknown cipher, bad IV, or a wrong password)."""
    mode, _, iv_hex = block.headers.get("DEK-Info", "").partition(",")
    if mode not in _LEGACY_CIPHERS:
        raise ValueError(f"DEK-Info cipher {mode!r} is not one of {', '.join(_LEGACY_CIPHERS)}")
    algorithm, key_size, block_size = _LEGACY_CIPHERS[mode]
    try:
        iv = bytes.fromhex(iv_hex)
    except ValueError:
        raise ValueError("the DEK-Info IV is not hexadecimal") from None
    if len(iv) != block_size:
        raise ValueError("the DEK-Info IV has the wrong length")
    data = block.der
    if not data or len(data) % block_size:
        raise _WrongPassword("invalid padding")
    key = _legacy_key(password.encode(), iv[:8], key_size)
    decryptor = Cipher(algorithm(key), modes.CBC(iv)).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= block_size or plain[-pad:] != bytes([pad]) * pad:
        raise _WrongPassword("invalid padding")
    return plain[:-pad]


# --- the checks ---------------------------------------------------------------------------------

_P8_FROM_APPLE = (
    "download the APNs auth key (.p8) from Apple Developer > Certificates, Identifiers & "
    "Profiles > Keys (an EC P-256 key in PKCS#8 PEM) and point auth_key_file at it"
)


def _not_empty(content: bytes, what: str, fix: str) -> None:
    if not content.strip():
        raise CredentialError(f"the {what} file is empty", fix)


def check_apns_auth_key(content: bytes, source: str = "AuthKey.p8") -> ec.EllipticCurvePrivateKey:
    """The APNs token key (.p8) as apns2 reads it: the FIRST PEM block, PKCS#8, ECDSA P-256.

    key = check_apns_auth_key(Path("AuthKey_ABCDE12345.p8").read_bytes())
    ``source`` (the file's path) only appears in the fix commands.
    """
    _not_empty(content, "APNs auth key", _P8_FROM_APPLE)
    block, _ = _decode_one(content)
    if block is None:
        raise CredentialError("the APNs auth key is not a PEM file", _P8_FROM_APPLE)
    syntax = der_key_format(block.der)
    if syntax == "sec1":
        # Never the input's own name: openssl would truncate the file it is about to read.
        out = "AuthKey-pkcs8.p8" if PurePath(source).name == "AuthKey.p8" else "AuthKey.p8"
        raise CredentialError(
            f"the first PEM block is a SEC1 {block.type!r}, and the push proxy reads only "
            "PKCS#8 ('PRIVATE KEY') keys",
            f"openssl pkcs8 -topk8 -nocrypt -in {_quote(source)} -out {out} (then point "
            f"auth_key_file at {out})",
        )
    key = _load_key(block.der) if syntax == "pkcs8" else None
    if syntax == "pkcs1" or (key is not None and not isinstance(key, ec.EllipticCurvePrivateKey)):
        kind = "an RSA key" if key is None else _key_kind(key)
        raise CredentialError(
            f"the first PEM block holds {kind}; an APNs auth key is an ECDSA P-256 key",
            _P8_FROM_APPLE,
        )
    if key is None:
        raise CredentialError(
            f"the first PEM block ({block.type!r}) is not an unencrypted PKCS#8 private key "
            "(the push proxy reads only the first block of the file)",
            _P8_FROM_APPLE,
        )
    if not isinstance(key.curve, ec.SECP256R1):
        raise CredentialError(
            f"the first PEM block holds {_key_kind(key)}; APNs needs P-256 (ES256)",
            _P8_FROM_APPLE,
        )
    return key


def certificate_password(content: bytes) -> str:
    """The APNs certificate password as the deploy writes it to the proxy's config: the
    file's UTF-8 text without surrounding whitespace (``b"hunter2\\n"`` -> ``"hunter2"``)."""
    try:
        return content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError(
            "the password file is not UTF-8 text",
            "write the password as UTF-8 text on one line",
            field="certificate_password_file",
        ) from None


@dataclass(frozen=True)
class ApnsCertificate:
    """What the checks learnt from an APNs certificate PEM (no secret in it)."""

    subject_uid: str | None
    not_valid_after: datetime
    warnings: tuple[str, ...] = ()


def _apns_pem_fix(source: str) -> str:
    return (
        "put the APNs certificate and its private key in one PEM, e.g. from the .p12 exported "
        f"from Keychain: {{ openssl pkcs12 -in apns.p12 -clcerts -nokeys; openssl pkcs12 -in "
        "apns.p12 -nocerts -nodes | openssl pkey -traditional -aes256; } > "
        f"{_quote(source)} (add -legacy to both pkcs12 commands for an old .p12)"
    )


def _apns_private_key(block: PemBlock, password: str, source: str) -> Any:
    """The private key of one ``...PRIVATE KEY`` block, as apns2 ``unencryptPrivateKey``."""
    if "DEK-Info" in block.headers:
        try:
            der = decrypt_legacy_pem(block, password)
        except _WrongPassword:
            der = None
        except ValueError as error:
            raise CredentialError(
                f"the private key is encrypted in a way the push proxy cannot read ({error})",
                _convert_fix(source),
            ) from None
        if der is not None and der_key_format(der) == "sec1":
            raise CredentialError(
                f"the {block.type!r} block is a SEC1 EC key; the push proxy reads PKCS#1 or PKCS#8",
                _apns_pem_fix(source),
            )
        key = _load_key(der) if der is not None else None
        if key is None:
            problem = (
                "the certificate password does not decrypt the private key"
                if password
                else "the private key is encrypted and no certificate_password_file is set"
            )
            raise CredentialError(
                problem,
                "point certificate_password_file at a file holding the key's password",
                field="certificate_password_file",
            )
        return key
    if block.type == "ENCRYPTED PRIVATE KEY":
        raise CredentialError(
            "the private key is an encrypted PKCS#8 'ENCRYPTED PRIVATE KEY' (OpenSSL 3's "
            "default); the push proxy decrypts only legacy 'Proc-Type: 4,ENCRYPTED' keys",
            _convert_fix(source),
        )
    key = _load_key(block.der)
    if key is None:
        syntax = der_key_format(block.der)
        problem = (
            f"the {block.type!r} block is a SEC1 EC key; the push proxy reads PKCS#1 or PKCS#8"
            if syntax == "sec1"
            else f"the {block.type!r} block does not parse as a PKCS#1 or PKCS#8 private key"
        )
        raise CredentialError(problem, _apns_pem_fix(source))
    return key


def _convert_fix(source: str) -> str:
    """The openssl command that rewrites an APNs PEM with a legacy-encrypted key (it asks for
    the old password, then the new one)."""
    quoted = _quote(source)
    return (
        f"{{ openssl x509 -in {quoted}; openssl pkey -in {quoted} -traditional -aes256; }} > "
        "apns-legacy.pem, then point certificate_file at apns-legacy.pem"
    )


def _public_der(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_apns_certificate(
    content: bytes,
    password: str,
    topic: str,
    now: datetime,
    source: str = "apns.pem",
) -> ApnsCertificate:
    """An APNs certificate PEM (certificate + private key) as apns2 ``FromPemBytes`` loads it,
    plus what would fail later: key/certificate mismatch, expiry, a topic that is not the
    certificate's UID. ``now`` is timezone-aware.

    info = check_apns_certificate(pem, "", "com.example.app", datetime.now(UTC))
    """
    _not_empty(content, "APNs certificate", _apns_pem_fix(source))
    blocks = pem_blocks(content)
    if not blocks:
        raise CredentialError("the APNs certificate file is not PEM", _apns_pem_fix(source))
    certificates = [block for block in blocks if block.type == "CERTIFICATE"]
    key = None
    for block in blocks:
        if block.type.endswith("PRIVATE KEY"):
            key = _apns_private_key(block, password, source)
    if not certificates:
        raise CredentialError("the PEM holds no CERTIFICATE block", _apns_pem_fix(source))
    if key is None:
        raise CredentialError("the PEM holds no private key", _apns_pem_fix(source))
    try:
        leaf = x509.load_der_x509_certificate(certificates[0].der)
    except ValueError:
        raise CredentialError(
            "the first CERTIFICATE block does not parse", _apns_pem_fix(source)
        ) from None
    if _public_der(leaf) != _public_der(key):
        raise CredentialError(
            "the private key does not belong to the (first) certificate",
            _apns_pem_fix(source),
        )
    expires = leaf.not_valid_after_utc
    if expires <= now:
        raise CredentialError(
            f"the APNs certificate expired on {expires:%Y-%m-%d}",
            "create a new APNs certificate in Apple Developer > Certificates and export it "
            "with its key",
        )
    uids = leaf.subject.get_attributes_for_oid(NameOID.USER_ID)
    uid = str(uids[0].value) if uids else None
    if uid is not None and uid != topic:
        raise CredentialError(
            f"the certificate was issued for the bundle id {uid!r} (its subject UID)",
            f"set topic = {uid!r}, or use the certificate of the app {topic!r}",
            field="topic",
        )
    warnings = ()
    if expires - now <= timedelta(days=EXPIRY_WARNING_DAYS):
        days = (expires - now).days
        warnings = (
            f"the APNs certificate expires on {expires:%Y-%m-%d} (in {days} days): renew it",
        )
    return ApnsCertificate(uid, expires, warnings)


@dataclass(frozen=True)
class FcmServiceAccount:
    """The non-secret facts of an FCM service account."""

    project_id: str
    client_email: str


_FCM_FIX = (
    "download a service-account key (JSON) in the Firebase console > Project settings > "
    "Service accounts > Generate new private key (not google-services.json)"
)


def check_fcm_service_account(content: bytes) -> FcmServiceAccount:
    """An FCM v1 service-account JSON as the push proxy loads it.

    account = check_fcm_service_account(Path("fcm.json").read_bytes())
    """
    _not_empty(content, "FCM service-account", _FCM_FIX)
    try:
        document = json.loads(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise CredentialError("the service-account file is not UTF-8 text", _FCM_FIX) from None
    except json.JSONDecodeError as error:
        raise CredentialError(
            f"the service-account file is not JSON ({error.msg} at line {error.lineno} "
            f"column {error.colno})",
            _FCM_FIX,
        ) from None
    if not isinstance(document, dict):
        raise CredentialError("the service-account file is not a JSON object", _FCM_FIX)
    if document.get("type") != "service_account":
        shown = document.get("type") if isinstance(document.get("type"), str) else None
        raise CredentialError(f"'type' is {shown!r}, not 'service_account'", _FCM_FIX)
    for name in ("project_id", "client_email", "token_uri", "private_key"):
        value = document.get(name)
        if not isinstance(value, str) or not value.strip():
            raise CredentialError(f"{name!r} is missing or empty", _FCM_FIX)
    block, _ = _decode_one(document["private_key"].encode("utf-8"))
    key = _load_key(block.der) if block is not None else None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError(
            "'private_key' is not a PEM RSA private key (PKCS#8 or PKCS#1)", _FCM_FIX
        )
    return FcmServiceAccount(document["project_id"], document["client_email"])


def check_ca_bundle(content: bytes) -> int:
    """A CA bundle (PEM): UTF-8 text with at least one certificate, each one parseable.
    Returns the number of certificates.

    check_ca_bundle(Path("ca.pem").read_bytes()) == 1
    """
    fix = "use a PEM file of CA certificates (-----BEGIN CERTIFICATE----- blocks)"
    _not_empty(content, "CA bundle", fix)
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError("the CA bundle is not UTF-8 text", fix) from None
    certificates = [block for block in pem_blocks(content) if block.type == "CERTIFICATE"]
    if not certificates:
        raise CredentialError("the CA bundle holds no CERTIFICATE block", fix)
    for number, block in enumerate(certificates, 1):
        try:
            x509.load_der_x509_certificate(block.der)
        except ValueError:
            raise CredentialError(
                f"certificate {number} of the CA bundle does not parse", fix
            ) from None
    return len(certificates)


def _quote(source: str) -> str:
    """A path for a shell command (``env:NAME`` sources become a FILE placeholder)."""
    return "FILE" if source.startswith("env:") else shlex.quote(source)
