"""NGINX from Debian's packages, hardened, as the TLS front of the push proxy.

    install_nginx()            # package, hardened nginx.conf, Debian's default site removed
    push_front(settings)       # port 80 (ACME + redirect), certificate, TLS on 443

Every change goes through ``nginx_files``: ``nginx -t`` must pass before NGINX reloads, and a
config that fails is rolled back, so NGINX keeps serving what it served before.
"""

from __future__ import annotations

from collections.abc import Callable

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import apt, files

from mmpush.certificates import (
    ACME_WEBROOT,
    acme_certificate_problem_on_host,
    certificate,
    check_certificate_source,
    tls_paths,
)
from mmpush.facts import FileBytes
from mmpush.operations import nginx_files
from mmpush.render import MOZILLA_INTERMEDIATE_CIPHERS, render
from mmpush.settings import AcmeConfig, Settings

NGINX_CONF = "/etc/nginx/nginx.conf"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
PUSH_FRONT_CONF = "/etc/nginx/conf.d/mmpush-push-front.conf"
DEFAULT_SERVER_CONF = "/etc/nginx/conf.d/mmpush-00-default-server.conf"
#: Debian's "Welcome to nginx!" page, written by the package's postinst.
DEBIAN_DEFAULT_PAGE = "/var/www/html/index.nginx-debian.html"


def hardened_nginx_conf() -> str:
    """Debian's nginx.conf without TLS 1.0/1.1 and server tokens, Mozilla intermediate TLS."""
    return render("nginx/nginx.conf.j2", mozilla_ciphers=MOZILLA_INTERMEDIATE_CIPHERS)


def push_front_conf(settings: Settings, tls: bool) -> str:
    """The push front's site: port 80 always; the TLS server once ``tls`` (a cert exists)."""
    eas = settings.eas
    assert eas is not None
    private_key, fullchain = tls_paths(eas.push_name)
    return render(
        "nginx/push-front.conf.j2",
        push_name=eas.push_name,
        https_port=eas.https_port,
        https_port_suffix="" if eas.https_port == 443 else f":{eas.https_port}",
        acme_webroot=ACME_WEBROOT,
        listen_port=eas.listen_port,
        fullchain=fullchain,
        private_key=private_key,
        # the proxy answers within its send timeout (at most 29 s): a little margin only
        read_timeout=eas.send_timeout_sec + 5,
        extra_config=eas.front_extra_config.strip(),
        allowed_networks=eas.front_allowed_networks,
        metrics=eas.enable_metrics and bool(eas.metrics_allowed_networks),
        metrics_networks=eas.metrics_allowed_networks,
        http01=settings.acme.source == "acme-http01",
        tls=tls,
    )


@deploy("NGINX")
def install_nginx(port_80: bool = True) -> None:
    """NGINX from Debian, with the hardened global config and no default site.

    + port_80: NGINX listens on port 80 (ACME HTTP-01 needs it); False keeps it closed."""
    apt.packages(
        name="NGINX and OpenSSL", packages=["nginx", "openssl"], update=True, cache_time=3600
    )
    files.file(name="No Debian default page", path=DEBIAN_DEFAULT_PAGE, present=False)
    files.directory(name=ACME_WEBROOT, path=ACME_WEBROOT, user="root", group="root", mode="755")
    nginx_files(
        name="Hardened nginx.conf, default server refusing unknown names (nginx -t, reload)",
        files={
            NGINX_CONF: hardened_nginx_conf(),
            DEFAULT_SITE: None,
            DEFAULT_SERVER_CONF: render("nginx/default-server.conf.j2", port_80=port_80),
        },
    )


def bootstrap_conf_path(domain: str) -> str:
    """Where a name's port-80 site lives until it has a certificate (a file of its own, so
    the site that serves today keeps serving while a new name gets its certificate)."""
    return f"/etc/nginx/conf.d/mmpush-acme-{domain}.conf"


#: What a site serving ACME HTTP-01 challenges has (templates/nginx/acme-http.conf.j2).
ACME_LOCATION = b"location ^~ /.well-known/acme-challenge/"


def needs_port_80_site(domain: str, conf_path: str, acme: AcmeConfig) -> bool:
    """True when ``domain`` has a certificate that HTTP-01 must replace but its site does not
    answer ACME challenges on port 80 (it came from certificate files or DNS-01, which close
    port 80): the port-80 bootstrap site is needed again, certificate or not."""
    if acme_certificate_problem_on_host(domain, acme) is None:
        return False
    site = host.get_fact(FileBytes, path=conf_path) or b""
    return f"server_name {domain};".encode() not in site or ACME_LOCATION not in site


def tls_site(
    domain: str, conf_path: str, render_conf: Callable[[bool], str], acme: AcmeConfig
) -> None:
    """A TLS site of ours on NGINX: a port-80 site for ``domain`` (ACME HTTP-01) until it has
    a certificate, then the certificate, then the whole site in ``conf_path``, replacing the
    port-80 one (each step nginx -t gated). Until the certificate exists, whatever
    ``conf_path`` served before (e.g. the site of an earlier name) keeps serving.

        tls_site("push.example.com", "/etc/nginx/conf.d/x.conf", lambda tls: ..., settings.acme)
    """
    _, fullchain = tls_paths(domain)
    bootstrap = bootstrap_conf_path(domain)
    if acme.source == "acme-http01":
        nginx_files(
            name=f"Port 80 for {domain} (until it has a certificate)",
            files={bootstrap: render_conf(False)},
            skip_if_exists=None if needs_port_80_site(domain, conf_path, acme) else fullchain,
        )
    check_certificate_source(domain, acme)
    certificate(name=f"Certificate for {domain}", domain=domain, acme_config=acme)
    # the site replaces its port-80 bootstrap, and any left by a name that never got one
    stale = host.get_fact(FindFiles, path="/etc/nginx/conf.d", fname="mmpush-acme-*.conf") or []
    nginx_files(
        name=f"TLS site for {domain} (nginx -t, then reload)",
        files={conf_path: render_conf(True), bootstrap: None, **dict.fromkeys(stale)},
    )


@deploy("Push proxy TLS front")
def push_front(settings: Settings) -> None:
    """The push proxy's TLS front on the push name (port 80 for ACME, then TLS)."""
    eas = settings.eas
    assert eas is not None
    tls_site(
        eas.push_name,
        PUSH_FRONT_CONF,
        lambda tls: push_front_conf(settings, tls),
        settings.acme,
    )
