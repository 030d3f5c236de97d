"""EAS, your own push proxy, as its users notice it: once per host whose push_mode is "eas"
(any other mode is skipped, naming the mode).

    pytest tests/verify --inventory inventories/lab.py
    pytest tests/verify/test_eas.py --inventory inventories/mysite/inventory.py

push_proxies hosts: the push proxy service (user, sandbox, restart), what listens where, the
release, config and credentials on disk, NGINX's config, and the TLS front as a client of
the push URL sees it. mattermost hosts: config.json points at the push proxy, and the server
reaches it over TLS it trusts.

What every host should look like comes from its inventory data, validated as a deploy does
(``settings`` in conftest.py). The push front is checked from outside when the inventory sets
``acme_ca_bundle`` (a private ACME CA such as the lab's Pebble: the bundle is a file on this
control node), connecting to the host's ``ssh_hostname`` with the push name as SNI and Host;
otherwise on the host itself through 127.0.0.1 with openssl/curl and the host's trust store.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
import socket
import warnings
from pathlib import Path
from typing import Any, Protocol

import pytest
import testinfra

from mmpush.checks.push import probe_body, push_verdict
from mmpush.inventory import InventoryHost
from mmpush.nginx import DEFAULT_SITE
from mmpush.push_proxy import (
    BINARY,
    CONFIG_FILE,
    ROOT,
    SERVICE,
    USER,
)
from mmpush.settings import EasSettings, Settings
from tests.verify import tls
from tests.verify.hostcheck import LOOPBACK, TIMEOUT, Host, active_directives, check, listening, q

push_proxies = pytest.mark.group("push_proxies")
mattermost = pytest.mark.group("mattermost")

#: What the push front answers itself (only the push API and /version go to the push proxy;
#: /metrics never does from here: a scraper reads it from an allowed network or loopback).
FRONT_REFUSED: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("GET", "/", (404,)),
    ("GET", "/metrics", (404,)),
    ("GET", "/api/v1/other", (404,)),
    ("GET", "/api/v1/send_push", (403, 405)),
    ("GET", "/api/v1/ack", (403, 405)),
    ("POST", "/version", (403, 405)),
    ("GET", "/../etc/passwd", (400, 404)),
)
#: Where the credentials must be (docs: one file per app type, named after the type).
CREDENTIALS_DIR = "/etc/mattermost-push-proxy/credentials"
#: `systemd-analyze security` overall exposure must stay below this.
MAX_EXPOSURE = 2.0


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def eas_settings(settings: Settings) -> Settings:
    """The host's settings; skips hosts whose push_mode is not "eas"."""
    if settings.push_mode != "eas":
        pytest.skip(f"{settings.host}: push_mode is {settings.push_mode!r}, not 'eas'")
    return settings


@pytest.fixture
def eas(eas_settings: Settings) -> EasSettings:
    """The EAS settings of a push_proxies host."""
    assert eas_settings.eas is not None, f"{eas_settings.host} has no EAS settings"
    return eas_settings.eas


# --- the push front as a client of the push URL sees it -----------------------------------


class PushFront(tls.TlsFront, Protocol):
    """The push front (NGINX on the push name's https port, and port 80) seen by a client."""

    def http(self, path: str) -> tls.Reply:
        """A plain-HTTP GET on port 80 (redirects not followed)."""
        ...


@pytest.fixture
def front(
    eas_settings: Settings, eas: EasSettings, inventory_host: InventoryHost, host: Host
) -> PushFront:
    """The push front, from this control node when the inventory has acme_ca_bundle (that
    file is here), else from the host itself with its system trust store."""
    bundle = eas_settings.acme.ca_bundle
    if bundle:
        address = str(inventory_host.data.get("ssh_hostname") or inventory_host.name)
        return tls.ControlNodeFront(address, eas.push_name, eas.https_port, bundle)
    return tls.OnHostFront(host, eas.push_name, eas.https_port)


class FrontFromMattermost(tls.OnHostFront):
    """HTTPS requests to the push front sent by a Mattermost server (curl there, its trust
    store), as the front's real clients send them: for a front that only lets them in."""

    def __init__(self, server: Host, server_name: str, name: str, port: int, address: str):
        self.host, self.name, self.port, self.address = server, name, port, address
        self.where = (
            f"from Mattermost server {server_name} to {address}:{port} as {name} "
            "(its system trust store)"
        )

    def https(self, method: str, path: str, body: bytes | None = None) -> tls.Reply:
        options = f"--path-as-is --resolve {q(f'{self.name}:{self.port}:{self.address}')}"
        options += f" -X {method}"
        if body is not None:
            options += " -H 'Content-Type: application/json' --data-binary @-"
        return self._curl(options, f"https://{self.name}{tls.port_suffix(self.port)}{path}", body)


def control_node_source(address: str, port: int) -> str:
    """The address this control node connects to ``address:port`` from."""
    with socket.create_connection((address, port), timeout=TIMEOUT) as sock:
        return str(sock.getsockname()[0])


def is_allowed(source: str, networks: tuple[str, ...]) -> bool:
    """Whether a front with allow-list ``networks`` lets ``source`` in (none: everyone)."""
    if not networks:
        return True
    address = ipaddress.ip_address(source.removeprefix("::ffff:"))
    return any(address in ipaddress.ip_network(network) for network in networks)


@pytest.fixture
def client(
    front: PushFront,
    eas: EasSettings,
    inventory_host: InventoryHost,
    inventory: list[InventoryHost],
    ssh_config_file: Path,
) -> tls.TlsFront:
    """Who sends HTTPS requests to the push front: ``front`` when the front lets it in (its
    allow-list, push_front_allowed_networks), else the inventory's first Mattermost server."""
    if isinstance(front, tls.ControlNodeFront):
        source = control_node_source(front.address, eas.https_port)
    else:
        source = "127.0.0.1"
    if is_allowed(source, eas.front_allowed_networks):
        return front
    servers = [h for h in inventory if h.in_group("mattermost")]
    if not servers:
        pytest.skip(
            f"{source} is outside push_front_allowed_networks and the inventory has no "
            "Mattermost server to send requests from"
        )
    server = testinfra.get_host(
        f"ssh://{servers[0].name}", ssh_config=str(ssh_config_file), controlpersist=0
    )
    address = str(inventory_host.data.get("ssh_hostname") or inventory_host.name)
    return FrontFromMattermost(server, servers[0].name, eas.push_name, eas.https_port, address)


# --- push_proxies: the service ------------------------------------------------------------


@push_proxies
def test_push_proxy_is_running_and_starts_at_boot(host: Host, eas: EasSettings) -> None:
    service = host.service(SERVICE)
    assert service.is_running, f"{SERVICE} is not active: pushes are not delivered"
    assert service.is_enabled, f"{SERVICE} is not enabled: it would not start after a reboot"


@push_proxies
def test_push_proxy_runs_as_its_own_user_not_root(host: Host, eas: EasSettings) -> None:
    configured = check(host, f"systemctl show -p User --value {SERVICE}").strip()
    assert configured == USER, f"{SERVICE} is configured to run as {configured or 'root'!r}"
    pid = check(host, f"systemctl show -p MainPID --value {SERVICE}").strip()
    assert pid not in ("", "0"), f"{SERVICE} has no running process"
    uid = check(host, f"ps -o euid= -p {pid}").strip()
    expected = check(host, f"id -u {USER}").strip()
    assert uid != "0", f"{SERVICE} (pid {pid}) runs as root"
    assert uid == expected, f"{SERVICE} (pid {pid}) runs as uid {uid}, not {USER} ({expected})"


@push_proxies
def test_push_proxy_comes_back_after_a_crash(host: Host, eas: EasSettings) -> None:
    restart = check(host, f"systemctl show -p Restart --value {SERVICE}").strip()
    assert restart == "on-failure", f"{SERVICE} has Restart={restart}, expected on-failure"


@push_proxies
def test_push_proxy_is_sandboxed(host: Host, eas: EasSettings) -> None:
    out = check(host, f"systemd-analyze security --no-pager {SERVICE}.service")
    last = re.sub(r"\x1b\[[0-9;]*m", "", out).strip().splitlines()[-1:] or [""]
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", last[0])
    assert match, f"no overall exposure level in systemd-analyze's output:\n{out[-500:]}"
    exposure = float(match.group(1))
    assert exposure < MAX_EXPOSURE, (
        f"{SERVICE} exposure is {exposure} (must be < {MAX_EXPOSURE}): {last[0].strip()}"
    )


# --- push_proxies: what listens where -----------------------------------------------------


@push_proxies
def test_push_proxy_is_reachable_only_through_nginx(host: Host, eas: EasSettings) -> None:
    port = eas.listen_port
    bound = sorted({address for address, p in listening(host) if p == port})
    assert bound, f"nothing listens on port {port}: the push proxy is down or elsewhere"
    assert bound == ["127.0.0.1"], (
        f"port {port} (push proxy, plain HTTP) is bound on {', '.join(bound)}: "
        "it must be on 127.0.0.1 only, behind NGINX's TLS"
    )


@push_proxies
def test_nginx_listens_on_https_and_on_http_only_for_acme(
    host: Host, eas: EasSettings, eas_settings: Settings
) -> None:
    assert host.service("nginx").is_running, "nginx is not active"
    sockets = listening(host)
    public = [a for a, p in sockets if p == eas.https_port and a not in LOOPBACK]
    assert public, f"nothing listens on port {eas.https_port} on a non-loopback address"
    on_80 = [a for a, p in sockets if p == 80]
    if eas_settings.acme.source == "acme-http01":
        assert [a for a in on_80 if a not in LOOPBACK], "nothing listens on port 80 (HTTP-01)"
    else:
        assert not on_80, (
            f"port 80 is open ({on_80}), but tls_certificate_source is "
            f"{eas_settings.acme.source!r}: nothing should listen there"
        )


# --- push_proxies: release, config, credentials -------------------------------------------


@push_proxies
def test_the_configured_release_is_the_current_one(host: Host, eas: EasSettings) -> None:
    version, release = eas.artifact.version, f"{ROOT}/releases/{eas.artifact.version}"
    current = host.file(f"{ROOT}/current")
    assert current.is_symlink, f"{ROOT}/current is not a symlink"
    assert host.file(release).is_directory, f"{release} is missing"
    assert current.linked_to == host.file(release).linked_to, (
        f"{ROOT}/current -> {current.linked_to}, not releases/{version}"
    )
    marker = host.file(f"{release}/.mmpush-sha256")
    assert marker.exists, f"{release}/.mmpush-sha256 is missing: not installed by mmpush"
    installed = marker.content_string.strip()
    assert installed == eas.artifact.sha256, (
        f"release {version} was unpacked from an archive with sha256 {installed}, "
        f"not the pinned {eas.artifact.sha256}"
    )
    binary = host.file(f"{release}/{BINARY}")
    assert binary.is_file and binary.mode & 0o111, f"{release}/{BINARY} is not an executable"


@push_proxies
def test_push_proxy_reports_the_configured_version(host: Host, eas: EasSettings) -> None:
    url = f"http://127.0.0.1:{eas.listen_port}/version"
    out = check(host, f"curl -sSf --noproxy '*' --max-time {TIMEOUT} {url}")
    try:
        version = json.loads(out).get("version")
    except (json.JSONDecodeError, AttributeError):
        pytest.fail(f"/version on 127.0.0.1:{eas.listen_port} is not JSON: {out[:200]!r}")
    assert version == eas.artifact.version, (
        f"the running push proxy is {version!r}, expected {eas.artifact.version!r} "
        "(not restarted after an upgrade?)"
    )


def _proxy_config(host: Host) -> dict[str, Any]:
    text = check(host, f"cat {CONFIG_FILE}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        pytest.fail(f"{CONFIG_FILE} is not valid JSON: {error}")
    assert isinstance(config, dict), f"{CONFIG_FILE} is not a JSON object"
    return config


@push_proxies
def test_push_proxy_config_is_private_and_on_loopback(host: Host, eas: EasSettings) -> None:
    config_file = host.file(CONFIG_FILE)
    assert config_file.exists, f"{CONFIG_FILE} is missing"
    assert (oct(config_file.mode), config_file.user) == (oct(0o600), USER), (
        f"{CONFIG_FILE} is {oct(config_file.mode)} owned by {config_file.user}: "
        f"it must be 0o600 owned by {USER} (it can hold a certificate password)"
    )
    listen = _proxy_config(host).get("ListenAddress")
    assert listen == f"127.0.0.1:{eas.listen_port}", (
        f"ListenAddress is {listen!r}, expected 127.0.0.1:{eas.listen_port}"
    )


@push_proxies
def test_push_proxy_knows_every_configured_app(host: Host, eas: EasSettings) -> None:
    config = _proxy_config(host)
    apple = {entry.get("Type") for entry in config.get("ApplePushSettings") or []}
    android = {entry.get("Type") for entry in config.get("AndroidPushSettings") or []}
    missing = [f"apple {e.type}" for e in eas.apple if e.type not in apple]
    missing += [f"android {e.type}" for e in eas.android if e.type not in android]
    assert not missing, (
        f"{CONFIG_FILE} lacks {', '.join(missing)}: pushes to those apps would fail "
        f"(has apple {sorted(map(str, apple))}, android {sorted(map(str, android))})"
    )


@push_proxies
def test_credentials_are_readable_only_by_the_push_proxy(host: Host, eas: EasSettings) -> None:
    out = check(host, f"find {CREDENTIALS_DIR} -printf '%m %u %y %p\\n'")
    wrong = []
    for line in out.splitlines():
        mode, user, kind, path = line.split(" ", 3)
        expected = ("700", "d") if path == CREDENTIALS_DIR else ("600", "f")
        if (mode, kind) != expected or user != USER:
            wrong.append(f"{path} ({kind}, {mode}, {user})")
    assert not wrong, (
        f"credentials must be {USER}'s only (directory 700, files 600): {'; '.join(wrong)}"
    )


def expected_credentials(eas: EasSettings) -> list[tuple[str, str, str]]:
    """(path on the host, sha256, source) of every credential the data configures: one file
    per app type in the credentials directory, named after the type (stated here, not taken
    from the deploy code)."""
    expected = []
    for entry in eas.apple:
        secret = entry.auth_key or entry.certificate
        assert secret is not None
        suffix = "p8" if entry.auth_key else "pem"
        expected.append((f"{CREDENTIALS_DIR}/{entry.type}.{suffix}", secret.sha256, secret.source))
    for android in eas.android:
        secret = android.service_account
        expected.append((f"{CREDENTIALS_DIR}/{android.type}.json", secret.sha256, secret.source))
    return expected


@push_proxies
def test_credentials_on_the_host_are_the_configured_ones(host: Host, eas: EasSettings) -> None:
    problems = []
    for path, sha256, source in expected_credentials(eas):
        result = host.run(f"sha256sum {q(path)}")
        if result.rc != 0:
            problems.append(f"{path} is missing")
        elif result.stdout.split()[0] != sha256:
            problems.append(f"{path} differs from {source}")
    assert not problems, "; ".join(problems)


# --- push_proxies: NGINX ------------------------------------------------------------------


@push_proxies
def test_nginx_config_is_valid(host: Host, eas: EasSettings) -> None:
    result = host.run("nginx -t 2>&1")
    assert result.rc == 0, f"nginx -t fails (the next reload would too):\n{result.stdout}"


@push_proxies
def test_nginx_never_enables_tls_1_0_or_1_1(host: Host, eas: EasSettings) -> None:
    directives = active_directives(host, "ssl_protocols")
    assert directives, (
        "no ssl_protocols under /etc/nginx: NGINX's default (before 1.23.4) enables TLS 1.0/1.1"
    )
    weak = {"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"}
    bad = [d for d in directives if weak & set(d.rsplit(": ", 1)[-1].split())]
    assert not bad, f"ssl_protocols enabling TLS 1.0/1.1 (or SSL): {'; '.join(bad)}"


@push_proxies
def test_nginx_hides_its_version(host: Host, front: PushFront) -> None:
    directives = active_directives(host, "server_tokens")
    assert any(d.endswith(": off") for d in directives), (
        f"no `server_tokens off` under /etc/nginx (found: {directives or 'none'})"
    )
    assert not [d for d in directives if not d.endswith(": off")], (
        f"server_tokens turned back on: {directives}"
    )
    server = front.https("GET", "/").headers.get("server", "")
    assert "/" not in server, f"NGINX tells everyone its version: Server: {server}"


@push_proxies
def test_debian_default_site_is_gone(host: Host, eas: EasSettings) -> None:
    result = host.run(f"test -e {DEFAULT_SITE} || test -L {DEFAULT_SITE}")
    assert result.rc != 0, f"{DEFAULT_SITE} exists: Debian's welcome page is served"


# --- push_proxies: the push URL as its clients see it -------------------------------------


@push_proxies
def test_clients_trust_the_push_certificate(front: PushFront, eas: EasSettings) -> None:
    tls.assert_trusted_for(front, eas.push_name)


@push_proxies
def test_push_certificate_passes_check_cert(
    inventory_host: InventoryHost, eas: EasSettings, eas_settings: Settings
) -> None:
    address = str(inventory_host.data.get("ssh_hostname") or inventory_host.name)
    tls.assert_passes_check_cert(
        address, eas.push_name, eas.https_port, eas_settings.acme.ca_bundle
    )


@push_proxies
def test_push_certificate_is_not_about_to_expire(front: PushFront, eas: EasSettings) -> None:
    tls.assert_not_expiring(front, eas.push_name)


@push_proxies
def test_push_url_speaks_tls_1_2_or_1_3(front: PushFront) -> None:
    tls.assert_modern_tls(front)


@push_proxies
def test_push_url_refuses_tls_1_1(front: PushFront) -> None:
    tls.assert_refuses_tls_1_1(front)


@push_proxies
def test_push_url_sends_hsts(client: tls.TlsFront) -> None:
    tls.assert_hsts(client)


@push_proxies
def http01_only(settings: Settings) -> None:
    if settings.acme.source != "acme-http01":
        pytest.skip(f"tls_certificate_source is {settings.acme.source!r}: port 80 is closed")


@push_proxies
def test_push_certificate_files_are_not_about_to_expire(
    front: PushFront, eas_settings: Settings
) -> None:
    """Certificates a site brings are renewed by the site: a warning 30 days ahead."""
    files = eas_settings.acme.files
    if files is None:
        pytest.skip("tls_certificate_source is not 'files' (ACME renews the certificate)")
    expires = front.handshake().certificate.not_valid_after_utc
    left = expires - dt.datetime.now(dt.UTC)
    if left < dt.timedelta(days=30):
        warnings.warn(
            f"{files.certificate_file} (served on {front.where}) expires on "
            f"{expires:%Y-%m-%d}: renew it and deploy",
            stacklevel=1,
        )
    assert left > dt.timedelta(0), f"{files.certificate_file} has expired ({expires:%Y-%m-%d})"


@push_proxies
def test_plain_http_redirects_to_https(
    front: PushFront, eas: EasSettings, eas_settings: Settings
) -> None:
    http01_only(eas_settings)
    path = "/verify-suite?check=redirect"
    reply = front.http(path)
    expected = f"https://{eas.push_name}{tls.port_suffix(eas.https_port)}{path}"
    assert reply.status in (301, 308), f"GET http://{eas.push_name}{path}: HTTP {reply.status}"
    assert reply.headers.get("location") == expected, (
        f"http://{eas.push_name}{path} redirects to {reply.headers.get('location')!r}, "
        f"expected {expected}"
    )


@push_proxies
def test_acme_challenges_are_served_on_port_80(
    front: PushFront, eas: EasSettings, eas_settings: Settings
) -> None:
    http01_only(eas_settings)
    path = f"/.well-known/acme-challenge/verify-suite-{secrets.token_hex(8)}"
    reply = front.http(path)
    assert reply.status == 404, (
        f"GET http://{eas.push_name}{path}: HTTP {reply.status} "
        f"(location {reply.headers.get('location')!r}); expected 404 from the ACME webroot: "
        "a redirect or an error breaks certificate renewal"
    )


@push_proxies
def test_every_app_types_credentials_are_accepted(client: tls.TlsFront, eas: EasSettings) -> None:
    """A probe push per configured app type, with an obviously fake device token (never a
    real device): Apple and Google refuse the token, and how they refuse it shows the push
    proxy's credentials for that type work (mmpush/checks/push.py)."""
    apps = [entry.type for entry in eas.apple] + [entry.type for entry in eas.android]
    if not apps:
        pytest.skip("no app is configured (push_proxy_apple / push_proxy_android are empty)")
    verdicts = []
    for app in apps:
        reply = client.https("POST", "/api/v1/send_push", json.dumps(probe_body(app)).encode())
        verdicts.append(push_verdict(app, reply.status, reply.body))
    failed = [v.summary for v in verdicts if not v.accepted]
    assert not failed, f"probe pushes {client.where}: {'; '.join(failed)}"


@push_proxies
def test_only_the_push_api_is_served_and_metrics_are_not_public(
    client: tls.TlsFront, eas: EasSettings
) -> None:
    wrong = []
    for method, path, expected in FRONT_REFUSED:
        status = client.https(method, path).status
        if status not in expected:
            wrong.append(f"{method} {path}: HTTP {status}, expected {expected}")
    assert not wrong, f"requests the push front must refuse {client.where}: {'; '.join(wrong)}"


@push_proxies
def test_clients_outside_the_allowed_networks_are_refused(
    front: PushFront, eas: EasSettings, host: Host
) -> None:
    networks = eas.front_allowed_networks
    if not networks:
        pytest.skip("push_front_allowed_networks is empty: every client may use the front")
    if isinstance(front, tls.ControlNodeFront):
        source = control_node_source(front.address, eas.https_port)
        if is_allowed(source, networks):
            pytest.skip(f"this control node ({source}) is inside {list(networks)}")
        status = front.https("GET", "/version").status
    else:
        source = "127.0.0.1 on the host"
        if is_allowed("127.0.0.1", networks):
            pytest.skip(f"127.0.0.1 is inside {list(networks)}")
        status = front.https("GET", "/version").status
    assert status == 403, (
        f"GET /version from {source}, outside push_front_allowed_networks {list(networks)}: "
        f"HTTP {status}, expected 403"
    )


# Mattermost servers (in every mode, eas included) are checked by test_modes.py.
