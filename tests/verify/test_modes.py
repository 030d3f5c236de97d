"""Mattermost servers in every push mode: config.json says what the mode says, nothing in the
environment overrides it, the server runs, and it reaches its push service over TLS it trusts.

    pytest tests/verify --inventory inventories/lab.py --data push_mode=hpns
    pytest tests/verify/test_modes.py --inventory inventories/mysite/inventory.py

Give the suite the same ``--data`` the deploy had (the mode is host data). This is the one
place Mattermost servers are checked, in every mode (eas included). In "hpns" mode the push
server is the outbound proxy's URL when the inventory has outbound_proxies hosts (``settings``
in conftest.py reads them as a deploy does).
"""

from __future__ import annotations

from typing import Any

import pytest

from mmpush.checks.config import (
    SEND,
    SERVER,
    ConfigReadError,
    EffectiveConfig,
    push_settings_problems,
    read_effective_config,
    value_at,
)
from mmpush.checks.config import expected_push_settings as expected_from_data
from mmpush.facts import MattermostEnvironment
from mmpush.inventory import InventoryHost
from mmpush.settings import Settings
from tests.verify.hostcheck import TIMEOUT, Host, check, q

mattermost = pytest.mark.group("mattermost")


def expected_push_settings(
    host: InventoryHost, inventory: list[InventoryHost]
) -> dict[tuple[str, ...], Any]:
    """What a Mattermost server's push settings must be, from its inventory data alone."""
    proxies = [h.data for h in inventory if h.in_group("outbound_proxies")]
    try:
        return expected_from_data(host.data, proxies)
    except ConfigReadError as error:
        pytest.fail(f"{host.name}: {error}")


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def mode_settings(settings: Settings) -> Settings:
    """The host's settings (any push mode)."""
    return settings


@pytest.fixture
def effective(host: Host, mode_settings: Settings) -> EffectiveConfig:
    """The host's effective configuration, read where it lives (mmpush/checks/config.py)."""
    try:
        return read_effective_config(lambda command: check(host, command), mode_settings.mattermost)
    except ConfigReadError as error:
        pytest.fail(f"{mode_settings.host}: {error}")


# --- checks -------------------------------------------------------------------------------


@mattermost
def test_mattermost_is_running(host: Host, mode_settings: Settings) -> None:
    service = mode_settings.mattermost.service
    assert host.service(service).is_running, f"{service} is not active"


@mattermost
def test_mattermost_config_holds_the_push_values_of_the_mode(
    effective: EffectiveConfig,
    mode_settings: Settings,
    inventory_host: InventoryHost,
    inventory: list[InventoryHost],
) -> None:
    wrong = push_settings_problems(
        effective.text, expected_push_settings(inventory_host, inventory)
    )
    assert not wrong, (
        f"{mode_settings.host}: {effective.source} (push_mode {mode_settings.push_mode!r}): "
        f"{'; '.join(wrong)}"
    )


@mattermost
def test_no_environment_variable_overrides_the_push_settings(
    host: Host,
    mode_settings: Settings,
    inventory_host: InventoryHost,
    inventory: list[InventoryHost],
) -> None:
    unit = mode_settings.mattermost.service
    fact = MattermostEnvironment()
    present = fact.process(check(host, fact.command(unit)).splitlines())
    overridden = [
        f"{name} (in {', '.join(present[name])})"
        for keys in expected_push_settings(inventory_host, inventory)
        if (name := "MM_" + "_".join(key.upper() for key in keys)) in present
    ]
    assert not overridden, (
        f"{unit}'s environment sets {', '.join(overridden)}: it wins over config.json"
    )


@mattermost
def test_off_mode_sends_no_push_and_names_no_server(
    effective: EffectiveConfig, mode_settings: Settings
) -> None:
    if mode_settings.push_mode != "off":
        pytest.skip(f"{mode_settings.host}: push_mode is {mode_settings.push_mode!r}, not 'off'")
    send, server = value_at(effective.text, SEND), value_at(effective.text, SERVER)
    path = effective.source
    assert send is False, f"{path}: {'.'.join(SEND)} = {send!r} in push_mode 'off': must be false"
    assert server == "", (
        f"{path}: {'.'.join(SERVER)} = {server!r} in push_mode 'off': must be \"\" "
        "(nothing of an earlier mode left behind)"
    )


@mattermost
def test_mattermost_reaches_its_push_service_over_trusted_tls(
    host: Host,
    mode_settings: Settings,
    inventory_host: InventoryHost,
    inventory: list[InventoryHost],
) -> None:
    url = expected_push_settings(inventory_host, inventory)[SERVER]
    if not url:
        pytest.skip(f"{mode_settings.host}: push_mode {mode_settings.push_mode!r} has no server")
    result = host.run(f"curl -sSf --max-time {TIMEOUT} -o /dev/null {q(url + '/version')}")
    assert result.rc == 0, (
        f"this Mattermost server cannot reach {url}/version over TLS it trusts "
        f"(push_mode {mode_settings.push_mode!r}, curl exit {result.rc}): "
        f"{result.stderr.strip()}"
    )
