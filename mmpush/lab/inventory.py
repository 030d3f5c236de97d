"""Build pyinfra inventory groups from the running lab's state (``mmpush lab status``).

Used by ``inventories/lab.py``:

    mattermost = lab_group("mattermost")    # [("mm1", {"ssh_hostname": "10.77.44.11", ...})]
"""

from __future__ import annotations

from typing import Any

from mmpush.lab.layout import LabPaths


class LabNotRunning(RuntimeError):
    """inventories/lab.py was used while the lab is down."""


def lab_state(paths: LabPaths | None = None) -> dict[str, Any]:
    """The state ``mmpush lab up`` recorded; a clear error when there is no lab."""
    from mmpush.lab.lab import read_state

    state = read_state(paths or LabPaths.default())
    if not state or state.get("phase") != "up":
        raise LabNotRunning("the lab is not up: run `mmpush lab up` (or `make demo`) first")
    return state


def host_data(state: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """pyinfra host data to reach one lab host over SSH, as production would, with its key
    pinned in the lab's known_hosts (strict host key checking stays on), plus the lab's
    settings (:func:`lab_settings`)."""
    return {
        "ssh_hostname": entry["ip"],
        "ssh_user": state["ssh"]["user"],
        # production connects as a user with sudo, so the lab does too
        "_sudo": state["ssh"]["user"] != "root",
        "ssh_key": state["ssh"]["key"],
        "ssh_known_hosts_file": state["ssh"]["known_hosts"],
        "ssh_strict_host_key_checking": "yes",
        "lab_fqdns": entry["fqdns"],
        **lab_settings(state),
        **group_settings(state, entry["groups"]),
    }


def group_settings(state: dict[str, Any], groups: list[str]) -> dict[str, Any]:
    """Settings a site would put in one group's data: the outbound proxy's name is internal
    (internal.test), so its certificate comes through ACME DNS-01 (port 80 stays closed)."""
    if "outbound_proxies" in groups:
        return {"tls_certificate_source": "acme-dns01"}
    return {}


def lab_settings(state: dict[str, Any]) -> dict[str, Any]:
    """The settings a site would put in group_data, for the lab: EAS on push.lab.test with
    certificates from the lab's Pebble, the emulator release and throwaway credentials.
    Any of them can be overridden with ``pyinfra --data key=value``."""
    fixtures = state["fixtures"]
    return {
        "push_mode": "eas",
        "push_name": "push.lab.test",
        "acme_directory_url": state["acme"]["directory_url"],
        "acme_ca_bundle": state["acme"]["ca_bundle"],
        "acme_account_key_file": f"{state['state_dir']}/acme-account.pem",
        "push_proxy_version": fixtures["version"],
        "push_proxy_sha256": fixtures["sha256"],
        "push_proxy_archive": fixtures["archive"],
        "push_proxy_apple": [
            {
                "type": "apple_rn",
                "topic": "com.mattermost.rnbeta",
                "auth_key_file": fixtures["apns_key"],
                "auth_key_id": "LABKEY0001",
                "team_id": "LABTEAM001",
            }
        ],
        "push_proxy_android": [
            {"type": "android_rn", "service_account_file": fixtures["fcm_service_account"]}
        ],
        "outbound_proxy_name": "outbound.internal.test",
        # ACME DNS-01 for internal names: the lab's BIND (ns1) takes the TSIG-signed updates
        "acme_dns_server": state["dns"]["server"],
        "acme_dns_zone": state["dns"]["zone"],
        "acme_dns_tsig_key_name": state["dns"]["tsig_key_name"],
        "acme_dns_tsig_secret": state["dns"]["tsig_secret_file"],
        # the lab DNS (pebble-challtestsrv): tests change its records to move the upstream
        "outbound_proxy_resolvers": [state["acme"]["dns_server"]],
        "outbound_proxy_allowed_networks": [state["network"]["subnet"]],
    }


def lab_group(group: str, paths: LabPaths | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The lab hosts in ``group`` as a pyinfra inventory group: [(name, data), ...]."""
    state = lab_state(paths)
    return [
        (entry["name"], host_data(state, entry))
        for entry in state["hosts"]
        if group in entry["groups"]
    ]
