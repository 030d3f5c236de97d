"""The outbound proxy to Mattermost's hosted push service (HPNS), as the Mattermost servers
that use it notice it: once per outbound_proxies host whose push_mode is "hpns" (any other
mode is skipped, naming the mode).

    pytest tests/verify --inventory inventories/lab.py --data push_mode=hpns
    pytest tests/verify/test_outbound_proxy.py --inventory inventories/mysite/inventory.py

NGINX runs and its config is valid; the proxy's port listens; its TLS is what a client of
``https://<outbound_proxy_name>:<outbound_proxy_port>`` should get; /version and the push API
are forwarded, anything else is refused; clients outside outbound_proxy_allowed_networks are
refused; the rendered site verifies the upstream (certificate, name, SNI) and re-resolves it.

Like test_eas.py, TLS is checked from this control node when the inventory sets
``acme_ca_bundle`` (connecting to the host's ``ssh_hostname`` with the proxy's name as SNI and
Host, trusting that bundle), otherwise on the host through 127.0.0.1 with its trust store.
HTTP requests go the same way when the proxy lets that client in; when
outbound_proxy_allowed_networks leaves it out, they are sent from a Mattermost server of the
inventory instead (curl there, its trust store), as the proxy's real clients send them.
The fake push (server_id "verify-suite", a random "verify-suite-..." device) does reach the
upstream: HPNS answers REMOVE for an unknown device, which is accepted like OK.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import testinfra

from mmpush.inventory import InventoryHost
from mmpush.outbound_proxy import OUTBOUND_CONF
from mmpush.settings import OutboundProxySettings, Settings
from tests.verify import tls
from tests.verify.hostcheck import LOOPBACK, TIMEOUT, Host, check, listening, q

outbound_proxies = pytest.mark.group("outbound_proxies")

#: Requests the proxy must answer itself, never forwarding them: (method, path, statuses).
#: Only the push API (POST) and /version (GET) are forwarded; other paths are 404, a wrong
#: method 403 (limit_except) or 405; a path climbing above / is refused by NGINX with 400.
REFUSED: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("GET", "/", (404,)),
    ("GET", "/api/v4/system/ping", (404,)),
    ("GET", "/metrics", (404,)),
    ("GET", "/api/v1/other", (404,)),
    ("GET", "/api/v1/send_push?x", (403, 405)),
    ("GET", "/api/v1/ack", (403, 405)),
    ("POST", "/version", (403, 405)),
    ("GET", "/api/v1/../../etc/passwd", (404,)),
    ("GET", "/version/../../../etc/passwd", (400, 404)),
    ("GET", "/../etc/passwd", (400, 404)),
    ("GET", "/%2e%2e/etc/passwd", (400, 404)),
)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def outbound(settings: Settings) -> OutboundProxySettings:
    """The outbound proxy settings; skips hosts whose push_mode is not "hpns"."""
    if settings.push_mode != "hpns":
        pytest.skip(f"{settings.host}: push_mode is {settings.push_mode!r}, not 'hpns'")
    assert settings.outbound is not None, f"{settings.host} has no outbound proxy settings"
    return settings.outbound


class ProxyFront(tls.TlsFront, Protocol):
    """The proxy's TLS port as one client sees it."""

    @property
    def source(self) -> str:
        """The client address the proxy sees (what allow/deny is about)."""
        ...

    def https(self, method: str, path: str, body: bytes | None = None) -> tls.Reply:
        """One request; ``path`` is sent as given (no dot-segment clean-up by the client)."""
        ...


class ProxyFromControlNode(tls.ControlNodeFront):
    """tls.py's control-node client, aimed at the proxy's name and port."""

    def __init__(self, address: str, outbound: OutboundProxySettings, cafile: str) -> None:
        super().__init__(address, outbound.name, outbound.port, cafile)
        self.host_header = f"{self.name}:{self.port}"  # the port even when it is 443
        self._source: str | None = None

    @property
    def source(self) -> str:
        if self._source is None:
            with self._connect(self.port) as sock:
                self._source = str(sock.getsockname()[0])
        return self._source


class ProxyOnHost(tls.OnHostFront):
    """tls.py's on-host client (openssl, curl through 127.0.0.1, the host's trust store),
    aimed at the proxy's name and port."""

    def __init__(self, host: Host, outbound: OutboundProxySettings) -> None:
        super().__init__(host, outbound.name, outbound.port)

    @property
    def source(self) -> str:
        return "127.0.0.1"

    def https(self, method: str, path: str, body: bytes | None = None) -> tls.Reply:
        options = f"--path-as-is --resolve {q(f'{self.name}:{self.port}:127.0.0.1')} -X {method}"
        if body is not None:
            options += " -H 'Content-Type: application/json' --data-binary @-"
        return self._curl(options, f"https://{self.name}:{self.port}{path}", body)


class ProxyFromMattermost(ProxyOnHost):
    """HTTP requests sent by a Mattermost server (curl there, its trust store) to the proxy's
    address, as the proxy's real clients send them."""

    def __init__(
        self, mattermost: Host, mattermost_name: str, outbound: OutboundProxySettings, address: str
    ) -> None:
        self.host, self.name, self.port = mattermost, outbound.name, outbound.port
        self.address, self.mattermost_name = address, mattermost_name
        self.where = (
            f"from Mattermost server {mattermost_name} to {address}:{self.port} as {self.name} "
            "(its system trust store)"
        )

    @property
    def source(self) -> str:
        return f"Mattermost server {self.mattermost_name}"

    def https(self, method: str, path: str, body: bytes | None = None) -> tls.Reply:
        resolve = f"{self.name}:{self.port}:{self.address}"
        options = f"--path-as-is --resolve {q(resolve)} -X {method}"
        if body is not None:
            options += " -H 'Content-Type: application/json' --data-binary @-"
        return self._curl(options, f"https://{self.name}:{self.port}{path}", body)


def address_of(inventory_host: InventoryHost) -> str:
    return str(inventory_host.data.get("ssh_hostname") or inventory_host.name)


def is_allowed(source: str, networks: tuple[str, ...]) -> bool:
    """Whether the proxy lets ``source`` in (no allowed networks: everyone)."""
    if not networks:
        return True
    address = ipaddress.ip_address(source)
    return any(address in ipaddress.ip_network(network) for network in networks)


@pytest.fixture
def front(
    settings: Settings,
    outbound: OutboundProxySettings,
    inventory_host: InventoryHost,
    host: Host,
) -> ProxyFront:
    """The proxy's TLS port, from this control node when the inventory has acme_ca_bundle
    (that file is here), else from the host itself with its system trust store."""
    bundle = settings.acme.ca_bundle
    if bundle:
        return ProxyFromControlNode(address_of(inventory_host), outbound, bundle)
    return ProxyOnHost(host, outbound)


@pytest.fixture
def client(
    front: ProxyFront,
    outbound: OutboundProxySettings,
    inventory_host: InventoryHost,
    inventory: list[InventoryHost],
    ssh_config_file: Path,
) -> ProxyFront:
    """Who sends HTTP requests to the proxy: ``front`` when the proxy lets it in, else the
    first Mattermost server of the inventory."""
    if is_allowed(front.source, outbound.allowed_networks):
        return front
    servers = [h for h in inventory if h.in_group("mattermost")]
    if not servers:
        pytest.skip(
            f"{front.source} ({front.where}) is outside outbound_proxy_allowed_networks "
            f"{list(outbound.allowed_networks)} and the inventory has no Mattermost server to "
            "send requests from"
        )
    server = testinfra.get_host(
        f"ssh://{servers[0].name}", ssh_config=str(ssh_config_file), controlpersist=0
    )
    return ProxyFromMattermost(server, servers[0].name, outbound, address_of(inventory_host))


# --- NGINX config, parsed -----------------------------------------------------------------


@dataclass(frozen=True)
class Directive:
    """One NGINX directive: ``name args;`` or ``name args { block }``."""

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None = None

    def find(self, name: str) -> list[Directive]:
        """Directives called ``name`` directly in this block."""
        return [d for d in self.block or () if d.name == name]

    def walk(self) -> list[Directive]:
        """Every directive in this block, at any depth."""
        found = []
        for directive in self.block or ():
            found += [directive, *directive.walk()]
        return found


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#[^\n]*|[;{}]|[^\s;{}"\'#]+')


def parse_nginx(text: str) -> Directive:
    """An NGINX config file as a tree (comments dropped, quotes kept): the file is the root
    block, ``parse_nginx(t).find("server")[0].find("listen")[0].args == ("8000", "ssl")``."""
    stack: list[tuple[list[str], list[Directive]]] = [([], [])]
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token == ";":
            if words:
                stack[-1][1].append(Directive(words[0], tuple(words[1:])))
            words = []
        elif token == "{":
            stack.append((words, []))
            words = []
        elif token == "}":
            assert len(stack) > 1, "unbalanced } in the NGINX config"
            head, block = stack.pop()
            stack[-1][1].append(Directive(head[0], tuple(head[1:]), tuple(block)))
        else:
            words.append(token)
    assert len(stack) == 1, "unbalanced { in the NGINX config"
    return Directive("", (), tuple(stack[0][1]))


@pytest.fixture
def conf(host: Host, outbound: OutboundProxySettings) -> Directive:
    """The proxy's rendered NGINX site (OUTBOUND_CONF), parsed."""
    return parse_nginx(check(host, f"cat {q(OUTBOUND_CONF)}"))


@pytest.fixture
def site(conf: Directive, outbound: OutboundProxySettings) -> Directive:
    """The TLS ``server`` block of the proxy's rendered site."""
    for server in conf.find("server"):
        for listen in server.find("listen"):
            if listen.args and listen.args[0].rsplit(":", 1)[-1] == str(outbound.port):
                return server
    pytest.fail(f"{OUTBOUND_CONF} has no server listening on port {outbound.port}")


def unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] in "\"'" else value


# --- NGINX: running, valid, listening -----------------------------------------------------


@outbound_proxies
def test_nginx_is_running_and_starts_at_boot(host: Host, outbound: OutboundProxySettings) -> None:
    nginx = host.service("nginx")
    assert nginx.is_running, "nginx is not active: Mattermost servers cannot send pushes"
    assert nginx.is_enabled, "nginx is not enabled: it would not start after a reboot"


@outbound_proxies
def test_nginx_config_is_valid(host: Host, outbound: OutboundProxySettings) -> None:
    result = host.run("nginx -t 2>&1")
    assert result.rc == 0, f"nginx -t fails (the next reload would too):\n{result.stdout}"


@outbound_proxies
def test_proxy_listens_on_its_port(host: Host, outbound: OutboundProxySettings) -> None:
    public = [a for a, p in listening(host) if p == outbound.port and a not in LOOPBACK]
    assert public, (
        f"nothing listens on port {outbound.port} (outbound_proxy_port) on a non-loopback "
        f"address: Mattermost servers cannot reach {outbound.url}"
    )


# --- TLS as clients see it ----------------------------------------------------------------


@outbound_proxies
def test_port_80_is_open_only_for_acme_http01(
    host: Host, settings: Settings, outbound: OutboundProxySettings
) -> None:
    """An internal name gets its certificate through DNS-01 (or a site's files): then nothing
    listens on port 80, as nothing needs to reach the proxy from outside."""
    on_80 = [address for address, port in listening(host) if port == 80]
    if settings.acme.source == "acme-http01":
        assert [a for a in on_80 if a not in LOOPBACK], "nothing listens on port 80 (HTTP-01)"
    else:
        assert not on_80, (
            f"port 80 is open ({on_80}), but tls_certificate_source is "
            f"{settings.acme.source!r}: nothing should listen there"
        )


@outbound_proxies
def test_proxy_certificate_passes_check_cert(
    inventory_host: InventoryHost, settings: Settings, outbound: OutboundProxySettings
) -> None:
    tls.assert_passes_check_cert(
        address_of(inventory_host), outbound.name, outbound.port, settings.acme.ca_bundle
    )


@outbound_proxies
def test_clients_trust_the_proxy_certificate(
    front: ProxyFront, outbound: OutboundProxySettings
) -> None:
    tls.assert_trusted_for(front, outbound.name)


@outbound_proxies
def test_proxy_certificate_is_not_about_to_expire(
    front: ProxyFront, outbound: OutboundProxySettings
) -> None:
    tls.assert_not_expiring(front, outbound.name)


@outbound_proxies
def test_proxy_speaks_tls_1_2_or_1_3(front: ProxyFront) -> None:
    tls.assert_modern_tls(front)


@outbound_proxies
def test_proxy_refuses_tls_1_1(front: ProxyFront) -> None:
    tls.assert_refuses_tls_1_1(front)


@outbound_proxies
def test_proxy_sends_hsts(client: ProxyFront) -> None:
    tls.assert_hsts(client)


# --- forwarding and refusing --------------------------------------------------------------


@outbound_proxies
def test_version_is_forwarded_to_the_upstream(
    client: ProxyFront, outbound: OutboundProxySettings
) -> None:
    reply = client.https("GET", "/version")
    try:
        answer = json.loads(reply.body)
    except json.JSONDecodeError:
        answer = None
    assert reply.status == 200 and isinstance(answer, dict), (
        f"GET /version {client.where} (forwarded to {outbound.upstream_url}) was answered "
        f"HTTP {reply.status} {reply.body.strip()[:300]!r}: expected 200 with a JSON object"
    )


@outbound_proxies
def test_a_push_through_the_proxy_is_accepted(
    client: ProxyFront, outbound: OutboundProxySettings
) -> None:
    push = {
        "server_id": "verify-suite",
        "device_id": f"verify-suite-{secrets.token_hex(8)}",
        "platform": "apple_rn",
        "type": "message",
        "message": "mmpush verify suite (fake device, never delivered)",
    }
    reply = client.https("POST", "/api/v1/send_push", json.dumps(push).encode())
    try:
        status = json.loads(reply.body).get("status")
    except (json.JSONDecodeError, AttributeError):
        status = None
    assert reply.status == 200 and status in tls.ACCEPTED_PUSH, (
        f"a push {client.where} (forwarded to {outbound.upstream_url}) was answered "
        f"HTTP {reply.status} {reply.body.strip()[:300]!r}: expected 200 with status "
        f"{' or '.join(tls.ACCEPTED_PUSH)}"
    )


@outbound_proxies
def test_only_the_push_api_is_forwarded(client: ProxyFront) -> None:
    wrong = []
    for method, path, expected in REFUSED:
        status = client.https(method, path).status
        if status not in expected:
            wrong.append(f"{method} {path}: HTTP {status}, expected {expected}")
    assert not wrong, f"requests that must be refused {client.where}: {'; '.join(wrong)}"


@outbound_proxies
def test_clients_outside_the_allowed_networks_are_refused(
    host: Host, front: ProxyFront, outbound: OutboundProxySettings
) -> None:
    networks = outbound.allowed_networks
    if not networks:
        pytest.skip("outbound_proxy_allowed_networks is empty: every client may use the proxy")
    # 127.0.0.1 on the host, or this control node, if the proxy must refuse either
    if not is_allowed("127.0.0.1", networks):
        source = "127.0.0.1 on the host"
        url = f"https://{outbound.name}:{outbound.port}/version"
        # -k: what is checked is who may use the proxy; its TLS is checked above
        out = check(
            host,
            f"curl -sS -k --noproxy '*' --max-time {TIMEOUT} -o /dev/null -w '%{{http_code}}' "
            f"--resolve {q(f'{outbound.name}:{outbound.port}:127.0.0.1')} {q(url)}",
        )
        status = int(out.strip() or 0)
    elif isinstance(front, ProxyFromControlNode) and not is_allowed(front.source, networks):
        source, status = f"{front.source} ({front.where})", front.https("GET", "/version").status
    else:
        pytest.skip(f"no client of this suite is outside {list(networks)}")
    assert status == 403, (
        f"GET /version from {source}, outside outbound_proxy_allowed_networks "
        f"{list(networks)}: HTTP {status}, expected 403"
    )


# --- the rendered NGINX site --------------------------------------------------------------


@outbound_proxies
def test_the_upstream_verifies_as_the_proxy_checks_it(
    host: Host, site: Directive, outbound: OutboundProxySettings
) -> None:
    """From the proxy host, a TLS handshake with the upstream as NGINX makes it: its name as
    SNI, its certificate checked against the proxy's trusted CAs and for its name."""
    trusted = [unquote(d.args[0]) for d in site.walk() if d.name == "proxy_ssl_trusted_certificate"]
    assert trusted, f"{OUTBOUND_CONF}: no proxy_ssl_trusted_certificate"
    name, port = outbound.upstream_host, outbound.upstream_port
    result = host.run(
        f"timeout {TIMEOUT} openssl s_client -connect {q(f'{name}:{port}')} -servername {q(name)} "
        f"-verify_hostname {q(name)} -verify_return_error -CAfile {q(trusted[0])} "
        "-brief < /dev/null 2>&1"
    )
    assert result.rc == 0 and "Verification: OK" in result.stdout, (
        f"{outbound.upstream_url} does not verify from the proxy host against {trusted[0]} "
        f"(as NGINX checks it): {result.stdout.strip()[-400:]}"
    )


@outbound_proxies
def test_upstream_certificate_and_name_are_verified(
    site: Directive, outbound: OutboundProxySettings
) -> None:
    expected = {"proxy_ssl_verify": "on", "proxy_ssl_server_name": "on"}
    wrong = []
    for name, value in expected.items():
        at_server = [" ".join(d.args) for d in site.find(name)]
        anywhere = [" ".join(d.args) for d in site.walk() if d.name == name]
        if at_server != [value] or set(anywhere) != {value}:
            wrong.append(f"{name} is {anywhere or 'not set'} (expected `{name} {value}`)")
    depths = [d.args[0] for d in site.walk() if d.name == "proxy_ssl_verify_depth" and d.args]
    if not depths or not all(d.isdigit() and int(d) >= 2 for d in depths):
        wrong.append(
            f"proxy_ssl_verify_depth is {depths or 'not set (1)'}: at least 2 is needed for "
            "a certificate issued by an intermediate CA"
        )
    names = [unquote(d.args[0]) for d in site.walk() if d.name == "proxy_ssl_name" and d.args]
    if names and set(names) != {outbound.upstream_host}:
        wrong.append(f"proxy_ssl_name is {names}, not the upstream {outbound.upstream_host}")
    assert not wrong, (
        f"{OUTBOUND_CONF}: the upstream {outbound.upstream_url} is not checked: {'; '.join(wrong)}"
    )


@outbound_proxies
def test_upstream_is_reached_as_configured(
    conf: Directive, site: Directive, outbound: OutboundProxySettings
) -> None:
    passes = [" ".join(d.args) for d in site.walk() if d.name == "proxy_pass"]
    assert passes, f"{OUTBOUND_CONF}: no proxy_pass: nothing is forwarded"
    plain = [p for p in passes if not p.startswith("https://")]
    assert not plain, f"{OUTBOUND_CONF}: proxy_pass without TLS to the upstream: {plain}"
    targets = {p.removeprefix("https://") for p in passes}
    if outbound.keepalive:
        upstreams = {d.args[0]: d for d in conf.find("upstream") if d.args}
        missing = sorted(targets - upstreams.keys())
        assert not missing, (
            f"{OUTBOUND_CONF}: outbound_proxy_keepalive is on but proxy_pass targets {missing} "
            f"are not upstream blocks (found {sorted(upstreams) or 'none'})"
        )
        for target in sorted(targets):
            block = upstreams[target]
            servers = [d.args[0] for d in block.find("server") if d.args]
            assert block.find("keepalive"), (
                f"{OUTBOUND_CONF}: upstream {target} has no keepalive: connections are not reused"
            )
            assert f"{outbound.upstream_host}:{outbound.upstream_port}" in servers, (
                f"{OUTBOUND_CONF}: upstream {target} has servers {servers}, not "
                f"{outbound.upstream_host}:{outbound.upstream_port}"
            )
    else:
        assert site.find("resolver"), (
            f"{OUTBOUND_CONF}: no resolver in the proxy's server: NGINX cannot re-resolve "
            f"{outbound.upstream_host} while it runs"
        )
        fixed = sorted(t for t in targets if "$" not in t)
        assert not fixed, (
            f"{OUTBOUND_CONF}: proxy_pass to {fixed} without a variable: the upstream's "
            "address is resolved once at start and never again"
        )
        values = {d.args[0]: unquote(d.args[1]) for d in site.find("set") if len(d.args) == 2}
        expected = f"{outbound.upstream_host}:{outbound.upstream_port}"
        for target in sorted(targets):
            variable = target.split("/")[0]
            assert values.get(variable) == expected, (
                f"{OUTBOUND_CONF}: proxy_pass https://{target} but {variable} is "
                f"{values.get(variable)!r}, not {expected!r}"
            )


#: The variable the proxy's geo block sets to 1 for allowed clients (templates/nginx/
#: outbound-proxy.conf.j2); the server refuses the others before anything else answers.
ALLOWED_VARIABLE = "$mmpush_outbound_client_allowed"


@outbound_proxies
def test_only_allowed_networks_may_connect(
    conf: Directive, site: Directive, outbound: OutboundProxySettings
) -> None:
    if not outbound.allowed_networks:
        pytest.skip("outbound_proxy_allowed_networks is empty: every client may use the proxy")
    geos = [d for d in conf.find("geo") if d.args and d.args[-1] == ALLOWED_VARIABLE]
    assert geos, f"{OUTBOUND_CONF}: no `geo {ALLOWED_VARIABLE}` block: nobody is refused"
    entries = {d.name: " ".join(d.args) for d in geos[0].block or ()}
    assert entries.get("default") == "0", (
        f"{OUTBOUND_CONF}: geo {ALLOWED_VARIABLE} does not default to 0: {entries}"
    )
    allowed = sorted(name for name, value in entries.items() if value == "1")
    assert allowed == sorted(outbound.allowed_networks), (
        f"{OUTBOUND_CONF}: the proxy lets {allowed} in, outbound_proxy_allowed_networks says "
        f"{sorted(outbound.allowed_networks)}"
    )
    # the gate is in the server block itself (a location's `return` would answer first)
    gates = [
        d
        for d in site.find("if")
        if ALLOWED_VARIABLE in " ".join(d.args)
        and any(r.name == "return" and r.args[:1] == ("403",) for r in d.block or ())
    ]
    assert gates, (
        f"{OUTBOUND_CONF}: the proxy's server never refuses clients outside "
        f"{list(outbound.allowed_networks)} (no `if ({ALLOWED_VARIABLE} = 0) {{ return 403; }}`)"
    )
