"""Real issuance against a local Pebble (Debian package `pebble`) on 127.0.0.1.

The fixture starts `pebble-challtestsrv` as Pebble's DNS server (every name resolves to
127.0.0.1) and Pebble itself, whose HTTP-01 validations go to a tiny http.server run by the
test that serves the tokens the `publish` callback stores. Pebble rejects 30% of nonces here
(default 5%) so that the client's badNonce retries are exercised.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from mmpush import acme
from tests.emulators import harness as h

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{process.args[0]} did not listen on {port} within {timeout} s")


class TokenHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.tokens[token] at /.well-known/acme-challenge/<token>, else 404."""

    def do_GET(self) -> None:
        tokens: dict[str, str] = self.server.tokens  # type: ignore[attr-defined]
        token = self.path.removeprefix(CHALLENGE_PREFIX)
        if not self.path.startswith(CHALLENGE_PREFIX) or token not in tokens:
            self.send_error(404)
            return
        body = tokens[token].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Pebble:
    settings: acme.AcmeSettings
    management_url: str
    ca_bundle: str
    tokens: dict[str, str] = field(default_factory=dict)

    def get_pem(self, path: str) -> bytes:
        response = requests.get(self.management_url + path, verify=self.ca_bundle, timeout=5)
        response.raise_for_status()
        return response.content


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    if not (os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)):
        pytest.skip(f"Pebble is not installed ({PEBBLE} or {CHALLTESTSRV} missing)")
    directory = tmp_path_factory.mktemp("pebble")
    pki = h.make_test_pki(directory / "pki", ["localhost"], ["127.0.0.1"])
    acme_port, mgmt_port, http_port, tls_port, dns_port, dns_mgmt_port = (
        h.free_port() for _ in range(6)
    )
    config = directory / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{mgmt_port}",
                    "certificate": str(pki.server_cert),
                    "privateKey": str(pki.server_key),
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                    "certificateValidityPeriod": 7776000,
                }
            }
        )
    )
    tokens: dict[str, str] = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), TokenHandler)
    server.tokens = tokens  # type: ignore[attr-defined]
    server_thread = threading.Thread(target=server.serve_forever, daemon=True)
    server_thread.start()
    processes: list[subprocess.Popen] = []
    try:
        dns = subprocess.Popen(
            [
                CHALLTESTSRV,
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-dns01", f"127.0.0.1:{dns_port}",
                "-management", f"127.0.0.1:{dns_mgmt_port}",
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(dns)
        wait_for_port(dns_mgmt_port, dns)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="30")
        with (directory / "pebble.log").open("wb") as log:
            ca = subprocess.Popen(
                [PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(ca)
        wait_for_port(acme_port, ca)
        wait_for_port(mgmt_port, ca)
        yield Pebble(
            settings=acme.AcmeSettings(
                directory_url=f"https://127.0.0.1:{acme_port}/dir",
                email="ops@lab.test",
                ca_bundle=str(pki.ca_cert),
                timeout=20,
            ),
            management_url=f"https://127.0.0.1:{mgmt_port}",
            ca_bundle=str(pki.ca_cert),
            tokens=tokens,
        )
    finally:
        for process in reversed(processes):
            stop(process)
        server.shutdown()
        server.server_close()


def make_csr(*names: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_issues_certificate_that_chains_to_pebble_root(pebble: Pebble) -> None:
    account_key = acme.generate_account_key()
    published: list[str] = []
    unpublished: list[str] = []

    def publish(token: str, key_authorization: str) -> None:
        published.append(token)
        pebble.tokens[token] = key_authorization

    def unpublish(token: str) -> None:
        unpublished.append(token)
        pebble.tokens.pop(token, None)

    csr_pem = make_csr("push.lab.test", "www.push.lab.test")
    issued = acme.obtain_certificate(pebble.settings, account_key, csr_pem, publish, unpublish)
    assert len(published) == 2
    assert sorted(unpublished) == sorted(published)
    assert pebble.tokens == {}

    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    chain = x509.load_pem_x509_certificates(issued.chain_pem.encode())
    assert issued.fullchain_pem == issued.cert_pem + issued.chain_pem
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["push.lab.test", "www.push.lab.test"]

    root = x509.load_pem_x509_certificate(pebble.get_pem("/roots/0"))
    intermediate = x509.load_pem_x509_certificate(pebble.get_pem("/intermediates/0"))
    assert intermediate in chain
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .build_server_verifier(x509.DNSName("www.push.lab.test"))
    )
    verified = verifier.verify(leaf, chain)
    assert verified[-1] == root

    lifetime = issued.not_after - issued.not_before
    assert abs(lifetime - dt.timedelta(days=90)) < dt.timedelta(hours=1)
    now = dt.datetime.now(dt.UTC)
    assert not acme.renewal_due(issued.cert_pem, now)
    assert acme.renewal_due(issued.cert_pem, issued.not_after - dt.timedelta(days=20))
    # Pebble 2.4 (Debian) has no renewalInfo in its directory; later Pebbles offer ARI.
    window = acme.fetch_ari_window(pebble.settings, issued.fullchain_pem)
    if window is not None:
        assert issued.not_before < window[0] < window[1] < issued.not_after


def test_register_account_is_idempotent(pebble: Pebble) -> None:
    account_key = acme.generate_account_key()
    first = acme.register_account(pebble.settings, account_key)
    second = acme.register_account(
        pebble.settings, acme.load_account_key(acme.account_key_pem(account_key))
    )
    assert first.net.account.uri == second.net.account.uri
    assert second.net.account.body.status == "valid"


def test_failed_validation_names_domain_and_unpublishes(pebble: Pebble) -> None:
    unpublished: list[str] = []
    with pytest.raises(acme.AcmeError) as failure:
        acme.obtain_certificate(
            pebble.settings,
            acme.generate_account_key(),
            make_csr("broken.lab.test"),
            publish=lambda token, key_authorization: None,
            unpublish=unpublished.append,
        )
    message = str(failure.value)
    assert "broken.lab.test" in message
    assert pebble.settings.directory_url in message
    assert "404" in message
    assert len(unpublished) == 1


def test_untrusted_ca_certificate_is_an_acme_error(pebble: Pebble) -> None:
    settings = acme.AcmeSettings(pebble.settings.directory_url, ca_bundle=None, timeout=5)
    with pytest.raises(acme.AcmeError, match="CERTIFICATE_VERIFY_FAILED") as failure:
        acme.register_account(settings, acme.generate_account_key())
    assert settings.directory_url in str(failure.value)


def test_ca_down_fails_naming_directory() -> None:
    # how fast it fails is measured by the benchmarks, not asserted here
    url = f"https://127.0.0.1:{h.free_port()}/dir"
    settings = acme.AcmeSettings(directory_url=url, email=None, ca_bundle=None, timeout=10)
    with pytest.raises(acme.AcmeError) as failure:
        acme.obtain_certificate(
            settings,
            acme.generate_account_key(),
            make_csr("push.lab.test"),
            publish=lambda token, key_authorization: None,
            unpublish=lambda token: None,
        )
    assert url in str(failure.value)
    assert "onnect" in str(failure.value)


class FakeAriHandler(http.server.BaseHTTPRequestHandler):
    """A CA that only has a directory with renewalInfo and answers one suggested window."""

    def do_GET(self) -> None:
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/dir":
            body: dict = {
                "newNonce": f"{base}/nonce",
                "newAccount": f"{base}/account",
                "newOrder": f"{base}/order",
                "renewalInfo": f"{base}/renewal-info",
            }
        elif self.path.startswith("/renewal-info/"):
            asked: list[str] = self.server.asked  # type: ignore[attr-defined]
            asked.append(self.path.removeprefix("/renewal-info/"))
            window = {"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T12:00:00Z"}
            body = {"suggestedWindow": window}
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


def test_fetch_ari_window_from_a_ca_with_renewal_info(tmp_path: Path) -> None:
    # leaf + CA: the first certificate is the one ARI is asked about
    cert_pem = h.make_test_pki(tmp_path, ["localhost"], ["127.0.0.1"]).server_cert.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAriHandler)
    server.asked = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = acme.AcmeSettings(f"http://127.0.0.1:{server.server_port}/dir", timeout=5)
        window = acme.fetch_ari_window(settings, cert_pem)
    finally:
        server.shutdown()
        server.server_close()
    assert server.asked == [acme.ari_certificate_id(cert_pem)]  # type: ignore[attr-defined]
    assert window == (
        dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2030, 1, 2, 12, tzinfo=dt.UTC),
    )
