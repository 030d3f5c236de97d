"""Pure logic of mmpush.acme: renewal rule, PEM/CSR helpers, account keys. No network."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import josepy as jose
import pytest
import requests
from acme import challenges, client, errors, messages
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


# --- more of the pure logic (mutation testing: scripts/mutate mmpush/acme.py) -------------------


def test_renewal_is_not_due_at_exactly_a_third_left() -> None:
    cert = make_cert(days=90)
    assert acme.renewal_due(cert, START + dt.timedelta(days=60)) is False  # 30 days = 1/3 left
    assert acme.renewal_due(cert, START + dt.timedelta(days=60, seconds=1)) is True


def test_renewal_is_due_at_the_moment_of_expiry_and_at_the_window_start() -> None:
    cert = make_cert(days=90)
    not_after = START + dt.timedelta(days=90)
    # a window that starts after expiry must not hide the expiry itself
    assert acme.renewal_due(cert, not_after, (not_after, not_after + dt.timedelta(days=1)))
    window = (START + dt.timedelta(days=5), START + dt.timedelta(days=6))
    assert acme.renewal_due(cert, window[0], window) is True
    assert acme.renewal_due(cert, window[0] - dt.timedelta(seconds=1), window) is False
    naive = (dt.datetime(2030, 1, 6), dt.datetime(2030, 1, 7))  # taken as UTC
    assert acme.renewal_due(cert, dt.datetime(2030, 1, 6, tzinfo=dt.UTC), naive) is True
    assert acme.renewal_due(cert, dt.datetime(2030, 1, 5, 23, 59, tzinfo=dt.UTC), naive) is False


def test_renewal_due_keeps_aware_times_in_their_zone() -> None:
    cert = make_cert(days=90)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    # 2030-03-02 01:00 +02:00 is 2030-03-01 23:00 UTC: day 59 23:00, not due yet
    assert acme.renewal_due(cert, dt.datetime(2030, 3, 2, 1, 0, tzinfo=plus_two)) is False
    assert acme.renewal_due(cert, dt.datetime(2030, 3, 2, 3, 0, tzinfo=plus_two)) is True


@pytest.mark.parametrize(
    ("curve", "algorithm"),
    [(ec.SECP256R1(), jose.ES256), (ec.SECP384R1(), jose.ES384), (ec.SECP521R1(), jose.ES512)],
)
def test_ec_account_keys_sign_with_their_curve(curve: ec.EllipticCurve, algorithm: object) -> None:
    pem = ec.generate_private_key(curve).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = acme.load_account_key(pem)
    assert isinstance(key, jose.JWKEC)
    assert acme._signing_algorithm(key) is algorithm
    assert acme._network(acme.AcmeSettings(), key).alg is algorithm


def test_rsa_account_keys_sign_with_rs256() -> None:
    key = jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert acme._signing_algorithm(key) is jose.RS256
    assert acme._network(acme.AcmeSettings(), None).alg is jose.RS256


def test_account_keys_of_other_kinds_are_refused() -> None:
    k1 = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(acme.AcmeError) as failure:
        acme.load_account_key(k1)
    assert str(failure.value) == "the ACME account key uses an unsupported curve secp256k1"
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(acme.AcmeError) as failure:
        acme.load_account_key(ed)
    assert str(failure.value) == "the ACME account key must be an EC or RSA key"
    with pytest.raises(acme.AcmeError) as failure:
        acme.load_account_key(b"not a key")
    assert str(failure.value) == "the ACME account key is not an unencrypted PEM private key"


def test_network_settings() -> None:
    key = acme.generate_account_key()
    network = acme._network(acme.AcmeSettings(ca_bundle="/etc/mmpush/ca.pem", timeout=12.2), key)
    assert isinstance(network, acme._BadNonceRetryingNetwork)
    assert network.key is key
    assert network.verify_ssl == "/etc/mmpush/ca.pem"
    assert network.user_agent == acme.USER_AGENT == "mmpush-acme"
    assert network._default_timeout == 13  # whole seconds, rounded up
    default = acme._network(acme.AcmeSettings(timeout=120), key)
    assert default.verify_ssl is True
    assert default._default_timeout == acme.REQUEST_TIMEOUT == 30
    assert acme.BAD_NONCE_ATTEMPTS == 5


def authorization(name: str, *bodies: messages.ChallengeBody) -> messages.AuthorizationResource:
    identifier = messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
    body = messages.Authorization(identifier=identifier, challenges=list(bodies))
    return messages.AuthorizationResource(body=body, uri=f"https://ca.example/authz/{name}")


HTTP01 = messages.ChallengeBody(
    chall=challenges.HTTP01(token=b"h" * 16),
    status=messages.STATUS_INVALID,
    error=messages.Error.with_code("connection", detail="refused"),
)
DNS01 = messages.ChallengeBody(
    chall=challenges.DNS01(token=b"d" * 16), status=messages.STATUS_PENDING
)


def test_http01_challenge_is_found_or_the_offer_is_named() -> None:
    settings = acme.AcmeSettings("https://ca.example/dir")
    assert acme._http01_challenge(settings, authorization("a.example", DNS01, HTTP01)) is HTTP01
    with pytest.raises(acme.AcmeError) as failure:
        acme._http01_challenge(settings, authorization("a.example", DNS01, DNS01))
    assert str(failure.value) == (
        "ACME certificate order for a.example at https://ca.example/dir failed:"
        " the CA offers no http-01 challenge (offered: dns-01, dns-01)"
    )


@pytest.mark.parametrize(
    ("error", "described"),
    [
        (
            errors.ValidationError(
                [authorization("a.example", DNS01, HTTP01), authorization("b.example", HTTP01)]
            ),
            "authorization failed: a.example: http-01 failed: urn:ietf:params:acme:error:"
            "connection :: The server could not connect to the client to verify the domain ::"
            " refused; b.example: http-01 failed: urn:ietf:params:acme:error:connection :: The"
            " server could not connect to the client to verify the domain :: refused",
        ),
        (
            errors.IssuanceError(messages.Error.with_code("badCSR", detail="short key")),
            "the CA refused to issue: urn:ietf:params:acme:error:badCSR :: The CSR is"
            " unacceptable (e.g., due to a short key) :: short key",
        ),
        (errors.TimeoutError(), "the CA did not finish before the deadline"),
        (requests.ConnectionError("refused"), "cannot connect to the CA: refused"),
        (requests.Timeout("slow"), "the CA did not answer in time: slow"),
        (
            messages.Error.with_code("rejectedIdentifier", detail="no"),
            "the CA answered: urn:ietf:params:acme:error:rejectedIdentifier :: The server will"
            " not issue certificates for the identifier :: no",
        ),
        (ValueError("odd"), "ValueError: odd"),
    ],
)
def test_failures_say_what_the_ca_said(error: BaseException, described: str) -> None:
    assert acme._describe(error) == described
    settings = acme.AcmeSettings("https://ca.example/dir", timeout=7.5)
    message = str(acme._failure(settings, ["a.example", "b.example"], "certificate order", error))
    suffix = " (7.5 s)" if isinstance(error, errors.TimeoutError) else ""
    assert message == (
        "ACME certificate order for a.example, b.example at https://ca.example/dir failed: "
        + described
        + suffix
    )


def test_a_failure_without_domains_says_so() -> None:
    settings = acme.AcmeSettings("https://ca.example/dir")
    failure = acme._failure(settings, [], "account registration", ValueError("x"))
    assert isinstance(failure, acme.AcmeError)
    assert str(failure) == (
        "ACME account registration for no domain at https://ca.example/dir failed: ValueError: x"
    )


def test_ari_certificate_id_needs_an_authority_key_id() -> None:
    cert = x509.load_pem_x509_certificate(make_cert().encode())
    without = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + dt.timedelta(days=1))
    )
    with pytest.raises(ValueError, match=r"^the certificate has no authority key identifier$"):
        acme.ari_certificate_id(
            without.sign(CA_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
    no_key_id = without.add_extension(
        x509.AuthorityKeyIdentifier(None, [x509.DNSName("ca")], 7), False
    ).sign(CA_KEY, hashes.SHA256())
    with pytest.raises(ValueError, match=r"^the certificate's authority key identifier has no key"):
        acme.ari_certificate_id(no_key_id.public_bytes(serialization.Encoding.PEM).decode())


def test_small_helpers() -> None:
    assert acme._b64url(b"\xfb\xff") == "-_8"
    assert acme._b64url(b"\x00\x00\x17") == "AAAX"  # only "=" is stripped
    assert acme._b64url(b"") == ""
    assert acme._as_bytes("x") == b"x"
    assert acme._as_bytes(b"y") == b"y"
    assert acme._unique(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    naive = dt.datetime(2030, 1, 1, 12)
    assert acme._as_utc(naive) == dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    aware = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert acme._as_utc(aware) is aware
    no_san = x509.load_pem_x509_certificate(make_cert(names=("x.example",)).encode())
    assert acme._certificate_domains(no_san) == ["x.example"]


def test_certificate_without_san_has_no_domains() -> None:
    cert = x509.load_pem_x509_certificate(make_cert().encode())
    bare = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + dt.timedelta(days=1))
        .sign(CA_KEY, hashes.SHA256())
    )
    assert acme._certificate_domains(bare) == []


class FakeCa(http.server.BaseHTTPRequestHandler):
    """A directory (with or without renewalInfo) and renewal information, on 127.0.0.1."""

    def do_GET(self) -> None:
        server: Any = self.server
        server.asked.append(self.path)
        base = f"http://127.0.0.1:{server.server_port}"
        if self.path == "/dir":
            body: dict[str, Any] = {"newNonce": f"{base}/nonce", "newAccount": f"{base}/acct",
                                    "newOrder": f"{base}/order"}  # fmt: skip
            if server.renewal_info is not None:
                body["renewalInfo"] = base + server.renewal_info
        elif self.path.startswith("/ari/") and server.window == "not json":
            data = b"a window"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        elif self.path.startswith("/ari/") and server.window is not None:
            body = {"suggestedWindow": server.window}
        elif self.path.startswith("/ari/"):
            data = b'{"type": "urn:ietf:params:acme:error:serverInternal", "detail": "down"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_ca() -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeCa)
    server.asked, server.renewal_info = [], "/ari/"
    server.window = {"start": "2030-03-01T00:00:00+02:00", "end": "2030-03-02T00:00:00Z"}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def current_cert() -> str:
    now = dt.datetime.now(dt.UTC)
    return make_cert(days=90, not_before=now - dt.timedelta(days=1), serial=0x1234)


def test_fetch_ari_window_asks_the_renewal_info_url(fake_ca: Any) -> None:
    settings = acme.AcmeSettings(f"http://127.0.0.1:{fake_ca.server_port}/dir", timeout=5)
    cert = current_cert()
    window = acme.fetch_ari_window(settings, cert)
    assert window == (
        dt.datetime(2030, 2, 28, 22, tzinfo=dt.UTC),
        dt.datetime(2030, 3, 2, tzinfo=dt.UTC),
    )
    assert window is not None and window[1].tzinfo is not None
    assert fake_ca.asked == ["/dir", "/ari/" + acme.ari_certificate_id(cert)]  # one "/" only


def test_fetch_ari_window_without_renewal_info_is_none(fake_ca: Any) -> None:
    fake_ca.renewal_info = None
    settings = acme.AcmeSettings(f"http://127.0.0.1:{fake_ca.server_port}/dir", timeout=5)
    assert acme.fetch_ari_window(settings, current_cert().encode()) is None
    assert fake_ca.asked == ["/dir"]


def test_fetch_ari_window_failure_names_the_certificate(fake_ca: Any) -> None:
    fake_ca.window = None  # the CA answers 500
    url = f"http://127.0.0.1:{fake_ca.server_port}/dir"
    with pytest.raises(acme.AcmeError) as failure:
        acme.fetch_ari_window(acme.AcmeSettings(url, timeout=5), current_cert())
    assert str(failure.value).startswith(
        f"ACME renewal information for push.example.org at {url} failed: "
    )


def test_post_passes_keyword_arguments_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def post(self: client.ClientNetwork, url: str, obj: object, **kwargs: Any) -> str:
        seen.append(kwargs)
        return "response"

    monkeypatch.setattr(client.ClientNetwork, "post", post)
    network = acme._network(acme.AcmeSettings(), acme.generate_account_key())
    assert network.post("https://ca/order", None, content_type="application/pem") == "response"
    assert seen == [{"content_type": "application/pem"}]


def test_a_certificate_is_due_at_its_expiry_even_with_no_lifetime() -> None:
    cert = make_cert(days=0)  # not_before == not_after: a third of nothing is nothing
    assert acme.renewal_due(cert, START) is True


class FrozenClock:
    """Stands in for acme.dt: datetime.now() is ``moment``."""

    UTC = dt.UTC
    timedelta = dt.timedelta

    def __init__(self, moment: dt.datetime) -> None:
        clock = self

        class _Datetime:
            @staticmethod
            def now(tz: dt.tzinfo | None = None) -> dt.datetime:
                return clock.moment

        self.moment = moment
        self.datetime = _Datetime


def test_fetch_ari_window_is_none_from_the_moment_of_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert = make_cert(days=90)
    monkeypatch.setattr(acme, "dt", FrozenClock(START + dt.timedelta(days=90)))
    settings = acme.AcmeSettings("http://127.0.0.1:9/dir", timeout=1)  # never asked
    assert acme.fetch_ari_window(settings, cert) is None


@pytest.mark.parametrize(("renewal_info", "asked"), [("/ari/X/", "/ari/X/"), ("/ari", "/ari/")])
def test_fetch_ari_window_joins_the_url_with_one_slash(
    fake_ca: Any, renewal_info: str, asked: str
) -> None:
    fake_ca.renewal_info = renewal_info
    settings = acme.AcmeSettings(f"http://127.0.0.1:{fake_ca.server_port}/dir", timeout=5)
    cert = current_cert()
    assert acme.fetch_ari_window(settings, cert) is not None
    assert fake_ca.asked == ["/dir", asked + acme.ari_certificate_id(cert)]


@pytest.mark.parametrize(
    ("window", "detail"),
    [
        (None, "the CA answered: urn:ietf:params:acme:error:serverInternal"),
        ("not json", "ClientError: Unexpected response Content-Type: text/plain"),
    ],
)
def test_fetch_ari_window_failures_say_what_the_ca_did(
    fake_ca: Any, window: Any, detail: str
) -> None:
    fake_ca.window = window
    url = f"http://127.0.0.1:{fake_ca.server_port}/dir"
    with pytest.raises(acme.AcmeError) as failure:
        acme.fetch_ari_window(acme.AcmeSettings(url, timeout=5), current_cert())
    assert str(failure.value).startswith(
        f"ACME renewal information for push.example.org at {url} failed: {detail}"
    )


DNS01_FAILED = messages.ChallengeBody(
    chall=challenges.DNS01(token=b"e" * 16), status=messages.STATUS_INVALID
)


def test_dns01_challenge_is_found_or_the_offer_is_named() -> None:
    settings = acme.AcmeSettings("https://ca.example/dir")
    assert acme._dns01_challenge(settings, authorization("a.example", HTTP01, DNS01)) is DNS01
    with pytest.raises(acme.AcmeError) as failure:
        acme._dns01_challenge(settings, authorization("b.example", HTTP01, HTTP01))
    assert str(failure.value) == (
        "ACME certificate order for b.example at https://ca.example/dir failed:"
        " the CA offers no dns-01 challenge (offered: http-01, http-01)"
    )


def test_challenge_cleanup_error_carries_what_it_is_given() -> None:
    error = acme.ChallengeCleanupError("m")
    assert (str(error), error.original, error.issued) == ("m", None, None)
    assert isinstance(error, acme.AcmeError)


def test_dns01_records_are_all_removed() -> None:
    removed: list[tuple[str, str]] = []
    records = [("_acme-challenge.a.example", "v1"), ("_acme-challenge.b.example", "v2")]
    settings = acme.AcmeSettings("https://ca.example/dir")
    acme._remove_dns01_records(settings, ["a.example"], lambda n, v: removed.append((n, v)),
                               records, None)  # fmt: skip
    assert removed == records


def flaky_unpublish(removed: list[str]) -> Any:
    def unpublish(name: str, value: str) -> None:
        removed.append(name)
        if name.startswith("_acme-challenge.a"):
            raise OSError(f"cannot remove {value}")

    return unpublish


RECORDS = [
    ("_acme-challenge.a.example", "v1"),
    ("_acme-challenge.b.example", "v2"),
    ("_acme-challenge.a2.example", "v3"),
]
REMOVAL = (
    "the DNS-01 challenge records were not all removed: _acme-challenge.a.example: cannot"
    " remove v1; _acme-challenge.a2.example: cannot remove v3"
)


def test_a_failed_removal_after_issuance_carries_the_certificate() -> None:
    removed: list[str] = []
    issued = object()
    settings = acme.AcmeSettings("https://ca.example/dir")
    with pytest.raises(acme.ChallengeCleanupError) as failure:
        acme._remove_dns01_records(settings, ["a.example", "b.example"],
                                   flaky_unpublish(removed), RECORDS, None, issued)  # type: ignore[arg-type]  # fmt: skip
    assert removed == [name for name, _ in RECORDS]  # every one tried
    assert str(failure.value) == (
        "ACME certificate order for a.example, b.example at https://ca.example/dir: the"
        f" certificate was issued, but {REMOVAL}"
    )
    assert (failure.value.original, failure.value.issued) == (None, issued)


def test_a_failed_removal_after_a_failed_order_keeps_the_order_s_error() -> None:
    order_error = acme.AcmeError("ACME certificate order failed: the CA said no")
    settings = acme.AcmeSettings("https://ca.example/dir")
    with pytest.raises(acme.ChallengeCleanupError) as failure:
        acme._remove_dns01_records(settings, ["a.example"], flaky_unpublish([]), RECORDS,
                                   order_error)  # fmt: skip
    assert str(failure.value) == f"{order_error}; also, {REMOVAL}"
    assert failure.value.original is order_error
    assert failure.value.issued is None
    assert failure.value.__cause__ is order_error


def test_a_failed_removal_after_an_interrupt_is_a_note_on_it() -> None:
    interrupt = KeyboardInterrupt()
    settings = acme.AcmeSettings("https://ca.example/dir")
    acme._remove_dns01_records(settings, ["a.example"], flaky_unpublish([]), RECORDS, interrupt)
    assert interrupt.__notes__ == [REMOVAL]
