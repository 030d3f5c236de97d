"""Helpers to run the emulators in tests: subprocesses on free loopback ports, a throwaway CA,
and parsers for what the emulators record.

Runs on the control node (the project venv), so it may use ``cryptography``; the emulator
programs themselves stay standard-library only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EMULATORS_DIR = Path(__file__).resolve().parent
MATTERMOST_EMULATOR = EMULATORS_DIR / "mattermost" / "mattermost_emulator.py"
MATTERMOST_DEFAULT_CONFIG = EMULATORS_DIR / "mattermost" / "config.json"
PUSH_PROXY_EMULATOR = EMULATORS_DIR / "push_proxy" / "mattermost_push_proxy_emulator.py"
HPNS_EMULATOR = EMULATORS_DIR / "hpns" / "hpns_emulator.py"
DELIVERY_MARKER = "EMULATOR-DELIVERY "
PLACEHOLDER_PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----\n"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_delivery_records(text: str) -> list[dict[str, Any]]:
    """Every ``EMULATOR-DELIVERY {json}`` record in a push proxy emulator log."""
    records = []
    for line in text.splitlines():
        _, marker, payload = line.partition(DELIVERY_MARKER)
        if marker:
            records.append(json.loads(payload))
    return records


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a record file (empty when the file does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class EmulatorProcess:
    """A running emulator subprocess; stdout and stderr go to files (no pipe can fill up)."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / "stderr.log"

    def start(self) -> EmulatorProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                list(self.argv), cwd=self.cwd, env=dict(self.env), stdout=out, stderr=err
            )
        return self

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        return (
            f"argv={list(self.argv)}\n--- stdout ---\n{self.stdout()}\n"
            f"--- stderr ---\n{self.stderr()}"
        )

    def wait_exit(self, timeout: float = 10) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def wait_port(self, port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
        """Wait until the port accepts connections; fail with the process output if it dies."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with {self.process.returncode}\n{self.describe()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                return
            time.sleep(0.03)
        raise TimeoutError(f"port {port} not open after {timeout}s\n{self.describe()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextlib.contextmanager
def running(process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """Start the process and always stop it, even when the test fails."""
    try:
        yield process.start()
    finally:
        process.stop()


def base_env(**extra: str) -> dict[str, str]:
    """A minimal environment for emulator subprocesses: no proxies, no inherited MM_ settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MM_")
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        and key not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "PUSH_PROXY_EMULATOR_RECORD")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def python_argv(script: Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


def http_request(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
    raw_body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP request (no proxies); returns (status, headers, body) even for 4xx/5xx."""
    data = (
        raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and "Content-Type" not in request.headers:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# --------------------------------------------------------------------------------------------
# Throwaway TLS material (cryptography)
# --------------------------------------------------------------------------------------------


@dataclass
class TestPki:
    ca_cert: Path
    server_cert: Path  # leaf + CA chain (fullchain.pem)
    server_key: Path


def make_test_pki(
    directory: Path, dns_names: Sequence[str], ip_addresses: Sequence[str] = ()
) -> TestPki:
    """A CA and a server certificate for the given names, written as PEM files."""
    from cryptography.hazmat.primitives import serialization

    from mmpush.lab.ca import new_ca, new_server_certificate

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = new_ca("mmpush emulator test CA", days=1)
    leaf_key, leaf_cert = new_server_certificate(ca_key, ca_cert, dns_names, ip_addresses, days=1)
    pem = serialization.Encoding.PEM
    pki = TestPki(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "fullchain.pem",
        server_key=directory / "privkey.pem",
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    pki.server_key.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


def make_apns_p8_key(path: Path) -> Path:
    """A throwaway EC P-256 key in PKCS#8 PEM, shaped like an APNs .p8 auth key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def make_fcm_service_account(
    path: Path,
    project_id: str = "mmpush-emulator-test",
    token_uri: str = "https://oauth2.googleapis.com/token",
    private_key: str | None = None,
) -> Path:
    """A service-account JSON shaped like Google's, with a real throwaway RSA key (the push proxy
    emulator signs its OAuth2 assertion with it); ``private_key`` replaces the key text."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if private_key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project_id,
                "private_key_id": "0" * 40,
                "private_key": private_key,
                "client_email": f"push@{project_id}.iam.gserviceaccount.com",
                "client_id": "1" * 21,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": token_uri,
            },
            indent=2,
        )
    )
    return path


# --------------------------------------------------------------------------------------------
# APNs / FCM / Google OAuth2 stand-in (apple_google/push_services_emulator.py) and credentials
# --------------------------------------------------------------------------------------------

PUSH_SERVICES_EMULATOR = EMULATORS_DIR / "apple_google" / "push_services_emulator.py"
#: The names the stand-in answers; its certificate carries all four.
PUSH_SERVICE_HOSTS = (
    "api.push.apple.com",
    "api.sandbox.push.apple.com",
    "fcm.googleapis.com",
    "oauth2.googleapis.com",
)
UNDELIVERED_MARKER = "EMULATOR-UNDELIVERED "
APNS_KEY_FORMS = (
    "pkcs8",
    "sec1",
    "rsa-pkcs8",
    "p384-pkcs8",
    "encrypted-pkcs8",
    "certificate-first",
    "not-pem",
)
APNS_CERT_KEY_FORMS = ("pkcs1", "pkcs8", "legacy-encrypted", "pkcs8-encrypted", "none")


def parse_undelivered_records(text: str) -> list[dict[str, Any]]:
    """Every ``EMULATOR-UNDELIVERED {json}`` record (a push the upstream did not accept)."""
    records = []
    for line in text.splitlines():
        _, marker, payload = line.partition(UNDELIVERED_MARKER)
        if marker:
            records.append(json.loads(payload))
    return records


def push_services_upstreams(port: int, address: str = "127.0.0.1") -> str:
    """``$PUSH_PROXY_EMULATOR_UPSTREAMS`` sending every real push-service name to the stand-in."""
    return ",".join(f"{host}={address}:{port}" for host in PUSH_SERVICE_HOSTS)


def public_key_pem(private_key_pem: bytes | str) -> str:
    """The SubjectPublicKeyInfo PEM of a PEM private key (for the stand-in's registry)."""
    from cryptography.hazmat.primitives import serialization

    data = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(data, password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_apns_key_file(path: Path, form: str = "pkcs8") -> tuple[Path, str | None]:
    """An APNs auth key file in one of APNS_KEY_FORMS: ``pkcs8`` (a good .p8, P-256),
    ``sec1`` (``EC PRIVATE KEY``), ``rsa-pkcs8``, ``p384-pkcs8``, ``encrypted-pkcs8``,
    ``certificate-first`` (a certificate block, then the key), ``not-pem``.
    Returns (path, public key PEM or None).

        p8, public = make_apns_key_file(tmp / "AuthKey.p8")
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if form not in APNS_KEY_FORMS:
        raise ValueError(f"unknown APNs key form {form!r}")
    if form == "not-pem":
        path.write_text("this is not a key\n")
        return path, None
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if form == "rsa-pkcs8"
        else ec.generate_private_key(ec.SECP384R1() if form == "p384-pkcs8" else ec.SECP256R1())
    )
    pem = serialization.Encoding.PEM
    encryption: Any = serialization.NoEncryption()
    key_format = serialization.PrivateFormat.PKCS8
    if form == "sec1":
        key_format = serialization.PrivateFormat.TraditionalOpenSSL
    if form == "encrypted-pkcs8":
        encryption = serialization.BestAvailableEncryption(b"not-used-by-apns2")
    data = key.private_bytes(pem, key_format, encryption)
    if form == "certificate-first":
        from mmpush.lab.ca import new_ca

        data = new_ca("not an APNs key", days=1)[1].public_bytes(pem) + data
    path.write_bytes(data)
    public = key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public.decode()


@dataclass
class ApnsClientCa:
    """A CA for APNs client certificates (the stand-in trusts it as APNs trusts Apple's WWDR)."""

    cert: Path
    key: Any = field(repr=False)


def make_apns_client_ca(directory: Path) -> ApnsClientCa:
    """A throwaway CA that issues APNs-like client certificates (make_apns_certificate)."""
    from cryptography.hazmat.primitives import serialization

    from mmpush.lab.ca import new_ca

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = new_ca("mmpush emulator Apple WWDR-like CA", days=1)
    path = directory / "apns-client-ca.pem"
    path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ApnsClientCa(cert=path, key=ca_key)


def make_apns_certificate(
    path: Path,
    topic: str,
    ca: ApnsClientCa,
    key_form: str = "pkcs1",
    password: str = "",
    days: int = 30,
) -> str:
    """A PEM like an APNs push certificate exported for the push proxy: the certificate (UID =
    topic, CN "Apple Push Services: <topic>", issued by ``ca``) then its RSA key in one of
    APNS_CERT_KEY_FORMS (``legacy-encrypted`` = ``DEK-Info``, ``pkcs8-encrypted`` = ``ENCRYPTED
    PRIVATE KEY``, both with ``password``). Returns the certificate's sha256 (hex).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if key_form not in APNS_CERT_KEY_FORMS:
        raise ValueError(f"unknown key form {key_form!r}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, topic),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Apple Push Services: {topic}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    data = cert.public_bytes(pem)
    if key_form != "none":
        key_format = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if key_form in ("pkcs1", "legacy-encrypted")
            else serialization.PrivateFormat.PKCS8
        )
        encryption: Any = (
            serialization.BestAvailableEncryption(password.encode())
            if key_form.endswith("encrypted")
            else serialization.NoEncryption()
        )
        data += key.private_bytes(pem, key_format, encryption)
    path.write_bytes(data)
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class PushServicesRegistry:
    """The stand-in's ``registry.json`` (format in tests/emulators/README.md).

    registry = PushServicesRegistry()
    registry.add_apns_key("TEAMID1234", "KEYID12345", public_pem, topics=["com.x"])
    registry.add_service_account_file(Path("fcm.json"))
    registry.write(data_dir)
    """

    data: dict[str, Any] = field(
        default_factory=lambda: {
            "apns": {"keys": [], "certificates": [], "teams": {}, "devices": {}},
            "google": {"service_accounts": []},
            "fcm": {"devices": {}, "accept_unknown_tokens": False},
        }
    )

    def add_apns_key(
        self,
        team_id: str,
        key_id: str,
        public_key: str,
        topics: Sequence[str] = (),
        revoked: bool = False,
    ) -> PushServicesRegistry:
        entry = {"team_id": team_id, "key_id": key_id, "public_key_pem": public_key}
        entry.update(topics=list(topics), revoked=revoked)
        self.data["apns"]["keys"].append(entry)
        return self

    def add_apns_key_file(
        self,
        p8: Path,
        team_id: str,
        key_id: str,
        topics: Sequence[str] = (),
        revoked: bool = False,
    ) -> PushServicesRegistry:
        """Register the public half of a PEM (.p8) key file."""
        return self.add_apns_key(team_id, key_id, public_key_pem(p8.read_bytes()), topics, revoked)

    def add_apns_certificate(
        self,
        sha256: str,
        topics: Sequence[str],
        environment: str = "both",
        revoked: bool = False,
    ) -> PushServicesRegistry:
        entry = {"sha256": sha256, "topics": list(topics), "environment": environment}
        entry["revoked"] = revoked
        self.data["apns"]["certificates"].append(entry)
        return self

    def set_team_topics(self, team_id: str, topics: Sequence[str]) -> PushServicesRegistry:
        self.data["apns"]["teams"][team_id] = {"topics": list(topics)}
        return self

    def add_apns_device(
        self,
        token: str,
        topic: str | None = None,
        environment: str = "production",
        unregistered: bool = False,
    ) -> PushServicesRegistry:
        entry: dict[str, Any] = {"environment": environment, "unregistered": unregistered}
        if topic:
            entry["topic"] = topic
        self.data["apns"]["devices"][token.lower()] = entry
        return self

    def add_service_account(
        self,
        client_email: str,
        project_id: str,
        public_key: str,
        private_key_id: str = "",
        revoked: bool = False,
    ) -> PushServicesRegistry:
        entry = {"client_email": client_email, "project_id": project_id}
        entry.update(public_key_pem=public_key, private_key_id=private_key_id, revoked=revoked)
        self.data["google"]["service_accounts"].append(entry)
        return self

    def add_service_account_file(self, path: Path, revoked: bool = False) -> PushServicesRegistry:
        """Register the service account of a service-account JSON (its key's public half)."""
        account = json.loads(path.read_text())
        return self.add_service_account(
            account["client_email"],
            account["project_id"],
            public_key_pem(account["private_key"]),
            account.get("private_key_id", ""),
            revoked,
        )

    def add_fcm_device(
        self, token: str, project_id: str, unregistered: bool = False
    ) -> PushServicesRegistry:
        entry = {"project_id": project_id, "unregistered": unregistered}
        self.data["fcm"]["devices"][token] = entry
        return self

    def accept_unknown_fcm_tokens(self, accept: bool = True) -> PushServicesRegistry:
        """Treat any unregistered FCM token as a live device (the real FCM answers
        INVALID_ARGUMENT to a token it never issued)."""
        self.data["fcm"]["accept_unknown_tokens"] = accept
        return self

    def write(self, data_dir: Path) -> Path:
        """Write ``<data_dir>/registry.json`` atomically (the stand-in re-reads it)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "registry.json"
        temporary = data_dir / "registry.json.tmp"
        temporary.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(temporary, path)
        return path


@dataclass
class PushServices:
    """A running stand-in: its port, data dir, TLS material and process."""

    port: int
    data_dir: Path
    pki: TestPki
    process: EmulatorProcess

    def received(self) -> list[dict[str, Any]]:
        """Every request the stand-in recorded (``received.jsonl``)."""
        return read_jsonl(self.data_dir / "received.jsonl")

    def proxy_env(self) -> dict[str, str]:
        """Environment for a push proxy emulator that should reach this stand-in."""
        return {
            "SSL_CERT_FILE": str(self.pki.ca_cert),
            "PUSH_PROXY_EMULATOR_UPSTREAMS": push_services_upstreams(self.port),
        }

    def write_registry(self, registry: PushServicesRegistry) -> None:
        registry.write(self.data_dir)


def push_services_process(
    directory: Path, pki: TestPki, port: int, client_ca: Path | None = None
) -> EmulatorProcess:
    """The stand-in (not started) on 127.0.0.1:``port`` with its data in ``directory``/data."""
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        *("--cert", str(pki.server_cert), "--key", str(pki.server_key)),
        *("--port", str(port), "--bind", "127.0.0.1", "--data-dir", str(data_dir)),
    ]
    if client_ca is not None:
        argv += ["--apns-client-ca", str(client_ca)]
    return EmulatorProcess(
        python_argv(PUSH_SERVICES_EMULATOR, *argv),
        cwd=directory,
        env=base_env(),
        log_dir=directory / "out",
    )


@contextlib.contextmanager
def running_push_services(
    directory: Path,
    registry: PushServicesRegistry | None = None,
    client_ca: Path | None = None,
) -> Iterator[PushServices]:
    """The stand-in on a free loopback port with a throwaway CA for its four names."""
    pki = make_test_pki(directory / "pki", PUSH_SERVICE_HOSTS)
    port = free_port()
    process = push_services_process(directory, pki, port, client_ca)
    services = PushServices(port=port, data_dir=directory / "data", pki=pki, process=process)
    if registry is not None:
        services.write_registry(registry)
    with running(process):
        process.wait_port(port)
        yield services


def wait_for(
    condition: Any, timeout: float = 20, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# HTTP over a unix socket (the Mattermost emulator's local mode)
# --------------------------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def unix_http_request(
    socket_path: str | Path,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    """One HTTP request over a unix socket, as ``mmctl --local`` sends it: (status, body).

    status, raw = unix_http_request("/tmp/mm.sock", "GET", "/api/v4/config")
    """
    connection = _UnixHTTPConnection(str(socket_path), timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------
# A throwaway PostgreSQL cluster (initdb in a temporary directory, unix socket only)
# --------------------------------------------------------------------------------------------

POSTGRES_BINARIES = ("initdb", "pg_ctl")


def find_postgres_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/*/bin
    (the newest version first); None when PostgreSQL's server package is not installed."""
    import shutil

    on_path = [shutil.which(name) for name in POSTGRES_BINARIES]
    if all(on_path):
        return Path(str(on_path[0])).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in versions:
        if all((candidate / name).is_file() for name in POSTGRES_BINARIES):
            return candidate
    return None


@dataclass
class PostgresCluster:
    """A PostgreSQL server of its own in ``root`` (data, socket and log), listening on a unix
    socket only (no TCP), run as the ``postgres`` user when we are root (it refuses root).

        with PostgresCluster.started(bin_dir) as pg:
            dsn = pg.create_database("mm1", "mmuser", "secret")
    """

    bin_dir: Path
    root: Path
    port: int = 5432

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> PostgresCluster:
        for directory in (self.root, self.data_dir, self.socket_dir):
            directory.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil_chown(directory, "postgres")
        init = self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust")
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        # Superuser by socket without a password; everyone else with a password (scram).
        (self.data_dir / "pg_hba.conf").write_text(
            "local all postgres trust\nlocal all all scram-sha-256\n"
        )
        options = f"-k {self.socket_dir} -c listen_addresses='' -p {self.port}"
        started = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "start",
        )
        if started.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{log}")
        return self

    def restart(self) -> None:
        """Stop and start the server again (its connections break, its data stays)."""
        options = f"-k {self.socket_dir} -c listen_addresses='' -p {self.port}"
        argv = ["pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.log_file)]
        done = self._run(*argv, "-w", "-m", "fast", "restart")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    @classmethod
    @contextlib.contextmanager
    def started(cls, bin_dir: Path) -> Iterator[PostgresCluster]:
        """A running cluster in a short temporary directory (socket paths are limited to 107
        bytes), stopped and removed on exit."""
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="mmpg-", dir="/tmp"))
        cluster = cls(bin_dir=bin_dir, root=root)
        try:
            yield cluster.start()
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg2 connection as the superuser, autocommit."""
        import psycopg2  # type: ignore[import-untyped]

        conn = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=database
        )
        conn.autocommit = True
        return conn

    def execute(
        self, sql: str, params: Sequence[Any] = (), database: str = "postgres"
    ) -> list[Any]:
        """Run one statement as the superuser; the rows it returns (none for DDL)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, tuple(params))
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str, owner: str, password: str) -> str:
        """A database ``name`` owned by ``owner`` (created with ``password`` if new); returns
        its lib/pq DSN, the form Mattermost's MM_CONFIG takes, over the unix socket."""
        if not self.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)):
            self.execute(f'CREATE ROLE "{owner}" LOGIN PASSWORD %s', (password,))
        self.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.dsn(name, owner, password)

    def dsn(self, database: str, user: str, password: str) -> str:
        return (
            f"postgres://{user}:{password}@/{database}?host={self.socket_dir}&port={self.port}"
            "&sslmode=disable&connect_timeout=10&binary_parameters=yes"
        )


def shutil_chown(path: Path, user: str) -> None:
    """chown ``path`` to ``user`` (and its group)."""
    import shutil

    shutil.chown(path, user=user, group=user)
