"""The Mattermost server emulator: config handling, API, push shapes, logging.

Each test runs the emulator as a subprocess on 127.0.0.1 with a free port and a temp data dir,
pushing to a push proxy emulator (plain HTTP) or an HPNS emulator (HTTPS, throwaway CA).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.unit.emulator_helpers import (
    PushProxy,
    hpns_process,
    push_proxy_config,
    running_push_proxy,
)

DEVICE_TOKEN = "63c06ca8e3949ca7e5996c31fcf07ecb36c658a3e7c2c227a4af949cc4777a87"
DEVICE_ID = f"apple_rn-v2:{DEVICE_TOKEN}"
POST_TEXT = "Hello from accounta, secret-words-42"


@pytest.fixture(scope="module")
def push_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushProxy]:
    """A push proxy emulator with apple_rn and android_rn clients."""
    root = tmp_path_factory.mktemp("push-proxy")
    port = h.free_port()
    with running_push_proxy(root, port, push_proxy_config(port, root)) as proxy:
        yield proxy


@dataclass
class Mattermost:
    url: str
    process: h.EmulatorProcess
    workdir: Path

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "mattermost.log"

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def login(self, username: str, device_id: str | None = None) -> tuple[str, dict[str, Any]]:
        body = {"login_id": username, "password": "Password1!"}
        if device_id:
            body["device_id"] = device_id
        status, headers, raw = h.http_request("POST", f"{self.url}/api/v4/users/login", body)
        assert status == 200, raw
        return headers["Token"], json.loads(raw)

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        status, _, raw = h.http_request(
            method, self.url + path, body, {"Authorization": f"Bearer {token}"}
        )
        return status, json.loads(raw) if raw else None


def write_config(path: Path, port: int, push_server: str, **settings: Any) -> Path:
    """The shipped default config.json with the given overrides ("Section.Key": value)."""
    config = json.loads(h.MATTERMOST_DEFAULT_CONFIG.read_text())
    config["ServiceSettings"]["ListenAddress"] = f"127.0.0.1:{port}"
    config["EmailSettings"]["SendPushNotifications"] = True
    config["EmailSettings"]["PushNotificationServer"] = push_server
    config["LogSettings"]["ConsoleLevel"] = "ERROR"
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        config[section][key] = value
    path.write_text(json.dumps(config, indent=4))
    return path


@contextlib.contextmanager
def mattermost(
    workdir: Path, push_server: str, env: dict[str, str] | None = None, **settings: Any
) -> Iterator[Mattermost]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = h.free_port()
    config = write_config(workdir / "config.json", port, push_server, **settings)
    process = h.EmulatorProcess(
        h.python_argv(h.MATTERMOST_EMULATOR, "--config", str(config)),
        cwd=workdir,
        env=h.base_env(MM_EMULATOR_DATA_DIR=str(workdir / "data"), **(env or {})),
        log_dir=workdir / "out",
    )
    with h.running(process):
        process.wait_port(port)
        yield Mattermost(url=f"http://127.0.0.1:{port}", process=process, workdir=workdir)


def refused_config_stderr(workdir: Path, *args: str) -> str:
    """Run the emulator with ``args`` on a config it must refuse: it exits 1; its stderr."""
    process = h.EmulatorProcess(
        h.python_argv(h.MATTERMOST_EMULATOR, *args),
        cwd=workdir,
        env=h.base_env(MM_EMULATOR_DATA_DIR=str(workdir / "data")),
        log_dir=workdir / "out",
    )
    with h.running(process):
        assert process.wait_exit() == 1
    return process.stderr()


def send_dm(mm: Mattermost, text: str = POST_TEXT, device_id: str = DEVICE_ID) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("contents", ["full", "generic", "generic_no_channel", "id_loaded"])
def test_direct_message_push_shape_follows_push_notification_contents(
    tmp_path: Path, push_proxy: PushProxy, contents: str
) -> None:
    with mattermost(
        tmp_path, push_proxy.url, **{"EmailSettings.PushNotificationContents": contents}
    ) as mm:
        flow = send_dm(mm)
    [push] = deliveries_for(push_proxy, flow["post"]["id"])
    user_a, channel = flow["user_a"], flow["channel"]

    # Common to every shape: addressed to B's device via the apple_rn client.
    assert push["platform"] == "apple_rn"
    assert push["platform_raw"] == "apple_rn-v2"
    assert push["device_id"] == DEVICE_TOKEN
    assert push["type"] == "message"
    assert push["version"] == "v2"
    assert push["category"] == "CAN_REPLY"
    assert push["channel_id"] == channel["id"]
    assert push["sender_id"] == user_a["id"]
    assert len(push["server_id"]) == 26
    assert len(push["ack_id"]) == 26
    assert push["badge"] >= 1

    if contents == "full":
        assert push["message"] == f"@accounta: {POST_TEXT}"
        assert push["channel_name"] == "@accounta"
        assert push["sender_name"] == "@accounta"
        assert push["is_id_loaded"] is False
    elif contents in ("generic", "generic_no_channel"):
        assert push["message"] == "@accounta sent you a message."
        assert push["sender_name"] == "@accounta"
        if contents == "generic":
            assert push["channel_name"] == "@accounta"
        else:
            assert push["channel_name"] is None
    else:
        assert push["message"] == "You've received a new message."
        assert push["is_id_loaded"] is True
        assert push["sender_name"] is None
        assert push["channel_name"] is None
    if contents != "full":
        # Nothing of the post's text may leave the server.
        assert "secret-words-42" not in json.dumps(push)


def test_debug_line_logged_at_debug_level_in_json_and_plain_format(
    tmp_path: Path, push_proxy: PushProxy
) -> None:
    with mattermost(tmp_path / "json", push_proxy.url, **{"LogSettings.FileLevel": "DEBUG"}) as mm:
        send_dm(mm, text="Hello")
        lines = [json.loads(line) for line in mm.log_text().splitlines()]
    expected = f"Sending push notification to {DEVICE_TOKEN} wi msg of '@accounta: Hello'"
    [line] = [line for line in lines if line["msg"] == expected]
    assert line["level"] == "debug"
    assert set(line) >= {"timestamp", "level", "msg", "caller"}
    assert line["timestamp"].endswith(" Z")

    with mattermost(
        tmp_path / "plain",
        push_proxy.url,
        **{"LogSettings.FileLevel": "DEBUG", "LogSettings.FileJson": False},
    ) as mm:
        send_dm(mm, text="Hello")
        text = mm.log_text()
    [plain] = [line for line in text.splitlines() if "wi msg of" in line]
    assert plain.endswith(f"] [DEBG] {expected}")
    assert plain.startswith("[20")


def test_debug_line_absent_at_info_level(tmp_path: Path, push_proxy: PushProxy) -> None:
    with mattermost(tmp_path, push_proxy.url, **{"LogSettings.FileLevel": "INFO"}) as mm:
        flow = send_dm(mm, text="Hello")
        text = mm.log_text()
    assert deliveries_for(push_proxy, flow["post"]["id"])  # the push was still sent
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
        text = mm.log_text()
    [push] = deliveries_for(push_proxy, flow["post"]["id"])
    assert push["message"] == "@accounta sent you a message."
    assert "wi msg of '@accounta sent you a message.'" in text
    assert "Failed to send" not in text


def test_invalid_config_json_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"ServiceSettings": {"ListenAddress": ":8065",}')
    stderr = refused_config_stderr(tmp_path, "-c", str(config))
    assert str(config) in stderr
    assert "parsing error at line 1" in stderr
    assert not (tmp_path / "data").exists()


def test_invalid_push_contents_value_is_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.json",
        h.free_port(),
        "",
        **{"EmailSettings.PushNotificationContents": "everything"},
    )
    stderr = refused_config_stderr(tmp_path, "--config", str(config))
    assert "PushNotificationContents" in stderr
    assert "'everything'" in stderr


def test_push_failure_is_logged_but_post_succeeds(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{h.free_port()}"
    with mattermost(tmp_path, dead) as mm:
        flow = send_dm(mm)
        lines = [json.loads(line) for line in mm.log_text().splitlines()]
    assert flow["post"]["id"]
    [error] = [line for line in lines if line["msg"] == "Failed to send to push proxy"]
    assert error["level"] == "error"
    assert dead in error["error"]
    assert error["device_id"] == DEVICE_TOKEN


def test_push_proxy_fail_answer_is_logged(tmp_path: Path, push_proxy: PushProxy) -> None:
    # android (not android_rn) has no initialised client on the proxy: it answers FAIL.
    with mattermost(tmp_path, push_proxy.url) as mm:
        send_dm(mm, device_id="android-v2:device-token-1")
        lines = [json.loads(line) for line in mm.log_text().splitlines()]
    [error] = [line for line in lines if line["msg"] == "Failed to send to push proxy"]
    assert "missing platform property type=android" in error["error"]


def test_no_push_when_push_notifications_are_off(tmp_path: Path, push_proxy: PushProxy) -> None:
    with mattermost(
        tmp_path, push_proxy.url, **{"EmailSettings.SendPushNotifications": False}
    ) as mm:
        flow = send_dm(mm)
    assert deliveries_for(push_proxy, flow["post"]["id"]) == []


def test_https_push_to_hpns_verifies_against_trust_store(tmp_path: Path) -> None:
    pki = h.make_test_pki(tmp_path / "pki", ["localhost", "push.mattermost.com"], ["127.0.0.1"])
    hpns, https_port, _ = hpns_process(
        tmp_path, pki.server_cert, pki.server_key, tmp_path / "hpns", tmp_path / "hpns-out"
    )
    push_server = f"https://localhost:{https_port}/"  # trailing slash is trimmed
    with h.running(hpns):
        hpns.wait_port(https_port)
        # The test CA in the trust store (SSL_CERT_FILE): delivered, with SNI and Host.
        with mattermost(
            tmp_path / "trusted", push_server, env={"SSL_CERT_FILE": str(pki.ca_cert)}
        ) as mm:
            flow = send_dm(mm)
            token_b, _ = mm.login("accountb")
            status, answer = mm.call("POST", "/api/v4/notifications/test", token_b)
            assert (status, answer) == (200, {"status": "OK"})
        # A CA outside the trust store: the push fails on verification, the post does not.
        other = h.make_test_pki(tmp_path / "other", ["localhost"])
        with mattermost(
            tmp_path / "untrusted", push_server, env={"SSL_CERT_FILE": str(other.ca_cert)}
        ) as mm:
            send_dm(mm)
            untrusted_log = mm.log_text()
    received = h.read_jsonl(tmp_path / "hpns" / "received.jsonl")
    assert [entry["path"] for entry in received] == ["/api/v1/send_push"] * 2
    message, test = (entry["body"] for entry in received)
    assert message["post_id"] == flow["post"]["id"]
    assert message["platform"] == "apple_rn-v2"
    assert test["type"] == "test"
    assert test["device_id"] == DEVICE_TOKEN
    assert "message" not in test
    assert received[0]["sni"] == "localhost"
    assert received[0]["host"] == f"localhost:{https_port}"
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted_log


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
    db = json.loads((tmp_path / "data" / "emulator-db.json").read_text())
    assert sorted(u["username"] for u in db["users"].values()) == ["accounta", "accountb"]


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
    [push] = deliveries_for(push_proxy, post["id"])
    assert (push["platform"], push["device_id"]) == ("android_rn", "survivor")
