"""The test-push runbook: from a Mattermost server, a probe push per app type through the
push server that server uses (its own DNS, egress, outbound proxy and trust store), with an
obviously fake device token, and one verdict per app type with its evidence.

    probe_push(name="Probe pushes from this server", mattermost=settings.mattermost,
               app_types=("apple_rn", "android_rn"))

Verdicts: path OK and credentials accepted; credentials rejected; TLS not trusted (which
certificate, which issuer); unreachable (DNS, connect, timeout; at which hop); refused by the
outbound proxy; HPNS needs a licence; push disabled. The operation fails when any app type is
not OK, so the runbook's exit code says whether pushes can work.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, OperationError, operation

from mmpush.checks.config import SEND, SERVER, ConfigReadError, read_effective_config, value_at
from mmpush.checks.push import probe_body, push_verdict
from mmpush.mattermost.access import read_licence
from mmpush.mattermost.api import is_hpns_url, licence_problems
from mmpush.operations import run_quiet
from mmpush.settings import MattermostSettings
from mmpush.transactions import bash

#: curl's exit codes and the hop that failed (curl(1), "EXIT CODES").
CURL_FAILURES = {
    6: "DNS: the push server's name does not resolve on this server",
    7: "connect: nothing answers on the push server's address and port",
    28: "timeout: no answer in time (a firewall dropping packets, or a slow proxy)",
    35: "TLS: the handshake failed",
    51: "TLS: the certificate is not for this name",
    60: "TLS: the certificate is not trusted by this server's trust store",
}
TLS_FAILURES = (35, 51, 60)
#: What NGINX answers when what it proxies to does not answer.
GATEWAY_ERRORS = (502, 503, 504)


@dataclass(frozen=True)
class Verdict:
    """One line of the runbook's report."""

    host: str
    app_type: str
    ok: bool
    verdict: str
    evidence: str

    def line(self) -> str:
        mark = "OK  " if self.ok else "FAIL"
        return f"{mark} {self.host} {self.app_type}: {self.verdict} ({self.evidence})"


def proxy_environment_command(unit: str) -> str:
    """Shell: export the proxy variables the Mattermost unit runs with (``Environment=`` and
    ``EnvironmentFile=``), so that a probe leaves the host the way the server's pushes do."""
    u = shlex.quote(unit)
    files = f"systemctl show -p EnvironmentFiles --value {u} | sed 's/ (ignore_errors=.*//'"
    names = "^(export )?(https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)="
    return (
        'while IFS= read -r kv; do export "$kv"; done < <( { '
        f"systemctl show -p Environment --value {u} | tr ' ' '\\n'; "
        f'for f in $({files}); do cat -- "${{f#-}}" 2>/dev/null || true; done; }} '
        f"| grep -E '{names}' | sed -E 's/^export //; s/=\"(.*)\"$/=\\1/' "
        "|| true )"
    )


def probe_command(url: str, app_type: str, unit: str = "mattermost", timeout: int = 20) -> str:
    """The shell command that sends one probe push from the server, with the unit's proxy
    variables: prints curl's exit code, the HTTP status, then the answer's body (the body holds
    no secret)."""
    body = shlex.quote(json.dumps(probe_body(app_type)))
    target = shlex.quote(url.rstrip("/") + "/api/v1/send_push")
    return (
        f"{proxy_environment_command(unit)}; "
        f'out=$(mktemp); rc=0; printf %s {body} | curl -sS --max-time {timeout} -o "$out" '
        f"-w '%{{http_code}}' -H 'Content-Type: application/json' --data-binary @- {target} "
        '> "$out.status" 2> "$out.err" || rc=$?; '
        'echo "rc=$rc status=$(cat "$out.status")"; cat "$out.err"; echo "--body--"; '
        'cat "$out"; rm -f "$out" "$out.status" "$out.err"'
    )


def certificate_command(url: str) -> str:
    """Which certificate the push server sends, as this server sees it (subject, issuer)."""
    authority = url.removeprefix("https://").split("/")[0]
    name, _, port = authority.partition(":")
    return (
        f"timeout 10 openssl s_client -connect {shlex.quote(f'{name}:{port or 443}')} "
        f"-servername {shlex.quote(name)} </dev/null 2>/dev/null "
        "| openssl x509 -noout -subject -issuer 2>/dev/null | tr '\\n' ' '"
    )


def read_probe(output: str) -> tuple[int, int, str, str]:
    """(curl exit code, HTTP status, curl's error text, body) from :func:`probe_command`."""
    head, _, body = output.partition("--body--\n")
    first, _, error = head.partition("\n")
    fields = dict(part.split("=", 1) for part in first.split() if "=" in part)
    rc = int(fields.get("rc", "-1") or -1)
    status_text = fields.get("status", "") or "0"
    return rc, int(status_text) if status_text.isdigit() else 0, error.strip(), body


def judge(
    host_name: str,
    app_type: str,
    url: str,
    output: str,
    certificate: str = "",
    via_outbound_proxy: bool = False,
) -> Verdict:
    """The verdict of one probe, from what the server saw."""
    rc, status, error, body = read_probe(output)
    if rc in TLS_FAILURES:
        seen = certificate or "no certificate could be read"
        return Verdict(
            host_name,
            app_type,
            False,
            f"TLS not trusted: {CURL_FAILURES[rc]}",
            f"{url}: {seen}; {error}",
        )
    if rc:
        hop = CURL_FAILURES.get(rc, f"curl exit {rc}")
        via = " (the outbound proxy)" if via_outbound_proxy else ""
        return Verdict(host_name, app_type, False, f"unreachable: {hop}", f"{url}{via}: {error}")
    if status == 403 and via_outbound_proxy:
        return Verdict(
            host_name,
            app_type,
            False,
            "refused by the outbound proxy: this server is not in outbound_proxy_allowed_networks",
            f"{url}: HTTP 403",
        )
    if status in GATEWAY_ERRORS:
        behind = (
            "the outbound proxy cannot reach the hosted push service"
            if via_outbound_proxy
            else "the push proxy is not answering behind its TLS front (stopped or crashed?)"
        )
        return Verdict(host_name, app_type, False, behind, f"{url}: HTTP {status} from NGINX")
    found = push_verdict(app_type, status, body)
    return Verdict(host_name, app_type, found.accepted, found.verdict, f"{url}: {found.evidence}")


@operation(is_idempotent=False)
def probe_push(
    mattermost: MattermostSettings,
    app_types: tuple[str, ...],
    expected_url: str | None,
    outbound_url: str = "",
):
    """Probe pushes from this Mattermost server, one per app type (see the module docs).

    + mattermost: the server's settings (where its configuration lives)
    + app_types: the app types to probe (the push proxy's, for EAS)
    + expected_url: the push server the inventory's mode gives the server (None: push off)
    + outbound_url: the outbound proxy's URL, when the inventory has one (names its refusals)
    """
    yield FunctionCommand(_probe, (mattermost, app_types, expected_url, outbound_url), {})


def _probe(
    state: Any,
    host: Any,
    mattermost: MattermostSettings,
    app_types: tuple[str, ...],
    expected_url: str | None,
    outbound_url: str,
) -> bool:
    def run(command: str) -> str:
        # never printed, whatever the verbosity: a configuration file holds the database DSN
        return run_quiet(host, bash(command), "the probe")

    try:
        verdicts = probe_verdicts(host, run, mattermost, app_types, expected_url, outbound_url)
    except (OperationError, ConfigReadError) as error:
        host.log_styled(f"test push: {error}", fg="red", log_func=logger.error)
        return False
    for verdict in verdicts:
        host.log_styled(
            f"test push: {verdict.line()}",
            fg="green" if verdict.ok else "red",
            log_func=logger.info if verdict.ok else logger.error,
        )
    return all(v.ok for v in verdicts)


def probe_verdicts(
    target: Any,
    run: Any,
    mattermost: MattermostSettings,
    app_types: tuple[str, ...],
    expected_url: str | None,
    outbound_url: str,
) -> list[Verdict]:
    """Every verdict for one server (the checks a server's settings allow, then the probes)."""
    effective = read_effective_config(run, mattermost)
    url = str(value_at(effective.text, SERVER) or "")
    send = value_at(effective.text, SEND)
    shown = f"{effective.source}: SendPushNotifications={send!r}, PushNotificationServer={url!r}"
    if send is not True or not url:
        if expected_url is None:
            ok = "push is disabled, as push_mode off says"
            return [Verdict(target.name, "all", True, ok, shown)]
        return [Verdict(target.name, t, False, "push is disabled", shown) for t in app_types]
    verdicts = []
    if expected_url is None or url.rstrip("/") != expected_url.rstrip("/"):
        verdicts.append(mode_mismatch(target.name, url, expected_url, shown))
    if is_hpns_url(url):
        licence = read_licence(target, mattermost)
        contents = str(value_at(effective.text, ("EmailSettings", "PushNotificationContents")))
        problems = licence_problems(licence or {}, url, contents)
        hpns = [p for p in problems if "id_loaded" not in p]
        if licence is not None and hpns:
            return [
                Verdict(target.name, t, False, "HPNS needs a licence", hpns[0]) for t in app_types
            ]
    via_proxy = bool(outbound_url) and url.rstrip("/") == outbound_url.rstrip("/")
    certificate = ""
    for app_type in app_types:
        output = run(probe_command(url, app_type, mattermost.service))
        rc = read_probe(output)[0]
        if rc in TLS_FAILURES and not certificate:
            certificate = run(certificate_command(url)).strip()
        verdicts.append(judge(target.name, app_type, url, output, certificate, via_proxy))
    return verdicts


def mode_mismatch(host_name: str, url: str, expected: str | None, shown: str) -> Verdict:
    """The server sends pushes elsewhere than the inventory's push mode says."""
    wanted = expected or "no push server (push_mode off)"
    return Verdict(
        host_name,
        "config",
        False,
        f"mode mismatch: the server uses {url}, the inventory's push mode gives {wanted} (run "
        "the deploy of the mode, or fix push_mode)",
        shown,
    )


def app_types_of(inventory: Any, push_mode: str) -> tuple[str, ...]:
    """The app types to probe: the push proxies' configured types (EAS), else the types of
    the official apps (the hosted services know them)."""
    if push_mode == "eas":
        types: list[str] = []
        for proxy in inventory.get_group("push_proxies", []):
            data = proxy.data.dict()
            for key in ("push_proxy_apple", "push_proxy_android"):
                for entry in data.get(key) or []:
                    if isinstance(entry, dict) and entry.get("type") not in types:
                        types.append(str(entry.get("type")))
        if types:
            return tuple(types)
    return ("apple_rn", "android_rn")


def report_header() -> None:
    logger.info(f"    [{host.name}] test push: one probe per app type, fake device token")
