"""Custom pyinfra operations: each one idempotent, atomic on the host, and honest in --dry.

json_values(name="Push settings", path="/opt/mattermost/config/config.json",
            values={("EmailSettings", "SendPushNotifications"): True})
secret_file(name="APNs key", dest="/etc/x/key.p8", secret=secret, user="svc", group="svc")
nginx_files(name="NGINX config", files={"/etc/nginx/conf.d/site.conf": text})
release(name="Push proxy 6.5.0", root="/opt/mattermost-push-proxy", artifact=artifact)
symlink(name="Switch release", path="/opt/x/current", target="/opt/x/releases/6.5.0")

They work the same whether pyinfra connects as root or as a user with sudo (``_sudo``): new
content is uploaded through a file only the SSH user can read, born 0600, and every host-side
change runs as one checked script (``mmpush.transactions``). Nothing secret is ever part of a
command line or a fact's output (pyinfra prints both with ``-vvv``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from io import BytesIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, OperationError, StringCommand, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File, Link, Sha256File
from pyinfra.operations import systemd
from pyinfra.operations.util import any_changed

from mmpush.facts import FileBytes, PrivateFileState, SystemUser
from mmpush.jsonedit import MISSING, JsonEditError, effective_value, parse_object, set_values
from mmpush.settings import PushProxyArtifact, Secret
from mmpush.transactions import (
    BACKUP_DIR,
    STAGING_DIR,
    FileChange,
    bash,
    nginx_transaction_script,
    q,
    release_unpack_script,
    replace_file_script,
    temp_beside,
)


class HostNotChangeable(PyinfraError):
    """A host cannot be changed safely (e.g. a read-only config file); raised while pyinfra
    prepares, so the run stops before any host is touched, with this one-line message."""


# --- talking to the host from inside an operation -------------------------------------------


def connector_arguments(target: Any) -> dict[str, Any]:
    """The connector arguments (``_sudo``, ``_sudo_user``, ...) pyinfra would use for a
    command of the current operation on ``target`` (or of its host data, outside one), so
    commands run from Python callbacks get sudo exactly when the operation's commands do."""
    from pyinfra import state

    current = dict(target.current_op_global_arguments or {})
    arguments, _ = pop_global_arguments(state, target, current)
    return {key: arguments[key] for key in CONNECTOR_ARGUMENT_KEYS if key in arguments}


def run_checked(state: Any, target: Any, command: str, what: str) -> str:
    """Run ``command`` on ``target`` with the operation's sudo settings; its stdout, or an
    OperationError saying ``what`` failed, with the command's stderr (never its stdout)."""
    ok, output = target.run_shell_command(
        StringCommand(command),
        print_input=state.print_input,
        print_output=state.print_output,
        **connector_arguments(target),
    )
    if not ok:
        raise OperationError(f"{what} failed on {target.name}: {output.stderr.strip()}")
    return output.stdout


def run_quiet(target: Any, command: str, what: str) -> str:
    """As :func:`run_checked`, but the command's output is never printed, whatever the
    verbosity (it may hold secrets: a configuration file, a log); the command itself is."""
    ok, output = target.run_shell_command(
        StringCommand(command), print_output=False, **connector_arguments(target)
    )
    if not ok:
        raise OperationError(f"{what} failed on {target.name}: {output.stderr.strip()}")
    return output.stdout


def _owner_expression() -> str:
    """Shell: the SSH user (sudo sets SUDO_USER), or the current user without sudo."""
    return '"${SUDO_USER:-$(id -un)}"'


def upload_private(state: Any, target: Any, content: bytes, dest: str) -> None:
    """Upload ``content`` to ``dest`` (any directory, root-owned ones included) so that no
    other user can read it on the way: ``dest`` and the SSH user's temporary file are created
    0600 before a byte is written. Works with and without sudo; on failure both are removed.
    """
    temp = f"/tmp/mmpush-upload-{secrets.token_hex(8)}"
    prepare = (
        f"set -eu; umask 077; rm -f -- {q(dest)}; install -m 600 /dev/null {q(dest)}; "
        f"rm -f -- {q(temp)}; install -m 600 -o {_owner_expression()} /dev/null {q(temp)}"
    )
    run_checked(state, target, bash(prepare), f"preparing the upload of {dest}")
    uploaded = False
    try:
        uploaded = bool(
            target.put_file(
                BytesIO(content),
                dest,
                remote_temp_filename=temp,
                print_output=state.print_output,
                print_input=state.print_input,
                **connector_arguments(target),
            )
        )
    except OSError as error:
        logger.error(f"    [{target.name}] upload of {dest} failed: {error}")
    finally:
        cleanup = f"rm -f -- {q(temp)}" + ("" if uploaded else f" {q(dest)}")
        target.run_shell_command(StringCommand(cleanup), **connector_arguments(target))
    if not uploaded:
        raise OperationError(f"could not upload {dest} to {target.name} (disk full?)")


def upload_command(content: bytes, dest: str) -> FunctionCommand:
    """A command that uploads ``content`` to ``dest`` privately (see :func:`upload_private`)."""
    return FunctionCommand(_upload, (content, dest), {})


def _upload(state: Any, host: Any, content: bytes, dest: str) -> bool:
    try:
        upload_private(state, host, content, dest)
    except OperationError as error:
        host.log_styled(str(error), fg="red", log_func=logger.error)
        return False
    return True


def read_private_file(target: Any, path: str) -> bytes | None:
    """The exact bytes of a file that may hold secrets (config.json holds the database DSN),
    or None when it does not exist. Downloaded through a 0600 copy only the SSH user can read,
    never printed (a fact's output is, with ``-vvv``)."""
    arguments = connector_arguments(target)
    temp = f"/tmp/mmpush-read-{secrets.token_hex(8)}"
    script = (
        f"set -euo pipefail; umask 077; if [ ! -f {q(path)} ]; then echo MISSING; exit 0; fi; "
        f"install -m 600 -o {_owner_expression()} /dev/null {q(temp)}; "
        f"cat -- {q(path)} > {q(temp)}; echo COPIED"
    )
    ok, output = target.run_shell_command(StringCommand(bash(script)), **arguments)
    if not ok:
        raise OperationError(f"cannot read {path} on {target.name}: {output.stderr.strip()}")
    if output.stdout.strip() == "MISSING":
        return None
    try:
        buffer = BytesIO()
        # the copy belongs to the SSH user: fetched directly, without sudo
        if not target.connector.get_file(temp, buffer):
            raise OperationError(f"cannot download {path} from {target.name}")
        return buffer.getvalue()
    finally:
        target.run_shell_command(StringCommand(f"rm -f -- {q(temp)}"), **arguments)


# --- JSON config files (Mattermost's config.json) ------------------------------------------


@operation()
def json_values(
    path: str,
    values: Mapping[tuple[str, ...], Any],
    backup: bool = True,
    precheck: str | None = None,
):
    """Set ``values`` (key path -> value) in a JSON file; every other byte stays as it was.

    A file that is not valid JSON is never overwritten: the operation fails, naming it.
    The new content is uploaded beside the file (born 0600), given the old file's owner and
    mode, checked, then renamed over it (atomic), but only if the file still holds what was
    read while preparing. The old file is kept as ``<path>.bak.<UTC timestamp>``, checked
    before anything is replaced. A symlinked file is edited at its target (the link stays).
    ``precheck``: a shell command that must succeed on the host before anything changes
    (run only when something would change; its stderr is the operation's error).

        json_values(
            name="Point Mattermost at the push proxy",
            path="/opt/mattermost/config/config.json",
            values={("EmailSettings", "PushNotificationServer"): "https://push.example.com"},
        )
    """
    info = host.get_fact(PrivateFileState, path=path)
    if not info["exists"]:
        raise OperationError(f"{path} does not exist on {host.name}")
    raw = read_private_file(host, path)
    if raw is None:
        raise OperationError(f"{path} does not exist on {host.name}")
    try:
        text = raw.decode("utf-8")
        parse_object(text)  # refuses what is not a JSON object
        new_text = set_values(text, values)
    except (UnicodeDecodeError, JsonEditError) as error:
        raise OperationError(
            f"{path} on {host.name} is not valid JSON ({error}); it was left untouched"
        ) from error
    if new_text == text:
        host.noop(f"{path} already has these settings")
        return
    if not info["writable"]:
        raise HostNotChangeable(
            f"{path} on {host.name} cannot be changed: {info['target']} or its directory is "
            "not writable (a read-only mount?); it was left untouched and nothing was changed on "
            "any host"
        )
    for keys, value in values.items():
        old = effective_value(text, keys)
        old = None if old is MISSING else old
        if old != value:
            logger.info(f"    [{host.name}] {'.'.join(keys)}: {old!r} -> {value!r}")
    new_bytes = new_text.encode()
    if precheck:
        yield bash(precheck)
    staged = temp_beside(info["target"], "mmpush-upload")
    yield upload_command(new_bytes, staged)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    yield bash(
        replace_file_script(
            FileChange(path, staged, hashlib.sha256(new_bytes).hexdigest()),
            expected_sha256=hashlib.sha256(raw).hexdigest(),
            backup_suffix=f".bak.{stamp}" if backup else None,
            follow_symlink=True,
        )
    )


# --- secrets ------------------------------------------------------------------------------


@operation()
def secret_file(dest: str, secret: Secret, user: str, group: str, mode: str = "600"):
    """Install a credential file: compared by sha256, never diffed or printed.

    The content is uploaded beside ``dest`` (born 0600), checked, given owner and mode, then
    renamed into place.

        secret_file(name="APNs key", dest="/etc/mattermost-push-proxy/credentials/apns.p8",
                    secret=settings.eas.apple[0].auth_key, user="svc", group="svc")
    """
    info = host.get_fact(File, path=dest)
    same_content = info and host.get_fact(Sha256File, path=dest) == secret.sha256
    # pyinfra's File fact gives the mode as the octal digits read as a number (600)
    same_meta = info and (info["user"], info["group"], str(info["mode"])) == (user, group, mode)
    if same_content and same_meta:
        host.noop(f"{dest} is up to date")
        return
    if same_content:
        yield f"chown {q(user)}:{q(group)} {q(dest)} && chmod {mode} {q(dest)}"
        return
    logger.info(f"    [{host.name}] {dest}: new content from {secret.source} (not shown)")
    staged = temp_beside(dest, "mmpush-upload")
    yield upload_command(secret.content, staged)
    yield bash(
        replace_file_script(
            FileChange(dest, staged, secret.sha256, mode=mode), owner=f"{user}:{group}"
        )
    )


# --- NGINX -----------------------------------------------------------------------------------


@operation()
def nginx_files(files: Mapping[str, str | None], skip_if_exists: str | None = None):
    """Make NGINX's config files say ``files`` (path -> content, None = must not exist), as
    one transaction: save every file (checked copies), write them all, run ``nginx -t``, and
    reload only if it passes. If anything fails, every file is put back from its checked copy
    (NGINX never loaded the new config, so the old one keeps serving) and the operation fails
    with the reason (nginx -t's message).

        nginx_files(name="Push front", files={
            "/etc/nginx/conf.d/mmpush-push.conf": rendered,
            "/etc/nginx/sites-enabled/default": None,
        })

    ``skip_if_exists``: do nothing when that file exists on the host (checked when the
    operation runs), e.g. a bootstrap config that is only needed until a certificate exists.
    """
    if skip_if_exists and host.get_fact(File, path=skip_if_exists):
        host.noop(f"{skip_if_exists} exists")
        return
    changed = nginx_changes(files)
    if not changed:
        host.noop("NGINX configuration is up to date")
        return
    yield from nginx_transaction(changed)


def nginx_changes(files: Mapping[str, str | bytes | None]) -> dict[str, bytes | None]:
    """The subset of ``files`` whose content (or absence) differs on the host."""
    changed: dict[str, bytes | None] = {}
    for path, content in files.items():
        current = host.get_fact(Sha256File, path=path)
        exists = current is not None or host.get_fact(Link, path=path)
        if content is None:
            if exists:
                changed[path] = None
            continue
        data = content.encode() if isinstance(content, str) else content
        if current != hashlib.sha256(data).hexdigest():
            changed[path] = data
    return changed


def nginx_transaction(changed: Mapping[str, bytes | None], start_if_stopped: bool = True):
    """The commands of one NGINX transaction (see :func:`nginx_files`): upload the new files
    to the staging directory, then run the checked transaction script."""
    token = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    yield prepare_staging()
    changes = []
    for index, (path, content) in enumerate(changed.items()):
        logger.info(f"    [{host.name}] {'remove' if content is None else 'write'} {path}")
        if content is None:
            changes.append(FileChange(path, None))
            continue
        staged = f"{STAGING_DIR}/nginx-{token}-{index}"
        yield upload_command(content, staged)
        changes.append(FileChange(path, staged, hashlib.sha256(content).hexdigest()))
    yield bash(
        nginx_transaction_script(
            changes, f"{BACKUP_DIR}/nginx-{token}", start_if_stopped=start_if_stopped
        )
    )


def prepare_staging() -> str:
    """The command that creates the private staging directory (root, 0700)."""
    return f"install -d -m 700 {q(STAGING_DIR)} {q(BACKUP_DIR)}"


# --- releases ------------------------------------------------------------------------------


@operation()
def release(root: str, artifact: PushProxyArtifact, binary: str, url: str | None = None):
    """Unpack a release archive into ``<root>/releases/<version>``, checked against its
    pinned sha256 before anything is unpacked. A URL is downloaded by the host; a local
    archive (air-gapped sites) is uploaded. A mismatch fails the operation and leaves every
    installed release (and the running one) untouched.

        release(name="Push proxy 6.5.0", root="/opt/mattermost-push-proxy",
                artifact=settings.eas.artifact, binary="bin/mattermost-push-proxy")
    """
    target = f"{root}/releases/{artifact.version}"
    marker = f"{target}/.mmpush-sha256"
    installed = host.get_fact(FileBytes, path=marker)
    if installed is not None and installed.decode().strip() == artifact.sha256:
        host.noop(f"release {artifact.version} is installed")
        return
    download = f"{root}/releases/.{artifact.version}.tar.gz"
    yield f"mkdir -p {q(root)}/releases && rm -f {q(download)}"
    if artifact.archive is not None:
        yield upload_command(artifact.archive.read_bytes(), download)
    else:
        source = url or artifact.url
        assert source is not None
        yield bash(
            "set -euo pipefail; "
            f"curl -fsSL --proto '=https' --retry 3 --max-time 300 -o {q(download)} {q(source)}"
            f" || {{ rm -f -- {q(download)}; echo 'mmpush: could not download {source}' >&2;"
            " exit 1; }"
        )
    unpack = f"{root}/releases/.{artifact.version}.unpack"
    yield bash(
        release_unpack_script(
            download, unpack, target, artifact.sha256, binary, f"push proxy {artifact.version}"
        )
    )


@operation()
def symlink(path: str, target: str):
    """Point the symlink ``path`` at ``target``, switched atomically (rename over the old
    link), so a service never sees it missing.

        symlink(name="Use 6.5.0", path="/opt/x/current", target="/opt/x/releases/6.5.0")
    """
    link = host.get_fact(Link, path=path)
    if link and link.get("link_target") == target:
        host.noop(f"{path} -> {target}")
        return
    temp = temp_beside(path)
    yield f"ln -sfn {q(target)} {q(temp)} && mv -fT {q(temp)} {q(path)}"


# --- users ----------------------------------------------------------------------------------


@operation()
def system_user(user: str, home: str, shell: str = "/usr/sbin/nologin"):
    """A system user and its group, created when missing. An existing user is kept as it is
    (it may be running the service right now: taking over a hand-made install must not fail
    on ``usermod``), and never read from /etc/shadow (pyinfra's Users fact reads password
    hashes, and prints them with ``-vvv``).

        system_user(name="System user svc", user="svc", home="/opt/svc")
    """
    if host.get_fact(SystemUser, user=user) is not None:
        host.noop(f"user {user} exists")
        return
    yield (
        f"useradd --system --user-group --home-dir {q(home)} --no-create-home "
        f"--shell {q(shell)} {q(user)}"
    )


# --- ordering ----------------------------------------------------------------------------


@operation()
def barrier(reason: str):
    """Nothing, on every host: called at the same place for all hosts, it makes every
    operation before it (on any host) run before any operation after it. pyinfra orders each
    host's operations, not operations of different hosts; an operation reached by every host
    from one place in the code is one step for all of them, so it joins their orders.

        barrier(name="Push proxies are ready", reason="Mattermost servers check them next")
    """
    host.noop(reason)
    return
    yield


# --- restarts ---------------------------------------------------------------------------------


def restart_if_changed(service: str, changes: list[OperationMeta], name: str) -> None:
    """Restart ``service`` after any of ``changes`` changed something.

    The restart is only planned when one of them will change (so ``--dry`` lists it only
    then), and only runs when one of them did.

        restart_if_changed("mattermost", [config_op], name="Restart Mattermost")
    """
    if any(change.will_change for change in changes):
        systemd.service(name=name, service=service, restarted=True, _if=any_changed(*changes))


#: Services whose restart failed in this run, with the hosts: later batches of the same
#: service are not restarted (a bad change must not take a whole cluster down).
FAILED_RESTARTS: dict[str, list[str]] = {}


@operation()
def restart_and_wait(service: str, ping_url: str, timeout: int = 180):
    """Restart ``service`` and wait until ``ping_url`` answers on the host again (bounded).
    Run with ``_parallel=N``: at most N servers are down at a time, and once one of them does
    not come back, the servers of later batches are not restarted at all (the run fails,
    naming them and the one that did not come back).

        restart_and_wait(name="Restart Mattermost", service="mattermost",
                         ping_url="http://127.0.0.1:8065/api/v4/system/ping", _parallel=1)
    """
    yield FunctionCommand(_restart_and_wait, (service, ping_url, timeout), {})


def restart_and_wait_script(service: str, ping_url: str, timeout: int) -> str:
    """The host side of :func:`restart_and_wait`."""
    return "\n".join(
        [
            "set -euo pipefail",
            f"systemctl restart {q(service)} || true",
            f"deadline=$((SECONDS + {int(timeout)}))",
            f"until curl -sf --noproxy '*' --max-time 5 -o /dev/null {q(ping_url)}; do",
            # failed, or failed and waiting to be started again by Restart=
            f'  if systemctl is-failed --quiet {q(service)} || [ "$(systemctl show -p SubState '
            f'--value {q(service)})" = auto-restart ]; then',
            f"    echo 'mmpush: {service} did not come back after the restart "
            f"(systemctl status {service})' >&2; exit 1",
            "  fi",
            '  if [ "$SECONDS" -ge "$deadline" ]; then',
            f"    echo 'mmpush: {service} does not answer {ping_url} {timeout} s after the "
            "restart' >&2; exit 1",
            "  fi",
            "  sleep 1",
            "done",
        ]
    )


def _restart_and_wait(state: Any, host: Any, service: str, ping_url: str, timeout: int) -> bool:
    failed = FAILED_RESTARTS.get(service)
    if failed:
        host.log_styled(
            f"{service} was not restarted: {', '.join(failed)} did not come back after its "
            "restart, so no other server is restarted in this run. This server runs its old "
            "settings; its new ones are on disk and apply at its next restart.",
            fg="red",
            log_func=logger.error,
        )
        return False
    try:
        run_checked(
            state,
            host,
            bash(restart_and_wait_script(service, ping_url, timeout)),
            f"restarting {service}",
        )
    except OperationError as error:
        FAILED_RESTARTS.setdefault(service, []).append(host.name)
        host.log_styled(str(error), fg="red", log_func=logger.error)
        return False
    return True


def daemon_reload_if_changed(unit_file: OperationMeta) -> None:
    """``systemctl daemon-reload`` after a unit file changed (planned only if it will)."""
    if unit_file.will_change:
        systemd.daemon_reload(name="systemd daemon-reload", _if=unit_file.did_change)
