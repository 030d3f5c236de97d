"""ACME client that runs on the control node, like Ansible's ``acme_certificate``.

The private key of a certificate never leaves its host: the host makes the key and the CSR, the
control node sends the CSR to the CA, and the HTTP-01 tokens are published by a callback the
caller gives (the deploy writes them into NGINX's webroot on the host over SSH).

    settings = AcmeSettings(directory_url=LETSENCRYPT_STAGING, email="ops@example.org")
    account_key = generate_account_key()
    issued = obtain_certificate(settings, account_key, csr_pem, publish, unpublish)
    if renewal_due(issued.cert_pem, datetime.now(UTC), fetch_ari_window(settings, issued.cert_pem)):
        ...

Every failure is raised as `AcmeError`, whose message names the directory URL, the domains and
what the CA said. Private keys are never logged nor put into messages.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import josepy as jose
import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

USER_AGENT = "mmpush-acme"

# How many times a POST is sent again after a badNonce answer. The acme library itself retries
# once per call, so a request is given up after 2 * BAD_NONCE_ATTEMPTS rejected nonces.
BAD_NONCE_ATTEMPTS = 5

# Upper bound of a single HTTP request to the CA, in seconds.
REQUEST_TIMEOUT = 30.0

# What the acme library, josepy and requests raise when talking to a CA goes wrong (the
# callbacks' own exceptions are not among them and pass through unchanged).
_ACME_FAILURES = (errors.Error, jose.errors.Error, requests.RequestException)

_EC_SIGNING_ALGORITHMS = {"secp256r1": jose.ES256, "secp384r1": jose.ES384, "secp521r1": jose.ES512}


class AcmeError(RuntimeError):
    """An ACME step failed; the message names the directory URL, the domains and the CA's answer."""


@dataclass
class AcmeSettings:
    """Where and how to talk to the ACME CA.

    ``ca_bundle`` is a CA bundle file used to check the CA's own TLS certificate (for a private
    CA such as Pebble); it replaces the default trust store for those requests. ``None`` uses the
    default (certifi, or ``REQUESTS_CA_BUNDLE`` when set). ``timeout`` bounds a whole issuance,
    in seconds.

        AcmeSettings()  # Let's Encrypt production
        AcmeSettings("https://127.0.0.1:14000/dir", None, "/etc/mmpush/pebble-ca.pem", 30)
    """

    directory_url: str = LETSENCRYPT_PRODUCTION
    email: str | None = None
    ca_bundle: str | None = None
    timeout: float = 120.0


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the CA issued: PEM text and validity (timezone-aware, UTC).

    issued.fullchain_pem == issued.cert_pem + issued.chain_pem
    """

    fullchain_pem: str
    cert_pem: str
    chain_pem: str
    not_before: dt.datetime
    not_after: dt.datetime


# --- account keys -------------------------------------------------------------------------------


def generate_account_key() -> jose.JWKEC:
    """Make a new ACME account key (EC P-256).

    key = generate_account_key()
    path.write_bytes(account_key_pem(key)); path.chmod(0o600)
    """
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def load_account_key(pem: bytes) -> jose.JWK:
    """Load an account key written by `account_key_pem` (EC or RSA, unencrypted PEM).

    key = load_account_key(Path("acme-account.key").read_bytes())
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise AcmeError("the ACME account key is not an unencrypted PEM private key") from error
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _EC_SIGNING_ALGORITHMS:
            raise AcmeError(f"the ACME account key uses an unsupported curve {key.curve.name}")
        return jose.JWKEC(key=key)
    if isinstance(key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=key)
    raise AcmeError("the ACME account key must be an EC or RSA key")


def account_key_pem(key: jose.JWK) -> bytes:
    """Serialise an account key as unencrypted PKCS#8 PEM (keep the file mode 0600).

    load_account_key(account_key_pem(key)) == key
    """
    return key.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _signing_algorithm(key: jose.JWK) -> jose.JWASignature:
    """The JWS algorithm for an account key: ES256 for P-256, RS256 for RSA."""
    if isinstance(key, jose.JWKEC):
        return _EC_SIGNING_ALGORITHMS[key.key.curve.name]
    return jose.RS256


# --- talking to the CA --------------------------------------------------------------------------


class _BadNonceRetryingNetwork(client.ClientNetwork):
    """ClientNetwork whose POSTs survive several badNonce answers in a row.

    CAs may reject any nonce (Pebble rejects 5% by default); a rejected request was not acted
    on, so sending it again with a fresh nonce is safe.
    """

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        attempt = 1
        while True:
            try:
                return super().post(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt >= BAD_NONCE_ATTEMPTS:
                    raise
                attempt += 1


def _network(settings: AcmeSettings, key: jose.JWK | None) -> client.ClientNetwork:
    """A ClientNetwork for the settings; ``key`` may be None for unauthenticated GETs."""
    return _BadNonceRetryingNetwork(
        key=key,
        alg=_signing_algorithm(key) if key is not None else jose.RS256,
        # requests takes a CA bundle path as well as a bool for `verify`.
        verify_ssl=settings.ca_bundle or True,  # type: ignore[arg-type]
        user_agent=USER_AGENT,
        timeout=math.ceil(min(settings.timeout, REQUEST_TIMEOUT)),
    )


def _describe(error: BaseException) -> str:
    """What went wrong, in the CA's words when it gave any."""
    if isinstance(error, errors.ValidationError):
        problems = []
        for authzr in error.failed_authzrs:
            name = authzr.body.identifier.value
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    problems.append(f"{name}: {challb.chall.typ} failed: {challb.error}")
        return "authorization failed: " + "; ".join(problems)
    if isinstance(error, errors.IssuanceError):
        return f"the CA refused to issue: {error.error}"
    if isinstance(error, errors.TimeoutError):
        return "the CA did not finish before the deadline"
    if isinstance(error, requests.ConnectionError):
        return f"cannot connect to the CA: {error}"
    if isinstance(error, requests.Timeout):
        return f"the CA did not answer in time: {error}"
    if isinstance(error, messages.Error):
        return f"the CA answered: {error}"
    return f"{type(error).__name__}: {error}"


def _failure(
    settings: AcmeSettings, domains: list[str], step: str, error: BaseException
) -> AcmeError:
    """An AcmeError naming the directory URL, the domains, the step and the CA's answer."""
    names = ", ".join(domains) if domains else "no domain"
    detail = _describe(error)
    if isinstance(error, errors.TimeoutError):
        detail += f" ({settings.timeout:g} s)"
    return AcmeError(f"ACME {step} for {names} at {settings.directory_url} failed: {detail}")


def register_account(settings: AcmeSettings, account_key: jose.JWK) -> client.ClientV2:
    """Register the account key with the CA, or find its existing account; return a client.

    Idempotent: a CA answers "account exists" (acme raises ConflictError) for a known key, and
    the existing account is then looked up with onlyReturnExisting. The terms of service are
    agreed to. External account binding is not supported.

        acme_client = register_account(settings, load_account_key(pem))
        acme_client.net.account.uri  # the account URL
    """
    try:
        network = _network(settings, account_key)
        directory = client.ClientV2.get_directory(settings.directory_url, network)
        acme_client = client.ClientV2(directory, network)
        if acme_client.external_account_required():
            raise AcmeError(
                f"the ACME CA at {settings.directory_url} requires external account binding,"
                " which mmpush does not support"
            )
        registration = messages.NewRegistration.from_data(
            email=settings.email, terms_of_service_agreed=True
        )
        try:
            acme_client.new_account(registration)
        except errors.ConflictError as exists:
            known = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
            acme_client.query_registration(known)
    except _ACME_FAILURES as error:
        raise _failure(settings, [], "account registration", error) from error
    return acme_client


def _http01_challenge(
    settings: AcmeSettings, authzr: messages.AuthorizationResource
) -> messages.ChallengeBody:
    """The HTTP-01 challenge of an authorization; AcmeError when the CA offers none."""
    for challb in authzr.body.challenges:
        if isinstance(challb.chall, challenges.HTTP01):
            return challb
    offered = ", ".join(challb.chall.typ for challb in authzr.body.challenges)
    raise AcmeError(
        f"ACME certificate order for {authzr.body.identifier.value} at"
        f" {settings.directory_url} failed: the CA offers no http-01 challenge"
        f" (offered: {offered})"
    )


def obtain_certificate(
    settings: AcmeSettings,
    account_key: jose.JWK,
    csr_pem: bytes,
    publish: Callable[[str, str], None],
    unpublish: Callable[[str], None],
) -> IssuedCertificate:
    """Get a certificate for a CSR, answering HTTP-01 challenges through the callbacks.

    ``publish(token, key_authorization)`` must make
    ``http://<domain>/.well-known/acme-challenge/<token>`` answer ``key_authorization``; it is
    called for every pending authorization before the CA is told to validate.
    ``unpublish(token)`` is then called for every token published (or attempted), on success
    and on failure. Authorizations the CA already holds as valid are not challenged again.
    The whole exchange is bounded by ``settings.timeout`` (plus at most one request timeout).

        def publish(token, key_authorization):
            host.put(f"/var/www/acme/.well-known/acme-challenge/{token}", key_authorization)

        issued = obtain_certificate(settings, account_key, csr_pem, publish, host.remove_token)
        host.put("/etc/ssl/push/fullchain.pem", issued.fullchain_pem)
    """
    try:
        domains = csr_domains(csr_pem)
    except ValueError as error:
        raise AcmeError(f"the CSR for {settings.directory_url} is not a valid PEM CSR") from error
    # The acme library compares deadlines with the naive local datetime.now().
    deadline = dt.datetime.now() + dt.timedelta(seconds=settings.timeout)
    acme_client = register_account(settings, account_key)
    published: list[str] = []
    try:
        order = acme_client.new_order(csr_pem)
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = _http01_challenge(settings, authzr)
            response, key_authorization = challb.response_and_validation(account_key)
            token = challb.chall.encode("token")
            published.append(token)
            publish(token, key_authorization)
            acme_client.answer_challenge(challb, response)
        order = acme_client.poll_and_finalize(order, deadline)
    except _ACME_FAILURES as error:
        raise _failure(settings, domains, "certificate order", error) from error
    finally:
        for token in published:
            unpublish(token)
    try:
        cert_pem, chain_pem = split_fullchain(order.fullchain_pem)
    except ValueError as error:
        raise _failure(settings, domains, "certificate download", error) from error
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return IssuedCertificate(
        fullchain_pem=cert_pem + chain_pem,
        cert_pem=cert_pem,
        chain_pem=chain_pem,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


# --- DNS-01 -------------------------------------------------------------------------------------


class ChallengeCleanupError(AcmeError):
    """Some DNS-01 challenge records could not be removed after an order.

    ``original`` is the error the order failed with (None when it succeeded) and its text is
    part of this message; ``issued`` is the certificate when the CA issued one anyway, so that
    a caller may still install it.
    """

    def __init__(
        self,
        message: str,
        original: BaseException | None = None,
        issued: IssuedCertificate | None = None,
    ) -> None:
        super().__init__(message)
        self.original = original
        self.issued = issued


def _dns01_challenge(
    settings: AcmeSettings, authzr: messages.AuthorizationResource
) -> messages.ChallengeBody:
    """The DNS-01 challenge of an authorization; AcmeError when the CA offers none."""
    for challb in authzr.body.challenges:
        if isinstance(challb.chall, challenges.DNS01):
            return challb
    offered = ", ".join(challb.chall.typ for challb in authzr.body.challenges)
    raise AcmeError(
        f"ACME certificate order for {authzr.body.identifier.value} at"
        f" {settings.directory_url} failed: the CA offers no dns-01 challenge"
        f" (offered: {offered})"
    )


def obtain_certificate_dns01(
    settings: AcmeSettings,
    account_key: jose.JWK,
    csr_pem: bytes,
    publish: Callable[[str, str], None],
    unpublish: Callable[[str, str], None],
) -> IssuedCertificate:
    """Get a certificate for a CSR, answering DNS-01 challenges through the callbacks.

    ``publish(name, value)`` must make TXT ``name`` (``_acme-challenge.<domain>``; the base
    name for a wildcard) answer ``value`` on every authoritative server of the zone before it
    returns; it is called for every pending authorization, and only then is the CA told to
    validate. ``unpublish(name, value)`` is then called for every record published (or
    attempted), on success and on failure. The private key never leaves its host: only the
    CSR is sent. ``settings.timeout`` bounds the exchange once the records are published (the
    publisher bounds its own wait).

    Errors: AcmeError for the CA's failures; an exception of ``publish`` passes unchanged.
    When a removal fails, ChallengeCleanupError is raised instead, naming the records and
    carrying the order's own error (``original``, in its message too) or, when the CA issued
    the certificate anyway, the certificate (``issued``).

        publisher = dns01.Dns01Publisher(updater)
        issued = obtain_certificate_dns01(settings, account_key, csr_pem,
                                          publisher.publish, publisher.unpublish)
    """
    try:
        domains = csr_domains(csr_pem)
    except ValueError as error:
        raise AcmeError(f"the CSR for {settings.directory_url} is not a valid PEM CSR") from error
    acme_client = register_account(settings, account_key)
    published: list[tuple[str, str]] = []
    try:
        order = acme_client.new_order(csr_pem)
        answers = []
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = _dns01_challenge(settings, authzr)
            response, value = challb.response_and_validation(account_key)
            name = challb.chall.validation_domain_name(authzr.body.identifier.value)
            published.append((name, value))
            publish(name, value)
            answers.append((challb, response))
        # The acme library compares deadlines with the naive local datetime.now().
        deadline = dt.datetime.now() + dt.timedelta(seconds=settings.timeout)
        for challb, response in answers:
            acme_client.answer_challenge(challb, response)
        order = acme_client.poll_and_finalize(order, deadline)
    except _ACME_FAILURES as error:
        failure = _failure(settings, domains, "certificate order", error)
        _remove_dns01_records(settings, domains, unpublish, published, failure)
        raise failure from error
    except BaseException as error:
        _remove_dns01_records(settings, domains, unpublish, published, error)
        raise
    try:
        cert_pem, chain_pem = split_fullchain(order.fullchain_pem)
    except ValueError as error:
        failure = _failure(settings, domains, "certificate download", error)
        _remove_dns01_records(settings, domains, unpublish, published, failure)
        raise failure from error
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    issued = IssuedCertificate(
        fullchain_pem=cert_pem + chain_pem,
        cert_pem=cert_pem,
        chain_pem=chain_pem,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    _remove_dns01_records(settings, domains, unpublish, published, None, issued)
    return issued


def _remove_dns01_records(
    settings: AcmeSettings,
    domains: list[str],
    unpublish: Callable[[str, str], None],
    records: list[tuple[str, str]],
    original: BaseException | None,
    issued: IssuedCertificate | None = None,
) -> None:
    """Call ``unpublish`` for every record, each even when an earlier one fails; raise
    ChallengeCleanupError naming the ones that failed, with ``original``'s text in it."""
    failed = []
    for name, value in records:
        try:
            unpublish(name, value)
        except Exception as error:
            failed.append(f"{name}: {error}")
    if not failed:
        return
    removal = "the DNS-01 challenge records were not all removed: " + "; ".join(failed)
    if original is not None and not isinstance(original, Exception):
        original.add_note(removal)  # KeyboardInterrupt and the like stay what they are
        return
    if original is None:
        names = ", ".join(domains)
        message = (
            f"ACME certificate order for {names} at {settings.directory_url}: the certificate"
            f" was issued, but {removal}"
        )
    else:
        message = f"{original}; also, {removal}"
    raise ChallengeCleanupError(message, original, issued) from original


# --- renewal ------------------------------------------------------------------------------------


def renewal_due(
    cert_pem: bytes | str,
    now: dt.datetime,
    ari_window: tuple[dt.datetime, dt.datetime] | None = None,
) -> bool:
    """Whether a certificate should be renewed at ``now``.

    Due when less than a third of its lifetime is left (certbot's rule), or earlier when the
    CA's ARI window (see `fetch_ari_window`) has started. An expired certificate is always due.
    Naive datetimes are taken as UTC.

        renewal_due(pem, datetime.now(UTC))                       # 90-day cert: from day 60
        renewal_due(pem, datetime.now(UTC), fetch_ari_window(settings, pem))
    """
    cert = _first_certificate(cert_pem)
    now = _as_utc(now)
    not_after = cert.not_valid_after_utc
    if now >= not_after:
        return True
    if ari_window is not None and now >= _as_utc(ari_window[0]):
        return True
    lifetime = not_after - cert.not_valid_before_utc
    return not_after - now < lifetime / 3


def fetch_ari_window(
    settings: AcmeSettings, cert_pem: bytes | str
) -> tuple[dt.datetime, dt.datetime] | None:
    """The CA's suggested renewal window (ACME Renewal Information, RFC 9773) for a certificate.

    Returns ``(start, end)`` (timezone-aware), or None when the CA's directory has no
    ``renewalInfo`` or the certificate has expired (ARI must not be asked then). Raises
    AcmeError when the CA cannot be reached or refuses; callers may then fall back to
    ``renewal_due`` without a window.

        window = fetch_ari_window(settings, Path("cert.pem").read_bytes())
    """
    cert = _first_certificate(cert_pem)
    domains = _certificate_domains(cert)
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        return None
    try:
        network = _network(settings, None)
        directory = client.ClientV2.get_directory(settings.directory_url, network)
        try:
            base_url = directory["renewalInfo"]
        except KeyError:
            return None
        url = base_url.rstrip("/") + "/" + ari_certificate_id(cert_pem)
        response = network.get(url, content_type=client.ClientNetwork.JSON_CONTENT_TYPE)
        window = messages.RenewalInfo.from_json(response.json()).suggested_window
    except _ACME_FAILURES as error:
        raise _failure(settings, domains, "renewal information", error) from error
    return _as_utc(window.start), _as_utc(window.end)


# --- pure helpers -------------------------------------------------------------------------------


def ari_certificate_id(cert_pem: bytes | str) -> str:
    """The ARI CertID of a certificate: base64url(authority key id) "." base64url(serial).

    ari_certificate_id(pem)  # "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    """
    cert = _first_certificate(cert_pem)
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as error:
        raise ValueError("the certificate has no authority key identifier") from error
    if aki.key_identifier is None:
        raise ValueError("the certificate's authority key identifier has no key id")
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes)}"


def csr_domains(csr_pem: bytes | str) -> list[str]:
    """The DNS names a CSR asks for: its common name (if any) first, then its SAN names.

    csr_domains(csr_pem)  # ["push.example.org", "www.push.example.org"]
    """
    csr = x509.load_pem_x509_csr(_as_bytes(csr_pem))
    names = [attr.value for attr in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    return _unique([str(name) for name in names])


def certificate_not_after(cert_pem: bytes | str) -> dt.datetime:
    """When a certificate (the first one of a PEM bundle) expires, timezone-aware UTC.

    certificate_not_after(Path("fullchain.pem").read_bytes()) - datetime.now(UTC)
    """
    return _first_certificate(cert_pem).not_valid_after_utc


def split_fullchain(fullchain_pem: bytes | str) -> tuple[str, str]:
    """Split a PEM full chain into the leaf certificate and the rest of the chain.

    cert_pem, chain_pem = split_fullchain(fullchain)  # chain_pem is "" for a lone cert
    """
    certs = x509.load_pem_x509_certificates(_as_bytes(fullchain_pem))
    pems = [cert.public_bytes(serialization.Encoding.PEM).decode() for cert in certs]
    return pems[0], "".join(pems[1:])


def _first_certificate(cert_pem: bytes | str) -> x509.Certificate:
    """The first certificate of a PEM text (a leaf cert or a full chain)."""
    return x509.load_pem_x509_certificates(_as_bytes(cert_pem))[0]


def _certificate_domains(cert: x509.Certificate) -> list[str]:
    """The DNS names of a certificate's SAN extension."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem


def _as_utc(moment: dt.datetime) -> dt.datetime:
    """A timezone-aware datetime; naive ones are taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unique(names: list[str]) -> list[str]:
    """Names in their first order, without repeats."""
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen
