"""The outbound NGINX TLS proxy mapped to Mattermost's hosted push service.

    pyinfra inventories/mysite/inventory.py deploys/outbound_proxy.py

Group outbound_proxies. deploys/hpns.py runs this too; use this one to change only the proxy.
"""

from pyinfra import host

from mmpush import outbound_proxy
from mmpush.settings import load_settings, log_warnings, require_mode

settings = load_settings(host)
require_mode(settings, "hpns")
log_warnings(settings)

if settings.in_group("outbound_proxies"):
    outbound_proxy.install_outbound_proxy(settings)
