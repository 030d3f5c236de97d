"""mmpush.certificates.certificate_problem: why a new certificate is needed, or None.

Certificates are made here with ``cryptography`` (self-signed), relative to the real clock;
the CA's ARI lookup (``acme.fetch_ari_window``, network) is replaced in every test."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mmpush import acme, certificates
from mmpush.certificates import certificate_problem, tls_paths
from mmpush.settings import AcmeConfig

DOMAIN = "push.example.com"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
Window = tuple[dt.datetime, dt.datetime]
Answers = list[Window | Exception | None]


def key_sha256(key: ec.EllipticCurvePrivateKey = KEY) -> str:
    """What the host reports for its private key: sha256 of the DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def make_cert(
    names: tuple[str, ...] | None = (DOMAIN,),
    age_days: float = 1,
    lifetime_days: float = 90,
    key: ec.EllipticCurvePrivateKey = KEY,
) -> bytes:
    """A self-signed leaf issued ``age_days`` ago, valid ``lifetime_days``, as PEM."""
    not_before = dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or ("x",))[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=lifetime_days))
    )
    if names is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def expires(pem: bytes) -> str:
    return f"{x509.load_pem_x509_certificate(pem).not_valid_after_utc:%Y-%m-%d}"


def config(renew_days: int | None = None) -> AcmeConfig:
    return AcmeConfig(
        directory_url="https://acme.example.net/directory",
        email=None,
        ca_bundle=None,
        account_key_file=Path("/nonexistent/account.pem"),
        renew_days=renew_days,
    )


@pytest.fixture
def ari(monkeypatch: pytest.MonkeyPatch) -> Answers:
    """What the CA's ARI answers: append a window, None or an exception (raised); the last
    item is the answer, None (no ARI at this CA) by default."""
    answer: Answers = [None]

    def fake_fetch(settings: acme.AcmeSettings, cert_pem: bytes | str) -> Window | None:
        assert settings.directory_url == "https://acme.example.net/directory"
        result = answer[-1]
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr("mmpush.certificates.acme.fetch_ari_window", fake_fetch)
    return answer


def test_no_certificate_yet(ari: Answers) -> None:
    assert certificate_problem(DOMAIN, None, None, config()) == "no certificate yet"
    assert certificate_problem(DOMAIN, None, key_sha256(), config()) == "no certificate yet"
    # a certificate without its private key on the host is no certificate either
    assert certificate_problem(DOMAIN, make_cert(), None, config()) == "no certificate yet"


def test_an_unparsable_certificate_needs_a_new_one(ari: Answers) -> None:
    problem = certificate_problem(DOMAIN, b"not a PEM", key_sha256(), config())
    assert problem == "the installed certificate cannot be parsed"


def test_a_certificate_for_another_name_needs_a_new_one(
    ari: Answers,
) -> None:
    cert = make_cert(names=("other.example.com", "www.example.com"))
    problem = certificate_problem(DOMAIN, cert, key_sha256(), config())
    assert problem == "the installed certificate is for other.example.com, www.example.com"


def test_a_certificate_without_names_needs_a_new_one(
    ari: Answers,
) -> None:
    problem = certificate_problem(DOMAIN, make_cert(names=None), key_sha256(), config())
    assert problem == "the installed certificate is for no name"


def test_a_certificate_for_another_key_needs_a_new_one(
    ari: Answers,
) -> None:
    problem = certificate_problem(DOMAIN, make_cert(), key_sha256(OTHER_KEY), config())
    assert problem == "the installed certificate does not match the host's private key"


def test_a_fresh_certificate_for_the_name_and_key_is_good(
    ari: Answers,
) -> None:
    assert certificate_problem(DOMAIN, make_cert(), key_sha256(), config()) is None


def test_a_fresh_certificate_listing_several_names_is_good(
    ari: Answers,
) -> None:
    cert = make_cert(names=("www.example.com", DOMAIN))
    assert certificate_problem(DOMAIN, cert, key_sha256(), config()) is None


def test_the_leaf_is_checked_when_the_chain_has_an_intermediate(
    ari: Answers,
) -> None:
    chain = make_cert() + make_cert(names=("issuer.example.net",), key=OTHER_KEY)
    assert certificate_problem(DOMAIN, chain, key_sha256(), config()) is None


def test_renewal_is_due_with_less_than_a_third_of_the_lifetime_left(
    ari: Answers,
) -> None:
    cert = make_cert(age_days=70, lifetime_days=90)  # 20 of 90 days left
    problem = certificate_problem(DOMAIN, cert, key_sha256(), config())
    assert problem == f"renewal due (expires {expires(cert)})"


def test_renewal_is_not_due_with_more_than_a_third_left(
    ari: Answers,
) -> None:
    cert = make_cert(age_days=50, lifetime_days=90)  # 40 of 90 days left
    assert certificate_problem(DOMAIN, cert, key_sha256(), config()) is None


def test_an_expired_certificate_is_due(ari: Answers) -> None:
    cert = make_cert(age_days=100, lifetime_days=90)
    problem = certificate_problem(DOMAIN, cert, key_sha256(), config())
    assert problem is not None and problem.startswith("renewal due")


def test_acme_renew_days_forces_an_earlier_renewal(
    ari: Answers,
) -> None:
    cert = make_cert(age_days=10, lifetime_days=90)  # 80 days left: not due by lifetime
    assert certificate_problem(DOMAIN, cert, key_sha256(), config(renew_days=60)) is None
    problem = certificate_problem(DOMAIN, cert, key_sha256(), config(renew_days=85))
    assert problem == f"fewer than 85 days left (expires {expires(cert)})"


def test_an_ari_window_that_has_started_makes_renewal_due(
    ari: Answers,
) -> None:
    now = dt.datetime.now(dt.UTC)
    ari.append((now - dt.timedelta(hours=1), now + dt.timedelta(days=2)))
    problem = certificate_problem(DOMAIN, make_cert(), key_sha256(), config())
    assert problem is not None and problem.startswith("renewal due")


def test_an_ari_window_in_the_future_does_not(ari: Answers) -> None:
    now = dt.datetime.now(dt.UTC)
    ari.append((now + dt.timedelta(days=30), now + dt.timedelta(days=32)))
    assert certificate_problem(DOMAIN, make_cert(), key_sha256(), config()) is None


def test_an_unreachable_ari_falls_back_to_the_lifetime_rule(
    ari: Answers,
) -> None:
    ari.append(acme.AcmeError("renewal information: connection refused"))
    assert certificate_problem(DOMAIN, make_cert(), key_sha256(), config()) is None
    due = make_cert(age_days=70, lifetime_days=90)
    problem = certificate_problem(DOMAIN, due, key_sha256(), config())
    assert problem is not None and problem.startswith("renewal due")


def test_ari_is_not_asked_before_name_and_key_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*args: object) -> None:
        raise AssertionError("ARI must not be asked")

    monkeypatch.setattr(certificates.acme, "fetch_ari_window", no_network)
    assert certificate_problem(DOMAIN, None, None, config()) == "no certificate yet"
    cert = make_cert(names=("other.example.com",))
    assert certificate_problem(DOMAIN, cert, key_sha256(), config()) is not None
    assert certificate_problem(DOMAIN, make_cert(), key_sha256(OTHER_KEY), config()) is not None


def test_tls_paths_are_per_domain() -> None:
    assert tls_paths(DOMAIN) == (
        "/etc/mmpush/tls/push.example.com/privkey.pem",
        "/etc/mmpush/tls/push.example.com/fullchain.pem",
    )
