"""A tiny client of the Mattermost REST API (v4): what users do to make the server send a push
notification (log in, register a phone, send a direct message, set a status), and what an admin
does to its configuration (read it, patch it, personal access tokens), over HTTP(S) with a
token or over the local-mode unix socket as ``mmctl --local`` does.
Used by the lab tests and `mmpush lab send-dm`.

    mm = MattermostClient("http://mm.lab.test:8065")   # in the lab: http://10.77.44.11:8065
    post = send_direct_message(mm, "accounta", "accountb", "Hello", "apple_rn-v2:devicetoken")

    local = LocalModeClient("/var/tmp/mattermost_local.socket")
    local.patch_config({"EmailSettings": {"PushNotificationContents": "generic"}})

Tokens are sent, never printed: errors name the call, the HTTP status and the server's error id.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

LAB_PASSWORD = "Password1!"  # the Mattermost emulator's seeded users (lab only)
DEFAULT_LOCAL_SOCKET = "/var/tmp/mattermost_local.socket"  # ServiceSettings default


class MattermostApiError(AssertionError):
    """An API call answered with an HTTP error. Subclasses AssertionError, which is what
    ``MattermostClient.call`` always raised, so existing callers keep working.

    ``status`` is the HTTP status; ``error_id`` and ``server_message`` come from the server's
    AppError JSON ({"id", "message", ...}) when it sent one."""

    def __init__(self, method: str, path: str, status: int, body: bytes):
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.error_id = ""
        self.server_message = ""
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
        if isinstance(data, dict):
            self.error_id = str(data.get("id", ""))
            self.server_message = str(data.get("message", ""))
        super().__init__(f"{method} {path}: HTTP {status} {body!r}")


def _decode(raw: bytes) -> Any:
    return json.loads(raw or b"null")


@dataclass
class MattermostClient:
    base_url: str
    timeout: float = 30

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        """One API call; returns the decoded JSON answer, raises MattermostApiError on an HTTP
        error."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as reply:
                return _decode(reply.read())
        except urllib.error.HTTPError as error:
            raise MattermostApiError(method, path, error.code, error.read()) from error

    def login(self, username: str, password: str = LAB_PASSWORD) -> tuple[str, dict[str, Any]]:
        """Log in; returns (session token, user)."""
        body = json.dumps({"login_id": username, "password": password}).encode()
        request = urllib.request.Request(self.base_url + "/api/v4/users/login", data=body)
        request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=self.timeout) as reply:
            return reply.headers["Token"], json.loads(reply.read())

    # ---- configuration (a system admin's session or personal access token) -----------------

    def get_config(self, token: str) -> dict[str, Any]:
        """GET /api/v4/config: the effective configuration, secrets masked."""
        return self.call("GET", "/api/v4/config", token)

    def patch_config(self, token: str, patch: dict[str, Any]) -> dict[str, Any]:
        """PUT /api/v4/config/patch: only the settings in ``patch`` change; the server saves
        and applies them and answers with the new (masked) configuration."""
        return self.call("PUT", "/api/v4/config/patch", token, patch)

    def get_environment_config(self, token: str) -> dict[str, Any]:
        """GET /api/v4/config/environment: {Section: {Key: true}} for what MM_* variables set
        (a patch of those settings changes nothing)."""
        return self.call("GET", "/api/v4/config/environment", token)

    def reload_config(self, token: str) -> None:
        """POST /api/v4/config/reload: the server reads its configuration store again."""
        self.call("POST", "/api/v4/config/reload", token)

    def create_access_token(
        self, token: str, description: str, user_id: str = "me"
    ) -> dict[str, Any]:
        """POST /api/v4/users/{user_id}/tokens: a personal access token ({"id", "token", ...});
        needs ServiceSettings.EnableUserAccessTokens (HTTP 501 otherwise)."""
        return self.call(
            "POST", f"/api/v4/users/{user_id}/tokens", token, {"description": description}
        )

    # ---- user status ---------------------------------------------------------------------------

    def get_status(self, token: str, user_id: str = "me") -> dict[str, Any]:
        """GET /api/v4/users/{user_id}/status: {"user_id", "status", "manual", ...}."""
        return self.call("GET", f"/api/v4/users/{user_id}/status", token)

    def set_status(self, token: str, user_id: str, status: str) -> dict[str, Any]:
        """PUT /api/v4/users/{user_id}/status: ``online``, ``away``, ``offline`` or ``dnd``.
        With the default push status ("away"), an online user gets no push."""
        return self.call(
            "PUT", f"/api/v4/users/{user_id}/status", token, {"user_id": user_id, "status": status}
        )


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


@dataclass
class LocalModeClient:
    """The local-mode API over ``ServiceSettings.LocalModeSocketLocation`` (no token), as
    ``mmctl --local`` uses it. Only config, license and ping routes exist there; the socket is
    mode 0600, so the caller must be root or the server's user."""

    socket_path: str = DEFAULT_LOCAL_SOCKET
    timeout: float = 30

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call over the socket; the decoded JSON answer, MattermostApiError on an
        HTTP error, OSError when nothing listens there."""
        connection = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            connection.request(method, path, body=data, headers=headers)
            reply = connection.getresponse()
            raw = reply.read()
        finally:
            connection.close()
        if reply.status >= 400:
            raise MattermostApiError(method, path, reply.status, raw)
        return _decode(raw)

    def get_config(self) -> dict[str, Any]:
        return self.call("GET", "/api/v4/config")

    def patch_config(self, patch: dict[str, Any]) -> dict[str, Any]:
        return self.call("PUT", "/api/v4/config/patch", patch)

    def reload_config(self) -> None:
        self.call("POST", "/api/v4/config/reload")


def send_direct_message(
    mm: MattermostClient, sender: str, recipient: str, text: str, device_id: str
) -> dict[str, Any]:
    """What a user pair does: the recipient's phone registers ``device_id``; the sender opens
    a DM and posts ``text``. The server then pushes to the recipient's device, after the post
    is answered (its push hub is asynchronous), and only while the recipient is not online:
    posting makes the sender online, so a reply the other way needs ``set_status`` first."""
    token_from, user_from = mm.login(sender)
    token_to, user_to = mm.login(recipient)
    mm.call("PUT", "/api/v4/users/sessions/device", token_to, {"device_id": device_id})
    channel = mm.call(
        "POST", "/api/v4/channels/direct", token_from, [user_from["id"], user_to["id"]]
    )
    return mm.call(
        "POST", "/api/v4/posts", token_from, {"channel_id": channel["id"], "message": text}
    )
