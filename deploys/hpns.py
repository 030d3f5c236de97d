"""HPNS: Mattermost's hosted push service (needs an Enterprise licence).

    pyinfra inventories/mysite/inventory.py deploys/hpns.py

Mattermost servers (group mattermost) get the HPNS URL of `hpns_region`, or, when the
inventory has outbound_proxies hosts, the outbound proxy's URL; the proxy itself is deployed
first (same as deploys/outbound_proxy.py).
"""

from pyinfra import host

from mmpush import mattermost, operations, outbound_proxy
from mmpush.settings import load_settings, log_warnings, require_mode

settings = load_settings(host)
require_mode(settings, "hpns")
log_warnings(settings)

if settings.in_group("outbound_proxies"):
    outbound_proxy.install_outbound_proxy(settings)

# every push target is ready before any Mattermost server is pointed at it
operations.barrier(
    name="Push targets are ready",
    reason="Mattermost servers check the push URL and are pointed at it next",
)

if settings.in_group("mattermost"):
    # warns, naming the server, only when its licence does not cover HPNS (read on the host)
    mattermost.configure_push(settings)
