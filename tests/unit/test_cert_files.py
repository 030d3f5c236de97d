"""mmpush.certs.files: checks for a certificate, chain and key a site brings.

A small PKI (root -> intermediate -> leaf) is made here with ``cryptography``, relative to the
real clock, and written to files; every good and bad case reads those files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mmpush.certs import files
from mmpush.certs.files import PemFile, check_certificate_files, name_matches

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
DOMAIN = "push.corp.test"
PEM = serialization.Encoding.PEM


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    names: tuple[str, ...] = (),
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 90 * DAY,
    basic_constraints: bool = True,
    issuer_name: str | None = None,
) -> x509.Certificate:
    """A certificate for ``key``, signed by ``issuer`` (self-signed when None)."""
    signer_cert, signer_key = issuer if issuer else (None, key)
    if issuer_name is None:
        issuer_name = subject if signer_cert is None else signer_cert.subject.rfc4514_string()[3:]
    signer_public = signer_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public), False
        )
    )
    if ca:
        if basic_constraints:
            builder = builder.add_extension(x509.BasicConstraints(True, None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False
        )
    return builder.sign(signer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(PEM) for cert in certs)


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, encryption)


@dataclass
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    directory: Path

    def write(self, file_name: str, data: bytes) -> Path:
        path = self.directory / file_name
        path.write_bytes(data)
        return path

    def leaf_signed(self, **kwargs: object) -> x509.Certificate:
        """Another leaf for the same key, signed by the intermediate."""
        kwargs.setdefault("names", (DOMAIN,))
        return issue(
            "leaf", self.leaf_key, (self.intermediate, self.intermediate_key), **kwargs
        )  # type: ignore[arg-type]

    def check(
        self,
        cert: bytes | None = None,
        key: bytes | None = None,
        chain: bytes | None = b"default",
        anchors: bytes | None = b"default",
        domain: str = DOMAIN,
    ) -> files.FilesCheck:
        """Write the files (defaults: the good PKI) and check them."""
        cert_path = self.write("push.crt", pem(self.leaf) if cert is None else cert)
        key_path = self.write("push.key", key_pem(self.leaf_key) if key is None else key)
        chain_path = anchors_path = None
        if chain is not None:
            chain_path = self.write(
                "chain.pem", pem(self.intermediate) if chain == b"default" else chain
            )
        if anchors is not None:
            anchors_path = self.write(
                "roots.pem", pem(self.root) if anchors == b"default" else anchors
            )
        return check_certificate_files(domain, cert_path, key_path, chain_path, anchors_path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    root_key, intermediate_key, leaf_key = new_key(), new_key(), new_key()
    root = issue("Corp Root CA", root_key, ca=True, not_after=NOW + 3650 * DAY)
    intermediate = issue(
        "Corp Issuing CA", intermediate_key, (root, root_key), ca=True, not_after=NOW + 1000 * DAY
    )
    leaf = issue("leaf", leaf_key, (intermediate, intermediate_key), names=(DOMAIN,))
    return Pki(root_key, root, intermediate_key, intermediate, leaf_key, leaf, tmp_path)


def chain_of(result: files.FilesCheck) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(result.fullchain_pem.encode())


# --- good files ---------------------------------------------------------------------------------


def test_good_files_give_leaf_then_intermediate_without_root(pki: Pki) -> None:
    result = pki.check()
    assert result.errors == () and result.warnings == ()
    assert result.ok
    assert chain_of(result) == [pki.leaf, pki.intermediate]
    assert result.not_after == pki.leaf.not_valid_after_utc


def test_fullchain_in_one_file_in_any_order_is_put_in_order_and_root_left_out(pki: Pki) -> None:
    result = pki.check(cert=pem(pki.root, pki.intermediate, pki.leaf), chain=None)
    assert result.errors == ()
    assert chain_of(result) == [pki.leaf, pki.intermediate]


def test_key_file_may_also_hold_the_certificate(pki: Pki) -> None:
    result = pki.check(key=pem(pki.leaf) + key_pem(pki.leaf_key))
    assert result.errors == ()


def test_system_store_is_used_when_no_anchors_are_given(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pki.write("system-store.pem", pem(pki.root))
    monkeypatch.setattr(files, "_system_ca_files", lambda: [str(store)])
    result = pki.check(anchors=None)
    assert result.errors == ()
    assert chain_of(result) == [pki.leaf, pki.intermediate]


def test_system_store_without_the_corporate_root_is_an_incomplete_chain(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_key = new_key()
    store = pki.write("system-store.pem", pem(issue("Public Root", other_key, ca=True)))
    monkeypatch.setattr(files, "_system_ca_files", lambda: [str(store)])
    [error] = pki.check(anchors=None).errors
    assert "incomplete" in error
    assert "CN=Corp Root CA" in error
    assert f"system trust store ({store})" in error


def test_no_system_store_is_an_error_asking_for_anchors(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "_system_ca_files", lambda: [str(pki.directory / "none.pem")])
    [error] = pki.check(anchors=None).errors
    assert "no trust anchors" in error


def test_unused_certificate_in_chain_is_left_out_with_a_warning(pki: Pki) -> None:
    stray = issue("Stray CA", new_key(), (pki.root, pki.root_key), ca=True)
    result = pki.check(chain=pem(pki.intermediate, stray))
    assert result.errors == ()
    assert chain_of(result) == [pki.leaf, pki.intermediate]
    [warning] = result.warnings
    assert "CN=Stray CA" in warning and "chain.pem" in warning


# --- key ----------------------------------------------------------------------------------------


def test_key_that_does_not_match_names_both_files(pki: Pki) -> None:
    [error] = pki.check(key=key_pem(new_key())).errors
    assert f"{pki.directory}/push.key does not match the certificate in" in error
    assert f"{pki.directory}/push.crt" in error


def test_encrypted_key_is_refused(pki: Pki) -> None:
    [error] = pki.check(key=key_pem(pki.leaf_key, b"passphrase")).errors
    assert "push.key is an encrypted private key" in error


def test_key_file_without_a_key(pki: Pki) -> None:
    [error] = pki.check(key=pem(pki.leaf)).errors
    assert "push.key is not a PEM private key (its PEM blocks: CERTIFICATE)" in error


def test_broken_key_says_so_without_its_content(pki: Pki) -> None:
    good = key_pem(pki.leaf_key).decode().splitlines()
    broken = "\n".join([good[0], good[1][:-8] + "AAAAAAAA", *good[2:]]).encode() + b"\n"
    [error] = pki.check(key=broken).errors
    assert "push.key: the private key cannot be parsed" in error
    assert good[1][:20] not in error


def test_missing_file_is_named(pki: Pki) -> None:
    result = check_certificate_files(
        DOMAIN, pki.directory / "absent.crt", pki.write("k", key_pem(pki.leaf_key))
    )
    assert result.errors == (f"cannot read {pki.directory}/absent.crt: No such file or directory",)


def test_no_message_or_repr_holds_key_material(pki: Pki) -> None:
    key_lines = key_pem(pki.leaf_key).decode().splitlines()[1:-1]
    results = [
        pki.check(key=key_pem(new_key())),
        pki.check(cert=key_pem(pki.leaf_key)),
        pki.check(key=key_pem(pki.leaf_key, b"pw")),
        pki.check(domain="other.corp.test", chain=None),
    ]
    texts = [message for result in results for message in result.errors + result.warnings]
    assert len(texts) >= 4
    texts.append(repr(PemFile("push.key", key_pem(pki.leaf_key))))
    for line in key_lines:
        assert all(line not in text for text in texts)


# --- chain --------------------------------------------------------------------------------------


def test_missing_intermediate_is_an_incomplete_chain_naming_issuer_and_files(pki: Pki) -> None:
    result = pki.check(chain=None)
    [error] = result.errors
    assert "the chain is incomplete" in error
    assert "'CN=Corp Issuing CA'" in error
    assert "push.crt" in error and "roots.pem" in error
    assert result.fullchain_pem == ""


def test_root_not_among_anchors_is_named(pki: Pki) -> None:
    other_root = issue("Other Root", new_key(), ca=True)
    [error] = pki.check(chain=pem(pki.intermediate, pki.root), anchors=pem(other_root)).errors
    assert "ends at the root 'CN=Corp Root CA' (in " in error
    assert "chain.pem" in error
    assert "not among the trust anchors in" in error


def test_impostor_intermediate_that_did_not_sign_the_leaf(pki: Pki) -> None:
    impostor = issue("Corp Issuing CA", new_key(), (pki.root, pki.root_key), ca=True)
    [error] = pki.check(chain=pem(impostor)).errors
    assert "the chain is broken" in error
    assert "'CN=Corp Issuing CA' (in " in error and "did not sign it" in error


def test_path_validation_rejects_an_intermediate_that_is_not_a_ca(pki: Pki) -> None:
    # Names and signatures chain up, but the intermediate lacks basicConstraints CA=true:
    # cryptography's X.509 path validation (not the signature walk) refuses it.
    not_ca = issue(
        "Corp Issuing CA", pki.intermediate_key, (pki.root, pki.root_key), ca=True,
        basic_constraints=False,
    )  # fmt: skip
    [error] = pki.check(chain=pem(not_ca)).errors
    assert "fails X.509 path validation" in error
    assert "push.crt" in error


def test_chain_longer_than_the_limit(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_CHAIN_DEPTH", 2)
    [error] = pki.check().errors
    assert "longer than 2" in error


# --- name ---------------------------------------------------------------------------------------


def test_wrong_name_names_file_and_both_names(pki: Pki) -> None:
    result = pki.check(domain="mail.corp.test")
    [error] = result.errors
    assert error == (
        f"the certificate in {pki.directory}/push.crt is for push.corp.test,"
        " not for mail.corp.test"
    )


def test_certificate_without_subject_alternative_name(pki: Pki) -> None:
    [error] = pki.check(cert=pem(pki.leaf_signed(names=()))).errors
    assert "has no DNS name in a subjectAltName" in error


def test_wildcard_certificate_covers_one_label(pki: Pki) -> None:
    wildcard = pem(pki.leaf_signed(names=("*.corp.test",)))
    assert pki.check(cert=wildcard).errors == ()
    [error] = pki.check(cert=wildcard, domain="a.push.corp.test").errors
    assert "is for *.corp.test, not for a.push.corp.test" in error


@pytest.mark.parametrize(
    ("pattern", "domain", "matches"),
    [
        ("push.corp.test", "push.corp.test", True),
        ("PUSH.corp.test.", "push.CORP.test", True),
        ("push.corp.test", "corp.test", False),
        ("*.corp.test", "push.corp.test", True),
        ("*.corp.test", "a.push.corp.test", False),
        ("*.corp.test", "corp.test", False),
        ("*.corp.test", ".corp.test", False),
        ("*.push.corp.test", "push.corp.test", False),
        ("p*.corp.test", "push.corp.test", False),
    ],
)
def test_name_matches(pattern: str, domain: str, matches: bool) -> None:
    assert name_matches(pattern, domain) is matches


# --- validity -----------------------------------------------------------------------------------


def test_expired_certificate(pki: Pki) -> None:
    expired = pki.leaf_signed(not_before=NOW - 100 * DAY, not_after=NOW - 2 * DAY)
    result = pki.check(cert=pem(expired))
    [error] = result.errors  # the chain itself is fine: only the expiry is reported
    assert error.startswith(f"the certificate in {pki.directory}/push.crt expired on ")
    assert f"{expired.not_valid_after_utc:%Y-%m-%d}" in error


def test_not_yet_valid_certificate(pki: Pki) -> None:
    future = pki.leaf_signed(not_before=NOW + 2 * DAY, not_after=NOW + 90 * DAY)
    [error] = pki.check(cert=pem(future)).errors
    assert "push.crt is not valid yet" in error


def test_expiring_within_30_days_is_a_warning_not_an_error(pki: Pki) -> None:
    soon = pki.leaf_signed(not_after=NOW + 10 * DAY)
    result = pki.check(cert=pem(soon))
    assert result.ok
    [warning] = result.warnings
    assert "push.crt expires in 9 days" in warning or "push.crt expires in 10 days" in warning
    assert chain_of(result) == [soon, pki.intermediate]


def test_31_days_left_is_no_warning(pki: Pki) -> None:
    assert pki.check(cert=pem(pki.leaf_signed(not_after=NOW + 31 * DAY))).warnings == ()


def test_expired_intermediate_is_named(pki: Pki) -> None:
    old = issue(
        "Corp Issuing CA", pki.intermediate_key, (pki.root, pki.root_key), ca=True,
        not_before=NOW - 400 * DAY, not_after=NOW - DAY,
    )  # fmt: skip
    errors = pki.check(chain=pem(old)).errors
    assert any("'CN=Corp Issuing CA'" in error and "chain.pem" in error for error in errors)


# --- not PEM ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "push.crt is empty"),
        (b"hello, I am a certificate\n", "push.crt is not PEM: it has no '-----BEGIN"),
        (b"\x30\x82\x01\x0a" + bytes(64), "push.crt is not PEM: it looks like DER"),
        (
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
            "push.crt: certificate number 1 cannot be parsed",
        ),
    ],
)
def test_certificate_file_that_is_not_pem(pki: Pki, content: bytes, expected: str) -> None:
    result = pki.check(cert=content)
    [error] = result.errors
    assert expected in error
    assert result.fullchain_pem == ""


def test_key_given_as_certificate(pki: Pki) -> None:
    [error] = pki.check(cert=key_pem(pki.leaf_key)).errors
    assert "push.crt holds no certificate (its PEM blocks: PRIVATE KEY)" in error


def test_chain_file_that_is_not_pem_is_named(pki: Pki) -> None:
    [error] = pki.check(chain=b"garbage").errors
    assert "chain.pem is not PEM" in error


def test_require_raises_with_every_problem(pki: Pki) -> None:
    cert = pki.write("push.crt", pem(pki.leaf))
    key = pki.write("push.key", key_pem(new_key()))
    with pytest.raises(files.CertificateFilesError) as failure:
        files.require_certificate_files("mail.corp.test", cert, key, None, None)
    message = str(failure.value)
    assert "for mail.corp.test cannot be used" in message
    assert "does not match" in message and "not for mail.corp.test" in message
