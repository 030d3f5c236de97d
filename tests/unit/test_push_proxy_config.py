"""mmpush.push_proxy: the push proxy's config file and where credentials land on the host.
Pure logic: settings are built from group_data/all.py defaults and files in tmp_path (real
credentials: the settings parse them as the push proxy would)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mmpush.push_proxy import CREDENTIALS_DIR, credentials, proxy_config
from mmpush.settings import EasSettings, SettingsError, settings_from_data
from tests.unit.defaults import (
    APNS_PASSWORD,
    DEFAULTS,
    SHA,
    apns_pem,
    certificate,
    fcm_json,
    p8_key,
    rsa_key,
)

CREDS = "/etc/mattermost-push-proxy/credentials"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    contents = {
        "p8": p8_key(),
        "pem": apns_pem(certificate(rsa_key(), uid="com.example.classic")),
        "password": APNS_PASSWORD.encode() + b"\n",
        "fcm": fcm_json(project_id="fcm-rn"),
        "fcm_beta": fcm_json(project_id="fcm-beta"),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(content)
    return paths


def key_lines(path: Path) -> list[str]:
    """The base64 lines of the PEM bodies in a credential file (also inside JSON strings)."""
    text = path.read_text().replace("\\n", "\n")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if re.fullmatch(r"[A-Za-z0-9+/=]{40,}", line)]


def token_entry(files: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    return {
        "type": "apple_rn",
        "topic": "com.example.mattermost",
        "auth_key_file": str(files["p8"]),
        "auth_key_id": "ABCDE12345",
        "team_id": "TEAM123456",
        **overrides,
    }


def cert_entry(files: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    return {
        "type": "apple",
        "topic": "com.example.classic",
        "certificate_file": str(files["pem"]),
        "certificate_password_file": str(files["password"]),
        "development": True,
        **overrides,
    }


def eas(files: dict[str, Path], **overrides: Any) -> EasSettings:
    data = {
        **DEFAULTS,
        "push_name": "push.example.com",
        "push_proxy_sha256": SHA,
        "push_proxy_apple": [token_entry(files), cert_entry(files)],
        "push_proxy_android": [
            {"type": "android_rn", "service_account_file": str(files["fcm"])},
            {"type": "android", "service_account_file": str(files["fcm_beta"])},
        ],
        **overrides,
    }
    settings = settings_from_data("push1", ("push_proxies",), data)
    assert settings.eas is not None
    return settings.eas


def test_credentials_dir_is_the_documented_one() -> None:
    assert CREDENTIALS_DIR == CREDS


def test_the_proxy_listens_on_loopback_only(files: dict[str, Path]) -> None:
    assert proxy_config(eas(files))["ListenAddress"] == "127.0.0.1:8066"
    config = proxy_config(eas(files, push_proxy_listen_port=9066))
    assert config["ListenAddress"] == "127.0.0.1:9066"


def test_settings_values_reach_the_config(files: dict[str, Path]) -> None:
    config = proxy_config(
        eas(
            files,
            push_proxy_throttle_per_sec=50,
            push_proxy_throttle_memory_store_size=1000,
            push_proxy_metrics=True,
            push_proxy_log_format="json",
            push_proxy_send_timeout_sec=20,
            push_proxy_retry_timeout_sec=5,
        )
    )
    assert config["ThrottlePerSec"] == 50
    assert config["ThrottleMemoryStoreSize"] == 1000
    assert config["ThrottleVaryByHeader"] == "X-Forwarded-For"
    assert config["EnableMetrics"] is True
    assert config["LogFormat"] == "json"
    assert (config["SendTimeoutSec"], config["RetryTimeoutSec"]) == (20, 5)
    assert config["EnableConsoleLog"] is True and config["EnableFileLog"] is False


def test_retry_timeout_is_capped_at_the_send_timeout(files: dict[str, Path]) -> None:
    # the settings refuse a longer retry; the config still caps one, as the proxy does
    settings = dataclasses.replace(eas(files), send_timeout_sec=20, retry_timeout_sec=120)
    config = proxy_config(settings)
    assert config["SendTimeoutSec"] == 20
    assert config["RetryTimeoutSec"] == 20


def test_a_token_key_entry_points_at_its_p8_and_has_no_certificate(
    files: dict[str, Path],
) -> None:
    token = proxy_config(eas(files))["ApplePushSettings"][0]
    assert token == {
        "Type": "apple_rn",
        "ApplePushUseDevelopment": False,
        "ApplePushTopic": "com.example.mattermost",
        "ApplePushCertPrivate": "",
        "ApplePushCertPassword": "",
        "AppleAuthKeyFile": f"{CREDS}/apple_rn.p8",
        "AppleAuthKeyID": "ABCDE12345",
        "AppleTeamID": "TEAM123456",
    }


def test_a_certificate_entry_points_at_its_pem_with_the_password_from_its_secret(
    files: dict[str, Path],
) -> None:
    cert = proxy_config(eas(files))["ApplePushSettings"][1]
    assert cert == {
        "Type": "apple",
        "ApplePushUseDevelopment": True,
        "ApplePushTopic": "com.example.classic",
        "ApplePushCertPrivate": f"{CREDS}/apple.pem",
        # read from certificate_password_file, trailing newline stripped
        "ApplePushCertPassword": APNS_PASSWORD,
        "AppleAuthKeyFile": "",
        "AppleAuthKeyID": "",
        "AppleTeamID": "",
    }


def test_a_certificate_without_password_file_has_an_empty_password(
    files: dict[str, Path],
) -> None:
    files["pem"].write_bytes(apns_pem(certificate(rsa_key(), uid=None), password=None))
    entry = cert_entry(files, certificate_password_file=None)
    config = proxy_config(eas(files, push_proxy_apple=[entry]))
    assert config["ApplePushSettings"][0]["ApplePushCertPassword"] == ""
    assert config["ApplePushSettings"][0]["ApplePushCertPrivate"] == f"{CREDS}/apple.pem"


def test_a_certificate_password_from_the_environment(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMPUSH_TEST_APNS_PASSWORD", APNS_PASSWORD)
    files["password"].write_text("not the password\n")  # the environment wins
    entry = cert_entry(files, certificate_password_file="env:MMPUSH_TEST_APNS_PASSWORD")
    config = proxy_config(eas(files, push_proxy_apple=[entry]))
    assert config["ApplePushSettings"][0]["ApplePushCertPassword"] == APNS_PASSWORD


def test_android_entries_point_at_their_service_account_file(files: dict[str, Path]) -> None:
    android = proxy_config(eas(files))["AndroidPushSettings"]
    assert android == [
        {
            "Type": "android_rn",
            "AndroidApiKey": "",
            "ServiceFileLocation": f"{CREDS}/android_rn.json",
        },
        {
            "Type": "android",
            "AndroidApiKey": "",
            "ServiceFileLocation": f"{CREDS}/android.json",
        },
    ]


def test_no_credentials_give_empty_lists(files: dict[str, Path]) -> None:
    config = proxy_config(eas(files, push_proxy_apple=[], push_proxy_android=[]))
    assert config["ApplePushSettings"] == [] and config["AndroidPushSettings"] == []
    assert credentials(eas(files, push_proxy_apple=[], push_proxy_android=[])) == []


def test_the_config_is_json_and_holds_no_credential_file_content(files: dict[str, Path]) -> None:
    text = json.dumps(proxy_config(eas(files)))
    for name in ("p8", "pem", "fcm", "fcm_beta"):
        lines = key_lines(files[name])
        assert len(lines) >= 3 and not any(line in text for line in lines)


def test_credentials_paths_are_unique_per_type_and_carry_their_secret(
    files: dict[str, Path],
) -> None:
    placed = {c.path: c.secret.content for c in credentials(eas(files))}
    assert placed == {
        f"{CREDS}/apple_rn.p8": files["p8"].read_bytes(),
        f"{CREDS}/apple.pem": files["pem"].read_bytes(),
        f"{CREDS}/android_rn.json": files["fcm"].read_bytes(),
        f"{CREDS}/android.json": files["fcm_beta"].read_bytes(),
    }
    assert len(credentials(eas(files))) == len(placed)
    assert all(c.path.startswith(f"{CREDS}/") for c in credentials(eas(files)))


def test_every_file_the_config_names_is_a_placed_credential(files: dict[str, Path]) -> None:
    settings = eas(files)
    config = proxy_config(settings)
    named = {
        entry[field]
        for entry in config["ApplePushSettings"]
        for field in ("ApplePushCertPrivate", "AppleAuthKeyFile")
        if entry[field]
    } | {entry["ServiceFileLocation"] for entry in config["AndroidPushSettings"]}
    assert named == {c.path for c in credentials(settings)}


def test_the_certificate_password_is_not_placed_as_a_file(files: dict[str, Path]) -> None:
    contents = [c.secret.content for c in credentials(eas(files))]
    assert APNS_PASSWORD.encode() + b"\n" not in contents
    assert not any(APNS_PASSWORD.encode() in content for content in contents)


def test_two_apple_entries_of_the_same_type_are_refused(files: dict[str, Path]) -> None:
    entries = [token_entry(files), token_entry(files, topic="com.example.other")]
    with pytest.raises(SettingsError):
        eas(files, push_proxy_apple=entries)
