"""A TLS server's certificate as the Mattermost mobile apps see it: as Android and iOS would,
trusting only the device's CA store and WITHOUT AIA fetching. A browser that is missing an
intermediate downloads it from the leaf's "CA Issuers" URL; the mobile apps do not, so a server
that does not send its intermediate "works in the browser, fails on Android".

    report = check_certificate("push.example.com", 443)
    report.ok                      # False when any finding is an error
    [f.id for f in report.findings]  # e.g. ["incomplete-chain"]
    json.dumps(report.to_dict())

``analyse_chain`` is the pure part (no network): the chain a server sent, the trust anchors, the
name, the time.

    analysis = analyse_chain([leaf, intermediate], [root], "push.example.com", now, days=14)
    analysis.ids  # () when a client trusting only ``root`` accepts the chain
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID

# --- finding ids (stable: scripts and the verify suite match on them) ---------------------

INCOMPLETE_CHAIN = "incomplete-chain"
SELF_SIGNED = "self-signed"
UNTRUSTED_ROOT = "untrusted-root"
CHAIN_REJECTED = "chain-rejected"
NAME_MISMATCH = "name-mismatch"
EXPIRES_SOON = "expires-soon"
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"
OLD_TLS = "old-tls"
OLD_TLS_UNCHECKED = "old-tls-unchecked"
UNREACHABLE = "unreachable"
WRONG_ORDER = "wrong-order"

ERROR, WARNING, INFO = "error", "warning", "info"

#: The checks a report is made of, in the order they are printed, and the findings of each.
CHECKS: dict[str, tuple[str, ...]] = {
    "reachable": (UNREACHABLE,),
    "tls-version": (OLD_TLS, OLD_TLS_UNCHECKED),
    "chain": (INCOMPLETE_CHAIN, SELF_SIGNED, UNTRUSTED_ROOT, CHAIN_REJECTED, WRONG_ORDER),
    "name": (NAME_MISMATCH,),
    "validity": (EXPIRED, NOT_YET_VALID, EXPIRES_SOON),
}

DEFAULT_PORT = 443
DEFAULT_DAYS = 14
DEFAULT_TIMEOUT = 10.0
#: Longest chain a client builds (leaf, intermediates, root), as cryptography's default.
MAX_CHAIN_DEPTH = 8
#: Where distributions keep the system trust store, when OpenSSL's default file is missing.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class CheckError(ValueError):
    """A check that cannot start: a bad target, an unreadable or empty CA bundle."""


@dataclass(frozen=True)
class Finding:
    """One named problem: ``id`` is stable, ``message`` says what and why, with evidence."""

    id: str
    severity: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class CertificateSummary:
    """What a certificate in the sent chain says, for people and JSON.

    CertificateSummary.of(cert).subject  # "CN=push.example.com"
    """

    subject: str
    issuer: str
    not_before: str
    not_after: str
    sans: tuple[str, ...]
    ca: bool
    self_signed: bool
    sha256: str

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateSummary:
        return cls(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            not_before=certificate.not_valid_before_utc.isoformat(),
            not_after=certificate.not_valid_after_utc.isoformat(),
            sans=tuple(subject_alt_names(certificate)),
            ca=is_ca(certificate),
            self_signed=is_self_signed(certificate),
            sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "sans": list(self.sans),
            "ca": self.ca,
            "self_signed": self.self_signed,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class ChainAnalysis:
    """What ``analyse_chain`` concluded: findings, the path a client builds from the sent
    certificates (leaf first) and the trust anchor it ends at (None: no trusted path), and one
    line of evidence per check it made (chain, name, validity)."""

    findings: tuple[Finding, ...]
    path: tuple[x509.Certificate, ...]
    anchor: x509.Certificate | None
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(finding.id for finding in self.findings)


@dataclass
class CertificateReport:
    """The result of ``check_certificate``: ``to_dict()`` is the stable JSON object."""

    target: str
    name: str
    address: str | None
    trust_source: str
    tls_version: str | None = None
    chain: list[CertificateSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: One line of evidence per check that ran (keys of CHECKS).
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(finding.severity == ERROR for finding in self.findings)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(finding.id for finding in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "name": self.name,
            "address": self.address,
            "trust_source": self.trust_source,
            "tls_version": self.tls_version,
            "chain": [entry.to_dict() for entry in self.chain],
            "findings": [finding.to_dict() for finding in self.findings],
            "evidence": dict(self.evidence),
            "ok": self.ok,
        }


# --- certificate facts --------------------------------------------------------------------


def subject_alt_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses of the subjectAltName extension ([] without one)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = list(extension.value.get_values_for_type(x509.DNSName))
    return names + [str(ip) for ip in extension.value.get_values_for_type(x509.IPAddress)]


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name is ``certificate``'s issuer and its key signed it."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(certificate: x509.Certificate) -> bool:
    return issued_by(certificate, certificate)


def ca_issuers_urls(certificate: x509.Certificate) -> list[str]:
    """The AIA "CA Issuers" URLs a browser would fetch a missing issuer from."""
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    return [
        str(entry.access_location.value)
        for entry in access.value
        if entry.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]


def name_matches(pattern: str, name: str) -> bool:
    """A SAN DNS name against a host name, as Android and iOS match them: case-insensitive,
    ``*.`` covers exactly one whole leftmost label and needs two labels after it.

    name_matches("*.example.com", "push.example.com")  # True
    name_matches("*.example.com", "example.com")       # False
    """
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = name.partition(".")
        return bool(label) and "." in pattern[2:] and rest == pattern[2:]
    return pattern == name


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def covers_name(certificate: x509.Certificate, name: str) -> bool:
    """The leaf is valid for ``name``: SANs only (the apps ignore the common name); an IP
    address matches IP SANs only."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    address = _ip(name)
    if address is not None:
        return address in extension.value.get_values_for_type(x509.IPAddress)
    return any(name_matches(n, name) for n in extension.value.get_values_for_type(x509.DNSName))


def _label(certificate: x509.Certificate) -> str:
    """'CN=...' for messages; a certificate with an empty subject by its first SAN."""
    subject = certificate.subject.rfc4514_string()
    if not subject:
        sans = subject_alt_names(certificate)
        subject = f"(empty subject) SAN {sans[0]}" if sans else "(empty subject)"
    return f"'{subject}'"


def _date(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


# --- the analysis ----------------------------------------------------------------------------


def _find_path(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """The path a client builds from ``leaf`` through ``pool`` (the sent certificates) to a
    trust anchor: (path, anchor). Without one: (the longest dead-end path, None)."""
    longest: list[x509.Certificate] = [leaf]

    def walk(path: list[x509.Certificate]) -> x509.Certificate | None:
        nonlocal longest
        current = path[-1]
        anchor = next(
            (a for a in anchors if a.subject == current.issuer and issued_by(current, a)), None
        )
        if anchor is not None:
            longest = path
            return anchor
        if len(path) < MAX_CHAIN_DEPTH:
            for candidate in pool:
                if candidate not in path and issued_by(current, candidate):
                    found = walk([*path, candidate])
                    if found is not None:
                        return found
        if len(path) > len(longest):
            longest = path
        return None

    anchor = walk([leaf])
    return longest, anchor


def _dead_end_finding(
    path: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], trust_source: str
) -> Finding | None:
    """Why no trusted path: the sent chain ends at ``path[-1]`` and nothing trusted signed it."""
    end = path[-1]
    issuer = end.issuer.rfc4514_string()
    if is_self_signed(end):
        if len(path) == 1:
            return None  # the leaf itself: SELF_SIGNED says it
        return Finding(
            UNTRUSTED_ROOT,
            ERROR,
            f"the chain ends at the root {_label(end)}, sent by the server but not in "
            f"{trust_source}: the apps trust only the device's CA store; use a certificate "
            "from a public CA (or install this root on every device and pass --ca-bundle)",
        )
    if any(anchor.subject == end.issuer for anchor in anchors):
        return Finding(
            UNTRUSTED_ROOT,
            ERROR,
            f"{_label(end)} names the issuer '{issuer}', and {trust_source} has a root of that "
            "name, but that root's key did not sign it (another CA with the same name, or a "
            "re-keyed root)",
        )
    if len(path) == 1:
        urls = ca_issuers_urls(end)
        fetch = (
            f"; browsers download it from {', '.join(urls)} (AIA), the mobile apps do not"
            if urls
            else ""
        )
        return Finding(
            INCOMPLETE_CHAIN,
            ERROR,
            f"the server sends {_label(end)} without its issuer '{issuer}', which is not in "
            f"{trust_source} either: send the intermediate with it (fullchain.pem, not "
            f"cert.pem){fetch}. If '{issuer}' is a private root, trust it with --ca-bundle",
        )
    return Finding(
        UNTRUSTED_ROOT,
        ERROR,
        f"the chain the server sends ends at {_label(end)}, issued by '{issuer}', which is not "
        f"in {trust_source}: a private or unknown root (or a second intermediate the server "
        "does not send)",
    )


def _chain_findings(
    sent: Sequence[x509.Certificate],
    path: Sequence[x509.Certificate],
    anchor: x509.Certificate | None,
    anchors: Sequence[x509.Certificate],
    trust_source: str,
) -> list[Finding]:
    """self-signed, incomplete-chain, untrusted-root, wrong-order."""
    leaf = sent[0]
    findings: list[Finding] = []
    if is_self_signed(leaf):
        findings.append(
            Finding(
                SELF_SIGNED,
                ERROR,
                f"the server's certificate {_label(leaf)} is self-signed: the mobile apps "
                "reject it; use a certificate from a public CA (ACME)",
            )
        )
    if anchor is None:
        dead_end = _dead_end_finding(path, anchors, trust_source)
        if dead_end is not None:
            findings.append(dead_end)
    if is_ca(leaf) and any(not is_ca(certificate) for certificate in sent[1:]):
        findings.append(
            Finding(
                WRONG_ORDER,
                ERROR,
                f"the server sends the CA certificate {_label(leaf)} first: clients take the "
                "first certificate as the server's own and reject the chain",
            )
        )
    elif list(path[1:]) != list(sent[1 : len(path)]):
        sent_order = ", ".join(f"{i}: {_label(c)}" for i, c in enumerate(sent))
        wanted = ", ".join(_label(c) for c in path)
        findings.append(
            Finding(
                WRONG_ORDER,
                WARNING,
                f"the chain is sent in the wrong order ({sent_order}); each certificate should "
                f"be followed by its issuer: {wanted}. Android and iOS still accept it, strict "
                "clients may not",
            )
        )
    return findings


def _name_findings(leaf: x509.Certificate, name: str) -> list[Finding]:
    if covers_name(leaf, name):
        return []
    sans = subject_alt_names(leaf)
    if sans:
        found = f"its subjectAltName covers {', '.join(sans)}"
    else:
        found = (
            f"it has no subjectAltName (subject {_label(leaf)}): the apps ignore the common name"
        )
    return [Finding(NAME_MISMATCH, ERROR, f"the certificate is not valid for {name}: {found}")]


def _validity_findings(
    certificates: Sequence[x509.Certificate], now: dt.datetime, days: int
) -> list[Finding]:
    """expired, not-yet-valid, expires-soon for the leaf and the sent intermediates used."""
    findings: list[Finding] = []
    for position, certificate in enumerate(certificates):
        who = "the server's certificate" if position == 0 else "the intermediate"
        starts, ends = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        left = ends - now
        if now > ends:
            message = f"{who} {_label(certificate)} expired on {_date(ends)}"
            findings.append(Finding(EXPIRED, ERROR, message))
        elif now < starts:
            message = f"{who} {_label(certificate)} is not valid before {_date(starts)}"
            findings.append(
                Finding(NOT_YET_VALID, ERROR, f"{message} (check this machine's clock too)")
            )
        elif left < dt.timedelta(days=days):
            findings.append(
                Finding(
                    EXPIRES_SOON,
                    ERROR,
                    f"{who} {_label(certificate)} expires on {_date(ends)}, {left.days} days "
                    f"from now (fewer than {days}): renewal is not happening",
                )
            )
    return findings


def _verifier_rejects(
    sent: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    name: str,
    now: dt.datetime,
) -> str | None:
    """The reason cryptography's WebPKI path validation (sent certificates only, no AIA)
    rejects the chain, or None when it accepts it."""
    if not anchors:
        return "no trust anchors"
    address = _ip(name)
    try:
        subject: verification.Subject = (
            verification.IPAddress(address) if address else verification.DNSName(name)
        )
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(anchors)))
            .time(now)
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .build_server_verifier(subject)
        )
        verifier.verify(sent[0], list(sent[1:]))
    except (verification.VerificationError, ValueError) as error:
        return str(error)
    return None


def _evidence(
    sent: Sequence[x509.Certificate],
    path: Sequence[x509.Certificate],
    anchor: x509.Certificate | None,
    name: str,
    now: dt.datetime,
    trust_source: str,
) -> dict[str, str]:
    """The OK line of each check: the path built, the names matched, the expiry."""
    leaf = path[0]
    chain = " <- ".join(_label(c) for c in path)
    if anchor is not None:
        chain += f" <- root {_label(anchor)} (in {trust_source})"
    ends = leaf.not_valid_after_utc
    return {
        "chain": f"{chain}; built from the {len(sent)} certificate(s) sent, no AIA fetch",
        "name": f"{name} matches the subjectAltName {', '.join(subject_alt_names(leaf))}",
        "validity": f"valid until {_date(ends)} ({(ends - now).days} days left)",
    }


def analyse_chain(
    sent_chain: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    name: str,
    now: dt.datetime,
    days: int = DEFAULT_DAYS,
    trust_source: str = "the trust store",
) -> ChainAnalysis:
    """What a mobile app concludes from the chain a server sent (leaf first, as sent), trusting
    only ``trust_anchors`` and using no certificate that was not sent (no AIA, no cache).

    analysis = analyse_chain([leaf], [root], "push.example.com", dt.datetime.now(dt.UTC))
    analysis.ids  # ("incomplete-chain",) when the leaf's issuer is an intermediate
    """
    if not sent_chain:
        raise CheckError("the server sent no certificate")
    leaf = sent_chain[0]
    path, anchor = _find_path(leaf, sent_chain[1:], trust_anchors)
    findings = _chain_findings(sent_chain, path, anchor, trust_anchors, trust_source)
    findings += _name_findings(leaf, name)
    findings += _validity_findings(path, now, days)
    if not any(finding.severity == ERROR for finding in findings):
        reason = _verifier_rejects(sent_chain, trust_anchors, name, now)
        if reason is not None:
            findings.append(
                Finding(
                    CHAIN_REJECTED,
                    ERROR,
                    f"WebPKI path validation (the rules the mobile platforms apply) rejects "
                    f"the chain: {reason}",
                )
            )
    return ChainAnalysis(
        tuple(findings),
        tuple(path),
        anchor,
        _evidence(sent_chain, path, anchor, name, now, trust_source),
    )


# --- trust anchors ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustAnchors:
    """The roots a client trusts and where they came from (for messages)."""

    certificates: tuple[x509.Certificate, ...]
    source: str


def _certificates_in(data: bytes) -> list[x509.Certificate]:
    """Every PEM certificate in ``data`` that parses (a store may hold a few odd ones)."""
    certificates = []
    with warnings.catch_warnings():  # old roots with non-positive serials still count
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for block in _PEM_BLOCK.findall(data):
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    return certificates


def _system_bundle() -> Path | None:
    paths = ssl.get_default_verify_paths()
    candidates = [paths.cafile, paths.openssl_cafile, *SYSTEM_BUNDLES]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def load_trust_anchors(ca_bundle: str | Path | None = None) -> TrustAnchors:
    """The bundle's certificates, or the system store's (OpenSSL's default file, which
    SSL_CERT_FILE overrides) when ``ca_bundle`` is None.

    load_trust_anchors("/etc/mmpush/ca.pem").source  # "the CA bundle /etc/mmpush/ca.pem"
    """
    if ca_bundle is not None:
        path, source = Path(ca_bundle), f"the CA bundle {ca_bundle}"
    else:
        found = _system_bundle()
        if found is None:
            raise CheckError("no system trust store found; pass --ca-bundle")
        path, source = found, f"the system trust store {found}"
    try:
        certificates = _certificates_in(path.read_bytes())
    except OSError as error:
        raise CheckError(f"cannot read {source}: {error.strerror or error}") from error
    if not certificates:
        raise CheckError(f"{source} holds no PEM certificate")
    return TrustAnchors(tuple(certificates), source)


# --- talking to the server ------------------------------------------------------------------


def parse_target(target: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6]:PORT or an https:// URL (PushNotificationServer) -> (host, port).

    parse_target("push.example.com:8443")          # ("push.example.com", 8443)
    parse_target("https://push.example.com/api")   # ("push.example.com", 443)
    """
    text = target.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() != "https":
            raise CheckError(f"{target}: only https:// URLs have a certificate")
        text = text.split("/", 1)[0]
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\s/\[\]]+)(?::(\d+))?", text)
    if match is None:
        raise CheckError(f"{target}: expected HOST[:PORT]")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4) or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise CheckError(f"{target}: port {port} is out of range")
    return host, port


def _sockaddr_text(sockaddr: tuple[Any, ...]) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Unreachable(Exception):
    """The server could not be reached; ``phase`` is dns, connect or tls."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


def _resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """getaddrinfo's TCP addresses for host:port, as (family, sockaddr)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise Unreachable("dns", f"DNS: cannot resolve {host}: {error}") from error
    return [(info[0], info[4]) for info in infos]


def _describe_os_error(error: OSError, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens there, or a firewall rejects it)"
    return error.strerror or str(error) or type(error).__name__


def _connect(addresses: Sequence[tuple[Any, ...]], timeout: float) -> socket.socket:
    """A TCP connection to the first address that answers."""
    failures = []
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as error:
            sock.close()
            failures.append(f"{_sockaddr_text(sockaddr)} {_describe_os_error(error, timeout)}")
    raise Unreachable("connect", f"TCP connect failed: {'; '.join(failures)}")


def peer_chain(tls: ssl.SSLSocket) -> list[x509.Certificate]:
    """Every certificate the server sent, in its order (not a chain OpenSSL rebuilt)."""
    getter = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    if getter is None:
        getter = tls._sslobj.get_unverified_chain  # type: ignore[union-attr]  # 3.10 to 3.12
    ders = [
        item if isinstance(item, bytes) else item.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        for item in getter() or []
    ]
    if not ders:
        leaf = tls.getpeercert(binary_form=True)
        ders = [leaf] if leaf else []
    try:
        return [x509.load_der_x509_certificate(der) for der in ders]
    except ValueError as error:
        raise Unreachable(
            "tls", f"the server sent a certificate that does not parse: {error}"
        ) from error


def _modern_context() -> ssl.SSLContext:
    """A client like the apps' platforms: TLS 1.2+, verification done by analyse_chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _old_context() -> ssl.SSLContext:
    """A client offering only TLS 1.0 and 1.1 (OpenSSL 3 refuses them at its default security
    level, so lower it: the server, not this client, decides)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@dataclass(frozen=True)
class _Handshake:
    version: str
    chain: list[x509.Certificate]


def _handshake(
    addresses: Sequence[tuple[Any, ...]], name: str, context: ssl.SSLContext, timeout: float
) -> _Handshake:
    """Connect and complete a TLS handshake with SNI ``name``; ssl.SSLError/OSError if not."""
    sock = _connect(addresses, timeout)
    sni = None if _ip(name) else name
    with context.wrap_socket(sock, server_hostname=sni) as tls:
        return _Handshake(tls.version() or "unknown", peer_chain(tls))


def _ssl_reason(error: OSError) -> str:
    reason = getattr(error, "reason", None)
    if reason == "WRONG_VERSION_NUMBER":
        return "the server does not answer TLS on this port (WRONG_VERSION_NUMBER: plain HTTP?)"
    if isinstance(error, ssl.SSLEOFError | ConnectionResetError):
        return f"the server closed the connection during the handshake ({error})"
    return reason or str(error)


@dataclass(frozen=True)
class _OldTls:
    """What a client offering only TLS 1.0/1.1 got: ``accepted`` None means this machine's
    OpenSSL cannot offer them (unknown); ``handshake`` is set when accepted."""

    accepted: bool | None
    detail: str
    handshake: _Handshake | None = None


def _old_tls_probe(addresses: Sequence[tuple[Any, ...]], name: str, timeout: float) -> _OldTls:
    """Does the server accept a client offering only TLS 1.0/1.1?"""
    try:
        context = _old_context()
        handshake = _handshake(addresses, name, context, timeout)
    except ssl.SSLError as error:
        if error.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE"):
            return _OldTls(None, f"this machine's OpenSSL cannot offer them ({error.reason})")
        return _OldTls(False, _ssl_reason(error))
    except (OSError, Unreachable) as error:
        return _OldTls(False, str(error))
    detail = f"negotiated {handshake.version} with a client offering only TLS 1.0/1.1"
    return _OldTls(True, detail, handshake)


def _probe_tls(
    report: CertificateReport, addresses: Sequence[tuple[Any, ...]], timeout: float
) -> list[x509.Certificate]:
    """The TLS version checks; returns the chain the server sent (raises Unreachable)."""
    where = f"{report.address} (SNI {report.name})"
    try:
        handshake = _handshake(addresses, report.name, _modern_context(), timeout)
    except ssl.SSLError as error:
        old = _old_tls_probe(addresses, report.name, timeout)
        if old.handshake is None:
            raise Unreachable(
                "tls", f"TLS handshake with {where} failed: {_ssl_reason(error)}"
            ) from error
        report.findings.append(
            Finding(OLD_TLS, ERROR, f"the server does not speak TLS 1.2 or newer: {old.detail}")
        )
        report.tls_version = old.handshake.version
        return old.handshake.chain
    except OSError as error:
        raise Unreachable(
            "tls", f"TLS handshake with {where} failed: {_describe_tls_os_error(error, timeout)}"
        ) from error
    report.tls_version = handshake.version
    old = _old_tls_probe(addresses, report.name, timeout)
    if old.accepted:
        report.findings.append(
            Finding(OLD_TLS, ERROR, f"the server still accepts old TLS: {old.detail}")
        )
    elif old.accepted is None:
        report.findings.append(
            Finding(OLD_TLS_UNCHECKED, INFO, f"TLS 1.0/1.1 not tested: {old.detail}")
        )
    verdict = "a TLS 1.0/1.1 client is refused" if old.accepted is False else "TLS 1.0/1.1 untested"
    report.evidence["tls-version"] = f"negotiated {handshake.version}; {verdict} ({old.detail})"
    return handshake.chain


def _describe_tls_os_error(error: OSError, timeout: float) -> str:
    if isinstance(error, ConnectionResetError):
        return _ssl_reason(error)
    return _describe_os_error(error, timeout)


def check_certificate(
    host: str,
    port: int = DEFAULT_PORT,
    name: str | None = None,
    ca_bundle: str | Path | None = None,
    days: int = DEFAULT_DAYS,
    timeout: float = DEFAULT_TIMEOUT,
    connect: str | None = None,
    now: dt.datetime | None = None,
) -> CertificateReport:
    """Connect to ``connect`` (or ``host``) on ``port`` with SNI ``name`` (or ``host``) and
    check what the server sends as a mobile app would, trusting ``ca_bundle`` (or the system
    store). Raises CheckError only for a bad bundle; an unreachable server is a finding.

    report = check_certificate("push.example.com", 443, connect="10.0.0.5", days=21)
    """
    name = name or host
    anchors = load_trust_anchors(ca_bundle)
    report = CertificateReport(
        target=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        name=name,
        address=None,
        trust_source=anchors.source,
    )
    try:
        addresses = _resolve(connect or host, port)
        with _connect(addresses, timeout) as sock:
            # Every later connection goes to the address that answered.
            addresses = [(sock.family, sock.getpeername())]
        report.address = _sockaddr_text(addresses[0][1])
        report.evidence["reachable"] = f"TCP connection to {report.address} for {host}"
        sent = _probe_tls(report, addresses, timeout)
    except Unreachable as error:
        report.findings.append(Finding(UNREACHABLE, ERROR, str(error)))
        return report
    report.chain = [CertificateSummary.of(certificate) for certificate in sent]
    if not sent:
        report.findings.append(Finding(UNREACHABLE, ERROR, "the server sent no certificate"))
        return report
    analysis = analyse_chain(
        sent, anchors.certificates, name, now or dt.datetime.now(dt.UTC), days, anchors.source
    )
    report.findings += analysis.findings
    report.evidence.update(analysis.evidence)
    return report
