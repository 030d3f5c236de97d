"""The guide's end-to-end check, automated: account B sends account A a direct message, and the
server's ``notifications.log`` says what happened to the push to A's device(s).

    end_to_end_dm(name="B sends A a DM", runbook=runbook, mattermost=settings.mattermost,
                  _serial=True)

The DM is posted from the control node through ``mattermost_api_url`` with B's personal access
token (``runbook_dm_sender_token``; it never reaches a host), once per server URL (the servers
of a cluster share one). Each server then reports the lines its ``notifications.log`` gained
since the run started (measured while preparing, before the DM) that concern A or the post
(mattermost/mattermost ``server/channels/app/notification_push.go``: "Failed to send to push
proxy" at ERROR, "Notification not sent - status" at DEBUG, "Notification sent to push proxy"
at TRACE). At the default INFO level only failures are logged: no line means no failure,
and A's phone is the proof (push_debug.py raises the level first).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, OperationError, operation

from mmpush.mattermost.api import ConfigApiError, TokenApi
from mmpush.operations import run_quiet
from mmpush.runbooks.logs import LogPaths
from mmpush.settings import MattermostSettings, RunbookSettings
from mmpush.transactions import q

#: {server URL: (post id, A's user id, the time it was posted)}: one DM per server URL.
POSTED: dict[str, tuple[str, str, float]] = {}

FAILURE_MESSAGES = (
    "Failed to send to push proxy",
    "Push notifications are disabled",
    "Notification not sent",
    "Failed to send test notification",
    "Push proxy failed to send",
)
SUCCESS_MESSAGE = "Notification sent to push proxy"


class LogSize(FactBase[int]):
    """The size of a log file in bytes (0 when it does not exist).

    host.get_fact(LogSize, path="/opt/mattermost/logs/notifications.log")
    """

    def command(self, path: str) -> str:
        return f"stat -c %s -- {q(path)} 2>/dev/null || echo 0"

    def process(self, output: list[str]) -> int:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class DmResult:
    """What one server's notifications.log says about the DM's push."""

    ok: bool
    verdict: str
    lines: tuple[str, ...]


def judge_log(lines: list[str], post_id: str, user_id: str) -> DmResult:
    """The verdict from the notifications.log lines written after the DM (pure).

    judge_log(['... Failed to send to push proxy ... user_id=u1 error="..."'], "p1", "u1").ok
    == False
    """
    relevant = tuple(line for line in lines if post_id in line or user_id in line)
    failures = [line for line in relevant if any(m in line for m in FAILURE_MESSAGES)]
    licence = [line for line in lines if "license missing" in line]
    if licence:
        return DmResult(False, "not sent: the server's licence does not cover HPNS", (licence[0],))
    if failures:
        reason = _field(failures[0], "reason") or _field(failures[0], "error") or "see the line"
        return DmResult(False, f"the push to A's device was not sent ({reason})", relevant)
    if any(SUCCESS_MESSAGE in line for line in relevant):
        return DmResult(True, "the server handed the push to the push service", relevant)
    return DmResult(
        True,
        "no failure logged for A (at INFO only failures are logged): check A's phone",
        relevant,
    )


def _field(line: str, name: str) -> str:
    """A field of a log line, plain (``reason=user_is_active``) or JSON."""
    try:
        record = json.loads(line)
        if isinstance(record, dict) and name in record:
            return str(record[name])
    except json.JSONDecodeError:
        pass
    found = re.search(rf'\b{name}=("(?:[^"\\]|\\.)*"|\S+)', line)
    if not found:
        return ""
    value = found.group(1)
    return json.loads(value) if value.startswith('"') else value


def post_dm(api: TokenApi, recipient: str, text: str) -> tuple[str, str, str]:
    """B (the token's user) opens a DM with ``recipient`` and posts ``text``: (post id, A's
    user id, A's status)."""
    me = api.call("GET", "/api/v4/users/me")
    other = api.call("GET", f"/api/v4/users/username/{recipient}")
    status = api.call("GET", f"/api/v4/users/{other['id']}/status").get("status", "unknown")
    channel = api.call("POST", "/api/v4/channels/direct", [me["id"], other["id"]])
    post = api.call("POST", "/api/v4/posts", {"channel_id": channel["id"], "message": text})
    return str(post["id"]), str(other["id"]), str(status)


@operation(is_idempotent=False)
def end_to_end_dm(runbook: RunbookSettings, mattermost: MattermostSettings, logs: LogPaths):
    """B sends A a DM through this server's URL (once per URL), then this server's
    ``notifications.log`` is read for what became of the push (see the module docs).

    + runbook: the test account pair (``dm_sender_token``, ``dm_recipient``), ``dm_wait_sec``
    + mattermost: the server's settings (``api_url``, ``api_ca_bundle``)
    + logs: the server's log files
    """
    start = host.get_fact(LogSize, path=logs.notifications)
    yield FunctionCommand(_end_to_end, (runbook, mattermost, logs, start), {})


def _end_to_end(
    state: Any,
    host: Any,
    runbook: RunbookSettings,
    mattermost: MattermostSettings,
    logs: LogPaths,
    start: int,
) -> bool:
    assert runbook.dm_sender_token is not None and mattermost.api_url is not None
    url = mattermost.api_url
    try:
        if url not in POSTED:
            token = runbook.dm_sender_token.content.decode().strip()
            api = TokenApi(url, token, mattermost.api_ca_bundle)
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            post_id, user_id, status = post_dm(
                api, str(runbook.dm_recipient), f"mmpush runbook test push, {stamp}"
            )
            POSTED[url] = (post_id, user_id, time.monotonic())
            logger.info(
                f"    [{host.name}] B sent {runbook.dm_recipient} a DM through {url}: post "
                f"{post_id} ({runbook.dm_recipient} is {status}"
                + ("; a user online on another client gets no push)" if status == "online" else ")")
            )
        post_id, user_id, posted = POSTED[url]
        lines = _wait_for_lines(
            host, logs.notifications, start, (post_id, user_id), posted, runbook.dm_wait_sec
        )
    except (ConfigApiError, OperationError, KeyError) as error:
        host.log_styled(f"end-to-end DM: {error}", fg="red", log_func=logger.error)
        return False
    result = judge_log(lines, post_id, user_id)
    for line in result.lines[-5:]:
        logger.info(f"    [{host.name}]   {logs.notifications}: {line}")
    host.log_styled(
        f"end-to-end DM: {'OK  ' if result.ok else 'FAIL'} post {post_id}: {result.verdict}",
        fg="green" if result.ok else "red",
        log_func=logger.info if result.ok else logger.error,
    )
    return result.ok


def _wait_for_lines(
    target: Any, path: str, start: int, ids: tuple[str, str], posted: float, wait: int
) -> list[str]:
    """The log lines written since ``start`` bytes; waits (up to ``wait`` s after the post)
    until one concerns the post or A, as the server pushes after answering the post."""
    command = f"tail -c +{start + 1} -- {q(path)} 2>/dev/null || true"
    while True:
        lines = run_quiet(target, command, "reading notifications.log").splitlines()
        if any(i in line for line in lines for i in ids):
            return lines
        if time.monotonic() - posted >= wait:
            return lines
        time.sleep(1)
