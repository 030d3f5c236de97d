"""Mattermost's config API, for servers whose configuration lives in the database, and the push
settings logic shared by every config source.

Over HTTPS from the control node, with a system admin's personal access token::

    api = TokenApi("https://mm.example.com", token)
    current = effective_push_settings(api.get_config(), desired.keys())
    patch = config_patch(api.get_config(), desired)     # None: nothing to change
    if patch is not None:
        api.patch_config(patch)

Over the local-mode unix socket on the host (``mmctl --local``: no token, root or the server's
user), as shell commands the deploy runs there; the answers go to private files it downloads::

    run(socket_get_command(socket, out))        # prints the HTTP status; the body is in out
    config = parse_socket_answer(stdout, downloaded_bytes, socket)

Paths as ``server/public/model/client4.go`` uses them: ``GET /api/v4/config``, ``PUT
/api/v4/config/patch`` (``channels/api4/config.go`` and ``config_local.go``), ``POST
/api/v4/config/reload``. The local socket serves no licence route (``api4/license_local.go``
has only POST/DELETE ``/license``): read the licence over HTTP (:meth:`TokenApi.license`, or
:func:`license_command` on the host, unauthenticated).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

import requests

CONFIG_PATH = "/api/v4/config"
PATCH_PATH = "/api/v4/config/patch"
RELOAD_PATH = "/api/v4/config/reload"
LICENSE_PATH = "/api/v4/license/client?format=old"  # format=old: older servers require it

# public/model/push_notification.go: IsMHPNSEndpoint compares the setting with these, exactly.
HPNS_URLS = (
    "https://push.mattermost.com",
    "https://hpns-de.mattermost.com",
    "https://global.push.mattermost.com",
    "https://us.push.mattermost.com",
    "https://eu.push.mattermost.com",
    "https://ap.push.mattermost.com",
)

# What a server uses for a push setting that its configuration leaves out or sets to null
# (public/model/config.go SetDefaults as config.Store.Load reaches it, with SiteURL set first).
PUSH_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("EmailSettings", "SendPushNotifications"): False,
    ("EmailSettings", "PushNotificationServer"): "",
    ("EmailSettings", "PushNotificationContents"): "full",
    ("LogSettings", "FileLevel"): "INFO",
}

_MESSAGE_LIMIT = 200


class ConfigApiError(Exception):
    """A config API call failed; the message is one sentence saying why (never a token).

    ``status`` is the HTTP status (None when no answer came), ``error_id`` the server's
    AppError id (``api.context.session_expired.app_error``...) when it sent one."""

    def __init__(self, message: str, status: int | None = None, error_id: str = ""):
        super().__init__(message)
        self.status = status
        self.error_id = error_id


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


def parse_api_answer(status: int, body: bytes, where: str = "the Mattermost API") -> dict[str, Any]:
    """The JSON object of a config API answer, or :class:`ConfigApiError` with a sentence.
    Shared by :class:`TokenApi` and the local-socket commands (``where`` names the API:
    ``the Mattermost API at https://...`` or ``the local-mode socket /var/tmp/...``).

        parse_api_answer(200, b'{"EmailSettings": {}}')   # {"EmailSettings": {}}
        parse_api_answer(401, b'{"id": "api.context.session_expired.app_error"}')
        # ConfigApiError: the Mattermost API rejected the token (expired, revoked, ...)

    Only the server's error ``id`` and ``message`` are quoted, never ``detailed_error`` (a
    server with EnableDeveloper puts the rejected token there).
    """
    if 200 <= status < 300:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            raise ConfigApiError(
                f"{where} answered HTTP {status} with something that is not JSON "
                "(is it a Mattermost server?)",
                status,
            ) from None
        if not isinstance(data, dict):
            raise ConfigApiError(
                f"{where} answered HTTP {status} with JSON that is not an object "
                "(is it a Mattermost server?)",
                status,
            )
        return data
    error_id, message = _app_error(body)
    detail = f" ({error_id}: {message})" if error_id else ""
    if status == 401:
        text = (
            f"{where} rejected the token (expired, revoked or not a system admin's; personal "
            "access tokens also stop working while ServiceSettings.EnableUserAccessTokens is "
            "off)"
        )
    elif status == 403 and error_id == "ent.cluster.save_config.error":
        text = (
            f"{where} refuses to save configuration changes: the server is clustered with a "
            "file configuration and ClusterSettings.ReadOnlyConfig (move the configuration to "
            f"the database){detail}"
        )
    elif status == 403:
        text = (
            f"{where} refused: the token's user may not manage the system configuration "
            f"(use a system admin's personal access token){detail}"
        )
    elif status == 404:
        text = f"{where} has no such route (HTTP 404): is it a Mattermost server?{detail}"
    elif 300 <= status < 400:
        text = (
            f"{where} answered with a redirect (HTTP {status}): use the URL it redirects to "
            "as mattermost_api_url"
        )
    elif status == 400:
        text = f"{where} refused the change (HTTP 400){detail}"
    else:
        text = f"{where} failed (HTTP {status}){detail}"
    raise ConfigApiError(text, status, error_id)


def _app_error(body: bytes) -> tuple[str, str]:
    """(id, message) of a Mattermost AppError answer, shortened; empty when it is not one."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    error_id = str(data.get("id") or "")[:_MESSAGE_LIMIT]
    message = " ".join(str(data.get("message") or "").split())[:_MESSAGE_LIMIT]
    return error_id, message


# --------------------------------------------------------------------------------------------
# Over HTTPS with a personal access token (control node)
# --------------------------------------------------------------------------------------------


class TokenApi:
    """The config API at ``base_url`` (``https://mm.example.com``, no ``/api/v4``) with a system
    admin's personal access token. ``ca_bundle``: a PEM file to trust instead of the system
    store. Redirects are not followed (the token must not travel elsewhere).

        api = TokenApi("https://mm.example.com", token)
        api.get_config()["EmailSettings"]["PushNotificationServer"]
    """

    def __init__(
        self, base_url: str, token: str, ca_bundle: str | None = None, timeout: float = 15
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.__token = token

    def __repr__(self) -> str:
        return f"TokenApi({self.base_url!r}, token=<hidden>)"

    @property
    def where(self) -> str:
        return f"the Mattermost API at {self.base_url}"

    def get_config(self) -> dict[str, Any]:
        """GET /api/v4/config: the server's effective configuration (secrets masked)."""
        return self._call("GET", CONFIG_PATH)

    def patch_config(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        """PUT /api/v4/config/patch: change only what ``patch`` names ({Section: {Key: v}});
        saved and applied at once, no restart. Answers the new configuration."""
        return self._call("PUT", PATCH_PATH, dict(patch))

    def reload_config(self) -> dict[str, Any]:
        """POST /api/v4/config/reload: read the configuration store again (a node of a
        cluster without Enterprise clustering sees another node's change only then)."""
        return self._call("POST", RELOAD_PATH)

    def license(self) -> dict[str, str]:
        """GET /api/v4/license/client: ``{"IsLicensed": "true", "MHPNS": "true",
        "IDLoadedPushNotifications": "true", ...}`` (strings, as the server sends them)."""
        return {str(k): str(v) for k, v in self._call("GET", LICENSE_PATH).items()}

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """Any API route with the token, e.g. ``api.call("GET", "/api/v4/users/me")``; the
        answer must be a JSON object (the runbooks' end-to-end DM)."""
        return self._call(method, path, body)

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = requests.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {self.__token}", "Accept": "application/json"},
                verify=self.ca_bundle or True,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as error:
            raise ConfigApiError(
                self._scrub(_transport_problem(error, self.base_url, self.timeout))
            ) from None
        try:
            return parse_api_answer(response.status_code, response.content, self.where)
        except ConfigApiError as error:
            raise ConfigApiError(self._scrub(str(error)), error.status, error.error_id) from None

    def _scrub(self, text: str) -> str:
        return text.replace(self.__token, "<token>") if self.__token else text


def _transport_problem(error: Exception, base_url: str, timeout: float) -> str:
    """A sentence for a request that got no HTTP answer."""
    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        found = re.search(r"certificate verify failed: ([^(')\]]+)", text)
        why = f" ({found.group(1).strip()})" if found else ""
        return (
            f"cannot reach {base_url}: its TLS certificate is not trusted{why}; give the CA "
            "that signed it as mattermost_api_ca_bundle, or use a certificate the control node "
            "trusts"
        )
    if isinstance(error, requests.exceptions.Timeout):
        return f"cannot reach {base_url}: no answer within {timeout:g} s"
    if isinstance(error, requests.exceptions.ProxyError):
        return f"cannot reach {base_url} through the HTTPS proxy of the control node's environment"
    if isinstance(
        error,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ),
    ):
        return f"cannot reach {base_url}: it is not a valid http(s) URL (mattermost_api_url)"
    if isinstance(error, requests.exceptions.ConnectionError):
        lowered = text.lower()
        if "refused" in lowered:
            return f"cannot reach {base_url}: connection refused (is Mattermost listening there?)"
        if any(
            marker in lowered
            for marker in (
                "name or service not known",
                "nodename nor servname",
                "temporary failure in name resolution",
                "no address associated",
                "getaddrinfo failed",
                "name resolution",
            )
        ):
            return f"cannot reach {base_url}: its host name does not resolve"
        if "unreachable" in lowered:
            return f"cannot reach {base_url}: network unreachable"
        return f"cannot reach {base_url}: the connection failed"
    return f"cannot reach {base_url}: {type(error).__name__}"


# --------------------------------------------------------------------------------------------
# Over the local-mode socket (shell commands run on the Mattermost host, as root)
# --------------------------------------------------------------------------------------------


def _owner() -> str:
    """The SSH user (sudo sets SUDO_USER), who downloads the answer without sudo."""
    return '"${SUDO_USER:-$(id -un)}"'


def _curl_failed(socket_path: str) -> str:
    return (
        "|| { rc=$?; echo \"mmpush: cannot reach Mattermost's local-mode socket "
        f'{_quote_in_double(socket_path)} (curl exit $rc)" >&2; exit 1; }}'
    )


def _quote_in_double(text: str) -> str:
    return re.sub(r'(["\\$`])', r"\\\1", text)


def socket_get_command(
    socket_path: str, out_path: str, api_path: str = CONFIG_PATH, timeout: float = 15
) -> str:
    """Shell (run as root on the host): GET ``api_path`` over the local-mode socket into
    ``out_path``, created 0600 for the SSH user so the deploy downloads it without printing it;
    prints only the HTTP status (``200``). Fails with a message on stderr when nothing answers
    on the socket.

        socket_get_command("/var/tmp/mattermost_local.socket", "/tmp/mmpush-config-1a2b")
    """
    url = shlex.quote("http://localhost" + api_path)
    return (
        f"set -eu; umask 077; install -m 600 -o {_owner()} /dev/null {shlex.quote(out_path)}; "
        f"curl --unix-socket {shlex.quote(socket_path)} -sS --max-time {timeout:g} "
        f"-o {shlex.quote(out_path)} -w '%{{http_code}}\\n' {url} {_curl_failed(socket_path)}"
    )


def socket_patch_command(
    socket_path: str, body_path: str, out_path: str, timeout: float = 30
) -> str:
    """Shell (run as root on the host): PUT the JSON in ``body_path`` (uploaded by the deploy,
    see :func:`patch_body`) to ``/api/v4/config/patch`` over the local-mode socket, answer into
    ``out_path`` (0600, the SSH user's); prints only the HTTP status. ``body_path`` is removed
    afterwards, whatever happens.

        socket_patch_command(socket, "/tmp/mmpush-patch-1a2b.json", "/tmp/mmpush-answer-1a2b")
    """
    url = shlex.quote("http://localhost" + PATCH_PATH)
    body = shlex.quote(body_path)
    return (
        f"set -eu; umask 077; trap 'rm -f -- {_quote_in_single(body_path)}' EXIT; "
        f"install -m 600 -o {_owner()} /dev/null {shlex.quote(out_path)}; "
        f"curl --unix-socket {shlex.quote(socket_path)} -sS --max-time {timeout:g} -X PUT "
        f"-H 'Content-Type: application/json' --data-binary @{body} "
        f"-o {shlex.quote(out_path)} -w '%{{http_code}}\\n' {url} {_curl_failed(socket_path)}"
    )


def _quote_in_single(text: str) -> str:
    """``text`` as a shell word inside an outer single-quoted string (a trap's command)."""
    return shlex.quote(text).replace("'", "'\"'\"'")


def socket_reload_command(socket_path: str, out_path: str, timeout: float = 30) -> str:
    """Shell: POST ``/api/v4/config/reload`` over the local-mode socket (see
    :meth:`TokenApi.reload_config`); prints the HTTP status, the answer goes to ``out_path``."""
    url = shlex.quote("http://localhost" + RELOAD_PATH)
    return (
        f"set -eu; umask 077; install -m 600 -o {_owner()} /dev/null {shlex.quote(out_path)}; "
        f"curl --unix-socket {shlex.quote(socket_path)} -sS --max-time {timeout:g} -X POST "
        f"-o {shlex.quote(out_path)} -w '%{{http_code}}\\n' {url} {_curl_failed(socket_path)}"
    )


def license_command(server_url: str, out_path: str, timeout: float = 15) -> str:
    """Shell (on the host): the licence summary from the server's own HTTP listener
    (``http://127.0.0.1:8065``), unauthenticated, into ``out_path``; prints the HTTP status.
    The real server answers ``IsLicensed``, ``MHPNS`` and ``IDLoadedPushNotifications`` without
    a session (``utils/license.go`` ``GetSanitizedClientLicense`` keeps the features)."""
    url = shlex.quote(server_url.rstrip("/") + LICENSE_PATH)
    return (
        f"set -eu; umask 077; install -m 600 -o {_owner()} /dev/null {shlex.quote(out_path)}; "
        f"curl -sS --noproxy '*' --max-time {timeout:g} -o {shlex.quote(out_path)} "
        f"-w '%{{http_code}}\\n' {url} "
        f'|| {{ rc=$?; echo "mmpush: cannot reach Mattermost at {_quote_in_double(server_url)} '
        '(curl exit $rc)" >&2; exit 1; }'
    )


def patch_body(patch: Mapping[str, Any]) -> bytes:
    """The JSON body of a patch, for the file :func:`socket_patch_command` sends."""
    return json.dumps(patch, sort_keys=True).encode()


def parse_socket_answer(stdout: str, body: bytes, socket_path: str) -> dict[str, Any]:
    """The answer of a socket command: ``stdout`` (the HTTP status it printed) and the
    downloaded ``body``; :class:`ConfigApiError` as :func:`parse_api_answer` raises it."""
    where = f"the local-mode socket {socket_path}"
    status_text = stdout.strip().splitlines()[-1:] or [""]
    if not status_text[0].isdigit():
        raise ConfigApiError(f"{where}: no HTTP status came back ({stdout.strip()[:80]!r})")
    return parse_api_answer(int(status_text[0]), body, where)


# --------------------------------------------------------------------------------------------
# Push settings: effective values, the patch, licence problems
# --------------------------------------------------------------------------------------------

_UNSET = object()


def effective_push_settings(
    config: Mapping[str, Any], keys: Iterable[tuple[str, ...]]
) -> dict[tuple[str, ...], Any]:
    """The value the server uses for each key path, read from ``config`` (a config API answer
    or a parsed config.json) as Go's ``encoding/json`` decodes it into ``model.Config``: keys
    match case-insensitively (``emailsettings``, ``PushNotificationSERVER``...), every member
    that matches is applied in order so the last one wins (objects of one section merge), a
    ``null`` leaves the setting unset; an unset setting takes the server's default
    (:data:`PUSH_DEFAULTS`, else None).

        effective_push_settings({"EmailSettings": {"sendpushnotifications": True}},
                                [("EmailSettings", "SendPushNotifications")])
        # {("EmailSettings", "SendPushNotifications"): True}

    jsonedit has no such lookup (it edits by exact key); this is the one the push checks use.
    A Python dict already merged exact duplicate keys (first position, last value), which is
    the only case where it can differ from Go: give ``json.loads(..., object_pairs_hook=list)``
    style input if that matters.
    """
    result: dict[tuple[str, ...], Any] = {}
    for path in keys:
        value = _effective(config, tuple(path))
        result[tuple(path)] = PUSH_DEFAULTS.get(tuple(path)) if value is _UNSET else value
    return result


def _effective(node: Any, path: tuple[str, ...]) -> Any:
    """Go decoding of one field path: _UNSET when no member sets it."""
    if not path:
        return node
    value: Any = _UNSET
    wanted = _fold(path[0])
    for key, child in _members(node):
        if _fold(key) != wanted:
            continue
        if len(path) == 1:
            value = _UNSET if child is None else child
        elif isinstance(child, (dict, list)):
            inner = _effective(child, path[1:])
            if inner is not _UNSET:
                value = inner
            elif _sets_null(child, path[1:]):
                value = _UNSET
    return value


def _members(node: Any) -> list[tuple[str, Any]]:
    """An object's members in order: a dict, or a list of (key, value) pairs."""
    if isinstance(node, dict):
        return [(str(k), v) for k, v in node.items()]
    if isinstance(node, list) and all(isinstance(p, tuple) and len(p) == 2 for p in node):
        return [(str(k), v) for k, v in node]
    return []


def _sets_null(node: Any, path: tuple[str, ...]) -> bool:
    """Whether the last member matching ``path`` is an explicit null (resets the setting)."""
    matches = [child for key, child in _members(node) if _fold(key) == _fold(path[0])]
    if not matches:
        return False
    if len(path) == 1:
        return matches[-1] is None
    return any(_sets_null(child, path[1:]) for child in matches)


def _fold(name: str) -> str:
    """Go's encoding/json key folding (``foldName``): ASCII letters case-insensitively, other
    runes to the smallest rune of their simple case-folding orbit (so the long s U+017F matches
    ``s`` and the Kelvin sign U+212A matches ``k``)."""
    return "".join(_fold_rune(char) for char in name)


def _fold_rune(char: str) -> str:
    if char.isascii():
        return char.upper()
    orbit = {char}
    frontier = [char]
    while frontier:
        current = frontier.pop()
        for other in (current.upper(), current.lower(), current.casefold()):
            if len(other) == 1 and other not in orbit:
                orbit.add(other)
                frontier.append(other)
    smallest = min(orbit)
    return smallest.upper() if smallest.isascii() else smallest


def config_patch(
    current: Mapping[str, Any], desired: Mapping[tuple[str, ...], Any]
) -> dict[str, Any] | None:
    """The patch body that brings ``current`` (a config) to the ``desired`` values: only the
    keys whose effective value differs (as JSON: ``true`` is not ``1``), nested as the API wants
    ({"EmailSettings": {"PushNotificationServer": "https://..."}}); None when nothing differs.

        config_patch(config, {("EmailSettings", "PushNotificationContents"): "generic"})
        # {"EmailSettings": {"PushNotificationContents": "generic"}}
    """
    effective = effective_push_settings(current, desired.keys())
    patch: dict[str, Any] = {}
    for path, value in desired.items():
        if same_json(effective[tuple(path)], value):
            continue
        node = patch
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return patch or None


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, types included (``True`` is not ``1``, ``1`` is not ``1.0``)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def is_hpns_url(url: str | None) -> bool:
    """``IsMHPNSEndpoint``: an exact match with one of :data:`HPNS_URLS`."""
    return url in HPNS_URLS


def licence_problems(
    license_info: Mapping[str, Any], push_url: str | None, contents: str | None
) -> list[str]:
    """Warnings, one sentence each, for push settings that the server's licence defeats
    (``channels/app/notification.go`` ``canSendPushNotifications``, ``notification_push.go``
    ``BuildPushNotificationMessage``). ``license_info`` is the licence summary
    (``/api/v4/license/client``: ``{"IsLicensed": "false"}``...), ``push_url`` the
    PushNotificationServer (None when push is off), ``contents`` PushNotificationContents.

        licence_problems({"IsLicensed": "false"}, "https://global.push.mattermost.com", "full")
        # ["PushNotificationServer is Mattermost's hosted push service ... no push ..."]

    A licensed server whose summary does not list a feature (a sanitized answer) is assumed to
    have it.
    """
    licensed = str(license_info.get("IsLicensed", "false")).lower() == "true"
    has = "a licence without it" if licensed else "no licence"
    problems: list[str] = []
    if push_url and is_hpns_url(push_url) and not _has_feature(license_info, licensed, "MHPNS"):
        problems.append(
            f"PushNotificationServer is Mattermost's hosted push service ({push_url}), which "
            "needs a licence with mobile push (MHPNS), and this server has "
            f"{has}: it sends no push "
            "notifications at all (notifications.log: 'Push notifications are disabled - "
            "license missing')"
        )
    if (
        push_url
        and contents == "id_loaded"
        and not _has_feature(license_info, licensed, "IDLoadedPushNotifications")
    ):
        problems.append(
            "PushNotificationContents = id_loaded needs a licence with ID-loaded push "
            f"notifications, and this server has {has}: it sends 'generic' notifications "
            "instead (sender and channel, no message text)"
        )
    return problems


def _has_feature(license_info: Mapping[str, Any], licensed: bool, feature: str) -> bool:
    if not licensed:
        return False
    value = license_info.get(feature)
    return value is None or str(value).lower() == "true"
