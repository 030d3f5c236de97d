"""`mmpush check INVENTORY`: validate every host's settings the way a deploy will, without
connecting to any host. The same checks a deploy runs while pyinfra prepares (settings,
credentials as the push proxy parses them, placeholders), for CI of a site's inventory.

    results = check_inventory("inventories/mysite/inventory.py", data=["push_mode=hpns"])
    [(r.host, r.error) for r in results if r.error]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmpush.inventory import InventoryHost, load_inventory
from mmpush.settings import Settings, SettingsError, placeholders, settings_from_data


@dataclass(frozen=True)
class HostCheck:
    """One host's verdict: ``error`` (None when its settings are valid) and warnings."""

    host: str
    groups: tuple[str, ...]
    error: str | None
    warnings: tuple[str, ...] = ()
    #: Every setting still holding a CHANGE-ME placeholder, with what goes there.
    placeholders: tuple[tuple[str, str], ...] = ()


def inventory_settings(host: InventoryHost, inventory: Sequence[InventoryHost]) -> Settings:
    """A host's settings as ``load_settings`` makes them in a deploy: Mattermost servers also
    see the inventory's outbound proxies. Raises SettingsError.

        settings = inventory_settings(host, load_inventory("inventories/prod.py"))
    """
    proxies = {
        other.name: other.data
        for other in inventory
        if other.in_group("outbound_proxies") and host.in_group("mattermost")
    }
    return settings_from_data(host.name, host.groups, host.data, proxies)


def check_host(host: InventoryHost, inventory: list[InventoryHost]) -> HostCheck:
    """Validate one host as ``load_settings`` does in a deploy (Mattermost servers also see
    the inventory's outbound proxies)."""
    try:
        settings = inventory_settings(host, inventory)
    except SettingsError as error:
        return HostCheck(host.name, host.groups, str(error), (), tuple(placeholders(host.data)))
    return HostCheck(host.name, host.groups, None, settings.warnings)


def check_inventory(inventory: str | Path, data: list[str] | None = None) -> list[HostCheck]:
    """Every host of ``inventory`` (``--data key=value`` overrides as pyinfra applies them)."""
    hosts = load_inventory(Path(inventory).resolve(), data=data)
    return [check_host(host, hosts) for host in hosts]
