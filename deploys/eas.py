"""EAS: your own Mattermost Push Proxy behind an NGINX TLS front, every Mattermost server
pointed at it.

    pyinfra inventories/mysite/inventory.py deploys/eas.py

Groups: push_proxies (the proxy and its front), mattermost (the servers). Settings:
group_data/all.py (documented defaults), push_proxies.py, mattermost.py.
"""

from pyinfra import host

from mmpush import mattermost, nginx, operations, push_proxy
from mmpush.settings import load_settings, log_warnings, require_mode

settings = load_settings(host)
require_mode(settings, "eas")
log_warnings(settings)

if settings.in_group("push_proxies"):
    push_proxy.install_push_proxy(settings)
    nginx.install_nginx(port_80=settings.acme.source == "acme-http01")
    nginx.push_front(settings)

# every push target is ready before any Mattermost server is pointed at it
operations.barrier(
    name="Push targets are ready",
    reason="Mattermost servers check the push URL and are pointed at it next",
)

if settings.in_group("mattermost"):
    mattermost.configure_push(settings)
