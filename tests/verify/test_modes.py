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

import json
from dataclasses import dataclass
from typing import Any

import pytest

from mmpush.facts import MattermostEnvironment
from mmpush.inventory import InventoryHost
from mmpush.jsonedit import MISSING, JsonEditError, effective_value
from mmpush.mattermost.api import TokenApi
from mmpush.mattermost.source import config_source_command, parse_config_source
from mmpush.settings import Settings
from tests.verify.hostcheck import TIMEOUT, Host, check, q

mattermost = pytest.mark.group("mattermost")

SEND = ("EmailSettings", "SendPushNotifications")
SERVER = ("EmailSettings", "PushNotificationServer")
CONTENTS = ("EmailSettings", "PushNotificationContents")

#: Where each mode sends pushes, as Mattermost documents them (stated here, not taken from the
#: deploy code, so that a wrong URL in the deploy cannot also be the expected one).
HPNS_URLS = {
    "global": "https://global.push.mattermost.com",
    "us": "https://us.push.mattermost.com",
    "eu": "https://eu.push.mattermost.com",
    "ap": "https://ap.push.mattermost.com",
    "legacy": "https://push.mattermost.com",
}
TPNS_URL = "https://push-test.mattermost.com"


def expected_push_settings(
    host: InventoryHost, inventory: list[InventoryHost]
) -> dict[tuple[str, ...], Any]:
    """What a Mattermost server's push settings must be, from its inventory data alone."""
    data = host.data
    mode = data.get("push_mode")
    contents = data.get("push_contents") or "generic"
    if mode == "off":
        return {SEND: False, SERVER: ""}
    if mode == "eas":
        port = int(data.get("push_https_port") or 443)
        url = f"https://{data['push_name']}" + ("" if port == 443 else f":{port}")
    elif mode == "hpns":
        proxies = [h for h in inventory if h.in_group("outbound_proxies")]
        if proxies and data.get("hpns_use_outbound_proxy") is not False:
            proxy = proxies[0].data
            port = int(proxy.get("outbound_proxy_port") or 8000)
            url = f"https://{proxy['outbound_proxy_name']}:{port}"
        else:
            url = HPNS_URLS[data.get("hpns_region") or "global"]
    elif mode == "tpns":
        url = TPNS_URL
    else:
        pytest.fail(f"{host.name}: unknown push_mode {mode!r}")
    expected: dict[tuple[str, ...], Any] = {SEND: True, SERVER: url, CONTENTS: contents}
    if data.get("mattermost_log_level"):
        expected[("LogSettings", "FileLevel")] = data["mattermost_log_level"]
    return expected


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def mode_settings(settings: Settings) -> Settings:
    """The host's settings (any push mode)."""
    return settings


@dataclass(frozen=True)
class EffectiveConfig:
    """The configuration the running server uses, and where it was read: the config API for
    a database configuration (the local-mode socket, else the token), the file otherwise."""

    text: str
    source: str


@pytest.fixture
def effective(host: Host, mode_settings: Settings) -> EffectiveConfig:
    """The host's effective configuration (the text: duplicate keys that differ only in case
    are resolved the way Go's decoder resolves them)."""
    mm = mode_settings.mattermost
    detected = parse_config_source(
        check(host, config_source_command(mm.service, mm.local_socket)).splitlines()
    )
    if detected.kind == "database" or mm.config_source == "database":
        if detected.socket:
            text = check(
                host,
                f"curl -sS --fail --max-time {TIMEOUT} --unix-socket {q(detected.socket)} "
                "http://localhost/api/v4/config",
            )
            where = f"the config API (local-mode socket {detected.socket}; {detected.describe()})"
        elif mm.api_url and mm.admin_token is not None:
            token = mm.admin_token.content.decode().strip()
            text = json.dumps(TokenApi(mm.api_url, token, mm.api_ca_bundle).get_config())
            where = f"the config API ({mm.api_url}; {detected.describe()})"
        else:
            pytest.fail(
                f"{mode_settings.host}: the configuration is in {detected.describe()}, and "
                "neither the local-mode socket nor mattermost_admin_token reaches its API"
            )
    else:
        path = detected.path if detected.kind == "file" and detected.path else mm.config_path
        text = check(host, f"cat {q(path)}")
        where = path
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        pytest.fail(f"{where} is not valid JSON: {error}")
    assert isinstance(parsed, dict), f"{where} is not a JSON object"
    return EffectiveConfig(text, where)


def value_at(text: str, keys: tuple[str, ...]) -> Any:
    """What Mattermost reads for ``keys`` (Go's rules), or "<missing>"."""
    try:
        value = effective_value(text, keys)
    except JsonEditError as error:
        return f"<unreadable: {error}>"
    return "<missing>" if value is MISSING else value


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
    wrong = []
    for keys, expected in expected_push_settings(inventory_host, inventory).items():
        actual = value_at(effective.text, keys)
        # type first: true is not 1, "false" is not false
        if type(actual) is not type(expected) or actual != expected:
            wrong.append(f"{'.'.join(keys)} = {actual!r}, expected {expected!r}")
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
