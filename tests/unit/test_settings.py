"""mmpush.settings: host data -> validated Settings; every error names host, key, value and
what is allowed. Also what the settings become in Mattermost's config.json
(mmpush.mattermost.push_values). Pure logic: credential files live in tmp_path."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pyinfra.api import Inventory

from mmpush.mattermost import env_name, push_values
from mmpush.settings import (
    KNOWN_KEYS,
    CertificateSettings,
    PushProxyArtifact,
    Secret,
    Settings,
    SettingsError,
    _nginx_statements,
    certificate_settings_from_data,
    load_certificate_settings,
    load_settings,
    log_warnings,
    nginx_snippet_problem,
    placeholders,
    release_arch,
    require_mode,
    settings_from_data,
)
from tests.unit.defaults import (
    APNS_PASSWORD,
    DEFAULTS,
    SHA,
    apns_pem,
    certificate,
    ec_key,
    fcm_json,
    p8_key,
    private_pem,
    rsa_key,
    write_credentials,
)

HOST = "push1.example.net"
BOTH = ("push_proxies", "mattermost")


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, Path]:
    """Valid credential files on the 'control node' (tests.unit.defaults.write_credentials)."""
    return write_credentials(tmp_path)


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


def key_lines(content: bytes) -> list[str]:
    """The base64 lines of the PEM bodies in ``content`` (also inside JSON strings)."""
    text = content.decode().replace("\\n", "\n")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if re.fullmatch(r"[A-Za-z0-9+/=]{40,}", line)]


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
    assert eas.artifact.url_template == (
        "https://github.com/mattermost/mattermost-push-proxy/releases/download/"
        "v{version}/mattermost-push-proxy-linux-{arch}.tar.gz"
    )
    assert (eas.send_timeout_sec, eas.retry_timeout_sec) == (25, 8)
    assert eas.enable_metrics is False and eas.log_format == "plain"
    assert eas.https_proxy is None and eas.no_proxy == ()
    assert eas.metrics_allowed_networks == () and eas.front_allowed_networks == ()
    assert settings.warnings == ()
    (apple,) = eas.apple
    assert (apple.type, apple.topic, apple.development) == (
        "apple_rn",
        "com.example.mattermost",
        False,
    )
    assert (apple.auth_key_id, apple.team_id) == ("ABCDE12345", "TEAM123456")
    assert apple.auth_key is not None
    assert apple.auth_key.content == creds["auth_key"].read_bytes()
    assert apple.auth_key.source == str(creds["auth_key"])
    assert apple.certificate is None
    (android,) = eas.android
    assert android.type == "android_rn"
    assert android.service_account.content == creds["fcm"].read_bytes()
    assert settings.mattermost.contents == "generic"
    assert settings.mattermost.contents_force is False
    assert settings.mattermost.config_path == "/opt/mattermost/config/config.json"
    assert settings.mattermost.service == "mattermost"
    assert settings.mattermost.log_level is None
    assert settings.acme.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert settings.acme.email is None and settings.acme.renew_days is None
    assert settings.hpns_region == "global"


def test_the_code_defaults_are_the_documented_defaults(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    # every optional setting left out of the data gives what group_data/all.py documents
    documented = eas_data()
    required = {
        "push_mode",
        "push_proxy_version",
        "push_name",
        "push_proxy_sha256",
        "push_proxy_apple",
        "push_proxy_android",
    }
    minimal = {key: documented[key] for key in required}
    assert settings_from_data(HOST, BOTH, minimal) == settings_from_data(HOST, BOTH, documented)
    for mode in ("hpns", "tpns", "off"):
        groups = ("mattermost", "outbound_proxies")
        site = {"push_mode": mode, "outbound_proxy_name": "push.internal.example"}
        assert settings_from_data(HOST, groups, site) == settings_from_data(
            HOST, groups, data(**site)
        )


def test_a_custom_https_port_appears_in_the_push_server_url(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data(push_https_port=8443))
    assert settings.push_server_url == "https://push.example.com:8443"
    assert settings.eas is not None and settings.eas.https_port == 8443


def test_an_apple_certificate_entry_reads_the_certificate_and_its_password(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entry = {
        "type": "apple",
        "topic": "com.example.mattermost",
        "certificate_file": str(creds["apns_pem"]),
        "certificate_password_file": str(creds["apns_password"]),
        "development": True,
    }
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert settings.eas is not None
    (apple,) = settings.eas.apple
    assert apple.development is True
    assert apple.auth_key is None
    assert apple.certificate is not None
    assert apple.certificate.content == creds["apns_pem"].read_bytes()
    assert apple.certificate_password is not None
    assert apple.certificate_password.content == APNS_PASSWORD.encode() + b"\n"
    assert settings.warnings == ()


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
    content = fcm_json(project_id="from-environment")
    monkeypatch.setenv("MMPUSH_TEST_FCM", content.decode())
    entry = {"type": "android", "service_account_file": "env:MMPUSH_TEST_FCM"}
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_android=[entry]))
    assert settings.eas is not None
    (android,) = settings.eas.android
    assert android.service_account.content == content
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
    ("push_proxy_listen_port", 0, "a whole number from 1024 to 65535"),
    ("push_proxy_listen_port", 70000, "a whole number from 1024 to 65535"),
    ("push_proxy_listen_port", "8066", "a whole number from 1024 to 65535"),
    ("push_proxy_listen_port", True, "a whole number from 1024 to 65535"),
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
    monkeypatch.setenv("MMPUSH_TEST_P8", p8_key().decode())
    entry = apple_entry(creds, auth_key_file="env:MMPUSH_TEST_P8")
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert settings.eas is not None
    auth_key = settings.eas.apple[0].auth_key
    assert auth_key is not None
    assert auth_key.content == p8_key() and auth_key.source == "env:MMPUSH_TEST_P8"


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
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    shown = repr(settings_from_data(HOST, BOTH, eas_data()))
    for name in ("auth_key", "fcm"):
        lines = key_lines(creds[name].read_bytes())
        assert len(lines) >= 3 and not any(line in shown for line in lines)


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


# --- unknown keys -------------------------------------------------------------------------------


def test_known_keys_are_exactly_the_settings_documented_in_group_data_all() -> None:
    assert set(DEFAULTS) == KNOWN_KEYS


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("push_contnets", "push_contents"),
        ("push_proxy_sha", "push_proxy_sha256"),
        ("outbound_proxy_resolver", "outbound_proxy_resolvers"),
        ("acme_emial", "acme_email"),
    ],
)
def test_a_misspelt_key_is_refused_with_the_closest_setting(
    eas_data: Callable[..., dict[str, Any]], key: str, suggestion: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(**{key: "full"}))
    assert_names_everything(caught.value, key, "full", f"did you mean {suggestion}?")
    assert str(caught.value) == (
        f"host {HOST}: {key} = 'full' is invalid: unknown setting; did you mean {suggestion}?"
    )


def test_an_unknown_key_far_from_any_setting_points_at_the_documentation() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", zzz=1))
    assert_names_everything(caught.value, "zzz", 1, "group_data/all.py")
    assert "extra_data_keys" in caught.value.allowed


def test_the_value_of_an_unknown_key_named_like_a_secret_is_not_shown() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", apns_password="hunter2"))
    assert "hunter2" not in str(caught.value)
    assert caught.value.key == "apns_password"


@pytest.mark.parametrize(
    ("list_key", "entry_key", "suggestion"),
    [
        ("push_proxy_apple", "developement", "development"),
        ("push_proxy_apple", "auth_key_fil", "auth_key_file"),
        ("push_proxy_android", "service_acount_file", "service_account_file"),
    ],
)
def test_a_misspelt_key_inside_an_app_entry_is_refused(
    eas_data: Callable[..., dict[str, Any]],
    creds: dict[str, Path],
    list_key: str,
    entry_key: str,
    suggestion: str,
) -> None:
    base = eas_data()
    entry = {**base[list_key][0], entry_key: True}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, {**base, list_key: [entry]})
    assert_names_everything(
        caught.value, f"{list_key}[0].{entry_key}", True, f"did you mean {suggestion}?"
    )


def test_entry_keys_are_checked_even_on_hosts_that_do_not_read_the_entries() -> None:
    entry = {"type": "apple", "developement": True}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", push_proxy_apple=[entry]))
    assert caught.value.key == "push_proxy_apple[0].developement"


def test_pyinfra_connector_lab_and_declared_keys_are_accepted() -> None:
    accepted = {
        "_sudo": True,
        "_su_user": "root",
        "ssh_user": "deploy",
        "ssh_key": "~/.ssh/id",
        "winrm_port": 5986,
        "docker_image": "debian",
        "local_anything": 1,
        "chroot_directory": "/x",
        "vagrant_x": 1,
        "terraform_x": 1,
        "dockerssh_x": 1,
        "lab_fqdns": ["mm.lab.test"],
        "site_owner": "ops",
        "extra_data_keys": ["site_owner"],
    }
    settings = settings_from_data(HOST, ("mattermost",), data(push_mode="off", **accepted))
    assert settings.push_mode == "off"


def test_a_site_key_is_refused_until_declared_in_extra_data_keys() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", site_owner="ops"))
    assert caught.value.key == "site_owner"


@pytest.mark.parametrize("value", ["site_owner", ["site owner"], [1], {"a": 1}])
def test_extra_data_keys_must_be_a_list_of_names(value: object) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", extra_data_keys=value))
    assert caught.value.key == "extra_data_keys"


# --- placeholders -------------------------------------------------------------------------------

PLACEHOLDER_NAME = "CHANGE-ME: the push proxy's public DNS name, e.g. push.example.com"


def test_a_placeholder_is_refused_saying_what_to_put_there() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_name=PLACEHOLDER_NAME))
    assert str(caught.value) == (
        f"host {HOST}: push_name = {PLACEHOLDER_NAME!r} is a placeholder: "
        "the push proxy's public DNS name, e.g. push.example.com"
    )
    assert caught.value.key == "push_name"


def test_a_placeholder_inside_an_app_entry_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entry = apple_entry(creds, auth_key_file="CHANGE-ME: the .p8 key from Apple")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert caught.value.key == "push_proxy_apple[0].auth_key_file"
    assert "is a placeholder: the .p8 key from Apple" in str(caught.value)


def test_a_placeholder_inside_a_list_is_refused() -> None:
    networks = ["10.0.0.0/8", "CHANGE-ME your Mattermost servers' network"]
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST,
            ("mattermost",),
            data(push_mode="off", outbound_proxy_allowed_networks=networks),
        )
    assert caught.value.key == "outbound_proxy_allowed_networks[1]"
    assert str(caught.value).endswith("is a placeholder: your Mattermost servers' network")


def test_a_placeholder_is_refused_even_in_a_setting_this_host_does_not_use() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, ("mattermost",), data(push_mode="off", outbound_proxy_name="CHANGE-ME")
        )
    assert caught.value.key == "outbound_proxy_name"
    assert "is a placeholder: replace it" in str(caught.value)


def test_text_with_change_me_elsewhere_than_at_its_start_is_not_a_placeholder(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    extra = "# see CHANGE-ME.md\naccess_log off;"
    settings = settings_from_data(HOST, BOTH, eas_data(push_front_extra_config=extra))
    assert settings.eas is not None and settings.eas.front_extra_config == extra


def test_the_sites_own_keys_are_not_settings_and_not_checked_for_placeholders() -> None:
    values = data(push_mode="off", extra_data_keys=["note"], note="CHANGE-ME some day")
    assert settings_from_data(HOST, ("mattermost",), values).push_mode == "off"


# --- push_front_extra_config ----------------------------------------------------------------------

GOOD_SNIPPETS = [
    "access_log /var/log/nginx/push.log;\nallow 10.0.0.0/8;\ndeny all;",
    "location = /metrics {\n\tallow 127.0.0.1;\n\tdeny all;\n}",
    "location /x { location /x/y { return 204; } }",
    'add_header X-Note "a } brace; in quotes" always;',
    "add_header X-Note 'single { quoted' always;",
    "# a comment with } and {\naccess_log off;",
    "set $a ${request_id}x;",
    "if ($request_method = POST) { return 405; }",
    'add_header X-Escaped "a \\" quote }" always;',
    "",
]


@pytest.mark.parametrize("snippet", GOOD_SNIPPETS)
def test_a_balanced_snippet_for_the_server_block_is_accepted(
    eas_data: Callable[..., dict[str, Any]], snippet: str
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data(push_front_extra_config=snippet))
    assert settings.eas is not None and settings.eas.front_extra_config == snippet


BAD_SNIPPETS = [
    ("}\nserver { listen 8080; location / { return 200; } ", "would close the server block"),
    ("access_log off; }", "would close the server block"),
    ("location /x { return 200;", "'location' block is never closed"),
    ("location /x { location /y { return 200; }", "never closed"),
    ("server { listen 81; }", "a 'server' block"),
    ("http { }", "a 'http' block"),
    ("events { }", "a 'events' block"),
    ("stream { }", "a 'stream' block"),
    ("location /x { server { } }", "a 'server' block"),
    ("upstream u { server 127.0.0.1:1; }", "a 'upstream' block"),
    ("access_log off", "not terminated by ';'"),
    ("return 200 'unterminated;", "quote is never closed"),
    ('add_header X "a"b;', "right after a quoted string"),
    ("access_log off }", "needs a ';'"),
    ("{ return 200; }", "no directive before it"),
    ("return 200 x}; }", "would close the server block"),
    ("return 200 \\", "ends with a backslash"),
    ("access_log", "not terminated by ';'"),
    ('return 200 "x"', "not terminated by ';'"),
]


@pytest.mark.parametrize(("snippet", "problem"), BAD_SNIPPETS)
def test_a_snippet_that_escapes_or_breaks_the_server_block_is_refused(
    eas_data: Callable[..., dict[str, Any]], snippet: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_front_extra_config=snippet))
    assert_names_everything(caught.value, "push_front_extra_config", snippet, problem)
    assert "\n" not in str(caught.value)  # one line, the value shown as its repr


def test_the_snippet_error_names_the_line() -> None:
    assert nginx_snippet_problem("access_log off;\n\n}") == (
        "line 3: '}' would close the server block (braces must balance)"
    )


# --- ports --------------------------------------------------------------------------------------


def test_port_65535_is_accepted_everywhere(eas_data: Callable[..., dict[str, Any]]) -> None:
    settings = settings_from_data(
        HOST, BOTH, eas_data(push_https_port=65535, push_proxy_listen_port=65534)
    )
    assert settings.eas is not None
    assert (settings.eas.https_port, settings.push_https_port) == (65535, 65535)
    assert settings.push_server_url == "https://push.example.com:65535"
    listen = settings_from_data(HOST, BOTH, eas_data(push_proxy_listen_port=65535))
    assert listen.eas is not None and listen.eas.listen_port == 65535
    outbound = settings_from_data(
        HOST,
        ("outbound_proxies",),
        data(
            push_mode="hpns", outbound_proxy_name="push.internal.example", outbound_proxy_port=65535
        ),
    )
    assert outbound.outbound is not None and outbound.outbound.port == 65535


@pytest.mark.parametrize(
    ("overrides", "key", "value", "allowed"),
    [
        ({"push_proxy_listen_port": 443}, "push_proxy_listen_port", 443, "from 1024 to 65535"),
        ({"push_proxy_listen_port": 1023}, "push_proxy_listen_port", 1023, "from 1024"),
        ({"push_proxy_listen_port": 80}, "push_proxy_listen_port", 80, "from 1024"),
        (
            {"push_https_port": 8443, "push_proxy_listen_port": 8443},
            "push_proxy_listen_port",
            8443,
            "other than push_https_port (8443)",
        ),
        ({"push_https_port": 80}, "push_https_port", 80, "other than 80"),
    ],
)
def test_privileged_or_conflicting_push_proxy_ports_are_refused(
    eas_data: Callable[..., dict[str, Any]],
    overrides: dict[str, Any],
    key: str,
    value: int,
    allowed: str,
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(**overrides))
    assert_names_everything(caught.value, key, value, allowed)


def test_push_https_port_80_is_refused_on_mattermost_hosts_too() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, ("mattermost",), data(push_name="push.example.com", push_https_port=80)
        )
    assert_names_everything(caught.value, "push_https_port", 80, "other than 80")


@pytest.mark.parametrize("port", [80, 0, 65536])
def test_a_bad_outbound_proxy_port_is_refused(port: int) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST,
            ("outbound_proxies",),
            data(
                push_mode="hpns",
                outbound_proxy_name="push.internal.example",
                outbound_proxy_port=port,
            ),
        )
    assert caught.value.key == "outbound_proxy_port" and caught.value.value == port


# --- mattermost_service ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "service", ["mattermost", "mattermost.service", "mattermost@blue", "mm-2:x_y.z", "a" * 256]
)
def test_a_systemd_service_name_is_accepted(service: str) -> None:
    settings = settings_from_data(
        HOST, ("mattermost",), data(push_mode="off", mattermost_service=service)
    )
    assert settings.mattermost.service == service


@pytest.mark.parametrize(
    "service",
    [
        "--help",
        "-mattermost",
        "mattermost.socket",
        "mattermost.timer",
        "matter most",
        "mattermost;reboot",
        "mattermost@",
        "mattermost@.service",
        ".service",
        "",
        "a" * 257,
        "mattermost/../x",
        42,
    ],
)
def test_anything_but_a_systemd_service_name_is_refused(service: object) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", mattermost_service=service))
    assert_names_everything(caught.value, "mattermost_service", service, "systemd service name")


# --- push_proxy_url, release architecture ---------------------------------------------------------


def test_the_release_url_is_filled_per_architecture(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_version="6.4.1"))
    assert settings.eas is not None
    artifact = settings.eas.artifact
    base = "https://github.com/mattermost/mattermost-push-proxy/releases/download/v6.4.1/"
    assert artifact.url_for("amd64") == base + "mattermost-push-proxy-linux-amd64.tar.gz"
    assert artifact.url_for("arm64") == base + "mattermost-push-proxy-linux-arm64.tar.gz"
    assert artifact.url == artifact.url_for("amd64")
    with pytest.raises(ValueError, match="amd64 or arm64"):
        artifact.url_for("riscv64")


def test_a_release_url_without_arch_is_the_same_for_every_architecture(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    url = "https://mirror.example.com/push-proxy-{version}.tar.gz"
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_url=url))
    assert settings.eas is not None
    artifact = settings.eas.artifact
    assert artifact.url_for("arm64") == "https://mirror.example.com/push-proxy-6.5.0.tar.gz"
    assert artifact.url_for("amd64") == artifact.url_for("arm64")


def test_a_local_archive_has_no_url(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"x")
    settings = settings_from_data(
        HOST,
        BOTH,
        eas_data(
            push_proxy_archive=str(archive), push_proxy_sha256=hashlib.sha256(b"x").hexdigest()
        ),
    )
    assert settings.eas is not None
    assert settings.eas.artifact.url is None
    with pytest.raises(ValueError, match="local archive"):
        settings.eas.artifact.url_for("amd64")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://example.com/{foo}.tar.gz", "unknown placeholder {foo}"),
        ("https://example.com/{version!r}.tar.gz", "unknown placeholder {version!r}"),
        ("https://example.com/{arch:>9}.tar.gz", "unknown placeholder {arch:>9}"),
        ("https://example.com/{0}.tar.gz", "unknown placeholder {0}"),
        ("https://example.com/{version.tar.gz", "unbalanced braces"),
        ("https://example.com/version}.tar.gz", "unbalanced braces"),
        ("https://example.com/v {version}.tar.gz", "no whitespace"),
        ("http://example.com/{version}.tar.gz", "an https:// URL"),
    ],
)
def test_a_bad_release_url_is_refused(
    eas_data: Callable[..., dict[str, Any]], url: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_url=url))
    assert_names_everything(caught.value, "push_proxy_url", url, allowed)


@pytest.mark.parametrize(
    ("machine", "arch"), [("x86_64", "amd64"), ("aarch64", "arm64"), ("arm64", "arm64")]
)
def test_release_arch_maps_uname_to_the_release_name(machine: str, arch: str) -> None:
    assert release_arch(machine) == arch
    assert release_arch(machine + "\n") == arch  # as `uname -m` prints it


@pytest.mark.parametrize("machine", ["i686", "armv7l", "riscv64", "ppc64le", "s390x", "", "AMD64"])
def test_release_arch_refuses_other_architectures_clearly(machine: str) -> None:
    with pytest.raises(ValueError) as caught:
        release_arch(machine)
    assert repr(machine) in str(caught.value)
    assert "x86_64" in str(caught.value) and "aarch64" in str(caught.value)


# --- timeouts ------------------------------------------------------------------------------------


def test_send_timeout_stays_below_mattermosts_30_seconds(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_send_timeout_sec=29))
    assert settings.eas is not None and settings.eas.send_timeout_sec == 29
    for value in (30, 0, 600):
        with pytest.raises(SettingsError) as caught:
            settings_from_data(HOST, BOTH, eas_data(push_proxy_send_timeout_sec=value))
        assert_names_everything(caught.value, "push_proxy_send_timeout_sec", value, "from 1 to 29")
        assert "stops waiting after 30 s" in caught.value.allowed


def test_retry_timeout_may_not_exceed_the_send_timeout(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    same = settings_from_data(
        HOST, BOTH, eas_data(push_proxy_send_timeout_sec=10, push_proxy_retry_timeout_sec=10)
    )
    assert same.eas is not None and same.eas.retry_timeout_sec == 10
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, BOTH, eas_data(push_proxy_send_timeout_sec=10, push_proxy_retry_timeout_sec=11)
        )
    assert_names_everything(
        caught.value, "push_proxy_retry_timeout_sec", 11, "push_proxy_send_timeout_sec (10)"
    )


def test_the_default_retry_timeout_is_refused_with_a_shorter_send_timeout(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_send_timeout_sec=5))
    assert caught.value.key == "push_proxy_retry_timeout_sec" and caught.value.value == 8


# --- egress proxy, allow-lists --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://proxy.example.net:3128", "http://proxy.example.net:3128"),
        ("https://proxy.example.net", "https://proxy.example.net"),
        ("http://proxy:3128/", "http://proxy:3128"),
        ("http://Proxy.Corp.example:8080", "http://Proxy.Corp.example:8080"),
        ("http://192.0.2.1:3128", "http://192.0.2.1:3128"),
        ("http://[2001:db8::1]:3128", "http://[2001:db8::1]:3128"),
        ("http://proxy.example.net:65535", "http://proxy.example.net:65535"),
        (None, None),
    ],
)
def test_an_egress_proxy_url_is_accepted(
    eas_data: Callable[..., dict[str, Any]], value: str | None, expected: str | None
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_https_proxy=value))
    assert settings.eas is not None and settings.eas.https_proxy == expected


@pytest.mark.parametrize(
    "value",
    [
        "proxy.example.net:3128",
        "socks5://proxy.example.net:1080",
        "http://proxy.example.net:3128/path",
        "http://user:secret@proxy.example.net:3128",
        "http://proxy.example.net:99999",
        "http://proxy.example.net:",
        "http://proxy.example.net:0",
        "http://proxy .example.net",
        "http://proxy.example.net:3128\n",
        "http://2001:db8::1:3128",
        "http://-proxy.example.net",
        "http://",
        42,
    ],
)
def test_a_bad_egress_proxy_url_is_refused(
    eas_data: Callable[..., dict[str, Any]], value: object
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_https_proxy=value))
    assert_names_everything(caught.value, "push_proxy_https_proxy", value, "http://host[:port]")


def test_no_proxy_accepts_names_domains_ips_and_cidrs(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    entries = [
        "localhost",
        "internal.example",
        ".internal.example",
        "*.internal.example",
        "192.0.2.10",
        "10.0.0.0/8",
        "2001:db8::/32",
        "::1",
        "registry.internal.example:5000",
        "[2001:db8::1]:443",
    ]
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_no_proxy=entries))
    assert settings.eas is not None and settings.eas.no_proxy == tuple(entries)


@pytest.mark.parametrize(
    "entry",
    [
        "a b",
        "a,b",
        "*",
        "10.0.0.0/33",
        "http://x.example",
        "x.example:0",
        "x.example:5_0",
        "",
        "-x",
    ],
)
def test_no_proxy_refuses_anything_else(
    eas_data: Callable[..., dict[str, Any]], entry: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_no_proxy=["localhost", entry]))
    assert_names_everything(caught.value, "push_proxy_no_proxy", entry, "CIDR")


def test_no_proxy_must_be_a_list(eas_data: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_no_proxy="localhost,.example"))
    assert caught.value.key == "push_proxy_no_proxy"


@pytest.mark.parametrize(
    "key", ["push_proxy_metrics_allowed_networks", "push_front_allowed_networks"]
)
def test_allowed_networks_are_normalised_ip_networks(
    eas_data: Callable[..., dict[str, Any]], key: str
) -> None:
    settings = settings_from_data(
        HOST, BOTH, eas_data(**{key: ["10.1.2.3/8", "192.0.2.10", "2001:db8::/32"]})
    )
    assert settings.eas is not None
    field = "metrics_allowed_networks" if "metrics" in key else "front_allowed_networks"
    assert getattr(settings.eas, field) == ("10.0.0.0/8", "192.0.2.10/32", "2001:db8::/32")
    for bad in (["10.0.0.0/33"], ["push.example.com"], "10.0.0.0/8"):
        with pytest.raises(SettingsError) as caught:
            settings_from_data(HOST, BOTH, eas_data(**{key: bad}))
        assert caught.value.key == key


# --- credentials, as the push proxy parses them (details: test_credentials.py) --------------------


def test_a_sec1_apns_key_is_refused_naming_entry_app_type_file_and_fix(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path], tmp_path: Path
) -> None:
    sec1 = tmp_path / "AuthKey_SEC1.p8"
    sec1.write_bytes(private_pem(ec_key(), serialization.PrivateFormat.TraditionalOpenSSL))
    entry = apple_entry(creds, type="apple_rn", auth_key_file=str(sec1))
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(
        caught.value, "push_proxy_apple[0].auth_key_file", str(sec1), "app type apple_rn"
    )
    assert "EC PRIVATE KEY" in caught.value.allowed
    assert f"openssl pkcs8 -topk8 -nocrypt -in {sec1}" in caught.value.allowed
    assert not any(line in str(caught.value) for line in key_lines(sec1.read_bytes()))


@pytest.mark.parametrize("content", [b"", b"\n", b"garbage", b"\xff\xfe\x00"])
def test_an_empty_or_garbage_apns_key_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path], content: bytes
) -> None:
    creds["auth_key"].write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data())
    assert caught.value.key == "push_proxy_apple[0].auth_key_file"
    assert caught.value.value == str(creds["auth_key"])


def cert_entry(creds: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    return {
        "type": "apple",
        "topic": "com.example.mattermost",
        "certificate_file": str(creds["apns_pem"]),
        "certificate_password_file": str(creds["apns_password"]),
        **overrides,
    }


def test_a_pkcs8_encrypted_apns_key_is_refused_with_the_openssl_conversion(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    creds["apns_pem"].write_bytes(
        apns_pem(password=APNS_PASSWORD, form=serialization.PrivateFormat.PKCS8)
    )
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[cert_entry(creds)]))
    assert_names_everything(
        caught.value, "push_proxy_apple[0].certificate_file", str(creds["apns_pem"]), "apple"
    )
    assert "ENCRYPTED PRIVATE KEY" in caught.value.allowed
    assert f"openssl pkey -in {creds['apns_pem']} -traditional -aes256" in caught.value.allowed


def test_a_wrong_certificate_password_is_refused_on_the_password_key(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    creds["apns_password"].write_text("not-the-password\n")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[cert_entry(creds)]))
    assert_names_everything(
        caught.value,
        "push_proxy_apple[0].certificate_password_file",
        str(creds["apns_password"]),
        "does not decrypt",
    )
    assert "not-the-password" not in str(caught.value)


def test_an_encrypted_key_without_a_password_file_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entry = cert_entry(creds, certificate_password_file=None)
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(
        caught.value, "push_proxy_apple[0].certificate_password_file", None, "no certificate_pa"
    )


def test_a_non_utf8_password_file_is_refused_without_a_traceback(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    creds["apns_password"].write_bytes(b"\xff\xfepass\n")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[cert_entry(creds)]))
    assert_names_everything(
        caught.value,
        "push_proxy_apple[0].certificate_password_file",
        str(creds["apns_password"]),
        "not UTF-8",
    )


def test_a_topic_that_is_not_the_certificate_uid_is_refused_on_the_topic(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entry = cert_entry(creds, topic="com.example.other")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(
        caught.value, "push_proxy_apple[0].topic", "com.example.other", "'com.example.mattermost'"
    )


def test_an_expired_apns_certificate_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    creds["apns_pem"].write_bytes(apns_pem(certificate(rsa_key(), valid_days=-1)))
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[cert_entry(creds)]))
    assert_names_everything(
        caught.value, "push_proxy_apple[0].certificate_file", str(creds["apns_pem"]), "expired"
    )


def test_an_apns_certificate_expiring_within_30_days_gives_a_warning(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    creds["apns_pem"].write_bytes(apns_pem(certificate(rsa_key(), valid_days=10)))
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[cert_entry(creds)]))
    (warning,) = settings.warnings
    assert warning.startswith(f"host {HOST}: push_proxy_apple[0].certificate_file")
    assert str(creds["apns_pem"]) in warning and "app type apple" in warning
    assert "expires on" in warning and "(in 9 days)" in warning


def test_a_bad_fcm_service_account_is_refused_naming_entry_app_type_and_file(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    creds["fcm"].write_bytes(fcm_json(type="authorized_user"))
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data())
    assert_names_everything(
        caught.value,
        "push_proxy_android[0].service_account_file",
        str(creds["fcm"]),
        "app type android_rn",
    )
    assert "'authorized_user', not 'service_account'" in caught.value.allowed


@pytest.mark.parametrize("content", [b"", b"not json", b"\xff{}", b"[]"])
def test_an_empty_or_garbage_fcm_file_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path], content: bytes
) -> None:
    creds["fcm"].write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data())
    assert caught.value.key == "push_proxy_android[0].service_account_file"


# --- outbound proxy values (details: test_outbound_proxy_unit.py) ---------------------------------


def outbound(**overrides: Any) -> dict[str, Any]:
    return data(
        **{"push_mode": "hpns", "outbound_proxy_name": "push.internal.example", **overrides}
    )


@pytest.mark.parametrize(
    "upstream",
    [
        "https://push.mattermost.com:99999",
        "https://push.mattermost.com:",
        "https://push.mattermost.com:0",
        "https://push.mattermost.com/api",
        "https://push.mattermost.com/api/v1/send_push",
        "https://push.mattermost.com:443/x",
        "https://push.mattermost.com?x=1",
        "https://push .mattermost.com",
        "https://push.mattermost.com:44 3",
        "https://push.mattermost.com:4_43",
        "http://push.mattermost.com",
        "https://192.0.2.10",
    ],
)
def test_a_bad_upstream_is_refused_without_a_traceback(upstream: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("outbound_proxies",), outbound(outbound_proxy_upstream=upstream))
    assert caught.value.key == "outbound_proxy_upstream" and caught.value.value == upstream


@pytest.mark.parametrize(
    "resolver",
    [
        "1.2.3.4:5_3",
        ": 53",
        "2001:db8::53",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "[1.2.3.4]",
        "dns.example.com",
        "1.2.3.4 ",
        "[2001:db8::53]:",
        53,
    ],
)
def test_a_bad_resolver_is_refused(resolver: object) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, ("outbound_proxies",), outbound(outbound_proxy_resolvers=[resolver])
        )
    assert caught.value.key == "outbound_proxy_resolvers" and caught.value.value == resolver


def test_a_bare_ipv6_resolver_is_refused_saying_how_to_write_it() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, ("outbound_proxies",), outbound(outbound_proxy_resolvers=["2001:db8::53"])
        )
    assert "write an IPv6 address in brackets: [2001:db8::53]" in caught.value.allowed


def test_resolvers_in_every_accepted_form() -> None:
    resolvers = ["192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]", "[2001:db8::53]:53"]
    settings = settings_from_data(
        HOST, ("outbound_proxies",), outbound(outbound_proxy_resolvers=resolvers)
    )
    assert settings.outbound is not None and settings.outbound.resolvers == tuple(resolvers)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\xff\xfe not text", "not UTF-8"),
        (b"just some text\n", "no CERTIFICATE"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"),
    ],
)
def test_a_bad_upstream_ca_bundle_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, ("outbound_proxies",), outbound(outbound_proxy_ca_bundle=str(bundle))
        )
    assert_names_everything(caught.value, "outbound_proxy_ca_bundle", str(bundle), problem)


# --- the planted bugs of issue 8 ------------------------------------------------------------------


def test_tpns_refuses_id_loaded_unless_forced() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="tpns", push_contents="id_loaded"))
    assert_names_everything(caught.value, "push_contents", "id_loaded", "does not encrypt")
    forced = settings_from_data(
        HOST,
        ("mattermost",),
        data(push_mode="tpns", push_contents="id_loaded", push_contents_force=True),
    )
    assert forced.mattermost.contents == "id_loaded"
    for contents in ("generic", "generic_no_channel"):
        plain = settings_from_data(
            HOST, ("mattermost",), data(push_mode="tpns", push_contents=contents)
        )
        assert plain.mattermost.contents == contents


def test_an_upstream_url_with_a_path_is_refused() -> None:
    upstream = "https://push.mattermost.com/api/v1"
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("outbound_proxies",), outbound(outbound_proxy_upstream=upstream))
    assert_names_everything(caught.value, "outbound_proxy_upstream", upstream, "with no path")


def proxy_data(name: str, port: int = 8000) -> dict[str, Any]:
    return outbound(outbound_proxy_name=name, outbound_proxy_port=port)


def test_mattermost_hosts_in_hpns_mode_use_the_one_outbound_proxy_url() -> None:
    proxies = {
        "proxy1": proxy_data("push.internal.example"),
        "proxy2": proxy_data("push.internal.example"),
    }
    settings = settings_from_data(HOST, ("mattermost",), data(push_mode="hpns"), proxies)
    assert settings.hpns_outbound_url == "https://push.internal.example:8000"
    assert settings.push_server_url == "https://push.internal.example:8000"
    direct = settings_from_data(
        HOST, ("mattermost",), data(push_mode="hpns", hpns_use_outbound_proxy=False), proxies
    )
    assert direct.push_server_url == "https://global.push.mattermost.com"


@pytest.mark.parametrize(
    "second", [("other.internal.example", 8000), ("push.internal.example", 8001)]
)
def test_outbound_proxies_with_different_urls_are_refused_for_mattermost_hosts(
    second: tuple[str, int],
) -> None:
    proxies = {"proxy1": proxy_data("push.internal.example"), "proxy2": proxy_data(*second)}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="hpns"), proxies)
    assert_names_everything(
        caught.value,
        "outbound_proxy_name",
        {
            "proxy1": "https://push.internal.example:8000",
            "proxy2": f"https://{second[0]}:{second[1]}",
        },
        "one name and port for every outbound proxy",
    )


def test_an_apple_entry_with_both_a_token_key_and_a_certificate_is_refused(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entry = apple_entry(creds, certificate_file=str(creds["apns_pem"]))
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(
        caught.value,
        "push_proxy_apple[0]",
        sorted(entry),
        "either auth_key_file (token) or certificate_file, not both",
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.example.net/ directory",
        "https://acme.example.net/directory\n",
        "https://acme.example.net\t/directory",
        " https://acme.example.net/directory",
    ],
)
def test_an_https_url_containing_whitespace_is_refused(
    eas_data: Callable[..., dict[str, Any]], url: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(acme_directory_url=url))
    assert_names_everything(caught.value, "acme_directory_url", url, "an https:// URL")


# --- certificate settings (deploys/certs.py) ------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "overrides", "names"),
    [
        (("push_proxies",), {}, ("push.example.com",)),
        (("push_proxies", "mattermost"), {}, ("push.example.com",)),
        (("mattermost",), {}, ()),
        (("outbound_proxies",), {}, ()),
        (("outbound_proxies",), {"push_mode": "hpns"}, ("push.internal.example",)),
        (("push_proxies",), {"push_mode": "hpns"}, ()),
        (("push_proxies", "outbound_proxies"), {"push_mode": "tpns"}, ()),
    ],
)
def test_certificate_settings_name_the_managed_certificates(
    groups: tuple[str, ...], overrides: dict[str, Any], names: tuple[str, ...]
) -> None:
    values = data(
        push_name="push.example.com", outbound_proxy_name="push.internal.example", **overrides
    )
    settings = certificate_settings_from_data(HOST, groups, values)
    assert settings == CertificateSettings(
        host=HOST, acme=settings_from_data(HOST, ("mattermost",), values).acme, names=names
    )


def test_certificate_settings_need_no_credentials_nor_release(tmp_path: Path) -> None:
    # the cron machine has neither the push credentials nor the release archive
    missing = str(tmp_path / "missing")
    values = data(
        push_name="push.example.com",
        push_proxy_sha256=None,
        push_proxy_archive=missing,
        push_proxy_apple=[{"type": "apple", "auth_key_file": missing}],
        push_proxy_android=[{"type": "android", "service_account_file": missing}],
        acme_email="ops@example.com",
        acme_renew_days=20,
    )
    settings = certificate_settings_from_data(HOST, ("push_proxies",), values)
    assert settings.names == ("push.example.com",)
    assert (settings.acme.email, settings.acme.renew_days) == ("ops@example.com", 20)
    with pytest.raises(SettingsError):  # while the full settings need them
        settings_from_data(HOST, ("push_proxies",), values)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"push_name": None}, "push_name"),
        ({"push_name": "CHANGE-ME: the public name"}, "push_name"),
        ({"push_contnets": "full"}, "push_contnets"),
        ({"acme_directory_url": "http://acme.example.net/dir"}, "acme_directory_url"),
        ({"acme_email": "nope"}, "acme_email"),
        ({"push_mode": "self-hosted"}, "push_mode"),
        ({"push_proxy_apple": [{"developement": True}]}, "push_proxy_apple[0].developement"),
    ],
)
def test_certificate_settings_refuse_what_renewal_reads_and_unknown_keys(
    overrides: dict[str, Any], key: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        certificate_settings_from_data(
            HOST, ("push_proxies",), data(**{"push_name": "push.example.com", **overrides})
        )
    assert caught.value.key == key


def test_load_certificate_settings_reads_the_pyinfra_host() -> None:
    class FakeData:
        def dict(self) -> dict[str, Any]:
            return data(push_mode="hpns", outbound_proxy_name="push.internal.example")

    class FakeHost:
        name = HOST
        groups = ("outbound_proxies",)
        data = FakeData()

    settings = load_certificate_settings(FakeHost())
    assert (settings.host, settings.names) == (HOST, ("push.internal.example",))


# --- every refusal's exact message (found missing by mutation testing) ----------------------------
# The message is what an operator reads: host, key, value and what is allowed, word for word.

EXACT_REFUSALS = [
    (
        {"push_proxy_metrics": "yes"},
        "push_proxy_metrics = 'yes' is invalid: true or false (a Python bool)",
    ),
    (
        {"push_https_port": 80},
        "push_https_port = 80 is invalid: a port other than 80 (NGINX serves ACME HTTP-01 "
        "challenges there)",
    ),
    ({"push_https_port": 0}, "push_https_port = 0 is invalid: a whole number from 1 to 65535"),
    (
        {"push_proxy_listen_port": 80},
        "push_proxy_listen_port = 80 is invalid: a whole number from 1024 to 65535 "
        "(unprivileged: the proxy runs as its own user)",
    ),
    (
        {"push_https_port": 8443, "push_proxy_listen_port": 8443},
        "push_proxy_listen_port = 8443 is invalid: a port other than push_https_port (8443) and "
        "80: NGINX listens there",
    ),
    (
        {"push_name": "Push.Example.com"},
        "push_name = 'Push.Example.com' is invalid: a fully qualified DNS name in lowercase, "
        "e.g. push.example.com (no scheme, port)",
    ),
    (
        {"acme_directory_url": "https://"},
        "acme_directory_url = 'https://' is invalid: an https:// URL (no whitespace)",
    ),
    (
        {"acme_email": "nope"},
        "acme_email = 'nope' is invalid: an email address for the ACME account, or None",
    ),
    (
        {"extra_data_keys": "site_owner"},
        "extra_data_keys = 'site_owner' is invalid: a list, e.g. ['site_owner']",
    ),
    (
        {"extra_data_keys": [1]},
        "extra_data_keys = 1 is invalid: a list of strings, e.g. ['site_owner']",
    ),
    (
        {"extra_data_keys": ["site owner"]},
        "extra_data_keys = 'site owner' is invalid: data key names (Python identifiers)",
    ),
    (
        {"push_proxy_archive": 5},
        "push_proxy_archive = 5 is invalid: a path to a file on the control node",
    ),
    (
        {"push_proxy_version": "latest"},
        "push_proxy_version = 'latest' is invalid: a release version, e.g. 6.5.0",
    ),
    (
        {"push_proxy_sha256": "abc"},
        "push_proxy_sha256 = 'abc' is invalid: the release archive's sha256: 64 lowercase hex "
        "characters",
    ),
    (
        {"push_proxy_url": "https://example.com/{foo}.tar.gz"},
        "push_proxy_url = 'https://example.com/{foo}.tar.gz' is invalid: unknown placeholder "
        "{foo}: only {version} and {arch}",
    ),
    (
        {"push_proxy_retry_timeout_sec": 0},
        "push_proxy_retry_timeout_sec = 0 is invalid: a whole number from 1 to 2147483647",
    ),
    (
        {"push_proxy_send_timeout_sec": 10, "push_proxy_retry_timeout_sec": 11},
        "push_proxy_retry_timeout_sec = 11 is invalid: a whole number from 1 to "
        "push_proxy_send_timeout_sec (10): one attempt cannot outlast the whole send",
    ),
    (
        {"push_proxy_throttle_per_sec": 0},
        "push_proxy_throttle_per_sec = 0 is invalid: a whole number from 1 to 1000000",
    ),
    (
        {"push_proxy_throttle_memory_store_size": 0},
        "push_proxy_throttle_memory_store_size = 0 is invalid: a whole number from 1 to 100000000",
    ),
    (
        {"push_front_extra_config": 42},
        "push_front_extra_config = 42 is invalid: NGINX directives for the TLS server block (text)",
    ),
    (
        {"push_front_extra_config": "access_log off }"},
        "push_front_extra_config = 'access_log off }' is invalid: NGINX directives for inside "
        "the TLS server block: line 1: unexpected '}' (the directive 'access_log' before it needs "
        "a ';')",
    ),
    (
        {"push_proxy_https_proxy": "socks5://proxy.example.net:1080"},
        "push_proxy_https_proxy = 'socks5://proxy.example.net:1080' is invalid: None or "
        "http://host[:port] / https://host[:port] (no path, no user:password@)",
    ),
    (
        {"push_proxy_no_proxy": "localhost"},
        "push_proxy_no_proxy = 'localhost' is invalid: a list, e.g. ['10.0.0.0/8', "
        "'.internal.example', 'localhost']",
    ),
    (
        {"push_proxy_no_proxy": ["a b"]},
        "push_proxy_no_proxy = 'a b' is invalid: a host name, .domain, IP address or CIDR "
        "(['10.0.0.0/8', '.internal.example', 'localhost'])",
    ),
    (
        {"push_front_allowed_networks": "10.0.0.0/8"},
        "push_front_allowed_networks = '10.0.0.0/8' is invalid: a list of networks, e.g. "
        "['10.0.0.0/8', '192.0.2.10']",
    ),
    (
        {"mattermost_service": "--help"},
        "mattermost_service = '--help' is invalid: a systemd service name (letters, digits, "
        ":_.\\@-, not starting with '-', optionally ending in .service, at most 256 characters), "
        "e.g. mattermost",
    ),
    (
        {"mattermost_config_path": "config.json"},
        "mattermost_config_path = 'config.json' is invalid: an absolute path to config.json",
    ),
    (
        {"mattermost_restart_batch": 0},
        "mattermost_restart_batch = 0 is invalid: a whole number from 1 to 1000",
    ),
    (
        {"mattermost_ping_url": "ftp://x"},
        "mattermost_ping_url = 'ftp://x' is invalid: an http:// or https:// URL the server "
        "answers on itself once it is up, e.g. http://127.0.0.1:8065/api/v4/system/ping",
    ),
    (
        {"zzz": 1},
        "zzz = 1 is invalid: unknown setting (the settings are documented in group_data/all.py; "
        "list a site's own data keys in extra_data_keys)",
    ),
    (
        {"apns_password": "hunter2"},
        "apns_password = '<hidden>' is invalid: unknown setting (the settings are documented in "
        "group_data/all.py; list a site's own data keys in extra_data_keys)",
    ),
    (
        {"push_proxy_apple": "x"},
        "push_proxy_apple = 'x' is invalid: a list of dicts (see group_data/all.py)",
    ),
    (
        {"push_proxy_apple": ["x"]},
        "push_proxy_apple[0] = 'x' is invalid: a dict with type, topic and credentials",
    ),
    (
        {"push_proxy_android": "x"},
        "push_proxy_android = 'x' is invalid: a list of dicts (see group_data/all.py)",
    ),
    (
        {"push_proxy_android": ["x"]},
        "push_proxy_android[0] = 'x' is invalid: a dict with type and service_account_file",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    EXACT_REFUSALS,
    ids=[message.split(" is ")[0][:50] for _, message in EXACT_REFUSALS],
)
def test_the_refusal_message_is_exactly_what_the_operator_reads(
    eas_data: Callable[..., dict[str, Any]], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(**overrides))
    assert str(caught.value) == f"host {HOST}: {message}"


APPLE_FIELD_REFUSALS = [
    ("auth_key_id", "ABC", "Apple's 10-character key id"),
    ("team_id", "T", "Apple's 10-character team id"),
    ("topic", "com/x", "the app's bundle id, e.g. com.example.mattermost"),
]


@pytest.mark.parametrize(("field", "value", "allowed"), APPLE_FIELD_REFUSALS)
def test_the_refusal_message_of_an_apple_entry_field_is_exact(
    eas_data: Callable[..., dict[str, Any]],
    creds: dict[str, Path],
    field: str,
    value: str,
    allowed: str,
) -> None:
    entry = apple_entry(creds, **{field: value})
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert str(caught.value) == (
        f"host {HOST}: push_proxy_apple[0].{field} = {value!r} is invalid: {allowed}"
    )


def test_the_refusal_messages_of_an_apple_entry_with_both_or_neither_credential_are_exact(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    both = apple_entry(creds, certificate_file=str(creds["apns_pem"]))
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[both]))
    assert str(caught.value) == (
        f"host {HOST}: push_proxy_apple[0] = ['auth_key_file', 'auth_key_id', 'certificate_file', "
        "'team_id', 'topic', 'type'] is invalid: either auth_key_file (token) or "
        "certificate_file, not both"
    )
    neither = {"type": "apple", "topic": "com.example.mattermost"}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[neither]))
    assert str(caught.value) == (
        f"host {HOST}: push_proxy_apple[0] = {{'type': '...', 'topic': '...'}} is invalid: "
        "auth_key_file (+ auth_key_id, team_id) or certificate_file"
    )


def outbound_refusal(**overrides: Any) -> str:
    """The message refusing an outbound proxy host's data."""
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("outbound_proxies",), outbound(**overrides))
    return str(caught.value)


def test_the_refusal_messages_of_outbound_proxy_settings_are_exact() -> None:
    assert outbound_refusal(outbound_proxy_resolvers="192.0.2.53") == (
        f"host {HOST}: outbound_proxy_resolvers = '192.0.2.53' is invalid: a list of DNS servers, "
        "e.g. ['192.0.2.53', '10.0.0.2:53']"
    )
    assert outbound_refusal(outbound_proxy_resolvers=["dns.example.com"]) == (
        f"host {HOST}: outbound_proxy_resolvers = 'dns.example.com' is invalid: an IP address: "
        "192.0.2.53, 192.0.2.53:5353, [2001:db8::53] or [2001:db8::53]:53"
    )
    assert outbound_refusal(outbound_proxy_upstream="https://x.example.com/api") == (
        f"host {HOST}: outbound_proxy_upstream = 'https://x.example.com/api' is invalid: "
        "https://<DNS name>[:port] with no path, the port from 1 to 65535"
    )
    # the reason after the example is the ipaddress module's own words
    assert outbound_refusal(outbound_proxy_allowed_networks=["10.0.0.0/33"]).startswith(
        f"host {HOST}: outbound_proxy_allowed_networks = '10.0.0.0/33' is invalid: an IP network "
        "such as 10.0.0.0/8 ('10.0.0.0/33' "
    )


def test_the_refusal_messages_of_mattermost_host_settings_are_exact() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="tpns", push_contents="full"))
    assert str(caught.value) == (
        f"host {HOST}: push_contents = 'full' is invalid: generic or generic_no_channel with "
        "TPNS: the test service does not encrypt notifications, so message text would cross the "
        "internet readable (set push_contents_force = True to accept that)"
    )
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, ("mattermost",), data(push_mode="hpns", hpns_use_outbound_proxy="yes")
        )
    assert str(caught.value) == (
        f"host {HOST}: hpns_use_outbound_proxy = 'yes' is invalid: true, false, or None (automatic)"
    )


def test_the_refusal_message_of_outbound_proxies_with_different_urls_is_exact() -> None:
    proxies = {"proxy1": proxy_data("push.internal.example"), "proxy2": proxy_data("b.example")}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="hpns"), proxies)
    assert str(caught.value) == (
        f"host {HOST}: outbound_proxy_name = {{'proxy1': 'https://push.internal.example:8000', "
        "'proxy2': 'https://b.example:8000'} is invalid: one name and port for every outbound "
        "proxy (Mattermost servers use one URL)"
    )


def test_the_refusal_message_for_a_missing_file_is_exact(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_archive=str(missing)))
    assert str(caught.value) == (
        f"host {HOST}: push_proxy_archive = {str(missing)!r} is invalid: an existing file on the "
        "control node (not found)"
    )


def test_the_error_of_a_local_archive_asked_for_a_url_is_exact(tmp_path: Path) -> None:
    artifact = PushProxyArtifact("6.5.0", SHA, None, tmp_path / "a.tar.gz")
    with pytest.raises(ValueError) as caught:
        artifact.url_for("amd64")
    assert str(caught.value) == ("this release is a local archive (push_proxy_archive), not a URL")


# --- NGINX snippets: the tokenizer's words and its exact problems ---------------------------------

TOKENIZED = [
    ("set $a ${request_id}x;", [(";", ["set", "$a", "${request_id}x"], 1)]),
    # a "$" inside a word starts a variable too, and "${" does not open a block; "X" is a letter
    (
        "add_header X-Request-Xid id${request_id};",
        [(";", ["add_header", "X-Request-Xid", "id${request_id}"], 1)],
    ),
    # "{" right after a word opens the block; a quoted word is unquoted; parsing goes on after it
    (
        'location /x{ return 200 "ok"; access_log off; }',
        [
            ("{", ["location", "/x"], 1),
            (";", ["return", "200", "ok"], 1),
            (";", ["access_log", "off"], 1),
            ("}", [], 1),
        ],
    ),
    ('return "a" b;', [(";", ["return", "a", "b"], 1)]),
    # ")" may follow a quoted string, as a word of its own
    (
        'if ($request_method = "POST") { return 405; }',
        [
            ("{", ["if", "($request_method", "=", "POST", ")"], 1),
            (";", ["return", "405"], 1),
            ("}", [], 1),
        ],
    ),
    # a comment runs to the end of its line only
    (
        "# c } {\naccess_log off; # trailing ;\n}",
        [(";", ["access_log", "off"], 2), ("}", [], 3)],
    ),
]


@pytest.mark.parametrize(("snippet", "statements"), TOKENIZED)
def test_the_snippet_tokenizer_gives_the_words_nginx_reads(
    snippet: str, statements: list[tuple[str, list[str], int]]
) -> None:
    assert [(end, list(words), line) for end, words, line in _nginx_statements(snippet)] == (
        statements
    )


CLOSES_SERVER = "'}' would close the server block (braces must balance)"


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ('return 200 "a"X;', "line 1: unexpected 'X' right after a quoted string"),
        ("return 200 \\", "the snippet ends with a backslash"),
        (
            "access_log off",
            "line 1: the last directive is not terminated by ';' (it would swallow the "
            "template's next line)",
        ),
        (
            "server { }",
            "line 1: a 'server' block; the snippet goes inside the push front's server block "
            "(use location/if blocks and directives)",
        ),
        (
            'return 200 "x" }',
            "line 1: unexpected '}' (the directive 'return' before it needs a ';')",
        ),
        ("# a comment\n}", f"line 2: {CLOSES_SERVER}"),
        ("access_log off; # c\n}", f"line 2: {CLOSES_SERVER}"),
        ('return 200 "ok"; }', f"line 1: {CLOSES_SERVER}"),
    ],
)
def test_the_snippet_problem_is_exact(snippet: str, problem: str) -> None:
    assert nginx_snippet_problem(snippet) == problem


# --- values the tests above did not read back -----------------------------------------------------


def test_the_mattermost_restart_and_override_settings_are_read() -> None:
    settings = settings_from_data(
        HOST,
        ("mattermost",),
        data(
            push_mode="off",
            mattermost_accept_env_overrides=True,
            mattermost_restart_batch=1000,
            mattermost_ping_url="https://MM1.example.net:8443/api/v4/system/ping?X=1",
        ),
    )
    assert settings.mattermost.accept_env_overrides is True
    assert settings.mattermost.restart_batch == 1000
    assert settings.mattermost.ping_url == "https://MM1.example.net:8443/api/v4/system/ping?X=1"
    defaults = settings_from_data(HOST, ("mattermost",), data(push_mode="off"))
    assert defaults.mattermost.accept_env_overrides is False
    assert defaults.mattermost.restart_batch == 1
    assert defaults.mattermost.ping_url == "http://127.0.0.1:8065/api/v4/system/ping"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/ping",
        "127.0.0.1:8065/api/v4/system/ping",
        "http://127.0.0.1:8065/api v4",
        "http://127.0.0.1:8065/ping\n",
        "http://127.0.0.1:8065/$(reboot)",
        "http://127.0.0.1:8065/'x'",
        'http://127.0.0.1:8065/"x"',
        "http://127.0.0.1:8065/`x`",
        "http://127.0.0.1:8065/\\x",
        8065,
    ],
)
def test_a_ping_url_that_is_not_a_plain_http_url_is_refused(url: object) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", mattermost_ping_url=url))
    assert caught.value.key == "mattermost_ping_url" and caught.value.value == url


def test_mattermost_restart_batch_stops_at_1000() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST, ("mattermost",), data(push_mode="off", mattermost_restart_batch=1001)
        )
    assert caught.value.key == "mattermost_restart_batch" and caught.value.value == 1001


def test_the_acme_account_key_defaults_to_one_file_per_directory_url() -> None:
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    acme = settings_from_data(HOST, ("mattermost",), data(push_mode="off")).acme
    production_hash = hashlib.sha256(b"https://acme-v02.api.letsencrypt.org/directory").hexdigest()
    assert acme.account_key_file == (
        Path.home() / ".config" / "mmpush" / "acme" / f"{production_hash[:12]}-account.pem"
    )
    other = settings_from_data(
        HOST, ("mattermost",), data(push_mode="off", acme_directory_url=staging)
    ).acme
    assert other.account_key_file.name == (
        hashlib.sha256(staging.encode()).hexdigest()[:12] + "-account.pem"
    )
    assert other.account_key_file.parent == acme.account_key_file.parent


def test_acme_ca_bundle_and_account_key_file_are_read(tmp_path: Path) -> None:
    bundle = tmp_path / "pebble.minica.pem"
    bundle.write_bytes(b"any content: the ACME client reads it")
    acme = settings_from_data(
        HOST,
        ("mattermost",),
        data(
            push_mode="off",
            acme_ca_bundle=str(bundle),
            acme_account_key_file="~/keys/acme.pem",
            acme_renew_days=365,
        ),
    ).acme
    assert acme.ca_bundle == str(bundle)
    assert acme.account_key_file == Path.home() / "keys" / "acme.pem"
    assert acme.renew_days == 365
    assert settings_from_data(HOST, ("mattermost",), data(push_mode="off")).acme.ca_bundle is None


def test_a_missing_acme_ca_bundle_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", acme_ca_bundle=missing))
    assert_names_everything(caught.value, "acme_ca_bundle", missing, "(not found)")


def test_the_push_proxy_throttle_settings_are_read_within_their_bounds(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    settings = settings_from_data(
        HOST,
        BOTH,
        eas_data(
            push_proxy_throttle_per_sec=1_000_000,
            push_proxy_throttle_memory_store_size=100_000_000,
            push_proxy_retry_timeout_sec=1,
        ),
    )
    assert settings.eas is not None
    assert settings.eas.throttle_per_sec == 1_000_000
    assert settings.eas.throttle_memory_store_size == 100_000_000
    assert settings.eas.retry_timeout_sec == 1
    low = settings_from_data(
        HOST,
        BOTH,
        eas_data(push_proxy_throttle_per_sec=1, push_proxy_throttle_memory_store_size=1),
    )
    assert low.eas is not None
    assert (low.eas.throttle_per_sec, low.eas.throttle_memory_store_size) == (1, 1)
    defaults = settings_from_data(HOST, BOTH, eas_data())
    assert defaults.eas is not None
    assert (defaults.eas.throttle_per_sec, defaults.eas.throttle_memory_store_size) == (
        300,
        50000,
    )
    for key, value in (
        ("push_proxy_throttle_per_sec", 1_000_001),
        ("push_proxy_throttle_memory_store_size", 100_000_001),
    ):
        with pytest.raises(SettingsError) as caught:
            settings_from_data(HOST, BOTH, eas_data(**{key: value}))
        assert caught.value.key == key


def test_a_local_archive_keeps_the_version_and_sha256(
    eas_data: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    archive = tmp_path / "push-proxy.tar.gz"
    archive.write_bytes(b"x")
    digest = hashlib.sha256(b"x").hexdigest()
    settings = settings_from_data(
        HOST,
        BOTH,
        eas_data(
            push_proxy_archive=str(archive), push_proxy_sha256=digest, push_proxy_version="6.4.1"
        ),
    )
    assert settings.eas is not None
    assert settings.eas.artifact == PushProxyArtifact("6.4.1", digest, None, archive)


def test_a_release_url_with_literal_braces_is_checked_past_them(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    # "{{" is a literal "{" for str.format; the placeholders after it are still checked
    url = "https://mirror.example.com/{{x}}/push-proxy-{version}.tar.gz"
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_url=url))
    assert settings.eas is not None
    assert settings.eas.artifact.url_for("amd64") == (
        "https://mirror.example.com/{x}/push-proxy-6.5.0.tar.gz"
    )
    bad = "https://mirror.example.com/{{x}}/{foo}.tar.gz"
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_url=bad))
    assert_names_everything(caught.value, "push_proxy_url", bad, "unknown placeholder {foo}")


# --- app entries --------------------------------------------------------------------------------


def test_a_certificate_entry_keeps_its_type_and_topic(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    settings = settings_from_data(
        HOST, BOTH, eas_data(push_proxy_apple=[cert_entry(creds, type="apple_rnbeta")])
    )
    assert settings.eas is not None
    (apple,) = settings.eas.apple
    assert (apple.type, apple.topic, apple.development) == (
        "apple_rnbeta",
        "com.example.mattermost",
        False,
    )


@pytest.mark.parametrize("field", ["certificate_file", "certificate_password_file"])
def test_a_missing_certificate_or_password_file_is_refused_on_its_key(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path], tmp_path: Path, field: str
) -> None:
    missing = str(tmp_path / "missing")
    entry = cert_entry(creds, **{field: missing})
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert_names_everything(caught.value, f"push_proxy_apple[0].{field}", missing, "(not found)")


def test_an_upper_case_bundle_id_is_accepted(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    entry = apple_entry(creds, topic="com.Example.MatterMost-Beta")
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=[entry]))
    assert settings.eas is not None and settings.eas.apple[0].topic == "com.Example.MatterMost-Beta"


def test_two_entries_of_one_app_type_are_refused_naming_the_second(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path]
) -> None:
    apple = [apple_entry(creds), apple_entry(creds, topic="com.example.other")]
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_apple=apple))
    assert str(caught.value) == (
        f"host {HOST}: push_proxy_apple[1].type = 'apple' is invalid: one entry per app type "
        "(this type is listed twice)"
    )
    android = [{"type": "android", "service_account_file": str(creds["fcm"])}] * 2
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_android=android))
    assert str(caught.value) == (
        f"host {HOST}: push_proxy_android[1].type = 'android' is invalid: one entry per app type "
        "(this type is listed twice)"
    )


def test_a_push_proxy_without_app_entries_has_none(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    values = eas_data()
    del values["push_proxy_apple"], values["push_proxy_android"]
    settings = settings_from_data(HOST, BOTH, values)
    assert settings.eas is not None
    assert (settings.eas.apple, settings.eas.android) == ((), ())


def test_a_push_proxy_only_host_reads_the_push_name(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    settings = settings_from_data(HOST, ("push_proxies",), eas_data())
    assert settings.push_name == "push.example.com"
    assert settings.push_server_url == "https://push.example.com"


# --- names, ports, networks -----------------------------------------------------------------------

#: DNS names of exactly 253 and 254 characters, every label at most 63.
NAME_253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
NAME_254 = NAME_253 + "d"


def test_a_dns_name_may_have_253_characters_not_254(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    assert len(NAME_253) == 253 and len(NAME_254) == 254
    assert settings_from_data(HOST, BOTH, eas_data(push_name=NAME_253)).push_name == NAME_253
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_name=NAME_254))
    assert caught.value.key == "push_name"


def test_an_egress_proxy_host_name_may_have_253_characters_not_254(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    name = NAME_253.upper()
    settings = settings_from_data(
        HOST, BOTH, eas_data(push_proxy_https_proxy=f"http://{name}:3128")
    )
    assert settings.eas is not None and settings.eas.https_proxy == f"http://{name}:3128"
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_https_proxy=f"http://{NAME_254}:3128"))
    assert caught.value.key == "push_proxy_https_proxy"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("http://SQUIDBOX", "http://SQUIDBOX"), ("http://SQUIDBOX/", "http://SQUIDBOX")],
)
def test_only_a_final_slash_is_dropped_from_an_egress_proxy_url(
    eas_data: Callable[..., dict[str, Any]], value: str, expected: str
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_https_proxy=value))
    assert settings.eas is not None and settings.eas.https_proxy == expected


@pytest.mark.parametrize("value", ["http://[-proxy]:3128", "http://[proxy_1]:3128"])
def test_brackets_hold_only_an_ipv6_address_in_an_egress_proxy_url(
    eas_data: Callable[..., dict[str, Any]], value: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(push_proxy_https_proxy=value))
    assert caught.value.key == "push_proxy_https_proxy" and caught.value.value == value


def test_a_no_proxy_cidr_may_have_host_bits_set(eas_data: Callable[..., dict[str, Any]]) -> None:
    # Go's NO_PROXY matching takes 10.1.2.3/8 as the network 10.0.0.0/8; it is kept as written
    settings = settings_from_data(HOST, BOTH, eas_data(push_proxy_no_proxy=["10.1.2.3/8"]))
    assert settings.eas is not None and settings.eas.no_proxy == ("10.1.2.3/8",)


@pytest.mark.parametrize("service", ["m", "mattermost.green.timer", "mattermost@blue@green"])
def test_unit_names_one_letter_long_yes_other_unit_types_and_double_at_no(service: str) -> None:
    values = data(push_mode="off", mattermost_service=service)
    if service == "m":
        assert settings_from_data(HOST, ("mattermost",), values).mattermost.service == "m"
        return
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), values)
    assert caught.value.key == "mattermost_service" and caught.value.value == service


@pytest.mark.parametrize("key", ["outbound_proxy_allowed_networks", "outbound_proxy_resolvers"])
@pytest.mark.parametrize("value", [5, {"10.0.0.0/8": True}.keys()])
def test_network_and_resolver_lists_that_are_not_lists_are_refused(key: str, value: object) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("outbound_proxies",), outbound(**{key: value}))
    assert caught.value.key == key and caught.value.value == value


def test_a_bad_network_in_a_list_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_data(
            HOST,
            ("outbound_proxies",),
            outbound(outbound_proxy_allowed_networks=["10.0.0.0/8", "10.0.0.0/33"]),
        )
    assert caught.value.value == "10.0.0.0/33"
    assert caught.value.allowed.startswith("an IP network such as 10.0.0.0/8 (")


def test_a_missing_outbound_ca_bundle_is_refused_on_its_key(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("outbound_proxies",), outbound(outbound_proxy_ca_bundle=missing))
    assert_names_everything(caught.value, "outbound_proxy_ca_bundle", missing, "(not found)")


def test_a_bad_outbound_proxy_seen_from_a_mattermost_host_is_named_by_its_own_host() -> None:
    proxies = {"proxy9.example.net": proxy_data("push.internal.example", port=80)}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="hpns"), proxies)
    assert caught.value.host == "proxy9.example.net"
    assert caught.value.key == "outbound_proxy_port"


def test_certificate_settings_errors_name_the_host() -> None:
    with pytest.raises(SettingsError) as caught:
        certificate_settings_from_data(HOST, ("push_proxies",), data(push_mode="self-hosted"))
    assert caught.value.host == HOST and str(caught.value).startswith(f"host {HOST}: ")


def test_require_mode_names_the_push_mode_key(eas_data: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(SettingsError) as caught:
        require_mode(settings_from_data(HOST, BOTH, eas_data()), "tpns")
    assert (caught.value.key, caught.value.value) == ("push_mode", "eas")


# --- unknown keys and placeholders: every entry, every key ----------------------------------------


def test_entry_keys_are_checked_past_a_non_list_and_a_non_dict_entry() -> None:
    values = data(
        push_mode="off",
        push_proxy_apple="not a list",
        push_proxy_android=["not a dict", {"type": "android", "servce_account_file": "x"}],
    )
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), values)
    assert caught.value.key == "push_proxy_android[1].servce_account_file"


def test_the_value_of_a_misspelt_entry_key_named_like_a_secret_is_not_shown() -> None:
    entry = {"type": "apple", "certificate_passwd_file": "hunter2"}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", push_proxy_apple=[entry]))
    assert caught.value.key == "push_proxy_apple[0].certificate_passwd_file"
    assert caught.value.value == "<hidden>" and "hunter2" not in str(caught.value)


def test_a_placeholder_after_connector_data_is_still_refused() -> None:
    values = {"ssh_user": "deploy", **data(push_mode="off", acme_email="CHANGE-ME - X.509 mail")}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), values)
    assert str(caught.value) == (
        f"host {HOST}: acme_email = 'CHANGE-ME - X.509 mail' is a placeholder: X.509 mail"
    )


def test_placeholders_lists_every_placeholder_of_the_settings_with_what_goes_there() -> None:
    values = {
        "ssh_user": "CHANGE-ME: not a setting, not listed",
        "push_proxy_apple": [{"topic": "CHANGE-ME: the bundle id", "type": "apple"}],
        "push_name": "CHANGE-ME - X: the public name  ",
        "acme_email": "CHANGE-ME",
        "push_contents": "generic",
    }
    assert placeholders(values) == [
        ("acme_email", ""),
        ("push_name", "X: the public name  "),
        ("push_proxy_apple[0].topic", "the bundle id"),
    ]
    assert placeholders(data()) == []


# --- reading the pyinfra host -------------------------------------------------------------------


def lab_inventory(with_proxies: bool = True) -> Inventory:
    """A pyinfra inventory: Mattermost server mm1 in hpns mode, and (optionally) two outbound
    proxies with one name and port."""
    groups: dict[str, Any] = {"mattermost": (["mm1.example.net"], {})}
    names: list[Any] = ["mm1.example.net"]
    if with_proxies:
        names += ["proxy1.example.net", "proxy2.example.net"]
        groups["outbound_proxies"] = (
            ["proxy1.example.net", "proxy2.example.net"],
            {"outbound_proxy_name": "push.internal.example", "outbound_proxy_port": 8443},
        )
    return Inventory((names, {"push_mode": "hpns"}), **groups)


def test_load_settings_gives_a_mattermost_server_the_outbound_proxies_url() -> None:
    host = lab_inventory().get_host("mm1.example.net")
    settings = load_settings(host)
    assert (settings.host, settings.groups) == ("mm1.example.net", ("mattermost",))
    assert settings.hpns_outbound_url == "https://push.internal.example:8443"
    assert settings.push_server_url == "https://push.internal.example:8443"


def test_load_settings_of_an_outbound_proxy_reads_its_own_data_only() -> None:
    settings = load_settings(lab_inventory().get_host("proxy1.example.net"))
    assert settings.groups == ("outbound_proxies",) and settings.hpns_outbound_url is None
    assert settings.outbound is not None
    assert settings.outbound.url == "https://push.internal.example:8443"


def test_load_settings_without_outbound_proxies_sends_hpns_direct() -> None:
    settings = load_settings(lab_inventory(with_proxies=False).get_host("mm1.example.net"))
    assert settings.push_server_url == "https://global.push.mattermost.com"


def test_hosts_without_groups_read_as_in_no_group() -> None:
    class Data:
        def dict(self) -> dict[str, Any]:
            return data(push_mode="off")

    class GrouplessHost:
        name = HOST
        data = Data()
        inventory = lab_inventory()

    assert load_settings(GrouplessHost()).groups == ()
    assert load_certificate_settings(GrouplessHost()).names == ()


def test_log_warnings_logs_each_warning_with_the_host(
    eas_data: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_from_data(HOST, BOTH, eas_data())
    warned = Settings(**{**settings.__dict__, "warnings": ("first", "second")})
    with caplog.at_level(logging.WARNING, logger="pyinfra"):
        log_warnings(warned)
    assert [record.getMessage() for record in caplog.records] == [
        f"    [{HOST}] first",
        f"    [{HOST}] second",
    ]


def test_a_domain_of_an_ip_address_is_not_a_no_proxy_entry(
    eas_data: Callable[..., dict[str, Any]],
) -> None:
    for entry in (".192.0.2.10", "*.192.0.2.10"):
        with pytest.raises(SettingsError) as caught:
            settings_from_data(HOST, BOTH, eas_data(push_proxy_no_proxy=[entry]))
        assert caught.value.value == entry


# --- found by mutation testing: credential content in messages -------------------------------


@pytest.mark.parametrize("what", ["auth_key", "fcm"])
def test_credential_content_given_instead_of_its_path_is_not_shown(
    eas_data: Callable[..., dict[str, Any]], creds: dict[str, Path], what: str
) -> None:
    content = creds[what].read_text()
    if what == "auth_key":
        overrides = {"push_proxy_apple": [apple_entry(creds, auth_key_file=content)]}
    else:
        entry = {"type": "android", "service_account_file": content}
        overrides = {"push_proxy_android": [entry]}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, BOTH, eas_data(**overrides))
    lines = key_lines(content.encode())
    assert len(lines) >= 3 and not any(line in str(caught.value) for line in lines)


def test_credential_content_under_a_misspelt_entry_key_is_not_shown(
    creds: dict[str, Path],
) -> None:
    content = creds["auth_key"].read_text()
    entry = {"type": "apple", "auth_key": content}
    with pytest.raises(SettingsError) as caught:
        settings_from_data(HOST, ("mattermost",), data(push_mode="off", push_proxy_apple=[entry]))
    assert caught.value.key == "push_proxy_apple[0].auth_key"
    assert not any(line in str(caught.value) for line in key_lines(content.encode()))
