"""Unit tests for the runbooks' pure logic: the probe's verdicts from what curl saw, the
end-to-end DM's reading of notifications.log, log locations, the DEBUG levels and the host-side
revert script (run here for real on a file), and the runbook settings."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mmpush import jsonedit
from mmpush.runbooks import debug
from mmpush.runbooks.dm import _field, judge_log
from mmpush.runbooks.logs import log_paths
from mmpush.runbooks.probe import (
    judge,
    mode_mismatch,
    probe_command,
    proxy_environment_command,
    read_probe,
)
from mmpush.settings import SettingsError, runbook_settings_from_data
from tests.unit.defaults import DEFAULTS

URL = "https://push.example.com"


def output(rc: int, status: int, body: str = "", error: str = "") -> str:
    """What probe_command prints on the host."""
    return f"rc={rc} status={status:03d}\n{error}\n--body--\n{body}"


# --- the probe's verdicts ----------------------------------------------------------------------


def test_read_probe_splits_exit_code_status_error_and_body() -> None:
    assert read_probe(output(0, 200, '{"status":"OK"}')) == (0, 200, "", '{"status":"OK"}')
    assert read_probe(output(7, 0, error="curl: (7) Failed to connect"))[:3] == (
        7,
        0,
        "curl: (7) Failed to connect",
    )


@pytest.mark.parametrize(
    ("rc", "words"),
    [
        (6, "DNS"),
        (7, "connect"),
        (28, "timeout"),
    ],
)
def test_unreachable_names_the_hop(rc: int, words: str) -> None:
    verdict = judge("mm1", "apple_rn", URL, output(rc, 0, error=f"curl: ({rc}) x"))
    assert not verdict.ok
    assert verdict.verdict.startswith("unreachable: ") and words in verdict.verdict
    assert f"curl: ({rc}) x" in verdict.evidence


def test_unreachable_through_the_outbound_proxy_says_so() -> None:
    verdict = judge("mm1", "apple_rn", URL, output(7, 0), via_outbound_proxy=True)
    assert "(the outbound proxy)" in verdict.evidence


@pytest.mark.parametrize("rc", [35, 51, 60])
def test_tls_failures_show_the_certificate_seen(rc: int) -> None:
    seen = "subject=CN=push.example.com issuer=CN=Pebble Intermediate"
    verdict = judge("mm1", "android_rn", URL, output(rc, 0), certificate=seen)
    assert not verdict.ok and verdict.verdict.startswith("TLS not trusted")
    assert seen in verdict.evidence


def test_a_403_from_the_outbound_proxy_is_its_allow_list() -> None:
    verdict = judge("mm1", "apple_rn", URL, output(0, 403, "<html>403</html>"), "", True)
    assert not verdict.ok and "refused by the outbound proxy" in verdict.verdict
    # the same 403 from a push proxy is not blamed on an outbound proxy
    direct = judge("mm1", "apple_rn", URL, output(0, 403, "<html>403</html>"))
    assert "outbound proxy" not in direct.verdict


def test_accepted_and_rejected_credentials() -> None:
    ok = judge("mm1", "apple_rn", URL, output(0, 200, '{"status":"REMOVE"}'))
    assert ok.ok and ok.verdict == "path OK, credentials accepted"
    rejected = judge(
        "mm1",
        "apple_rn",
        URL,
        output(0, 200, '{"status":"FAIL","error":"unknown send response error"}'),
    )
    assert not rejected.ok and rejected.verdict == "credentials rejected by Apple or Google"


def test_mode_mismatch_names_both_urls() -> None:
    verdict = mode_mismatch("mm2", "https://push-test.mattermost.com", URL, "config.json: ...")
    assert not verdict.ok and verdict.app_type == "config"
    assert "https://push-test.mattermost.com" in verdict.verdict and URL in verdict.verdict


def test_the_probe_sends_the_fake_token_and_never_a_real_device() -> None:
    command = probe_command(URL, "apple_rn")
    assert "mmpush-probe-not-a-real-device" in command
    assert f"{URL}/api/v1/send_push" in command


def test_the_probe_leaves_with_the_units_proxy_variables(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(
        'MM_SQLSETTINGS_DATASOURCE=postgres://u:p@db/mm\nexport HTTPS_PROXY="http://egress:3128"\n'
        "no_proxy=localhost,.internal\n"
    )
    fake = tmp_path / "systemctl"
    fake.write_text(
        "#!/bin/bash\n"
        f'if [ "$3" = EnvironmentFiles ]; then echo "{env_file} (ignore_errors=no)"; '
        "else echo 'http_proxy=http://a:1 FOO=bar'; fi\n"
    )
    fake.chmod(0o755)
    script = f"{proxy_environment_command('mattermost')}; env"
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert env["HTTPS_PROXY"] == "http://egress:3128"
    assert env["no_proxy"] == "localhost,.internal"
    assert env["http_proxy"] == "http://a:1"
    # only proxy variables: the DSN and the rest stay out of the probe's environment
    assert "MM_SQLSETTINGS_DATASOURCE" not in env and "FOO" not in env


# --- the end-to-end DM ------------------------------------------------------------------------

FAILED = (
    '{"timestamp":"2026-11-25 10:00:00.000 Z","level":"error","msg":"Failed to send to push '
    'proxy","status":"not_sent","reason":"push_proxy_send_error","user_id":"ua","error":"x"}'
)
NOT_SENT = (
    "[2026-11-25 10:00:00.000 Z] [debug] Notification not sent - status type=push post_id=p1 "
    "status=not_sent reason=user_is_active receiver_id=ua receiver_status=online"
)
SENT = "[2026-11-25 10:00:00.000 Z] [trace] Notification sent to push proxy user_id=ua status=Sent"


def test_a_failed_push_fails_with_its_reason() -> None:
    result = judge_log([FAILED, "unrelated"], "p1", "ua")
    assert not result.ok and "push_proxy_send_error" in result.verdict
    assert result.lines == (FAILED,)


def test_a_push_not_sent_because_a_is_active() -> None:
    result = judge_log([NOT_SENT], "p1", "ua")
    assert not result.ok and "user_is_active" in result.verdict


def test_a_sent_push_and_a_quiet_log() -> None:
    assert judge_log([SENT], "p1", "ua").ok
    quiet = judge_log(["something about another user ub"], "p1", "ua")
    assert quiet.ok and "check A's phone" in quiet.verdict and quiet.lines == ()


def test_lines_of_other_users_are_not_blamed_on_a() -> None:
    other = FAILED.replace('"ua"', '"ub"')
    assert judge_log([other], "p1", "ua").ok


def test_fields_plain_and_json() -> None:
    assert _field(NOT_SENT, "reason") == "user_is_active"
    assert _field(FAILED, "reason") == "push_proxy_send_error"
    assert _field('x error="a \\"quoted\\" b"', "error") == 'a "quoted" b'
    assert _field("nothing here", "reason") == ""


# --- log locations ----------------------------------------------------------------------------


def test_log_paths_follow_the_configuration_and_the_working_directory() -> None:
    assert log_paths("{}").notifications == "/opt/mattermost/logs/notifications.log"
    config = json.dumps(
        {
            "LogSettings": {"FileLocation": "/var/log/mattermost"},
            "NotificationLogSettings": {"FileLocation": "nlogs"},
        }
    )
    paths = log_paths(config, "/srv/mm\n")
    assert paths.server == "/var/log/mattermost/mattermost.log"
    assert paths.notifications == "/srv/mm/nlogs/notifications.log"


# --- DEBUG and its revert ---------------------------------------------------------------------


def test_levels_read_as_mattermost_reads_them() -> None:
    text = '{"LogSettings": {"FileLevel": "WARN"}, "logsettings": {"FileLevel": "ERROR"}}'
    levels = debug.Levels.from_config(text)
    # Go's encoding/json: case-insensitive keys, the last one wins; a missing key is INFO
    assert levels.values == {
        "LogSettings.FileLevel": "ERROR",
        "NotificationLogSettings.FileLevel": "INFO",
    }
    assert levels.patch() == {
        "LogSettings": {"FileLevel": "ERROR"},
        "NotificationLogSettings": {"FileLevel": "INFO"},
    }


def test_originals_survive_a_second_run_while_the_timer_is_pending() -> None:
    first = {"LogSettings.FileLevel": "WARN", "NotificationLogSettings.FileLevel": "INFO"}
    pending = {"pending": True, "originals": first}
    assert debug._originals(pending, debug.DEBUG_LEVELS).values == first
    # DEBUG left on by hand, nothing pending: back to Mattermost's default
    nothing = {"pending": False, "originals": None}
    assert set(debug._originals(nothing, debug.DEBUG_LEVELS).values.values()) == {"INFO"}


def test_the_state_fact_reads_the_timer_and_the_originals() -> None:
    fact = debug.PushDebugState()
    assert fact.process(["active", "--", '{"LogSettings.FileLevel": "INFO"}']) == {
        "pending": True,
        "originals": {"LogSettings.FileLevel": "INFO"},
    }
    assert fact.process(["inactive", "--"]) == {"pending": False, "originals": None}


@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3")
def test_the_host_side_revert_puts_the_levels_back_and_keeps_every_other_byte(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "revert.py").write_text(debug.REVERT_PY)
    shutil.copy(jsonedit.__file__, state / "jsonedit.py")
    (state / "originals.json").write_text(
        json.dumps({"LogSettings.FileLevel": "WARN", "NotificationLogSettings.FileLevel": "INFO"})
    )
    config = tmp_path / "config.json"
    text = (
        '{\n  "SqlSettings": {"DataSource": "postgres://x"},\n'
        '  "LogSettings": {"FileLevel": "DEBUG", "EnableFile": true},\n'
        '  "NotificationLogSettings": {"FileLevel": "DEBUG"}\n}\n'
    )
    config.write_text(text)
    config.chmod(0o640)
    run = [sys.executable, str(state / "revert.py"), str(config)]
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout == "changed\n"
    after = config.read_text()
    assert after == text.replace('"FileLevel": "DEBUG", "E', '"FileLevel": "WARN", "E').replace(
        '"NotificationLogSettings": {"FileLevel": "DEBUG"}',
        '"NotificationLogSettings": {"FileLevel": "INFO"}',
    )
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o640
    # a second run changes nothing (and the timer's script then does not restart Mattermost)
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout == "unchanged\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mmpush")] == []


def test_the_revert_script_restarts_only_after_a_file_change() -> None:
    script = debug.revert_script("mattermost", None, "/opt/mattermost/config/config.json")
    assert 'if [ "$result" = changed ]; then\n  systemctl restart mattermost\nfi' in script
    socket = debug.revert_script("mattermost", "/var/tmp/mattermost_local.socket", None)
    assert "--unix-socket /var/tmp/mattermost_local.socket" in socket
    assert "systemctl restart" not in socket


def test_the_timer_replaces_a_pending_one_and_fires_in_minutes() -> None:
    script = debug.schedule_script(7)
    assert script.index("systemctl stop mmpush-push-debug-revert.timer") < script.index(
        "systemd-run"
    )
    assert "--on-active=7min" in script and "--unit=mmpush-push-debug-revert" in script


# --- settings ---------------------------------------------------------------------------------


def data(**extra: object) -> dict[str, object]:
    return {**DEFAULTS, "push_mode": "tpns", "push_contents_force": True, **extra}


def test_a_dm_needs_the_account_pair_and_the_server_url(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="runbook_dm_sender_token"):
        runbook_settings_from_data("mm1", ("mattermost",), data(runbook_send_dm=True))
    token = tmp_path / "token"
    token.write_text("b-token\n")
    pair = {"runbook_dm_sender_token": str(token), "runbook_dm_recipient": "accounta"}
    with pytest.raises(SettingsError, match="mattermost_api_url"):
        runbook_settings_from_data("mm1", ("mattermost",), data(runbook_send_dm=True, **pair))
    good = runbook_settings_from_data(
        "mm1",
        ("mattermost",),
        data(runbook_send_dm=True, mattermost_api_url="https://mm.example.com", **pair),
    )
    assert good.send_dm and good.dm_recipient == "accounta"
    assert good.dm_sender_token is not None and "b-token" not in repr(good)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("runbook_debug_minutes", 0),
        ("runbook_debug_minutes", "30"),
        ("runbook_collect", "yes"),
        ("runbook_dm_recipient", "Account A"),
    ],
)
def test_bad_runbook_values_are_refused(key: str, value: object) -> None:
    with pytest.raises(SettingsError, match=key):
        runbook_settings_from_data("mm1", ("mattermost",), data(**{key: value}))


def test_a_gateway_error_names_what_is_behind_the_front() -> None:
    stopped = judge("mm1", "apple_rn", URL, output(0, 502, "<html>502</html>"))
    assert not stopped.ok and "the push proxy is not answering" in stopped.verdict
    upstream = judge("mm1", "apple_rn", URL, output(0, 502, "<html>"), via_outbound_proxy=True)
    assert "cannot reach the hosted push service" in upstream.verdict
