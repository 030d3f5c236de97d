"""The push-debug runbook: Mattermost's ``LogSettings`` and ``NotificationLogSettings`` file
levels raised to DEBUG through the server's config source, and lowered again by the host itself.

    push_logging_debug(settings, runbook)     # in deploys/runbooks/push_debug.py

The revert is scheduled on the host before anything changes, as a transient systemd timer
(``mmpush-push-debug-revert.timer``, ``runbook_debug_minutes`` from now), so the levels go back
to what they were even when the operator or the control node goes away:

- through the local-mode socket when the server has one (file or database configuration):
  the levels change live, and the timer PUTs the old levels back through the socket;
- otherwise in the configuration file, then a restart; the timer sets the old levels back
  with the same editor the deploys use (``mmpush/jsonedit.py``, copied to the host, run by
  ``python3``) and restarts the server, only if the file still says DEBUG.

A database configuration reached only with ``mattermost_admin_token`` is refused: the host
could not lower the levels again without the token, which never leaves the control node.
Running the runbook again while the timer is pending keeps the levels recorded the first time
and starts the timer again. The timer is transient: a host that reboots before it fires keeps
DEBUG (``systemctl start mmpush-push-debug-revert.service`` lowers it at once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, OperationError, deploy, operation

from mmpush import jsonedit
from mmpush.jsonedit import MISSING, JsonEditError, effective_value
from mmpush.mattermost import MattermostConfigError, check_service, detect_source
from mmpush.mattermost.access import SocketAccess, api_access
from mmpush.mattermost.api import ConfigApiError, patch_body
from mmpush.operations import (
    json_values,
    read_private_file,
    restart_and_wait,
    run_checked,
    upload_private,
)
from mmpush.settings import RunbookSettings, Settings
from mmpush.transactions import bash, q

#: The two file levels the runbook raises (Mattermost's own names).
LEVEL_KEYS = (("LogSettings", "FileLevel"), ("NotificationLogSettings", "FileLevel"))
DEBUG = "DEBUG"
#: What Mattermost uses when the key is not set (config/defaults: FileLevel "INFO").
DEFAULT_LEVEL = "INFO"
STATE_DIR = "/var/lib/mmpush/push-debug"
TIMER = "mmpush-push-debug-revert"
ORIGINALS = f"{STATE_DIR}/originals.json"


class PushDebugState(FactBase[dict[str, Any]]):
    """The pending revert on a host: ``{"pending": bool, "originals": {...} | None}``
    (``originals``: the levels before the first run, as "Section.Key": level).

    host.get_fact(PushDebugState)
    """

    def command(self) -> str:
        return (
            f"systemctl is-active {TIMER}.timer 2>/dev/null || true; echo --; "
            f"cat {ORIGINALS} 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        text = "\n".join(output)
        status, _, originals = text.partition("--")
        try:
            parsed = json.loads(originals) if originals.strip() else None
        except json.JSONDecodeError:
            parsed = None
        return {
            "pending": status.strip() == "active",
            "originals": parsed if isinstance(parsed, dict) else None,
        }

    def default(self) -> dict[str, Any]:
        return {"pending": False, "originals": None}


@dataclass(frozen=True)
class Levels:
    """The levels as "Section.Key" -> level: ``Levels({"LogSettings.FileLevel": "INFO", ...})``."""

    values: dict[str, str]

    @classmethod
    def from_config(cls, text: str) -> Levels:
        """The file levels Mattermost reads from a configuration (JSON text)."""
        values = {}
        for keys in LEVEL_KEYS:
            try:
                found = effective_value(text, keys)
            except JsonEditError:
                found = MISSING
            values[".".join(keys)] = found if isinstance(found, str) else DEFAULT_LEVEL
        return cls(values)

    def as_paths(self) -> dict[tuple[str, ...], str]:
        return {tuple(key.split(".")): value for key, value in self.values.items()}

    def patch(self) -> dict[str, Any]:
        """``{"LogSettings": {"FileLevel": "INFO"}, ...}`` for the config API."""
        body: dict[str, Any] = {}
        for (section, key), value in self.as_paths().items():
            body.setdefault(section, {})[key] = value
        return body

    def shown(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in self.values.items())


DEBUG_LEVELS = Levels({".".join(keys): DEBUG for keys in LEVEL_KEYS})


def revert_script(service: str, socket: str | None, config_path: str | None) -> str:
    """What the timer runs on the host (bash): the old levels back, through the socket, or in
    the file with a restart when it changed; the state removed; one journal line either way."""
    if socket:
        lines = [
            f"status=$(curl --unix-socket {q(socket)} -sS --max-time 30 -X PUT "
            f"-H 'Content-Type: application/json' --data-binary @{STATE_DIR}/revert-body.json "
            "-o /dev/null -w '%{http_code}' http://localhost/api/v4/config/patch)",
            '[ "$status" = 200 ] || { echo "mmpush: the config API answered HTTP $status" >&2; '
            "exit 1; }",
        ]
    else:
        assert config_path is not None
        lines = [
            f"result=$(python3 {q(STATE_DIR)}/revert.py {q(config_path)})",
            'if [ "$result" = changed ]; then',
            f"  systemctl restart {q(service)}",
            "fi",
        ]
    return "\n".join(
        [
            "set -euo pipefail",
            # already lowered (run by hand before the timer fired): nothing to do
            f"[ -e {q(ORIGINALS)} ] || {{ echo 'mmpush: push logging was already lowered'; "
            "exit 0; }",
            *lines,
            f"echo 'mmpush: Mattermost push logging lowered again to the levels recorded in "
            f"{ORIGINALS}'",
            f"rm -f -- {q(ORIGINALS)}",
        ]
    )


#: Runs on the host (python3, standard library and the uploaded jsonedit.py): the recorded
#: levels set back in config.json, every other byte kept, the file replaced atomically with
#: its owner and mode; prints "changed" or "unchanged".
REVERT_PY = """\
import json, os, sys, tempfile
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import jsonedit
path = os.path.realpath(sys.argv[1])
with open(os.path.join(here, "originals.json"), encoding="utf-8") as f:
    levels = {tuple(k.split(".")): v for k, v in json.load(f).items()}
with open(path, encoding="utf-8") as f:
    text = f.read()
new = jsonedit.set_values(text, levels)
if new == text:
    print("unchanged")
    sys.exit(0)
info = os.stat(path)
fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".mmpush-revert-")
try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.chown(temp, info.st_uid, info.st_gid)
    os.chmod(temp, info.st_mode & 0o7777)
    os.replace(temp, path)
except BaseException:
    os.unlink(temp)
    raise
print("changed")
"""


def schedule_script(minutes: int) -> str:
    """The transient timer (replacing a pending one), ``minutes`` from now."""
    return "\n".join(
        [
            "set -euo pipefail",
            f"systemctl stop {TIMER}.timer 2>/dev/null || true",
            f"systemctl reset-failed {TIMER}.timer {TIMER}.service 2>/dev/null || true",
            f"systemd-run --quiet --unit={TIMER} --on-active={int(minutes)}min "
            "--timer-property=AccuracySec=1s "
            "--description='mmpush: lower Mattermost push logging again' "
            f"/bin/bash {STATE_DIR}/revert.sh",
            f"systemctl show -p NextElapseUSecRealtime --value {TIMER}.timer",
        ]
    )


@deploy("Mattermost push logging at DEBUG, lowered again by the host")
def push_logging_debug(settings: Settings, runbook: RunbookSettings) -> None:
    """Raise the server's log levels to DEBUG for ``runbook_debug_minutes`` (see the module
    docs); stops before any change, naming the host, when the host could not lower them again.

    + settings: the host's settings (where its configuration lives)
    + runbook: the runbook's settings (``debug_minutes``)
    """
    mm = settings.mattermost
    check_service(mm.service)
    source = detect_source(settings)
    access = api_access(mm, source)
    socket = access.socket if isinstance(access, SocketAccess) else None
    if socket is None and source.kind != "file":
        raise MattermostConfigError(
            f"host {host.name}: its configuration is in {source.describe()} and it has no "
            "local-mode socket: the host could not lower the log levels again by itself "
            "(enable ServiceSettings.EnableLocalMode, or raise the levels in the System Console)"
        )
    current = _current_levels(access, socket, source.path)
    originals = _originals(host.get_fact(PushDebugState), current)
    if socket is None and not _has_python3():
        raise MattermostConfigError(
            f"host {host.name}: python3 is not installed, and the host needs it to set the "
            "levels back in the configuration file (or enable ServiceSettings.EnableLocalMode)"
        )
    prepare_revert(
        name=f"Revert to {originals.shown()} scheduled on the host in {runbook.debug_minutes} min",
        originals=originals,
        minutes=runbook.debug_minutes,
        service=mm.service,
        socket=socket,
        config_path=source.path,
    )
    if socket is not None:
        set_levels_through_socket(
            name=f"{DEBUG_LEVELS.shown()} through the local-mode socket {socket}",
            socket=socket,
            current=current,
        )
        return
    assert source.path is not None
    changed = json_values(
        name=f"{DEBUG_LEVELS.shown()} in {source.path}",
        path=source.path,
        values=DEBUG_LEVELS.as_paths(),
    )
    restart_and_wait(
        name=f"Restart {mm.service} (log levels changed), {mm.restart_batch} at a time",
        service=mm.service,
        ping_url=mm.ping_url,
        _if=changed.did_change,
        _parallel=mm.restart_batch,
    )


def _originals(pending: dict[str, Any], current: Levels) -> Levels:
    """What the timer goes back to: the levels recorded by a run whose timer is still pending,
    else the levels now (DEBUG left on by hand goes back to Mattermost's default)."""
    if pending["pending"] and pending["originals"]:
        return Levels({str(k): str(v) for k, v in pending["originals"].items()})
    if current == DEBUG_LEVELS:
        return Levels({key: DEFAULT_LEVEL for key in current.values})
    return current


def _current_levels(access: Any, socket: str | None, path: str | None) -> Levels:
    """The levels the server has now, read without printing the configuration."""
    if socket is not None:
        try:
            return Levels.from_config(json.dumps(access.get(host)))
        except ConfigApiError as error:
            raise MattermostConfigError(f"host {host.name}: {error}") from None
    assert path is not None
    raw = read_private_file(host, path)
    if raw is None:
        raise MattermostConfigError(f"host {host.name}: {path} does not exist")
    try:
        return Levels.from_config(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise MattermostConfigError(f"host {host.name}: {path} is not UTF-8 ({error})") from None


def _has_python3() -> bool:
    from pyinfra.facts.server import Which

    return bool(host.get_fact(Which, command="python3"))


@operation(is_idempotent=False)
def prepare_revert(
    originals: Levels,
    minutes: int,
    service: str,
    socket: str | None,
    config_path: str | None,
):
    """Record ``originals`` on the host and start the revert timer ``minutes`` from now.

    + originals: the levels to go back to
    + minutes: when
    + service: the Mattermost unit (restarted by a file revert)
    + socket: the local-mode socket, or None (then ``config_path`` is edited)
    """
    yield FunctionCommand(_prepare_revert, (originals, minutes, service, socket, config_path), {})


def _prepare_revert(
    state: Any,
    host: Any,
    originals: Levels,
    minutes: int,
    service: str,
    socket: str | None,
    config_path: str | None,
) -> bool:
    try:
        run_checked(state, host, bash(f"install -d -m 700 {q(STATE_DIR)}"), "the state dir")
        files = {
            "originals.json": json.dumps(originals.values, indent=1).encode(),
            "revert.sh": revert_script(service, socket, config_path).encode(),
        }
        if socket is not None:
            files["revert-body.json"] = patch_body(originals.patch())
        else:
            files["revert.py"] = REVERT_PY.encode()
            files["jsonedit.py"] = Path(jsonedit.__file__).read_bytes()
        for name, content in files.items():
            upload_private(state, host, content, f"{STATE_DIR}/{name}")
        when = run_checked(state, host, bash(schedule_script(minutes)), "scheduling the revert")
    except OperationError as error:
        host.log_styled(f"push debug: {error}", fg="red", log_func=logger.error)
        return False
    logger.info(
        f"    [{host.name}] the host lowers push logging to {originals.shown()} at "
        f"{when.strip()} (timer {TIMER}.timer)"
    )
    return True


@operation()
def set_levels_through_socket(socket: str, current: Levels):
    """DEBUG through the local-mode socket (live, no restart); no change when already there.

    + socket: the server's local-mode socket
    + current: the levels it has now
    """
    if current == DEBUG_LEVELS:
        host.noop("the server already logs push at DEBUG")
        return
    yield FunctionCommand(_patch_socket, (socket,), {})


def _patch_socket(state: Any, host: Any, socket: str) -> bool:
    try:
        SocketAccess(socket).patch(host, DEBUG_LEVELS.patch())
    except (ConfigApiError, OperationError) as error:
        host.log_styled(f"push debug: {error}", fg="red", log_func=logger.error)
        return False
    return True
