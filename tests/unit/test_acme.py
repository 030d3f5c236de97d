"""Pure logic of mmpush.acme: renewal rule, PEM/CSR helpers, account keys. No network."""

from __future__ import annotations

import datetime as dt

import josepy as jose
import pytest
from acme import client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mmpush import acme

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")])


def make_cert(
    days: int = 90,
    names: tuple[str, ...] = ("push.example.org",),
    not_before: dt.datetime = START,
    serial: int = 0x87654321,
    key_id: bytes | None = None,
) -> str:
    """A leaf certificate signed by CA_KEY, as PEM text."""
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(CA_KEY.public_key())
    if key_id is not None:
        aki = x509.AuthorityKeyIdentifier(key_id, None, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(CA_NAME)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(aki, False)
        .sign(CA_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_csr(common_name: str | None, sans: tuple[str, ...]) -> bytes:
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), False
        )
    csr = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


# --- renewal_due --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "due"),
    [(0, False), (59, False), (59.9, False), (60.1, True), (75, True), (89, True), (90, True)],
)
def test_renewal_due_when_less_than_a_third_of_lifetime_left(day: float, due: bool) -> None:
    assert acme.renewal_due(make_cert(days=90), START + dt.timedelta(days=day)) is due


def test_renewal_due_scales_with_lifetime() -> None:
    six_days = make_cert(days=6)
    assert not acme.renewal_due(six_days, START + dt.timedelta(days=3.9))
    assert acme.renewal_due(six_days, START + dt.timedelta(days=4.1))


def test_an_ari_window_can_make_renewal_due_earlier_but_never_later() -> None:
    cert = make_cert(days=90)
    early = (START + dt.timedelta(days=10), START + dt.timedelta(days=11))
    assert not acme.renewal_due(cert, START + dt.timedelta(days=9), early)
    assert acme.renewal_due(cert, START + dt.timedelta(days=10), early)
    # a window after the one-third point does not postpone certbot's rule (day 60 of 90)
    late = (START + dt.timedelta(days=70), START + dt.timedelta(days=72))
    assert not acme.renewal_due(cert, START + dt.timedelta(days=59), late)
    assert acme.renewal_due(cert, START + dt.timedelta(days=65), late)


def test_renewal_due_for_expired_certificate_even_with_a_later_window() -> None:
    cert = make_cert(days=90)
    window = (START + dt.timedelta(days=200), START + dt.timedelta(days=201))
    assert acme.renewal_due(cert, START + dt.timedelta(days=91), window)


def test_renewal_due_takes_naive_times_as_utc_and_accepts_bytes_and_fullchains() -> None:
    cert = make_cert(days=90)
    fullchain = (cert + make_cert(names=("intermediate",), days=1000)).encode()
    naive = dt.datetime(2030, 3, 15)  # day 73
    assert acme.renewal_due(fullchain, naive)
    assert not acme.renewal_due(cert, dt.datetime(2030, 1, 2))


# --- PEM and CSR helpers ------------------------------------------------------------------------


def test_split_fullchain_and_not_after() -> None:
    leaf = make_cert(names=("leaf.example.org",))
    chain = make_cert(names=("intermediate",)) + make_cert(names=("root",))
    cert_pem, chain_pem = acme.split_fullchain(leaf + chain)
    assert cert_pem == leaf
    assert chain_pem == chain
    assert acme.split_fullchain(leaf.encode()) == (leaf, "")
    assert acme.certificate_not_after(leaf + chain) == START + dt.timedelta(days=90)


def test_split_fullchain_rejects_text_without_certificates() -> None:
    with pytest.raises(ValueError):
        acme.split_fullchain("not a certificate")


@pytest.mark.parametrize(
    ("common_name", "sans", "expected"),
    [
        ("push.example.org", ("push.example.org", "www.example.org"),
         ["push.example.org", "www.example.org"]),
        ("push.example.org", (), ["push.example.org"]),
        (None, ("a.example.org", "b.example.org"), ["a.example.org", "b.example.org"]),
        ("cn.example.org", ("san.example.org",), ["cn.example.org", "san.example.org"]),
    ],
)  # fmt: skip
def test_csr_domains(common_name: str | None, sans: tuple[str, ...], expected: list[str]) -> None:
    assert acme.csr_domains(make_csr(common_name, sans)) == expected
    assert acme.csr_domains(make_csr(common_name, sans).decode()) == expected


def test_ari_certificate_id_matches_rfc_9773_example() -> None:
    key_id = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    cert = make_cert(serial=0x87654321, key_id=key_id)
    assert acme.ari_certificate_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 0x123456789ABCDEF0123, 2**159 - 1])
def test_ari_certificate_id_agrees_with_the_acme_library(serial: int) -> None:
    cert_pem = make_cert(serial=serial)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert acme.ari_certificate_id(cert_pem) == client._renewal_info_path_component(cert)


def test_fetch_ari_window_does_not_ask_about_expired_certificates() -> None:
    expired = make_cert(days=1, not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    settings = acme.AcmeSettings("https://127.0.0.1:9/dir", timeout=1)
    assert acme.fetch_ari_window(settings, expired) is None


# --- account keys -------------------------------------------------------------------------------


def test_account_key_round_trip_is_ec_p256() -> None:
    key = acme.generate_account_key()
    pem = acme.account_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = acme.load_account_key(pem)
    assert loaded == key
    assert loaded.key.curve.name == "secp256r1"


def test_rsa_account_key_is_accepted() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    loaded = acme.load_account_key(pem)
    assert isinstance(loaded, jose.JWKRSA)
    assert acme.load_account_key(acme.account_key_pem(loaded)) == loaded


def test_bad_account_key_error_does_not_show_the_key() -> None:
    encrypted = CA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(acme.AcmeError) as failure:
        acme.load_account_key(encrypted)
    assert "PRIVATE KEY" not in str(failure.value)
    assert encrypted.decode().splitlines()[1] not in str(failure.value)


def test_invalid_csr_is_an_acme_error_before_any_network() -> None:
    settings = acme.AcmeSettings("https://127.0.0.1:9/dir", timeout=1)
    with pytest.raises(acme.AcmeError, match="not a valid PEM CSR"):
        acme.obtain_certificate(
            settings, acme.generate_account_key(), b"junk", lambda t, k: None, lambda t: None
        )


# --- badNonce retries ---------------------------------------------------------------------------


def bad_nonce() -> messages.Error:
    return messages.Error.with_code("badNonce", detail="JWS has an invalid anti-replay nonce")


def test_post_retries_bad_nonce_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def flaky_post(self: client.ClientNetwork, url: str, obj: object) -> str:
        calls.append(url)
        if len(calls) < acme.BAD_NONCE_ATTEMPTS:
            raise bad_nonce()
        return "response"

    monkeypatch.setattr(client.ClientNetwork, "post", flaky_post)
    network = acme._network(acme.AcmeSettings(), acme.generate_account_key())
    assert network.post("https://ca/order", None) == "response"
    assert len(calls) == acme.BAD_NONCE_ATTEMPTS


def test_post_gives_up_after_bad_nonce_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def always_bad(self: client.ClientNetwork, url: str, obj: object) -> str:
        calls.append(url)
        raise bad_nonce()

    monkeypatch.setattr(client.ClientNetwork, "post", always_bad)
    network = acme._network(acme.AcmeSettings(), acme.generate_account_key())
    with pytest.raises(messages.Error):
        network.post("https://ca/order", None)
    assert len(calls) == acme.BAD_NONCE_ATTEMPTS


def test_post_does_not_retry_other_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def refused(self: client.ClientNetwork, url: str, obj: object) -> str:
        calls.append(url)
        raise messages.Error.with_code("rejectedIdentifier", detail="no")

    monkeypatch.setattr(client.ClientNetwork, "post", refused)
    network = acme._network(acme.AcmeSettings(), acme.generate_account_key())
    with pytest.raises(messages.Error):
        network.post("https://ca/order", None)
    assert calls == ["https://ca/order"]
