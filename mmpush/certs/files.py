"""Checks for a certificate, its chain and its key that a site brings from its own PKI.

All bytes are read on the control node, before any host changes. Every problem is a sentence
naming the file it is about; the key's content never appears in one.

    result = check_certificate_files(
        "push.corp.example", Path("push.crt"), Path("push.key"),
        chain=Path("chain.pem"), trust_anchors=Path("corp-root.pem"),
    )
    for warning in result.warnings:      # e.g. expires within 30 days
        logger.warning(warning)
    if result.errors:                    # key mismatch, incomplete chain, wrong name, expired...
        raise SettingsError("; ".join(result.errors))
    upload(result.fullchain_pem)         # leaf, then intermediates; the root left out

Checked: each file is PEM and parses; the key matches the certificate; a path leads from the
certificate to a trust anchor (the given anchors, else the control node's system store)
through the certificates given, without fetching anything (AIA is not followed), confirmed by
cryptography's X.509 path validation (``cryptography.x509.verification``); the name is in the
subjectAltName (a wildcard covers exactly one label); the certificate and its chain are valid
now; a warning within ``WARN_DAYS`` of expiry.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.utils import CryptographyDeprecationWarning

try:
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
except ImportError:  # pragma: no cover - cryptography < 42 has no path validation
    PolicyBuilder = None  # type: ignore[assignment,misc]

#: A certificate expiring within this many days gets a warning (not an error).
WARN_DAYS = 30
#: Longest path tried from the certificate to a trust anchor (anchor included).
MAX_CHAIN_DEPTH = 8
#: Where the control node's system trust store is looked for when no anchors are given.
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\r?\n?", re.DOTALL)


@dataclass(frozen=True)
class PemFile:
    """The bytes of a file read on the control node; ``name`` is how messages call it.

    PemFile.read(Path("push.key"))  # repr never shows the content
    """

    name: str
    data: bytes = field(repr=False)

    @classmethod
    def read(cls, path: Path) -> PemFile:
        """Read ``path``; OSError propagates (check_certificate_files words it)."""
        return cls(str(path), path.read_bytes())


@dataclass(frozen=True)
class FilesCheck:
    """What the checks found. ``fullchain_pem`` is the leaf then its intermediates in path
    order (root left out), as NGINX's ``ssl_certificate`` wants; "" when there are errors.

    result.ok == (not result.errors)
    """

    domain: str
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    fullchain_pem: str = ""
    not_after: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


class CertificateFilesError(ValueError):
    """The files cannot be used; the message lists every problem, each naming its file."""


@dataclass
class _Found:
    """A certificate and the file it came from."""

    cert: x509.Certificate
    file: str


# --- the whole check ----------------------------------------------------------------------------


def check_certificate_files(
    domain: str,
    certificate: Path,
    key: Path,
    chain: Path | None = None,
    trust_anchors: Path | None = None,
    *,
    now: dt.datetime | None = None,
    warn_days: int = WARN_DAYS,
) -> FilesCheck:
    """Read the files on the control node and check them (see the module docs).

    ``certificate`` holds the leaf (it may hold the intermediates too); ``chain`` more
    intermediates; ``trust_anchors`` the roots the hosts' clients trust (None: the control
    node's system store).

        check_certificate_files("push.corp.example", Path("push.crt"), Path("push.key"))
    """
    errors: list[str] = []

    def read(path: Path | None) -> PemFile | None:
        if path is None:
            return None
        try:
            return PemFile.read(path)
        except OSError as error:
            errors.append(f"cannot read {path}: {error.strerror or error}")
            return None

    cert_file, key_file = read(certificate), read(key)
    chain_file, anchors_file = read(chain), read(trust_anchors)
    if errors or cert_file is None or key_file is None:
        return FilesCheck(domain, tuple(errors), ())
    return check_certificate_pems(
        domain, cert_file, key_file, chain_file, anchors_file, now=now, warn_days=warn_days
    )


def require_certificate_files(
    domain: str,
    certificate: Path,
    key: Path,
    chain: Path | None = None,
    trust_anchors: Path | None = None,
    *,
    now: dt.datetime | None = None,
) -> FilesCheck:
    """check_certificate_files, raising CertificateFilesError listing every error.

    fullchain = require_certificate_files("push.corp.example", crt, key).fullchain_pem
    """
    result = check_certificate_files(domain, certificate, key, chain, trust_anchors, now=now)
    if result.errors:
        raise CertificateFilesError(
            f"the certificate files for {domain} cannot be used: " + "; ".join(result.errors)
        )
    return result


def check_certificate_pems(
    domain: str,
    certificate: PemFile,
    key: PemFile,
    chain: PemFile | None = None,
    trust_anchors: PemFile | None = None,
    *,
    now: dt.datetime | None = None,
    warn_days: int = WARN_DAYS,
) -> FilesCheck:
    """The checks on bytes already read (see check_certificate_files).

    check_certificate_pems("push.corp.example", PemFile("push.crt", crt), PemFile("k", key))
    """
    now = now or dt.datetime.now(dt.UTC)
    errors: list[str] = []
    warnings: list[str] = []
    given, problem = read_certificates(certificate)
    if problem:
        errors.append(problem)
    if chain is not None:
        more, problem = read_certificates(chain)
        given += more
        if problem:
            errors.append(problem)
    private_key, problem = read_private_key(key)
    if problem:
        errors.append(problem)
    if errors or not given:
        return FilesCheck(domain, tuple(errors), ())
    leaf = _leaf(given, certificate.name, private_key)
    if private_key is not None:
        errors += _optional(key_problem(leaf.cert, leaf.file, private_key, key.name))
    errors += _optional(name_problem(leaf.cert, leaf.file, domain))
    label = f"the certificate in {leaf.file}"
    leaf_errors, leaf_warnings = validity_problems(leaf.cert, label, now, warn_days)
    errors += leaf_errors
    warnings += leaf_warnings
    anchors, anchors_name, problem = trust_anchor_certificates(trust_anchors)
    if problem:
        errors.append(problem)
        return FilesCheck(domain, tuple(errors), tuple(warnings))
    path, problem = build_chain(leaf, given, anchors, anchors_name, domain, now)
    if problem:
        errors.append(problem)
    else:
        for found in path[1:]:
            what = f"the {'trust anchor' if found is path[-1] else 'intermediate'} {_who(found)}"
            more_errors, more_warnings = validity_problems(found.cert, what, now, warn_days)
            errors += more_errors
            warnings += more_warnings
        used = [found.cert for found in path]
        for found in given:
            if found.cert not in used and not _is_self_signed(found.cert):
                warnings.append(f"{_who(found)} is not on the path to a root and is left out")
    if errors:
        return FilesCheck(domain, tuple(errors), tuple(warnings))
    pem = serialization.Encoding.PEM
    fullchain = "".join(found.cert.public_bytes(pem).decode() for found in path[:-1])
    return FilesCheck(domain, (), tuple(warnings), fullchain, leaf.cert.not_valid_after_utc)


def _optional(problem: str | None) -> list[str]:
    return [problem] if problem else []


def _leaf(given: list[_Found], certificate_file: str, key: PrivateKeyTypes | None) -> _Found:
    """The certificate of the key (wherever it is in the files), else the first one given."""
    if key is not None:
        for found in given:
            if _spki(found.cert.public_key()) == _spki(key.public_key()):
                return found
    first = [found for found in given if found.file == certificate_file]
    return first[0] if first else given[0]


# --- single checks ------------------------------------------------------------------------------


def pem_block_types(data: bytes) -> list[str]:
    """The types of the PEM blocks in ``data``, in order.

    pem_block_types(fullchain) == ["CERTIFICATE", "CERTIFICATE"]
    """
    return [match.group(1).decode() for match in _PEM_BLOCK.finditer(data)]


def read_certificates(pem: PemFile) -> tuple[list[_Found], str | None]:
    """The certificates of a PEM file, or a problem naming it (not PEM, none, unparseable).

    certs, problem = read_certificates(PemFile("push.crt", data))
    """
    types = pem_block_types(pem.data)
    if not pem.data.strip():
        return [], f"{pem.name} is empty"
    if not types:
        if pem.data.lstrip()[:1] == b"\x30":
            return [], (
                f"{pem.name} is not PEM: it looks like DER (binary); convert it with"
                f" 'openssl x509 -inform der -in {pem.name} -out {pem.name}.pem'"
            )
        return [], f"{pem.name} is not PEM: it has no '-----BEGIN CERTIFICATE-----' block"
    if "CERTIFICATE" not in types:
        return [], f"{pem.name} holds no certificate (its PEM blocks: {', '.join(types)})"
    found = []
    for number, match in enumerate(_blocks(pem.data, "CERTIFICATE"), start=1):
        try:
            found.append(_Found(x509.load_pem_x509_certificate(match), pem.name))
        except ValueError as error:
            return [], f"{pem.name}: certificate number {number} cannot be parsed ({error})"
    return found, None


def _blocks(data: bytes, kind: str) -> list[bytes]:
    return [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1).decode() == kind]


def read_private_key(pem: PemFile) -> tuple[PrivateKeyTypes | None, str | None]:
    """The (unencrypted) private key of a PEM file, or a problem naming the file.

    key, problem = read_private_key(PemFile("push.key", data))
    """
    blocks = [
        match.group(0)
        for match in _PEM_BLOCK.finditer(pem.data)
        if match.group(1).endswith(b"PRIVATE KEY")
    ]
    if not blocks:
        types = pem_block_types(pem.data)
        kinds = f" (its PEM blocks: {', '.join(types)})" if types else ""
        return None, f"{pem.name} is not a PEM private key{kinds}"
    if len(blocks) > 1:
        return None, f"{pem.name} holds {len(blocks)} private keys; give exactly one"
    try:
        return serialization.load_pem_private_key(blocks[0], password=None), None
    except TypeError:
        return None, (
            f"{pem.name} is an encrypted private key; NGINX needs it unencrypted"
            f" ('openssl pkey -in {pem.name} -out <new file>', kept mode 0600)"
        )
    except (ValueError, UnsupportedAlgorithm):
        return None, f"{pem.name}: the private key cannot be parsed"


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_problem(
    cert: x509.Certificate, cert_file: str, key: PrivateKeyTypes, key_file: str
) -> str | None:
    """None when ``key`` is the private key of ``cert``, else the problem in words.

    key_problem(cert, "push.crt", key, "push.key")  # "push.key does not match ..."
    """
    if _spki(cert.public_key()) == _spki(key.public_key()):
        return None
    return (
        f"{key_file} does not match the certificate in {cert_file} (for"
        f" {_subject(cert)}): their public keys differ"
    )


def certificate_dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names of a certificate's subjectAltName ([] when it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)]


def name_matches(pattern: str, domain: str) -> bool:
    """Whether a certificate name covers ``domain``; ``*.`` stands for exactly one label.

    name_matches("*.corp.example", "push.corp.example") is True
    name_matches("*.corp.example", "a.push.corp.example") is False
    name_matches("*.corp.example", "corp.example") is False
    """
    pattern = pattern.strip().rstrip(".").lower()
    domain = domain.strip().rstrip(".").lower()
    if pattern.startswith("*."):
        label, _, rest = domain.partition(".")
        return bool(label) and label != "*" and rest == pattern[2:]
    return pattern == domain


def name_problem(cert: x509.Certificate, cert_file: str, domain: str) -> str | None:
    """None when the certificate's subjectAltName covers ``domain``, else why not.

    name_problem(cert, "push.crt", "push.corp.example")
    """
    names = certificate_dns_names(cert)
    if not names:
        return (
            f"the certificate in {cert_file} has no DNS name in a subjectAltName (clients"
            f" ignore the common name), so it is not valid for {domain}"
        )
    if any(name_matches(name, domain) for name in names):
        return None
    return f"the certificate in {cert_file} is for {', '.join(names)}, not for {domain}"


def validity_problems(
    cert: x509.Certificate, what: str, now: dt.datetime, warn_days: int = WARN_DAYS
) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the validity period of ``cert`` at ``now``.

    errors, warnings = validity_problems(cert, "the certificate in push.crt", now)
    """
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        return [f"{what} is not valid yet: valid from {not_before:%Y-%m-%d %H:%M} UTC"], []
    if now >= not_after:
        return [f"{what} expired on {not_after:%Y-%m-%d %H:%M} UTC"], []
    left = not_after - now
    if left < dt.timedelta(days=warn_days):
        return [], [
            f"{what} expires in {left.days} days, on {not_after:%Y-%m-%d}: renew it"
            f" (fewer than {warn_days} days left)"
        ]
    return [], []


# --- trust anchors and the path -----------------------------------------------------------------


def trust_anchor_certificates(
    anchors: PemFile | None,
) -> tuple[list[x509.Certificate], str, str | None]:
    """(certificates, how messages name them, problem) of the given anchors, else of the
    control node's system store (certificates that fail to parse there are skipped).

    anchors, name, problem = trust_anchor_certificates(PemFile("corp-root.pem", data))
    """
    if anchors is not None:
        found, problem = read_certificates(anchors)
        return [item.cert for item in found], f"the trust anchors in {anchors.name}", problem
    for path in _system_ca_files():
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        certs = []
        with warnings.catch_warnings():  # old roots with non-positive serials still count
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            for block in _blocks(data, "CERTIFICATE"):
                try:
                    certs.append(x509.load_pem_x509_certificate(block))
                except ValueError:
                    continue
        if certs:
            return certs, f"the control node's system trust store ({path})", None
    return [], "", (
        "no trust anchors: the control node has no system trust store"
        f" ({', '.join(SYSTEM_CA_FILES)}); give the root certificate(s) the hosts trust"
    )


def _system_ca_files() -> list[str]:
    paths = ssl.get_default_verify_paths()
    candidates = [paths.cafile, paths.openssl_cafile, *SYSTEM_CA_FILES]
    return list(dict.fromkeys(path for path in candidates if path))


def build_chain(
    leaf: _Found,
    given: Sequence[_Found],
    anchors: Sequence[x509.Certificate],
    anchors_name: str,
    domain: str,
    now: dt.datetime,
) -> tuple[list[_Found], str | None]:
    """The path from ``leaf`` to a trust anchor through the ``given`` certificates, or why
    there is none. Nothing is fetched. The path is built by issuer name and signature and
    then confirmed at ``now`` with cryptography's X.509 path validation (when available and
    every certificate on the path is valid at ``now``: validity is reported on its own).

        path, problem = build_chain(leaf, given, anchors, "corp-root.pem", domain, now)
        # path: [leaf, intermediate, ..., anchor]
    """
    path, problem = _path_by_signatures(leaf, given, anchors, anchors_name)
    if problem is not None:
        return [], problem
    if PolicyBuilder is None or not anchors:  # pragma: no cover - old cryptography
        return path, None
    reference = _reference_name(leaf.cert, domain)
    if reference is None:  # no usable DNS name: reported by name_problem
        return path, None
    if not all(_valid_at(found.cert, now) for found in path):  # reported by validity_problems
        return path, None
    intermediates = [found.cert for found in given if found is not leaf]
    try:
        verifier = PolicyBuilder().store(Store(list(anchors))).time(now)
        verified = verifier.build_server_verifier(reference).verify(leaf.cert, intermediates)
    except VerificationError as error:
        return [], (
            f"the chain of the certificate in {leaf.file} up to {_who(path[-1])} fails X.509"
            f" path validation: {error}"
        )
    by_cert = {found.cert: found for found in [*given, *path]}
    return [by_cert.get(cert, _Found(cert, anchors_name)) for cert in verified], None


def _reference_name(cert: x509.Certificate, domain: str) -> x509.DNSName | None:
    """The name to validate the path for: ``domain`` when the certificate is for it, else
    one of its own names (so that a wrong name does not hide chain problems)."""
    names = certificate_dns_names(cert)
    candidates = [domain] if any(name_matches(name, domain) for name in names) else []
    candidates += [name.replace("*", "mmpush-check", 1) for name in names]
    for candidate in candidates:
        try:
            return x509.DNSName(candidate)
        except ValueError:
            continue
    return None


def _path_by_signatures(
    leaf: _Found, given: Sequence[_Found], anchors: Sequence[x509.Certificate], anchors_name: str
) -> tuple[list[_Found], str | None]:
    """Walk from the leaf to an anchor by issuer name and signature; say where it stops."""
    path = [leaf]
    current = leaf
    files = sorted({found.file for found in given})
    while len(path) < MAX_CHAIN_DEPTH:
        for anchor in anchors:
            if current.cert == anchor or _signed_by(current.cert, anchor):
                if current.cert != anchor:
                    path.append(_Found(anchor, anchors_name))
                return path, None
        if _is_self_signed(current.cert):
            return [], (
                f"the chain of the certificate in {path[0].file} ends at the root"
                f" {_who(current)}, which is not among {anchors_name}: give trust anchors"
                " that include it"
            )
        candidates = [
            found
            for found in given
            if found.cert.subject == current.cert.issuer and found not in path
        ]
        issuer = next((found for found in candidates if _signed_by(current.cert, found.cert)), None)
        if issuer is None:
            issuer_name = current.cert.issuer.rfc4514_string()
            if candidates:
                return [], (
                    f"the chain is broken: {_who(candidates[0])} is named as the issuer of"
                    f" {_who(current)} but did not sign it"
                )
            return [], (
                f"the chain is incomplete: the certificate of '{issuer_name}', which issued"
                f" {_who(current)}, is not in {' or '.join(files)} nor among {anchors_name}:"
                " add that intermediate to the chain file, or give trust anchors that hold it"
            )
        path.append(issuer)
        current = issuer
    return [], f"the chain of the certificate in {leaf.file} is longer than {MAX_CHAIN_DEPTH}"


def _valid_at(cert: x509.Certificate, moment: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= moment < cert.not_valid_after_utc


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and _signed_by(cert, cert)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "an empty subject"


def _who(found: _Found) -> str:
    """'<subject>' (in <file>), for messages."""
    return f"'{_subject(found.cert)}' (in {found.file})"
