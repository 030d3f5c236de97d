"""Certificates for names the internet cannot reach, on the lab: the outbound proxy's internal
name (outbound.internal.test) gets its certificate through ACME DNS-01 (the lab's BIND on ns1
takes TSIG-signed updates, Pebble validates through it, port 80 on proxy1 stays closed); the
push front serves a certificate from a site's own PKI (tls_certificate_source = "files")."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mmpush.checks.certificate import peer_chain
from mmpush.lab.ca import new_ca, new_server_certificate
from tests.lab.helpers import (
    SshRunner,
    deploy,
    grand_total,
    lab_skips,
    mmpush,
    verify,
)

pytestmark = pytest.mark.lab

HPNS = ("push_mode=hpns",)
PROXY_NAME = "outbound.internal.test"
CHALLENGE = f"_acme-challenge.{PROXY_NAME}"


@pytest.fixture(scope="module")
def certs_lab(lab: dict[str, Any]) -> dict[str, Any]:
    up = mmpush("lab", "up")
    assert up.returncode == 0, up.stderr[-3000:]
    state = json.loads(mmpush("lab", "status", "--json").stdout)
    first = deploy("deploys/hpns.py", *HPNS)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    return state


def ip_of(state: dict[str, Any], name: str) -> str:
    return next(h["ip"] for h in state["hosts"] if h["name"] == name)


def served(state: dict[str, Any], host: str, name: str, port: int) -> list[x509.Certificate]:
    """The chain ``host`` sends for ``name`` (verified against the lab's CA bundle only)."""
    context = ssl.create_default_context(cafile=state["acme"]["ca_bundle"])
    with (
        socket.create_connection((ip_of(state, host), port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        return peer_chain(tls)


def txt_records(state: dict[str, Any], name: str, zone_server: str | None = None) -> str:
    """What the lab's authoritative DNS answers for TXT ``name`` (asked directly, no recursion;
    dnspython, so the control node needs no dig)."""
    query = dns.message.make_query(name, "TXT")
    query.flags &= ~dns.flags.RD
    reply = dns.query.udp(query, zone_server or state["dns"]["server"], timeout=10)
    return " ".join(
        item.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TXT
        for item in rrset
    )


# --- ACME DNS-01 ----------------------------------------------------------------------------


def test_the_outbound_proxy_gets_its_certificate_through_dns01_with_port_80_closed(
    certs_lab: dict[str, Any], on: SshRunner
) -> None:
    leaf = served(certs_lab, "proxy1", PROXY_NAME, 8000)[0]
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == PROXY_NAME
    assert "Pebble" in leaf.issuer.rfc4514_string()
    listening = on("proxy1", "ss -ltnH").stdout
    assert ":80 " not in listening, listening
    assert txt_records(certs_lab, CHALLENGE) == "", "no challenge record is left"
    assert on("proxy1", f"cat /etc/mmpush/tls/{PROXY_NAME}/source").stdout.startswith("acme ")
    verify(*HPNS).assert_passed(lab_skips("hpns"))
    again = deploy("deploys/hpns.py", *HPNS)
    assert grand_total(again)["success"] == 0, again.stdout[-3000:]


def test_renewal_through_dns01_and_no_record_left_when_the_ca_fails(
    certs_lab: dict[str, Any],
) -> None:
    before = served(certs_lab, "proxy1", PROXY_NAME, 8000)[0].serial_number
    failed = deploy(
        "deploys/certs.py",
        *HPNS,
        "acme_renew_days=91",
        "acme_directory_url=https://127.0.0.1:1/dir",
    )
    assert failed.returncode != 0
    assert "the previous certificate (if any) is kept" in failed.stdout + failed.stderr
    assert served(certs_lab, "proxy1", PROXY_NAME, 8000)[0].serial_number == before
    assert txt_records(certs_lab, CHALLENGE) == ""
    renewed = deploy("deploys/certs.py", *HPNS, "acme_renew_days=91")
    assert renewed.returncode == 0, (renewed.stdout + renewed.stderr)[-3000:]
    after = served(certs_lab, "proxy1", PROXY_NAME, 8000)[0]
    assert after.serial_number != before
    assert txt_records(certs_lab, CHALLENGE) == ""


def refused(result: subprocess.CompletedProcess[str], *texts: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for text in texts:
        assert text in output, (text, output[-3000:])
    assert "Starting operation" not in output and "Traceback" not in output
    return output


def new_name_data(name: str, zone: str) -> tuple[str, ...]:
    """An outbound proxy name with no certificate yet (so one must be issued)."""
    return (*HPNS, f"outbound_proxy_name={name}", f"acme_dns_zone={zone}")


def test_a_wrong_tsig_key_is_refused_before_any_change(
    certs_lab: dict[str, Any], tmp_path: Path, on: SshRunner
) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("d3Jvbmcgc2VjcmV0IG9mIDMyIGJ5dGVzIGZvciB0aGUga2V5IQ==\n")
    before = on("proxy1", "ls -R /etc/nginx /etc/mmpush").stdout
    result = deploy(
        "deploys/hpns.py",
        *new_name_data("push.internal.test", "internal.test"),
        f"acme_dns_tsig_secret={wrong}",
    )
    refused(result, "host proxy1", "acme_dns_server", certs_lab["dns"]["server"], "NOTAUTH")
    assert on("proxy1", "ls -R /etc/nginx /etc/mmpush").stdout == before


def test_a_zone_the_server_does_not_have_is_refused(certs_lab: dict[str, Any]) -> None:
    result = deploy("deploys/hpns.py", *new_name_data("outbound.nosuch.test", "nosuch.test"))
    refused(result, "host proxy1", "nosuch.test", certs_lab["dns"]["server"])


def test_a_propagation_timeout_names_the_lagging_server(certs_lab: dict[str, Any]) -> None:
    result = deploy(
        "deploys/hpns.py",
        *new_name_data("outbound.lag.test", "lag.test"),
        "acme_dns_propagation_timeout=8",
    )
    output = refused(result, "host proxy1", "lag.test")
    assert "ns2.lag.test" in output or "10.77.44.251" in output, output[-3000:]
    assert txt_records(certs_lab, "_acme-challenge.outbound.lag.test") == ""


# --- certificates a site brings -----------------------------------------------------------------


def files_data(pki: dict[str, str], **override: str) -> tuple[str, ...]:
    paths = {
        "tls_certificate_file": pki["certificate"],
        "tls_certificate_key_file": pki["key"],
        "tls_certificate_chain_file": pki["chain"],
        "tls_trust_anchors_file": pki["root"],
        **override,
    }
    return ("tls_certificate_source=files", *(f"{k}={v}" for k, v in paths.items()))


def test_the_push_front_serves_the_sites_own_certificate(
    certs_lab: dict[str, Any], on: SshRunner
) -> None:
    pki = certs_lab["fixtures"]["pki"]
    data = files_data(pki)
    try:
        result = deploy("deploys/eas.py", *data)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        chain = served(certs_lab, "push1", "push.lab.test", 443)
        expected = x509.load_pem_x509_certificate(Path(pki["certificate"]).read_bytes())
        assert chain[0] == expected
        assert [c.subject.rfc4514_string() for c in chain[1:]] == [
            "CN=mmpush lab site intermediate"
        ], "the full chain is sent (the intermediate, not the root)"
        assert on("push1", "stat -c %a /etc/mmpush/tls/push.lab.test/privkey.pem").stdout == "600\n"
        assert ":80 " not in on("push1", "ss -ltnH").stdout
        skips = lab_skips("eas")
        del skips["test_eas.py::test_push_certificate_files_are_not_about_to_expire[push1]"]
        skips["test_eas.py::test_plain_http_redirects_to_https[push1]"] = "port 80 is closed"
        skips["test_eas.py::test_acme_challenges_are_served_on_port_80[push1]"] = (
            "port 80 is closed"
        )
        verify(*data).assert_passed(skips)
        again = deploy("deploys/eas.py", *data)
        assert grand_total(again)["success"] == 0, again.stdout[-3000:]
    finally:
        back = deploy("deploys/eas.py")
        assert back.returncode == 0, back.stderr[-3000:]
    # back on ACME: a certificate from Pebble replaced the site's one
    assert "Pebble" in served(certs_lab, "push1", "push.lab.test", 443)[0].issuer.rfc4514_string()


def bad_file(tmp_path: Path, pki: dict[str, str], kind: str) -> dict[str, str]:
    """Files a site could get wrong, each in its own way."""
    pem = serialization.Encoding.PEM
    if kind == "key-does-not-match":
        other = tmp_path / "other.key"
        key, _ = new_server_certificate(*new_ca("other", days=30), ["push.lab.test"])
        other.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return {"tls_certificate_key_file": str(other)}
    if kind == "incomplete-chain":
        return {"tls_certificate_chain_file": ""}  # the intermediate left out
    if kind == "not-pem":
        garbage = tmp_path / "cert.der"
        garbage.write_bytes(b"\x30\x82\x01\x00not a pem certificate")
        return {"tls_certificate_file": str(garbage)}
    ca_key, ca_cert = new_ca("mmpush lab site root 2", days=30)
    names = ["elsewhere.example"] if kind == "wrong-name" else ["push.lab.test"]
    key, cert = new_server_certificate(ca_key, ca_cert, names)
    if kind == "expired":
        cert = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("push.lab.test")]), False)
            .sign(ca_key, cert.signature_hash_algorithm)  # type: ignore[arg-type]
        )
    files = {
        "tls_certificate_file": tmp_path / "cert.pem",
        "tls_certificate_key_file": tmp_path / "key.pem",
        "tls_trust_anchors_file": tmp_path / "root.pem",
    }
    files["tls_certificate_file"].write_bytes(cert.public_bytes(pem))
    files["tls_certificate_key_file"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files["tls_trust_anchors_file"].write_bytes(ca_cert.public_bytes(pem))
    return {k: str(v) for k, v in files.items()} | {"tls_certificate_chain_file": ""}


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("key-does-not-match", "does not match"),
        ("incomplete-chain", "the chain is incomplete"),
        ("expired", "expired"),
        ("wrong-name", "push.lab.test"),
        ("not-pem", "is not PEM"),
    ],
)
def test_bad_certificate_files_are_refused_before_any_change(
    certs_lab: dict[str, Any], on: SshRunner, tmp_path: Path, kind: str, words: str
) -> None:
    pki = certs_lab["fixtures"]["pki"]
    before = on("push1", "sha256sum /etc/mmpush/tls/push.lab.test/*").stdout
    override = bad_file(tmp_path, pki, kind)
    data = tuple(d for d in files_data(pki, **override) if not d.endswith("="))
    refused(deploy("deploys/eas.py", *data), "host push1", "tls_certificate_file", words)
    assert on("push1", "sha256sum /etc/mmpush/tls/push.lab.test/*").stdout == before
