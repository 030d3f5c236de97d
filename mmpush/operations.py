"""Custom pyinfra operations: each one idempotent, atomic on the host, and honest in --dry.

json_values(name="Push settings", path="/opt/mattermost/config/config.json",
            values={("EmailSettings", "SendPushNotifications"): True})
secret_file(name="APNs key", dest="/etc/x/key.p8", secret=secret, user="svc", group="svc")
nginx_files(name="NGINX config", files={"/etc/nginx/conf.d/site.conf": text})
release(name="Push proxy 6.5.0", root="/opt/mattermost-push-proxy", artifact=artifact)
symlink(name="Switch release", path="/opt/x/current", target="/opt/x/releases/6.5.0")
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shlex
from collections.abc import Mapping
from io import BytesIO
from pathlib import PurePosixPath
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File, Link, Sha256File
from pyinfra.operations import systemd
from pyinfra.operations.util import any_changed

from mmpush.facts import FileBytes
from mmpush.jsonedit import JsonEditError, parse_object, set_values
from mmpush.settings import PushProxyArtifact, Secret


def q(value: str) -> str:
    """Shell-quote one word."""
    return shlex.quote(value)


def _temp_path(dest: str) -> str:
    """A temporary name next to ``dest`` (same directory, same permissions, atomic mv)."""
    path = PurePosixPath(dest)
    return str(path.with_name(f".{path.name}.mmpush-new"))


# --- JSON config files (Mattermost's config.json) ------------------------------------------


@operation()
def json_values(path: str, values: Mapping[tuple[str, ...], Any], backup: bool = True):
    """Set ``values`` (key path -> value) in a JSON file; every other byte stays as it was.

    A file that is not valid JSON is never overwritten: the operation fails, naming it.
    The new file is written next to the old one, given its owner and mode, then renamed
    over it (atomic); the old one is kept as ``<path>.bak.<UTC timestamp>``.

        json_values(
            name="Point Mattermost at the push proxy",
            path="/opt/mattermost/config/config.json",
            values={("EmailSettings", "PushNotificationServer"): "https://push.example.com"},
        )
    """
    raw = host.get_fact(FileBytes, path=path)
    if raw is None:
        raise OperationError(f"{path} does not exist on {host.name}")
    try:
        text = raw.decode("utf-8")
        current = parse_object(text)
        new_text = set_values(text, values)
    except (UnicodeDecodeError, JsonEditError) as error:
        raise OperationError(
            f"{path} on {host.name} is not valid JSON ({error}); it was left untouched"
        ) from error
    if new_text == text:
        host.noop(f"{path} already has these settings")
        return
    for keys, value in values.items():
        old = _lookup(current, keys)
        if old != value:
            logger.info(f"    [{host.name}] {'.'.join(keys)}: {old!r} -> {value!r}")
    temp = _temp_path(path)
    yield FileUploadCommand(BytesIO(new_text.encode()), temp, remote_temp_filename=temp)
    commands = [
        f"chown --reference={q(path)} {q(temp)}",
        f"chmod --reference={q(path)} {q(temp)}",
    ]
    if backup:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        commands.append(f"cp -p {q(path)} {q(path + '.bak.' + stamp)}")
    commands.append(f"mv -f {q(temp)} {q(path)}")
    yield " && ".join(commands)


def _lookup(document: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


# --- secrets ------------------------------------------------------------------------------


@operation()
def secret_file(dest: str, secret: Secret, user: str, group: str, mode: str = "600"):
    """Install a credential file: compared by sha256, never diffed or printed.

    The content is uploaded next to ``dest`` (its directory must already be private), given
    owner and mode, then renamed into place.

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
    temp = _temp_path(dest)
    yield f"rm -f {q(temp)} && install -m 600 /dev/null {q(temp)}"
    yield FileUploadCommand(BytesIO(secret.content), temp, remote_temp_filename=temp)
    owner = f"{q(user)}:{q(group)}"
    yield f"chown {owner} {q(temp)} && chmod {mode} {q(temp)} && mv -f {q(temp)} {q(dest)}"


# --- NGINX -----------------------------------------------------------------------------------


@operation()
def nginx_files(files: Mapping[str, str | None], skip_if_exists: str | None = None):
    """Make NGINX's config files say ``files`` (path -> content, None = must not exist), as
    one transaction: write them all, run ``nginx -t``, and reload only if it passes. If it
    fails, every file is put back as it was (NGINX never loaded the new config, so the old
    one keeps serving) and the operation fails with nginx -t's message.

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
    changed: dict[str, str | None] = {}
    for path, content in files.items():
        current = host.get_fact(Sha256File, path=path)
        exists = current is not None or host.get_fact(Link, path=path)
        if content is None:
            if exists:
                changed[path] = None
        elif current != hashlib.sha256(content.encode()).hexdigest():
            changed[path] = content
    if not changed:
        host.noop("NGINX configuration is up to date")
        return
    yield f"rm -rf {NGINX_STAGING} && mkdir -p {NGINX_STAGING} && chmod 700 {NGINX_STAGING}"
    for index, (path, content) in enumerate(changed.items()):
        logger.info(f"    [{host.name}] {'remove' if content is None else 'write'} {path}")
        if content is not None:
            staged = f"{NGINX_STAGING}/new-{index}"
            yield FileUploadCommand(BytesIO(content.encode()), staged, remote_temp_filename=staged)
    yield StringCommand(nginx_transaction_script(changed))


#: Where nginx_files stages new files and keeps the old ones during a transaction: outside
#: every directory NGINX includes (a backup in sites-enabled/ would be loaded as a site).
NGINX_STAGING = "/var/lib/mmpush/nginx-transaction"


def nginx_transaction_script(changed: Mapping[str, str | None]) -> str:
    """The shell transaction behind :func:`nginx_files`: new files are already staged as
    ``NGINX_STAGING/new-<i>``; old ones are saved as ``old-<i>`` until nginx -t passes."""
    save, apply, rollback = [], [], []
    for index, (path, content) in enumerate(changed.items()):
        old = f"{NGINX_STAGING}/old-{index}"
        save.append(f"if [ -e {q(path)} ] || [ -L {q(path)} ]; then cp -a {q(path)} {old}; fi")
        if content is None:
            apply.append(f"rm -f {q(path)}")
        else:
            apply.append(f"mkdir -p {q(str(PurePosixPath(path).parent))}")
            # rm first: a symlink must be replaced, never written through to its target
            apply.append(f"rm -f {q(path)} && cp {NGINX_STAGING}/new-{index} {q(path)}")
        rollback.append(
            f"if [ -e {old} ] || [ -L {old} ]; then rm -f {q(path)}; mv -fT {old} {q(path)}; "
            f"else rm -f {q(path)}; fi"
        )
    return "\n".join(
        [
            "set -u",
            *save,
            *apply,
            "if ! nginx -t -q; then",
            *(f"  {line}" for line in rollback),
            f"  rm -rf {NGINX_STAGING}",
            "  echo 'nginx -t failed: the new configuration was rolled back and NGINX was not"
            " reloaded; it still serves the previous configuration' >&2",
            "  exit 1",
            "fi",
            f"rm -rf {NGINX_STAGING}",
            "if systemctl is-active --quiet nginx; then systemctl reload nginx;"
            " else systemctl start nginx; fi",
        ]
    )


# --- releases ------------------------------------------------------------------------------


@operation()
def release(root: str, artifact: PushProxyArtifact, binary: str):
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
        yield FileUploadCommand(str(artifact.archive), download, remote_temp_filename=download)
    else:
        assert artifact.url is not None
        yield (
            f"curl -fsSL --proto '=https' --retry 3 --max-time 300 -o {q(download)} "
            f"{q(artifact.url)}"
        )
    unpack = f"{root}/releases/.{artifact.version}.unpack"
    yield "\n".join(
        [
            "set -eu",
            f"actual=$(sha256sum {q(download)} | cut -d' ' -f1)",
            f'if [ "$actual" != {q(artifact.sha256)} ]; then',
            f"  rm -f {q(download)}",
            f'  echo "sha256 mismatch for push proxy {artifact.version}: expected '
            f'{artifact.sha256}, got $actual; nothing was installed" >&2',
            "  exit 1",
            "fi",
            f"rm -rf {q(unpack)} && mkdir -p {q(unpack)}",
            f"tar -xzf {q(download)} -C {q(unpack)} --no-same-owner --strip-components=1",
            f"if [ ! -x {q(unpack + '/' + binary)} ]; then",
            f"  rm -rf {q(unpack)} {q(download)}",
            f"  echo 'the archive has no executable {binary}: not a push proxy release' >&2",
            "  exit 1",
            "fi",
            f"echo {q(artifact.sha256)} > {q(unpack)}/.mmpush-sha256",
            f"chmod -R go-w {q(unpack)}",
            f"rm -rf {q(target)} && mv {q(unpack)} {q(target)} && rm -f {q(download)}",
        ]
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
    temp = _temp_path(path)
    yield f"ln -sfn {q(target)} {q(temp)} && mv -fT {q(temp)} {q(path)}"


# --- restarts ---------------------------------------------------------------------------------


def restart_if_changed(service: str, changes: list[OperationMeta], name: str) -> None:
    """Restart ``service`` after any of ``changes`` changed something.

    The restart is only planned when one of them will change (so ``--dry`` lists it only
    then), and only runs when one of them did.

        restart_if_changed("mattermost", [config_op], name="Restart Mattermost")
    """
    if any(change.will_change for change in changes):
        systemd.service(name=name, service=service, restarted=True, _if=any_changed(*changes))


def daemon_reload_if_changed(unit_file: OperationMeta) -> None:
    """``systemctl daemon-reload`` after a unit file changed (planned only if it will)."""
    if unit_file.will_change:
        systemd.daemon_reload(name="systemd daemon-reload", _if=unit_file.did_change)
