"""The Mattermost server emulator's push path as the real server runs it: asynchronous (a
buffered hub), only to recipients whose status allows it, a REMOVE answer retiring the device,
the outcomes in notifications.log, and the licence gates (HPNS, id_loaded)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.unit.emulator_helpers import (
    FakePushService,
    MattermostEmulator,
    running_mattermost,
    write_mattermost_config,
)

TOKEN = "63c06ca8e3949ca7e5996c31fcf07ecb36c658a3e7c2c227a4af949cc4777a87"
DEVICE_ID = f"apple_rn-v2:{TOKEN}"
LICENSE = {"id": "lic0003", "sku_name": "Enterprise", "sku_short_name": "enterprise"}
HPNS_URLS = [
    "https://push.mattermost.com",
    "https://hpns-de.mattermost.com",
    "https://global.push.mattermost.com",
    "https://us.push.mattermost.com",
    "https://eu.push.mattermost.com",
    "https://ap.push.mattermost.com",
]
LICENSE_WARNING = (
    "Push notifications have been disabled. Update your license or go to System Console > "
    "Environment > Push Notification Server to use a different server"
)


@contextlib.contextmanager
def mattermost(
    workdir: Path, push_server: str, env: dict[str, str] | None = None, **settings: Any
) -> Iterator[MattermostEmulator]:
    port = h.free_port()
    settings.setdefault("NotificationLogSettings.FileLevel", "TRACE")
    config = write_mattermost_config(workdir / "config.json", port, push_server, **settings)
    with running_mattermost(workdir, port, "--config", str(config), env=env) as mm:
        yield mm


@pytest.fixture
def push() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service


class Users:
    """accounta and accountb logged in; B's phone registered; their DM channel."""

    def __init__(self, mm: MattermostEmulator, device_id: str = DEVICE_ID):
        self.mm = mm
        self.token_a, self.a = mm.login("accounta")
        self.token_b, self.b = mm.login("accountb", device_id=device_id)
        status, self.channel = mm.call(
            "POST", "/api/v4/channels/direct", self.token_a, [self.a["id"], self.b["id"]]
        )
        assert status == 201

    def post(self, text: str = "hello") -> dict[str, Any]:
        """A posts in the DM; the post (the API has answered: any push may still be coming)."""
        status, post = self.mm.call(
            "POST",
            "/api/v4/posts",
            self.token_a,
            {"channel_id": self.channel["id"], "message": text},
        )
        assert status == 201, post
        return post

    def set_b_status(self, status: str) -> dict[str, Any]:
        code, answer = self.mm.call(
            "PUT",
            f"/api/v4/users/{self.b['id']}/status",
            self.token_b,
            {"user_id": self.b["id"], "status": status},
        )
        assert code == 200, answer
        return answer

    def test_push(self) -> None:
        """B's test push: sent to B's devices before the API answers."""
        assert self.mm.call("POST", "/api/v4/notifications/test", self.token_b)[0] == 200


def test_the_post_is_answered_before_its_push_is_sent(tmp_path: Path) -> None:
    release = threading.Event()
    arrived = threading.Event()
    with FakePushService() as push:
        original = push.server.RequestHandlerClass.do_POST  # type: ignore[attr-defined]

        def held(handler: Any) -> None:
            arrived.set()
            assert release.wait(20), "the test never released the push"
            original(handler)

        push.server.RequestHandlerClass.do_POST = held  # type: ignore[attr-defined]
        with mattermost(tmp_path, push.url) as mm:
            users = Users(mm)
            post = users.post()  # answered while the push service still holds the request
            assert arrived.wait(20), "the push was never attempted"
            assert push.pushes(post["id"]) == []
            release.set()
            [body] = h.wait_for(lambda: push.pushes(post["id"]), what="the released push")
    assert body["device_id"] == TOKEN


def test_only_recipients_whose_status_allows_it_get_a_push(
    tmp_path: Path, push: FakePushService
) -> None:
    with mattermost(tmp_path, push.url) as mm:
        users = Users(mm)
        status, offline = mm.call("GET", f"/api/v4/users/{users.b['id']}/status", users.token_b)
        assert (status, offline["status"]) == (200, "offline")  # no status yet: offline

        posts = {}
        for status_name, reason in (
            ("online", "user_is_active"),  # push_status "away": not while online
            ("dnd", "user_status"),
            ("away", None),
            ("offline", None),
        ):
            assert users.set_b_status(status_name)["manual"] is True
            post = posts[status_name] = users.post(f"while {status_name}")
            if reason is not None:
                # The status check runs while the post is made: its line is there at the 201.
                [line] = [
                    line
                    for line in mm.notification_lines("Notification not sent - status")
                    if line["post_id"] == post["id"]
                ]
                assert (line["reason"], line["receiver_status"]) == (reason, status_name)
                assert line["receiver_id"] == users.b["id"]
        for status_name in ("away", "offline"):
            post_id = posts[status_name]["id"]
            h.wait_for(lambda post_id=post_id: push.pushes(post_id), what="the push")
    # Pushes for the later posts have arrived; none ever came for the earlier ones.
    assert push.pushes(posts["online"]["id"]) == []
    assert push.pushes(posts["dnd"]["id"]) == []


def test_posting_sets_the_poster_online_unless_asked_not_to(
    tmp_path: Path, push: FakePushService
) -> None:
    with mattermost(tmp_path, push.url) as mm:
        users = Users(mm)
        status_url = f"/api/v4/users/{users.a['id']}/status"
        mm.call(
            "POST",
            "/api/v4/posts?set_online=false",
            users.token_a,
            {"channel_id": users.channel["id"], "message": "quietly"},
        )
        assert mm.call("GET", status_url, users.token_a)[1]["status"] == "offline"
        users.post()
        status = mm.call("GET", status_url, users.token_a)[1]
    assert (status["status"], status["manual"]) == ("online", False)


def test_a_remove_answer_retires_the_device_of_that_session(
    tmp_path: Path, push: FakePushService
) -> None:
    push.answers[TOKEN] = {"status": "REMOVE"}
    with mattermost(tmp_path, push.url) as mm:
        users = Users(mm)
        post = users.post()
        [failure] = h.wait_for(
            lambda: mm.notification_lines("Failed to send to push proxy"), what="the failure"
        )
        assert failure["reason"] == "push_proxy_remove_device"
        assert failure["error"] == "device was reported as removed"
        assert len(push.pushes(post["id"])) == 1
        # The session keeps its device id but is no push target any more (the test push goes
        # out before the API answers: nothing reached the dead device).
        before = len(push.pushes())
        users.test_push()
        assert len(push.pushes()) == before
        db = json.loads((tmp_path / "data" / "emulator-db.json").read_text())
        [session] = [s for s in db["sessions"].values() if s["user_id"] == users.b["id"]]
        assert session["device_id"] == DEVICE_ID
        assert session["props"]["last_removed_device_id"] == DEVICE_ID
        # A new device id on that session makes it a target again.
        new_token = "f" * 64
        mm.call(
            "PUT",
            "/api/v4/users/sessions/device",
            users.token_b,
            {"device_id": f"apple_rn-v2:{new_token}"},
        )
        users.test_push()
    assert [body["device_id"] for body in push.pushes()][-1] == new_token


def test_notifications_log_records_each_step_with_the_real_fields(
    tmp_path: Path, push: FakePushService
) -> None:
    with mattermost(tmp_path, push.url) as mm:
        users = Users(mm)
        post = users.post()
        [sent] = h.wait_for(
            lambda: mm.notification_lines("Notification sent to push proxy"), what="the sent line"
        )
        [prepared] = mm.notification_lines("Notification will be sent")
        main_log = mm.log_text()
    [body] = push.pushes(post["id"])
    assert prepared["level"] == "trace"
    assert (prepared["type"], prepared["push_type"], prepared["status"]) == (
        "push",
        "message",
        "Prepared to send",
    )
    assert (prepared["post_id"], prepared["user_id"]) == (post["id"], users.b["id"])
    assert prepared["ack_id"] == body["ack_id"] == sent["ack_id"]
    assert (sent["status"], sent["device_id"]) == ("Successful", TOKEN)
    assert "Notification" not in main_log  # these lines go to notifications.log only


def test_a_successful_push_leaves_nothing_in_notifications_log_at_info(
    tmp_path: Path, push: FakePushService
) -> None:
    # The success lines are TRACE in the real server: at the default INFO level, only problems
    # reach notifications.log.
    with mattermost(tmp_path, push.url, **{"NotificationLogSettings.FileLevel": "INFO"}) as mm:
        users = Users(mm)
        post = users.post()
        h.wait_for(lambda: push.pushes(post["id"]), what="the push")
        users.test_push()
        lines = mm.notification_lines()
    assert lines == []


def test_without_a_licence_no_push_goes_to_any_hpns_url(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{h.free_port()}"  # an HTTPS proxy that refuses at once
    env = {"HTTPS_PROXY": closed, "https_proxy": closed}
    with mattermost(tmp_path, HPNS_URLS[0], env=env) as mm:
        users = Users(mm)
        admin = mm.admin_token()
        for url in HPNS_URLS:
            status, _ = mm.call(
                "PUT",
                "/api/v4/config/patch",
                admin,
                {"EmailSettings": {"PushNotificationServer": url}},
            )
            assert status == 200
            users.post(f"to {url}")
        warnings = mm.notification_lines("Push notifications are disabled - license missing")
        main = [line["msg"] for line in mm.log_lines()]
        status, client_license = mm.call("GET", "/api/v4/license/client?format=old", admin)

        # With a licence (read when license.json changes) the push is attempted: here it fails
        # on the refusing proxy, naming the HPNS URL.
        (mm.data_dir / "license.json").write_text(json.dumps(LICENSE))
        users.post("licensed")
        [failure] = h.wait_for(
            lambda: mm.notification_lines("Failed to send to push proxy"), what="an attempt"
        )
        licensed = mm.call("GET", "/api/v4/license/client?format=old", admin)[1]
    assert len(warnings) == len(HPNS_URLS)
    assert {(w["status"], w["reason"], w["level"]) for w in warnings} == {
        ("not_sent", "push_disabled_license", "warn")
    }
    assert main.count(LICENSE_WARNING) == len(HPNS_URLS)
    assert mm.notification_lines("Notification will be sent")[0]["status"] == "Prepared to send"
    assert HPNS_URLS[-1] + "/api/v1/send_push" in failure["error"]
    assert (status, client_license) == (200, {"IsLicensed": "false"})
    assert licensed["IsLicensed"] == "true" and licensed["MHPNS"] == "true"


def test_the_hpns_gate_compares_the_url_exactly(tmp_path: Path) -> None:
    # IsMHPNSEndpoint is an exact comparison: with a trailing slash the gate does not apply,
    # though the push goes to the same URL (the slash is trimmed when sending).
    closed = f"http://127.0.0.1:{h.free_port()}"
    env = {"HTTPS_PROXY": closed, "https_proxy": closed}
    with mattermost(tmp_path, "https://global.push.mattermost.com/", env=env) as mm:
        Users(mm).post()
        [failure] = h.wait_for(
            lambda: mm.notification_lines("Failed to send to push proxy"), what="an attempt"
        )
        warnings = mm.notification_lines("Push notifications are disabled - license missing")
    assert warnings == []
    assert "https://global.push.mattermost.com/api/v1/send_push" in failure["error"]


def test_id_loaded_contents_need_a_licence(tmp_path: Path, push: FakePushService) -> None:
    with mattermost(
        tmp_path, push.url, **{"EmailSettings.PushNotificationContents": "id_loaded"}
    ) as mm:
        users = Users(mm)
        unlicensed = users.post("secret words")
        [generic] = h.wait_for(lambda: push.pushes(unlicensed["id"]), what="the generic push")
        (mm.data_dir / "license.json").write_text(json.dumps(LICENSE))
        licensed = users.post("secret words")
        [id_loaded] = h.wait_for(lambda: push.pushes(licensed["id"]), what="the id_loaded push")
    assert (generic["message"], generic["is_id_loaded"]) == ("sent you a message.", False)
    assert generic["sender_name"] == "@accounta"
    assert (id_loaded["message"], id_loaded["is_id_loaded"]) == (
        "You've received a new message.",
        True,
    )
    assert "sender_name" not in id_loaded
