"""`mmpush diagnose`: the checklist of Mattermost's push notification troubleshooting guide, run
in order against every Mattermost server of an inventory and the push proxies / outbound
proxies it relies on. Each check gives a result with its evidence and, when it fails, the fix.

    runners = {"mm1": run_on_mm1, "push1": run_on_push1}    # command -> CommandResult
    results = diagnose(hosts, runners, ControlNode())
    [r.to_dict() for r in results]   # {"host", "check", "status", "evidence", "fix"}

The checks reach hosts only through a :data:`Runner` per host (a shell command, run as root,
-> ``CommandResult(rc, stdout, stderr)``) and this control node only through a
:class:`ControlNode` (the certificate check, one HTTPS request), so unit tests drive every
check with canned outputs. The steps, in the guide's order (check names in brackets):

1. push is enabled and the URL is the right one for the mode [push-settings];
2. the URL answers ``/version`` from each server, as the server (curl there) [push-url];
3. the certificate as the mobile apps check it [certificate];
4. the outbound proxy path and its allow-list [outbound-proxy, outbound-proxy-service,
   outbound-proxy-allow-list];
5. the push proxy [push-proxy-service, push-proxy-version, push-front] and its credentials, a
   probe push per app type from each server [push-credentials];
6. the licence [licence];
7. environment overrides [env-overrides] and agreeing config sources [config-agree];
8. recent push errors in the logs, known messages explained [push-errors].

Before them, every selected host's settings are validated [settings] and its SSH checked
[reachable]. No secret reaches a result: configurations come from the config API (which masks
them) or config.json's push keys only, environment files are read for names only, log lines
are redacted, and the inventory's own secrets are scrubbed from every result.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import re
import shlex
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from mmpush.check import inventory_settings
from mmpush.checks.certificate import (
    CHAIN_REJECTED,
    ERROR,
    EXPIRED,
    EXPIRES_SOON,
    INCOMPLETE_CHAIN,
    NAME_MISMATCH,
    NOT_YET_VALID,
    OLD_TLS,
    SELF_SIGNED,
    UNREACHABLE,
    UNTRUSTED_ROOT,
    WARNING,
    WRONG_ORDER,
    CertificateReport,
    CheckError,
    check_certificate,
)
from mmpush.checks.config import (
    CONTENTS,
    SEND,
    SERVER,
    TPNS_URL,
    ConfigReadError,
    EffectiveConfig,
    expected_push_settings,
    push_settings_problems,
    read_effective_config,
    value_at,
)
from mmpush.checks.push import FAKE_DEVICE_TOKEN
from mmpush.facts import MattermostEnvironment
from mmpush.inventory import InventoryHost
from mmpush.mattermost import env_name
from mmpush.mattermost.api import (
    CONFIG_PATH,
    LICENSE_PATH,
    PUSH_DEFAULTS,
    ConfigApiError,
    is_hpns_url,
    licence_problems,
    same_json,
)
from mmpush.mattermost.cluster import ClusterError, cluster_key, verify_cluster
from mmpush.mattermost.source import ConfigSource, config_source_command, parse_config_source
from mmpush.push_proxy import SERVICE as PUSH_PROXY_SERVICE
from mmpush.runbooks.logs import log_paths, working_directory_command
from mmpush.runbooks.probe import judge, probe_command, proxy_environment_command
from mmpush.settings import Secret, Settings, SettingsError
from mmpush.transactions import bash

# --- results ---------------------------------------------------------------------------------

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)

SETTINGS = "settings"
REACHABLE = "reachable"
PUSH_SETTINGS = "push-settings"
PUSH_URL = "push-url"
CERTIFICATE = "certificate"
OUTBOUND_PROXY = "outbound-proxy"
OUTBOUND_SERVICE = "outbound-proxy-service"
OUTBOUND_ALLOW_LIST = "outbound-proxy-allow-list"
PUSH_PROXY_SERVICE_CHECK = "push-proxy-service"
PUSH_PROXY_VERSION = "push-proxy-version"
PUSH_FRONT = "push-front"
PUSH_CREDENTIALS = "push-credentials"
LICENCE = "licence"
ENV_OVERRIDES = "env-overrides"
CONFIG_AGREE = "config-agree"
PUSH_ERRORS = "push-errors"

#: Every check, in the order results are given (the guide's order).
CHECKS = (
    SETTINGS,
    REACHABLE,
    PUSH_SETTINGS,
    PUSH_URL,
    CERTIFICATE,
    OUTBOUND_PROXY,
    OUTBOUND_SERVICE,
    OUTBOUND_ALLOW_LIST,
    PUSH_PROXY_SERVICE_CHECK,
    PUSH_PROXY_VERSION,
    PUSH_FRONT,
    PUSH_CREDENTIALS,
    LICENCE,
    ENV_OVERRIDES,
    CONFIG_AGREE,
    PUSH_ERRORS,
)

#: Seconds for a request made on a host (a probe push waits for the push proxy's retries:
#: SendTimeoutSec is 30 s by default).
TIMEOUT = 15
PROBE_TIMEOUT = 45
#: How many lines of a log are read; the last ``log_lines`` with an error are reported.
LOG_SCAN_LINES = 2000
DEFAULT_LOG_LINES = 20


@dataclass(frozen=True)
class CheckResult:
    """One check on one host: ``status`` is ok, warn, fail or skip; ``fix`` is what to do when
    it is not ok ("" otherwise).

        CheckResult("mm1", "push-url", "fail", "DNS: push.example.com ...", "add ...")
    """

    host: str
    check: str
    status: str
    evidence: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "host": self.host,
            "check": self.check,
            "status": self.status,
            "evidence": self.evidence,
            "fix": self.fix,
        }


def worst(statuses: Iterable[str]) -> str:
    """The status that matters most: fail, then warn, then ok, then skip (none: skip).

    worst(["ok", "warn"]) == "warn"
    """
    order = {FAIL: 0, WARN: 1, OK: 2, SKIP: 3}
    return min(statuses, key=lambda status: order[status], default=SKIP)


# --- hosts -----------------------------------------------------------------------------------


class CommandResult(NamedTuple):
    """What a command printed and how it ended, on a host."""

    rc: int
    stdout: str
    stderr: str


#: Runs a shell command on one host as root: ``run("systemctl is-active nginx")``.
Runner = Callable[[str], CommandResult]


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of ``text``, at most ``limit`` characters ("" when none)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def command_error(result: CommandResult) -> str:
    """What a failed command said: its last line of stderr (else stdout), with the exit code."""
    said = last_line(result.stderr) or last_line(result.stdout)
    return f"exit {result.rc}" + (f": {said}" if said else "")


class _Recorder:
    """The runner ``read_effective_config`` wants (command -> stdout, raising on failure),
    remembering each command's stdout so the caller can reuse it."""

    def __init__(self, run: Runner) -> None:
        self.run = run
        self.outputs: dict[str, str] = {}

    def __call__(self, command: str) -> str:
        result = self.run(command)
        if result.rc != 0:
            raise ConfigReadError(f"a command on the host failed ({command_error(result)})")
        self.outputs[command] = result.stdout
        return result.stdout


# --- curl on a host ----------------------------------------------------------------------------

_CURL_MARK = "mmpush-curl"


def curl_command(
    url: str,
    *,
    resolve: str | None = None,
    timeout: int = TIMEOUT,
    no_proxy: bool = False,
    unix_socket: str | None = None,
) -> str:
    """A curl GET printing the answer's body, then one line ``mmpush-curl <status> <remote
    ip> <local ip>`` (status 000 when no answer came); errors on stderr.

        curl_command("https://push.example.com/version")
        curl_command(url, resolve="push.example.com:443:127.0.0.1", no_proxy=True)
    """
    parts = ["curl", "-sS", "--max-time", str(timeout)]
    parts += ["-w", shlex.quote(f"\\n{_CURL_MARK} %{{http_code}} %{{remote_ip}} %{{local_ip}}\\n")]
    if no_proxy:
        parts += ["--noproxy", "'*'"]
    if resolve:
        parts += ["--resolve", shlex.quote(resolve)]
    if unix_socket:
        parts += ["--unix-socket", shlex.quote(unix_socket)]
    return " ".join([*parts, shlex.quote(url)])


@dataclass(frozen=True)
class CurlAnswer:
    """What a :func:`curl_command` showed: curl's exit code, the HTTP status (None: no
    answer), the body, the addresses of both ends and curl's error line."""

    rc: int
    status: int | None
    body: str
    remote_ip: str
    local_ip: str
    error: str

    @property
    def answered(self) -> bool:
        return self.rc == 0 and self.status is not None


def parse_curl(result: CommandResult) -> CurlAnswer:
    """Read what :func:`curl_command` printed.

    parse_curl(CommandResult(0, '{"version":"6.5.0"}\\nmmpush-curl 200 10.0.0.5 10.0.0.9\\n', ""))
    # CurlAnswer(rc=0, status=200, body='{"version":"6.5.0"}', remote_ip="10.0.0.5", ...)
    """
    body, status, remote, local = result.stdout, None, "", ""
    head, mark, tail = result.stdout.rpartition(f"{_CURL_MARK} ")
    if mark:
        fields = tail.split()
        body = head[:-1] if head.endswith("\n") else head
        if fields and fields[0].isdigit() and int(fields[0]) > 0:
            status = int(fields[0])
        remote = fields[1] if len(fields) > 1 else ""
        local = fields[2] if len(fields) > 2 else ""
    # curl's own error line ("curl: (60) ..."), not the advice it prints after it
    errors = [line.strip() for line in result.stderr.splitlines() if line.startswith("curl: (")]
    error = errors[-1][:300] if errors else last_line(result.stderr)
    return CurlAnswer(result.rc, status, body, remote, local, error)


#: curl exit codes -> (hop, what failed). https://curl.se/libcurl/c/libcurl-errors.html
CURL_HOPS: dict[int, tuple[str, str]] = {
    5: ("proxy", "the HTTP proxy of this host's environment does not resolve"),
    6: ("DNS", "{name} does not resolve on {host}"),
    7: ("connect", "no TCP connection from {host} to {name}:{port} (refused or unreachable)"),
    28: (
        "timeout",
        "no answer from {name}:{port} within {timeout} s (a firewall dropping "
        "packets, or a hop that hangs)",
    ),
    35: ("TLS", "the TLS handshake with {name}:{port} failed"),
    51: ("TLS", "{name}:{port} sent a certificate {host} does not accept"),
    52: ("HTTP", "{name}:{port} closed the connection without an answer"),
    56: ("HTTP", "the connection to {name}:{port} broke while receiving"),
    58: ("TLS", "the client certificate was refused"),
    60: (
        "TLS",
        "{host} does not trust the certificate of {name}:{port} (its system trust "
        "store; no intermediate is fetched)",
    ),
    77: ("TLS", "{host} cannot read its CA bundle"),
}


# --- what a push URL points at -----------------------------------------------------------------

PUSH_FRONT_KIND, OUTBOUND_KIND, HPNS_KIND, TPNS_KIND, OTHER_KIND = (
    "push-front",
    "outbound-proxy",
    "hpns",
    "tpns",
    "other",
)


@dataclass(frozen=True)
class PushTarget:
    """A push URL and what serves it: the push front of an inventory's push proxy, its
    outbound proxy, Mattermost's hosted (HPNS) or test (TPNS) service, or something else."""

    url: str
    scheme: str
    name: str
    port: int
    kind: str
    hosts: tuple[str, ...] = ()
    #: The outbound proxy's upstream (outbound-proxy only).
    upstream: str = ""
    #: Who may use it (the front's or the outbound proxy's allow-list; empty: anyone).
    allowed_networks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """For messages: "the push front (NGINX) on push1"."""
        on = f" on {', '.join(self.hosts)}" if self.hosts else ""
        return {
            PUSH_FRONT_KIND: f"the push front (NGINX before the push proxy){on}",
            OUTBOUND_KIND: f"the outbound proxy{on}",
            HPNS_KIND: "Mattermost's hosted push service (HPNS)",
            TPNS_KIND: "Mattermost's test push service (TPNS)",
        }.get(self.kind, f"{self.name}:{self.port}")

    @property
    def port_suffix(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return "" if self.port == default else f":{self.port}"


def push_target(url: str, settings: Iterable[Settings]) -> PushTarget:
    """What ``url`` points at, given the inventory's hosts' settings.

    push_target("https://push.example.com", all_settings).kind  # "push-front"
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 0
    name = parts.hostname or ""
    base = url.rstrip("/")
    if is_hpns_url(base):
        return PushTarget(url, scheme, name, port, HPNS_KIND)
    if base == TPNS_URL:
        return PushTarget(url, scheme, name, port, TPNS_KIND)
    fronts, proxies, upstream = [], [], ""
    allowed: tuple[str, ...] = ()
    for each in settings:
        if each.eas is not None and (each.eas.push_name, each.eas.https_port) == (name, port):
            fronts.append(each.host)
            allowed = each.eas.front_allowed_networks
        outbound = each.outbound
        if outbound is not None and (outbound.name, outbound.port) == (name, port):
            proxies.append(each.host)
            upstream, allowed = outbound.upstream_url, outbound.allowed_networks
    if fronts:
        return PushTarget(url, scheme, name, port, PUSH_FRONT_KIND, tuple(fronts), "", allowed)
    if proxies:
        return PushTarget(url, scheme, name, port, OUTBOUND_KIND, tuple(proxies), upstream, allowed)
    return PushTarget(url, scheme, name, port, OTHER_KIND)


def in_networks(address: str, networks: Sequence[str]) -> bool | None:
    """Whether ``address`` is in one of ``networks`` (None: not an address).

    in_networks("10.0.0.5", ["10.0.0.0/24"]) is True
    """
    try:
        ip = ipaddress.ip_address(address.removeprefix("::ffff:"))
    except ValueError:
        return None
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


# --- this control node ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlProbe:
    """One HTTPS request from this control node: the address it connected from (None: no
    connection), the HTTP status (None: no answer) and what went wrong."""

    source: str | None
    status: int | None
    error: str = ""


def https_status_from_here(
    address: str, name: str, port: int, path: str = "/version", timeout: float = 10.0
) -> ControlProbe:
    """GET ``https://name:port/path`` connecting to ``address`` from this control node. The
    certificate is not verified: this asks who may use a proxy, not whether it is trusted (the
    certificate check does that).

        https_status_from_here("10.0.0.7", "outbound.example.com", 8000).status  # 403
    """
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as error:
        return ControlProbe(None, None, f"cannot connect to {address}:{port}: {error}")
    source = str(sock.getsockname()[0])
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {name}:{port}\r\nUser-Agent: mmpush-diagnose\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    )
    try:
        with contextlib.closing(sock), context.wrap_socket(sock, server_hostname=name) as tls:
            tls.sendall(request.encode())
            response = http.client.HTTPResponse(tls, method="GET")  # type: ignore[arg-type]
            try:
                response.begin()
                return ControlProbe(source, response.status)
            finally:
                response.close()
    except (OSError, http.client.HTTPException) as error:
        return ControlProbe(source, None, f"no HTTP answer from {address}:{port}: {error}")


def certificate_from_here(
    name: str, port: int, connect: str | None, ca_bundle: str | None
) -> CertificateReport:
    """``check_certificate`` from this control node (see mmpush/checks/certificate.py)."""
    return check_certificate(name, port, connect=connect, ca_bundle=ca_bundle)


@dataclass(frozen=True)
class ControlNode:
    """What the checks do from this control node: the certificate check and one HTTPS
    request (tests replace both)."""

    certificate: Callable[[str, int, str | None, str | None], CertificateReport] = (
        certificate_from_here
    )
    https_status: Callable[[str, str, int, str], ControlProbe] = https_status_from_here


# --- 0: settings and SSH -----------------------------------------------------------------------


def check_settings(
    host: InventoryHost, inventory: Sequence[InventoryHost]
) -> tuple[CheckResult, Settings | None]:
    """The host's data validated as a deploy validates it (credential files are read on this
    control node); Mattermost servers see the inventory's outbound proxies."""
    try:
        settings = inventory_settings(host, inventory)
    except SettingsError as error:
        return (
            CheckResult(
                host.name,
                SETTINGS,
                FAIL,
                str(error),
                "correct the inventory data (`mmpush check INVENTORY` shows every invalid "
                "setting); this host's other checks are not run",
            ),
            None,
        )
    groups = ", ".join(host.groups) or "no group"
    evidence = f"inventory data valid: push_mode {settings.push_mode!r} [{groups}]"
    return CheckResult(host.name, SETTINGS, OK, evidence), settings


def check_reachable(host: InventoryHost, run: Runner) -> CheckResult:
    """SSH (and sudo) work: the host runs a command as root."""
    address = host.data.get("ssh_hostname") or host.name
    result = run("id -u")
    if result.rc == 0 and result.stdout.strip() == "0":
        return CheckResult(host.name, REACHABLE, OK, f"SSH to {address} and root commands work")
    if result.rc == 0:
        return CheckResult(
            host.name,
            REACHABLE,
            FAIL,
            f"SSH to {address} works, but commands run as uid {result.stdout.strip()}, not root",
            "connect as root, or set _sudo = True in the inventory for a user with sudo",
        )
    return CheckResult(
        host.name,
        REACHABLE,
        FAIL,
        f"cannot run a command on {host.name} over SSH ({address}): {command_error(result)}",
        f"check that {host.name} is up and that ssh_hostname, ssh_user, ssh_key and the "
        "known_hosts entry in the inventory reach it (and sudo, with _sudo); its other checks "
        "are not run",
    )


# --- 1: push settings -----------------------------------------------------------------------------


@dataclass
class ServerView:
    """What step 1 learnt about one Mattermost server, for the later steps."""

    name: str
    settings: Settings
    run: Runner
    effective: EffectiveConfig | None = None
    source: ConfigSource | None = None
    send: Any = None
    url: str | None = None
    contents: Any = None
    expected: dict[tuple[str, ...], Any] = field(default_factory=dict)

    @property
    def push_url(self) -> str | None:
        """The URL the server sends pushes to (when push is on), else the one its mode
        expects (None in mode off)."""
        if self.send is True and isinstance(self.url, str) and self.url:
            return self.url
        expected = self.expected.get(SERVER)
        return expected if isinstance(expected, str) and expected else None


def as_server(view: ServerView, command: str) -> str:
    """``command`` run as the Mattermost server sends: with the proxy variables of its unit
    (``Environment=``, ``EnvironmentFile=``; mmpush/runbooks/probe.py), in bash."""
    unit = view.settings.mattermost.service
    return bash(f"{proxy_environment_command(unit)}; {command}")


def _effective(text: str, keys: tuple[str, ...]) -> Any:
    """The value Mattermost uses for ``keys``: what the configuration says, else its default."""
    value = value_at(text, keys)
    return PUSH_DEFAULTS.get(keys) if value == "<missing>" else value


def describe_url(url: object, settings: Iterable[Settings]) -> str:
    """``'https://push.example.com' (the push front ... on push1)``, or ``'' (none)``."""
    if not isinstance(url, str) or not url:
        return f"{url!r} (none)"
    target = push_target(url, settings)
    return f"{url!r}" + (f" ({target.label})" if target.kind != OTHER_KIND else "")


def check_push_settings(
    view: ServerView,
    data: Mapping[str, Any],
    outbound_proxies: list[dict[str, Any]],
    all_settings: Sequence[Settings],
    inventory_label: str = "INVENTORY",
) -> CheckResult:
    """Step 1: push is on and ``PushNotificationServer`` is the URL of the host's push mode,
    in the server's effective configuration (where it was read is in the evidence). Fills
    ``view`` for the later steps."""
    mode = view.settings.push_mode
    deploy = f"pyinfra {inventory_label} deploys/{mode}.py"
    try:
        view.expected = expected_push_settings(dict(data), outbound_proxies)
    except ConfigReadError as error:
        return CheckResult(view.name, PUSH_SETTINGS, FAIL, str(error), "fix push_mode")
    recorder = _Recorder(view.run)
    try:
        view.effective = read_effective_config(recorder, view.settings.mattermost)
    except (ConfigReadError, ConfigApiError) as error:
        return CheckResult(
            view.name,
            PUSH_SETTINGS,
            FAIL,
            f"cannot read the effective configuration: {error}",
            f"is {view.settings.mattermost.service} running? For a database configuration, "
            "turn on ServiceSettings.EnableLocalMode (the local-mode socket) or set "
            "mattermost_api_url and mattermost_admin_token; mattermost_config_source and "
            "mattermost_config_path say where a file configuration is",
        )
    command = config_source_command(
        view.settings.mattermost.service, view.settings.mattermost.local_socket
    )
    if command in recorder.outputs:
        view.source = parse_config_source(recorder.outputs[command].splitlines())
    text = view.effective.text
    view.send = _effective(text, SEND)
    view.url = _effective(text, SERVER)
    view.contents = _effective(text, CONTENTS)
    where = f"read from {view.effective.source}"
    shown = (
        f"SendPushNotifications = {json.dumps(view.send)}, PushNotificationServer = "
        f"{describe_url(view.url, all_settings)}, PushNotificationContents = {view.contents!r}"
    )
    problems = push_settings_problems(text, view.expected)
    if not problems:
        state = "push is off, as push_mode 'off' wants" if mode == "off" else "push is on"
        return CheckResult(view.name, PUSH_SETTINGS, OK, f"{state}: {shown} ({where})")
    wanted = view.expected.get(SERVER)
    mismatch = ""
    if SERVER in view.expected and not same_json(view.url, wanted):
        mismatch = (
            f"mode mismatch: push_mode {mode!r} needs PushNotificationServer "
            f"{describe_url(wanted, all_settings)}, the server uses "
            f"{describe_url(view.url, all_settings)}; "
        )
    return CheckResult(
        view.name,
        PUSH_SETTINGS,
        FAIL,
        f"{mismatch}{'; '.join(problems)} ({where})",
        f"deploy the mode: `{deploy}` sets these keys where the configuration lives (or "
        "correct push_mode in the inventory, if the server is right)",
    )


# --- 2: the push URL from the server -------------------------------------------------------------


def _hop_failure(
    answer: CurlAnswer, target: PushTarget, host: str, timeout: int
) -> tuple[str, str]:
    """(evidence, fix) for a curl that got no HTTP answer, naming the hop that failed."""
    hop, text = CURL_HOPS.get(answer.rc, ("request", f"curl failed (exit {answer.rc})"))
    said = text.format(host=host, name=target.name, port=target.port, timeout=timeout)
    evidence = f"{hop}: {said} [{target.label}]" + (f" ({answer.error})" if answer.error else "")
    serving = ", ".join(target.hosts) or target.name
    fixes = {
        "DNS": f"make {target.name} resolve on {host} (its DNS servers or /etc/hosts)",
        "connect": f"start what serves {target.name}:{target.port} on {serving} (nginx), and "
        f"open the firewall path from {host} to it",
        "timeout": f"open the path from {host} to {target.name}:{target.port} (egress "
        "firewall), or find the hop that hangs",
        "TLS": f"serve the full certificate chain on {target.name} (fullchain.pem, not "
        f"cert.pem) from a CA in {host}'s trust store (ca-certificates); `mmpush check-cert "
        f"{target.name}:{target.port}` names the problem",
        "proxy": f"fix or remove the HTTP(S)_PROXY variables on {host}",
    }
    return evidence, fixes.get(hop, f"look at what serves {target.name}:{target.port}")


def _http_failure(answer: CurlAnswer, target: PushTarget, host: str) -> tuple[str, str]:
    """(evidence, fix) for an HTTP answer to GET /version that is not a push service's."""
    status, serving = answer.status, ", ".join(target.hosts) or target.name
    body = " ".join(answer.body.split())[:120]
    evidence = f"HTTP {status} from {target.label} ({answer.remote_ip or '?'}): {body!r}"
    if status == 403 and target.kind == OUTBOUND_KIND:
        networks = target.allowed_networks
        inside = in_networks(answer.local_ip, networks) if networks else None
        address = answer.local_ip or "its address"
        detail = (
            f"{host} ({address}) is not in outbound_proxy_allowed_networks "
            f"{list(target.allowed_networks)}"
            if inside is False
            else "the proxy refuses this server"
        )
        return (
            f"the outbound proxy refused {host} (HTTP 403): {detail}",
            f"add {host}'s network to outbound_proxy_allowed_networks and deploy "
            "deploys/outbound_proxy.py",
        )
    if status == 403 and target.kind == PUSH_FRONT_KIND:
        return (
            f"the push front refused {host} (HTTP 403, push_front_allowed_networks "
            f"{list(target.allowed_networks)}): {evidence}",
            f"add {host}'s network to push_front_allowed_networks and deploy deploys/eas.py",
        )
    if status in (502, 503, 504) and target.kind == PUSH_FRONT_KIND:
        return (
            f"behind the front: NGINX on {serving} answered HTTP {status}: the push proxy "
            f"behind it does not answer (is {PUSH_PROXY_SERVICE} stopped?)",
            f"start {PUSH_PROXY_SERVICE} on {serving} (`systemctl start {PUSH_PROXY_SERVICE}`; "
            f"`journalctl -u {PUSH_PROXY_SERVICE}` says why it stopped)",
        )
    if status in (502, 503, 504) and target.kind == OUTBOUND_KIND:
        return (
            f"behind the outbound proxy: NGINX on {serving} answered HTTP {status}: it cannot "
            f"reach its upstream {target.upstream or 'HPNS'}",
            f"on {serving}: check the upstream's name resolves through "
            "outbound_proxy_resolvers, egress to it on 443 is open, and its certificate is "
            "trusted (outbound_proxy_ca_bundle); NGINX's error.log names the failure",
        )
    if status == 421:
        return (
            f"{target.name} answered 421 (misdirected): the front serves another name",
            f"use the front's push_name in PushNotificationServer, {target.url}",
        )
    return evidence, f"PushNotificationServer must be a push service's URL; {target.url} is not"


def check_push_url(
    view: ServerView, target: PushTarget, why: str = ""
) -> tuple[CheckResult, CurlAnswer | None]:
    """Step 2: ``<url>/version`` answers from the server, as the server reaches it (its DNS,
    egress and system trust store); the hop that failed is named."""
    if target.scheme not in ("https", "http") or not target.name:
        return (
            CheckResult(
                view.name,
                PUSH_URL,
                FAIL,
                f"PushNotificationServer {target.url!r} is not an http(s) URL",
                "set an https:// URL (deploy the push mode)",
            ),
            None,
        )
    version_url = target.url.rstrip("/") + "/version"
    answer = parse_curl(view.run(as_server(view, curl_command(version_url))))
    if not answer.answered:
        evidence, fix = _hop_failure(answer, target, view.name, TIMEOUT)
        return CheckResult(view.name, PUSH_URL, FAIL, f"GET {version_url}: {evidence}", fix), answer
    version = _version(answer.body)
    if answer.status == 200 and version is not None:
        tls = ", TLS trusted by the server's store" if target.scheme == "https" else ""
        return (
            CheckResult(
                view.name,
                PUSH_URL,
                OK,
                f"GET {version_url}{why} from {view.name}: HTTP 200 from {answer.remote_ip} "
                f"({target.label}), version {version}{tls}",
            ),
            answer,
        )
    evidence, fix = _http_failure(answer, target, view.name)
    return CheckResult(view.name, PUSH_URL, FAIL, f"GET {version_url}: {evidence}", fix), answer


def _version(body: str) -> str | None:
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and "version" in parsed:
        return str(parsed["version"])
    return None


def resolve_on_host(run: Runner, name: str) -> list[str]:
    """The addresses ``name`` resolves to on the host (its resolver and /etc/hosts), in order."""
    try:
        ipaddress.ip_address(name.strip("[]"))
        return [name.strip("[]")]
    except ValueError:
        pass
    result = run(f"getent ahosts {shlex.quote(name)}")
    addresses: list[str] = []
    for line in result.stdout.splitlines() if result.rc == 0 else []:
        fields = line.split()
        if fields and fields[0] not in addresses:
            addresses.append(fields[0])
    return addresses


# --- 3: the certificate ---------------------------------------------------------------------------

CERTIFICATE_FIXES = {
    INCOMPLETE_CHAIN: "serve the full chain: the certificate and its intermediate "
    "(fullchain.pem, not cert.pem) in ssl_certificate; redeploy the host's mode",
    SELF_SIGNED: "use a certificate from a CA the devices trust (ACME: tls_certificate_source)",
    UNTRUSTED_ROOT: "use a certificate from a public CA, or one the devices and servers trust",
    CHAIN_REJECTED: "reissue the certificate: the chain does not verify",
    WRONG_ORDER: "send the certificates leaf first, each followed by its issuer",
    NAME_MISMATCH: "reissue the certificate for the push URL's name",
    EXPIRED: "renew it: `pyinfra INVENTORY deploys/certs.py`",
    NOT_YET_VALID: "check the clock of the host that issued or serves it",
    EXPIRES_SOON: "renew it: `pyinfra INVENTORY deploys/certs.py` (is the renewal job running?)",
    OLD_TLS: "turn TLS 1.0/1.1 off (ssl_protocols TLSv1.2 TLSv1.3)",
}


def check_push_certificate(
    view: ServerView,
    target: PushTarget,
    addresses: Sequence[str],
    control: ControlNode,
    ca_bundle: str | None,
    inventory_label: str = "INVENTORY",
) -> CheckResult:
    """Step 3: the certificate of the push URL's name as the mobile apps check it (full chain
    sent, trusted, name, expiry, TLS 1.2+), connecting from this control node to the address
    the server resolves (else the name)."""
    if target.scheme != "https":
        return CheckResult(view.name, CERTIFICATE, SKIP, f"{target.url} does not use TLS")
    report: CertificateReport | None = None
    tried = []
    for connect in [*addresses[:1], None]:
        try:
            report = control.certificate(target.name, target.port, connect, ca_bundle)
        except CheckError as error:
            return CheckResult(
                view.name,
                CERTIFICATE,
                FAIL,
                f"the certificate check cannot start: {error}",
                "give a readable PEM bundle as acme_ca_bundle",
            )
        if UNREACHABLE not in report.ids:
            break
        tried.append(next(f.message for f in report.findings if f.id == UNREACHABLE))
    assert report is not None
    if UNREACHABLE in report.ids:
        return CheckResult(
            view.name,
            CERTIFICATE,
            SKIP,
            f"{target.name}:{target.port} cannot be reached from this control node "
            f"({'; '.join(tried)}): push-url checked TLS from {view.name} instead",
            f"run `mmpush check-cert {target.name}:{target.port}` where it is reachable",
        )
    via = f" via {report.address}" + (
        f" (as {view.name} resolves it)" if addresses and report.address else ""
    )
    errors = [f for f in report.findings if f.severity == ERROR]
    warnings = [f for f in report.findings if f.severity == WARNING]
    where = f"{target.name}:{target.port}{via}, trusting {report.trust_source}"
    if errors or warnings:
        shown = errors or warnings
        fixes = []
        for finding in shown:
            fix = CERTIFICATE_FIXES.get(finding.id, "")
            if fix and fix not in fixes:
                fixes.append(fix.replace("INVENTORY", inventory_label))
        if target.kind in (HPNS_KIND, TPNS_KIND):
            fixes = [
                f"{target.name} is Mattermost's: make sure {view.name} reaches the real service "
                "(not an intercepting proxy) and its trust store is current (ca-certificates)"
            ]
        return CheckResult(
            view.name,
            CERTIFICATE,
            FAIL if errors else WARN,
            f"{where}: " + "; ".join(f"{f.id}: {f.message}" for f in shown),
            "; ".join(fixes),
        )
    leaf = report.chain[0] if report.chain else None
    expiry = f", expires {leaf.not_after[:10]}" if leaf else ""
    return CheckResult(
        view.name,
        CERTIFICATE,
        OK,
        f"{where}: full chain sent and trusted, name matches{expiry}, {report.tls_version}",
    )


# --- 4: the outbound proxy ------------------------------------------------------------------------


def check_outbound_path(
    view: ServerView, target: PushTarget, answer: CurlAnswer | None = None
) -> CheckResult:
    """Step 4, from the server: the outbound proxy answers ``/version`` for it (which needs
    the proxy's upstream, HPNS). ``answer``: push-url's answer when it asked the same URL."""
    url = target.url.rstrip("/") + "/version"
    if answer is None:
        answer = parse_curl(view.run(as_server(view, curl_command(url))))
    if not answer.answered:
        evidence, fix = _hop_failure(answer, target, view.name, TIMEOUT)
        return CheckResult(view.name, OUTBOUND_PROXY, FAIL, f"GET {url}: {evidence}", fix)
    allowed = (
        f", {view.name} ({answer.local_ip}) is in outbound_proxy_allowed_networks"
        if target.allowed_networks and in_networks(answer.local_ip, target.allowed_networks)
        else ""
    )
    if answer.status == 200 and _version(answer.body) is not None:
        return CheckResult(
            view.name,
            OUTBOUND_PROXY,
            OK,
            f"GET {url}: HTTP 200 from {target.label}, forwarded to its upstream "
            f"{target.upstream or 'HPNS'} (version {_version(answer.body)}){allowed}",
        )
    evidence, fix = _http_failure(answer, target, view.name)
    return CheckResult(view.name, OUTBOUND_PROXY, FAIL, f"GET {url}: {evidence}", fix)


def check_outbound_service(name: str, run: Runner, settings: Settings) -> CheckResult:
    """Step 4, on the outbound proxy: NGINX is active and listens on the proxy's port."""
    assert settings.outbound is not None
    port = settings.outbound.port
    active = run("systemctl is-active nginx")
    state = active.stdout.strip() or "unknown"
    listening = run("ss -ltnH")
    ports = _listening_ports(listening.stdout) if listening.rc == 0 else set()
    fix = (
        f"on {name}: `nginx -t && systemctl start nginx`; `journalctl -u nginx` says why it "
        "stopped; or redeploy deploys/outbound_proxy.py"
    )
    if active.rc != 0:
        return CheckResult(
            name,
            OUTBOUND_SERVICE,
            FAIL,
            f"the outbound proxy is down: nginx is {state} on {name}, so nothing answers "
            f"{settings.outbound.url}",
            fix,
        )
    if port not in ports:
        return CheckResult(
            name,
            OUTBOUND_SERVICE,
            FAIL,
            f"nginx is active on {name} but nothing listens on port {port} "
            f"({settings.outbound.url})",
            f"deploy deploys/outbound_proxy.py (the proxy's site is missing on {name})",
        )
    return CheckResult(
        name, OUTBOUND_SERVICE, OK, f"nginx is active on {name} and listens on port {port}"
    )


def _listening_ports(ss_output: str) -> set[int]:
    """Ports of ``ss -ltnH`` lines (local address in the 4th column)."""
    ports = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rpartition(":")[2].isdigit():
            ports.add(int(fields[3].rpartition(":")[2]))
    return ports


def check_outbound_allow_list(
    host: InventoryHost, settings: Settings, control: ControlNode
) -> CheckResult:
    """Step 4, from this control node: a client outside outbound_proxy_allowed_networks gets
    403 (when this control node is such a client; else skipped, saying why)."""
    assert settings.outbound is not None
    outbound = settings.outbound
    networks = list(outbound.allowed_networks)
    if not networks:
        return CheckResult(
            host.name,
            OUTBOUND_ALLOW_LIST,
            WARN,
            "outbound_proxy_allowed_networks is empty: any client that reaches "
            f"{outbound.url} may send through it",
            "set outbound_proxy_allowed_networks to the Mattermost servers' networks and deploy "
            "deploys/outbound_proxy.py",
        )
    address = str(host.data.get("ssh_hostname") or host.name)
    probe = control.https_status(address, outbound.name, outbound.port, "/version")
    if probe.source is None:
        return CheckResult(
            host.name,
            OUTBOUND_ALLOW_LIST,
            SKIP,
            f"this control node cannot reach {address}:{outbound.port} ({probe.error}): a "
            "refused client cannot be tried from here",
        )
    if in_networks(probe.source, networks):
        return CheckResult(
            host.name,
            OUTBOUND_ALLOW_LIST,
            SKIP,
            f"this control node ({probe.source}) is inside outbound_proxy_allowed_networks "
            f"{networks}: a refused client cannot be tried from here",
        )
    if probe.status == 403:
        return CheckResult(
            host.name,
            OUTBOUND_ALLOW_LIST,
            OK,
            f"this control node ({probe.source}), outside {networks}, gets HTTP 403",
        )
    got = f"HTTP {probe.status}" if probe.status is not None else probe.error
    return CheckResult(
        host.name,
        OUTBOUND_ALLOW_LIST,
        FAIL,
        f"this control node ({probe.source}), outside outbound_proxy_allowed_networks "
        f"{networks}, got {got} from {outbound.url}: the allow-list is not enforced",
        "deploy deploys/outbound_proxy.py (its site refuses other clients with 403)",
    )


# --- 5: the push proxy ----------------------------------------------------------------------------


def check_push_proxy_service(name: str, run: Runner) -> CheckResult:
    """Step 5: the push proxy's service is active."""
    result = run(
        f"systemctl show {PUSH_PROXY_SERVICE} -p ActiveState -p SubState -p Result -p NRestarts"
    )
    state = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    active = state.get("ActiveState", "unknown")
    detail = (
        f"{PUSH_PROXY_SERVICE} is {active} ({state.get('SubState', '?')}, result "
        f"{state.get('Result', '?')}, {state.get('NRestarts', '?')} restarts)"
    )
    if result.rc == 0 and active == "active":
        return CheckResult(name, PUSH_PROXY_SERVICE_CHECK, OK, detail)
    return CheckResult(
        name,
        PUSH_PROXY_SERVICE_CHECK,
        FAIL,
        f"the push proxy is down: {detail}" if result.rc == 0 else command_error(result),
        f"on {name}: `systemctl start {PUSH_PROXY_SERVICE}`; `journalctl -u "
        f"{PUSH_PROXY_SERVICE}` says why it stopped",
    )


def check_push_proxy_version(name: str, run: Runner, settings: Settings) -> CheckResult:
    """Step 5: ``/version`` answers on loopback, with the configured release."""
    assert settings.eas is not None
    url = f"http://127.0.0.1:{settings.eas.listen_port}/version"
    answer = parse_curl(run(curl_command(url, no_proxy=True)))
    if not answer.answered:
        return CheckResult(
            name,
            PUSH_PROXY_VERSION,
            FAIL,
            f"GET {url} on {name}: no answer ({answer.error or f'curl exit {answer.rc}'})",
            f"start {PUSH_PROXY_SERVICE} on {name}; its ListenAddress must be "
            f"127.0.0.1:{settings.eas.listen_port}",
        )
    version = _version(answer.body)
    wanted = settings.eas.artifact.version
    if answer.status != 200 or version is None:
        return CheckResult(
            name,
            PUSH_PROXY_VERSION,
            FAIL,
            f"GET {url}: HTTP {answer.status} {answer.body[:80]!r}: not the push proxy",
            f"something else listens on port {settings.eas.listen_port} on {name}",
        )
    if version.lstrip("v") != wanted.lstrip("v"):
        return CheckResult(
            name,
            PUSH_PROXY_VERSION,
            WARN,
            f"GET {url}: version {version}, but push_proxy_version is {wanted}",
            f"deploy deploys/eas.py (or restart {PUSH_PROXY_SERVICE} after an upgrade)",
        )
    return CheckResult(name, PUSH_PROXY_VERSION, OK, f"GET {url}: HTTP 200, version {version}")


def check_push_front(name: str, run: Runner, settings: Settings) -> CheckResult:
    """Step 5: ``/version`` answers through the push front (NGINX's TLS), on the host itself
    (through 127.0.0.1, the host's trust store)."""
    assert settings.eas is not None
    eas = settings.eas
    target = PushTarget(
        f"https://{eas.push_name}" + ("" if eas.https_port == 443 else f":{eas.https_port}"),
        "https",
        eas.push_name,
        eas.https_port,
        PUSH_FRONT_KIND,
        (name,),
        "",
        eas.front_allowed_networks,
    )
    url = f"{target.url}/version"
    resolve = f"{eas.push_name}:{eas.https_port}:127.0.0.1"
    answer = parse_curl(run(curl_command(url, resolve=resolve, no_proxy=True)))
    if not answer.answered:
        evidence, fix = _hop_failure(answer, target, name, TIMEOUT)
        return CheckResult(name, PUSH_FRONT, FAIL, f"GET {url} via 127.0.0.1: {evidence}", fix)
    networks = eas.front_allowed_networks
    if answer.status == 403 and networks and in_networks("127.0.0.1", networks) is False:
        return CheckResult(
            name,
            PUSH_FRONT,
            SKIP,
            f"the front refuses 127.0.0.1 (push_front_allowed_networks "
            f"{list(eas.front_allowed_networks)}): push-url tries it from the servers",
        )
    if answer.status == 200 and _version(answer.body) is not None:
        return CheckResult(
            name,
            PUSH_FRONT,
            OK,
            f"GET {url} via 127.0.0.1: HTTP 200 through NGINX, version {_version(answer.body)}",
        )
    evidence, fix = _http_failure(answer, target, name)
    return CheckResult(name, PUSH_FRONT, FAIL, f"GET {url} via 127.0.0.1: {evidence}", fix)


def app_types(settings: Iterable[Settings]) -> list[str]:
    """The app types the push proxies are configured for (push_proxy_apple / _android), in
    order, each once."""
    types: list[str] = []
    for each in settings:
        if each.eas is None:
            continue
        for entry in (*each.eas.apple, *each.eas.android):
            if entry.type not in types:
                types.append(entry.type)
    return types


#: What to do when a probe shows a verdict (mmpush/checks/push.py push_verdict).
CREDENTIAL_FIXES = {
    "no working credentials": "the push proxy refused the credentials when it started: "
    f"`journalctl -u {PUSH_PROXY_SERVICE} | grep 'Failed to initialize client'` says why; fix "
    "the file in push_proxy_apple / push_proxy_android and deploy deploys/eas.py",
    "credentials rejected": "Apple or Google rejected the sender: for APNs check the .p8 key, "
    "auth_key_id and team_id (or the certificate) and the topic; for FCM the service "
    "account (revoked key, wrong project); then deploy deploys/eas.py",
    "no access token from Google": "the FCM service account cannot get a token: check the "
    "key is not revoked and oauth2.googleapis.com is reachable from the push proxy "
    "(push_proxy_https_proxy)",
    "TLS not trusted": "serve the full chain on the push URL, from a CA in the server's trust "
    "store (see certificate and push-url)",
    "unreachable": "open the path from the server to the push URL (see push-url)",
    "refused by the outbound proxy": "add the server's network to outbound_proxy_allowed_networks",
    "not answering behind its TLS front": f"start {PUSH_PROXY_SERVICE} on the push proxy",
}


def check_push_credentials(
    view: ServerView, url: str, types: Sequence[str], via_outbound_proxy: bool = False
) -> CheckResult:
    """Step 5, from the server through its push URL (with its unit's proxy variables): one
    probe push per app type with an obviously fake device token; how Apple/Google refuse it
    shows the credentials work. The probe and its verdict are the test-push runbook's
    (mmpush/runbooks/probe.py)."""
    if not types:
        return CheckResult(
            view.name,
            PUSH_CREDENTIALS,
            SKIP,
            "no app type is configured (push_proxy_apple / push_proxy_android are empty)",
        )
    unit = view.settings.mattermost.service
    verdicts = []
    for app in types:
        result = view.run(bash(probe_command(url, app, unit, timeout=PROBE_TIMEOUT)))
        if result.rc != 0:
            verdicts.append((False, f"{app}: the probe did not run ({command_error(result)})"))
            continue
        verdict = judge(view.name, app, url, result.stdout, via_outbound_proxy=via_outbound_proxy)
        verdicts.append((verdict.ok, f"{app}: {verdict.verdict} ({verdict.evidence})"))
    evidence = f"probe pushes (fake device) from {view.name}: " + "; ".join(
        text for _, text in verdicts
    )
    failed = [text for ok, text in verdicts if not ok]
    if not failed:
        return CheckResult(view.name, PUSH_CREDENTIALS, OK, evidence)
    fixes = [fix for key, fix in CREDENTIAL_FIXES.items() if any(key in s for s in failed)]
    return CheckResult(
        view.name,
        PUSH_CREDENTIALS,
        FAIL,
        evidence,
        "; ".join(fixes) or "see the push proxy's journal for the sends that failed",
    )


# --- 6: the licence -------------------------------------------------------------------------------


def _licensed_for(info: Mapping[str, Any], feature: str) -> bool:
    """A licence that has ``feature`` (a licensed summary without the field has it)."""
    licensed = str(info.get("IsLicensed", "false")).lower() == "true"
    return licensed and str(info.get(feature, "true")).lower() == "true"


def check_licence(view: ServerView) -> CheckResult:
    """Step 6: the licence covers HPNS (MHPNS) and id_loaded contents when the server's URL
    and contents need them (``channels/app/notification.go`` canSendPushNotifications)."""
    url, contents = view.push_url, view.contents
    via_proxy = view.settings.push_mode == "hpns" and url is not None and not is_hpns_url(url)
    needs = is_hpns_url(url) or via_proxy or contents == "id_loaded"
    if url is None or view.send is not True:
        return CheckResult(view.name, LICENCE, SKIP, "push is off: no licence needed")
    if not needs:
        return CheckResult(
            view.name,
            LICENCE,
            OK,
            f"no licence needed: {url} is not Mattermost's hosted service and contents are "
            f"{contents!r}",
        )
    base = view.settings.mattermost.ping_url.split("/api/", 1)[0]
    answer = parse_curl(view.run(curl_command(base + LICENSE_PATH, no_proxy=True)))
    info: Any = None
    if answer.answered and answer.status == 200:
        with contextlib.suppress(json.JSONDecodeError):
            info = json.loads(answer.body)
    if not isinstance(info, dict):
        got = f"HTTP {answer.status}" if answer.answered else (answer.error or "no answer")
        return CheckResult(
            view.name,
            LICENCE,
            WARN,
            f"cannot read the licence from {base}{LICENSE_PATH} ({got}); HPNS and id_loaded "
            "need one",
            f"is {view.settings.mattermost.service} running? (mattermost_ping_url says where "
            "it answers)",
        )
    shown = ", ".join(
        f"{key} = {info.get(key, '-')!s}"
        for key in ("IsLicensed", "MHPNS", "IDLoadedPushNotifications")
    )
    hpns = licence_problems(info, url, None)
    id_loaded = [p for p in licence_problems(info, url, contents) if p not in hpns]
    if via_proxy and not _licensed_for(info, "MHPNS"):
        hpns = [
            "HPNS needs a licence with mobile push (MHPNS); the server sends through the "
            f"outbound proxy {url} regardless (it checks only the HPNS URLs themselves)"
        ]
        status = WARN
    else:
        status = FAIL if hpns else WARN
    problems = hpns + id_loaded
    if not problems:
        return CheckResult(view.name, LICENCE, OK, f"the licence covers what is used ({shown})")
    return CheckResult(
        view.name,
        LICENCE,
        status,
        f"{'; '.join(problems)} ({shown})",
        "upload a licence with mobile push (System Console > About > Edition and License), "
        "or use your own push proxy (push_mode 'eas') / generic contents",
    )


# --- 7: environment overrides, config sources ----------------------------------------------------


def check_env_overrides(view: ServerView) -> CheckResult:
    """Step 7: no ``MM_*`` variable overrides a push setting (names only, never values)."""
    unit = view.settings.mattermost.service
    fact = MattermostEnvironment()
    result = view.run(fact.command(unit))
    if result.rc != 0:
        return CheckResult(
            view.name,
            ENV_OVERRIDES,
            WARN,
            f"cannot read {unit}'s environment ({command_error(result)})",
            "check by hand: `systemctl show mattermost -p Environment -p EnvironmentFiles`",
        )
    present = fact.process(result.stdout.splitlines())
    keys = list(dict.fromkeys([SEND, SERVER, CONTENTS, *view.expected]))
    found = [
        f"{name} (in {', '.join(present[name])})"
        for keys_ in keys
        if (name := env_name(keys_)) in present
    ]
    if not found:
        return CheckResult(
            view.name,
            ENV_OVERRIDES,
            OK,
            f"no MM_* variable of {unit} overrides a push setting",
        )
    accepted = view.settings.mattermost.accept_env_overrides
    return CheckResult(
        view.name,
        ENV_OVERRIDES,
        WARN if accepted else FAIL,
        f"{', '.join(found)}: an environment override wins over the configuration and "
        "locks the setting" + (" (accepted: mattermost_accept_env_overrides)" if accepted else ""),
        f"remove the variable from {unit}'s unit or EnvironmentFile, then `systemctl "
        f"daemon-reload && systemctl restart {unit}`",
    )


def push_values(text: str) -> dict[tuple[str, ...], Any]:
    """The three push settings a configuration text gives (Mattermost's defaults filled in)."""
    return {keys: _effective(text, keys) for keys in (SEND, SERVER, CONTENTS)}


def running_config_differences(view: ServerView) -> tuple[str, str] | None:
    """For a file configuration with a local-mode socket: (status, sentence) comparing the
    file with what the running server uses; None when it cannot be compared."""
    source, effective = view.source, view.effective
    if source is None or effective is None or source.kind != "file" or not source.socket:
        return None
    answer = parse_curl(
        view.run(curl_command("http://localhost" + CONFIG_PATH, unix_socket=source.socket))
    )
    if not answer.answered or answer.status != 200:
        got = f"HTTP {answer.status}" if answer.answered else answer.error or "no answer"
        return WARN, f"the local-mode socket {source.socket} did not give the config ({got})"
    file_values, running = push_values(effective.text), push_values(answer.body)
    wrong = [
        f"{'.'.join(keys)}: file {file_values[keys]!r}, running {running[keys]!r}"
        for keys in file_values
        if not same_json(file_values[keys], running[keys])
    ]
    if wrong:
        return FAIL, (
            f"{effective.source} and the running server disagree ({'; '.join(wrong)}): the "
            "file changed without a restart"
        )
    return OK, f"{effective.source} and the running server (local-mode socket) agree"


def check_config_agree(
    views: Sequence[ServerView], data_of: Mapping[str, Mapping[str, Any]]
) -> list[CheckResult]:
    """Step 7: each server's configuration sources agree: a file with what the running server
    uses (through the local-mode socket, when there is one), and the servers of one cluster
    (one shared database configuration, or ``mattermost_cluster``) report the same push
    settings."""
    keys: dict[str, str | None] = {}
    results: dict[str, list[tuple[str, str, str]]] = {view.name: [] for view in views}
    for view in views:
        try:
            source = view.source or ConfigSource("unknown")
            keys[view.name] = cluster_key(data_of[view.name], source)
        except ClusterError as error:
            keys[view.name] = None
            results[view.name].append((FAIL, str(error), "fix mattermost_cluster"))
        compared = running_config_differences(view)
        if compared is not None:
            status, text = compared
            fix = f"restart {view.settings.mattermost.service} (push settings apply at a start)"
            results[view.name].append((status, text, fix if status == FAIL else ""))
    clusters: dict[str, list[ServerView]] = {}
    for view in views:
        key = keys.get(view.name)
        if key is not None and view.effective is not None:
            clusters.setdefault(key, []).append(view)
    for key, members in clusters.items():
        values = {
            member.name: push_values(member.effective.text)
            for member in members
            if member.effective is not None
        }
        differing = set(verify_cluster(values))
        reference = members[0].name
        for member in members:
            others = [m.name for m in members if m is not member]
            if not others:
                results[member.name].append((OK, f"{key}: no other node was checked", ""))
            elif member.name in differing:
                mine, theirs = values[member.name], values[reference]
                detail = ", ".join(
                    f"{'.'.join(k)} = {mine[k]!r} ({reference}: {theirs[k]!r})"
                    for k in mine
                    if not same_json(mine[k], theirs[k])
                )
                results[member.name].append(
                    (
                        FAIL,
                        f"{key}: {member.name} reports {detail}",
                        f"reload its configuration: `mmctl --local config reload` on "
                        f"{member.name}, or restart it; check MM_CONFIG and mattermost_cluster",
                    )
                )
            else:
                results[member.name].append(
                    (OK, f"{key}: same push settings as {', '.join(others)}", "")
                )
    out = []
    for view in views:
        parts = results[view.name]
        if not parts:
            where = view.source.describe() if view.source else "its configuration"
            out.append(
                CheckResult(
                    view.name,
                    CONFIG_AGREE,
                    SKIP,
                    f"{where} is its own and there is no local-mode socket to compare the "
                    "running server with",
                )
            )
            continue
        status = worst(p[0] for p in parts)
        fixes = [p[2] for p in parts if p[2]]
        out.append(
            CheckResult(
                view.name, CONFIG_AGREE, status, "; ".join(p[1] for p in parts), "; ".join(fixes)
            )
        )
    return out


# --- 8: push errors in the logs -------------------------------------------------------------------


@dataclass(frozen=True)
class KnownMessage:
    """A log message we can explain: ``patterns`` (regular expressions) find it, ``meaning``
    says what it means, ``fix`` what to do; ``benign`` ones need no action; ``source`` cites
    where the wording comes from."""

    id: str
    patterns: tuple[str, ...]
    meaning: str
    fix: str
    source: str
    benign: bool = False

    def matches(self, text: str) -> bool:
        return any(re.search(pattern, text) for pattern in self.patterns)


_PP = "tests/emulators/push_proxy/mattermost_push_proxy_emulator.py"
_MM = "tests/emulators/mattermost/mattermost_emulator.py"
_AG = "tests/emulators/apple_google/push_services_emulator.py"

#: What push errors say, in the words of the real programs (as the emulators reproduce them:
#: the Mattermost emulator is Python, so its transport errors have Python's words too).
KNOWN_MESSAGES: tuple[KnownMessage, ...] = (
    KnownMessage(
        "x509-unknown-authority",
        (
            r"x509: certificate signed by unknown authority",
            r"CERTIFICATE_VERIFY_FAILED.*(unable to get|self[- ]signed|unknown ca)",
            r"unable to get local issuer certificate",
        ),
        "the sender does not trust the receiver's certificate: a chain sent without its "
        "intermediate, a private CA, or an old CA bundle on the sending host",
        "serve the full chain (`mmpush check-cert NAME`); update ca-certificates on the sender",
        f"{_PP} _tls_error (Go crypto/x509); {_MM} raw_send",
    ),
    KnownMessage(
        "x509-name-mismatch",
        (r"x509: certificate is not valid for", r"(?i)hostname mismatch"),
        "the certificate is for another name than the one in the URL",
        "reissue the certificate for the URL's name, or use the name it is for",
        f"{_PP} _tls_error",
    ),
    KnownMessage(
        "x509-expired",
        (r"x509: certificate has expired or is not yet valid", r"(?i)certificate has expired"),
        "the certificate has expired (or the sender's clock is wrong)",
        "renew it (`pyinfra INVENTORY deploys/certs.py`); check the clocks",
        f"{_PP} _tls_error",
    ),
    KnownMessage(
        "failed-to-initialize-client",
        (r"Failed to initialize client",),
        "the push proxy refused an app's credentials when it started; that app type is "
        "skipped until they are fixed",
        "fix the credential file (push_proxy_apple / push_proxy_android) and deploy deploys/eas.py",
        f"{_PP} init_clients (server/server.go Start)",
    ),
    KnownMessage(
        "missing-platform",
        (r"Did not send message because of missing platform property",),
        "the push proxy has no working client for the app type: its credentials were refused "
        "at start, or the type is not configured",
        "configure the type in push_proxy_apple / push_proxy_android with working "
        "credentials (see 'Failed to initialize client' in the push proxy's journal)",
        f"{_PP} _send_push (server/server.go handleSendNotification)",
    ),
    KnownMessage(
        "apns-invalid-provider-token",
        (r"unknown send response error", r"InvalidProviderToken"),
        "APNs refused the sender (InvalidProviderToken): the .p8 key, its key id or team id is "
        "wrong or revoked",
        "check auth_key_file, auth_key_id and team_id in push_proxy_apple (Apple Developer > "
        "Keys), then deploy deploys/eas.py",
        f"{_PP} AppleClient.send; {_AG} (InvalidProviderToken)",
    ),
    KnownMessage(
        "device-token-not-for-topic",
        (r"DeviceTokenNotForTopic", r"TopicDisallowed"),
        "the device's app is not the topic (bundle id) the push proxy sends for",
        "set push_proxy_apple's topic to the app's bundle id (your own build's, not "
        "com.mattermost.rnbeta)",
        f"{_AG}; {_PP} APNS_REMOVE_REASONS",
    ),
    KnownMessage(
        "bad-device-token",
        (r"BadDeviceToken",),
        "APNs does not know the device token: a sandbox (development) token sent to "
        "production or the reverse, or a malformed token",
        "match push_proxy_apple's development flag to how the app was built (TestFlight and "
        "App Store: production)",
        f"{_AG}; {_PP} APNS_REMOVE_REASONS",
    ),
    KnownMessage(
        "apns-unregistered",
        (r"\bUnregistered\b",),
        "the app was removed from the device: the server forgets that device (normal)",
        "nothing to do",
        f"{_AG} (410 Unregistered)",
        benign=True,
    ),
    KnownMessage(
        "fcm-unregistered",
        (r"\bUNREGISTERED\b", r"Requested entity was not found"),
        "the FCM token is no longer valid (app removed or data cleared): forgotten (normal)",
        "nothing to do",
        f"{_AG}; {_PP} AndroidClient.send",
        benign=True,
    ),
    KnownMessage(
        "fcm-sender-id-mismatch",
        (r"SENDER_ID_MISMATCH", r"SenderId mismatch"),
        "the device registered with another Firebase project than the service account's",
        "use the service account of the app's own Firebase project (push_proxy_android)",
        f"{_AG}; {_PP} AndroidClient.send",
    ),
    KnownMessage(
        "fcm-invalid-argument",
        (r"INVALID_ARGUMENT", r"not a valid FCM registration token"),
        "FCM refused the message or the token as malformed (a probe's fake token gives this)",
        "if real devices get it: the app's FCM token is not from this Firebase project",
        f"{_AG}; {_PP} AndroidClient.send",
    ),
    KnownMessage(
        "google-auth",
        (
            r"invalid_grant",
            r"oauth2: cannot fetch token",
            r"THIRD_PARTY_AUTH_ERROR",
            r"\bUNAUTHENTICATED\b",
            r"\bPERMISSION_DENIED\b",
        ),
        "Google refused the FCM service account (revoked key, deleted account, wrong project, "
        "or the Firebase Cloud Messaging API not enabled)",
        "create a new key for the service account and deploy it (push_proxy_android)",
        f"{_AG} (OAuth2 invalid_grant, PERMISSION_DENIED)",
    ),
    KnownMessage(
        "deadline-exceeded",
        (r"context deadline exceeded", r"Client\.Timeout exceeded", r"(?i)\btimed out\b"),
        "the request got no answer in time: a firewall dropping packets, or a slow hop",
        "open the path (egress firewall, outbound proxy, push_proxy_https_proxy) and look for "
        "the hop that hangs",
        f"{_PP} DEADLINE_EXCEEDED",
    ),
    KnownMessage(
        "connection-refused",
        (r"(?i)connection refused",),
        "nothing listens at the destination: the push proxy, its front or the outbound proxy "
        "is down",
        "start the service behind the URL (mattermost-push-proxy, nginx)",
        f"{_PP} _dial; {_MM} raw_send",
    ),
    KnownMessage(
        "no-such-host",
        (r"no such host", r"Name or service not known", r"Temporary failure in name resolution"),
        "the destination's name does not resolve on the sender",
        "fix DNS (or /etc/hosts) on the sending host",
        f"{_PP} _dial; {_MM} raw_send",
    ),
    KnownMessage(
        "forbidden-403",
        (r"response returned error code: 403",),
        "the push URL answered 403: the outbound proxy (or the push front) does not let this "
        "server in",
        "add the server's network to outbound_proxy_allowed_networks (or "
        "push_front_allowed_networks) and deploy",
        f"{_MM} raw_send (rawSendToPushProxy)",
    ),
    KnownMessage(
        "bad-gateway",
        (r"response returned error code: 50[234]",),
        "the proxy in front answered but the hop behind it failed (push proxy down, or the "
        "outbound proxy cannot reach HPNS)",
        "check the service behind the front / the outbound proxy's upstream",
        f"{_MM} raw_send",
    ),
    KnownMessage(
        "throttled",
        (r"Error: code=429", r"response returned error code: 429"),
        "the push proxy throttled the sender (ThrottlePerSec per X-Forwarded-For)",
        "raise push_proxy_throttle_per_sec",
        f"{_PP} _throttled",
    ),
    KnownMessage(
        "licence-missing",
        (
            r"Push notifications are disabled - license missing",
            r"Push notifications have been disabled\. Update your license",
        ),
        "the server uses HPNS without a licence with mobile push: it sends no push at all",
        "upload a licence with mobile push, or use your own push proxy (push_mode 'eas')",
        f"{_MM} can_send_push (channels/app/notification.go)",
    ),
    KnownMessage(
        "push-disabled",
        (r"Push notifications are disabled - server config",),
        "EmailSettings.SendPushNotifications is false",
        "deploy the push mode",
        f"{_MM} can_send_push",
    ),
    KnownMessage(
        "device-removed",
        (r"device was reported as removed", r"sending remove code"),
        "the push service said the device token is gone; the server clears it (normal after "
        "an app is removed)",
        "nothing to do, unless every device gets it (then see DeviceTokenNotForTopic / "
        "BadDeviceToken)",
        f"{_MM} send_to_push_proxy; {_PP} AppleClient.send",
        benign=True,
    ),
    KnownMessage(
        "egress-proxy",
        (r"proxyconnect tcp",),
        "the push proxy's egress proxy (HTTPS_PROXY) failed",
        "check push_proxy_https_proxy and that the egress proxy allows CONNECT to APNs/FCM",
        f"{_PP} _connect_tunnel",
    ),
)

#: Levels that count as errors: Mattermost's plain tags and JSON levels, the push proxy's.
_ERROR_LEVELS = {
    "EROR",
    "WARN",
    "CRIT",
    "FATL",
    "PANC",
    "error",
    "warn",
    "warning",
    "critical",
    "fatal",
    "panic",
}
_MM_PLAIN = re.compile(r"^\[(?P<ts>[^\]]+)\] \[(?P<level>[A-Z]{4})\] ")
_PROXY_PLAIN = re.compile(r"^(?P<level>debug|info|warn|error)\s+\[(?P<ts>[^\]]+)\] ")
#: Lines of our own probes (and the verify suite's), which fail on purpose.
_OWN_MARKERS = ("mmpush-probe", FAKE_DEVICE_TOKEN[:8], "verify-suite")

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1<redacted>"),
    (
        re.compile(
            r"(\b(?:device_id|did|token|password|secret|signature|authorization|"
            r"private_key)\b[\"']?\s*[=:]\s*\"?)([^\"\s,}]+)",
            re.I,
        ),
        r"\1<redacted>",
    ),
    (re.compile(r"(Sending push notification to )\S+( wi msg of ).*"), r"\1<redacted>\2<...>"),
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), r"\1<redacted>@"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<redacted-jwt>"),
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), "<redacted-hex>"),
)


def redact(text: str) -> str:
    """``text`` without device tokens, credentials, bearer tokens, JWTs or long hex strings.

    redact('error device_id=abc123 msg') == 'error device_id=<redacted> msg'
    """
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


@dataclass(frozen=True)
class LogLine:
    """An error or warning line of a log: its time stamp, level and (redacted) text."""

    timestamp: str
    level: str
    text: str


def parse_log_line(line: str) -> LogLine | None:
    """A Mattermost (plain or JSON) or push proxy log line at warning level or above; None
    for other lines and for our own probes' lines."""
    line = line.strip()
    if not line or any(marker in line for marker in _OWN_MARKERS):
        return None
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            level = str(record.get("level", ""))
            if level.lower() not in _ERROR_LEVELS:
                return None
            fields = " ".join(
                f"{k}={v}" for k, v in record.items() if k not in ("timestamp", "level", "msg")
            )
            text = f"{record.get('msg', '')} {fields}".strip()
            return LogLine(str(record.get("timestamp", "")), level.lower(), redact(text))
    for pattern in (_MM_PLAIN, _PROXY_PLAIN):
        match = pattern.match(line)
        if match:
            if match["level"] not in _ERROR_LEVELS:
                return None
            return LogLine(match["ts"], match["level"], redact(line[match.end() :]))
    return None


def explain_log(lines: Iterable[str], keep: int) -> tuple[str, str, str]:
    """(status, evidence, fix) for a log's lines: the last ``keep`` error lines, each known
    message explained (count, last time), the unknown ones quoted."""
    errors = [parsed for line in lines if (parsed := parse_log_line(line)) is not None][-keep:]
    if not errors:
        return OK, "no push error or warning", ""
    known: dict[str, tuple[KnownMessage, int, str]] = {}
    unknown: list[LogLine] = []
    for entry in errors:
        matched = [message for message in KNOWN_MESSAGES if message.matches(entry.text)]
        for message in matched:
            _, count, _ = known.get(message.id, (message, 0, ""))
            known[message.id] = (message, count + 1, entry.timestamp)
        if not matched:
            unknown.append(entry)
    parts = [
        f"{message.id} x{count} (last {stamp or '?'}): {message.meaning}"
        for message, count, stamp in known.values()
    ]
    parts += [f"unexplained: {entry.text[:200]!r} ({entry.timestamp})" for entry in unknown[-3:]]
    actionable = unknown or [m for m, _, _ in known.values() if not m.benign]
    fixes = [m.fix for m, _, _ in known.values() if not m.benign]
    return (
        WARN if actionable else OK,
        f"the last {len(errors)} error/warning line(s): " + "; ".join(parts),
        "; ".join(dict.fromkeys(fixes)),
    )


def check_mattermost_log(view: ServerView, keep: int) -> CheckResult:
    """Step 8 on a Mattermost server: errors in notifications.log."""
    enabled = (
        value_at(view.effective.text, ("NotificationLogSettings", "EnableFile"))
        if view.effective
        else "<missing>"
    )
    unit = view.settings.mattermost.service
    working = view.run(working_directory_command(unit)).stdout if view.effective else ""
    path = log_paths(view.effective.text if view.effective else "{}", working).notifications
    result = view.run(f"tail -n {LOG_SCAN_LINES} {shlex.quote(path)}")
    if result.rc != 0:
        off = " (NotificationLogSettings.EnableFile is false)" if enabled is False else ""
        return CheckResult(
            view.name,
            PUSH_ERRORS,
            SKIP,
            f"no readable {path}{off}: {command_error(result)}",
            "turn NotificationLogSettings.EnableFile on to see push outcomes",
        )
    status, evidence, fix = explain_log(result.stdout.splitlines(), keep)
    return CheckResult(view.name, PUSH_ERRORS, status, f"{path}: {evidence}", fix)


def check_push_proxy_log(name: str, run: Runner, keep: int) -> CheckResult:
    """Step 8 on a push proxy: errors in its journal."""
    command = f"journalctl -u {PUSH_PROXY_SERVICE} -n {LOG_SCAN_LINES} --no-pager -o cat"
    result = run(command)
    if result.rc != 0:
        return CheckResult(
            name,
            PUSH_ERRORS,
            SKIP,
            f"cannot read {PUSH_PROXY_SERVICE}'s journal: {command_error(result)}",
        )
    status, evidence, fix = explain_log(result.stdout.splitlines(), keep)
    return CheckResult(name, PUSH_ERRORS, status, f"{PUSH_PROXY_SERVICE} journal: {evidence}", fix)


# --- the checklist --------------------------------------------------------------------------------


def secrets_of(settings: Iterable[Settings]) -> list[str]:
    """Every secret the inventory's settings hold, as text (to scrub from results)."""
    found: list[Secret] = []
    for each in settings:
        mm = each.mattermost
        found += [s for s in (mm.admin_token,) if s is not None]
        if each.acme.dns is not None:
            found.append(each.acme.dns.tsig_secret)
        if each.eas is not None:
            for apple in each.eas.apple:
                found += [
                    s
                    for s in (apple.auth_key, apple.certificate, apple.certificate_password)
                    if s is not None
                ]
            found += [android.service_account for android in each.eas.android]
        if each.acme.files is not None:
            found.append(each.acme.files.key)
    texts = []
    for secret in found:
        text = secret.content.decode(errors="replace").strip()
        # each line too (a PEM body line; a JSON string's "\n"-escaped lines)
        pieces = (piece.strip() for piece in re.split(r"\\n|\n", text))
        texts += [t for t in (text, *pieces) if len(t) >= 8]
    return sorted(set(texts), key=len, reverse=True)


def scrub(result: CheckResult, secrets: Sequence[str]) -> CheckResult:
    """``result`` with every secret replaced by ``<secret>``."""
    evidence, fix = result.evidence, result.fix
    for secret in secrets:
        evidence, fix = evidence.replace(secret, "<secret>"), fix.replace(secret, "<secret>")
    return CheckResult(result.host, result.check, result.status, " ".join(evidence.split()), fix)


@dataclass
class Checklist:
    """One run of the checklist over an inventory: what every step needs and what the earlier
    steps found. ``diagnose`` is the way to use it."""

    hosts: Sequence[InventoryHost]
    runners: Mapping[str, Runner]
    control: ControlNode
    inventory_label: str = "INVENTORY"
    log_lines: int = DEFAULT_LOG_LINES
    results: list[CheckResult] = field(default_factory=list)
    settings: dict[str, Settings] = field(default_factory=dict)
    #: Selected hosts with valid settings that answered over SSH.
    live: dict[str, InventoryHost] = field(default_factory=dict)
    #: Mattermost servers whose effective configuration was read (step 1).
    active: list[ServerView] = field(default_factory=list)
    answers: dict[str, CurlAnswer | None] = field(default_factory=dict)
    targets: dict[str, PushTarget] = field(default_factory=dict)

    @property
    def pushing(self) -> list[ServerView]:
        return [view for view in self.active if view.settings.push_mode != "off"]

    def live_in(self, group: str) -> list[tuple[str, Settings]]:
        return [(n, self.settings[n]) for n, h in self.live.items() if h.in_group(group)]

    def hosts_and_ssh(self, wanted: set[str]) -> None:
        """settings and reachable, for the selected hosts (every host's settings count)."""
        for host in self.hosts:
            result, valid = check_settings(host, self.hosts)
            if valid is not None:
                self.settings[host.name] = valid
            if host.name in wanted:
                self.results.append(result)
        for host in self.hosts:
            if host.name in wanted and host.name in self.settings:
                result = check_reachable(host, self.runners[host.name])
                self.results.append(result)
                if result.status == OK:
                    self.live[host.name] = host

    def step1_push_settings(self) -> None:
        outbound_data = [h.data for h in self.hosts if h.in_group("outbound_proxies")]
        for name, settings in self.live_in("mattermost"):
            view = ServerView(name, settings, self.runners[name])
            self.results.append(
                check_push_settings(
                    view,
                    self.live[name].data,
                    outbound_data,
                    list(self.settings.values()),
                    self.inventory_label,
                )
            )
            if view.effective is not None:
                self.active.append(view)

    def step2_push_url(self) -> None:
        for view in self.active:
            if view.settings.push_mode == "off":
                self.results.append(CheckResult(view.name, PUSH_URL, SKIP, "push_mode is 'off'"))
                continue
            url = view.push_url
            assert url is not None
            target = push_target(url, self.settings.values())
            self.targets[view.name] = target
            why = "" if url == view.url else " (the URL push_mode expects; the server has none)"
            result, self.answers[view.name] = check_push_url(view, target, why)
            self.results.append(result)

    def step3_certificate(self) -> None:
        checked: dict[tuple[str, int, tuple[str, ...]], CheckResult] = {}
        for view in self.pushing:
            target = self.targets[view.name]
            answer = self.answers.get(view.name)
            addresses = [answer.remote_ip] if answer is not None and answer.remote_ip else []
            addresses = addresses or resolve_on_host(view.run, target.name)
            key = (target.name, target.port, tuple(addresses[:1]))
            if key not in checked:
                checked[key] = check_push_certificate(
                    view,
                    target,
                    addresses,
                    self.control,
                    self.ca_bundle_for(view, target),
                    self.inventory_label,
                )
            found = checked[key]
            self.results.append(
                CheckResult(view.name, CERTIFICATE, found.status, found.evidence, found.fix)
            )

    def ca_bundle_for(self, view: ServerView, target: PushTarget) -> str | None:
        """The acme_ca_bundle of the host serving the URL, else the server's."""
        bundles = [self.settings[h].acme.ca_bundle for h in target.hosts if h in self.settings]
        return next((bundle for bundle in bundles if bundle), view.settings.acme.ca_bundle)

    def step4_outbound_proxy(self) -> None:
        for view in self.pushing:
            proxy_url = view.settings.hpns_outbound_url
            if view.settings.push_mode != "hpns" or not proxy_url:
                why = (
                    "HPNS is reached directly (no outbound_proxies host in the inventory)"
                    if view.settings.push_mode == "hpns"
                    else f"push_mode {view.settings.push_mode!r} uses no outbound proxy"
                )
                self.results.append(CheckResult(view.name, OUTBOUND_PROXY, SKIP, why))
                continue
            target = push_target(proxy_url, self.settings.values())
            same = self.answers.get(view.name) if view.push_url == proxy_url else None
            self.results.append(check_outbound_path(view, target, same))
        for name, settings in self.live_in("outbound_proxies"):
            if settings.outbound is not None:
                self.results.append(check_outbound_service(name, self.runners[name], settings))
                self.results.append(
                    check_outbound_allow_list(self.live[name], settings, self.control)
                )

    def step5_push_proxy(self) -> None:
        for name, settings in self.live_in("push_proxies"):
            if settings.eas is not None:
                run = self.runners[name]
                self.results.append(check_push_proxy_service(name, run))
                self.results.append(check_push_proxy_version(name, run, settings))
                self.results.append(check_push_front(name, run, settings))
        types = app_types(self.settings.values())
        for view in self.pushing:
            mode = view.settings.push_mode
            reached = [r for r in self.results if (r.host, r.check) == (view.name, PUSH_URL)]
            if mode != "eas":
                why = f"push_mode {mode!r}: Mattermost's service holds the app credentials"
            elif not reached or reached[0].status != OK:
                why = "not tried: the push URL does not answer /version (push-url)"
            else:
                url = self.targets[view.name].url
                self.results.append(check_push_credentials(view, url, types))
                continue
            self.results.append(CheckResult(view.name, PUSH_CREDENTIALS, SKIP, why))

    def steps6to8(self) -> None:
        self.results += [check_licence(view) for view in self.active]
        self.results += [check_env_overrides(view) for view in self.active]
        data = {view.name: self.live[view.name].data for view in self.active}
        self.results += check_config_agree(self.active, data)
        self.results += [check_mattermost_log(view, self.log_lines) for view in self.active]
        for name, settings in self.live_in("push_proxies"):
            if settings.eas is not None:
                self.results.append(check_push_proxy_log(name, self.runners[name], self.log_lines))


def diagnose(
    hosts: Sequence[InventoryHost],
    runners: Mapping[str, Runner],
    control: ControlNode | None = None,
    *,
    selected: Iterable[str] | None = None,
    inventory_label: str = "INVENTORY",
    log_lines: int = DEFAULT_LOG_LINES,
) -> list[CheckResult]:
    """Run the checklist on the ``selected`` hosts (default: all) of an inventory, in the
    guide's order; ``runners`` reach them. Hosts that are not selected still count as data
    (which push front a URL is, which app types the push proxies have). Secrets of the
    inventory never reach a result.

        results = diagnose(hosts, {"mm1": run_mm1}, ControlNode(), selected=["mm1"])
    """
    checklist = Checklist(hosts, runners, control or ControlNode(), inventory_label, log_lines)
    checklist.hosts_and_ssh(set(selected) if selected is not None else {h.name for h in hosts})
    checklist.step1_push_settings()
    checklist.step2_push_url()
    checklist.step3_certificate()
    checklist.step4_outbound_proxy()
    checklist.step5_push_proxy()
    checklist.steps6to8()
    hidden = secrets_of(checklist.settings.values())
    return [scrub(result, hidden) for result in checklist.results]


def summary(results: Sequence[CheckResult]) -> dict[str, int]:
    """How many results have each status: {"ok": 12, "warn": 1, "fail": 2, "skip": 3}."""
    return {status: sum(r.status == status for r in results) for status in STATUSES}
