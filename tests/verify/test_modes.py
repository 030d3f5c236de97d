"""Mattermost servers in every push mode: config.json says what the mode says, nothing in the
environment overrides it, the server runs, and it reaches its push service over TLS it trusts.

    pytest tests/verify --inventory inventories/lab.py --data push_mode=hpns
    pytest tests/verify/test_modes.py --inventory inventories/prod.py

Give the suite the same ``--data`` the deploy had (the mode is host data). This is the one
place Mattermost servers are checked, in every mode (eas included). In "hpns" mode the push
server is the outbound proxy's URL when the inventory has outbound_proxies hosts (``settings``
in conftest.py reads them as a deploy does).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mmpush.facts import MattermostEnvironment
from mmpush.mattermost import env_name, push_values
from mmpush.settings import Settings
from tests.verify.hostcheck import TIMEOUT, Host, check, q

mattermost = pytest.mark.group("mattermost")

SEND = ("EmailSettings", "SendPushNotifications")
SERVER = ("EmailSettings", "PushNotificationServer")


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def mode_settings(settings: Settings) -> Settings:
    """The host's settings (any push mode)."""
    return settings


@pytest.fixture
def config(host: Host, mode_settings: Settings) -> dict[str, Any]:
    """The host's config.json, parsed."""
    path = mode_settings.mattermost.config_path
    try:
        parsed = json.loads(check(host, f"cat {q(path)}"))
    except json.JSONDecodeError as error:
        pytest.fail(f"{path} is not valid JSON: {error}")
    assert isinstance(parsed, dict), f"{path} is not a JSON object"
    return parsed


def value_at(config: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """``config["EmailSettings"]["PushNotificationServer"]``, or "<missing>"."""
    value: Any = config
    for key in keys:
        value = value.get(key, "<missing>") if isinstance(value, dict) else "<missing>"
    return value


# --- checks -------------------------------------------------------------------------------


@mattermost
def test_mattermost_is_running(host: Host, mode_settings: Settings) -> None:
    service = mode_settings.mattermost.service
    assert host.service(service).is_running, f"{service} is not active"


@mattermost
def test_mattermost_config_holds_the_push_values_of_the_mode(
    config: dict[str, Any], mode_settings: Settings
) -> None:
    wrong = []
    for keys, expected in push_values(mode_settings).items():
        actual = value_at(config, keys)
        # type first: true is not 1, "false" is not false
        if type(actual) is not type(expected) or actual != expected:
            wrong.append(f"{'.'.join(keys)} = {actual!r}, expected {expected!r}")
    assert not wrong, (
        f"{mode_settings.mattermost.config_path} (push_mode {mode_settings.push_mode!r}): "
        f"{'; '.join(wrong)}"
    )


@mattermost
def test_no_environment_variable_overrides_the_push_settings(
    host: Host, mode_settings: Settings
) -> None:
    unit = mode_settings.mattermost.service
    fact = MattermostEnvironment()
    present = set(fact.process(check(host, fact.command(unit)).splitlines()))
    overridden = [
        env_name(keys) for keys in push_values(mode_settings) if env_name(keys) in present
    ]
    assert not overridden, (
        f"{unit}'s environment sets {', '.join(overridden)}: it wins over config.json"
    )


@mattermost
def test_off_mode_sends_no_push_and_names_no_server(
    config: dict[str, Any], mode_settings: Settings
) -> None:
    if mode_settings.push_mode != "off":
        pytest.skip(f"{mode_settings.host}: push_mode is {mode_settings.push_mode!r}, not 'off'")
    send, server = value_at(config, SEND), value_at(config, SERVER)
    path = mode_settings.mattermost.config_path
    assert send is False, f"{path}: {'.'.join(SEND)} = {send!r} in push_mode 'off': must be false"
    assert server == "", (
        f"{path}: {'.'.join(SERVER)} = {server!r} in push_mode 'off': must be \"\" "
        "(nothing of an earlier mode left behind)"
    )


@mattermost
def test_mattermost_reaches_its_push_service_over_trusted_tls(
    host: Host, mode_settings: Settings
) -> None:
    url = mode_settings.push_server_url
    if url is None:
        pytest.skip(f"{mode_settings.host}: push_mode {mode_settings.push_mode!r} has no server")
    result = host.run(f"curl -sSf --max-time {TIMEOUT} -o /dev/null {q(url + '/version')}")
    assert result.rc == 0, (
        f"this Mattermost server cannot reach {url}/version over TLS it trusts "
        f"(push_mode {mode_settings.push_mode!r}, curl exit {result.rc}): "
        f"{result.stderr.strip()}"
    )
