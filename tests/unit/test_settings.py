"""mmpush.settings: host data -> validated Settings; every error names host, key, value and
what is allowed. Also what the settings become in Mattermost's config.json
(mmpush.mattermost.push_values). Pure logic: credential files live in tmp_path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmpush.mattermost import env_name, push_values
from mmpush.settings import (
    Secret,
    Settings,
    SettingsError,
    require_mode,
    settings_from_data,
)
from tests.unit.defaults import DEFAULTS, SHA

HOST = "push1.example.net"
BOTH = ("push_proxies", "mattermost")

AUTH_KEY = b"-----BEGIN PRIVATE KEY-----\nAUTH-KEY-CONTENT\n-----END PRIVATE KEY-----\n"
FCM_JSON = b'{"type": "service_account", "private_key": "FCM-KEY-CONTENT"}\n'


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, Path]:
    """Credential files on the 'control node'."""
    files = {
        "auth_key": (tmp_path / "AuthKey_ABCDE12345.p8", AUTH_KEY),
        "fcm": (tmp_path / "fcm.json", FCM_JSON),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {name: path for name, (path, _) in files.items()}


@pytest.fixture
def eas_data(creds: dict[str, Path]) -> Callable[..., dict[str, Any]]:
    """``eas_data(**overrides)``: valid EAS data for a push proxy + Mattermost host."""

    def make(**overrides: Any) -> dict[str, Any]:
        return {
            **DEFAULTS,
            "push_name": "push.example.com",
            "push_proxy_sha256": SHA,
            "push_proxy_apple": [
                {
                    "type": "apple_rn",
                    "topic": "com.example.mattermost",
                    "auth_key_file": str(creds["auth_key"]),
                    "auth_key_id": "ABCDE12345",
                    "team_id": "TEAM123456",
                }
            ],
            "push_proxy_android": [
                {"type": "android_rn", "service_account_file": str(creds["fcm"])}
            ],
            **overrides,
        }

    return make


def data(**overrides: Any) -> dict[str, Any]:
    return {**DEFAULTS, **overrides}


def assert_names_everything(
    error: SettingsError, key: str, value: object, allowed_fragment: str
) -> None:
    """The message names the host, the key, the bad value and what is allowed."""
    message = str(error)
    assert error.host == HOST and HOST in message
    assert error.key == key and key in message
    assert error.value == value and repr(value) in message
    assert allowed_fragment in error.allowed
    assert error.allowed in message


# --- valid data --------------------------------------------------------------------------------


def test_the_documented_defaults_are_loaded_from_group_data_all() -> None:
    assert DEFAULTS["push_mode"] == "eas"
    assert DEFAULTS["push_contents"] == "generic"
    assert DEFAULTS["push_proxy_sha256"] is None


def test_valid_eas_data_gives_the_expected_settings(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data())

    assert settings.host == HOST
    assert settings.push_mode == "eas"
    assert settings.push_name == "push.example.com"
    assert settings.push_server_url == "https://push.example.com"
    assert settings.in_group("push_proxies") and not settings.in_group("outbound_proxies")
    eas = settings.eas
    assert eas is not None
    assert (eas.push_name, eas.https_port, eas.listen_port) == ("push.example.com", 443, 8066)
    assert eas.artifact.version == "6.5.0"
    assert eas.artifact.sha256 == SHA
    assert eas.artifact.archive is None
    assert eas.artifact.url == (
        "https://github.com/mattermost/mattermost-push-proxy/releases/download/"
        "v6.5.0/mattermost-push-proxy-linux-amd64.tar.gz"
    )
    assert (eas.send_timeout_sec, eas.retry_timeout_sec) == (30, 8)
    assert eas.enable_metrics is False and eas.log_format == "plain"
    (apple,) = eas.apple
    assert (apple.type, apple.topic, apple.development) == (
        "apple_rn",
        "com.example.mattermost",
        False,
    )
    assert (apple.auth_key_id, apple.team_id) == ("ABCDE12345", "TEAM123456")
    assert apple.auth_key is not None and apple.auth_key.content == AUTH_KEY
    assert apple.auth_key.source == str(creds["auth_key"])
    assert apple.certificate is None
    (android,) = eas.android
    assert android.type == "android_rn" and android.service_account.content == FCM_JSON
    assert settings.mattermost.contents == "generic"
    assert settings.mattermost.contents_force is False
    assert settings.mattermost.config_path == "/opt/mattermost/config/config.json"
    assert settings.mattermost.service == "mattermost"
    assert settings.mattermost.log_level is None
    assert settings.acme.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert settings.acme.email is None and settings.acme.renew_days is None
    assert settings.hpns_region == "global"


def test_a_custom_https_port_appears_in_the_push_server_url(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data(push_https_port=8443))
    assert settings.push_server_url == "https://push.example.com:8443"
    assert settings.eas is not None and settings.eas.https_port == 8443


def test_an_apple_certificate_entry_reads_the_certificate_and_its_password(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    pem = tmp_path / "apns.pem"
    pem.write_bytes(b"CERT-AND-KEY")
    password = tmp_path / "apns.password"
    password.write_bytes(b"hunter2\n")
    entry = {
        "type": "apple",
        "topic": "com.example.mattermost",
        "certificate_file": str(pem),
        "certificate_password_file": str(password),
        "development": True,
    }
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert settings.eas is not None
    (apple,) = settings.eas.apple
    assert apple.development is True
    assert apple.auth_key is None
    assert apple.certificate is not None and apple.certificate.content == b"CERT-AND-KEY"
    assert apple.certificate_password is not None
    assert apple.certificate_password.content == b"hunter2\n"


def test_a_local_archive_with_the_pinned_sha256_is_uploaded_instead_of_downloaded(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    archive = tmp_path / "push-proxy.tar.gz"
    archive.write_bytes(b"release archive bytes")
    digest = hashlib.sha256(b"release archive bytes").hexdigest()
    settings = settings_from_data(
        HOST, BOTH, eas_data(push_proxy_archive=str(archive), push_proxy_sha256=digest)
    )
    assert settings.eas is not None
    assert settings.eas.artifact.archive == archive
    assert settings.eas.artifact.url is None


def test_an_env_credential_reads_the_variable_content(
    eas_data: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMPUSH_TEST_FCM", '{"from": "environment"}')
    entry = {"type": "android", "service_account_file": "env:MMPUSH_TEST_FCM"}
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_android=[entry]))
    assert settings.eas is not None
    (android,) = settings.eas.android
    assert android.service_account.content == b'{"from": "environment"}'
    assert android.service_account.source == "env:MMPUSH_TEST_FCM"


def test_hosts_not_in_push_proxies_need_no_push_proxy_data() -> None:
    # No sha256, no credentials: a Mattermost server only needs the push name.
    settings = settings_from_data(HOST, ("mattermost",), data(push_name="push.example.com"))
    assert settings.eas is None
    assert settings.push_server_url == "https://push.example.com"


def test_a_host_in_neither_eas_group_needs_no_push_name() -> None:
    settings = settings_from_data(HOST, ("outbound_proxies",), data(push_mode="eas"))
    assert settings.eas is None and settings.push_name is None


def test_a_mattermost_only_host_in_eas_mode_still_needs_push_name() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data())
    assert_names_everything(caught.value, "push_name", None, "fully qualified DNS name")


@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        ({"push_mode": "hpns"}, "https://global.push.mattermost.com"),
        ({"push_mode": "hpns", "hpns_region": "global"}, "https://global.push.mattermost.com"),
        ({"push_mode": "hpns", "hpns_region": "us"}, "https://us.push.mattermost.com"),
        ({"push_mode": "hpns", "hpns_region": "eu"}, "https://eu.push.mattermost.com"),
        ({"push_mode": "hpns", "hpns_region": "ap"}, "https://ap.push.mattermost.com"),
        ({"push_mode": "hpns", "hpns_region": "legacy"}, "https://push.mattermost.com"),
        ({"push_mode": "tpns"}, "https://push-test.mattermost.com"),
        ({"push_mode": "off"}, None),
    ],
)
def test_push_server_url_of_each_non_eas_mode(overrides: dict[str, Any], url: str | None) -> None:
    settings = settings_from_data(HOST, ("mattermost",), data(**overrides))
    assert settings.push_server_url == url
    assert settings.eas is None and settings.push_name is None


def test_tpns_with_message_text_is_accepted_only_when_forced() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="tpns", push_contents="full"))
    assert_names_everything(caught.value, "push_contents", "full", "does not encrypt")
    forced = settings_from_data(
        HOST,
        ("mattermost",),
        data(push_mode="tpns", push_contents="full", push_contents_force=True),
    )
    assert forced.mattermost.contents == "full"


# --- invalid values ----------------------------------------------------------------------------

INVALID = [
    ("push_mode", "EAS", "one of eas, hpns, tpns, off"),
    ("push_mode", "self-hosted", "one of eas, hpns, tpns, off"),
    ("push_contents", "everything", "one of generic_no_channel, generic, full, id_loaded"),
    ("push_name", "https://push.example.com", "fully qualified DNS name"),
    ("push_name", "push_proxy.example.com", "fully qualified DNS name"),
    ("push_name", "192.0.2.10", "fully qualified DNS name"),
    ("push_name", "push.example.com.", "fully qualified DNS name"),
    ("push_name", "a" * 64 + ".example.com", "fully qualified DNS name"),
    ("push_name", "localhost", "fully qualified DNS name"),
    ("push_name", "push.example.com:443", "fully qualified DNS name"),
    ("push_https_port", 0, "a whole number from 1 to 65535"),
    ("push_https_port", 70000, "a whole number from 1 to 65535"),
    ("push_https_port", "443", "a whole number from 1 to 65535"),
    ("push_https_port", True, "a whole number from 1 to 65535"),
    ("push_proxy_listen_port", 0, "a whole number from 1 to 65535"),
    ("push_proxy_listen_port", 70000, "a whole number from 1 to 65535"),
    ("push_proxy_listen_port", "8066", "a whole number from 1 to 65535"),
    ("push_proxy_listen_port", True, "a whole number from 1 to 65535"),
    # sha256sum prints lowercase; the regex (and the message) ask for exactly that.
    ("push_proxy_sha256", "0123456789abcdef", "64 lowercase hex characters"),
    ("push_proxy_sha256", SHA.upper(), "64 lowercase hex characters"),
    ("push_proxy_sha256", "g" * 64, "64 lowercase hex characters"),
    ("push_proxy_sha256", SHA + "00", "64 lowercase hex characters"),
    ("push_proxy_version", "latest", "a release version"),
    ("push_proxy_log_format", "xml", "one of plain, json"),
    ("push_proxy_metrics", "yes", "true or false"),
    ("acme_email", "not-an-email", "an email address"),
    ("acme_email", "admin@localhost", "an email address"),
    ("acme_directory_url", "http://acme.example.net/directory", "an https:// URL"),
    ("acme_renew_days", 0, "a whole number from 1 to 365"),
    ("acme_renew_days", 400, "a whole number from 1 to 365"),
    ("mattermost_log_level", "TRACE", "one of DEBUG, INFO, ERROR"),
    ("mattermost_config_path", "config.json", "an absolute path to config.json"),
    ("hpns_region", "mars", "one of global, us, eu, ap, legacy"),
]


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    INVALID,
    ids=[f"{key}={value!r}"[:60] for key, value, _ in INVALID],
)
def test_an_invalid_value_raises_settings_error_naming_host_key_value_and_allowed(
    eas_data: Callable[..., dict[str, Any]], key: str, value: object, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(**{key: value}))
    assert_names_everything(caught.value, key, value, allowed)


def test_push_proxy_sha256_is_required_on_push_proxies() -> None:
    # group_data/all.py leaves it None: the host must pin the release.
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, data(push_name="push.example.com"))
    assert_names_everything(caught.value, "push_proxy_sha256", "", "64 lowercase hex")


def test_a_local_archive_whose_sha256_differs_is_refused(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    archive = tmp_path / "push-proxy.tar.gz"
    archive.write_bytes(b"not the pinned release")
    actual = hashlib.sha256(b"not the pinned release").hexdigest()
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_archive=str(archive)))
    assert_names_everything(caught.value, "push_proxy_sha256", SHA, str(archive))
    assert actual in str(caught.value)


def test_a_missing_local_archive_is_refused(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope.tar.gz")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_archive=missing))
    assert_names_everything(caught.value, "push_proxy_archive", missing, "(not found)")


def apple_entry(creds: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    return {
        "type": "apple",
        "topic": "com.example.mattermost",
        "auth_key_file": str(creds["auth_key"]),
        "auth_key_id": "ABCDE12345",
        "team_id": "TEAM123456",
        **overrides,
    }


def test_a_missing_credential_file_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path], tmp_path: Path
) -> None:
    missing = str(tmp_path / "AuthKey_MISSING.p8")
    entry = apple_entry(creds, auth_key_file=missing)
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(
        caught.value, "push_proxy_apple[0].auth_key_file", missing, "(not found)"
    )


def test_an_env_credential_whose_variable_is_unset_is_refused(
    eas_data: Callable[..., dict[str, Any]],
    creds: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MMPUSH_TEST_UNSET", raising=False)
    entry = apple_entry(creds, auth_key_file="env:MMPUSH_TEST_UNSET")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(
        caught.value,
        "push_proxy_apple[0].auth_key_file",
        "env:MMPUSH_TEST_UNSET",
        "the environment variable MMPUSH_TEST_UNSET to be set",
    )


def test_an_env_credential_set_in_the_environment_is_read(
    eas_data: Callable[..., dict[str, Any]],
    creds: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MMPUSH_TEST_P8", "P8-FROM-ENV")
    entry = apple_entry(creds, auth_key_file="env:MMPUSH_TEST_P8")
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert settings.eas is not None
    auth_key = settings.eas.apple[0].auth_key
    assert auth_key is not None
    assert auth_key.content == b"P8-FROM-ENV" and auth_key.source == "env:MMPUSH_TEST_P8"


def test_an_apple_entry_with_neither_auth_key_nor_certificate_is_refused(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    entry = {"type": "apple", "topic": "com.example.mattermost"}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    # the entry's values are masked in the message (they could be credentials)
    assert_names_everything(
        caught.value,
        "push_proxy_apple[0]",
        {"type": "...", "topic": "..."},
        "auth_key_file (+ auth_key_id, team_id) or certificate_file",
    )


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("type", "ios", "one of apple, apple_rn, apple_rnbeta"),
        ("type", "android", "one of apple, apple_rn, apple_rnbeta"),
        ("auth_key_id", "ABC", "Apple's 10-character key id"),
        ("auth_key_id", "abcde12345", "Apple's 10-character key id"),
        ("auth_key_id", "", "Apple's 10-character key id"),
        ("team_id", "TEAM-12345", "Apple's 10-character team id"),
        ("topic", "com.example/mattermost", "bundle id"),
        ("development", "no", "true or false"),
    ],
)
def test_a_bad_apple_entry_field_is_refused(
    eas_data: Callable[..., dict[str, Any]],
    creds: dict[str, Path],
    field: str,
    value: object,
    allowed: str,
) -> None:
    entry = apple_entry(creds, **{field: value})
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(caught.value, f"push_proxy_apple[0].{field}", value, allowed)


def test_the_index_of_the_bad_apple_entry_is_named(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entries = [apple_entry(creds), apple_entry(creds, type="apple_rn", team_id="short")]
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=entries))
    assert caught.value.key == "push_proxy_apple[1].team_id"


def test_an_android_entry_without_its_file_is_refused(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_android=[{"type": "android"}]))
    assert_names_everything(
        caught.value, "push_proxy_android[0].service_account_file", None, "a path to a file"
    )


def test_an_android_entry_whose_file_does_not_exist_is_refused(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing-fcm.json")
    entry = {"type": "android", "service_account_file": missing}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_android=[entry]))
    assert_names_everything(
        caught.value, "push_proxy_android[0].service_account_file", missing, "(not found)"
    )


def test_an_android_entry_with_a_bad_type_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entry = {"type": "fcm", "service_account_file": str(creds["fcm"])}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_android=[entry]))
    assert_names_everything(
        caught.value, "push_proxy_android[0].type", "fcm", "one of android, android_rn"
    )


@pytest.mark.parametrize("key", ["push_proxy_apple", "push_proxy_android"])
def test_credential_lists_must_be_lists(eas_data: Callable[..., dict[str, Any]], key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(**{key: "not a list"}))
    assert_names_everything(caught.value, key, "not a list", "a list of dicts")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("push_name", "push.example.com\n"),
        ("push_proxy_sha256", SHA + "\n"),
        ("push_proxy_version", "6.5.0\n"),
        ("mattermost_service", "mattermost\n"),
    ],
)
def test_a_trailing_newline_is_not_accepted(
    eas_data: Callable[..., dict[str, Any]], key: str, value: str
) -> None:
    with pytest.raises(SettingsError):
        settings_from_data(HOST, BOTH, eas_data(**{key: value}))


# --- require_mode, Secret -------------------------------------------------------------------


def test_require_mode_accepts_the_matching_mode(eas_data: Callable[..., dict[str, Any]]) -> None:
    require_mode(settings_from_data(HOST, BOTH, eas_data()), "eas")


def test_require_mode_error_names_both_modes(eas_data: Callable[..., dict[str, Any]]) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data())
    with pytest.raises(SettingsError) as caught:
        require_mode(settings, "hpns")
    message = str(caught.value)
    assert HOST in message and "push_mode" in message
    assert "deploys/hpns.py" in message and "push_mode = 'hpns'" in message
    assert "deploys/eas.py" in message and "'eas'" in message


def test_secret_repr_and_str_never_contain_the_content() -> None:
    secret = Secret("/home/me/secrets/AuthKey.p8", b"TOP-SECRET-CONTENT")
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}"):
        assert "TOP-SECRET-CONTENT" not in shown
    assert "/home/me/secrets/AuthKey.p8" in str(secret)
    assert secret.sha256 == hashlib.sha256(b"TOP-SECRET-CONTENT").hexdigest()


def test_settings_repr_never_contains_credential_content(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    shown = repr(settings_from_data(HOST, BOTH, eas_data()))
    assert "AUTH-KEY-CONTENT" not in shown and "FCM-KEY-CONTENT" not in shown


# --- what Mattermost's config.json gets (mmpush.mattermost) -------------------------------------

SEND = ("EmailSettings", "SendPushNotifications")
SERVER = ("EmailSettings", "PushNotificationServer")
CONTENTS = ("EmailSettings", "PushNotificationContents")
FILE_LEVEL = ("LogSettings", "FileLevel")


def mattermost_settings(**overrides: Any) -> Settings:
    return settings_from_data(HOST, ("mattermost",), data(**overrides))


def test_push_values_in_eas_mode_point_at_the_push_name() -> None:
    settings = mattermost_settings(push_name="push.example.com", push_contents="full")
    assert push_values(settings) == {
        SEND: True,
        SERVER: "https://push.example.com",
        CONTENTS: "full",
    }


def test_push_values_in_eas_mode_with_a_custom_port() -> None:
    settings = mattermost_settings(push_name="push.example.com", push_https_port=8443)
    assert push_values(settings)[SERVER] == "https://push.example.com:8443"


@pytest.mark.parametrize(
    ("region", "url"),
    [("global", "https://global.push.mattermost.com"), ("eu", "https://eu.push.mattermost.com")],
)
def test_push_values_in_hpns_mode(region: str, url: str) -> None:
    settings = mattermost_settings(push_mode="hpns", hpns_region=region)
    assert push_values(settings) == {SEND: True, SERVER: url, CONTENTS: "generic"}


def test_push_values_in_tpns_mode() -> None:
    settings = mattermost_settings(push_mode="tpns", push_contents="generic_no_channel")
    assert push_values(settings) == {
        SEND: True,
        SERVER: "https://push-test.mattermost.com",
        CONTENTS: "generic_no_channel",
    }


def test_push_values_in_off_mode_disable_push_and_clear_the_server() -> None:
    assert push_values(mattermost_settings(push_mode="off")) == {SEND: False, SERVER: ""}


def test_the_log_level_key_is_set_only_when_configured() -> None:
    assert FILE_LEVEL not in push_values(mattermost_settings(push_mode="off"))
    settings = mattermost_settings(push_mode="off", mattermost_log_level="DEBUG")
    assert push_values(settings)[FILE_LEVEL] == "DEBUG"


def test_env_name_is_mattermosts_override_variable() -> None:
    assert env_name(SERVER) == "MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER"
    assert env_name(FILE_LEVEL) == "MM_LOGSETTINGS_FILELEVEL"
