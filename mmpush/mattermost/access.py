"""The config API of a Mattermost server, as a deploy reaches it: through the local-mode socket
on the server itself (commands run over SSH, answers downloaded without being printed), or
over the network with a system admin's token (from the control node).

    access = api_access(settings, source)          # SocketAccess or TokenAccess
    config = access.get(host)                      # the effective configuration (sanitised)
    access.patch(host, {"EmailSettings": {"SendPushNotifications": True}})

Both raise :class:`~mmpush.mattermost.api.ConfigApiError` with a sentence naming where.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Protocol

from pyinfra.api import StringCommand

from mmpush.mattermost.api import (
    ConfigApiError,
    TokenApi,
    license_command,
    parse_api_answer,
    parse_socket_answer,
    patch_body,
    socket_get_command,
    socket_patch_command,
    socket_reload_command,
)
from mmpush.mattermost.source import ConfigSource
from mmpush.operations import connector_arguments, upload_private
from mmpush.settings import MattermostSettings
from mmpush.transactions import bash, q


class ConfigAccess(Protocol):
    """One server's config API."""

    #: For messages: "the local-mode socket /var/tmp/mattermost_local.socket on mm2".
    where: str

    def get(self, target: Any) -> dict[str, Any]: ...

    def patch(self, target: Any, patch: dict[str, Any]) -> dict[str, Any]: ...

    def reload(self, target: Any) -> None: ...


def _run_to_private_file(target: Any, build: Any, what: str) -> tuple[str, bytes]:
    """Run the command ``build(out_path)`` on ``target`` (with the deploy's sudo), then
    download ``out_path`` (0600, the SSH user's) without printing it; (stdout, content)."""
    out = f"/tmp/mmpush-api-{secrets.token_hex(8)}"
    arguments = connector_arguments(target)
    try:
        ok, output = target.run_shell_command(StringCommand(bash(build(out))), **arguments)
        if not ok:
            raise ConfigApiError(f"{what} failed on {target.name}: {output.stderr.strip()}")
        buffer = BytesIO()
        if not target.connector.get_file(out, buffer):
            raise ConfigApiError(f"{what}: the answer could not be downloaded from {target.name}")
        return output.stdout, buffer.getvalue()
    finally:
        target.run_shell_command(StringCommand(f"rm -f -- {q(out)}"), **arguments)


@dataclass(frozen=True)
class SocketAccess:
    """The local-mode socket on the server (what ``mmctl --local`` uses): no token needed."""

    socket: str

    @property
    def where(self) -> str:
        return f"the local-mode socket {self.socket}"

    def get(self, target: Any) -> dict[str, Any]:
        stdout, body = _run_to_private_file(
            target, lambda out: socket_get_command(self.socket, out), "reading the config"
        )
        return parse_socket_answer(stdout, body, self.socket)

    def patch(self, target: Any, patch: dict[str, Any]) -> dict[str, Any]:
        from pyinfra import state

        body_path = f"/tmp/mmpush-patch-{secrets.token_hex(8)}.json"
        upload_private(state, target, patch_body(patch), body_path)
        stdout, body = _run_to_private_file(
            target,
            lambda out: socket_patch_command(self.socket, body_path, out),
            "patching the config",
        )
        return parse_socket_answer(stdout, body, self.socket)

    def reload(self, target: Any) -> None:
        stdout, body = _run_to_private_file(
            target, lambda out: socket_reload_command(self.socket, out), "reloading the config"
        )
        parse_socket_answer(stdout, body, self.socket)


@dataclass(frozen=True)
class TokenAccess:
    """``mattermost_api_url`` with a system admin's personal access token, from the control
    node (the token never reaches a host or a command line)."""

    api: TokenApi

    @property
    def where(self) -> str:
        return self.api.where

    def get(self, target: Any) -> dict[str, Any]:
        return self.api.get_config()

    def patch(self, target: Any, patch: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch_config(patch)

    def reload(self, target: Any) -> None:
        self.api.reload_config()


def api_access(settings: MattermostSettings, source: ConfigSource) -> ConfigAccess | None:
    """How to reach this server's config API: its local-mode socket when it has one (as
    detected), else the token over ``mattermost_api_url``; None when neither is set up."""
    if source.socket:
        return SocketAccess(source.socket)
    if settings.api_url and settings.admin_token is not None:
        token = settings.admin_token.content.decode().strip()
        return TokenAccess(TokenApi(settings.api_url, token, ca_bundle=settings.api_ca_bundle))
    return None


def read_licence(target: Any, settings: MattermostSettings) -> dict[str, Any] | None:
    """The server's licence summary (``IsLicensed``, features), from its own HTTP listener on
    the host (what ``mattermost_ping_url`` points at), or from the API with the token; None
    when it cannot be read (the caller warns)."""
    if settings.api_url and settings.admin_token is not None:
        token = settings.admin_token.content.decode().strip()
        try:
            return dict(TokenApi(settings.api_url, token, settings.api_ca_bundle).license())
        except ConfigApiError:
            return None
    base = settings.ping_url.split("/api/", 1)[0]
    try:
        stdout, body = _run_to_private_file(
            target, lambda out: license_command(base, out), "reading the licence"
        )
        status = stdout.strip().splitlines()[-1:] or [""]
        return parse_api_answer(int(status[0]), body, base) if status[0].isdigit() else None
    except (ConfigApiError, ValueError):
        return None
