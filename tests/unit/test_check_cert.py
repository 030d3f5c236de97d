"""`mmpush check-cert` and mmpush.checks.certificate: a server's certificate as the mobile apps
see it (no AIA fetching, trust anchors only).

``analyse_chain`` is driven with synthetic chains from a throwaway PKI (root, intermediate,
leaf made with cryptography); ``check_certificate`` and the click command talk to real TLS
servers on 127.0.0.1 (Python ssl in a thread) serving that PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from mmpush.checks import certificate as checks
from mmpush.checks.certificate import (
    CertificateReport,
    CheckError,
    analyse_chain,
    check_certificate,
    load_trust_anchors,
    name_matches,
    parse_target,
)
from mmpush.checks.cli import check_cert, render_text

NAME = "push.example.org"
NOW = dt.datetime.now(dt.UTC)
ISSUER_URL = "http://ca.example.org/intermediate.der"
Key = ec.EllipticCurvePrivateKey


# --- a throwaway PKI ------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    key: Key
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    subject: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    ca_flag: bool | None = None,
    sans: Sequence[x509.GeneralName] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    aia: bool = False,
) -> Issued:
    """A certificate for ``subject`` signed by ``issuer`` (None: self-signed). ``ca`` makes a
    CA (root or intermediate); ``ca_flag`` overrides what basicConstraints says."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.cert.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=60))
        .add_extension(
            x509.BasicConstraints(ca=ca if ca_flag is None else ca_flag, path_length=None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(_ca_key_usage(), critical=True)
    else:
        names = [x509.DNSName(NAME)] if sans is None else list(sans)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if aia:
        location = x509.UniformResourceIdentifier(ISSUER_URL)
        access = x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, location)
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), False)
    return Issued(key, builder.sign(signer_key, hashes.SHA256()))


ROOT = issue("Test Root", ca=True)
INTERMEDIATE = issue("Test Intermediate", ROOT, ca=True)
LEAF = issue(NAME, INTERMEDIATE, aia=True)
OTHER_ROOT = issue("Other Root", ca=True)


def analyse(
    sent: Sequence[Issued], anchors: Sequence[Issued] = (ROOT,), **kwargs: object
) -> checks.ChainAnalysis:
    """analyse_chain with certificates of this PKI, NAME, NOW and 14 days by default."""
    arguments: dict[str, object] = {"name": NAME, "now": NOW, "days": 14, **kwargs}
    return analyse_chain(
        [i.cert for i in sent],
        [a.cert for a in anchors],
        **arguments,  # type: ignore[arg-type]
    )


def finding(analysis: checks.ChainAnalysis | CertificateReport, finding_id: str) -> str:
    """The message of the one finding with this id."""
    messages = [f.message for f in analysis.findings if f.id == finding_id]
    assert len(messages) == 1, f"expected one {finding_id}, got {analysis.findings}"
    return messages[0]


# --- analyse_chain: synthetic chains ----------------------------------------------------------


def test_full_chain_to_a_trusted_root_has_no_finding() -> None:
    analysis = analyse([LEAF, INTERMEDIATE])
    assert analysis.findings == ()
    assert analysis.path == (LEAF.cert, INTERMEDIATE.cert)
    assert analysis.anchor == ROOT.cert
    assert "CN=Test Root" in analysis.evidence["chain"]


def test_sent_root_is_fine_when_it_is_the_trusted_one() -> None:
    assert analyse([LEAF, INTERMEDIATE, ROOT]).findings == ()


def test_leaf_only_is_an_incomplete_chain_naming_the_missing_issuer() -> None:
    analysis = analyse([LEAF])
    assert analysis.ids == ("incomplete-chain",)
    message = finding(analysis, "incomplete-chain")
    assert "'CN=Test Intermediate'" in message and ISSUER_URL in message
    assert analysis.anchor is None


def test_leaf_and_root_without_the_intermediate_is_an_incomplete_chain() -> None:
    assert analyse([LEAF, ROOT]).ids == ("incomplete-chain",)


def test_self_signed_leaf() -> None:
    self_signed = issue(NAME)
    analysis = analyse([self_signed])
    assert analysis.ids == ("self-signed",)
    assert f"'CN={NAME}'" in finding(analysis, "self-signed")
    # trusting it does not make it acceptable to the apps
    assert analyse([self_signed], anchors=[self_signed]).ids == ("self-signed",)


def test_sent_root_that_is_not_trusted_is_an_untrusted_root() -> None:
    analysis = analyse([LEAF, INTERMEDIATE, ROOT], anchors=[OTHER_ROOT], trust_source="B")
    assert analysis.ids == ("untrusted-root",)
    assert "'CN=Test Root'" in finding(analysis, "untrusted-root")
    assert "not in B" in finding(analysis, "untrusted-root")


def test_chain_to_a_root_that_is_not_sent_nor_trusted_is_an_untrusted_root() -> None:
    analysis = analyse([LEAF, INTERMEDIATE], anchors=[OTHER_ROOT])
    assert analysis.ids == ("untrusted-root",)
    assert "issued by 'CN=Test Root'" in finding(analysis, "untrusted-root")


def test_trusted_root_with_the_same_name_but_another_key_is_an_untrusted_root() -> None:
    impostor = issue("Test Root", ca=True)
    analysis = analyse([LEAF, INTERMEDIATE], anchors=[impostor])
    assert analysis.ids == ("untrusted-root",)
    assert "key did not sign" in finding(analysis, "untrusted-root")


def test_name_mismatch_lists_the_sans() -> None:
    analysis = analyse([LEAF, INTERMEDIATE], name="mm.example.org")
    assert analysis.ids == ("name-mismatch",)
    message = finding(analysis, "name-mismatch")
    assert "mm.example.org" in message and NAME in message


def test_certificate_without_san_is_a_name_mismatch_even_with_a_matching_cn() -> None:
    no_san = issue(NAME, INTERMEDIATE, sans=[])
    message = finding(analyse([no_san, INTERMEDIATE]), "name-mismatch")
    assert "no subjectAltName" in message and "common name" in message


def test_wildcard_and_ip_names() -> None:
    wildcard = issue("wildcard", INTERMEDIATE, sans=[x509.DNSName("*.example.org")])
    assert analyse([wildcard, INTERMEDIATE]).ids == ()
    assert analyse([wildcard, INTERMEDIATE], name="a.b.example.org").ids == ("name-mismatch",)
    by_ip = issue("ip", INTERMEDIATE, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    assert analyse([by_ip, INTERMEDIATE], name="127.0.0.1").ids == ()
    assert analyse([LEAF, INTERMEDIATE], name="127.0.0.1").ids == ("name-mismatch",)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("push.example.org", "PUSH.example.org", True),
        ("PUSH.example.org", "push.example.org", True),
        ("example.org", "push.example.org", False),
        ("push.example.org.", "push.example.org", True),
        ("*.example.org", "push.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.push.example.org", False),
        ("*.org", "example.org", False),
        ("push.example.org", "mm.example.org", False),
    ],
)
def test_name_matches(pattern: str, name: str, matches: bool) -> None:
    assert name_matches(pattern, name) is matches


def test_expiring_within_the_days_given() -> None:
    soon = issue(NAME, INTERMEDIATE, not_after=NOW + dt.timedelta(days=5, hours=1))
    analysis = analyse([soon, INTERMEDIATE], days=14)
    assert analysis.ids == ("expires-soon",)
    message = finding(analysis, "expires-soon")
    assert f"{soon.cert.not_valid_after_utc:%Y-%m-%d}" in message and "5 days" in message
    assert analyse([soon, INTERMEDIATE], days=5).ids == ()


def test_expired_and_not_yet_valid() -> None:
    expired = issue(
        NAME,
        INTERMEDIATE,
        not_before=NOW - dt.timedelta(days=90),
        not_after=NOW - dt.timedelta(days=2),
    )
    analysis = analyse([expired, INTERMEDIATE])
    assert analysis.ids == ("expired",)
    assert f"{expired.cert.not_valid_after_utc:%Y-%m-%d}" in finding(analysis, "expired")
    future = issue(NAME, INTERMEDIATE, not_before=NOW + dt.timedelta(days=2))
    assert analyse([future, INTERMEDIATE]).ids == ("not-yet-valid",)


def test_expired_intermediate_is_named() -> None:
    old = issue(
        "Old Intermediate",
        ROOT,
        ca=True,
        not_before=NOW - dt.timedelta(days=400),
        not_after=NOW - dt.timedelta(days=1),
    )
    leaf = issue(NAME, old)
    message = finding(analyse([leaf, old]), "expired")
    assert "intermediate 'CN=Old Intermediate'" in message


def test_chain_in_the_wrong_order_is_a_warning_only() -> None:
    upper = issue("Upper Intermediate", ROOT, ca=True)
    lower = issue("Lower Intermediate", upper, ca=True)
    leaf = issue(NAME, lower)
    assert analyse([leaf, lower, upper]).findings == ()
    analysis = analyse([leaf, upper, lower])
    assert analysis.ids == ("wrong-order",)
    assert analysis.findings[0].severity == "warning"
    assert analysis.anchor == ROOT.cert


def test_ca_certificate_sent_first_is_a_wrong_order_error() -> None:
    analysis = analyse([INTERMEDIATE, LEAF])
    wrong = [f for f in analysis.findings if f.id == "wrong-order"]
    assert [f.severity for f in wrong] == ["error"]
    assert "sends the CA certificate 'CN=Test Intermediate' first" in wrong[0].message


def test_what_webpki_rejects_beyond_the_named_checks_is_chain_rejected() -> None:
    not_a_ca = issue("Not A CA", ROOT, ca=True, ca_flag=False)
    leaf = issue(NAME, not_a_ca)
    analysis = analyse([leaf, not_a_ca])
    assert analysis.ids == ("chain-rejected",)


def test_empty_chain_is_refused() -> None:
    with pytest.raises(CheckError):
        analyse_chain([], [ROOT.cert], NAME, NOW)


# --- targets and trust anchors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("push.example.org", ("push.example.org", 443)),
        ("push.example.org:8443", ("push.example.org", 8443)),
        ("[::1]:8443", ("::1", 8443)),
        ("https://push.example.org/api/v1/send_push", ("push.example.org", 443)),
        ("https://push.example.org:8000", ("push.example.org", 8000)),
    ],
)
def test_parse_target(target: str, expected: tuple[str, int]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["", "push.example.org:0", "a:b:c", "http://x.org", "h:70000"])
def test_parse_target_refuses(target: str) -> None:
    with pytest.raises(CheckError):
        parse_target(target)


def pem(*issued: Issued) -> bytes:
    return b"".join(i.cert.public_bytes(serialization.Encoding.PEM) for i in issued)


def test_trust_anchors_from_a_bundle_or_the_system_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"junk\n" + pem(ROOT, OTHER_ROOT))
    anchors = load_trust_anchors(bundle)
    assert anchors.certificates == (ROOT.cert, OTHER_ROOT.cert)
    assert str(bundle) in anchors.source
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert load_trust_anchors(None).certificates == (ROOT.cert, OTHER_ROOT.cert)
    (tmp_path / "empty.pem").write_text("no certificate here\n")
    with pytest.raises(CheckError, match="holds no PEM certificate"):
        load_trust_anchors(tmp_path / "empty.pem")
    with pytest.raises(CheckError, match="cannot read"):
        load_trust_anchors(tmp_path / "missing.pem")


# --- real TLS servers on 127.0.0.1 --------------------------------------------------------------


@dataclass
class TlsServer:
    """A TLS server on 127.0.0.1 in a thread: completes handshakes, then waits for the client to
    close. Without a context it answers ``plain_reply`` (or nothing) and closes. ``sni`` lists
    the server names clients sent."""

    context: ssl.SSLContext | None
    plain_reply: bytes = b""
    port: int = 0
    handshakes: int = 0
    sni: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.context is not None:
            self.context.sni_callback = lambda _sock, name, _context: self.sni.append(name)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # the listener was shut down
            with conn:
                conn.settimeout(5)
                if self.context is None:
                    # not TLS: answer like a plain HTTP server (or just close)
                    if self.plain_reply:
                        conn.recv(4096)
                        conn.sendall(self.plain_reply)
                    continue
                try:
                    with self.context.wrap_socket(conn, server_side=True) as tls:
                        self.handshakes += 1
                        tls.recv(1)
                except OSError:
                    continue

    def stop(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


def server_context(
    directory: Path,
    chain: Sequence[Issued],
    tls_range: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
) -> ssl.SSLContext:
    """A server context sending ``chain`` (first: the leaf whose key it holds), in that order."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chain.pem").write_bytes(pem(*chain))
    (directory / "key.pem").write_bytes(
        chain[0].key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if tls_range is not None:
            context.minimum_version, context.maximum_version = tls_range
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(directory / "chain.pem", directory / "key.pem")
    return context


Serve = Callable[..., TlsServer]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """serve(chain, tls_range=None, plain_reply=b"") -> a running TlsServer (stopped after the
    test); chain None: a server that does not speak TLS."""
    servers: list[TlsServer] = []

    def start(
        chain: Sequence[Issued] | None,
        tls_range: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
        plain_reply: bytes = b"",
    ) -> TlsServer:
        directory = tmp_path / f"server{len(servers)}"
        context = server_context(directory, chain, tls_range) if chain else None
        servers.append(TlsServer(context, plain_reply))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A CA bundle holding only ROOT."""
    path = tmp_path / "roots.pem"
    path.write_bytes(pem(ROOT))
    return path


def check(server: TlsServer, bundle: Path, **kwargs: object) -> CertificateReport:
    """check_certificate of ``server`` as NAME, connecting to 127.0.0.1, trusting ``bundle``."""
    arguments: dict[str, object] = {"connect": "127.0.0.1", "ca_bundle": bundle, "timeout": 5}
    return check_certificate(NAME, server.port, **{**arguments, **kwargs})  # type: ignore[arg-type]


def old_tls_offerable() -> bool:
    """Can this machine's OpenSSL offer TLS 1.1 at all (client side)?"""
    try:
        checks._old_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO()).do_handshake()
    except ssl.SSLWantReadError:
        return True
    except ssl.SSLError:
        return False
    return True


def test_server_sending_the_full_chain_passes(serve: Serve, bundle: Path) -> None:
    server = serve([LEAF, INTERMEDIATE])
    report = check(server, bundle)
    assert report.findings == [] or report.ids == ("old-tls-unchecked",)
    assert report.ok
    assert report.address == f"127.0.0.1:{server.port}"
    assert report.tls_version in ("TLSv1.2", "TLSv1.3")
    assert [entry.subject for entry in report.chain] == [f"CN={NAME}", "CN=Test Intermediate"]
    assert report.chain[0].sans == (NAME,)


def test_sni_is_the_name_or_the_host(serve: Serve, bundle: Path) -> None:
    server = serve([LEAF, INTERMEDIATE])
    check(server, bundle)
    assert set(server.sni) == {NAME}
    server.sni.clear()
    assert "name-mismatch" in check(server, bundle, name="mm.example.org").ids
    assert set(server.sni) == {"mm.example.org"}


def test_server_sending_only_its_leaf_is_an_incomplete_chain(serve: Serve, bundle: Path) -> None:
    report = check(serve([LEAF]), bundle)
    assert "incomplete-chain" in report.ids and not report.ok
    assert "'CN=Test Intermediate'" in finding(report, "incomplete-chain")
    assert len(report.chain) == 1


def test_self_signed_server(serve: Serve, bundle: Path) -> None:
    report = check(serve([issue(NAME)]), bundle)
    assert "self-signed" in report.ids and not report.ok


def test_server_with_an_untrusted_root(serve: Serve, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(pem(OTHER_ROOT))
    report = check(serve([LEAF, INTERMEDIATE, ROOT]), other)
    assert "untrusted-root" in report.ids and not report.ok
    assert str(other) in finding(report, "untrusted-root")


def test_server_for_another_name(serve: Serve, bundle: Path) -> None:
    report = check(serve([LEAF, INTERMEDIATE]), bundle, name="mm.example.org")
    assert "name-mismatch" in report.ids
    assert NAME in finding(report, "name-mismatch")


def test_server_certificate_expiring_within_n_days(serve: Serve, bundle: Path) -> None:
    soon = issue(NAME, INTERMEDIATE, not_after=NOW + dt.timedelta(days=3, hours=1))
    server = serve([soon, INTERMEDIATE])
    assert "expires-soon" in check(server, bundle, days=14).ids
    assert "expires-soon" not in check(server, bundle, days=3).ids


def test_server_with_an_expired_certificate(serve: Serve, bundle: Path) -> None:
    expired = issue(
        NAME,
        INTERMEDIATE,
        not_before=NOW - dt.timedelta(days=30),
        not_after=NOW - dt.timedelta(hours=1),
    )
    assert "expired" in check(serve([expired, INTERMEDIATE]), bundle).ids


def test_server_sending_its_chain_in_the_wrong_order(serve: Serve, bundle: Path) -> None:
    upper = issue("Upper Intermediate", ROOT, ca=True)
    lower = issue("Lower Intermediate", upper, ca=True)
    report = check(serve([issue(NAME, lower), upper, lower]), bundle)
    assert "wrong-order" in report.ids and report.ok


def test_server_speaking_only_tls_1_1(serve: Serve, bundle: Path) -> None:
    if not old_tls_offerable():
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.1; see the stub test below")
    server = serve([LEAF, INTERMEDIATE], (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1))
    report = check(server, bundle)
    assert report.tls_version == "TLSv1.1"
    assert "does not speak TLS 1.2" in finding(report, "old-tls") and not report.ok
    assert len(report.chain) == 2  # the chain is still analysed


def test_server_also_accepting_tls_1_1(serve: Serve, bundle: Path) -> None:
    if not old_tls_offerable():
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.1; see the stub test below")
    server = serve([LEAF, INTERMEDIATE], (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_3))
    report = check(server, bundle)
    assert report.tls_version == "TLSv1.3"
    assert "still accepts old TLS" in finding(report, "old-tls")


def test_old_tls_not_testable_here_is_only_information(
    serve: Serve, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stub: this machine's OpenSSL cannot offer TLS 1.0/1.1 at all."""

    def cannot_offer() -> ssl.SSLContext:
        error = ssl.SSLError(1, "no protocols available")
        error.reason = "NO_PROTOCOLS_AVAILABLE"
        raise error

    monkeypatch.setattr(checks, "_old_context", cannot_offer)
    report = check(serve([LEAF, INTERMEDIATE]), bundle)
    assert report.ids == ("old-tls-unchecked",) and report.ok
    assert report.findings[0].severity == "info"


def test_closed_port_is_unreachable_at_connect(bundle: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    report = check_certificate(NAME, port, connect="127.0.0.1", ca_bundle=bundle, timeout=5)
    assert report.ids == ("unreachable",) and not report.ok
    message = finding(report, "unreachable")
    assert "TCP connect" in message and f"127.0.0.1:{port}" in message and "refused" in message
    assert report.address is None and report.chain == []


def test_unresolvable_name_is_unreachable_at_dns(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stubbed resolver (tests stay on loopback): getaddrinfo fails as for an unknown name."""

    def unknown(host: str, *args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(checks.socket, "getaddrinfo", unknown)
    report = check_certificate("nowhere.invalid", 443, ca_bundle=bundle, timeout=5)
    assert report.ids == ("unreachable",)
    assert "DNS: cannot resolve nowhere.invalid" in finding(report, "unreachable")


def test_server_closing_before_the_handshake_is_unreachable_at_tls(
    serve: Serve, bundle: Path
) -> None:
    server = serve(None)
    report = check(server, bundle)
    assert report.ids == ("unreachable",)
    message = finding(report, "unreachable")
    assert message.startswith(f"TLS handshake with 127.0.0.1:{server.port} (SNI {NAME}) failed")
    assert report.address == f"127.0.0.1:{server.port}"


def test_plain_http_port_is_unreachable_at_tls(serve: Serve, bundle: Path) -> None:
    server = serve(None, plain_reply=b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
    message = finding(check(server, bundle), "unreachable")
    assert message.startswith(f"TLS handshake with 127.0.0.1:{server.port} (SNI {NAME}) failed")
    assert "does not answer TLS" in message


# --- the click command ------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(check_cert, list(args))
    return result.exit_code, result.output


def test_cli_json_shape_and_exit_0(serve: Serve, bundle: Path) -> None:
    server = serve([LEAF, INTERMEDIATE])
    code, output = run(
        f"{NAME}:{server.port}", "--connect", "127.0.0.1", "--ca-bundle", str(bundle), "--json"
    )
    assert code == 0, output
    document = json.loads(output)
    assert set(document) == {
        "target",
        "name",
        "address",
        "trust_source",
        "tls_version",
        "chain",
        "findings",
        "evidence",
        "ok",
    }
    assert document["target"] == f"{NAME}:{server.port}"
    assert document["name"] == NAME
    assert document["trust_source"] == f"the CA bundle {bundle}"
    assert set(document["evidence"]) >= {"chain", "name"}
    assert document["address"] == f"127.0.0.1:{server.port}"
    assert document["ok"] is True
    assert [set(entry) for entry in document["chain"]] == [
        {"subject", "issuer", "not_before", "not_after", "sans", "ca", "self_signed", "sha256"}
    ] * 2
    assert document["chain"][0]["sans"] == [NAME]
    assert all(set(f) == {"id", "severity", "message"} for f in document["findings"])


def test_cli_json_with_a_finding_and_exit_1(serve: Serve, bundle: Path) -> None:
    server = serve([LEAF])
    code, output = run(
        f"{NAME}:{server.port}", "--connect", "127.0.0.1", "--ca-bundle", str(bundle), "--json"
    )
    assert code == 1
    document = json.loads(output)
    assert document["ok"] is False
    assert {"id": "incomplete-chain", "severity": "error"}.items() <= document["findings"][
        0
    ].items()


def test_cli_text_has_one_line_per_check(serve: Serve, bundle: Path) -> None:
    server = serve([LEAF])
    code, output = run(
        f"{NAME}:{server.port}", "--connect", "127.0.0.1", "--ca-bundle", str(bundle)
    )
    assert code == 1
    lines = output.splitlines()
    assert any(line.startswith("FAIL  chain        incomplete-chain: ") for line in lines)
    assert any(line.startswith(f"OK    name         {NAME} matches") for line in lines)
    assert any(line.startswith("OK    validity     valid until") for line in lines)
    assert any(line.startswith("OK    reachable    TCP connection to 127.0.0.1") for line in lines)
    assert lines[-1] == "Result: FAIL (1 error(s))"


def test_render_text_when_unreachable_skips_the_other_checks() -> None:
    report = CertificateReport("x:443", "x", None, "B")
    report.findings.append(checks.Finding("unreachable", "error", "DNS: cannot resolve x"))
    lines = render_text(report)
    assert lines[1] == "FAIL  reachable    unreachable: DNS: cannot resolve x"
    assert all(line.startswith("SKIP") for line in lines[2:6])


@pytest.mark.parametrize(
    "args",
    [
        ["push.example.org:99999"],
        ["http://push.example.org"],
        ["push.example.org", "--days", "-1"],
        ["push.example.org", "--timeout", "0"],
        ["push.example.org", "--ca-bundle", "/nonexistent/bundle.pem"],
        [],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    code, _ = run(*args)
    assert code == 2


def test_cli_bundle_without_certificates_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing\n")
    code, output = run("push.example.org", "--ca-bundle", str(empty))
    assert code == 2 and "holds no PEM certificate" in output
