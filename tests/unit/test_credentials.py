"""mmpush.credentials: credentials checked on the control node as the push proxy parses them
(apns2 token/certificate loaders, the FCM service-account loader, Go's PEM decoder).
Every credential is built here with ``cryptography`` (or the openssl CLI, when installed, as an
independent producer of the legacy encrypted formats)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mmpush.credentials import (
    CredentialError,
    PemBlock,
    certificate_password,
    check_apns_auth_key,
    check_apns_certificate,
    check_ca_bundle,
    check_fcm_service_account,
    decrypt_legacy_pem,
    der_key_format,
    pem_blocks,
)
from tests.unit.defaults import (
    APNS_PASSWORD,
    TOPIC,
    apns_pem,
    ca_bundle,
    certificate,
    ec_key,
    fcm_document,
    fcm_json,
    p8_key,
    private_pem,
    rsa_key,
)

PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def refused(check: Any, *args: Any, **kwargs: Any) -> CredentialError:
    with pytest.raises(CredentialError) as caught:
        check(*args, **kwargs)
    return caught.value


def der(key: Any, form: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, form, serialization.NoEncryption())


def body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM (what must never appear in a message)."""
    text = pem.decode("latin-1")
    return [line for line in text.splitlines() if line and not line.startswith("-")]


# --- PEM decoding (Go's encoding/pem) -------------------------------------------------------------


def test_pem_blocks_finds_every_block_in_order_skipping_text_around_them() -> None:
    cert = certificate(rsa_key()).public_bytes(serialization.Encoding.PEM)
    key = private_pem(rsa_key())
    text = b"Bag Attributes\n    friendlyName: x\n" + cert + b"subject=...\n" + key + b"tail"
    blocks = pem_blocks(text)
    assert [block.type for block in blocks] == ["CERTIFICATE", "PRIVATE KEY"]
    assert blocks[1].der == der(rsa_key(), PKCS8)


def test_pem_blocks_reads_headers_and_crlf_line_ends() -> None:
    pem = private_pem(rsa_key(), TRADITIONAL, "pw").replace(b"\n", b"\r\n")
    (block,) = pem_blocks(pem)
    assert block.type == "RSA PRIVATE KEY"
    assert block.headers["Proc-Type"] == "4,ENCRYPTED"
    assert block.headers["DEK-Info"].startswith("AES-256-CBC,")


@pytest.mark.parametrize(
    "broken",
    [
        b"-----BEGIN THING-----\nAAAA\n-----END OTHER-----\n",  # END names another type
        b"-----BEGIN THING-----\nA?A=\n-----END THING-----\n",  # not base64
        b"-----BEGIN THING-----\nAAAA\n",  # no END
        b"-----BEGIN THING----\nAAAA\n-----END THING-----\n",  # 4 dashes
        b"-----BEGIN THING-----\nAAAA\n-----END THING----- x\n",  # text after END
        b"x-----BEGIN THING-----\nAAAA\n-----END THING-----\n",  # BEGIN not at a line start
        b"-----BEGIN THING\nAAAA\n-----END -----\n",  # no dashes after the BEGIN type
    ],
)
def test_a_malformed_block_is_skipped_and_the_next_one_found(broken: bytes) -> None:
    good = b"-----BEGIN GOOD-----\nAQID\n-----END GOOD-----\n"
    assert [(b.type, b.der) for b in pem_blocks(broken + good)] == [("GOOD", b"\x01\x02\x03")]


def test_an_empty_block_and_no_block() -> None:
    assert pem_blocks(b"-----BEGIN EMPTY-----\n-----END EMPTY-----\n") == [
        PemBlock("EMPTY", {}, b"")
    ]
    assert pem_blocks(b"") == [] and pem_blocks(b"no pem here") == []


@pytest.mark.parametrize(
    ("form", "key", "expected"),
    [
        (PKCS8, "rsa", "pkcs8"),
        (PKCS8, "ec", "pkcs8"),
        (TRADITIONAL, "rsa", "pkcs1"),
        (TRADITIONAL, "ec", "sec1"),
    ],
)
def test_der_key_format_tells_the_key_syntaxes_apart(
    form: serialization.PrivateFormat, key: str, expected: str
) -> None:
    assert der_key_format(der(rsa_key() if key == "rsa" else ec_key(), form)) == expected


@pytest.mark.parametrize(
    "data", [b"", b"\x30", b"\x30\x05\x02\x01\x00", b"garbage", b"\x02\x01\x00"]
)
def test_der_key_format_of_garbage_is_unknown(data: bytes) -> None:
    assert der_key_format(data) == "unknown"


def test_der_key_format_of_a_certificate_or_encrypted_pkcs8_is_unknown() -> None:
    cert = certificate(rsa_key()).public_bytes(serialization.Encoding.DER)
    assert der_key_format(cert) == "unknown"
    (encrypted,) = pem_blocks(private_pem(ec_key(), PKCS8, "pw"))
    assert encrypted.type == "ENCRYPTED PRIVATE KEY"
    assert der_key_format(encrypted.der) == "unknown"


# --- APNs auth key (.p8) -------------------------------------------------------------------------


def test_a_pkcs8_p256_key_is_accepted() -> None:
    key = check_apns_auth_key(p8_key())
    assert key.private_numbers() == ec_key().private_numbers()


def test_only_the_first_pem_block_counts() -> None:
    # text before it is skipped, like Go's pem.Decode; later blocks are never read
    assert check_apns_auth_key(b"Apple key\n" + p8_key() + b"garbage after") is not None
    assert check_apns_auth_key(p8_key() + private_pem(rsa_key())) is not None
    error = refused(check_apns_auth_key, private_pem(rsa_key()) + p8_key())
    assert "RSA 2048-bit key" in error.problem


def test_a_sec1_ec_key_is_refused_with_the_pkcs8_conversion() -> None:
    error = refused(check_apns_auth_key, private_pem(ec_key(), TRADITIONAL), "/s/AuthKey.p8")
    assert "SEC1 'EC PRIVATE KEY'" in error.problem and "PKCS#8" in error.problem
    assert error.fix.startswith("openssl pkcs8 -topk8 -nocrypt -in /s/AuthKey.p8 -out ")
    assert error.field == ""


@needs_openssl
def test_the_sec1_fix_command_makes_a_key_the_checks_accept(tmp_path: Path) -> None:
    sec1 = tmp_path / "AuthKey SEC1.p8"  # a space: the command quotes the path
    sec1.write_bytes(private_pem(ec_key(), TRADITIONAL))
    error = refused(check_apns_auth_key, sec1.read_bytes(), str(sec1))
    command = error.fix.split(" (then", 1)[0]
    subprocess.run(command, shell=True, cwd=tmp_path, check=True, capture_output=True)
    converted = (tmp_path / "AuthKey.p8").read_bytes()
    assert check_apns_auth_key(converted).private_numbers() == ec_key().private_numbers()


@pytest.mark.parametrize(
    ("pem", "problem"),
    [
        (lambda: private_pem(rsa_key()), "RSA 2048-bit key"),
        (lambda: private_pem(rsa_key(), TRADITIONAL), "an RSA key"),
        (lambda: private_pem(ec_key(ec.SECP384R1)), "secp384r1; APNs needs P-256"),
        (lambda: private_pem(ed25519.Ed25519PrivateKey.generate()), "Ed25519"),
        (lambda: private_pem(ec_key(), PKCS8, "pw"), "'ENCRYPTED PRIVATE KEY'"),
        (
            lambda: certificate(ec_key()).public_bytes(serialization.Encoding.PEM),
            "'CERTIFICATE') is not an unencrypted PKCS#8",
        ),
        (lambda: b"", "empty"),
        (lambda: b"  \n", "empty"),
        (lambda: b"garbage", "not a PEM file"),
        (lambda: b"\xff\xfe\x00\x01", "not a PEM file"),
        (lambda: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PKCS#8"),
    ],
)
def test_anything_but_a_p256_pkcs8_key_is_refused(pem: Any, problem: str) -> None:
    content = pem()
    error = refused(check_apns_auth_key, content)
    assert problem in error.problem
    assert "Apple Developer" in error.fix
    assert not any(line in str(error) for line in body_lines(content) if len(line) > 20)


# --- APNs certificate PEM ------------------------------------------------------------------------


def test_a_certificate_with_its_legacy_encrypted_key_is_accepted() -> None:
    info = check_apns_certificate(apns_pem(), APNS_PASSWORD, TOPIC, now())
    assert info.subject_uid == TOPIC and info.warnings == ()
    assert dt.timedelta(days=364) < info.not_valid_after - now() <= dt.timedelta(days=365)


@pytest.mark.parametrize("form", [PKCS8, TRADITIONAL])
def test_an_unencrypted_key_is_accepted_and_any_password_ignored(
    form: serialization.PrivateFormat,
) -> None:
    pem = apns_pem(password=None, form=form)
    assert check_apns_certificate(pem, "", TOPIC, now()).subject_uid == TOPIC
    assert check_apns_certificate(pem, "unused", TOPIC, now()).subject_uid == TOPIC


def test_key_before_certificate_and_a_chain_are_accepted() -> None:
    key = rsa_key()
    leaf = certificate(key).public_bytes(serialization.Encoding.PEM)
    chain = certificate(rsa_key(2), uid=None).public_bytes(serialization.Encoding.PEM)
    pem = private_pem(key, TRADITIONAL, APNS_PASSWORD) + leaf + chain
    assert check_apns_certificate(pem, APNS_PASSWORD, TOPIC, now()).subject_uid == TOPIC


def test_a_certificate_without_uid_accepts_any_topic() -> None:
    pem = apns_pem(certificate(rsa_key(), uid=None))
    assert check_apns_certificate(pem, APNS_PASSWORD, "com.other", now()).subject_uid is None


def test_the_legacy_decryption_matches_cryptographys_own() -> None:
    pem = private_pem(rsa_key(), TRADITIONAL, APNS_PASSWORD)
    (block,) = pem_blocks(pem)
    loaded = serialization.load_pem_private_key(pem, APNS_PASSWORD.encode())
    assert decrypt_legacy_pem(block, APNS_PASSWORD) == der(loaded, TRADITIONAL)


@needs_openssl
def test_the_legacy_key_derivation_and_padding_check_are_openssls_and_gos() -> None:
    iv = bytes(range(16))
    printed = subprocess.run(
        [
            OPENSSL or "openssl",
            "enc",
            "-aes-256-cbc",
            "-md",
            "md5",
            "-S",
            iv[:8].hex(),
            "-pass",
            "pass:pw",
            "-P",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"^key=([0-9A-F]+)$", printed, re.MULTILINE)
    assert match, printed
    key = bytes.fromhex(match.group(1))

    def block(plain: bytes) -> PemBlock:
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        headers = {"Proc-Type": "4,ENCRYPTED", "DEK-Info": f"AES-256-CBC,{iv.hex().upper()}"}
        return PemBlock("RSA PRIVATE KEY", headers, encryptor.update(plain) + encryptor.finalize())

    assert decrypt_legacy_pem(block(b"A" * 30 + b"\x02\x02"), "pw") == b"A" * 30
    assert decrypt_legacy_pem(block(b"A" * 16 + b"\x10" * 16), "pw") == b"A" * 16
    for bad_padding in (
        b"A" * 30 + b"\x01\x02",
        b"A" * 31 + b"\x00",
        b"A" * 31 + b"\x11",
        b"A" * 15 + b"\x11" * 17,
    ):
        with pytest.raises(ValueError):
            decrypt_legacy_pem(block(bad_padding), "pw")
    with pytest.raises(ValueError):
        decrypt_legacy_pem(block(b"A" * 30 + b"\x02\x02"), "other password")


@needs_openssl
@pytest.mark.parametrize("cipher", ["des3", "aes128", "aes192", "aes256"])
def test_keys_encrypted_by_openssl_in_each_legacy_cipher_are_accepted(
    tmp_path: Path, cipher: str
) -> None:
    plain = tmp_path / "key.pem"
    plain.write_bytes(private_pem(rsa_key()))
    (tmp_path / "password").write_text(APNS_PASSWORD + "\n")
    encrypted = subprocess.run(
        [
            OPENSSL or "openssl",
            "pkey",
            "-in",
            str(plain),
            "-traditional",
            f"-{cipher}",
            "-passout",
            f"file:{tmp_path / 'password'}",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert b"DEK-Info: " in encrypted
    pem = certificate(rsa_key()).public_bytes(serialization.Encoding.PEM) + encrypted
    assert check_apns_certificate(pem, APNS_PASSWORD, TOPIC, now()).subject_uid == TOPIC
    error = refused(check_apns_certificate, pem, "wrong", TOPIC, now())
    assert error.field == "certificate_password_file"


def test_a_pkcs8_encrypted_key_is_refused_with_the_openssl_conversion() -> None:
    pem = apns_pem(password=APNS_PASSWORD, form=PKCS8)
    error = refused(check_apns_certificate, pem, APNS_PASSWORD, TOPIC, now(), "/s/apns.pem")
    assert "'ENCRYPTED PRIVATE KEY'" in error.problem
    assert error.fix.startswith(
        "{ openssl x509 -in /s/apns.pem; openssl pkey -in /s/apns.pem -traditional -aes256; }"
        " > apns-legacy.pem"
    )


@needs_openssl
def test_the_conversion_turns_a_pkcs8_encrypted_pem_into_one_the_checks_accept(
    tmp_path: Path,
) -> None:
    # the fix's commands, with the passwords given as files instead of typed in
    source = tmp_path / "apns.pem"
    source.write_bytes(apns_pem(password=APNS_PASSWORD, form=PKCS8))
    for name in ("in", "out"):
        (tmp_path / f"pass-{name}").write_text(APNS_PASSWORD + "\n")
    error = refused(
        check_apns_certificate, source.read_bytes(), APNS_PASSWORD, TOPIC, now(), str(source)
    )
    command = error.fix.split(", then", 1)[0].replace(
        "-traditional -aes256",
        f"-passin file:{tmp_path}/pass-in -traditional -aes256 -passout file:{tmp_path}/pass-out",
    )
    subprocess.run(command, shell=True, cwd=tmp_path, check=True, capture_output=True)
    converted = (tmp_path / "apns-legacy.pem").read_bytes()
    assert check_apns_certificate(converted, APNS_PASSWORD, TOPIC, now()).subject_uid == TOPIC


@pytest.mark.parametrize(
    ("password", "problem"), [("wrong", "does not decrypt"), ("", "no certificate_password_file")]
)
def test_a_wrong_or_missing_password_is_refused_on_the_password_field(
    password: str, problem: str
) -> None:
    error = refused(check_apns_certificate, apns_pem(), password, TOPIC, now())
    assert problem in error.problem and error.field == "certificate_password_file"
    assert APNS_PASSWORD not in str(error)


def test_an_unknown_legacy_cipher_is_refused() -> None:
    pem = apns_pem().replace(b"DEK-Info: AES-256-CBC,", b"DEK-Info: BF-CBC,")
    error = refused(check_apns_certificate, pem, APNS_PASSWORD, TOPIC, now())
    assert "'BF-CBC'" in error.problem and "openssl pkey" in error.fix


def test_a_key_of_another_certificate_is_refused() -> None:
    pem = apns_pem(certificate(rsa_key(2)), rsa_key())
    error = refused(check_apns_certificate, pem, APNS_PASSWORD, TOPIC, now())
    assert "does not belong to the (first) certificate" in error.problem


def test_a_sec1_ec_key_in_the_certificate_pem_is_refused() -> None:
    pem = apns_pem(certificate(ec_key()), ec_key(), password=None)
    error = refused(check_apns_certificate, pem, "", TOPIC, now())
    assert "SEC1" in error.problem
    encrypted = apns_pem(certificate(ec_key()), ec_key(), password=APNS_PASSWORD)
    error = refused(check_apns_certificate, encrypted, APNS_PASSWORD, TOPIC, now())
    assert "SEC1" in error.problem


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: certificate(rsa_key()).public_bytes(serialization.Encoding.PEM), "no private key"),
        (lambda: private_pem(rsa_key()), "no CERTIFICATE"),
        (lambda: b"", "empty"),
        (lambda: b"garbage\n", "not PEM"),
        (lambda: b"\xff\xfe\x00", "not PEM"),
        (
            lambda: (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                + private_pem(rsa_key())
            ),
            "does not parse",
        ),
        (
            lambda: (
                apns_pem(password=None)
                + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            "does not parse as a PKCS#1 or PKCS#8",
        ),
    ],
)
def test_an_incomplete_or_garbage_certificate_pem_is_refused(content: Any, problem: str) -> None:
    error = refused(check_apns_certificate, content(), "", TOPIC, now())
    assert problem in error.problem and error.field == ""
    assert "openssl pkcs12" in error.fix


def test_an_expired_certificate_is_refused() -> None:
    pem = apns_pem(certificate(rsa_key(), valid_days=-1))
    error = refused(check_apns_certificate, pem, APNS_PASSWORD, TOPIC, now())
    assert "expired on" in error.problem


@pytest.mark.parametrize(("days", "warned"), [(29.5, True), (10, True), (31, False)])
def test_a_certificate_expiring_within_30_days_gets_a_warning(days: float, warned: bool) -> None:
    pem = apns_pem(certificate(rsa_key(), valid_days=days))
    info = check_apns_certificate(pem, APNS_PASSWORD, TOPIC, now())
    assert bool(info.warnings) is warned
    if warned:
        (warning,) = info.warnings
        expires = info.not_valid_after
        assert warning == (
            f"the APNs certificate expires on {expires:%Y-%m-%d} "
            f"(in {int(days) - 1 if days == int(days) else int(days)} days): renew it"
        )


def test_the_check_uses_the_given_time() -> None:
    pem = apns_pem(certificate(rsa_key(), valid_days=100))
    later = now() + dt.timedelta(days=101)
    assert "expired" in refused(check_apns_certificate, pem, APNS_PASSWORD, TOPIC, later).problem
    soon = now() + dt.timedelta(days=80)
    assert check_apns_certificate(pem, APNS_PASSWORD, TOPIC, soon).warnings


def test_a_topic_other_than_the_certificate_uid_is_refused_on_the_topic_field() -> None:
    error = refused(check_apns_certificate, apns_pem(), APNS_PASSWORD, "com.example.other", now())
    assert error.field == "topic"
    assert "'com.example.mattermost'" in error.problem
    assert "set topic = 'com.example.mattermost'" in error.fix


def test_certificate_password_is_the_stripped_utf8_text() -> None:
    assert certificate_password(b"  s3cret password \n") == "s3cret password"
    assert certificate_password("pässwörd\n".encode()) == "pässwörd"
    error = refused(certificate_password, b"\xff\xfe")
    assert error.field == "certificate_password_file" and "UTF-8" in error.problem


# --- FCM service account -------------------------------------------------------------------------


def test_a_service_account_is_accepted() -> None:
    account = check_fcm_service_account(fcm_json())
    assert account.project_id == "mmpush-test"
    assert account.client_email == "push@mmpush-test.iam.gserviceaccount.com"


def test_a_pkcs1_rsa_private_key_is_accepted() -> None:
    pkcs1 = private_pem(rsa_key(1), TRADITIONAL).decode()
    assert check_fcm_service_account(fcm_json(private_key=pkcs1)).project_id == "mmpush-test"


def without(name: str) -> bytes:
    document = fcm_document()
    del document[name]
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: b"", "empty"),
        (lambda: b"\xff\xfe{}", "not UTF-8"),
        (lambda: b"{not json", "not JSON (Expecting property name"),
        (lambda: b"[]", "not a JSON object"),
        (lambda: fcm_json(type="authorized_user"), "'authorized_user', not 'service_account'"),
        (lambda: without("type"), "None, not 'service_account'"),
        (lambda: fcm_json(type=["x"]), "None, not 'service_account'"),
        (lambda: without("project_id"), "'project_id' is missing"),
        (lambda: without("client_email"), "'client_email' is missing"),
        (lambda: without("token_uri"), "'token_uri' is missing"),
        (lambda: without("private_key"), "'private_key' is missing"),
        (lambda: fcm_json(project_id=""), "'project_id' is missing or empty"),
        (lambda: fcm_json(client_email=7), "'client_email' is missing"),
        (lambda: fcm_json(private_key="SECRET-MARKER"), "not a PEM RSA private key"),
        (lambda: fcm_json(private_key=private_pem(ec_key()).decode()), "not a PEM RSA"),
        (lambda: fcm_json(private_key=private_pem(rsa_key(1), PKCS8, "pw").decode()), "not a"),
    ],
)
def test_a_bad_service_account_is_refused(content: Any, problem: str) -> None:
    error = refused(check_fcm_service_account, content())
    assert problem in error.problem
    assert "service-account key (JSON)" in error.fix
    assert "SECRET-MARKER" not in str(error)


def test_google_services_json_is_refused() -> None:
    # what the mobile app embeds, often mistaken for the server's key
    google_services = {"project_info": {"project_id": "x"}, "client": []}
    error = refused(check_fcm_service_account, json.dumps(google_services).encode())
    assert "not google-services.json" in error.fix


# --- CA bundle ------------------------------------------------------------------------------------


def test_a_ca_bundle_counts_its_certificates() -> None:
    assert check_ca_bundle(ca_bundle()) == 1
    second = certificate(rsa_key(), uid=None, ca=True).public_bytes(serialization.Encoding.PEM)
    assert check_ca_bundle(b"# comment\n" + ca_bundle() + second) == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not UTF-8"),
        ("é".encode("latin-1"), "not UTF-8"),
        (b"text only\n", "no CERTIFICATE"),
        (None, "no CERTIFICATE"),  # a private key only
        (
            b"-----BEGIN CERTIFICATE-----\n"
            + base64.b64encode(b"\x30\x03\x02\x01\x00")
            + b"\n-----END CERTIFICATE-----\n",
            "certificate 1 of the CA bundle does not parse",
        ),
    ],
)
def test_a_bad_ca_bundle_is_refused(content: bytes | None, problem: str) -> None:
    data = private_pem(rsa_key()) if content is None else content
    assert problem in refused(check_ca_bundle, data).problem


def test_credential_error_text_joins_problem_and_fix() -> None:
    assert str(CredentialError("the file is empty", "download it again")) == (
        "the file is empty; fix: download it again"
    )
    assert str(CredentialError("only a problem")) == "only a problem"


# --- found missing by mutation testing (docs/mutation-testing.md) ---------------------------------

GOOD = b"-----BEGIN GOOD-----\nAQID\n-----END GOOD-----\n"


@pytest.mark.parametrize(
    "text",
    [
        b"\n" + GOOD,  # a block right after a first empty line
        GOOD.replace(b"GOOD-----\nAQID", b"GOOD----- \t\nAQID"),  # blanks after BEGIN's dashes
        GOOD.replace(b"AQID", b"AQ \tID"),  # blanks inside the base64
        GOOD.removesuffix(b"\n"),  # no newline after END
        b"-----BEGIN GOOD-----\nComment: a: b\n\nAQID\n-----END GOOD-----\n",
    ],
)
def test_pem_blocks_reads_what_go_reads(text: bytes) -> None:
    (block,) = pem_blocks(text)
    assert (block.type, block.der) == ("GOOD", b"\x01\x02\x03")


def test_a_pem_header_value_may_hold_a_colon() -> None:
    (block,) = pem_blocks(b"-----BEGIN GOOD-----\nComment: a: b\n\nAQID\n-----END GOOD-----\n")
    assert block.headers == {"Comment": "a: b"}


@pytest.mark.parametrize(
    "broken",
    [
        b"-----BEGIN THING-----\nAAAA\n",  # no END anywhere
        b"-----BEGIN THING-----",  # nothing after BEGIN
        b"-----BEGIN THING-----\x0b\nAAAA\n-----END THING-----\n",  # Go trims only " \t"
        b"-----BEGIN THING-----\nAAAA\n-----END THING-----X\n",  # text right after END
        b"-----BEGIN THING-----\nAQ*ID\n-----END THING-----\n",  # not base64, even in part
    ],
)
def test_a_block_go_would_not_decode_is_not_a_block(broken: bytes) -> None:
    assert pem_blocks(broken) == []
    after = broken + b"\n" + GOOD
    assert [(b.type, b.der) for b in pem_blocks(after)] == [("GOOD", b"\x01\x02\x03")]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x30\x84\x00\x00\x00\x05\x02\x01\x00\x30\x00", "pkcs8"),  # a 4-byte length
        (b"\x30\x81\x05\x02\x01\x00\x04\x00", "sec1"),  # a 1-byte length
        (b"\x30\x85\x00\x00\x00\x00\x05\x02\x01\x00\x30\x00", "unknown"),  # a 5-byte length
        (b"\x30\x80\x02\x01\x00\x30\x00\x00\x00", "unknown"),  # indefinite length (BER)
        (b"\x30\x10\x02\x01\x00\x30\x00", "unknown"),  # longer than the data
        (b"\x30\x05\x02\x01\x00\x05\x00", "unknown"),  # a NULL after the version
    ],
)
def test_der_key_format_reads_der_lengths(data: bytes, expected: str) -> None:
    assert der_key_format(data) == expected


P8_FIX = (
    "download the APNs auth key (.p8) from Apple Developer > Certificates, Identifiers & Profiles "
    "> Keys (an EC P-256 key in PKCS#8 PEM) and point auth_key_file at it"
)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: b"", "the APNs auth key file is empty"),
        (lambda: b"garbage", "the APNs auth key is not a PEM file"),
        (
            lambda: private_pem(rsa_key(), TRADITIONAL),
            "the first PEM block holds an RSA key; an APNs auth key is an ECDSA P-256 key",
        ),
        (
            lambda: private_pem(ed448.Ed448PrivateKey.generate()),
            "the first PEM block holds a Ed448PrivateKey; an APNs auth key is an ECDSA P-256 key",
        ),
        (
            lambda: private_pem(ed25519.Ed25519PrivateKey.generate()),
            "the first PEM block holds an Ed25519 key; an APNs auth key is an ECDSA P-256 key",
        ),
        (
            lambda: private_pem(ec_key(ec.SECP384R1)),
            "the first PEM block holds an EC key on secp384r1; APNs needs P-256 (ES256)",
        ),
        (
            lambda: certificate(ec_key()).public_bytes(serialization.Encoding.PEM),
            "the first PEM block ('CERTIFICATE') is not an unencrypted PKCS#8 private key (the "
            "push proxy reads only the first block of the file)",
        ),
    ],
)
def test_the_auth_key_refusal_is_exact(content: Any, problem: str) -> None:
    assert str(refused(check_apns_auth_key, content())) == f"{problem}; fix: {P8_FIX}"


@pytest.mark.parametrize(
    ("source", "quoted", "out"),
    [
        (None, "AuthKey.p8", "AuthKey-pkcs8.p8"),
        ("env:MMPUSH_P8", "FILE", "AuthKey.p8"),
        ("/s/a b.p8", "'/s/a b.p8'", "AuthKey.p8"),
    ],
)
def test_the_sec1_auth_key_refusal_is_exact(source: str | None, quoted: str, out: str) -> None:
    sec1 = private_pem(ec_key(), TRADITIONAL)
    args = (sec1,) if source is None else (sec1, source)
    assert str(refused(check_apns_auth_key, *args)) == (
        "the first PEM block is a SEC1 'EC PRIVATE KEY', and the push proxy reads only PKCS#8 "
        f"('PRIVATE KEY') keys; fix: openssl pkcs8 -topk8 -nocrypt -in {quoted} -out {out} "
        f"(then point auth_key_file at {out})"
    )


def test_the_password_refusal_is_exact() -> None:
    assert str(refused(certificate_password, b"\xff")) == (
        "the password file is not UTF-8 text; fix: write the password as UTF-8 text on one line"
    )


def pem_fix(source: str) -> str:
    return (
        "put the APNs certificate and its private key in one PEM, e.g. from the .p12 exported "
        "from Keychain: { openssl pkcs12 -in apns.p12 -clcerts -nokeys; openssl pkcs12 -in "
        "apns.p12 -nocerts -nodes | openssl pkey -traditional -aes256; } > "
        f"{source} (add -legacy to both pkcs12 commands for an old .p12)"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: b"", "the APNs certificate file is empty"),
        (lambda: b"x", "the APNs certificate file is not PEM"),
        (lambda: private_pem(rsa_key()), "the PEM holds no CERTIFICATE block"),
        (
            lambda: certificate(rsa_key()).public_bytes(serialization.Encoding.PEM),
            "the PEM holds no private key",
        ),
        (
            lambda: (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                + private_pem(rsa_key())
            ),
            "the first CERTIFICATE block does not parse",
        ),
        (
            lambda: apns_pem(certificate(rsa_key(2)), rsa_key(), password=None),
            "the private key does not belong to the (first) certificate",
        ),
        (
            lambda: apns_pem(certificate(ec_key()), ec_key(), password=None),
            "the 'EC PRIVATE KEY' block is a SEC1 EC key; the push proxy reads PKCS#1 or PKCS#8",
        ),
        (
            lambda: apns_pem(certificate(ec_key()), ec_key(), password=APNS_PASSWORD),
            "the 'EC PRIVATE KEY' block is a SEC1 EC key; the push proxy reads PKCS#1 or PKCS#8",
        ),
    ],
)
@pytest.mark.parametrize("source", [None, "/s/apns.pem"])
def test_the_certificate_pem_refusal_is_exact(
    content: Any, problem: str, source: str | None
) -> None:
    extra = () if source is None else (source,)
    error = refused(check_apns_certificate, content(), APNS_PASSWORD, TOPIC, now(), *extra)
    assert str(error) == f"{problem}; fix: {pem_fix(source or 'apns.pem')}"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("wrong", "the certificate password does not decrypt the private key"),
        ("", "the private key is encrypted and no certificate_password_file is set"),
    ],
)
def test_the_password_refusal_of_a_certificate_is_exact(password: str, problem: str) -> None:
    assert str(refused(check_apns_certificate, apns_pem(), password, TOPIC, now())) == (
        f"{problem}; fix: point certificate_password_file at a file holding the key's password"
    )


def test_the_refusal_of_an_encrypted_pkcs8_key_or_an_unknown_cipher_is_exact() -> None:
    pkcs8 = apns_pem(password=APNS_PASSWORD, form=PKCS8)
    assert str(refused(check_apns_certificate, pkcs8, APNS_PASSWORD, TOPIC, now())) == (
        "the private key is an encrypted PKCS#8 'ENCRYPTED PRIVATE KEY' (OpenSSL 3's default); "
        "the push proxy decrypts only legacy 'Proc-Type: 4,ENCRYPTED' keys; fix: { openssl "
        "x509 -in apns.pem; openssl pkey -in apns.pem -traditional -aes256; } > apns-legacy.pem, "
        "then point certificate_file at apns-legacy.pem"
    )
    blowfish = apns_pem().replace(b"DEK-Info: AES-256-CBC,", b"DEK-Info: BF-CBC,")
    error = refused(check_apns_certificate, blowfish, APNS_PASSWORD, TOPIC, now(), "env:APNS")
    assert str(error) == (
        "the private key is encrypted in a way the push proxy cannot read (DEK-Info cipher "
        "'BF-CBC' is not one of DES-CBC, DES-EDE3-CBC, AES-128-CBC, AES-192-CBC, AES-256-CBC); "
        "fix: { openssl x509 -in FILE; openssl pkey -in FILE -traditional -aes256; } > "
        "apns-legacy.pem, then point certificate_file at apns-legacy.pem"
    )


def test_a_certificate_expiring_right_now_is_refused_exactly() -> None:
    pem = apns_pem(certificate(rsa_key(), valid_days=10))
    expires = check_apns_certificate(pem, APNS_PASSWORD, TOPIC, now()).not_valid_after
    assert str(refused(check_apns_certificate, pem, APNS_PASSWORD, TOPIC, expires)) == (
        f"the APNs certificate expired on {expires:%Y-%m-%d}; fix: create a new APNs certificate "
        "in Apple Developer > Certificates and export it with its key"
    )
    just_before = expires - dt.timedelta(seconds=1)
    assert check_apns_certificate(pem, APNS_PASSWORD, TOPIC, just_before).warnings


def test_the_warning_starts_exactly_30_days_before_expiry() -> None:
    pem = apns_pem(certificate(rsa_key(), valid_days=100))
    expires = check_apns_certificate(pem, APNS_PASSWORD, TOPIC, now()).not_valid_after
    at_30_days = check_apns_certificate(pem, APNS_PASSWORD, TOPIC, expires - dt.timedelta(30))
    assert at_30_days.warnings == (
        f"the APNs certificate expires on {expires:%Y-%m-%d} (in 30 days): renew it",
    )
    before = expires - dt.timedelta(days=30, seconds=1)
    assert check_apns_certificate(pem, APNS_PASSWORD, TOPIC, before).warnings == ()


FCM_FIX = (
    "download a service-account key (JSON) in the Firebase console > Project settings > Service "
    "accounts > Generate new private key (not google-services.json)"
)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b" \n", "the FCM service-account file is empty"),
        (b"\xff", "the service-account file is not UTF-8 text"),
        (b"[]", "the service-account file is not a JSON object"),
        (
            json.dumps({**fcm_document(), "private_key": "x"}).encode(),
            "'private_key' is not a PEM RSA private key (PKCS#8 or PKCS#1)",
        ),
    ],
)
def test_the_service_account_refusal_is_exact(content: bytes, problem: str) -> None:
    assert str(refused(check_fcm_service_account, content)) == f"{problem}; fix: {FCM_FIX}"


CA_FIX = "use a PEM file of CA certificates (-----BEGIN CERTIFICATE----- blocks)"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the CA bundle file is empty"),
        (b"\xff", "the CA bundle is not UTF-8 text"),
        (b"x", "the CA bundle holds no CERTIFICATE block"),
        (
            b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
            "certificate 1 of the CA bundle does not parse",
        ),
    ],
)
def test_the_ca_bundle_refusal_is_exact(content: bytes, problem: str) -> None:
    assert str(refused(check_ca_bundle, content)) == f"{problem}; fix: {CA_FIX}"


def test_the_second_bad_certificate_of_a_ca_bundle_is_named() -> None:
    bad = b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n"
    assert refused(check_ca_bundle, ca_bundle() + bad).problem == (
        "certificate 2 of the CA bundle does not parse"
    )


# --- legacy decryption: its own errors ------------------------------------------------------------

IV = "00112233445566778899AABBCCDDEEFF"


@pytest.mark.parametrize(
    ("dek_info", "data", "message"),
    [
        (
            None,
            b"x" * 16,
            "DEK-Info cipher '' is not one of DES-CBC, DES-EDE3-CBC, AES-128-CBC, AES-192-CBC, "
            "AES-256-CBC",
        ),
        (f"AES-128-CBC,{IV},x", b"x" * 16, "the DEK-Info IV is not hexadecimal"),
        ("AES-128-CBC,0011", b"x" * 16, "the DEK-Info IV has the wrong length"),
        (f"AES-128-CBC,{IV}", b"x" * 15, "invalid padding"),  # not whole blocks: no key fits
        (f"AES-128-CBC,{IV}", b"", "invalid padding"),
    ],
)
def test_decrypt_legacy_pem_says_what_is_wrong(
    dek_info: str | None, data: bytes, message: str
) -> None:
    headers = {} if dek_info is None else {"Proc-Type": "4,ENCRYPTED", "DEK-Info": dek_info}
    with pytest.raises(ValueError) as caught:
        decrypt_legacy_pem(PemBlock("RSA PRIVATE KEY", headers, data), "pw")
    assert str(caught.value) == message


def test_a_block_of_the_wrong_size_is_taken_as_a_wrong_password() -> None:
    pem = apns_pem()
    (_, key_block) = pem_blocks(pem)
    cut = base64.encodebytes(key_block.der[:-1]).replace(b"\n", b"")
    headers = "".join(f"{name}: {value}\n" for name, value in key_block.headers.items())
    broken = (
        certificate(rsa_key()).public_bytes(serialization.Encoding.PEM)
        + b"-----BEGIN RSA PRIVATE KEY-----\n"
        + headers.encode()
        + b"\n"
        + cut
        + b"\n-----END RSA PRIVATE KEY-----\n"
    )
    error = refused(check_apns_certificate, broken, APNS_PASSWORD, TOPIC, now())
    assert error.field == "certificate_password_file"


@needs_openssl
def test_a_one_byte_padding_is_removed() -> None:
    iv = bytes(range(16))
    printed = subprocess.run(
        [
            OPENSSL or "openssl",
            "enc",
            "-aes-128-cbc",
            "-md",
            "md5",
            "-S",
            iv[:8].hex(),
            "-pass",
            "pass:pw",
            "-P",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"^key=([0-9A-F]+)$", printed, re.MULTILINE)
    assert match, printed
    encryptor = Cipher(algorithms.AES(bytes.fromhex(match.group(1))), modes.CBC(iv)).encryptor()
    data = encryptor.update(b"A" * 31 + b"\x01") + encryptor.finalize()
    headers = {"Proc-Type": "4,ENCRYPTED", "DEK-Info": f"AES-128-CBC,{iv.hex()}"}
    assert decrypt_legacy_pem(PemBlock("RSA PRIVATE KEY", headers, data), "pw") == b"A" * 31


# --- found by mutation testing: the fix command must not truncate its input ----------


@needs_openssl
def test_the_sec1_fix_command_keeps_a_key_named_authkey_p8(tmp_path: Path) -> None:
    (tmp_path / "AuthKey.p8").write_bytes(private_pem(ec_key(), TRADITIONAL))
    error = refused(check_apns_auth_key, (tmp_path / "AuthKey.p8").read_bytes(), "AuthKey.p8")
    command = error.fix.split(" (then", 1)[0]
    subprocess.run(command, shell=True, cwd=tmp_path, check=False, capture_output=True)
    out = command.rsplit("-out ", 1)[1]
    assert out != "AuthKey.p8"
    original = refused(check_apns_auth_key, (tmp_path / "AuthKey.p8").read_bytes())
    assert "SEC1" in original.problem  # the input is still there, untouched
    converted = (tmp_path / out).read_bytes()
    assert check_apns_auth_key(converted).private_numbers() == ec_key().private_numbers()
