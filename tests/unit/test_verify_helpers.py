"""The verify suite's helpers (tests/verify/tls.py and hostcheck.py), without a lab.

The TLS checks are run against fake fronts and a real TLS server on 127.0.0.1 made with the
lab's CA builder; the on-host front and the host helpers against a fake testinfra host that
records the commands and answers with canned output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mmpush.lab.ca import new_ca, new_server_certificate
from tests.verify import hostcheck, tls
from tests.verify.tls import Handshake, OldTls, Reply

PUSH_NAME = "push.example.org"
CA_KEY, CA_CERT = new_ca("verify helpers test CA", days=2)
OTHER_CA_KEY, OTHER_CA_CERT = new_ca("some other CA", days=2)
Failed = pytest.fail.Exception
Skipped = pytest.skip.Exception


def certificate(names: list[str] | None = None, days: int = 30) -> x509.Certificate:
    """A server certificate from CA_CERT for ``names`` (none: no SAN DNS name at all)."""
    if names is None:
        _, cert = new_server_certificate(CA_KEY, CA_CERT, ["placeholder"], days=days)
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(cert.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(cert.not_valid_before_utc)
            .not_valid_after(cert.not_valid_after_utc)
        )
        return builder.sign(CA_KEY, cert.signature_hash_algorithm)
    return new_server_certificate(CA_KEY, CA_CERT, names, days=days)[1]


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --- name_matches, san_dns_names, port_suffix ------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("push.example.org", "push.example.org", True),
        ("Push.Example.ORG", "push.example.org", True),
        ("push.example.org", "PUSH.example.org", True),
        ("push.example.org", "other.example.org", False),
        ("push.example.org", "push.example.org.evil.test", False),
        ("push.example.org", "example.org", False),
        ("*.example.org", "push.example.org", True),
        ("*.EXAMPLE.org", "Push.example.ORG", True),
        ("*.example.org", "a.push.example.org", False),  # one label only
        ("*.example.org", "example.org", False),
        ("*.example.org", ".example.org", False),  # not an empty label either
        ("*.example.org", "pushexample.org", False),
        ("*.example.org", "push.example.net", False),
        ("*.example.org", "*.example.org", True),
        ("*example.org", "push.example.org", False),  # not a wildcard label: literal
        ("x*.example.org", "xy.example.org", False),
    ],
)
def test_name_matches(pattern: str, name: str, matches: bool) -> None:
    assert tls.name_matches(pattern, name) is matches


def test_san_dns_names() -> None:
    cert = new_server_certificate(CA_KEY, CA_CERT, ["a.example.org", "b.example.org"], ["10.0.0.1"])
    assert tls.san_dns_names(cert[1]) == ["a.example.org", "b.example.org"]
    assert tls.san_dns_names(certificate(None)) == []


@pytest.mark.parametrize(
    ("port", "suffix"), [(443, ""), (8443, ":8443"), (444, ":444"), (80, ":80")]
)
def test_port_suffix(port: int, suffix: str) -> None:
    assert tls.port_suffix(port) == suffix


# --- the TLS checks, on fake fronts ------------------------------------------------------------


@dataclass
class FakeFront:
    """A TlsFront that answers with what it was given."""

    cert: x509.Certificate = field(default_factory=lambda: certificate([PUSH_NAME]))
    protocol: str = "TLSv1.3"
    tls11: OldTls = field(default_factory=lambda: OldTls(False, "no protocols available"))
    reply: Reply = field(default_factory=lambda: Reply(200, {}, ""))
    where: str = "from a fake to 192.0.2.1:443 as push.example.org"
    requests: list[tuple[str, str, bytes | None]] = field(default_factory=list)

    def handshake(self) -> Handshake:
        return Handshake(self.protocol, self.cert)

    def offer_tls11(self) -> OldTls:
        return self.tls11

    def https(self, method: str, path: str, body: bytes | None = None) -> Reply:
        self.requests.append((method, path, body))
        return self.reply


def test_trusted_for_passes_for_the_name_and_wildcards() -> None:
    tls.assert_trusted_for(FakeFront(), PUSH_NAME)
    tls.assert_trusted_for(FakeFront(), "PUSH.example.org")
    tls.assert_trusted_for(FakeFront(certificate(["other.example.org", PUSH_NAME])), PUSH_NAME)
    tls.assert_trusted_for(FakeFront(certificate(["*.example.org"])), PUSH_NAME)


def test_trusted_for_fails_for_another_name() -> None:
    """The planted bug "the certificate-name check always passes" dies here."""
    front = FakeFront(certificate(["other.example.org", "*.push.example.org"]))
    with pytest.raises(AssertionError) as failure:
        tls.assert_trusted_for(front, PUSH_NAME)
    assert str(failure.value).startswith(
        "the certificate from a fake to 192.0.2.1:443 as push.example.org is for"
        " ['other.example.org', '*.push.example.org'], not push.example.org"
    )
    with pytest.raises(AssertionError, match=r"^the certificate .* is for no DNS name, not push"):
        tls.assert_trusted_for(FakeFront(certificate(None)), PUSH_NAME)


def test_not_expiring() -> None:
    tls.assert_not_expiring(FakeFront(certificate([PUSH_NAME], days=tls.MIN_DAYS_LEFT + 1)), "n")
    soon = certificate([PUSH_NAME], days=tls.MIN_DAYS_LEFT - 1)
    with pytest.raises(AssertionError) as failure:
        tls.assert_not_expiring(FakeFront(soon), PUSH_NAME)
    expires = soon.not_valid_after_utc
    assert str(failure.value).startswith(
        f"the certificate for {PUSH_NAME} expires {expires:%Y-%m-%d %H:%M} UTC"
        f" ({tls.MIN_DAYS_LEFT - 2} days left): renewal is not happening"
    )


def test_not_expiring_boundary_is_min_days_left() -> None:
    assert tls.MIN_DAYS_LEFT == 14
    exact = dt.timedelta(days=tls.MIN_DAYS_LEFT, minutes=-1)
    cert = new_server_certificate(CA_KEY, CA_CERT, [PUSH_NAME], days=tls.MIN_DAYS_LEFT)[1]
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > exact
    with pytest.raises(AssertionError):
        tls.assert_not_expiring(FakeFront(cert), PUSH_NAME)


@pytest.mark.parametrize(
    ("protocol", "modern"),
    [("TLSv1.3", True), ("TLSv1.2", True), ("TLSv1.1", False), ("TLSv1", False)],
)
def test_modern_tls(protocol: str, modern: bool) -> None:
    front = FakeFront(protocol=protocol)
    if modern:
        tls.assert_modern_tls(front)
        return
    with pytest.raises(AssertionError) as failure:
        tls.assert_modern_tls(front)
    assert str(failure.value).startswith(f"negotiated {protocol} from a fake to 192.0.2.1:443")


def test_refuses_tls_1_1() -> None:
    tls.assert_refuses_tls_1_1(FakeFront(tls11=OldTls(False, "alert protocol version")))
    with pytest.raises(AssertionError) as failure:
        tls.assert_refuses_tls_1_1(FakeFront(tls11=OldTls(True, "negotiated TLSv1.1")))
    assert str(failure.value).startswith(
        "a TLS 1.1 client was accepted from a fake to 192.0.2.1:443 as push.example.org:"
        " negotiated TLSv1.1"
    )


@pytest.mark.parametrize(
    "hsts", ["max-age=63072000", "max-age=1; includeSubDomains", 'max-age="31536000"']
)
def test_hsts_present(hsts: str) -> None:
    front = FakeFront(reply=Reply(200, {"strict-transport-security": hsts}, "4.0.0"))
    tls.assert_hsts(front)
    assert front.requests == [("GET", "/version", None)]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            Reply(404, {"strict-transport-security": "max-age=1"}, "nope"),
            "GET /version from a fake to 192.0.2.1:443 as push.example.org: HTTP 404 'nope'",
        ),
        (
            Reply(200, {}, ""),
            "no HSTS (Strict-Transport-Security with a max-age) from a fake to 192.0.2.1:443"
            " as push.example.org: ''",
        ),
        (
            Reply(200, {"strict-transport-security": "max-age=0"}, ""),
            "no HSTS (Strict-Transport-Security with a max-age) from a fake to 192.0.2.1:443"
            " as push.example.org: 'max-age=0'",
        ),
        (
            Reply(200, {"strict-transport-security": "includeSubDomains"}, ""),
            "no HSTS (Strict-Transport-Security with a max-age) from a fake to 192.0.2.1:443"
            " as push.example.org: 'includeSubDomains'",
        ),
    ],
)
def test_hsts_missing(reply: Reply, message: str) -> None:
    with pytest.raises(AssertionError) as failure:
        tls.assert_hsts(FakeFront(reply=reply))
    assert str(failure.value).startswith(message)


# --- ControlNodeFront against a real TLS server on 127.0.0.1 ----------------------------------


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with JSON describing it, and an HSTS header."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode() if length else None
        data = json.dumps(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        ).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Strict-Transport-Security", "max-age=600")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Server:
    port: int
    cafile: str
    other_cafile: str


def serve(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An HTTPS echo server on 127.0.0.1 with a certificate for PUSH_NAME, TLS 1.2+ only."""
    directory = tmp_path_factory.mktemp("tls")
    key, cert = new_server_certificate(CA_KEY, CA_CERT, [PUSH_NAME])
    (directory / "cert.pem").write_text(pem(cert))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "ca.pem").write_text(pem(CA_CERT))
    (directory / "other-ca.pem").write_text(pem(OTHER_CA_CERT))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = serve(server)
    yield Server(
        server.server_address[1], str(directory / "ca.pem"), str(directory / "other-ca.pem")
    )
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def front_for(
    server: Server, name: str = PUSH_NAME, cafile: str | None = None
) -> tls.ControlNodeFront:
    return tls.ControlNodeFront("127.0.0.1", name, server.port, cafile or server.cafile)


def exchange(method: str, body: bytes | None, response: bytes) -> tuple[Reply, bytes]:
    """tls._exchange on one end of a socket pair whose other end already holds ``response``;
    the reply, and the bytes the request sent."""
    client, server = socket.socketpair()
    with client, server:
        server.sendall(response)
        server.shutdown(socket.SHUT_WR)
        reply = tls._exchange(client, method, "/v", "push.example.org:8443", body)
        client.shutdown(socket.SHUT_WR)
        sent = b""
        while chunk := server.recv(65536):
            sent += chunk
    return reply, sent


REQUEST_HEAD = (
    b"Host: push.example.org:8443\r\nUser-Agent: mmpush-verify\r\nAccept: */*\r\n"
    b"Connection: close\r\n"
)


def test_exchange_sends_exactly_the_request() -> None:
    response = b"HTTP/1.1 200 OK\r\nX-Thing: A b\r\nContent-Length: 3\r\n\r\nab\xff"
    reply, sent = exchange("GET", None, response)
    assert sent == b"GET /v HTTP/1.1\r\n" + REQUEST_HEAD + b"\r\n"
    assert reply == Reply(200, {"x-thing": "A b", "content-length": "3"}, "ab\ufffd")
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    reply, sent = exchange("POST", b'{"a": 1}', created)
    assert sent == (
        b"POST /v HTTP/1.1\r\n" + REQUEST_HEAD
        + b"Content-Type: application/json\r\nContent-Length: 8\r\n\r\n" + b'{"a": 1}'
    )  # fmt: skip
    assert reply.status == 201


def test_exchange_head_reads_no_body() -> None:
    reply, sent = exchange("HEAD", None, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert sent.startswith(b"HEAD /v HTTP/1.1\r\n")
    assert reply == Reply(200, {"content-length": "5"}, "")


def test_control_node_front_describes_itself(tls_server: Server) -> None:
    front = front_for(tls_server)
    assert front.where == (
        f"from this control node to 127.0.0.1:{tls_server.port} as {PUSH_NAME}"
        f" (trusting {tls_server.cafile})"
    )
    assert front.host_header == f"{PUSH_NAME}:{tls_server.port}"
    assert tls.ControlNodeFront("192.0.2.1", PUSH_NAME, 443, "ca.pem").host_header == PUSH_NAME


def test_control_node_handshake(tls_server: Server) -> None:
    handshake = front_for(tls_server).handshake()
    assert handshake.protocol == "TLSv1.3"
    assert tls.san_dns_names(handshake.certificate) == [PUSH_NAME]
    tls.assert_trusted_for(front_for(tls_server), PUSH_NAME)
    tls.assert_modern_tls(front_for(tls_server))
    tls.assert_not_expiring(front_for(tls_server), PUSH_NAME)


@pytest.mark.parametrize(
    ("name", "other_ca", "reason"),
    [
        ("other.example.org", False, "Hostname mismatch"),
        (PUSH_NAME, True, "certificate verify failed"),
    ],
)
def test_control_node_handshake_verifies(
    tls_server: Server, name: str, other_ca: bool, reason: str
) -> None:
    front = front_for(tls_server, name, tls_server.other_cafile if other_ca else None)
    with pytest.raises(Failed) as failure:
        front.handshake()
    assert str(failure.value).startswith(f"TLS handshake {front.where} failed: ")
    assert reason in str(failure.value)
    with pytest.raises(Failed, match=reason):
        front.https("GET", "/version")


def test_control_node_https_get_and_post(tls_server: Server) -> None:
    front = front_for(tls_server)
    reply = front.https("GET", "/version")
    assert reply.status == 200
    assert reply.headers["strict-transport-security"] == "max-age=600"
    request = json.loads(reply.body)
    assert (request["method"], request["path"], request["body"]) == ("GET", "/version", None)
    assert request["headers"]["Host"] == f"{PUSH_NAME}:{tls_server.port}"
    assert request["headers"]["User-Agent"] == "mmpush-verify"
    assert request["headers"]["Accept"] == "*/*"
    assert request["headers"]["Connection"] == "close"
    assert "Content-Type" not in request["headers"]
    tls.assert_hsts(front)

    reply = front.https("POST", "/api/v1/send_push", b'{"x": "\xc3\xa9"}')
    request = json.loads(reply.body)
    assert reply.status == 201
    assert request["body"] == '{"x": "é"}'
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Content-Length"] == "11"  # bytes, not characters


def test_control_node_plain_http_goes_to_port_80(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = serve(plain)
    try:
        front = front_for(tls_server)
        ports: list[int] = []

        def connect(port: int) -> socket.socket:
            ports.append(port)
            return socket.create_connection(("127.0.0.1", plain.server_address[1]), timeout=10)

        monkeypatch.setattr(front, "_connect", connect)
        reply = front.http("/.well-known/acme-challenge/x")
        assert ports == [80]
        request = json.loads(reply.body)
        assert (request["method"], request["path"]) == ("GET", "/.well-known/acme-challenge/x")
        assert request["headers"]["Host"] == PUSH_NAME
    finally:
        plain.shutdown()
        plain.server_close()
        thread.join(timeout=10)


def test_control_node_offer_tls11_is_refused(tls_server: Server) -> None:
    try:
        outcome = front_for(tls_server).offer_tls11()
    except Skipped:
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.1 at all")
    assert outcome.accepted is False
    assert outcome.detail
    tls.assert_refuses_tls_1_1(front_for(tls_server))


def test_control_node_cannot_connect(tls_server: Server) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        front = tls.ControlNodeFront("127.0.0.1", PUSH_NAME, port, tls_server.cafile)
        with pytest.raises(Failed) as failure:
            front.handshake()
        assert str(failure.value).startswith(
            f"cannot connect to 127.0.0.1:{port} from this control node: "
        )
        with pytest.raises(Failed, match=f"^cannot connect to 127.0.0.1:{port} "):
            front.https("GET", "/")


def test_control_node_http_errors_name_the_request(tls_server: Server) -> None:
    """A TLS port spoken to in plain HTTP: the failure names what was asked, where."""
    front = tls.ControlNodeFront("127.0.0.1", PUSH_NAME, tls_server.port, tls_server.cafile)
    front._connect = lambda port: socket.create_connection(  # type: ignore[method-assign]
        ("127.0.0.1", tls_server.port), timeout=10
    )
    with pytest.raises(Failed) as failure:
        front.http("/x")
    assert str(failure.value).startswith(f"GET http://{PUSH_NAME}/x via 127.0.0.1:80: ")


def one_connection_server(handle: Any) -> tuple[int, threading.Thread]:
    """A TCP server on 127.0.0.1 that hands its one connection to ``handle``; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                handle(connection)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.fixture(scope="module")
def key_and_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    directory = tmp_path_factory.mktemp("tls11")
    key, cert = new_server_certificate(CA_KEY, CA_CERT, [PUSH_NAME])
    (directory / "cert.pem").write_text(pem(cert))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(directory / "key.pem"), str(directory / "cert.pem")


def test_control_node_offer_tls11_to_a_server_that_takes_it(key_and_cert: tuple[str, str]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(key_and_cert[1], key_and_cert[0])

    def handshake(connection: socket.socket) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            context.wrap_socket(connection, server_side=True).close()

    port, thread = one_connection_server(handshake)
    outcome = tls.ControlNodeFront("127.0.0.1", PUSH_NAME, port, key_and_cert[1]).offer_tls11()
    thread.join(timeout=10)
    if outcome == OldTls(False, "") or "NO_PROTOCOLS" in outcome.detail:
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.1")
    assert outcome == OldTls(True, "negotiated TLSv1.1")
    with pytest.raises(
        AssertionError, match=r"^a TLS 1\.1 client was accepted .*: negotiated TLSv1\.1"
    ):
        tls.assert_refuses_tls_1_1(FakeFront(tls11=outcome))


def test_control_node_offer_tls11_to_a_server_that_hangs_up() -> None:
    def reset(connection: socket.socket) -> None:
        connection.recv(1)  # wait for the ClientHello, then reset the connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    port, thread = one_connection_server(reset)
    outcome = tls.ControlNodeFront("127.0.0.1", PUSH_NAME, port, "unused.pem").offer_tls11()
    thread.join(timeout=10)
    assert outcome == OldTls(False, "connection closed: [Errno 104] Connection reset by peer")


@pytest.mark.parametrize("reason", ["NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "OTHER"])
def test_control_node_offer_tls11_when_openssl_refuses_to_offer_it(
    reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()} (_ssl.c:1000)")
    error.reason = reason

    def refuse(context: ssl.SSLContext) -> ssl.SSLSocket:
        assert context.maximum_version == ssl.TLSVersion.TLSv1_1
        assert context.minimum_version == ssl.TLSVersion.TLSv1
        assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_NONE)
        raise error

    front = tls.ControlNodeFront("127.0.0.1", PUSH_NAME, 1, "unused.pem")
    monkeypatch.setattr(front, "_tls", refuse)
    if reason == "OTHER":
        assert front.offer_tls11() == OldTls(False, str(error))
        return
    with pytest.raises(Skipped) as skipped:
        front.offer_tls11()
    assert str(skipped.value) == f"this control node's OpenSSL cannot offer TLS 1.1 ({reason})"


def test_control_node_gives_up_on_a_silent_server(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts and never answers: the handshake fails after TIMEOUT seconds."""
    monkeypatch.setattr(tls, "TIMEOUT", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # the kernel accepts for it
        port = listener.getsockname()[1]
        front = tls.ControlNodeFront("127.0.0.1", PUSH_NAME, port, tls_server.cafile)
        with pytest.raises(Failed) as failure:
            front.handshake()
    assert str(failure.value).startswith(f"TLS handshake {front.where} failed: ")
    assert "timed out" in str(failure.value)


# --- OnHostFront, on a fake host ---------------------------------------------------------------


@dataclass
class Result:
    rc: int
    stdout: str = ""
    stderr: str = ""


@dataclass
class FakeHost:
    """A testinfra host: ``run`` records the command and returns the next canned result."""

    results: list[Result]
    commands: list[str] = field(default_factory=list)

    def run(self, command: str) -> Result:
        self.commands.append(command)
        return self.results.pop(0)


def s_client_output(cert: x509.Certificate, protocol: str = "TLSv1.3") -> str:
    return (
        "CONNECTED(00000003)\n---\nServer certificate\n"
        + pem(cert)
        + f"---\nNew, {protocol}, Cipher is TLS_AES_256_GCM_SHA384\nVerify return code: 0 (ok)\n"
    )


def test_on_host_handshake() -> None:
    cert = certificate([PUSH_NAME])
    host = FakeHost([Result(0, s_client_output(cert, "TLSv1.2"))])
    front = tls.OnHostFront(host, PUSH_NAME, 8443)  # type: ignore[arg-type]
    assert front.where == f"on the host via 127.0.0.1:8443 as {PUSH_NAME} (system trust store)"
    handshake = front.handshake()
    assert handshake == Handshake("TLSv1.2", cert)
    assert host.commands == [
        f"timeout {hostcheck.TIMEOUT} openssl s_client -connect 127.0.0.1:8443"
        f" -servername {PUSH_NAME} -verify_return_error -verify_hostname {PUSH_NAME}"
        f" -CAfile {tls.SYSTEM_TRUST} </dev/null 2>&1"
    ]


def test_on_host_handshake_failure_shows_the_errors() -> None:
    out = "CONNECTED\nverify error:num=62:hostname mismatch\nsome line\nerror:0A000086:SSL\n"
    front = tls.OnHostFront(FakeHost([Result(1, out)]), "a b", 443)  # type: ignore[arg-type]
    with pytest.raises(AssertionError) as failure:
        front.handshake()
    assert str(failure.value).startswith(
        "TLS handshake on the host via 127.0.0.1:443 as a b (system trust store) failed:"
        " verify error:num=62:hostname mismatch | error:0A000086:SSL"
    )
    host = FakeHost([Result(1, "gibberish\n")])
    with pytest.raises(AssertionError, match="failed: gibberish"):
        tls.OnHostFront(host, "a b", 443).handshake()  # type: ignore[arg-type]
    assert "-servername 'a b' " in host.commands[0]


def test_on_host_handshake_with_unexpected_output() -> None:
    host = FakeHost([Result(0, "CONNECTED\nno certificate here\n")])
    with pytest.raises(AssertionError, match=r"^unexpected openssl s_client output on the host"):
        tls.OnHostFront(host, PUSH_NAME, 443).handshake()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (Result(0, "New, TLSv1.1, Cipher is X\n"), OldTls(True, "handshake completed")),
        (
            Result(
                1, "CONNECTED\n40E7:error:0A00042E:SSL routines::tlsv1 alert protocol version\n"
            ),
            OldTls(False, "40E7:error:0A00042E:SSL routines::tlsv1 alert protocol version"),
        ),
        (Result(124, "  \n"), OldTls(False, "exit 124")),
    ],
)
def test_on_host_offer_tls11(result: Result, outcome: OldTls) -> None:
    host = FakeHost([result])
    assert tls.OnHostFront(host, PUSH_NAME, 443).offer_tls11() == outcome  # type: ignore[arg-type]
    assert host.commands == [
        f"timeout {hostcheck.TIMEOUT} openssl s_client -connect 127.0.0.1:443"
        f" -servername {PUSH_NAME} -tls1_1 -cipher DEFAULT@SECLEVEL=0 </dev/null 2>&1"
    ]


@pytest.mark.parametrize("line", ["no protocols available", "No Ciphers Available"])
def test_on_host_offer_tls11_skips_when_openssl_cannot(line: str) -> None:
    host = FakeHost([Result(1, f"error:0A0000BF:SSL routines::{line}\n")])
    with pytest.raises(Skipped, match=r"^the host's openssl cannot offer TLS 1\.1"):
        tls.OnHostFront(host, PUSH_NAME, 443).offer_tls11()  # type: ignore[arg-type]


def curl_reply(status: str, headers: list[str], body: str) -> str:
    return "\r\n".join([status, *headers]) + "\r\n\r\n" + body


def test_on_host_https() -> None:
    out = curl_reply(
        "HTTP/2 200", ["server: nginx", "Strict-Transport-Security:  max-age=5 "], "{}"
    )
    host = FakeHost([Result(0, out)])
    front = tls.OnHostFront(host, PUSH_NAME, 8443)  # type: ignore[arg-type]
    reply = front.https("GET", "/version")
    assert reply == Reply(200, {"server": "nginx", "strict-transport-security": "max-age=5"}, "{}")
    assert host.commands == [
        f"curl -sS -i --noproxy '*' --max-time {hostcheck.TIMEOUT}"
        f" --resolve {PUSH_NAME}:8443:127.0.0.1 -X GET https://{PUSH_NAME}:8443/version"
    ]


def test_on_host_https_post_sends_the_body_on_stdin() -> None:
    host = FakeHost([Result(0, curl_reply("HTTP/1.1 201 Created", [], "ok"))])
    front = tls.OnHostFront(host, PUSH_NAME, 443)  # type: ignore[arg-type]
    reply = front.https("POST", "/api/v1/send_push", b'{"a": "it\'s"}')
    assert (reply.status, reply.body) == (201, "ok")
    assert host.commands == [
        'printf %s \'{"a": "it\'"\'"\'s"}\' | '
        f"curl -sS -i --noproxy '*' --max-time {hostcheck.TIMEOUT}"
        f" --resolve {PUSH_NAME}:443:127.0.0.1 -X POST"
        " -H 'Content-Type: application/json' --data-binary @-"
        f" https://{PUSH_NAME}/api/v1/send_push"
    ]


def test_on_host_http() -> None:
    out = curl_reply("HTTP/1.1 301 Moved Permanently", ["Location: https://x/"], "")
    host = FakeHost([Result(0, out)])
    reply = tls.OnHostFront(host, PUSH_NAME, 443).http("/y")  # type: ignore[arg-type]
    assert reply == Reply(301, {"location": "https://x/"}, "")
    assert host.commands == [
        f"curl -sS -i --noproxy '*' --max-time {hostcheck.TIMEOUT}"
        f" --resolve {PUSH_NAME}:80:127.0.0.1 http://{PUSH_NAME}/y"
    ]


def test_on_host_curl_failure_fails_the_check() -> None:
    host = FakeHost([Result(7, "", "curl: (7) Failed to connect\n")])
    with pytest.raises(AssertionError, match=r"failed \(exit 7\): curl: \(7\) Failed to connect$"):
        tls.OnHostFront(host, PUSH_NAME, 443).https("GET", "/")  # type: ignore[arg-type]


def test_on_host_handshake_failure_shows_the_last_three_errors() -> None:
    out = "".join(f"error:{n}\n" for n in range(1, 6))
    with pytest.raises(AssertionError) as failure:
        tls.OnHostFront(FakeHost([Result(1, out)]), PUSH_NAME, 443).handshake()  # type: ignore[arg-type]
    assert str(failure.value).endswith(" failed: error:3 | error:4 | error:5")


def test_on_host_handshake_needs_the_certificate_and_the_protocol() -> None:
    cert_only = "CONNECTED\n" + pem(certificate([PUSH_NAME]))
    protocol_only = "New, TLSv1.3, Cipher is X\n"
    for out in (cert_only, protocol_only):
        host = FakeHost([Result(0, out)])
        with pytest.raises(AssertionError) as failure:
            tls.OnHostFront(host, PUSH_NAME, 443).handshake()  # type: ignore[arg-type]
        assert str(failure.value).startswith(
            f"unexpected openssl s_client output on the host via 127.0.0.1:443 as {PUSH_NAME}"
            f" (system trust store):\n{out}"
        )


def test_on_host_offer_tls11_reports_the_last_line() -> None:
    out = "CONNECTED\nfirst error\nsecond error\nlast line\n"
    outcome = tls.OnHostFront(FakeHost([Result(1, out)]), PUSH_NAME, 443).offer_tls11()  # type: ignore[arg-type]
    assert outcome == OldTls(False, "last line")


def test_on_host_reply_body_may_hold_blank_lines() -> None:
    out = curl_reply("HTTP/1.1 200 OK", ["A: 1"], "line one\r\n\r\nline three")
    reply = tls.OnHostFront(FakeHost([Result(0, out)]), PUSH_NAME, 443).https("GET", "/")  # type: ignore[arg-type]
    assert reply == Reply(200, {"a": "1"}, "line one\r\n\r\nline three")


class FrozenDatetime:
    """Stands in for tls.dt: datetime.now() is ``moment``."""

    UTC = dt.UTC
    timedelta = dt.timedelta

    def __init__(self, moment: dt.datetime) -> None:
        outer = self

        class _Datetime:
            @staticmethod
            def now(tz: dt.tzinfo) -> dt.datetime:
                assert tz is dt.UTC
                return outer.moment

        self.moment = moment
        self.datetime = _Datetime


def test_not_expiring_needs_more_than_min_days_left(monkeypatch: pytest.MonkeyPatch) -> None:
    cert = certificate([PUSH_NAME])
    exactly = cert.not_valid_after_utc - dt.timedelta(days=tls.MIN_DAYS_LEFT)
    monkeypatch.setattr(tls, "dt", FrozenDatetime(exactly))
    with pytest.raises(AssertionError, match=r"\(14 days left\): renewal is not happening"):
        tls.assert_not_expiring(FakeFront(cert), PUSH_NAME)
    monkeypatch.setattr(tls, "dt", FrozenDatetime(exactly - dt.timedelta(seconds=1)))
    tls.assert_not_expiring(FakeFront(cert), PUSH_NAME)


# --- hostcheck -----------------------------------------------------------------------------


def test_constants() -> None:
    assert hostcheck.TIMEOUT == 10
    assert hostcheck.LOOPBACK == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("plain", "plain"), ("a b", "'a b'"), (8443, "8443"), ("it's", "'it'\"'\"'s'"), ("", "''")],
)
def test_q(value: object, quoted: str) -> None:
    assert hostcheck.q(value) == quoted


def test_check_returns_stdout_or_fails_naming_the_command() -> None:
    assert hostcheck.check(FakeHost([Result(0, "out\n", "warn")]), "true") == "out\n"  # type: ignore[arg-type]
    with pytest.raises(AssertionError) as failure:
        hostcheck.check(FakeHost([Result(2, "out", " err \n")]), "ls /x")  # type: ignore[arg-type]
    assert str(failure.value).startswith("`ls /x` failed (exit 2): err")
    with pytest.raises(AssertionError) as failure:
        hostcheck.check(FakeHost([Result(1, " only stdout \n", "")]), "f")  # type: ignore[arg-type]
    assert str(failure.value).startswith("`f` failed (exit 1): only stdout")


def test_listening_parses_ss() -> None:
    ss = (
        "LISTEN 0 511 0.0.0.0:443 0.0.0.0:*\n"
        "LISTEN 0 4096 127.0.0.1:8066 0.0.0.0:*\n"
        "LISTEN 0 511 [::]:80 [::]:*\n"
        "LISTEN 0 10 [fe80::1%eth0]:53 [::]:*\n"
        "LISTEN 0 10 *:22 *:*\n"
        "LISTEN 0 5 127.0.0.1:25\n"  # four fields are enough
        "garbage\n"
        "\n"
    )
    host = FakeHost([Result(0, ss)])
    assert hostcheck.listening(host) == [  # type: ignore[arg-type]
        ("0.0.0.0", 443),
        ("127.0.0.1", 8066),
        ("::", 80),
        ("fe80::1", 53),
        ("*", 22),
        ("127.0.0.1", 25),
    ]
    assert host.commands == ["ss -ltnH"]


def test_active_directives() -> None:
    grep = (
        "/etc/nginx/nginx.conf:12:    ssl_protocols TLSv1.2  TLSv1.3;\n"
        "/etc/nginx/sites/a.conf:3:# ssl_protocols TLSv1;\n"
        "/etc/nginx/sites/a.conf:3:# ssl_protocols TLSv1; # was the default\n"
        "/etc/nginx/sites/a.conf:4:    add_header X 1; ssl_protocols TLSv1.3; # old\n"
        "/etc/nginx/sites/a.conf:5:    server { ssl_protocols   TLSv1.2;}\n"
        "/etc/nginx/sites/b.conf:9:    my_ssl_protocols x;\n"
        "/etc/nginx/sites/b.conf:10:    ssl_protocols_extra x;\n"
    )
    host = FakeHost([Result(0, grep)])
    assert hostcheck.active_directives(host, "ssl_protocols") == [  # type: ignore[arg-type]
        "/etc/nginx/nginx.conf:12: TLSv1.2 TLSv1.3",
        "/etc/nginx/sites/a.conf:4: TLSv1.3",
        "/etc/nginx/sites/a.conf:5: TLSv1.2",
    ]
    assert host.commands == ["grep -RHn -w ssl_protocols /etc/nginx"]


def test_active_directives_none_found_and_errors() -> None:
    host = FakeHost([Result(1, "")])
    assert hostcheck.active_directives(host, "a b", "/srv/x y") == []  # type: ignore[arg-type]
    assert host.commands == ["grep -RHn -w 'a b' '/srv/x y'"]
    with pytest.raises(AssertionError) as failure:
        hostcheck.active_directives(FakeHost([Result(2, "", " no such dir \n")]), "d")  # type: ignore[arg-type]
    assert str(failure.value).startswith("grep -R d /etc/nginx failed: no such dir")


def test_a_path_with_colons_is_not_split_in_the_text() -> None:
    host = FakeHost([Result(0, "/etc/nginx/a.conf:7:    return 301 https://$host:8443$uri;\n")])
    assert hostcheck.active_directives(host, "return") == [  # type: ignore[arg-type]
        "/etc/nginx/a.conf:7: 301 https://$host:8443$uri"
    ]
