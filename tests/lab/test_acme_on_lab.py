"""Pebble issues a certificate through an HTTP-01 challenge served by a real lab host:
the seed of the certificate code (DESIGN.md section 4). The private key is made on the
host and never leaves it; the control node only sees the CSR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from mmpush import acme
from tests.lab.helpers import SshRunner

pytestmark = pytest.mark.lab

HOST = "push1"
NAME = "push.lab.test"
WEBROOT = "/var/www/html/.well-known/acme-challenge"
KEY = "/etc/ssl/private/lab-acme-test.key"


@pytest.fixture(scope="module")
def nginx_on_push1(on: SshRunner) -> None:
    """NGINX from Debian's registry serving port 80 (installed through the lab's NAT)."""
    on(HOST, "apt-get update -qq", timeout=300)
    on(HOST, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx openssl", timeout=300)
    on(HOST, f"mkdir -p {WEBROOT} && systemctl is-active nginx")


def csr_made_on_host(on: SshRunner, key_path: str) -> str:
    """A new P-256 key at ``key_path`` on the host (it stays there) and its CSR for NAME."""
    return on(
        HOST,
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        f"-keyout {key_path} -subj /CN={NAME} -addext subjectAltName=DNS:{NAME} 2>/dev/null",
    ).stdout


def lab_acme(lab: dict[str, Any]) -> acme.AcmeSettings:
    """ACME settings for the lab's Pebble."""
    return acme.AcmeSettings(
        directory_url=lab["acme"]["directory_url"], ca_bundle=lab["acme"]["ca_bundle"], timeout=60
    )


def test_pebble_issues_a_certificate_via_http01_on_a_lab_host(
    lab: dict[str, Any], on: SshRunner, nginx_on_push1: None
) -> None:
    csr = csr_made_on_host(on, KEY)
    published: list[str] = []

    def publish(token: str, key_authorization: str) -> None:
        on(HOST, f"cat > {WEBROOT}/{token}", input=key_authorization)
        published.append(token)

    def unpublish(token: str) -> None:
        on(HOST, f"rm -f {WEBROOT}/{token}")

    settings = lab_acme(lab)
    issued = acme.obtain_certificate(
        settings, acme.generate_account_key(), csr.encode(), publish, unpublish
    )

    assert published, "the CA asked for an HTTP-01 challenge"
    assert on(HOST, f"ls {WEBROOT}").stdout.strip() == "", "tokens are removed afterwards"
    leaf, *chain = x509.load_pem_x509_certificates(issued.fullchain_pem.encode())
    # the chain validates up to Pebble's issuing root alone (from the lab's CA bundle)
    # the bundle: the lab CA (Pebble's listener), Pebble's issuing root, the site PKI's root
    pebble_root = x509.load_pem_x509_certificates(Path(lab["acme"]["ca_bundle"]).read_bytes())[1]
    assert "Pebble" in pebble_root.subject.rfc4514_string()
    verifier = PolicyBuilder().store(Store([pebble_root])).build_server_verifier(x509.DNSName(NAME))
    verifier.verify(leaf, chain)
    lifetime = issued.not_after - issued.not_before
    assert 89 <= lifetime.days <= 90
    # the certificate is for the key that stayed on the host
    host_public = on(HOST, f"openssl pkey -in {KEY} -pubout").stdout.encode()
    assert leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == serialization.load_pem_public_key(host_public).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_challenge_the_host_does_not_serve_fails_with_the_domain_named(
    lab: dict[str, Any], on: SshRunner, nginx_on_push1: None
) -> None:
    csr = csr_made_on_host(on, "/tmp/unused.key")
    settings = lab_acme(lab)
    with pytest.raises(acme.AcmeError, match=NAME):
        # a fresh account: no authorization to reuse; nothing published
        acme.obtain_certificate(
            settings, acme.generate_account_key(), csr.encode(), lambda t, k: None, lambda t: None
        )
