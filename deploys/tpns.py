"""TPNS: Mattermost's free test push service (https://push-test.mattermost.com).

    pyinfra inventories/mysite/inventory.py deploys/tpns.py

TPNS does not encrypt notifications: push_contents full or id_loaded are refused unless
push_contents_force = True. Group mattermost.
"""

from pyinfra import host, logger

from mmpush import mattermost
from mmpush.settings import load_settings, log_warnings, require_mode

settings = load_settings(host)
require_mode(settings, "tpns")
log_warnings(settings)

if settings.in_group("mattermost"):
    if settings.mattermost.contents_force and settings.mattermost.contents in ("full", "id_loaded"):
        logger.warning(
            f"    [{host.name}] push_contents={settings.mattermost.contents} forced with TPNS: "
            "message text crosses the internet unencrypted"
        )
    mattermost.configure_push(settings)
