"""TLS certificates from an ACME CA (Let's Encrypt by default), like Ansible's
acme_certificate: the ACME client runs on the control node, the private key is generated on
the host and never leaves it, and the CA's HTTP-01 check is answered from NGINX's webroot.

    certificate(name="Certificate for push.example.com", domain="push.example.com",
                acme=settings.acme)

Issuance happens only when there is no certificate yet, it is for another name or key, or it
is inside its renewal window (ARI when the CA offers it, else a third of its lifetime left).
When the CA fails, the old certificate stays in place and the operation fails, naming why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import shlex
from pathlib import PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyinfra import host, logger
from pyinfra.api import FunctionCommand, OperationError, StringCommand, operation
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.files import File

from mmpush import acme
from mmpush.certs import dns01
from mmpush.facts import FileBytes, PublicKeySha256
from mmpush.operations import (
    connector_arguments,
    prepare_staging,
    run_checked,
    upload_command,
    upload_private,
)
from mmpush.settings import AcmeConfig, CertificateFiles, Settings
from mmpush.transactions import (
    BACKUP_DIR,
    STAGING_DIR,
    FileChange,
    bash,
    new_private_key_script,
    nginx_transaction_script,
)

TLS_DIR = "/etc/mmpush/tls"
ACME_WEBROOT = "/var/www/mmpush-acme"
CHALLENGE_DIR = f"{ACME_WEBROOT}/.well-known/acme-challenge"


def tls_paths(domain: str) -> tuple[str, str]:
    """(private key, full chain) paths for ``domain`` on the host."""
    return f"{TLS_DIR}/{domain}/privkey.pem", f"{TLS_DIR}/{domain}/fullchain.pem"


def source_path(domain: str) -> str:
    """Where the host records how its certificate for ``domain`` was had (not secret)."""
    return f"{TLS_DIR}/{domain}/source"


def source_marker(acme_config: AcmeConfig) -> str:
    """What the certificate's source file says: ``acme https://.../directory`` or ``files``.
    A certificate from another source (a site moving from its PKI to Let's Encrypt, or from
    Let's Encrypt's staging to production) is replaced, whatever its dates."""
    if acme_config.source == "files":
        return "files"
    return f"acme {acme_config.directory_url}"


class CertificateSourceError(PyinfraError):
    """The certificate source cannot work (checked while preparing: nothing has changed)."""


def certificate_problem(
    domain: str, fullchain: bytes | None, key_sha256: str | None, acme_config: AcmeConfig
) -> str | None:
    """Why a new certificate is needed, or None when the installed one is good.

    certificate_problem("push.example.com", None, None, cfg) == "no certificate yet"
    """
    if fullchain is None or key_sha256 is None:
        return "no certificate yet"
    try:
        leaf = x509.load_pem_x509_certificates(fullchain)[0]
    except ValueError:
        return "the installed certificate cannot be parsed"
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = names.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = []
    if domain not in dns_names:
        return f"the installed certificate is for {', '.join(dns_names) or 'no name'}"
    public = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public)
    if digest.finalize().hex() != key_sha256:
        return "the installed certificate does not match the host's private key"
    window = None
    try:
        window = acme.fetch_ari_window(_acme_settings(acme_config), fullchain)
    except acme.AcmeError as error:
        logger.warning(f"    [{domain}] ARI unavailable ({error}); using the lifetime rule")
    now = dt.datetime.now(dt.UTC)
    expires = leaf.not_valid_after_utc
    if acme.renewal_due(fullchain, now, window):
        return f"renewal due (expires {expires:%Y-%m-%d})"
    if acme_config.renew_days is not None and expires - now < dt.timedelta(acme_config.renew_days):
        return f"fewer than {acme_config.renew_days} days left (expires {expires:%Y-%m-%d})"
    return None


def _acme_settings(config: AcmeConfig) -> acme.AcmeSettings:
    return acme.AcmeSettings(
        directory_url=config.directory_url,
        email=config.email,
        ca_bundle=config.ca_bundle,
        timeout=120,
    )


def account_key(config: AcmeConfig) -> Any:
    """The ACME account key kept on the control node (made, 0600, on first use)."""
    path = config.account_key_file
    if path.exists():
        return acme.load_account_key(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = acme.generate_account_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(acme.account_key_pem(key))
    return key


@operation()
def certificate(domain: str, acme_config: AcmeConfig):
    """Make sure ``domain`` has a valid certificate on the host (see module docs), from the
    source ``acme_config`` says: ACME HTTP-01 (NGINX must already serve
    ``/.well-known/acme-challenge/`` for ``domain`` on port 80 from ``ACME_WEBROOT``), ACME
    DNS-01 (a TXT record through the zone's dynamic updates), or files a site brings.
    """
    if acme_config.source == "files":
        assert acme_config.files is not None, "certificate files are checked with the settings"
        yield from _certificate_from_files(domain, acme_config.files)
        return
    key_path, chain_path = tls_paths(domain)
    key_info = host.get_fact(File, path=key_path)
    problem = acme_certificate_problem_on_host(domain, acme_config)
    if problem is None:
        host.noop(f"certificate for {domain} is valid and not due for renewal")
        return
    logger.info(
        f"    [{host.name}] certificate for {domain}: {problem}: issuing from "
        f"{acme_config.directory_url} ({acme_config.source})"
    )
    if not key_info:
        yield bash(new_private_key_script(key_path))
    yield FunctionCommand(_issue, (domain, key_path, chain_path, acme_config), {})


def acme_certificate_problem_on_host(domain: str, acme_config: AcmeConfig) -> str | None:
    """Why the host's ACME certificate for ``domain`` must be issued now (``None``: it is valid,
    from this source and not due), read from the host's facts."""
    key_path, chain_path = tls_paths(domain)
    key_info = host.get_fact(File, path=key_path)
    fullchain = host.get_fact(FileBytes, path=chain_path)
    key_sha = host.get_fact(PublicKeySha256, path=key_path) if key_info else None
    recorded = host.get_fact(FileBytes, path=source_path(domain))
    problem = certificate_problem(domain, fullchain, key_sha, acme_config)
    came_from = recorded.decode().strip() if recorded is not None else None
    if problem is None and came_from is not None and came_from != source_marker(acme_config):
        problem = f"the installed certificate came from {came_from}"
    return problem


def check_certificate_source(domain: str, acme_config: AcmeConfig) -> None:
    """Call from deploy code (it runs while preparing, before any host changes, with or without
    ``-y``; an operation's body runs only at execution under ``-y``): when the host needs a new
    ACME DNS-01 certificate, prove the zone takes our updates first.

        check_certificate_source("push.internal.example", settings.acme)
    """
    if acme_config.source != "acme-dns01":
        return
    if acme_certificate_problem_on_host(domain, acme_config) is not None:
        check_dns01_access(domain, acme_config)


def check_dns01_access(domain: str, acme_config: AcmeConfig) -> None:
    """Before any host changes: the TSIG key may add and remove the challenge record, the zone
    exists on the server, and every authoritative server answers it within the timeout
    (a probe record, removed at once); otherwise stop the run naming host, setting, server."""
    dns = acme_config.dns
    assert dns is not None
    try:
        updater = _updater(acme_config)
        dns01.probe_update_access(updater, domain, timeout=dns.propagation_timeout)
    except dns01.Dns01Error as error:
        raise CertificateSourceError(
            f"host {host.name}: tls_certificate_source = 'acme-dns01' (acme_dns_server "
            f"{dns.server}, acme_dns_zone {dns.zone}, acme_dns_tsig_key_name "
            f"{dns.tsig_key_name}) cannot get a certificate for {domain}: {error}; nothing was "
            "changed on any host"
        ) from None


def _updater(acme_config: AcmeConfig) -> dns01.DnsUpdater:
    dns = acme_config.dns
    assert dns is not None
    return dns01.DnsUpdater(
        dns.server,
        dns.zone,
        dns.tsig_key_name,
        dns.tsig_algorithm,
        dns.tsig_secret.content.decode().strip(),
    )


def _certificate_from_files(domain: str, files: CertificateFiles):
    """Install a certificate and key a site brings (checked on the control node with the
    settings): both in one NGINX transaction, so NGINX never sees one without the other."""
    key_path, chain_path = tls_paths(domain)
    current_chain = host.get_fact(FileBytes, path=chain_path)
    current_key = host.get_fact(PublicKeySha256, path=key_path)
    wanted_key = public_key_sha256(files.key.content)
    recorded = host.get_fact(FileBytes, path=source_path(domain))
    if (
        current_chain == files.fullchain
        and current_key == wanted_key
        and recorded is not None
        and recorded.decode().strip() == "files"
    ):
        host.noop(f"certificate for {domain} is {files.certificate_file} (until {files.not_after})")
        return
    logger.info(
        f"    [{host.name}] certificate for {domain}: {files.certificate_file} and its key "
        "(not shown)"
    )
    token = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    directory = shlex.quote(str(PurePosixPath(key_path).parent))
    yield f"{prepare_staging()} && install -d -m 700 {directory}"
    staged_chain = f"{STAGING_DIR}/cert-{token}"
    staged_key = f"{STAGING_DIR}/key-{token}"
    yield upload_command(files.fullchain, staged_chain)
    yield upload_command(files.key.content, staged_key)
    changes = [
        FileChange(chain_path, staged_chain, hashlib.sha256(files.fullchain).hexdigest(), "644"),
        FileChange(key_path, staged_key, files.key.sha256, "600"),
    ]
    yield bash(
        nginx_transaction_script(changes, f"{BACKUP_DIR}/cert-{token}", start_if_stopped=False)
    )
    yield record_source_command(domain, "files")


def public_key_sha256(key_pem: bytes) -> str | None:
    """sha256 (hex) of the DER public key of a PEM private key, as the PublicKeySha256 fact
    computes it on a host; None when it does not parse."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(public).hexdigest()


def _issue(
    state: Any, host: Any, domain: str, key_path: str, chain_path: str, acme_config: AcmeConfig
) -> bool:
    """Get a certificate for the key on the host (runs at execution time). Returns False,
    after logging why, when it fails: pyinfra then fails the operation without a traceback.
    """
    try:
        _issue_or_raise(state, host, domain, key_path, chain_path, acme_config)
    except (acme.AcmeError, OperationError, dns01.Dns01Error) as error:
        host.log_styled(
            f"certificate for {domain} not renewed: {error}; the previous certificate "
            "(if any) is kept and still served",
            fg="red",
            log_func=logger.error,
        )
        return False
    return True


def _issue_or_raise(
    state: Any, host: Any, domain: str, key_path: str, chain_path: str, acme_config: AcmeConfig
) -> None:
    csr = run_checked(
        state,
        host,
        f"openssl req -new -key {shlex.quote(key_path)} -subj /CN={domain} "
        f"-addext subjectAltName=DNS:{domain}",
        "making the certificate request (openssl req)",
    )
    if acme_config.source == "acme-dns01":
        issued = _obtain_dns01(acme_config, csr.encode())
    else:
        issued = _obtain_http01(state, host, acme_config, csr.encode())
    install_certificate(state, host, chain_path, issued.fullchain_pem.encode())
    record_source(state, host, domain, source_marker(acme_config))
    logger.info(
        f"    [{host.name}] certificate for {domain} issued, valid until "
        f"{issued.not_after:%Y-%m-%d}"
    )


def _obtain_http01(
    state: Any, host: Any, acme_config: AcmeConfig, csr: bytes
) -> acme.IssuedCertificate:
    """ACME HTTP-01: the tokens are served from NGINX's ACME webroot on the host."""

    def publish(token: str, key_authorization: str) -> None:
        run_checked(
            state,
            host,
            bash(
                f"set -euo pipefail; umask 022; mkdir -p {CHALLENGE_DIR}; "
                f"printf %s {shlex.quote(key_authorization)} > {CHALLENGE_DIR}/{shlex.quote(token)}"
            ),
            "publishing the ACME HTTP-01 token",
        )

    def unpublish(token: str) -> None:
        host.run_shell_command(
            StringCommand(f"rm -f {CHALLENGE_DIR}/{shlex.quote(token)}"),
            **connector_arguments(host),
        )

    return acme.obtain_certificate(
        _acme_settings(acme_config), account_key(acme_config), csr, publish, unpublish
    )


def _obtain_dns01(acme_config: AcmeConfig, csr: bytes) -> acme.IssuedCertificate:
    """ACME DNS-01: the TXT record is added through the zone's dynamic updates (TSIG), every
    authoritative server is asked until it answers it, and it is removed afterwards, on
    failure too. Nothing touches the host: only the CSR left it."""
    dns = acme_config.dns
    assert dns is not None
    publisher = dns01.Dns01Publisher(_updater(acme_config), timeout=dns.propagation_timeout)
    try:
        return acme.obtain_certificate_dns01(
            _acme_settings(acme_config),
            account_key(acme_config),
            csr,
            publisher.publish,
            publisher.unpublish,
        )
    except acme.ChallengeCleanupError as error:
        if error.issued is not None:
            logger.error(f"    {error}: the certificate was issued and is installed")
            return error.issued
        raise


def record_source_command(domain: str, marker: str) -> str:
    """The command that records how the certificate for ``domain`` was had."""
    return f"printf '%s\\n' {shlex.quote(marker)} > {shlex.quote(source_path(domain))}"


def record_source(state: Any, host: Any, domain: str, marker: str) -> None:
    run_checked(state, host, record_source_command(domain, marker), "recording the source")


def install_certificate(state: Any, host: Any, chain_path: str, fullchain: bytes) -> None:
    """Put a new full chain in place as an NGINX transaction: the old one is saved (checked),
    the new one written (checked), and NGINX, if running, reloaded only when ``nginx -t``
    passes; otherwise the old certificate is put back and this fails."""
    token = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    staged = f"{STAGING_DIR}/cert-{token}"
    run_checked(state, host, prepare_staging(), "preparing the staging directory")
    upload_private(state, host, fullchain, staged)
    change = FileChange(chain_path, staged, hashlib.sha256(fullchain).hexdigest(), mode="644")
    script = nginx_transaction_script(
        [change], f"{BACKUP_DIR}/cert-{token}", start_if_stopped=False
    )
    run_checked(state, host, bash(script), f"installing the new certificate {chain_path}")


def managed_domains(settings: Settings) -> list[str]:
    """The certificates this project manages on the host (what deploys/certs.py renews)."""
    domains = []
    if settings.eas is not None:
        domains.append(settings.eas.push_name)
    if settings.outbound is not None:
        domains.append(settings.outbound.name)
    return domains
