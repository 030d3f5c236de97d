"""Runbook: Mattermost push logging at DEBUG for a while, lowered again by each host itself
(a transient systemd timer, `runbook_debug_minutes`, 30 by default), and optionally a support
bundle. See docs/runbooks/push-debug.md.

    pyinfra inventories/mysite/inventory.py deploys/runbooks/push_debug.py
    pyinfra inventories/mysite/inventory.py deploys/runbooks/push_debug.py \\
        --data runbook_debug_minutes=10 --data runbook_collect=true

`LogSettings.FileLevel` and `NotificationLogSettings.FileLevel` go to DEBUG where the server's
configuration lives (the local-mode socket, live; else config.json and a restart). With
`runbook_collect`, every host's push evidence (logs, journal, NGINX lines, effective push
settings, certificate dates, versions) is copied, secrets redacted, into
support/<host>-<time>/ on this machine.
"""

from pyinfra import host

from mmpush.runbooks import bundle, debug
from mmpush.settings import load_runbook_settings, load_settings, log_warnings

settings = load_settings(host)
runbook = load_runbook_settings(host)
log_warnings(settings)

if settings.in_group("mattermost"):
    debug.push_logging_debug(settings, runbook)

if runbook.collect:
    bundle.collect_support_bundle(
        name=f"Support bundle into {runbook.support_dir}/",
        settings=settings,
        runbook=runbook,
    )
