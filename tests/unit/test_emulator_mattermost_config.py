"""The Mattermost server emulator's configuration: where it comes from (--config, MM_CONFIG,
config.json), environment overrides, the config API over HTTP (session or personal access
token) and over the local-mode socket, patch semantics, persistence and live application."""

from __future__ import annotations

import contextlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.unit.emulator_helpers import (
    FakePushService,
    MattermostEmulator,
    local_mode_answers,
    mattermost_config,
    refused_mattermost_start,
    running_mattermost,
    short_temp_dir,
    write_mattermost_config,
)

FAKE = "*" * 32
DEVICE_ID = "apple_rn-v2:63c06ca8e3949ca7e5996c31fcf07ecb36c658a3e7c2c227a4af949cc4777a87"


@pytest.fixture
def push() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service


@contextlib.contextmanager
def file_mattermost(
    workdir: Path,
    push_server: str = "",
    env: dict[str, str] | None = None,
    local: bool = False,
    **settings: Any,
) -> Iterator[MattermostEmulator]:
    """The emulator on workdir/config.json; with ``local``, local mode on a short socket path."""
    port = h.free_port()
    with short_temp_dir() as sockets:
        socket_path = sockets / "mm.sock" if local else None
        if local:
            settings["ServiceSettings.EnableLocalMode"] = True
            settings["ServiceSettings.LocalModeSocketLocation"] = str(socket_path)
        config = write_mattermost_config(workdir / "config.json", port, push_server, **settings)
        with running_mattermost(
            workdir, port, "--config", str(config), env=env, socket_path=socket_path
        ) as mm:
            if socket_path is not None:
                h.wait_for(lambda: local_mode_answers(socket_path), what="the local-mode socket")
            yield mm


def dm_push(mm: MattermostEmulator, push: FakePushService, text: str = "hi") -> dict[str, Any]:
    """accounta sends accountb (phone registered) a DM; the push it produced (waited for)."""
    token_a, user_a = mm.login("accounta")
    _, user_b = mm.login("accountb", device_id=DEVICE_ID)
    _, channel = mm.call("POST", "/api/v4/channels/direct", token_a, [user_a["id"], user_b["id"]])
    status, post = mm.call(
        "POST", "/api/v4/posts", token_a, {"channel_id": channel["id"], "message": text}
    )
    assert status == 201, post
    [body] = h.wait_for(lambda: push.pushes(post["id"]), what="the push")
    return body


# ---- where the configuration comes from ----------------------------------------------------


def test_config_flag_wins_over_mm_config_which_wins_over_the_default_file(
    tmp_path: Path, push: FakePushService
) -> None:
    port = h.free_port()
    (tmp_path / "config").mkdir()
    default = tmp_path / "config" / "config.json"
    default.write_text(json.dumps(mattermost_config(port, "http://default.invalid")))
    from_env = tmp_path / "env.json"
    from_env.write_text(json.dumps(mattermost_config(port, "http://env.invalid")))
    from_flag = tmp_path / "flag.json"
    from_flag.write_text(json.dumps(mattermost_config(port, push.url)))

    cases = [
        ((), {}, "http://default.invalid"),  # ./config/config.json from the working directory
        ((), {"MM_CONFIG": str(from_env)}, "http://env.invalid"),
        (("-c", str(from_flag)), {"MM_CONFIG": str(from_env)}, push.url),
    ]
    for args, env, expected in cases:
        with running_mattermost(tmp_path, port, *args, env=env) as mm:
            assert mm.config_value("EmailSettings.PushNotificationServer") == expected
            sources = [line["source"] for line in mm.log_lines() if line["msg"] == "Loaded config"]
            assert sources[-1].startswith("file://")


def test_the_file_is_rewritten_at_start_in_the_servers_format_without_overrides(
    tmp_path: Path,
) -> None:
    port = h.free_port()
    config = tmp_path / "config.json"
    data = mattermost_config(port, "http://push.invalid/?a=1&b=2")
    del data["EmailSettings"]["PushNotificationBuffer"]  # a setting the file lacks
    config.write_text(json.dumps(data))  # compact, one line
    config.chmod(0o640)
    env = {"MM_EMAILSETTINGS_PUSHNOTIFICATIONCONTENTS": "generic"}
    with running_mattermost(tmp_path, port, "--config", str(config), env=env):
        text = config.read_text()
    stored = json.loads(text)
    assert text.startswith('{\n    "ServiceSettings": {\n        "SiteURL"')  # MarshalIndent
    assert not text.endswith("\n")
    assert "?a=1\\u0026b=2" in text  # Go escapes & < > in strings
    assert stored["EmailSettings"]["PushNotificationBuffer"] == 1000  # default filled in
    assert stored["EmailSettings"]["PushNotificationContents"] == "full"  # env not stored
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # mode kept (atomic replace)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".config.json")] == []


def test_a_missing_config_file_is_created_with_defaults(tmp_path: Path) -> None:
    port = h.free_port()
    config = tmp_path / "new.json"
    env = {"MM_SERVICESETTINGS_LISTENADDRESS": f"127.0.0.1:{port}"}
    with running_mattermost(tmp_path, port, "--config", str(config), env=env) as mm:
        assert mm.config_value("EmailSettings.SendPushNotifications") is False
    stored = json.loads(config.read_text())
    assert stored["ServiceSettings"]["ListenAddress"] == ":8065"  # the override is not stored
    assert stored["EmailSettings"]["PushNotificationServer"] == ""


def test_an_invalid_listen_address_is_refused(tmp_path: Path) -> None:
    config = write_mattermost_config(tmp_path / "config.json", 1, "")
    data = json.loads(config.read_text())
    data["ServiceSettings"]["ListenAddress"] = "8065"
    config.write_text(json.dumps(data))
    stderr = refused_mattermost_start(tmp_path, "--config", str(config))
    assert "invalid config" in stderr and "listen address" in stderr


# ---- environment overrides ------------------------------------------------------------------


def test_environment_overrides_are_effective_and_reported(tmp_path: Path) -> None:
    env = {
        "MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER": "https://push.example.invalid",
        "mm_emailsettings_sendpushnotifications": "f",  # upper-cased, Go booleans
        "MM_EMAILSETTINGS_PUSHNOTIFICATIONBUFFER": "many",  # not an int: ignored
        "MM_NOSUCHSECTION_KEY": "x",
    }
    with file_mattermost(tmp_path, "http://file.invalid", env=env) as mm:
        token = mm.admin_token()
        status, config = mm.call("GET", "/api/v4/config", token)
        assert status == 200
        status, overrides = mm.call("GET", "/api/v4/config/environment", token)
        assert status == 200
        token_a, _ = mm.login("accounta")
        status, overrides_a = mm.call("GET", "/api/v4/config/environment", token_a)
    email = config["EmailSettings"]
    assert email["PushNotificationServer"] == "https://push.example.invalid"
    assert email["SendPushNotifications"] is False
    assert email["PushNotificationBuffer"] == 1000
    assert overrides == {
        "EmailSettings": {
            "PushNotificationServer": True,
            "SendPushNotifications": True,
            "PushNotificationBuffer": True,
        }
    }
    assert (status, overrides_a) == (200, {})  # nothing the caller may read


# ---- the config API over HTTP -----------------------------------------------------------------


def test_config_api_needs_a_system_admin(tmp_path: Path) -> None:
    with file_mattermost(tmp_path) as mm:
        status, error = mm.call("GET", "/api/v4/config")
        assert status == 401
        assert set(error) == {"id", "message", "detailed_error", "request_id", "status_code"}
        assert (error["id"], error["status_code"]) == ("api.context.session_expired.app_error", 401)
        assert mm.call("PUT", "/api/v4/config/patch", "bogus", {})[0] == 401
        token_a, _ = mm.login("accounta")
        for method, path, body in (
            ("GET", "/api/v4/config", None),
            ("PUT", "/api/v4/config/patch", {"EmailSettings": {"SendPushNotifications": False}}),
            ("POST", "/api/v4/config/reload", None),
        ):
            status, error = mm.call(method, path, token_a, body)
            assert (status, error["id"]) == (403, "api.context.permissions.app_error"), path
        status, config = mm.call("GET", "/api/v4/config", mm.admin_token())
    assert status == 200
    assert config["EmailSettings"]["SendPushNotifications"] is True
    # Secrets are masked (Config.Sanitize), empty optional ones left empty.
    assert config["SqlSettings"]["DataSource"] == FAKE
    assert config["SqlSettings"]["AtRestEncryptKey"] == FAKE
    assert config["FileSettings"]["PublicLinkSalt"] == FAKE
    assert config["EmailSettings"]["SMTPPassword"] == ""


def test_personal_access_tokens(tmp_path: Path) -> None:
    with file_mattermost(tmp_path) as mm:
        admin = mm.admin_token()
        body = {"description": "mmpush deploy"}
        status, error = mm.call("POST", "/api/v4/users/me/tokens", admin, body)
        assert (status, error["id"]) == (501, "app.user_access_token.disabled")
        status, config = mm.call(
            "PUT",
            "/api/v4/config/patch",
            admin,
            {"ServiceSettings": {"EnableUserAccessTokens": True}},
        )
        assert status == 200, config
        status, error = mm.call("POST", "/api/v4/users/me/tokens", admin, {"description": ""})
        assert (status, error["id"]) == (400, "api.context.invalid_body_param.app_error")
        token_a, user_a = mm.login("accounta")
        status, error = mm.call("POST", f"/api/v4/users/{user_a['id']}/tokens", token_a, body)
        assert (status, error["id"]) == (403, "api.context.permissions.app_error")

        status, created = mm.call("POST", "/api/v4/users/me/tokens", admin, body)
        assert status == 200, created
        assert created["description"] == "mmpush deploy" and created["is_active"] is True
        pat = created["token"]
        status, config = mm.call("GET", "/api/v4/config", pat)
        assert (status, config["ServiceSettings"]["EnableUserAccessTokens"]) == (200, True)

        # Turning tokens off makes every token invalid at once.
        status, _ = mm.call(
            "PUT",
            "/api/v4/config/patch",
            pat,
            {"ServiceSettings": {"EnableUserAccessTokens": False}},
        )
        assert status == 200
        assert mm.call("GET", "/api/v4/config", pat)[0] == 401
        log = mm.log_text()
    assert pat not in log


def test_patch_changes_only_what_the_body_names_and_persists_it(tmp_path: Path) -> None:
    with file_mattermost(tmp_path, "http://before.invalid") as mm:
        before = json.loads((tmp_path / "config.json").read_text())
        status, answer = mm.call(
            "PUT",
            "/api/v4/config/patch",
            mm.admin_token(),
            {
                "emailsettings": {  # keys match case-insensitively, as Go's decoder does
                    "pushNotificationServer": "https://after.invalid",
                    "PushNotificationContents": None,  # null: not part of the patch
                },
                "TeamSettings": {"SiteName": "Patched"},
            },
        )
        assert status == 200, answer
        after = json.loads((tmp_path / "config.json").read_text())
    assert answer["EmailSettings"]["PushNotificationServer"] == "https://after.invalid"
    assert answer["SqlSettings"]["DataSource"] == FAKE  # the answer is sanitised
    assert after["EmailSettings"]["PushNotificationServer"] == "https://after.invalid"
    assert after["TeamSettings"]["SiteName"] == "Patched"
    for section, values in before.items():
        for key, value in values.items() if isinstance(values, dict) else ():
            if (section, key) not in {
                ("EmailSettings", "PushNotificationServer"),
                ("TeamSettings", "SiteName"),
            }:
                assert after[section][key] == value, (section, key)


def test_patch_refuses_bad_bodies_and_invalid_configs_and_changes_nothing(tmp_path: Path) -> None:
    with file_mattermost(tmp_path, "http://before.invalid") as mm:
        admin = mm.admin_token()
        before = (tmp_path / "config.json").read_text()
        cases = [
            ({"EmailSettings": {"SendPushNotifications": "yes"}}, 400, "invalid_body_param"),
            (["not", "an", "object"], 400, "invalid_body_param"),
            ({"ServiceSettings": {"ListenAddress": "nowhere"}}, 400, "listen_address"),
            ({"ServiceSettings": {"SiteURL": "http://mm.lab.test"}}, 200, ""),
            ({"ServiceSettings": {"SiteURL": ""}}, 400, "clear_siteurl"),
            ({"PluginSettings": {"EnableUploads": True}}, 403, "not_allowed_security"),
        ]
        for body, expected, error_part in cases:
            status, answer = mm.call("PUT", "/api/v4/config/patch", admin, body)
            assert status == expected, (body, answer)
            if error_part:
                assert error_part in answer["id"], answer
                assert (tmp_path / "config.json").read_text() == before
            else:
                before = (tmp_path / "config.json").read_text()
        assert mm.config_value("EmailSettings.PushNotificationServer") == "http://before.invalid"


def test_a_patch_applies_at_once_without_a_restart(tmp_path: Path) -> None:
    with FakePushService() as first, FakePushService() as second:
        with file_mattermost(tmp_path, first.url) as mm:
            dm_push(mm, first)
            status, _ = mm.call(
                "PUT",
                "/api/v4/config/patch",
                mm.admin_token(),
                {"EmailSettings": {"PushNotificationServer": second.url + "/"}},
            )
            assert status == 200
            pid = mm.process.process.pid if mm.process.process else None
            body = dm_push(mm, second, text="after the patch")
            assert mm.process.process is not None and mm.process.process.pid == pid
        assert body["message"] == "after the patch"


def test_a_patched_setting_that_the_environment_overrides_does_not_change(tmp_path: Path) -> None:
    env = {"MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER": "https://env.invalid"}
    with file_mattermost(tmp_path, "http://file.invalid", env=env) as mm:
        status, answer = mm.call(
            "PUT",
            "/api/v4/config/patch",
            mm.admin_token(),
            {"EmailSettings": {"PushNotificationServer": "https://api.invalid"}},
        )
    assert status == 200
    assert answer["EmailSettings"]["PushNotificationServer"] == "https://env.invalid"
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["EmailSettings"]["PushNotificationServer"] == "http://file.invalid"


def test_put_config_replaces_and_keeps_masked_secrets(tmp_path: Path) -> None:
    with file_mattermost(tmp_path, "http://before.invalid") as mm:
        admin = mm.admin_token()
        status, config = mm.call("GET", "/api/v4/config", admin)
        config["EmailSettings"]["PushNotificationContents"] = "generic"
        status, answer = mm.call("PUT", "/api/v4/config", admin, config)
        assert status == 200, answer
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["EmailSettings"]["PushNotificationContents"] == "generic"
    # The masked values sent back are the real ones again (desanitize).
    assert stored["SqlSettings"]["DataSource"].startswith("postgres://mmuser:")
    assert stored["FileSettings"]["PublicLinkSalt"] != FAKE


def test_a_clustered_file_configuration_is_read_only(tmp_path: Path) -> None:
    settings = {"ClusterSettings.Enable": True, "ClusterSettings.ReadOnlyConfig": True}
    with file_mattermost(tmp_path, "http://before.invalid", **settings) as mm:
        status, error = mm.call(
            "PUT",
            "/api/v4/config/patch",
            mm.admin_token(),
            {"EmailSettings": {"PushNotificationServer": "https://after.invalid"}},
        )
    assert (status, error["id"]) == (403, "ent.cluster.save_config.error")


# ---- local mode -------------------------------------------------------------------------------


def test_local_mode_serves_the_config_api_without_authentication(tmp_path: Path) -> None:
    with file_mattermost(tmp_path, "http://before.invalid", local=True) as mm:
        assert mm.socket_path is not None
        socket_path = mm.socket_path
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        status, config = mm.local("GET", "/api/v4/config")
        assert (status, config["SqlSettings"]["DataSource"]) == (200, FAKE)
        status, answer = mm.local(
            "PUT",
            "/api/v4/config/patch",
            {"EmailSettings": {"PushNotificationServer": "https://local.invalid"}},
        )
        assert status == 200, answer
        assert answer["EmailSettings"]["PushNotificationServer"] == "https://local.invalid"
        assert mm.local("GET", "/api/v4/system/ping")[0] == 200
        status, error = mm.local("GET", "/api/v4/users/me")  # not a local-mode route
        assert (status, error["id"]) == (404, "api.context.404.app_error")
        status, _ = mm.local("POST", "/api/v4/config/reload")
        assert status == 200
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["EmailSettings"]["PushNotificationServer"] == "https://local.invalid"
    assert not socket_path.exists()  # removed when the server stops


def test_local_mode_off_means_no_socket(tmp_path: Path) -> None:
    with short_temp_dir() as sockets:
        socket_path = sockets / "mm.sock"
        settings = {"ServiceSettings.LocalModeSocketLocation": str(socket_path)}
        with file_mattermost(tmp_path, **settings) as mm:
            assert mm.call("GET", "/api/v4/system/ping")[0] == 200
            assert not socket_path.exists()


def test_local_mode_replaces_a_stale_socket_file(tmp_path: Path) -> None:
    with short_temp_dir() as sockets:
        socket_path = sockets / "mm.sock"
        socket_path.write_text("stale")
        port = h.free_port()
        settings = {
            "ServiceSettings.EnableLocalMode": True,
            "ServiceSettings.LocalModeSocketLocation": str(socket_path),
        }
        config = write_mattermost_config(tmp_path / "config.json", port, "", **settings)
        with running_mattermost(
            tmp_path, port, "--config", str(config), socket_path=socket_path
        ) as mm:
            h.wait_for(lambda: local_mode_answers(socket_path), what="the socket")
            assert stat.S_ISSOCK(socket_path.stat().st_mode)
            assert mm.local("GET", "/api/v4/config")[0] == 200


def test_the_mmapi_clients_read_and_patch_the_config(tmp_path: Path) -> None:
    from mmpush.mmapi import LocalModeClient, MattermostApiError, MattermostClient

    with file_mattermost(tmp_path, "http://before.invalid", local=True) as mm:
        assert mm.socket_path is not None
        local = LocalModeClient(str(mm.socket_path), timeout=10)
        answer = local.patch_config({"ServiceSettings": {"EnableUserAccessTokens": True}})
        assert answer["ServiceSettings"]["EnableUserAccessTokens"] is True

        client = MattermostClient(mm.url, timeout=10)
        session, _ = client.login("sysadmin")
        pat = client.create_access_token(session, "deploy")["token"]
        patched = client.patch_config(pat, {"EmailSettings": {"PushNotificationServer": "x:/y"}})
        assert patched["EmailSettings"]["PushNotificationServer"] == "x:/y"
        assert client.get_config(pat)["EmailSettings"]["PushNotificationServer"] == "x:/y"
        assert local.get_config()["EmailSettings"]["PushNotificationServer"] == "x:/y"
        assert client.get_environment_config(pat) == {}
        client.reload_config(pat)
        local.reload_config()

        user_token, user = client.login("accountb")
        assert client.set_status(user_token, user["id"], "dnd")["status"] == "dnd"
        assert client.get_status(user_token)["status"] == "dnd"
        with pytest.raises(MattermostApiError) as refused:
            client.get_config(user_token)
        with pytest.raises(MattermostApiError) as missing:
            local.call("GET", "/api/v4/users/me")
    assert (refused.value.status, refused.value.error_id) == (
        403,
        "api.context.permissions.app_error",
    )
    assert user_token not in str(refused.value)
    assert missing.value.status == 404
