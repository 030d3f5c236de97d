"""Push notifications off: SendPushNotifications = false, no push server.

    pyinfra inventories/mysite/inventory.py deploys/off.py

Group mattermost.
"""

from pyinfra import host

from mmpush import mattermost
from mmpush.settings import load_settings, log_warnings, require_mode

settings = load_settings(host)
require_mode(settings, "off")
log_warnings(settings)

if settings.in_group("mattermost"):
    mattermost.configure_push(settings)
