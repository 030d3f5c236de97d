"""The lab's ACME CA: Pebble and pebble-challtestsrv running on the host.

The lab makes its own small CA ("mmpush lab CA") whose only job is the TLS certificate of
Pebble's listener. Clients trust the CA bundle the lab exports: that lab CA plus the root
Pebble issues from (fetched from Pebble's management API, new at every start).

    processes = start_pebble(paths)
    bundle = write_ca_bundle(paths)
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mmpush.lab.layout import (
    GATEWAY_IP,
    LAB_DNS_MANAGEMENT_PORT,
    LAB_DNS_PORT,
    PEBBLE_ACME_PORT,
    PEBBLE_MANAGEMENT_PORT,
    LabPaths,
)
from mmpush.lab.sh import LabError, wait_until

ACME_DIRECTORY_URL = f"https://127.0.0.1:{PEBBLE_ACME_PORT}/dir"
PEBBLE_MANAGEMENT_URL = f"https://127.0.0.1:{PEBBLE_MANAGEMENT_PORT}"
LAB_DNS_MANAGEMENT_URL = f"http://127.0.0.1:{LAB_DNS_MANAGEMENT_PORT}"
#: Let's Encrypt's lifetime; Pebble's default (5 years) fails Mozilla's profile.
CERTIFICATE_VALIDITY_SECONDS = 90 * 24 * 3600


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by root only, never group/world readable even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def new_ca(
    common_name: str,
    days: int,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A small EC P-256 CA that signs server certificates only (the lab's, the tests'):
    a root, or with ``issuer`` (key, certificate) an intermediate signed by it.

    ca_key, ca_cert = new_ca("mmpush lab CA", days=30)
    sub_key, sub_cert = new_ca("mmpush lab intermediate", days=30, issuer=(ca_key, ca_cert))
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signing_key, issuer_name = (issuer[0], issuer[1].subject) if issuer else (key, name)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key()),
            critical=False,
        )
    cert = (
        builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0 if issuer else 1), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    return key, cert


def make_files_pki(directory: Path, name: str) -> dict[str, str]:
    """A site's own PKI, for the ``files`` certificate source: a root, an intermediate, and a
    leaf for ``name`` (paths: root, certificate, chain, key). The root goes into the lab's CA
    bundle, so the hosts and the verify suite trust it, as a site's clients trust its root."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = new_ca("mmpush lab site root", days=365)
    intermediate = new_ca("mmpush lab site intermediate", days=200, issuer=root)
    key, leaf = new_server_certificate(intermediate[0], intermediate[1], [name])
    pem = serialization.Encoding.PEM
    files = {
        "root": directory / "site-root.pem",
        "certificate": directory / f"{name}.crt",
        "chain": directory / "site-intermediate.pem",
        "key": directory / f"{name}.key",
    }
    files["root"].write_bytes(root[1].public_bytes(pem))
    files["certificate"].write_bytes(leaf.public_bytes(pem))
    files["chain"].write_bytes(intermediate[1].public_bytes(pem))
    _write_private(files["key"], _pem_key(key))
    return {kind: str(path) for kind, path in files.items()}


def new_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    days: int = 30,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate from ``new_ca``'s CA for the names and addresses given.

    key, cert = new_server_certificate(ca_key, ca_cert, ["localhost"], ["127.0.0.1"])
    """
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_lab_ca(paths: LabPaths) -> None:
    """Create the lab CA and a certificate for Pebble's listener (127.0.0.1 and localhost)."""
    paths.ca_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = new_ca("mmpush lab CA", days=30)
    listener_key, listener_cert = new_server_certificate(
        ca_key, ca_cert, ["localhost"], ["127.0.0.1", GATEWAY_IP]
    )
    (paths.ca_dir / "lab-ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (paths.ca_dir / "pebble-listener.pem").write_bytes(
        listener_cert.public_bytes(serialization.Encoding.PEM)
    )
    _write_private(paths.ca_dir / "pebble-listener.key", _pem_key(listener_key))


def pebble_config(paths: LabPaths) -> dict[str, object]:
    """Pebble's config: HTTP-01 validation on port 80 of the lab hosts, 90-day certificates."""
    return {
        "pebble": {
            "listenAddress": f"127.0.0.1:{PEBBLE_ACME_PORT}",
            "managementListenAddress": f"127.0.0.1:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": str(paths.ca_dir / "pebble-listener.pem"),
            "privateKey": str(paths.ca_dir / "pebble-listener.key"),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": CERTIFICATE_VALIDITY_SECONDS,
        }
    }


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a long-running lab process detached from this one; return its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return process.pid


def lab_ssl_context(paths: LabPaths) -> ssl.SSLContext:
    """An SSL context trusting only the lab CA (for Pebble's own listener)."""
    return ssl.create_default_context(cafile=str(paths.ca_dir / "lab-ca.pem"))


def start_pebble(paths: LabPaths, dns_server: str = f"127.0.0.1:{LAB_DNS_PORT}") -> dict[str, int]:
    """Start pebble-challtestsrv (the lab DNS for lab names) and Pebble, which asks
    ``dns_server`` (the lab's authoritative DNS for internal zones, forwarding other names to
    challtestsrv); wait until the ACME directory answers. Returns the PIDs by process name."""
    config_file = paths.ca_dir / "pebble.json"
    config_file.write_text(json.dumps(pebble_config(paths), indent=2))
    dns = f"127.0.0.1:{LAB_DNS_PORT},{GATEWAY_IP}:{LAB_DNS_PORT}"
    pids = {
        "pebble-challtestsrv": _spawn(
            [
                "pebble-challtestsrv",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-dns01",
                dns,
                "-management",
                f"127.0.0.1:{LAB_DNS_MANAGEMENT_PORT}",
                "-defaultIPv4",
                "",
                "-defaultIPv6",
                "",
            ],
            paths.logs_dir / "pebble-challtestsrv.log",
        ),
    }
    pids["pebble"] = _spawn(
        ["pebble", "-config", str(config_file), "-dnsserver", dns_server],
        paths.logs_dir / "pebble.log",
        env={"PEBBLE_VA_NOSLEEP": "1"},
    )
    context = lab_ssl_context(paths)

    def directory_answers() -> bool:
        with urllib.request.urlopen(ACME_DIRECTORY_URL, context=context, timeout=2) as reply:
            return bool(json.load(reply).get("newOrder"))

    wait_until(f"Pebble's ACME directory at {ACME_DIRECTORY_URL}", directory_answers, 20)
    return pids


def write_ca_bundle(paths: LabPaths, extra_roots: Sequence[Path] = ()) -> Path:
    """Export the bundle clients trust: the lab CA (Pebble's listener), Pebble's issuing root,
    and ``extra_roots`` (the site PKI's root, for the ``files`` source)."""
    context = lab_ssl_context(paths)
    with urllib.request.urlopen(f"{PEBBLE_MANAGEMENT_URL}/roots/0", context=context) as reply:
        pebble_root = reply.read().decode()
    if "BEGIN CERTIFICATE" not in pebble_root:
        raise LabError("Pebble's /roots/0 did not return a certificate")
    (paths.ca_dir / "pebble-root.pem").write_text(pebble_root)
    lab_ca = (paths.ca_dir / "lab-ca.pem").read_text()
    extra = "".join(root.read_text() for root in extra_roots)
    paths.ca_bundle.write_text(lab_ca + pebble_root + extra)
    return paths.ca_bundle


def add_dns_record(name: str, ip: str) -> None:
    """Make the lab DNS (pebble-challtestsrv) answer ``name`` with ``ip``.

    Pebble validates HTTP-01 through this DNS, and lab hosts may use it as NGINX's resolver.

        add_dns_record("push.lab.test", "10.77.44.12")
    """
    body = json.dumps({"host": name, "addresses": [ip]}).encode()
    request = urllib.request.Request(f"{LAB_DNS_MANAGEMENT_URL}/add-a", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        if reply.status != 200:
            raise LabError(f"lab DNS refused the record {name} -> {ip}: HTTP {reply.status}")
