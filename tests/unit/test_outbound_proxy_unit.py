"""The outbound proxy (HPNS through NGINX): its settings (mmpush.settings
OutboundProxySettings) and its NGINX site (templates/nginx/outbound-proxy.conf.j2 rendered by
mmpush.outbound_proxy.outbound_conf), parsed into blocks and directives. Pure: nothing runs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from mmpush.outbound_proxy import outbound_conf
from mmpush.settings import OutboundProxySettings, Secret, SettingsError, settings_from_data
from tests.unit.defaults import DEFAULTS, ca_bundle

HOST = "proxy1.example.net"
NAME = "push.internal.example"
TRUST = "/etc/ssl/certs/ca-certificates.crt"


def outbound_settings(**overrides: Any) -> OutboundProxySettings:
    data = {**DEFAULTS, "push_mode": "hpns", "outbound_proxy_name": NAME, **overrides}
    settings = settings_from_data(HOST, ("outbound_proxies",), data)
    assert settings.outbound is not None
    return settings.outbound


# --- a small NGINX parser for the rendered text ------------------------------------------------


@dataclass
class Node:
    """A directive: ``name args;`` or a block ``name args { children }``."""

    name: str
    args: list[str]
    children: list[Node] | None = None
    lines: list[str] = field(default_factory=list)

    def find(self, name: str) -> list[Node]:
        return [child for child in self.children or [] if child.name == name]

    def directive(self, name: str) -> list[str]:
        """The arguments of the one ``name`` directive directly in this block."""
        (found,) = self.find(name)
        assert found.children is None
        return found.args

    def texts(self) -> list[str]:
        """Every direct directive as text, ``"allow 10.0.0.0/8"``."""
        return [" ".join([c.name, *c.args]) for c in self.children or [] if c.children is None]


def parse(conf: str) -> Node:
    """The rendered config as a tree (comments dropped; braces must balance)."""
    text = "\n".join(line for line in conf.splitlines() if not line.strip().startswith("#"))
    tokens = re.findall(r'"[^"]*"|[{};]|[^\s{};"]+', text)
    root = Node("root", [], [])
    stack, words = [root], []
    for token in tokens:
        if token == ";":
            stack[-1].children.append(Node(words[0], words[1:]))  # type: ignore[union-attr]
            words = []
        elif token == "{":
            block = Node(words[0], words[1:], [])
            stack[-1].children.append(block)  # type: ignore[union-attr]
            stack.append(block)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive before }}: {words}"
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1 and not words, "unbalanced braces"
    return root


def render(
    outbound: OutboundProxySettings,
    tls: bool = True,
    resolvers: list[str] | None = None,
    trusted_ca: str = TRUST,
) -> Node:
    return parse(outbound_conf(outbound, resolvers or ["192.0.2.53"], trusted_ca, tls))


def tls_server(root: Node) -> Node:
    (server,) = [s for s in root.find("server") if any("ssl" in x.args for x in s.find("listen"))]
    return server


def location(server: Node, *args: str) -> Node:
    (found,) = [loc for loc in server.find("location") if loc.args == list(args)]
    return found


# --- settings ----------------------------------------------------------------------------------


def test_the_defaults_forward_to_the_global_region_on_port_8000() -> None:
    outbound = outbound_settings()
    assert outbound == OutboundProxySettings(
        name=NAME,
        port=8000,
        upstream_url="https://global.push.mattermost.com",
        allowed_networks=(),
        resolvers=(),
        ca_bundle=None,
        keepalive=False,
    )
    assert outbound.url == "https://push.internal.example:8000"
    assert (outbound.upstream_host, outbound.upstream_port) == ("global.push.mattermost.com", 443)


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("us", "us.push.mattermost.com"),
        ("eu", "eu.push.mattermost.com"),
        ("ap", "ap.push.mattermost.com"),
        ("legacy", "push.mattermost.com"),
    ],
)
def test_the_default_upstream_follows_the_hpns_region(region: str, host: str) -> None:
    outbound = outbound_settings(hpns_region=region)
    assert outbound.upstream_url == f"https://{host}"
    assert (outbound.upstream_host, outbound.upstream_port) == (host, 443)


@pytest.mark.parametrize(
    ("upstream", "url", "host", "port"),
    [
        (
            "https://hpns.example.com:8443",
            "https://hpns.example.com:8443",
            "hpns.example.com",
            8443,
        ),
        ("https://hpns.example.com/", "https://hpns.example.com", "hpns.example.com", 443),
        (
            "https://hpns.example.com:65535",
            "https://hpns.example.com:65535",
            "hpns.example.com",
            65535,
        ),
        ("https://hpns.example.com:1", "https://hpns.example.com:1", "hpns.example.com", 1),
    ],
)
def test_a_custom_upstream_gives_its_host_and_port(
    upstream: str, url: str, host: str, port: int
) -> None:
    outbound = outbound_settings(outbound_proxy_upstream=upstream)
    assert outbound.upstream_url == url
    assert (outbound.upstream_host, outbound.upstream_port) == (host, port)


def test_a_custom_port_is_in_the_url_mattermost_uses() -> None:
    assert outbound_settings(outbound_proxy_port=8443).url == "https://push.internal.example:8443"


def test_allowed_networks_are_normalised_and_resolvers_kept() -> None:
    outbound = outbound_settings(
        outbound_proxy_allowed_networks=["10.1.2.3/8", "192.0.2.10", "2001:db8::/32"],
        outbound_proxy_resolvers=["192.0.2.53", "[2001:db8::53]:53"],
        outbound_proxy_keepalive=True,
    )
    assert outbound.allowed_networks == ("10.0.0.0/8", "192.0.2.10/32", "2001:db8::/32")
    assert outbound.resolvers == ("192.0.2.53", "[2001:db8::53]:53")
    assert outbound.keepalive is True


def test_the_ca_bundle_is_read_as_a_secret(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    content = ca_bundle()
    bundle.write_bytes(content)
    outbound = outbound_settings(outbound_proxy_ca_bundle=str(bundle))
    assert outbound.ca_bundle == Secret(str(bundle), content)


def test_hosts_not_in_outbound_proxies_or_not_in_hpns_get_no_outbound_settings() -> None:
    data = {**DEFAULTS, "push_mode": "hpns"}
    assert settings_from_data(HOST, ("mattermost",), data).outbound is None
    eas = {**DEFAULTS, "push_mode": "tpns"}
    assert settings_from_data(HOST, ("outbound_proxies",), eas).outbound is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("outbound_proxy_name", None),
        ("outbound_proxy_name", "push"),
        ("outbound_proxy_name", "https://push.internal.example"),
        ("outbound_proxy_port", 80),
        ("outbound_proxy_port", 0),
        ("outbound_proxy_port", "8000"),
        ("outbound_proxy_upstream", "https://hpns.example.com:99999"),
        ("outbound_proxy_upstream", "https://hpns.example.com:"),
        ("outbound_proxy_upstream", "https://hpns.example.com/api/v1"),
        ("outbound_proxy_upstream", "https://hpns example.com"),
        ("outbound_proxy_allowed_networks", ["10.0.0.0/33"]),
        ("outbound_proxy_allowed_networks", "10.0.0.0/8"),
        ("outbound_proxy_resolvers", ["1.2.3.4:5_3"]),
        ("outbound_proxy_resolvers", "192.0.2.53"),
        ("outbound_proxy_keepalive", "yes"),
    ],
)
def test_a_bad_outbound_setting_is_refused_naming_it(key: str, value: object) -> None:
    with pytest.raises(SettingsError) as caught:
        outbound_settings(**{key: value})
    assert caught.value.host == HOST and caught.value.key == key
    assert f"host {HOST}: {key} = " in str(caught.value)


# --- the rendered site ----------------------------------------------------------------------------


def test_without_tls_only_the_port_80_site_is_rendered() -> None:
    root = render(outbound_settings(), tls=False)
    (server,) = root.find("server")
    assert [listen.args for listen in server.find("listen")] == [["80"], ["[::]:80"]]
    assert server.directive("server_name") == [NAME]
    acme = location(server, "^~", "/.well-known/acme-challenge/")
    assert acme.directive("root") == ["/var/www/mmpush-acme"]
    redirect = location(server, "/")
    assert redirect.directive("return") == ["301", f"https://{NAME}:8000$request_uri"]
    assert root.find("upstream") == []
    assert "proxy_pass" not in outbound_conf(outbound_settings(), ["192.0.2.53"], TRUST, False)


def test_with_tls_the_proxy_listens_on_its_port_with_its_certificate() -> None:
    root = render(outbound_settings(outbound_proxy_port=8443))
    assert len(root.find("server")) == 2
    server = tls_server(root)
    assert [listen.args for listen in server.find("listen")] == [
        ["8443", "ssl", "http2"],
        ["[::]:8443", "ssl", "http2"],
    ]
    assert server.directive("server_name") == [NAME]
    assert server.directive("ssl_certificate") == [f"/etc/mmpush/tls/{NAME}/fullchain.pem"]
    assert server.directive("ssl_certificate_key") == [f"/etc/mmpush/tls/{NAME}/privkey.pem"]


def test_the_upstream_is_verified_by_name_with_sni() -> None:
    server = tls_server(render(outbound_settings(), trusted_ca="/etc/mmpush/upstream-ca.pem"))
    assert server.directive("proxy_ssl_verify") == ["on"]
    assert server.directive("proxy_ssl_server_name") == ["on"]
    assert server.directive("proxy_ssl_name") == ["global.push.mattermost.com"]
    assert server.directive("proxy_ssl_verify_depth") == ["4"]
    assert server.directive("proxy_ssl_trusted_certificate") == ["/etc/mmpush/upstream-ca.pem"]
    assert server.directive("proxy_ssl_protocols") == ["TLSv1.2", "TLSv1.3"]


def test_client_addresses_are_not_forwarded_upstream() -> None:
    headers = [h.args for h in tls_server(render(outbound_settings())).find("proxy_set_header")]
    assert ["X-Forwarded-For", '""'] in headers
    assert ["Connection", '""'] in headers
    assert ["Host", "global.push.mattermost.com"] in headers


def test_without_keepalive_the_upstream_is_re_resolved_through_the_resolvers() -> None:
    root = render(outbound_settings(), resolvers=["192.0.2.53", "[2001:db8::53]:53"])
    assert root.find("upstream") == []
    server = tls_server(root)
    assert server.directive("resolver") == [
        "192.0.2.53",
        "[2001:db8::53]:53",
        "valid=30s",
        "ipv6=off",
    ]
    assert server.directive("set") == ["$mmpush_upstream", '"global.push.mattermost.com:443"']
    api = location(server, "~", "^/api/v1/(send_push|ack)$")
    assert api.directive("proxy_pass") == ["https://$mmpush_upstream/api/v1/$1"]
    version = location(server, "=", "/version")
    assert version.directive("proxy_pass") == ["https://$mmpush_upstream/version"]


def test_with_keepalive_an_upstream_block_pools_connections_and_no_resolver_is_used() -> None:
    outbound = outbound_settings(
        outbound_proxy_keepalive=True, outbound_proxy_upstream="https://hpns.example.com:8443"
    )
    root = render(outbound)
    (upstream,) = root.find("upstream")
    assert upstream.args == ["mmpush_hpns"]
    assert upstream.texts() == ["server hpns.example.com:8443", "keepalive 16"]
    server = tls_server(root)
    assert server.find("resolver") == [] and server.find("set") == []
    api = location(server, "~", "^/api/v1/(send_push|ack)$")
    assert api.directive("proxy_pass") == ["https://mmpush_hpns/api/v1/$1"]
    assert location(server, "=", "/version").directive("proxy_pass") == [
        "https://mmpush_hpns/version"
    ]
    assert server.directive("proxy_http_version") == ["1.1"]
    assert server.directive("proxy_ssl_name") == ["hpns.example.com"]


ALLOWED_IF = ["($mmpush_outbound_client_allowed", "=", "0)"]


def test_the_allow_list_refuses_other_clients_before_anything_answers() -> None:
    outbound = outbound_settings(outbound_proxy_allowed_networks=["10.0.10.0/24", "2001:db8::/32"])
    root = render(outbound)
    (geo,) = root.find("geo")
    assert geo.args == ["$mmpush_outbound_client_allowed"]
    assert geo.texts() == ["default 0", "10.0.10.0/24 1", "2001:db8::/32 1"]
    server = tls_server(root)
    checks = [child for child in server.children or [] if child.name == "if"]
    # the first check of the server: a client outside the list gets 403 and nothing else
    assert checks[0].args == ALLOWED_IF and checks[0].texts() == ["return 403"]
    names = [child.name for child in server.children or []]
    assert names.index("if") < names.index("location")


def test_without_an_allow_list_any_client_may_connect() -> None:
    root = render(outbound_settings())
    assert root.find("geo") == []
    server = tls_server(root)
    assert [c.args for c in server.find("if") if c.args == ALLOWED_IF] == []
    texts = server.texts()
    assert not [text for text in texts if text.startswith(("allow", "deny"))]


def test_only_the_push_api_is_forwarded() -> None:
    server = tls_server(render(outbound_settings()))
    assert sorted(tuple(loc.args) for loc in server.find("location")) == [
        ("/",),
        ("=", "/version"),
        ("~", "^/api/v1/(send_push|ack)$"),
    ]
    api = location(server, "~", "^/api/v1/(send_push|ack)$")
    (limit,) = api.find("limit_except")
    assert limit.args == ["POST"] and limit.texts() == ["deny all"]
    (limit,) = location(server, "=", "/version").find("limit_except")
    assert limit.args == ["GET"] and limit.texts() == ["deny all"]
    assert location(server, "/").texts() == ["return 404"]


def test_the_rendered_site_changes_with_the_settings() -> None:
    # the template reads the settings it is given, not defaults of its own
    base = outbound_settings()
    other = replace(base, name="other.internal.example", port=9000)
    server = tls_server(render(other))
    assert server.directive("server_name") == ["other.internal.example"]
    assert server.find("listen")[0].args == ["9000", "ssl", "http2"]
