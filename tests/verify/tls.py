"""TLS fronts (NGINX serving a name on an https port) as their clients see them, and the TLS
checks every front must pass. Shared by test_eas.py (the push front) and
test_outbound_proxy.py (the outbound proxy); not a test module itself.

A front is reached either from this control node (``ControlNodeFront``: the host's address,
the front's name as SNI and Host, trusting the inventory's acme_ca_bundle) or on the host
itself through 127.0.0.1 (``OnHostFront``: openssl/curl and the host's trust store).
"""

from __future__ import annotations

import datetime as dt
import http.client
import re
import socket
import ssl
import warnings
from dataclasses import dataclass
from typing import Protocol

import pytest
from cryptography import x509

from tests.verify.hostcheck import TIMEOUT, Host, check, q

#: A certificate this close to expiry means renewal is broken (renewal starts at 1/3 left).
MIN_DAYS_LEFT = 14
#: Debian's system trust store (ca-certificates), used on the host when no acme_ca_bundle.
SYSTEM_TRUST = "/etc/ssl/certs/ca-certificates.crt"
#: What the push proxy answers to a push it accepted: OK (sent), or REMOVE (APNs/FCM took
#: the proxy's credentials but refused the device token, as they must refuse a fake one).
ACCEPTED_PUSH = ("OK", "REMOVE")


def san_dns_names(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(extension.value.get_values_for_type(x509.DNSName))


def name_matches(pattern: str, name: str) -> bool:
    """A certificate DNS name (``*.example.com`` covers one label) against a host name."""
    pattern, name = pattern.lower(), name.lower()
    if pattern.startswith("*."):
        label, _, rest = name.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == name


def port_suffix(port: int) -> str:
    return "" if port == 443 else f":{port}"


# --- what a client gets -------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers (names in lower case), body."""

    status: int
    headers: dict[str, str]
    body: str


@dataclass(frozen=True)
class Handshake:
    """A verified TLS handshake with a front."""

    protocol: str
    certificate: x509.Certificate


@dataclass(frozen=True)
class OldTls:
    """What happened when a client offered TLS 1.1 only."""

    accepted: bool
    detail: str


class TlsFront(Protocol):
    """A front's TLS port as one client sees it."""

    #: Who connects where, for messages: "from this control node to 10.0.0.1:443 as ...".
    where: str

    def handshake(self) -> Handshake:
        """A handshake verified against the trusted CAs and the front's name (fails if not)."""
        ...

    def offer_tls11(self) -> OldTls: ...

    def https(self, method: str, path: str, body: bytes | None = None) -> Reply: ...


# --- the two ways to reach a front --------------------------------------------------------


def _exchange(sock: socket.socket, method: str, path: str, host: str, body: bytes | None) -> Reply:
    """One HTTP/1.1 request on a connected (TLS or plain) socket."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "User-Agent: mmpush-verify",
        "Accept: */*",
        "Connection: close",
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
    response = http.client.HTTPResponse(sock, method=method)
    try:
        response.begin()
        data = response.read()
    finally:
        response.close()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return Reply(response.status, headers, data.decode(errors="replace"))


class ControlNodeFront:
    """A front reached from this control node: the host's address, ``name`` as SNI and Host,
    trusting only ``cafile`` (the inventory's acme_ca_bundle)."""

    def __init__(self, address: str, name: str, port: int, cafile: str) -> None:
        self.address, self.cafile = address, cafile
        self.name, self.port = name, port
        self.host_header = f"{self.name}{port_suffix(self.port)}"
        self.where = (
            f"from this control node to {address}:{self.port} as {self.name} (trusting {cafile})"
        )

    def _connect(self, port: int) -> socket.socket:
        try:
            return socket.create_connection((self.address, port), timeout=TIMEOUT)
        except OSError as error:
            pytest.fail(f"cannot connect to {self.address}:{port} from this control node: {error}")

    def _tls(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        sock = self._connect(self.port)
        try:
            return context.wrap_socket(sock, server_hostname=self.name)
        except BaseException:
            sock.close()
            raise

    def handshake(self) -> Handshake:
        try:
            with self._tls(ssl.create_default_context(cafile=self.cafile)) as tls:
                der, protocol = tls.getpeercert(binary_form=True), tls.version()
        except OSError as error:
            pytest.fail(f"TLS handshake {self.where} failed: {error}")
        assert der is not None and protocol is not None
        return Handshake(protocol, x509.load_der_x509_certificate(der))

    def offer_tls11(self) -> OldTls:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        # OpenSSL 3 refuses TLS 1.1 itself at its default security level: lower it, so the
        # server (not this client) is what decides.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        try:
            with self._tls(context) as tls:
                return OldTls(True, f"negotiated {tls.version()}")
        except ssl.SSLError as error:
            if error.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE"):
                pytest.skip(f"this control node's OpenSSL cannot offer TLS 1.1 ({error.reason})")
            return OldTls(False, str(error))
        except ConnectionError as error:
            return OldTls(False, f"connection closed: {error}")

    def https(self, method: str, path: str, body: bytes | None = None) -> Reply:
        try:
            with self._tls(ssl.create_default_context(cafile=self.cafile)) as tls:
                return _exchange(tls, method, path, self.host_header, body)
        except (OSError, http.client.HTTPException) as error:
            pytest.fail(f"{method} https://{self.host_header}{path} {self.where}: {error}")

    def http(self, path: str) -> Reply:
        """A plain-HTTP GET on port 80 (redirects not followed)."""
        try:
            with self._connect(80) as sock:
                return _exchange(sock, "GET", path, self.name, None)
        except (OSError, http.client.HTTPException) as error:
            pytest.fail(f"GET http://{self.name}{path} via {self.address}:80: {error}")


class OnHostFront:
    """A front reached on the host itself through 127.0.0.1 (openssl, curl), trusting the
    host's system trust store."""

    def __init__(self, host: Host, name: str, port: int) -> None:
        self.host, self.name, self.port = host, name, port
        self.where = f"on the host via 127.0.0.1:{self.port} as {self.name} (system trust store)"

    def _s_client(self, options: str) -> tuple[int, str]:
        result = self.host.run(
            f"timeout {TIMEOUT} openssl s_client -connect 127.0.0.1:{self.port} "
            f"-servername {q(self.name)} {options} </dev/null 2>&1"
        )
        return result.rc, result.stdout

    def handshake(self) -> Handshake:
        rc, out = self._s_client(
            f"-verify_return_error -verify_hostname {q(self.name)} -CAfile {SYSTEM_TRUST}"
        )
        errors = [line for line in out.splitlines() if "error" in line.lower()]
        assert rc == 0, f"TLS handshake {self.where} failed: {' | '.join(errors[-3:]) or out}"
        pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.S)
        protocol = re.search(r"^New, ([^,]+), Cipher is", out, re.M)
        assert pem and protocol, f"unexpected openssl s_client output {self.where}:\n{out}"
        return Handshake(protocol.group(1), x509.load_pem_x509_certificate(pem.group().encode()))

    def offer_tls11(self) -> OldTls:
        # DEFAULT@SECLEVEL=0: OpenSSL 3 would refuse TLS 1.1 itself otherwise.
        rc, out = self._s_client("-tls1_1 -cipher DEFAULT@SECLEVEL=0")
        if rc == 0:
            return OldTls(True, "handshake completed")
        if re.search(r"no (protocols|ciphers) available", out, re.I):
            pytest.skip("the host's openssl cannot offer TLS 1.1")
        return OldTls(False, out.strip().splitlines()[-1] if out.strip() else f"exit {rc}")

    def _curl(self, options: str, url: str, stdin: bytes | None = None) -> Reply:
        command = f"curl -sS -i --noproxy '*' --max-time {TIMEOUT} {options} {q(url)}"
        if stdin is not None:
            command = f"printf %s {q(stdin.decode())} | {command}"
        out = check(self.host, command)
        head, _, body = out.partition("\r\n\r\n")
        status_line, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Reply(int(status_line.split()[1]), headers, body)

    def https(self, method: str, path: str, body: bytes | None = None) -> Reply:
        options = f"--resolve {q(f'{self.name}:{self.port}:127.0.0.1')} -X {method}"
        if body is not None:
            options += " -H 'Content-Type: application/json' --data-binary @-"
        return self._curl(options, f"https://{self.name}{port_suffix(self.port)}{path}", body)

    def http(self, path: str) -> Reply:
        """A plain-HTTP GET on port 80 (redirects not followed)."""
        return self._curl(
            f"--resolve {q(f'{self.name}:80:127.0.0.1')}", f"http://{self.name}{path}"
        )


# --- the TLS checks every front must pass -------------------------------------------------


def assert_trusted_for(front: TlsFront, name: str) -> None:
    """The front's certificate verifies against the trusted CAs and covers ``name``."""
    names = san_dns_names(front.handshake().certificate)
    assert any(name_matches(n, name) for n in names), (
        f"the certificate {front.where} is for {names or 'no DNS name'}, not {name}"
    )


def assert_not_expiring(front: TlsFront, name: str) -> None:
    """The certificate for ``name`` has more than MIN_DAYS_LEFT days left."""
    expires = front.handshake().certificate.not_valid_after_utc
    left = expires - dt.datetime.now(dt.UTC)
    assert left > dt.timedelta(days=MIN_DAYS_LEFT), (
        f"the certificate for {name} expires {expires:%Y-%m-%d %H:%M} UTC "
        f"({left.days} days left): renewal is not happening"
    )


def assert_modern_tls(front: TlsFront) -> None:
    """A default client negotiates TLS 1.2 or 1.3."""
    protocol = front.handshake().protocol
    assert protocol in ("TLSv1.2", "TLSv1.3"), f"negotiated {protocol} {front.where}"


def assert_refuses_tls_1_1(front: TlsFront) -> None:
    """A client offering TLS 1.1 only is refused."""
    outcome = front.offer_tls11()
    assert not outcome.accepted, f"a TLS 1.1 client was accepted {front.where}: {outcome.detail}"


def assert_hsts(front: TlsFront) -> None:
    """GET /version is answered 200 with Strict-Transport-Security and a max-age above 0."""
    reply = front.https("GET", "/version")
    assert reply.status == 200, f"GET /version {front.where}: HTTP {reply.status} {reply.body!r}"
    hsts = reply.headers.get("strict-transport-security", "")
    max_age = re.search(r"max-age=\"?(\d+)", hsts)
    assert max_age and int(max_age.group(1)) > 0, (
        f"no HSTS (Strict-Transport-Security with a max-age) {front.where}: {hsts!r}"
    )


def assert_passes_check_cert(address: str, name: str, port: int, ca_bundle: str | None) -> None:
    """`mmpush check-cert` passes from this control node: the chain as sent (no AIA fetching)
    reaches a trusted root, for the name, not expiring soon, TLS 1.2+ only, as the mobile apps
    check it (mmpush/checks/certificate.py)."""
    from mmpush.checks.certificate import UNREACHABLE, check_certificate

    report = check_certificate(name, port, ca_bundle=ca_bundle, connect=address, days=MIN_DAYS_LEFT)
    if UNREACHABLE in report.ids and ca_bundle is None:
        pytest.skip(f"{address}:{port} is not reachable from this control node: {report.ids}")
    problems = [f"{f.id}: {f.message}" for f in report.findings if f.severity == "error"]
    assert not problems, f"check-cert {name} (via {address}:{port}): {'; '.join(problems)}"
