"""The push proxy emulator and its release-shaped tarball."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.emulators.push_proxy import build
from tests.unit.emulator_helpers import PUSH_PROXY_CONFIG_NAME as CONFIG_NAME
from tests.unit.emulator_helpers import PushProxy, push_proxy_config, running_push_proxy


def proxy_config(port: int, root: Path, **overrides: Any) -> dict[str, Any]:
    """apple_rn (token auth) and android_rn (service account) initialise; apple and android
    have no credentials and are skipped."""
    config = push_proxy_config(port, root)
    config["ApplePushSettings"].append(
        {"Type": "apple", "ApplePushTopic": "com.mattermost.Mattermost"}
    )
    config["AndroidPushSettings"].append(
        {"Type": "android", "ServiceFileLocation": str(root / "missing.json")}
    )
    config.update(overrides)
    return config


@contextlib.contextmanager
def push_proxy(root: Path, **overrides: Any) -> Iterator[PushProxy]:
    root.mkdir(parents=True, exist_ok=True)
    port = h.free_port()
    with running_push_proxy(root, port, proxy_config(port, root, **overrides)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushProxy]:
    with push_proxy(tmp_path_factory.mktemp("proxy"), ThrottlePerSec=1000) as running_proxy:
        yield running_proxy


def push_body(**fields: Any) -> dict[str, Any]:
    body = {
        "platform": "apple_rn-v2",
        "server_id": "serverid0000000000000000aa",
        "device_id": "devicetoken",
        "type": "message",
        "message": "@accounta: Hello",
        "channel_name": "@accounta",
        "sender_name": "@accounta",
        "post_id": uuid.uuid4().hex[:26],
    }
    body.update(fields)
    return body


def run_config_lookup(cwd: Path, *args: str) -> tuple[int, str]:
    """Run the proxy expecting it to stop on the config; return (exit code, all output)."""
    result = subprocess.run(
        [sys.executable, str(h.PUSH_PROXY_EMULATOR), *args],
        cwd=cwd,
        env=h.base_env(),
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.returncode, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------


def test_root_version_and_unknown_routes(proxy: PushProxy) -> None:
    status, headers, body = h.http_request("GET", proxy.url + "/")
    assert (status, body) == (200, b"<html><body>Mattermost Push Proxy</body></html>")
    assert headers["Content-Type"].startswith("text/html")
    status, _, body = h.http_request("GET", proxy.url + "/version")
    assert status == 200
    assert json.loads(body) == {"hash": "0" * 40, "version": "6.5.0"}
    assert h.http_request("GET", proxy.url + "/nope")[0] == 404
    assert h.http_request("GET", proxy.url + "/metrics")[0] == 404  # EnableMetrics is false
    assert h.http_request("GET", proxy.url + "/api/v1/send_push")[0] == 405


def test_send_push_is_delivered_to_the_recorder(proxy: PushProxy) -> None:
    body = push_body(message="x" * 3000, channel_name="c" * 100)
    assert proxy.post("/api/v1/send_push", body, {"X-Forwarded-For": "192.0.2.7"}) == {
        "status": "OK"
    }
    [record] = [r for r in h.read_jsonl(proxy.record) if r["post_id"] == body["post_id"]]
    assert record["platform"] == "apple_rn"
    assert record["platform_raw"] == "apple_rn-v2"
    assert record["client_type"] == "apple"
    assert record["delivered_via"] == "apns"
    assert record["apns_topic"] == "com.mattermost.react.native"
    assert record["apns_auth"] == "token"
    assert record["device_id"] == "devicetoken"
    assert record["type"] == "message"
    assert record["message"] == "x" * 2047
    assert record["channel_name"] == "c" * 64
    assert record["sender_name"] == "@accounta"
    assert record["x_forwarded_for"] == "192.0.2.7"
    assert record["received_at"].endswith("Z")
    # The same record is on the console log, after the marker.
    console = h.parse_delivery_records(proxy.process.stdout())
    assert record in console


def test_android_client_delivers_via_fcm(proxy: PushProxy) -> None:
    body = push_body(platform="android_rn", message="hi")
    assert proxy.post("/api/v1/send_push", body) == {"status": "OK"}
    [record] = [r for r in h.read_jsonl(proxy.record) if r["post_id"] == body["post_id"]]
    assert (record["client_type"], record["delivered_via"]) == ("android", "fcm")
    assert record["fcm_project_id"] == "mmpush-emulator-test"
    assert record["x_forwarded_for"] is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (push_body(server_id=""), "Failed because of missing server Id"),
        (push_body(device_id=""), "Failed because of missing device Id"),
        (push_body(platform="apple"), "Did not send message because of missing platform property"),
        (push_body(platform="android-v2"), "missing platform property type=android "),
        (push_body(platform="windows"), "missing platform property type=windows"),
    ],
)
def test_send_push_fail_answers(proxy: PushProxy, body: dict[str, Any], error: str) -> None:
    answer = proxy.post("/api/v1/send_push", body)
    assert answer["status"] == "FAIL"
    assert error in answer["error"]
    assert not [r for r in h.read_jsonl(proxy.record) if r["post_id"] == body["post_id"]]


def test_send_push_invalid_json(proxy: PushProxy) -> None:
    status, _, raw = h.http_request(
        "POST", proxy.url + "/api/v1/send_push", raw_body=b'{"platform": "apple_rn",'
    )
    assert status == 200
    assert json.loads(raw) == {"status": "FAIL", "error": "Failed to read message body"}


def test_ack(proxy: PushProxy) -> None:
    ack = {"id": "ackid", "platform": "apple_rn", "type": "message", "received_at": 1}
    assert proxy.post("/api/v1/ack", ack) == {"status": "OK"}
    assert proxy.post("/api/v1/ack", {**ack, "id": ""})["status"] == "FAIL"
    assert proxy.post("/api/v1/ack", {**ack, "received_at": 0})["status"] == "FAIL"


def test_client_initialisation_is_logged_and_failures_skipped(proxy: PushProxy) -> None:
    out = proxy.process.stdout()
    assert "Initialized clients: android_rn, apple_rn" in out
    failures = [line for line in out.splitlines() if "Failed to initialize client" in line]
    assert len(failures) == 2
    assert any("type=apple " in line for line in failures)
    assert any("type=android " in line and "missing.json" in line for line in failures)
    assert "PRIVATE KEY" not in out  # never log credential contents


def test_apple_certificate_auth_and_bad_credentials(tmp_path: Path) -> None:
    pki = h.make_test_pki(tmp_path / "pki", ["apns.example"])
    cert_and_key = tmp_path / "apple.pem"
    cert_and_key.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())
    not_a_key = tmp_path / "AuthKey_bad.p8"
    not_a_key.write_text("this is not a key\n")
    not_fcm = tmp_path / "not-fcm.json"
    not_fcm.write_text(json.dumps({"type": "authorized_user"}))
    settings = {
        "ApplePushSettings": [
            {
                "Type": "apple",
                "ApplePushCertPrivate": str(cert_and_key),
                "ApplePushUseDevelopment": True,
            },
            {"Type": "apple_rn", "ApplePushCertPrivate": str(pki.server_cert)},  # no key
            {
                "Type": "apple_rnbeta",
                "AppleAuthKeyFile": str(not_a_key),
                "AppleAuthKeyID": "K",
                "AppleTeamID": "T",
            },
        ],
        "AndroidPushSettings": [{"Type": "android_rn", "ServiceFileLocation": str(not_fcm)}],
    }
    with push_proxy(tmp_path / "proxy", **settings) as running_proxy:
        assert (
            running_proxy.post("/api/v1/send_push", push_body(platform="apple"))["status"] == "OK"
        )
        for platform in ("apple_rn", "apple_rnbeta", "android_rn"):
            answer = running_proxy.post("/api/v1/send_push", push_body(platform=platform))
            assert answer["status"] == "FAIL", platform
        out = running_proxy.process.stdout()
    [record] = h.read_jsonl(tmp_path / "proxy" / "deliveries.jsonl")
    assert (record["apns_auth"], record["apns_environment"]) == ("certificate", "development")
    assert out.count("Failed to initialize client") == 3
    assert "Initialized clients: apple\n" in out


def test_throttle_answers_429_per_vary_by_header_value(tmp_path: Path) -> None:
    with push_proxy(tmp_path, ThrottlePerSec=3) as running_proxy:
        statuses = [
            h.http_request("GET", running_proxy.url + "/", headers={"X-Forwarded-For": "1.1.1.1"})[
                0
            ]
            for _ in range(6)
        ]
        other = h.http_request(
            "GET", running_proxy.url + "/", headers={"X-Forwarded-For": "2.2.2.2"}
        )
        status, headers, body = h.http_request(
            "POST",
            running_proxy.url + "/api/v1/send_push",
            push_body(),
            {"X-Forwarded-For": "1.1.1.1"},
        )
    # A fixed one-second window: normally 3 allowed then 429s; a slow machine may cross into a
    # new window once, so only require that the limit was enforced.
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses
    assert other[0] == 200
    if status == 429:
        assert body == b"limit exceeded\n"
        assert headers["X-RateLimit-Limit"] == "3"


def test_metrics_when_enabled(tmp_path: Path) -> None:
    with push_proxy(tmp_path, EnableMetrics=True) as running_proxy:
        running_proxy.post("/api/v1/send_push", push_body())
        running_proxy.post("/api/v1/send_push", push_body(server_id=""))
        status, headers, body = h.http_request("GET", running_proxy.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'service_success_total{type="apple_rn"} 1' in text
    assert "service_bad_request_total 1" in text
    assert "service_request_duration_seconds_count 2" in text


def test_file_log_in_json_format(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "proxy.log"
    with push_proxy(
        tmp_path,
        EnableConsoleLog=False,
        EnableFileLog=True,
        LogFileLocation=str(log_file),
        LogFormat="json",
    ) as running_proxy:
        body = push_body()
        running_proxy.post("/api/v1/send_push", body)
        console = running_proxy.process.stdout()
    assert console == ""
    lines = log_file.read_text().splitlines()
    assert json.loads(lines[0])["msg"].startswith("Loading ")
    [record] = h.parse_delivery_records("\n".join(lines))
    assert record["post_id"] == body["post_id"]


# --------------------------------------------------------------------------------------------
# Flags and config lookup
# --------------------------------------------------------------------------------------------


def test_version_flag(tmp_path: Path) -> None:
    for flag in ("-version", "--version"):
        code, out = run_config_lookup(tmp_path, flag)
        assert code == 0
        assert "GitVersion:    v6.5.0" in out
        assert "Platform:      linux/amd64" in out


def test_config_lookup_dot_config_then_dot_dot_config_then_literal(tmp_path: Path) -> None:
    install = tmp_path / "install"
    (install / "config").mkdir(parents=True)
    (install / "bin").mkdir()
    name = f"pp-{uuid.uuid4().hex}.json"
    # An invalid file stops the proxy with its absolute path: that shows which one was chosen.
    (install / "config" / name).write_text("{not json")
    (install / "bin" / name).write_text("{not json either")

    code, out = run_config_lookup(install, "-config", name)
    assert code == 1
    assert str(install / "config" / name) in out  # ./config wins over the literal name

    code, out = run_config_lookup(install / "bin", "-config", name)
    assert code == 1
    assert str(install / "config" / name) in out  # ../config wins over ./<name>

    (install / "config" / name).unlink()
    code, out = run_config_lookup(install / "bin", "-config", name)
    assert code == 1
    assert str(install / "bin" / name) in out  # then the literal name, relative to the cwd

    (install / "bin" / name).unlink()
    code, out = run_config_lookup(install / "bin", "-config", name)
    assert code == 1
    assert name in out
    assert "No such file or directory" in out


def test_config_lookup_checks_tmp_first(tmp_path: Path) -> None:
    name = f"mmpush-emulator-test-{uuid.uuid4().hex}.json"
    in_tmp = Path("/tmp") / name
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / name).write_text("{}")
    try:
        in_tmp.write_text('{"ListenAddress": ')
        code, out = run_config_lookup(tmp_path, f"-config={name}")
    finally:
        in_tmp.unlink(missing_ok=True)
    assert code == 1
    assert str(in_tmp) in out


def test_default_config_name_from_install_dir(tmp_path: Path) -> None:
    code, out = run_config_lookup(tmp_path)
    assert code == 1
    assert "mattermost-push-proxy.json" in out


def test_config_type_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / CONFIG_NAME).write_text(json.dumps({"ThrottlePerSec": "300"}))
    code, out = run_config_lookup(tmp_path)
    assert code == 1
    assert "ConfigPushProxy.ThrottlePerSec" in out
    assert str(tmp_path / "config" / CONFIG_NAME) in out


# --------------------------------------------------------------------------------------------
# Release tarball
# --------------------------------------------------------------------------------------------


def test_tarball_is_deterministic_and_versioned(tmp_path: Path) -> None:
    first = build.build_release_tarball(tmp_path / "a")
    second = build.build_release_tarball(tmp_path / "b", version="6.5.0")
    other = build.build_release_tarball(tmp_path / "c", version="6.4.1")
    assert first.name == "mattermost-push-proxy-linux-amd64.tar.gz"
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    raw = first.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    assert gzip.decompress(raw)  # a valid gzip stream


def test_tarball_layout(tmp_path: Path) -> None:
    tarball = build.build_release_tarball(tmp_path, version="6.5.0", arch="linux-arm64")
    assert tarball.name == "mattermost-push-proxy-linux-arm64.tar.gz"
    top = "mattermost-push-proxy-linux-arm64"
    with tarfile.open(tarball) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert sorted(members) == list(members)  # sorted entries
        assert set(members) == {
            top,
            f"{top}/bin",
            f"{top}/bin/mattermost-push-proxy",
            f"{top}/config",
            f"{top}/config/build.txt",
            f"{top}/config/mattermost-push-proxy.sample.json",
            f"{top}/logs",
            f"{top}/LICENSE.txt",
            f"{top}/NOTICE.txt",
            f"{top}/README.md",
        }
        for member in members.values():
            assert (member.uid, member.gid) == (0, 0)
            assert member.mtime == build.FIXED_MTIME
        assert members[f"{top}/logs"].isdir()
        binary = members[f"{top}/bin/mattermost-push-proxy"]
        assert stat.S_IMODE(binary.mode) == 0o755
        source = tar.extractfile(binary).read().decode()  # type: ignore[union-attr]
        sample = json.load(tar.extractfile(f"{top}/config/mattermost-push-proxy.sample.json"))  # type: ignore[arg-type]
        readme = tar.extractfile(f"{top}/README.md").read().decode()  # type: ignore[union-attr]
    assert source.startswith("#!/usr/bin/python3\n")
    assert 'EMULATOR_VERSION = "6.5.0"' in source
    assert 'EMULATOR_PLATFORM = "linux/arm64"' in source
    assert f'EMULATOR_HASH = "{build.emulator_hash("6.5.0")}"' in source
    assert sample["ListenAddress"] == ":8066"
    assert [s["Type"] for s in sample["ApplePushSettings"]] == ["apple", "apple_rn"]
    assert [s["Type"] for s in sample["AndroidPushSettings"]] == ["android", "android_rn"]
    assert "EMULATOR" in readme


def test_unpacked_release_runs_from_its_install_dir(tmp_path: Path) -> None:
    tarball = build.build_release_tarball(tmp_path / "dist", version="7.0.1")
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "opt", filter="data")
    install = tmp_path / "opt" / "mattermost-push-proxy-linux-amd64"
    binary = install / "bin" / "mattermost-push-proxy"
    assert os.access(binary, os.X_OK)
    port = h.free_port()
    sample = json.loads((install / "config" / "mattermost-push-proxy.sample.json").read_text())
    sample["ListenAddress"] = f"127.0.0.1:{port}"
    (install / "config" / CONFIG_NAME).write_text(json.dumps(sample))
    process = h.EmulatorProcess(
        [sys.executable, str(binary)], cwd=install, env=h.base_env(), log_dir=tmp_path / "out"
    )
    with h.running(process):
        process.wait_port(port)
        status, _, body = h.http_request("GET", f"http://127.0.0.1:{port}/version")
    assert status == 200
    assert json.loads(body) == {"hash": build.emulator_hash("7.0.1"), "version": "7.0.1"}
    # The sample has no credentials: every client is skipped, the proxy still runs.
    assert process.stdout().count("Failed to initialize client") == 4


def test_build_cli_prints_path_and_sha256(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.emulators.push_proxy.build",
            str(tmp_path),
            "--version",
            "6.5.0",
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    path_line, digest = result.stdout.split()
    assert Path(path_line) == tmp_path / "mattermost-push-proxy-linux-amd64.tar.gz"
    assert digest == hashlib.sha256(Path(path_line).read_bytes()).hexdigest()
