"""The Mattermost server emulator's pure logic, against the real server's rules: config merge
(config/utils.go Merge), environment overrides (config/environment.go), sanitising, the
HPNS gate (IsMHPNSEndpoint), the status rule for pushes, DSN handling, Go's JSON format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.emulators.mattermost import mattermost_emulator as mme

FAKE = "*" * 32


def base_config() -> dict[str, Any]:
    config = mme.set_defaults({"ServiceSettings": {"SiteURL": ""}})
    config["PluginSettings"]["Plugins"] = {"a": {"x": 1}, "b": {"y": 2}}
    config["MessageExportSettings"] = {"GlobalRelaySettings": {"SMTPPassword": "pw", "Port": 25}}
    return config


def test_merge_replaces_only_the_settings_present_and_maps_whole() -> None:
    base = base_config()
    patch = mme.canonical_patch(
        base,
        {
            "EMAILSETTINGS": {"pushnotificationserver": "https://x", "SMTPPassword": None},
            "PluginSettings": {"Plugins": {"c": {}}},
            "MessageExportSettings": {"GlobalRelaySettings": {"Port": 26}},
            "NewSection": {"Key": 1},
        },
    )
    merged = mme.merge_config(base, patch)
    assert merged["EmailSettings"]["PushNotificationServer"] == "https://x"
    assert merged["EmailSettings"]["SMTPPassword"] == base["EmailSettings"]["SMTPPassword"]
    assert merged["PluginSettings"]["Plugins"] == {"c": {}}  # a Go map: replaced whole
    assert merged["MessageExportSettings"]["GlobalRelaySettings"] == {
        "SMTPPassword": "pw",
        "Port": 26,
    }  # a nested struct: merged field by field
    assert merged["NewSection"] == {"Key": 1}
    assert base["EmailSettings"]["PushNotificationServer"] == ""  # base untouched
    unchanged = {k: v for k, v in merged.items() if k not in patch}
    assert unchanged == {k: v for k, v in base.items() if k not in patch}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"EmailSettings": {"SendPushNotifications": "true"}}, "string into Go struct field"),
        ({"EmailSettings": {"PushNotificationBuffer": 1.5}}, "number into Go struct field"),
        ({"EmailSettings": {"PushNotificationServer": 7}}, "of type string"),
        ({"EmailSettings": "on"}, "Config.EmailSettings"),
        ([], "model.Config"),
    ],
)
def test_a_body_of_the_wrong_type_is_refused(body: Any, fragment: str) -> None:
    with pytest.raises(mme.ConfigError, match="cannot unmarshal") as raised:
        mme.canonical_patch(base_config(), body)
    assert fragment in str(raised.value)


def test_environment_overrides_follow_go_parsing_and_are_never_stored() -> None:
    stored = base_config()
    env = mme.mm_environment(
        {
            "MM_EMAILSETTINGS_SENDPUSHNOTIFICATIONS": "T",
            "MM_EMAILSETTINGS_PUSHNOTIFICATIONBUFFER": "+12",
            "MM_SQLSETTINGS_DATASOURCEREPLICAS": "a b",
            "MM_LOGSETTINGS_ENABLEFILE": "yes",  # not a Go bool: ignored
            "mm_teamsettings_sitename": "lower",
            "MM_MESSAGEEXPORTSETTINGS_GLOBALRELAYSETTINGS_PORT": "2525",
            "MM_CONFIG": "postgres://x",  # not a setting
            "PATH": "/bin",
        }
    )
    effective = mme.apply_environment(stored, env)
    assert effective["EmailSettings"]["SendPushNotifications"] is True
    assert effective["EmailSettings"]["PushNotificationBuffer"] == 12
    assert effective["SqlSettings"]["DataSourceReplicas"] == ["a", "b"]
    assert effective["LogSettings"]["EnableFile"] is True  # the stored value, unchanged
    assert effective["TeamSettings"]["SiteName"] == "lower"
    assert effective["MessageExportSettings"]["GlobalRelaySettings"]["Port"] == 2525
    overrides = mme.environment_map(effective, env)
    assert overrides["EmailSettings"] == {
        "SendPushNotifications": True,
        "PushNotificationBuffer": True,
    }
    assert overrides["MessageExportSettings"] == {"GlobalRelaySettings": {"Port": True}}
    # What is stored keeps the stored values of overridden settings.
    effective["EmailSettings"]["PushNotificationServer"] = "https://changed"
    to_store = mme.remove_env_overrides(effective, stored, overrides)
    assert to_store["EmailSettings"]["SendPushNotifications"] is False
    assert to_store["TeamSettings"]["SiteName"] == "Mattermost"
    assert to_store["EmailSettings"]["PushNotificationServer"] == "https://changed"


def test_sanitize_masks_secrets_and_desanitize_restores_them() -> None:
    config = base_config()
    config["SqlSettings"]["DataSourceReplicas"] = ["postgres://r1", "postgres://r2"]
    config["GitLabSettings"] = {"Secret": ""}
    masked = mme.sanitize(config)
    assert masked["SqlSettings"]["DataSource"] == FAKE
    assert masked["SqlSettings"]["DataSourceReplicas"] == [FAKE, FAKE]
    assert masked["MessageExportSettings"]["GlobalRelaySettings"]["SMTPPassword"] == FAKE
    assert masked["GitLabSettings"]["Secret"] == ""  # empty: left empty
    assert masked["EmailSettings"]["PushNotificationServer"] == ""
    assert config["SqlSettings"]["DataSource"] != FAKE  # a copy
    mme.desanitize(config, masked)
    assert masked == config


@pytest.mark.parametrize(
    ("url", "gated"),
    [
        *[(url, True) for url in mme.HPNS_URLS],
        ("https://global.push.mattermost.com/", False),  # exact comparison
        ("https://GLOBAL.push.mattermost.com", False),
        ("https://push-test.mattermost.com", False),
        ("https://push.lab.test", False),
        ("", False),
    ],
)
def test_the_hpns_gate_is_an_exact_match_of_six_urls(url: str, gated: bool) -> None:
    assert mme.is_hpns_url(url) is gated


@pytest.mark.parametrize(
    ("push_status", "status", "active_channel", "reason"),
    [
        ("away", "online", "", "user_is_active"),
        ("away", "away", "", ""),
        ("away", "offline", "", ""),
        ("away", "dnd", "", "user_status"),
        ("online", "online", "other", ""),  # online users get pushes for other channels
        ("online", "online", "chan", "user_is_active"),
        (None, "online", "other", ""),
        ("offline", "away", "", "user_is_active"),
        ("offline", "offline", "", ""),
    ],
)
def test_status_rule(
    push_status: str | None, status: str, active_channel: str, reason: str
) -> None:
    props = {} if push_status is None else {"push_status": push_status}
    current = {"status": status, "last_activity_at": mme.now_millis(), "active_channel": ""}
    current["active_channel"] = active_channel
    assert mme.status_reason(props, current, "chan") == reason


def test_a_manual_status_is_not_replaced_by_an_automatic_one() -> None:
    data = {"statuses": {}}
    mme.set_user_status(data, "u1", "away", manual=True)
    mme.set_user_status(data, "u1", "online", manual=False)
    assert data["statuses"]["u1"]["status"] == "away"
    mme.set_user_status(data, "u1", "online", manual=True)
    assert data["statuses"]["u1"]["status"] == "online"


def test_dsn_handling() -> None:
    dsn = "postgres://mmuser:pw@db1:5432/mattermost?sslmode=disable&binary_parameters=yes"
    assert (
        mme.is_database_dsn(dsn)
        and mme.is_database_dsn("mysql://a")
        and mme.is_database_dsn("postgresql://a")
    )
    assert not mme.is_database_dsn("/opt/mattermost/config/config.json")
    assert mme.sanitize_dsn(dsn) == (
        "postgres://****:****@db1:5432/mattermost?binary_parameters=yes&sslmode=disable"
    )
    assert mme.libpq_dsn(dsn) == "postgres://mmuser:pw@db1:5432/mattermost?sslmode=disable"
    assert mme.config_dsn("", {"MM_CONFIG": dsn}) == dsn
    assert mme.config_dsn("flag.json", {"MM_CONFIG": dsn}) == "flag.json"
    assert mme.config_dsn("", {}) == "config.json"


def test_go_json_formats() -> None:
    value = {"B": {"Url": "http://x/?a=1&b=<2>", "List": [], "Map": {}}, "A": [1, 2]}
    assert mme.go_marshal_indent(value) == (
        "{\n"
        '    "B": {\n'
        '        "Url": "http://x/?a=1\\u0026b=\\u003c2\\u003e",\n'
        '        "List": [],\n'
        '        "Map": {}\n'
        "    },\n"
        '    "A": [\n'
        "        1,\n"
        "        2\n"
        "    ]\n"
        "}"
    )
    assert mme.go_encode({"a": "&"}) == '{"a":"\\u0026"}\n'
    assert json.loads(mme.go_marshal_indent(value)) == value


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        (":8065", True),
        ("127.0.0.1:8065", True),
        ("[::]:8065", True),
        ("mm.lab.test:80", True),
        ("8065", False),
        (":port", False),
        ("1.2.3.4:70000", False),
        ("bad host:1", False),
    ],
)
def test_listen_address_validation(address: str, valid: bool) -> None:
    if valid:
        mme.parse_listen_address(address)
    else:
        with pytest.raises(mme.ConfigError, match="listen address"):
            mme.parse_listen_address(address)
