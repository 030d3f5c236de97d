"""The outbound NGINX TLS proxy mapped to Mattermost's hosted push service (HPNS), for
Mattermost servers that may reach the internet only through it.

    from mmpush.outbound_proxy import install_outbound_proxy
    install_outbound_proxy(settings)      # in a deploy, for hosts in outbound_proxies

Mattermost servers use ``https://<outbound_proxy_name>:<outbound_proxy_port>`` (e.g.
``https://push.internal.example:8000``); the proxy forwards only the push API to the upstream
(default: the configured HPNS region), verifying its certificate and name, sending SNI, and
re-resolving its name while running (see docs/outbound-proxy.md for the design).
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindInFile
from pyinfra.operations import files

from mmpush.certificates import ACME_WEBROOT, tls_paths
from mmpush.nginx import install_nginx, tls_site
from mmpush.render import render
from mmpush.settings import OutboundProxySettings, Settings, SettingsError

OUTBOUND_CONF = "/etc/nginx/conf.d/mmpush-outbound-proxy.conf"
SYSTEM_TRUST_STORE = "/etc/ssl/certs/ca-certificates.crt"
UPSTREAM_CA_FILE = "/etc/mmpush/outbound-upstream-ca.pem"
#: The longest NGINX keeps a resolved address, whatever the DNS answer's TTL says.
RESOLVER_VALID = "30s"


def outbound_conf(
    outbound: OutboundProxySettings,
    resolvers: list[str],
    trusted_ca: str,
    tls: bool,
    http01: bool = True,
) -> str:
    """The proxy's NGINX site (port 80 for ACME always; the TLS proxy once ``tls``)."""
    private_key, fullchain = tls_paths(outbound.name)
    return render(
        "nginx/outbound-proxy.conf.j2",
        name=outbound.name,
        port=outbound.port,
        https_port_suffix=f":{outbound.port}",
        acme_webroot=ACME_WEBROOT,
        upstream_url=outbound.upstream_url,
        upstream_host=outbound.upstream_host,
        upstream_port=outbound.upstream_port,
        allowed_networks=outbound.allowed_networks,
        resolvers=resolvers,
        resolver_valid=RESOLVER_VALID,
        trusted_ca=trusted_ca,
        keepalive=outbound.keepalive,
        fullchain=fullchain,
        private_key=private_key,
        http01=http01,
        tls=tls,
    )


def host_resolvers() -> list[str]:
    """The host's own DNS servers (its /etc/resolv.conf), for NGINX's ``resolver``."""
    lines = host.get_fact(FindInFile, path="/etc/resolv.conf", pattern="^nameserver") or []
    servers = [line.split()[1] for line in lines if len(line.split()) > 1]
    return [f"[{s}]" if ":" in s else s for s in servers]


@deploy("Outbound push proxy")
def install_outbound_proxy(settings: Settings) -> None:
    """NGINX on an outbound_proxies host: TLS on the proxy's port, forwarding the push API to
    the hosted push service."""
    outbound = settings.outbound
    assert outbound is not None, "install_outbound_proxy needs push_mode hpns"
    resolvers = list(outbound.resolvers) or host_resolvers()
    if not resolvers:
        raise SettingsError(
            host.name,
            "outbound_proxy_resolvers",
            [],
            "DNS servers for NGINX to re-resolve the upstream (the host's /etc/resolv.conf "
            "has none)",
        )
    trusted_ca = SYSTEM_TRUST_STORE
    http01 = settings.acme.source == "acme-http01"
    install_nginx(port_80=http01)
    if outbound.ca_bundle is not None:
        trusted_ca = UPSTREAM_CA_FILE
        files.put(
            name=f"CA bundle for the upstream ({outbound.ca_bundle.source})",
            src=StringIO(outbound.ca_bundle.content.decode()),
            dest=UPSTREAM_CA_FILE,
            user="root",
            group="root",
            mode="644",
        )
    tls_site(
        outbound.name,
        OUTBOUND_CONF,
        lambda tls: outbound_conf(outbound, resolvers, trusted_ca, tls, http01),
        settings.acme,
    )
