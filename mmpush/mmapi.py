"""A tiny client of the Mattermost REST API (v4), enough to do what users do to make the
server send a push notification: log in, register a phone, send a direct message.
Used by the lab tests and `mmpush lab send-dm`.

    mm = MattermostClient("http://mm.lab.test:8065")   # in the lab: http://10.77.44.11:8065
    post = send_direct_message(mm, "accounta", "accountb", "Hello", "apple_rn-v2:devicetoken")
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

LAB_PASSWORD = "Password1!"  # the Mattermost emulator's seeded users (lab only)


@dataclass
class MattermostClient:
    base_url: str
    timeout: float = 30

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        """One API call; returns the decoded JSON answer, raises on an HTTP error."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: HTTP {error.code} {error.read()!r}") from error

    def login(self, username: str, password: str = LAB_PASSWORD) -> tuple[str, dict[str, Any]]:
        """Log in; returns (session token, user)."""
        body = json.dumps({"login_id": username, "password": password}).encode()
        request = urllib.request.Request(self.base_url + "/api/v4/users/login", data=body)
        request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=self.timeout) as reply:
            return reply.headers["Token"], json.loads(reply.read())


def send_direct_message(
    mm: MattermostClient, sender: str, recipient: str, text: str, device_id: str
) -> dict[str, Any]:
    """What a user pair does: the recipient's phone registers ``device_id``; the sender opens
    a DM and posts ``text``. The server then pushes to the recipient's device."""
    token_from, user_from = mm.login(sender)
    token_to, user_to = mm.login(recipient)
    mm.call("PUT", "/api/v4/users/sessions/device", token_to, {"device_id": device_id})
    channel = mm.call(
        "POST", "/api/v4/channels/direct", token_from, [user_from["id"], user_to["id"]]
    )
    return mm.call(
        "POST", "/api/v4/posts", token_from, {"channel_id": channel["id"], "message": text}
    )
