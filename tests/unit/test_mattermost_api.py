"""The config API clients (a token over HTTP(S), the local-mode socket through curl) against the
Mattermost emulator, their errors, and the push-settings logic (Go's key lookup, the patch,
licence warnings)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from mmpush.mattermost.api import (
    HPNS_URLS,
    PUSH_DEFAULTS,
    ConfigApiError,
    TokenApi,
    _transport_problem,
    config_patch,
    effective_push_settings,
    licence_problems,
    license_command,
    parse_api_answer,
    parse_socket_answer,
    patch_body,
    socket_get_command,
    socket_patch_command,
    socket_reload_command,
)
from tests.emulators import harness as h
from tests.unit.emulator_helpers import (
    MattermostEmulator,
    local_mode_answers,
    running_mattermost,
    short_temp_dir,
    write_mattermost_config,
)

SEND = ("EmailSettings", "SendPushNotifications")
SERVER = ("EmailSettings", "PushNotificationServer")
CONTENTS = ("EmailSettings", "PushNotificationContents")
FILE_LEVEL = ("LogSettings", "FileLevel")
PUSH_KEYS = (SEND, SERVER, CONTENTS, FILE_LEVEL)
DESIRED = {
    SEND: True,
    SERVER: "https://push.example.com",
    CONTENTS: "generic",
    FILE_LEVEL: "DEBUG",
}
LICENSE = {"id": "lic0001", "sku_short_name": "enterprise", "features": {"cluster": True}}


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------------
# A file-configured emulator with tokens and local mode on
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(workdir: Path, env: dict[str, str] | None = None) -> Iterator[MattermostEmulator]:
    port = h.free_port()
    with short_temp_dir("mmapi-") as sockets:
        socket_path = sockets / "mm.sock"
        config = write_mattermost_config(
            workdir / "config.json",
            port,
            "http://push-before.invalid",
            **{
                "ServiceSettings.EnableUserAccessTokens": True,
                "ServiceSettings.EnableLocalMode": True,
                "ServiceSettings.LocalModeSocketLocation": str(socket_path),
                "EmailSettings.PushNotificationContents": "full",
            },
        )
        with running_mattermost(
            workdir, port, "--config", str(config), env=env, socket_path=socket_path
        ) as mm:
            h.wait_for(lambda: local_mode_answers(socket_path), what="the local-mode socket")
            yield mm


def personal_access_token(mm: MattermostEmulator) -> str:
    status, created = mm.call(
        "POST", "/api/v4/users/me/tokens", mm.admin_token(), {"description": "mmpush"}
    )
    assert status == 200, created
    return created["token"]


@pytest.fixture
def mm(tmp_path: Path) -> Iterator[MattermostEmulator]:
    with emulator(tmp_path / "mm") as server:
        yield server


# ---- TokenApi against the emulator --------------------------------------------------------


def test_token_api_reads_and_patches_the_push_settings_idempotently(
    mm: MattermostEmulator, tmp_path: Path
) -> None:
    token = personal_access_token(mm)
    api = TokenApi(mm.url, token, timeout=10)
    assert token not in repr(api)
    config = api.get_config()
    assert effective_push_settings(config, PUSH_KEYS) == {
        SEND: True,
        SERVER: "http://push-before.invalid",
        CONTENTS: "full",
        FILE_LEVEL: "INFO",
    }
    patch = config_patch(config, DESIRED)
    assert patch == {
        "EmailSettings": {
            "PushNotificationServer": "https://push.example.com",
            "PushNotificationContents": "generic",
        },
        "LogSettings": {"FileLevel": "DEBUG"},
    }
    answer = api.patch_config(patch)
    assert effective_push_settings(answer, PUSH_KEYS) == DESIRED
    again = api.get_config()
    assert config_patch(again, DESIRED) is None  # a second run changes nothing
    # saved in the file, applied without a restart
    saved = json.loads((tmp_path / "mm" / "config.json").read_text())
    assert saved["EmailSettings"]["PushNotificationServer"] == "https://push.example.com"
    assert mm.config_value("LogSettings.FileLevel") == "DEBUG"
    assert api.reload_config() is not None


def test_a_rejected_token_is_a_401_without_the_token(mm: MattermostEmulator) -> None:
    token = "abcdefghijklmnopqrstuvwxyz"
    with pytest.raises(ConfigApiError) as caught:
        TokenApi(mm.url, token, timeout=10).get_config()
    assert caught.value.status == 401
    assert caught.value.error_id == "api.context.session_expired.app_error"
    assert str(caught.value).startswith(f"the Mattermost API at {mm.url} rejected the token")
    assert token not in str(caught.value) and token not in repr(caught.value)


def test_a_non_admins_token_is_a_403(mm: MattermostEmulator) -> None:
    session, _ = mm.login("accounta")
    with pytest.raises(ConfigApiError) as caught:
        TokenApi(mm.url, session, timeout=10).patch_config({"EmailSettings": {}})
    assert caught.value.status == 403
    assert "may not manage the system configuration" in str(caught.value)
    assert session not in str(caught.value)


def test_a_patch_the_server_refuses_names_its_error(mm: MattermostEmulator) -> None:
    api = TokenApi(mm.url, personal_access_token(mm), timeout=10)
    with pytest.raises(ConfigApiError) as caught:
        api.patch_config({"EmailSettings": {"SendPushNotifications": "yes"}})
    assert caught.value.status == 400
    assert "refused the change (HTTP 400) (api.context.invalid_body_param.app_error" in str(
        caught.value
    )


def test_the_licence_through_the_token_api(mm: MattermostEmulator) -> None:
    api = TokenApi(mm.url, personal_access_token(mm), timeout=10)
    unlicensed = api.license()
    assert unlicensed == {"IsLicensed": "false"}
    assert len(licence_problems(unlicensed, "https://global.push.mattermost.com", "id_loaded")) == 2
    (mm.data_dir / "license.json").write_text(json.dumps(LICENSE))
    licensed = api.license()
    assert (licensed["IsLicensed"], licensed["MHPNS"]) == ("true", "true")
    assert licence_problems(licensed, "https://global.push.mattermost.com", "id_loaded") == []


def test_connection_refused() -> None:
    port = h.free_port()
    with pytest.raises(ConfigApiError) as caught:
        TokenApi(f"http://127.0.0.1:{port}", "tok-secret-1", timeout=5).get_config()
    assert str(caught.value) == (
        f"cannot reach http://127.0.0.1:{port}: connection refused (is Mattermost listening there?)"
    )
    assert caught.value.status is None


def test_no_answer_in_time() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts connections (backlog), never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ConfigApiError) as caught:
            TokenApi(url, "tok-secret-1", timeout=0.5).get_config()
    assert str(caught.value) == f"cannot reach {url}: no answer within 0.5 s"


class _JsonHandler(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, bytes, dict[str, str]]]] = {}

    def do_GET(self) -> None:
        status, body, headers = self.answers.get(self.path, (404, b"{}", {}))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def fake_server(
    answers: dict[str, tuple[int, bytes, dict[str, str]]], tls: h.TestPki | None = None
) -> Iterator[str]:
    handler = type("Handler", (_JsonHandler,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.server_cert, tls.server_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_certificate_and_a_ca_bundle(tmp_path: Path) -> None:
    pki = h.make_test_pki(tmp_path / "pki", ["mm.test"], ["127.0.0.1"])
    answers = {"/api/v4/config": (200, b'{"EmailSettings": {}}', {})}
    with fake_server(answers, tls=pki) as url:
        with pytest.raises(ConfigApiError) as caught:
            TokenApi(url, "tok-secret-1", timeout=5).get_config()
        assert str(caught.value).startswith(
            f"cannot reach {url}: its TLS certificate is not trusted"
        )
        assert "mattermost_api_ca_bundle" in str(caught.value)
        trusted = TokenApi(url, "tok-secret-1", ca_bundle=str(pki.ca_cert), timeout=5)
        assert trusted.get_config() == {"EmailSettings": {}}


def test_answers_that_are_not_a_mattermost_server() -> None:
    answers = {
        "/api/v4/config": (200, b"<html>hello</html>", {}),
        "/api/v4/license/client?format=old": (302, b"", {"Location": "https://elsewhere/"}),
    }
    with fake_server(answers) as url:
        api = TokenApi(url, "tok-secret-1", timeout=5)
        with pytest.raises(ConfigApiError, match="not JSON"):
            api.get_config()
        with pytest.raises(ConfigApiError, match="redirect"):
            api.license()
        with pytest.raises(ConfigApiError, match="HTTP 404"):
            api.reload_config()


def test_transport_problems_are_sentences() -> None:
    base = "https://mm.example.com"
    dns = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool: Max retries exceeded (Caused by NameResolutionError: Failed to "
        "resolve 'mm.example.com' ([Errno -2] Name or service not known))"
    )
    assert (
        _transport_problem(dns, base, 15) == f"cannot reach {base}: its host name does not resolve"
    )
    other = requests.exceptions.ConnectionError("RemoteDisconnected")
    assert _transport_problem(other, base, 15) == f"cannot reach {base}: the connection failed"
    bad = requests.exceptions.MissingSchema("no scheme")
    assert "not a valid http(s) URL" in _transport_problem(bad, "mm.example.com", 15)


def test_the_token_never_appears_in_an_error() -> None:
    token = "tok-VERYSECRET-42"
    # a server in developer mode puts the rejected token in detailed_error: never quoted; a
    # message that echoes it is scrubbed
    answer = {
        "id": "api.context.session_expired.app_error",
        "message": f"Invalid or expired session ({token})",
        "detailed_error": f"token={token}",
    }
    answers = {
        "/api/v4/config": (401, json.dumps(answer).encode(), {}),
        "/api/v4/config/reload": (400, json.dumps({**answer, "id": "x.bad"}).encode(), {}),
    }
    with fake_server(answers) as url:
        api = TokenApi(url, token, timeout=5)
        with pytest.raises(ConfigApiError) as rejected:
            api.get_config()
        with pytest.raises(ConfigApiError) as refused:
            api.reload_config()
    assert token not in str(rejected.value) and "rejected the token" in str(rejected.value)
    assert token not in str(refused.value)
    assert "(x.bad: Invalid or expired session (<token>))" in str(refused.value)


# ---- the local-mode socket through curl -------------------------------------------------------


def run_sh(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def socket_get(socket_path: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    done = run_sh(socket_get_command(str(socket_path), str(out), **kwargs))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    return parse_socket_answer(done.stdout, out.read_bytes(), str(socket_path))


def test_socket_get_and_patch_with_curl(mm: MattermostEmulator, tmp_path: Path) -> None:
    assert mm.socket_path is not None
    out = tmp_path / "answer.json"
    config = socket_get(mm.socket_path, out)
    assert effective_push_settings(config, [SERVER]) == {SERVER: "http://push-before.invalid"}
    patch = config_patch(config, DESIRED)
    assert patch is not None
    body = tmp_path / "patch.json"
    body.write_bytes(patch_body(patch))
    done = run_sh(socket_patch_command(str(mm.socket_path), str(body), str(out)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200\n"
    assert not body.exists()  # removed after sending
    answer = parse_socket_answer(done.stdout, out.read_bytes(), str(mm.socket_path))
    assert effective_push_settings(answer, PUSH_KEYS) == DESIRED
    assert config_patch(socket_get(mm.socket_path, out), DESIRED) is None
    done = run_sh(socket_reload_command(str(mm.socket_path), str(out)))
    assert (done.returncode, done.stdout) == (0, "200\n"), done.stderr


def test_the_socket_has_no_licence_route_and_refusals_are_errors(
    mm: MattermostEmulator, tmp_path: Path
) -> None:
    assert mm.socket_path is not None
    out = tmp_path / "answer.json"
    with pytest.raises(ConfigApiError) as caught:
        socket_get(mm.socket_path, out, api_path="/api/v4/no/such/route")
    assert (caught.value.status, str(caught.value).split(" has ")[0]) == (
        404,
        f"the local-mode socket {mm.socket_path}",
    )
    body = tmp_path / "patch.json"
    body.write_bytes(patch_body({"EmailSettings": {"PushNotificationContents": 7}}))
    done = run_sh(socket_patch_command(str(mm.socket_path), str(body), str(out)))
    with pytest.raises(ConfigApiError, match="HTTP 400"):
        parse_socket_answer(done.stdout, out.read_bytes(), str(mm.socket_path))
    assert not body.exists()


def test_the_licence_over_the_hosts_own_http_listener(
    mm: MattermostEmulator, tmp_path: Path
) -> None:
    out = tmp_path / "licence.json"
    done = run_sh(license_command(mm.url, str(out)))
    assert done.returncode == 0, done.stderr
    assert parse_api_answer(int(done.stdout), out.read_bytes()) == {"IsLicensed": "false"}


def test_a_missing_socket_fails_with_a_message(tmp_path: Path) -> None:
    with short_temp_dir("mmapi-") as sockets:
        missing = sockets / "none.sock"
        done = run_sh(socket_get_command(str(missing), str(tmp_path / "out")))
    assert done.returncode == 1
    assert f"mmpush: cannot reach Mattermost's local-mode socket {missing} (curl exit 7)" in (
        done.stderr
    )
    body = tmp_path / "patch.json"
    body.write_bytes(b"{}")
    done = run_sh(socket_patch_command(str(missing), str(body), str(tmp_path / "out")))
    assert done.returncode == 1 and not body.exists()


def test_socket_commands_quote_their_paths(tmp_path: Path) -> None:
    odd = tmp_path / "a dir; $(touch pwned) 'x'"
    odd.mkdir()
    body = odd / "patch.json"
    body.write_bytes(b"{}")
    command = socket_patch_command(str(odd / "no.sock"), str(body), str(odd / "out"))
    done = run_sh(command, cwd=tmp_path)
    assert done.returncode == 1
    assert not body.exists()
    assert (odd / "out").exists()
    assert not (tmp_path / "pwned").exists()


def test_parse_socket_answer_without_a_status() -> None:
    with pytest.raises(ConfigApiError, match="no HTTP status"):
        parse_socket_answer("", b"{}", "/s")
    assert parse_socket_answer("200\n", b'{"a": {}}', "/s") == {"a": {}}


# ---- a database-configured server: patched through its socket, seen in PostgreSQL ------------


def test_a_database_configured_server_through_its_socket_and_token(tmp_path: Path) -> None:
    from tests.unit.emulator_helpers import postgres_for_tests

    with postgres_for_tests() as postgres:
        dsn = postgres.create_database("mmapi", "mmuser", "pw-7f3a")
        port = h.free_port()
        with short_temp_dir("mmapi-") as sockets:
            socket_path = sockets / "mm.sock"
            env = {
                "MM_CONFIG": dsn,
                "MM_SERVICESETTINGS_LISTENADDRESS": f"127.0.0.1:{port}",
                "MM_SERVICESETTINGS_ENABLELOCALMODE": "true",
                "MM_SERVICESETTINGS_LOCALMODESOCKETLOCATION": str(socket_path),
                "MM_SERVICESETTINGS_ENABLEUSERACCESSTOKENS": "true",
                "MM_LOGSETTINGS_CONSOLELEVEL": "ERROR",
            }
            with running_mattermost(tmp_path / "db", port, env=env, socket_path=socket_path) as mm:
                h.wait_for(lambda: local_mode_answers(socket_path), what="the local-mode socket")
                out = tmp_path / "answer.json"
                patch = config_patch(socket_get(socket_path, out), DESIRED)
                assert patch is not None
                body = tmp_path / "patch.json"
                body.write_bytes(patch_body(patch))
                done = run_sh(socket_patch_command(str(socket_path), str(body), str(out)))
                assert done.stdout == "200\n", done.stderr
                [[value]] = postgres.execute(
                    "SELECT Value FROM Configurations WHERE Active", database="mmapi"
                )
                stored = json.loads(value)
                assert stored["EmailSettings"]["PushNotificationServer"] == DESIRED[SERVER]
                assert not (tmp_path / "db" / "config.json").exists()  # never a file
                api = TokenApi(mm.url, personal_access_token(mm), timeout=10)
                assert config_patch(api.get_config(), DESIRED) is None


# ---- effective values, patches and licences (pure) --------------------------------------------


def test_effective_values_follow_gos_case_insensitive_decoding() -> None:
    config = {
        "emailsettings": {"SendPushNotifications": False, "pushnotificationserver": "a"},
        "EmailSettings": {"PUSHNOTIFICATIONSERVER": "b", "PushNotificationContents": None},
        "LogSettings": {"FileLevel": "ERROR"},
    }
    assert effective_push_settings(config, PUSH_KEYS) == {
        SEND: False,  # from the first object: sections merge
        SERVER: "b",  # the last member wins
        CONTENTS: "full",  # null: unset, the default
        FILE_LEVEL: "ERROR",
    }
    assert effective_push_settings({}, PUSH_KEYS) == PUSH_DEFAULTS
    assert effective_push_settings({"EmailSettings": None}, [SEND]) == {SEND: False}
    assert effective_push_settings({"X": {"Y": 1}}, [("X", "Y"), ("X", "Z")]) == {
        ("X", "Y"): 1,
        ("X", "Z"): None,
    }


def test_effective_values_with_unicode_folding_and_member_lists() -> None:
    long_s = "\u017f"  # Go folds it to S
    config = {"EmailSettings": {f"Pu{long_s}hNotificationServer": "folded"}}
    assert effective_push_settings(config, [SERVER]) == {SERVER: "folded"}
    kelvin = "\u212a"
    assert effective_push_settings({f"X{kelvin}": {"a": 1}}, [("xk", "A")]) == {("xk", "A"): 1}
    # exact duplicates, in document order, as json.loads(object_pairs_hook=list) gives them
    pairs = json.loads(
        '{"EmailSettings": {"PushNotificationServer": "a", "pushnotificationserver": "b", '
        '"PushNotificationServer": "c"}}',
        object_pairs_hook=list,
    )
    assert effective_push_settings(pairs, [SERVER]) == {SERVER: "c"}
    reset = json.loads(
        '{"EmailSettings": {"PushNotificationContents": "generic"}, '
        '"emailsettings": {"pushnotificationcontents": null}}',
        object_pairs_hook=list,
    )
    assert effective_push_settings(reset, [CONTENTS]) == {CONTENTS: "full"}


def test_config_patch_names_only_what_differs_with_json_types() -> None:
    current = {
        "EmailSettings": {
            "SendPushNotifications": 1,  # not true, as JSON
            "PushNotificationServer": "https://push.example.com",
            "PushNotificationContents": "generic",
        },
        "logsettings": {"filelevel": "DEBUG"},
    }
    assert config_patch(current, DESIRED) == {"EmailSettings": {"SendPushNotifications": True}}
    current["EmailSettings"]["SendPushNotifications"] = True
    assert config_patch(current, DESIRED) is None
    assert config_patch({}, {SERVER: ""}) is None  # the default already
    assert config_patch({}, {SEND: False, CONTENTS: "id_loaded"}) == {
        "EmailSettings": {"PushNotificationContents": "id_loaded"}
    }


def test_licence_problems() -> None:
    unlicensed = {"IsLicensed": "false"}
    licensed = {"IsLicensed": "true", "MHPNS": "true", "IDLoadedPushNotifications": "true"}
    no_features = {"IsLicensed": "true", "MHPNS": "false", "IDLoadedPushNotifications": "false"}
    sanitized = {"IsLicensed": "true", "SkuShortName": "enterprise"}
    for url in HPNS_URLS:
        [problem] = licence_problems(unlicensed, url, "full")
        assert url in problem and "no licence" in problem and "no push notifications" in problem
        assert licence_problems(licensed, url, "full") == []
        assert licence_problems(sanitized, url, "full") == []
        [problem] = licence_problems(no_features, url, "generic")
        assert "a licence without it" in problem
    # the check is an exact comparison: these are not gated
    for url in ("https://global.push.mattermost.com/", "HTTPS://push.mattermost.com"):
        assert licence_problems(unlicensed, url, "full") == []
    [problem] = licence_problems(unlicensed, "https://push.example.com", "id_loaded")
    assert "id_loaded" in problem and "'generic'" in problem
    assert licence_problems(licensed, "https://push.example.com", "id_loaded") == []
    assert licence_problems(no_features, "https://push.example.com", "id_loaded") != []
    assert licence_problems(unlicensed, None, "id_loaded") == []  # push off


def test_parse_api_answer_errors() -> None:
    assert parse_api_answer(200, b'{"a": 1}') == {"a": 1}
    with pytest.raises(ConfigApiError, match="not an object"):
        parse_api_answer(200, b"[1]")
    readonly = json.dumps({"id": "ent.cluster.save_config.error", "message": "x"}).encode()
    with pytest.raises(ConfigApiError, match="ReadOnlyConfig") as caught:
        parse_api_answer(403, readonly)
    assert caught.value.error_id == "ent.cluster.save_config.error"
    with pytest.raises(ConfigApiError, match=r"failed \(HTTP 500\)"):
        parse_api_answer(500, b"oops")
    long = json.dumps({"id": "x.y", "message": "m" * 1000, "detailed_error": "SECRET"}).encode()
    with pytest.raises(ConfigApiError) as caught:
        parse_api_answer(400, long)
    assert "SECRET" not in str(caught.value) and len(str(caught.value)) < 300
