"""The Mattermost server emulator: push shapes, logging, file configuration, API basics.

Each test runs the emulator as a subprocess on 127.0.0.1 with a free port and a temp data dir,
pushing to a push proxy emulator (plain HTTP) or an HPNS emulator (HTTPS, throwaway CA).
Pushes are asynchronous, as in the real server: tests wait for them (bounded) after the post.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.unit.emulator_helpers import (
    MattermostEmulator,
    PushProxy,
    hpns_process,
    push_proxy_config,
    refused_mattermost_start,
    running_mattermost,
    running_push_proxy,
    write_mattermost_config,
)

DEVICE_TOKEN = "63c06ca8e3949ca7e5996c31fcf07ecb36c658a3e7c2c227a4af949cc4777a87"
DEVICE_ID = f"apple_rn-v2:{DEVICE_TOKEN}"
POST_TEXT = "Hello from accounta, secret-words-42"
LICENSE = {"id": "lic0001", "sku_name": "Enterprise", "sku_short_name": "enterprise"}


@pytest.fixture(scope="module")
def push_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushProxy]:
    """A push proxy emulator with apple_rn and android_rn clients."""
    root = tmp_path_factory.mktemp("push-proxy")
    port = h.free_port()
    with running_push_proxy(root, port, push_proxy_config(port, root)) as proxy:
        yield proxy


@contextlib.contextmanager
def mattermost(
    workdir: Path,
    push_server: str,
    env: dict[str, str] | None = None,
    license_: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[MattermostEmulator]:
    """The emulator on its config.json (``--config``); ``license_`` becomes its license.json."""
    port = h.free_port()
    config = write_mattermost_config(workdir / "config.json", port, push_server, **settings)
    if license_ is not None:
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        (workdir / "data" / "license.json").write_text(json.dumps(license_))
    with running_mattermost(workdir, port, "--config", str(config), env=env) as mm:
        yield mm


def send_dm(
    mm: MattermostEmulator, text: str = POST_TEXT, device_id: str = DEVICE_ID
) -> dict[str, Any]:
    """The mobile flow: B logs in and registers a device; A opens a DM with B and posts."""
    token_a, user_a = mm.login("accounta")
    token_b, user_b = mm.login("accountb")
    status, answer = mm.call(
        "PUT", "/api/v4/users/sessions/device", token_b, {"device_id": device_id}
    )
    assert (status, answer) == (200, {"status": "OK"})
    status, channel = mm.call(
        "POST", "/api/v4/channels/direct", token_a, [user_a["id"], user_b["id"]]
    )
    assert status == 201
    assert channel["type"] == "D"
    assert channel["name"] == "__".join(sorted([user_a["id"], user_b["id"]]))
    status, post = mm.call(
        "POST", "/api/v4/posts", token_a, {"channel_id": channel["id"], "message": text}
    )
    assert status == 201, post
    assert post["message"] == text
    return {"user_a": user_a, "user_b": user_b, "channel": channel, "post": post}


def deliveries_for(proxy: PushProxy, post_id: str) -> list[dict[str, Any]]:
    return [record for record in proxy.deliveries() if record.get("post_id") == post_id]


def wait_delivery(proxy: PushProxy, post_id: str) -> dict[str, Any]:
    """The one push the proxy delivered for ``post_id`` (waited for: pushes are async)."""
    [push] = h.wait_for(lambda: deliveries_for(proxy, post_id), what=f"a push for {post_id}")
    return push


def wait_notification(mm: MattermostEmulator, msg: str) -> list[dict[str, Any]]:
    return h.wait_for(lambda: mm.notification_lines(msg), what=f"{msg!r} in notifications.log")


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("contents", ["full", "generic", "generic_no_channel", "id_loaded"])
def test_direct_message_push_shape_follows_push_notification_contents(
    tmp_path: Path, push_proxy: PushProxy, contents: str
) -> None:
    # id_loaded needs a licence (BuildPushNotificationMessage); give it one here.
    with mattermost(
        tmp_path,
        push_proxy.url,
        license_=LICENSE if contents == "id_loaded" else None,
        **{"EmailSettings.PushNotificationContents": contents},
    ) as mm:
        flow = send_dm(mm)
        push = wait_delivery(push_proxy, flow["post"]["id"])
    user_a, user_b, channel = flow["user_a"], flow["user_b"], flow["channel"]

    # Common to every shape: addressed to B's device via the apple_rn client.
    assert push["platform"] == "apple_rn"
    assert push["platform_raw"] == "apple_rn-v2"
    assert push["device_id"] == DEVICE_TOKEN
    assert push["type"] == "message"
    assert push["version"] == "v2"
    assert push["category"] == "CAN_REPLY"
    assert push["channel_id"] == channel["id"]
    assert len(push["server_id"]) == 26
    assert len(push["ack_id"]) == 26
    assert push["badge"] >= 1

    if contents == "full":  # a DM's full message is the text alone; the title is the sender
        assert push["message"] == POST_TEXT
        assert push["channel_name"] == "@accounta"
        assert push["sender_name"] == "@accounta"
        assert push["sender_id"] == user_a["id"]
        assert push["is_id_loaded"] is False
    elif contents in ("generic", "generic_no_channel"):
        assert push["message"] == "sent you a message."
        assert push["sender_name"] == "@accounta"
        assert push["sender_id"] == user_a["id"]
        # A DM keeps its channel name even with generic_no_channel (buildFull...Message).
        assert push["channel_name"] == "@accounta"
    else:
        assert push["message"] == "You've received a new message."
        assert push["is_id_loaded"] is True
        assert push["sender_name"] is None
        assert push["channel_name"] is None
        # buildIdLoadedPushNotificationMessage sets SenderId to the *receiving* user.
        assert push["sender_id"] == user_b["id"]
    if contents != "full":
        # Nothing of the post's text may leave the server.
        assert "secret-words-42" not in json.dumps(push)


def test_debug_line_logged_at_debug_level_in_json_and_plain_format(
    tmp_path: Path, push_proxy: PushProxy
) -> None:
    expected = f"Sending push notification to {DEVICE_TOKEN} wi msg of 'Hello'"
    with mattermost(tmp_path / "json", push_proxy.url, **{"LogSettings.FileLevel": "DEBUG"}) as mm:
        send_dm(mm, text="Hello")
        [line] = h.wait_for(
            lambda: [line for line in mm.log_lines() if line["msg"] == expected],
            what="the troubleshooting line",
        )
    assert line["level"] == "debug"
    assert set(line) >= {"timestamp", "level", "msg", "caller"}
    assert line["timestamp"].endswith(" Z")

    with mattermost(
        tmp_path / "plain",
        push_proxy.url,
        **{"LogSettings.FileLevel": "DEBUG", "LogSettings.FileJson": False},
    ) as mm:
        send_dm(mm, text="Hello")
        [plain] = h.wait_for(
            lambda: [line for line in mm.log_text().splitlines() if "wi msg of" in line],
            what="the plain troubleshooting line",
        )
    assert plain.endswith(f"] [DEBG] {expected}")
    assert plain.startswith("[20")


def test_debug_line_absent_at_info_level(tmp_path: Path, push_proxy: PushProxy) -> None:
    with mattermost(tmp_path, push_proxy.url, **{"LogSettings.FileLevel": "INFO"}) as mm:
        flow = send_dm(mm, text="Hello")
        wait_delivery(push_proxy, flow["post"]["id"])  # the push was still sent
        text = mm.log_text()
    assert "wi msg of" not in text
    assert '"level": "debug"' not in text
    assert "Push notification settings" in text  # the start-up INFO line


def test_environment_override_wins_over_config_file(tmp_path: Path, push_proxy: PushProxy) -> None:
    dead = f"http://127.0.0.1:{h.free_port()}"
    env = {
        "MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER": push_proxy.url,
        "MM_EMAILSETTINGS_PUSHNOTIFICATIONCONTENTS": "generic",
        "MM_LOGSETTINGS_FILELEVEL": "DEBUG",
    }
    with mattermost(
        tmp_path, dead, env=env, **{"EmailSettings.PushNotificationContents": "full"}
    ) as mm:
        flow = send_dm(mm)
        push = wait_delivery(push_proxy, flow["post"]["id"])
        text = mm.log_text()
        notifications = mm.notification_lines()
    assert push["message"] == "sent you a message."
    assert "wi msg of 'sent you a message.'" in text
    assert not [line for line in notifications if line["msg"] == "Failed to send to push proxy"]
    # The override is not written back: config.json still has the file's value.
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["EmailSettings"]["PushNotificationServer"] == dead


def test_invalid_config_json_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"ServiceSettings": {"ListenAddress": ":8065",}')
    stderr = refused_mattermost_start(tmp_path, "-c", str(config))
    assert str(config) in stderr
    assert "parsing error at line 1" in stderr
    assert not (tmp_path / "data").exists()
    assert config.read_text() == '{"ServiceSettings": {"ListenAddress": ":8065",}'


def test_a_setting_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    config = write_mattermost_config(
        tmp_path / "config.json",
        h.free_port(),
        "",
        **{"EmailSettings.SendPushNotifications": "yes"},
    )
    stderr = refused_mattermost_start(tmp_path, "--config", str(config))
    assert "cannot unmarshal string" in stderr
    assert "EmailSettings.SendPushNotifications of type bool" in stderr


def test_a_log_level_that_is_not_standard_is_refused(tmp_path: Path) -> None:
    config = write_mattermost_config(
        tmp_path / "config.json",
        h.free_port(),
        "",
        **{"NotificationLogSettings.FileLevel": "LOUD"},
    )
    stderr = refused_mattermost_start(tmp_path, "--config", str(config))
    assert "NotificationLogSettings.FileLevel" in stderr
    assert "loud is not a standard level" in stderr


def test_an_unknown_push_contents_value_is_accepted_and_sends_generic(
    tmp_path: Path, push_proxy: PushProxy
) -> None:
    # model.Config.IsValid does not check PushNotificationContents: the real server starts,
    # and any value but full/id_loaded builds the generic message.
    with mattermost(
        tmp_path, push_proxy.url, **{"EmailSettings.PushNotificationContents": "everything"}
    ) as mm:
        flow = send_dm(mm)
        push = wait_delivery(push_proxy, flow["post"]["id"])
    assert push["message"] == "sent you a message."
    assert "secret-words-42" not in json.dumps(push)


def test_push_failure_is_logged_in_notifications_log_but_post_succeeds(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{h.free_port()}"
    with mattermost(tmp_path, dead) as mm:
        flow = send_dm(mm)
        [error] = wait_notification(mm, "Failed to send to push proxy")
        main_log = mm.log_text()
    assert flow["post"]["id"]
    assert error["level"] == "error"
    assert error["type"] == "push"
    assert error["status"] == "not_sent"
    assert error["reason"] == "push_proxy_send_error"
    assert error["push_type"] == "message"
    assert error["user_id"] == flow["user_b"]["id"]
    assert error["device_id"] == DEVICE_TOKEN
    assert dead in error["error"]
    assert "Failed to send to push proxy" not in main_log  # the real server logs it only there


def test_push_proxy_fail_answer_is_logged(tmp_path: Path, push_proxy: PushProxy) -> None:
    # android (not android_rn) has no initialised client on the proxy: it answers FAIL.
    with mattermost(tmp_path, push_proxy.url) as mm:
        send_dm(mm, device_id="android-v2:device-token-1")
        [error] = wait_notification(mm, "Failed to send to push proxy")
    assert error["reason"] == "push_proxy_send_error"
    assert "missing platform property" in error["error"]


def test_no_push_when_push_notifications_are_off(tmp_path: Path, push_proxy: PushProxy) -> None:
    with mattermost(
        tmp_path,
        push_proxy.url,
        **{
            "EmailSettings.SendPushNotifications": False,
            "NotificationLogSettings.FileLevel": "DEBUG",
        },
    ) as mm:
        flow = send_dm(mm)
        # canSendPushNotifications runs while the post is made: its line is there at the 201.
        [line] = mm.notification_lines("Push notifications are disabled - server config")
    assert (line["status"], line["reason"]) == ("not_sent", "push_disabled")
    assert deliveries_for(push_proxy, flow["post"]["id"]) == []


def test_https_push_to_hpns_verifies_against_trust_store(tmp_path: Path) -> None:
    pki = h.make_test_pki(tmp_path / "pki", ["localhost", "push.mattermost.com"], ["127.0.0.1"])
    hpns, https_port, _ = hpns_process(
        tmp_path, pki.server_cert, pki.server_key, tmp_path / "hpns", tmp_path / "hpns-out"
    )
    push_server = f"https://localhost:{https_port}/"  # trailing slash is trimmed
    received_path = tmp_path / "hpns" / "received.jsonl"
    with h.running(hpns):
        hpns.wait_port(https_port)
        # The test CA in the trust store (SSL_CERT_FILE): delivered, with SNI and Host.
        with mattermost(
            tmp_path / "trusted", push_server, env={"SSL_CERT_FILE": str(pki.ca_cert)}
        ) as mm:
            flow = send_dm(mm)
            h.wait_for(lambda: h.read_jsonl(received_path), what="the message push")
            token_b, _ = mm.login("accountb")
            # The test push is sent before the answer (SendTestPushNotification is synchronous).
            status, answer = mm.call("POST", "/api/v4/notifications/test", token_b)
            assert (status, answer) == (200, {"status": "OK"})
        # A CA outside the trust store: the push fails on verification, the post does not.
        other = h.make_test_pki(tmp_path / "other", ["localhost"])
        with mattermost(
            tmp_path / "untrusted", push_server, env={"SSL_CERT_FILE": str(other.ca_cert)}
        ) as mm:
            send_dm(mm)
            [failure] = wait_notification(mm, "Failed to send to push proxy")
    received = h.read_jsonl(received_path)
    assert [entry["path"] for entry in received] == ["/api/v1/send_push"] * 2
    message, test = (entry["body"] for entry in received)
    assert message["post_id"] == flow["post"]["id"]
    assert message["platform"] == "apple_rn-v2"
    assert test["type"] == "test"
    assert test["device_id"] == DEVICE_TOKEN
    assert "message" not in test
    assert received[0]["sni"] == "localhost"
    assert received[0]["host"] == f"localhost:{https_port}"
    assert "CERTIFICATE_VERIFY_FAILED" in failure["error"]


def test_api_auth_and_login_errors(tmp_path: Path, push_proxy: PushProxy) -> None:
    with mattermost(tmp_path, push_proxy.url) as mm:
        status, _, raw = h.http_request(
            "POST", f"{mm.url}/api/v4/users/login", {"login_id": "accounta", "password": "nope"}
        )
        assert status == 401
        assert json.loads(raw)["id"] == "api.user.login.invalid_credentials_email_username"
        assert h.http_request("GET", f"{mm.url}/api/v4/users/me")[0] == 401
        assert mm.call("GET", "/api/v4/users/me", "not-a-token")[0] == 401
        status, _, raw = h.http_request("GET", f"{mm.url}/api/v4/system/ping")
        assert (status, json.loads(raw)["status"]) == (200, "OK")

        token, user = mm.login("accounta@mm.lab.test")
        assert user["username"] == "accounta"
        assert "password" not in user
        assert len(user["id"]) == 26 and user["id"].isalnum() and user["id"].islower()
        status, me = mm.call("GET", "/api/v4/users/me", token)
        assert (status, me["id"]) == (200, user["id"])
        status, _ = mm.call(
            "POST", "/api/v4/posts", token, {"channel_id": "x" * 26, "message": "m"}
        )
        assert status == 403
        status, _ = mm.call("GET", "/api/v4/config/client", token)
        assert status == 501  # format=old is required
        status, client = mm.call("GET", "/api/v4/config/client?format=old", token)
        assert (status, client["SendPushNotifications"]) == (200, "true")
    db = json.loads((tmp_path / "data" / "emulator-db.json").read_text())
    assert sorted(u["username"] for u in db["users"].values()) == [
        "accounta",
        "accountb",
        "sysadmin",
    ]
    [admin] = [u for u in db["users"].values() if u["username"] == "sysadmin"]
    assert admin["roles"] == "system_user system_admin"


def test_users_and_sessions_survive_a_restart(tmp_path: Path, push_proxy: PushProxy) -> None:
    with mattermost(tmp_path, push_proxy.url) as mm:
        token_b, user_b = mm.login("accountb", device_id="android_rn-v2:survivor")
        token_a, user_a = mm.login("accounta")
    with mattermost(tmp_path, push_proxy.url) as mm:
        status, me = mm.call("GET", "/api/v4/users/me", token_b)
        assert (status, me["id"]) == (200, user_b["id"])
        _, channel = mm.call(
            "POST", "/api/v4/channels/direct", token_a, [user_a["id"], user_b["id"]]
        )
        _, post = mm.call(
            "POST",
            "/api/v4/posts",
            token_a,
            {"channel_id": channel["id"], "message": "after restart"},
        )
        push = wait_delivery(push_proxy, post["id"])
    assert (push["platform"], push["device_id"]) == ("android_rn", "survivor")
