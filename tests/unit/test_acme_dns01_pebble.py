"""ACME DNS-01 end to end: mmpush.acme.obtain_certificate_dns01 + mmpush.certs.dns01 against a
local Pebble (Debian `pebble`) whose ``-dnsserver`` is a real BIND (Debian `bind9`) on loopback.

The records are added by TSIG-signed RFC 2136 updates, Pebble validates them by asking that
named, and every test checks that no TXT record is left behind, whether the CA issued or not.
Pebble is started as in tests/unit/test_acme_pebble.py (30% of nonces rejected).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from acme import challenges, messages
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from mmpush import acme
from mmpush.certs.dns01 import Dns01Publisher, DnsUpdateError, PropagationTimeout
from tests.emulators import harness as h
from tests.unit.test_acme_pebble import CHALLTESTSRV, PEBBLE, make_csr, stop, wait_for_port
from tests.unit.test_dns01 import (
    SECRET,
    Named,
    servers_of,
    start_named,
    updater_for,
)

CHALLENGES = (
    "_acme-challenge.push.internal.test",
    "_acme-challenge.mm.internal.test",
    "_acme-challenge.internal.test",
)


@dataclass
class Ca:
    settings: acme.AcmeSettings
    management_url: str
    ca_bundle: str
    named: Named
    stale: Named

    def root(self) -> x509.Certificate:
        response = requests.get(self.management_url + "/roots/0", verify=self.ca_bundle, timeout=5)
        response.raise_for_status()
        return x509.load_pem_x509_certificate(response.content)

    def publisher(self) -> Dns01Publisher:
        return Dns01Publisher(
            updater_for(self.named), servers_of(self.named, self.named), timeout=5, interval=0.1
        )

    def leftover_records(self) -> dict[str, list[str]]:
        found = {name: self.named.txt(name) for name in CHALLENGES}
        return {name: values for name, values in found.items() if values}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ca]:
    if not (os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)):
        pytest.skip(f"Pebble is not installed ({PEBBLE} missing)")
    directory = tmp_path_factory.mktemp("pebble-dns01")
    named = start_named(directory / "named")
    stale = start_named(directory / "named-stale", updates=False)
    pki = h.make_test_pki(directory / "pki", ["localhost"], ["127.0.0.1"])
    acme_port, mgmt_port, http_port, tls_port = (h.free_port() for _ in range(4))
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
                }
            }
        )
    )
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="30")
    with (directory / "pebble.log").open("wb") as log:
        pebble = subprocess.Popen(
            [PEBBLE, "-config", str(config), "-dnsserver", named.server],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(acme_port, pebble)
        wait_for_port(mgmt_port, pebble)
        yield Ca(
            settings=acme.AcmeSettings(
                directory_url=f"https://127.0.0.1:{acme_port}/dir",
                email="ops@internal.test",
                ca_bundle=str(pki.ca_cert),
                timeout=20,
            ),
            management_url=f"https://127.0.0.1:{mgmt_port}",
            ca_bundle=str(pki.ca_cert),
            named=named,
            stale=stale,
        )
    finally:
        stop(pebble)
        stale.stop()
        named.stop()


def test_issues_a_certificate_through_dns01_and_leaves_no_record(ca: Ca) -> None:
    account_key = acme.generate_account_key()
    publisher = ca.publisher()
    seen: list[tuple[str, str]] = []

    def publish(name: str, value: str) -> None:
        seen.append((name, value))
        publisher.publish(name, value)

    issued = acme.obtain_certificate_dns01(
        ca.settings, account_key, make_csr("push.internal.test"), publish, publisher.unpublish
    )
    [(name, value)] = seen
    assert name == "_acme-challenge.push.internal.test"
    assert len(value) == 43  # base64url of a SHA-256 digest, RFC 8555 section 8.4
    assert publisher.published == []
    assert ca.leftover_records() == {}

    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    chain = x509.load_pem_x509_certificates(issued.chain_pem.encode())
    verifier = (
        PolicyBuilder()
        .store(Store([ca.root()]))
        .build_server_verifier(x509.DNSName("push.internal.test"))
    )
    assert verifier.verify(leaf, chain)[-1] == ca.root()


def test_wildcard_and_base_name_share_one_challenge_name(ca: Ca) -> None:
    publisher = ca.publisher()
    values: list[str] = []

    def publish(name: str, value: str) -> None:
        publisher.publish(name, value)
        values.append(value)
        # both values stand side by side until the CA has validated both
        assert sorted(ca.named.txt(name)) == sorted(values)

    issued = acme.obtain_certificate_dns01(
        ca.settings,
        acme.generate_account_key(),
        make_csr("mm.internal.test", "*.mm.internal.test"),
        publish,
        publisher.unpublish,
    )
    assert len(values) == 2
    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = sorted(san.get_values_for_type(x509.DNSName))
    assert names == ["*.mm.internal.test", "mm.internal.test"]
    assert ca.leftover_records() == {}


def test_failed_validation_names_domain_and_removes_the_record(ca: Ca) -> None:
    publisher = ca.publisher()
    with pytest.raises(acme.AcmeError) as failure:
        acme.obtain_certificate_dns01(
            ca.settings,
            acme.generate_account_key(),
            make_csr("push.internal.test"),
            lambda name, value: publisher.publish(name, "wrong-" + value),
            lambda name, value: publisher.unpublish(name, "wrong-" + value),
        )
    message = str(failure.value)
    assert message.startswith(
        f"ACME certificate order for push.internal.test at {ca.settings.directory_url} failed:"
        " authorization failed: push.internal.test: dns-01 failed:"
    )
    assert not isinstance(failure.value, acme.ChallengeCleanupError)
    assert ca.leftover_records() == {}


def test_propagation_timeout_passes_unchanged_and_the_record_is_removed(ca: Ca) -> None:
    publisher = Dns01Publisher(
        updater_for(ca.named), servers_of(ca.named, ca.stale), timeout=0.3, interval=0.1
    )
    with pytest.raises(PropagationTimeout, match=r"lagging: ns2\.internal\.test"):
        acme.obtain_certificate_dns01(
            ca.settings,
            acme.generate_account_key(),
            make_csr("push.internal.test"),
            publisher.publish,
            publisher.unpublish,
        )
    assert ca.leftover_records() == {}
    assert publisher.published == []


def test_removal_failure_after_issuance_keeps_the_certificate(ca: Ca) -> None:
    publisher = ca.publisher()
    wrong_key = updater_for(ca.named, tsig_secret=base64.b64encode(b"x" * 32).decode())
    with pytest.raises(acme.ChallengeCleanupError) as failure:
        acme.obtain_certificate_dns01(
            ca.settings,
            acme.generate_account_key(),
            make_csr("push.internal.test"),
            publisher.publish,
            wrong_key.delete_txt,
        )
    error = failure.value
    assert error.original is None
    assert error.issued is not None and "BEGIN CERTIFICATE" in error.issued.fullchain_pem
    message = str(error)
    assert message.startswith(
        f"ACME certificate order for push.internal.test at {ca.settings.directory_url}: the"
        " certificate was issued, but the DNS-01 challenge records were not all removed:"
        " _acme-challenge.push.internal.test: DNS update (removing TXT"
    )
    assert "NOTAUTH (TSIG BADSIG)" in message and SECRET not in message
    [(name, value)] = publisher.published  # still there: remove it for the next tests
    publisher.unpublish(name, value)
    assert ca.leftover_records() == {}


def test_removal_failure_after_a_failed_order_keeps_both_errors(ca: Ca) -> None:
    publisher = ca.publisher()

    def unpublish(name: str, value: str) -> None:
        raise DnsUpdateError(f"DNS update (removing TXT {name}) failed: connection refused")

    with pytest.raises(acme.ChallengeCleanupError) as failure:
        acme.obtain_certificate_dns01(
            ca.settings,
            acme.generate_account_key(),
            make_csr("push.internal.test"),
            lambda name, value: publisher.publish(name, "wrong-" + value),
            unpublish,
        )
    error = failure.value
    assert isinstance(error.original, acme.AcmeError)
    assert error.__cause__ is error.original
    assert error.issued is None
    assert str(error) == (
        f"{error.original}; also, the DNS-01 challenge records were not all removed:"
        " _acme-challenge.push.internal.test: DNS update (removing TXT"
        " _acme-challenge.push.internal.test) failed: connection refused"
    )
    assert "dns-01 failed" in str(error)
    for name, value in list(publisher.published):
        publisher.unpublish(name, value)
    assert ca.leftover_records() == {}


def test_every_record_is_removed_even_when_one_removal_fails(ca: Ca) -> None:
    publisher = ca.publisher()
    removed: list[str] = []

    def unpublish(name: str, value: str) -> None:
        removed.append(name)
        if len(removed) == 1:
            raise DnsUpdateError("the first removal failed")
        publisher.unpublish(name, value)

    with pytest.raises(acme.ChallengeCleanupError, match="the first removal failed") as failure:
        acme.obtain_certificate_dns01(
            ca.settings,
            acme.generate_account_key(),
            make_csr("push.internal.test", "mm.internal.test"),
            publisher.publish,
            unpublish,
        )
    assert len(removed) == 2
    assert failure.value.issued is not None
    [(name, value)] = publisher.published
    assert ca.leftover_records() == {name: [value]}
    publisher.unpublish(name, value)


def test_a_ca_without_dns01_is_named() -> None:
    http01 = messages.ChallengeBody(chall=challenges.HTTP01(token=b"t" * 16), uri="https://ca/c")
    authzr = messages.AuthorizationResource(
        uri="https://ca/a",
        body=messages.Authorization(
            identifier=messages.Identifier(
                typ=messages.IDENTIFIER_FQDN, value="push.internal.test"
            ),
            challenges=[http01],
        ),
    )
    settings = acme.AcmeSettings("https://ca.example/dir")
    with pytest.raises(acme.AcmeError) as failure:
        acme._dns01_challenge(settings, authzr)
    assert str(failure.value) == (
        "ACME certificate order for push.internal.test at https://ca.example/dir failed: the CA"
        " offers no dns-01 challenge (offered: http-01)"
    )


def test_a_broken_csr_is_refused_before_any_request() -> None:
    # No CA listens there: the CSR is refused before the CA is asked anything.
    settings = acme.AcmeSettings(f"https://127.0.0.1:{h.free_port()}/dir", timeout=2)
    with pytest.raises(acme.AcmeError, match="is not a valid PEM CSR"):
        acme.obtain_certificate_dns01(
            settings, acme.generate_account_key(), b"not a csr", print, print
        )
