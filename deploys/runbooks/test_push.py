"""Runbook: can this site's Mattermost servers push? A probe push per app type from every
Mattermost server, through the push server that server uses (its own DNS, egress, outbound
proxy and trust store), with an obviously fake device token. See docs/runbooks/test-push.md.

    pyinfra inventories/mysite/inventory.py deploys/runbooks/test_push.py
    pyinfra inventories/mysite/inventory.py deploys/runbooks/test_push.py \\
        --data runbook_send_dm=true         # also B sends A a DM (a test account pair)

One line per server and app type: OK, or what is wrong and the evidence. The run fails when
a server cannot push. Nothing is changed on any host.
"""

from pyinfra import host

from mmpush.runbooks import dm, probe
from mmpush.runbooks.logs import server_log_paths
from mmpush.settings import load_runbook_settings, load_settings, log_warnings

settings = load_settings(host)
runbook = load_runbook_settings(host)
log_warnings(settings)

if settings.in_group("mattermost"):
    probe.probe_push(
        name="Test push: a probe per app type from this server (fake device token)",
        mattermost=settings.mattermost,
        app_types=probe.app_types_of(host.inventory, settings.push_mode),
        expected_url=settings.push_server_url,
        outbound_url=settings.hpns_outbound_url or "",
    )
    if runbook.send_dm:
        dm.end_to_end_dm(
            name=f"Test push: B sends {runbook.dm_recipient} a DM (end to end)",
            runbook=runbook,
            mattermost=settings.mattermost,
            logs=server_log_paths(host, settings.mattermost),
            _serial=True,
        )
