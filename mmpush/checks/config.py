"""A Mattermost server's effective configuration, read where it lives (the config API for a
database configuration, through the local-mode socket or a token; the file otherwise), and
what a push mode needs it to say. Shared by the verify suite and `mmpush diagnose`.

    effective = read_effective_config(run, settings.mattermost)   # run: command -> stdout
    effective.source                 # "the config API (local-mode socket ...)" or a path
    value_at(effective.text, ("EmailSettings", "PushNotificationServer"))
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmpush.jsonedit import MISSING, JsonEditError, effective_value
from mmpush.mattermost.api import TokenApi
from mmpush.mattermost.source import config_source_command, parse_config_source
from mmpush.settings import MattermostSettings

#: Runs a shell command (as root) on the Mattermost server and returns its stdout; raises
#: when it fails.
Runner = Callable[[str], str]

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


class ConfigReadError(RuntimeError):
    """The configuration could not be read; the message says where and why."""


@dataclass(frozen=True)
class EffectiveConfig:
    """The configuration the running server uses (JSON text) and where it was read."""

    text: str
    source: str


def read_effective_config(
    run: Runner, mm: MattermostSettings, timeout: int = 10
) -> EffectiveConfig:
    """Read the server's effective configuration (see the module docs)."""
    detected = parse_config_source(
        run(config_source_command(mm.service, mm.local_socket)).splitlines()
    )
    if detected.kind == "database" or mm.config_source == "database":
        if detected.socket:
            text = run(
                f"curl -sS --fail --max-time {timeout} --unix-socket "
                f"{shlex.quote(detected.socket)} http://localhost/api/v4/config"
            )
            where = f"the config API (local-mode socket {detected.socket}; {detected.describe()})"
        elif mm.api_url and mm.admin_token is not None:
            token = mm.admin_token.content.decode().strip()
            text = json.dumps(TokenApi(mm.api_url, token, mm.api_ca_bundle).get_config())
            where = f"the config API ({mm.api_url}; {detected.describe()})"
        else:
            raise ConfigReadError(
                f"the configuration is in {detected.describe()}, and neither the local-mode "
                "socket nor mattermost_admin_token reaches its API"
            )
    else:
        path = detected.path if detected.kind == "file" and detected.path else mm.config_path
        text = run(f"cat {shlex.quote(path)}")
        where = path
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigReadError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise ConfigReadError(f"{where} is not a JSON object")
    return EffectiveConfig(text, where)


def value_at(text: str, keys: tuple[str, ...]) -> Any:
    """What Mattermost reads for ``keys`` (Go's rules), or "<missing>"."""
    try:
        value = effective_value(text, keys)
    except JsonEditError as error:
        return f"<unreadable: {error}>"
    return "<missing>" if value is MISSING else value


def expected_push_settings(
    data: dict[str, Any], outbound_proxies: list[dict[str, Any]]
) -> dict[tuple[str, ...], Any]:
    """What a Mattermost server's push settings must be, from its inventory data alone (and
    the data of the inventory's outbound proxies)."""
    mode = data.get("push_mode")
    contents = data.get("push_contents") or "generic"
    if mode == "off":
        return {SEND: False, SERVER: ""}
    if mode == "eas":
        port = int(data.get("push_https_port") or 443)
        url = f"https://{data['push_name']}" + ("" if port == 443 else f":{port}")
    elif mode == "hpns":
        if outbound_proxies and data.get("hpns_use_outbound_proxy") is not False:
            proxy = outbound_proxies[0]
            port = int(proxy.get("outbound_proxy_port") or 8000)
            url = f"https://{proxy['outbound_proxy_name']}:{port}"
        else:
            url = HPNS_URLS[data.get("hpns_region") or "global"]
    elif mode == "tpns":
        url = TPNS_URL
    else:
        raise ConfigReadError(f"unknown push_mode {mode!r}")
    expected: dict[tuple[str, ...], Any] = {SEND: True, SERVER: url, CONTENTS: contents}
    if data.get("mattermost_log_level"):
        expected[("LogSettings", "FileLevel")] = data["mattermost_log_level"]
    return expected


def push_settings_problems(text: str, expected: dict[tuple[str, ...], Any]) -> list[str]:
    """Each push setting that differs from what is expected, in words (type first: true is
    not 1, "false" is not false)."""
    wrong = []
    for keys, want in expected.items():
        actual = value_at(text, keys)
        if type(actual) is not type(want) or actual != want:
            wrong.append(f"{'.'.join(keys)} = {actual!r}, expected {want!r}")
    return wrong
