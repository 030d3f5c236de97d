"""Rendered NGINX and systemd files (mmpush.nginx, templates/): hardened TLS, the push front's
port-80 and TLS parts, the push proxy's unit. Pure rendering, nothing is run."""

from __future__ import annotations

import re
from typing import Any

import jinja2
import pytest

from mmpush.nginx import hardened_nginx_conf, push_front_conf
from mmpush.push_proxy import CONFIG_FILE
from mmpush.push_proxy import ROOT as PUSH_PROXY_ROOT
from mmpush.push_proxy import USER as PUSH_PROXY_USER
from mmpush.render import render
from mmpush.settings import Settings, settings_from_data
from tests.unit.defaults import DEFAULTS, SHA

MOZILLA_INTERMEDIATE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
HSTS = 'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;'


def settings(**overrides: Any) -> Settings:
    data = {
        **DEFAULTS,
        "push_name": "push.example.com",
        "push_proxy_sha256": SHA,
        **overrides,
    }
    return settings_from_data("push1", ("push_proxies",), data)


def directives(conf: str) -> list[str]:
    """Non-comment lines, stripped."""
    lines = (line.split("#", 1)[0].strip() for line in conf.splitlines())
    return [line for line in lines if line]


def blocks(conf: str, opening: str) -> list[str]:
    """The top-level blocks whose first line starts with ``opening`` (e.g. "server"), each
    as its text from the opening line to its closing brace (comments dropped)."""
    found: list[str] = []
    depth, current = 0, None
    for line in directives(conf):
        if depth == 0 and line.startswith(opening) and line.endswith("{"):
            current = []
        if current is not None:
            current.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0 and current is not None:
            found.append("\n".join(current))
            current = None
    assert depth == 0, "unbalanced braces"
    return found


def listens(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.startswith("listen ")]


# --- hardened nginx.conf ------------------------------------------------------------------------


def test_hardened_nginx_conf_allows_only_tls_1_2_and_1_3() -> None:
    lines = directives(hardened_nginx_conf())
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in lines
    assert [line for line in lines if line.startswith("ssl_protocols")] == [
        "ssl_protocols TLSv1.2 TLSv1.3;"
    ]


def test_hardened_nginx_conf_mentions_no_older_tls_anywhere() -> None:
    conf = hardened_nginx_conf()
    assert set(re.findall(r"TLSv[0-9.]*[0-9]", conf)) == {"TLSv1.2", "TLSv1.3"}
    assert "SSLv" not in conf


def test_hardened_nginx_conf_hides_the_version() -> None:
    assert "server_tokens off;" in directives(hardened_nginx_conf())


def test_hardened_nginx_conf_uses_exactly_the_mozilla_intermediate_ciphers() -> None:
    lines = directives(hardened_nginx_conf())
    assert [line for line in lines if line.startswith("ssl_ciphers")] == [
        f"ssl_ciphers {MOZILLA_INTERMEDIATE};"
    ]
    ciphers = MOZILLA_INTERMEDIATE.split(":")
    assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)


def test_hardened_nginx_conf_disables_session_tickets_and_server_cipher_preference() -> None:
    lines = directives(hardened_nginx_conf())
    assert "ssl_session_tickets off;" in lines
    assert "ssl_prefer_server_ciphers off;" in lines


def test_hardened_nginx_conf_includes_our_sites() -> None:
    lines = directives(hardened_nginx_conf())
    assert "include /etc/nginx/conf.d/*.conf;" in lines


# --- push front: port 80 only (before a certificate exists) -------------------------------------


def test_push_front_without_tls_listens_on_port_80_only() -> None:
    conf = push_front_conf(settings(), tls=False)
    (server,) = blocks(conf, "server")
    assert listens(server) == ["listen 80;", "listen [::]:80;"]
    assert "ssl" not in "\n".join(directives(conf))
    assert blocks(conf, "upstream") == []
    assert "server_name push.example.com;" in server


def test_push_front_without_tls_serves_acme_challenges_from_the_webroot() -> None:
    (server,) = blocks(push_front_conf(settings(), tls=False), "server")
    assert "location ^~ /.well-known/acme-challenge/ {" in server
    assert "root /var/www/mmpush-acme;" in server


def test_push_front_without_tls_redirects_to_the_push_name_never_to_host() -> None:
    conf = push_front_conf(settings(), tls=False)
    assert "return 301 https://push.example.com$request_uri;" in directives(conf)
    assert "$host" not in conf


# --- push front: TLS ------------------------------------------------------------------------------


def tls_server(conf: str) -> str:
    (server,) = [b for b in blocks(conf, "server") if any("ssl" in x for x in listens(b))]
    return server


def test_push_front_with_tls_has_port_80_and_a_tls_server() -> None:
    conf = push_front_conf(settings(), tls=True)
    port_80, tls = blocks(conf, "server")
    assert listens(port_80) == ["listen 80;", "listen [::]:80;"]
    assert listens(tls) == ["listen 443 ssl http2;", "listen [::]:443 ssl http2;"]
    assert "server_name push.example.com;" in tls.splitlines()


def test_push_front_with_tls_uses_the_certificate_of_the_push_name() -> None:
    lines = tls_server(push_front_conf(settings(), tls=True)).splitlines()
    assert "ssl_certificate /etc/mmpush/tls/push.example.com/fullchain.pem;" in lines
    assert "ssl_certificate_key /etc/mmpush/tls/push.example.com/privkey.pem;" in lines


def test_push_front_with_tls_sends_hsts() -> None:
    assert HSTS in tls_server(push_front_conf(settings(), tls=True)).splitlines()


def test_push_front_sets_x_forwarded_for_to_the_real_client_address() -> None:
    lines = tls_server(push_front_conf(settings(), tls=True)).splitlines()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in lines
    assert not any("$proxy_add_x_forwarded_for" in line for line in lines)
    assert not any("$http_x_forwarded_for" in line for line in lines)


def test_push_front_keeps_upstream_connections_alive() -> None:
    conf = push_front_conf(settings(), tls=True)
    (upstream,) = blocks(conf, "upstream")
    assert upstream.splitlines() == [
        "upstream mattermost_push_proxy {",
        "server 127.0.0.1:8066;",
        "keepalive 16;",
        "}",
    ]
    lines = tls_server(conf).splitlines()
    assert "proxy_pass http://mattermost_push_proxy;" in lines
    assert "proxy_http_version 1.1;" in lines
    assert 'proxy_set_header Connection "";' in lines


def test_push_front_upstream_follows_the_listen_port() -> None:
    conf = push_front_conf(settings(push_proxy_listen_port=9066), tls=True)
    (upstream,) = blocks(conf, "upstream")
    assert "server 127.0.0.1:9066;" in upstream.splitlines()


def test_push_front_read_timeout_outlasts_the_proxy_send_timeout_and_no_more() -> None:
    # the push proxy answers within its send timeout; NGINX waits 5 s more, never the 30 s
    # the Mattermost server itself waits at most
    lines = tls_server(push_front_conf(settings(push_proxy_send_timeout_sec=20), tls=True))
    assert "proxy_read_timeout 25s;" in lines.splitlines()
    assert "proxy_send_timeout 25s;" in lines.splitlines()


def test_push_front_redirect_never_uses_host_with_tls() -> None:
    conf = push_front_conf(settings(), tls=True)
    (redirect,) = [line for line in directives(conf) if line.startswith("return 301")]
    assert redirect == "return 301 https://push.example.com$request_uri;"


def test_a_custom_https_port_is_in_listen_and_in_the_redirect() -> None:
    conf = push_front_conf(settings(push_https_port=8443), tls=True)
    assert listens(tls_server(conf)) == ["listen 8443 ssl http2;", "listen [::]:8443 ssl http2;"]
    assert "return 301 https://push.example.com:8443$request_uri;" in directives(conf)
    assert not any(line.startswith("listen 443") for line in directives(conf))
    port_80_only = push_front_conf(settings(push_https_port=8443), tls=False)
    assert "return 301 https://push.example.com:8443$request_uri;" in directives(port_80_only)


def test_push_front_extra_config_is_inside_the_tls_server_block() -> None:
    extra = "access_log /var/log/nginx/push.log;\nallow 10.0.0.0/8;\ndeny all;\n"
    conf = push_front_conf(settings(push_front_extra_config=extra), tls=True)
    port_80, tls = blocks(conf, "server")
    for directive in ("access_log /var/log/nginx/push.log;", "allow 10.0.0.0/8;", "deny all;"):
        assert directive in tls.splitlines()
        assert directive not in port_80.splitlines()
    (upstream,) = blocks(conf, "upstream")
    assert "deny all;" not in upstream


def test_push_front_extra_config_is_absent_without_tls_or_when_empty() -> None:
    extra = "access_log /var/log/nginx/push.log;"
    assert "access_log" not in push_front_conf(settings(push_front_extra_config=extra), False)
    assert "push_front_extra_config" not in push_front_conf(settings(), tls=True)


def test_push_front_renders_balanced_braces() -> None:
    # blocks() asserts balance
    assert len(blocks(push_front_conf(settings(), tls=True), "server")) == 2


# --- systemd unit -------------------------------------------------------------------------------


def unit(**overrides: Any) -> list[str]:
    variables = {
        "user": PUSH_PROXY_USER,
        "root": PUSH_PROXY_ROOT,
        "config_file": CONFIG_FILE,
        "https_proxy": None,
        "no_proxy": "",
        **overrides,
    }
    text = render("systemd/mattermost-push-proxy.service.j2", **variables)
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "line",
    [
        "Restart=on-failure",
        "User=mattermost-push-proxy",
        "Group=mattermost-push-proxy",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "WantedBy=multi-user.target",
    ],
)
def test_the_push_proxy_unit_is_hardened(line: str) -> None:
    assert line in unit()


def test_the_push_proxy_unit_runs_the_current_release_with_an_absolute_config() -> None:
    (exec_start,) = [line for line in unit() if line.startswith("ExecStart=")]
    binary, flag, config = exec_start.removeprefix("ExecStart=").split()
    assert binary == "/opt/mattermost-push-proxy/current/bin/mattermost-push-proxy"
    assert flag == "-config"
    assert config == "/etc/mattermost-push-proxy/mattermost-push-proxy.json"
    assert config.startswith("/")


def test_the_push_proxy_unit_sets_https_proxy_and_no_proxy_only_when_given() -> None:
    assert not any(line.startswith("Environment=") for line in unit())
    with_proxy = unit(
        https_proxy="http://proxy.example.net:3128", no_proxy="internal.test,10.0.0.0/8"
    )
    # upper case: the push proxy's APNs client reads only HTTPS_PROXY
    assert 'Environment="HTTPS_PROXY=http://proxy.example.net:3128"' in with_proxy
    assert 'Environment="NO_PROXY=internal.test,10.0.0.0/8"' in with_proxy


def test_render_refuses_a_missing_variable() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render("systemd/mattermost-push-proxy.service.j2", user="u", root="/r", config_file="/c")


# --- the push front's API-only locations and allow-lists ------------------------------------------


def test_the_push_front_forwards_only_the_push_api_and_version() -> None:
    server = tls_server(push_front_conf(settings(), tls=True))
    locations = re.findall(r"^location (?:= )?(\S+) \{$", server, re.M)
    assert locations == ["/api/v1/send_push", "/api/v1/ack", "/version", "/"]
    assert "location / {\nreturn 404;\n}" in server
    assert server.count("proxy_pass http://mattermost_push_proxy;") == 3
    assert "limit_except POST { deny all; }" in server
    assert "/metrics" not in server


def test_the_push_front_refuses_other_names_and_clients_outside_its_allow_list() -> None:
    plain = push_front_conf(settings(), tls=True)
    assert 'if ($host != "push.example.com") {\nreturn 421;\n}' in tls_server(plain)
    assert "geo " not in plain
    conf = push_front_conf(
        settings(push_front_allowed_networks=["10.0.10.0/24", "192.0.2.7"]), tls=True
    )
    [geo] = blocks(conf, "geo $mmpush_push_client_allowed")
    assert geo.splitlines()[1:] == ["default 0;", "10.0.10.0/24 1;", "192.0.2.7/32 1;", "}"]
    assert "if ($mmpush_push_client_allowed = 0) {\nreturn 403;\n}" in tls_server(conf)


def test_metrics_go_through_the_front_only_for_the_allowed_networks() -> None:
    off = push_front_conf(settings(push_proxy_metrics=True), tls=True)
    assert "/metrics" not in off, "metrics on but nobody listed: loopback only"
    conf = push_front_conf(
        settings(push_proxy_metrics=True, push_proxy_metrics_allowed_networks=["10.9.0.0/16"]),
        tls=True,
    )
    [geo] = blocks(conf, "geo $mmpush_metrics_client_allowed")
    assert geo.splitlines()[1:] == ["default 0;", "10.9.0.0/16 1;", "}"]
    metrics = tls_server(conf).split("location = /metrics {", 1)[1].split("location / {")[0]
    assert metrics.startswith("\nif ($mmpush_metrics_client_allowed = 0) {\nreturn 404;\n}")
