"""mmpush.checks.push: the verdict of a probe push, read from what the push proxy EMULATOR
answers (it follows push-proxy v6.5.0 and the APNs/FCM stand-in answers as Apple and Google
document), for good, revoked and broken credentials of each platform."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmpush.checks.push import FAKE_DEVICE_TOKEN, probe_body, push_verdict
from tests.emulators import harness as h
from tests.unit.emulator_helpers import running_push_proxy_with


def proxy_config(port: int, root: Path) -> dict[str, Any]:
    return {
        "ListenAddress": f"127.0.0.1:{port}",
        "ApplePushSettings": [
            {
                "Type": "apple_rn",
                "ApplePushTopic": "com.example.app",
                "AppleAuthKeyFile": str(h.make_apns_p8_key(root / "AuthKey.p8")),
                "AppleAuthKeyID": "KEYID12345",
                "AppleTeamID": "TEAMID1234",
            }
        ],
        "AndroidPushSettings": [
            {
                "Type": "android_rn",
                "ServiceFileLocation": str(h.make_fcm_service_account(root / "fcm.json")),
            }
        ],
    }


def probe(url: str, app_type: str) -> tuple[int, str]:
    status, _, raw = h.http_request("POST", url + "/api/v1/send_push", probe_body(app_type))
    return status, raw.decode()


def run_probes(tmp_path: Path, revoked: bool = False, registered: bool = True) -> dict[str, Any]:
    """Probe both app types of a push proxy whose credentials Apple and Google know (or have
    revoked, or never saw)."""
    port = h.free_port()
    config = proxy_config(port, tmp_path)
    registry = h.PushServicesRegistry()
    if registered:
        apple = config["ApplePushSettings"][0]
        registry.add_apns_key_file(
            Path(apple["AppleAuthKeyFile"]),
            apple["AppleTeamID"],
            apple["AppleAuthKeyID"],
            revoked=revoked,
        )
        registry.add_service_account_file(
            Path(config["AndroidPushSettings"][0]["ServiceFileLocation"]), revoked=revoked
        )
    with (
        h.running_push_services(tmp_path / "services", registry) as services,
        running_push_proxy_with(tmp_path / "proxy", port, config, services) as proxy,
    ):
        apps = ("apple_rn", "android_rn")
        return {app: push_verdict(app, *probe(proxy.url, app)) for app in apps}


def test_the_probe_token_is_obviously_fake() -> None:
    assert probe_body("apple_rn")["device_id"] == FAKE_DEVICE_TOKEN
    assert len(FAKE_DEVICE_TOKEN) != 64 and not set(FAKE_DEVICE_TOKEN) <= set("0123456789abcdef")


def test_known_credentials_are_accepted_on_both_platforms(tmp_path: Path) -> None:
    verdicts = run_probes(tmp_path)
    assert [v.accepted for v in verdicts.values()] == [True, True], verdicts
    assert '"REMOVE"' in verdicts["apple_rn"].evidence
    assert "FAIL" in verdicts["android_rn"].evidence  # FCM refuses the fake token


@pytest.mark.parametrize("revoked", [True, False], ids=["revoked", "unknown"])
def test_revoked_or_unknown_credentials_are_rejected(tmp_path: Path, revoked: bool) -> None:
    verdicts = run_probes(tmp_path, revoked=revoked, registered=revoked)
    for app, verdict in verdicts.items():
        assert not verdict.accepted, (app, verdict)
        assert "rejected" in verdict.verdict or "no access token" in verdict.verdict, verdict


def test_an_app_type_without_a_client_is_reported(tmp_path: Path) -> None:
    port = h.free_port()
    config = proxy_config(port, tmp_path)
    Path(config["ApplePushSettings"][0]["AppleAuthKeyFile"]).write_text("not a key")
    with (
        h.running_push_services(tmp_path / "services", h.PushServicesRegistry()) as services,
        running_push_proxy_with(tmp_path / "proxy", port, config, services) as proxy,
    ):
        verdict = push_verdict("apple_rn", *probe(proxy.url, "apple_rn"))
    assert not verdict.accepted
    assert "no working credentials" in verdict.verdict


@pytest.mark.parametrize(
    ("status", "body", "accepted"),
    [
        (200, '{"status":"OK"}', True),
        (200, '{"status":"REMOVE"}', True),
        (502, "<html>Bad Gateway</html>", False),
        (200, "not json", False),
        (200, '{"status":"FAIL","error":"some other failure"}', False),
    ],
)
def test_answers_that_are_not_from_apple_or_google(status: int, body: str, accepted: bool) -> None:
    assert push_verdict("apple_rn", status, body).accepted is accepted
