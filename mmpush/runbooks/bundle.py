"""The push-debug runbook's support bundle: each host's push evidence, copied to the control node
with every secret redacted.

    collect_support_bundle(name="Support bundle", settings=settings, runbook=runbook)

writes ``<runbook_support_dir>/<host>-<UTC time>/`` (0700, files 0600), per the host's groups:

========================  =====================================================================
file                      what, from which hosts
========================  =====================================================================
push-settings.json        the effective push settings and where they were read (mattermost;
                          never the whole configuration: it holds the database DSN)
notifications.log         the last 2000 push lines of each log file, where the running server
mattermost.log            writes it (mattermost)
push-proxy.journal        ``journalctl -u mattermost-push-proxy``, last 24 h (push_proxies)
nginx-error.log           NGINX's error lines (push_proxies, outbound_proxies)
nginx-access-push.log     NGINX's access lines of /api/v1/send_push, /api/v1/ack and /version
certificates.txt          expiry, subject and issuer of /etc/mmpush/tls/*/fullchain.pem
versions.txt              packages, kernel, Debian; Mattermost's and the push proxy's versions
MANIFEST.txt              the files, their sizes and how many secrets were redacted
========================  =====================================================================

Every host-side read is one read-only, checked script (``set -euo pipefail``) run with the
operation's sudo; its output is base64 on the wire and never printed, at any verbosity (a log or
a journal may hold a secret before redaction). A missing log file is recorded as
``(not found: <path>)``; a failing read stops the host's bundle with an error naming host and
item, and nothing is written. The Mattermost version is best effort (``unknown`` at worst).

What is redacted (:class:`Redactor`): every credential in the host's settings
(:func:`host_secrets`) in the forms it may take in a log (whole, line by line, JSON-escaped,
URL-encoded, base64), PEM private key blocks, ``Authorization``/``Bearer`` credentials,
``token=``/``password=``-style values, passwords in URLs and DSNs, and the values of JSON keys
named like secrets.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, StringCommand, operation

from mmpush.certificates import TLS_DIR
from mmpush.checks.config import (
    CONTENTS,
    SEND,
    SERVER,
    ConfigReadError,
    read_effective_config,
    value_at,
)
from mmpush.operations import connector_arguments
from mmpush.push_proxy import BINARY, ROOT, USER
from mmpush.push_proxy import SERVICE as PUSH_PROXY_SERVICE
from mmpush.runbooks.logs import log_paths, working_directory_command
from mmpush.settings import MattermostSettings, RunbookSettings, Secret, Settings
from mmpush.transactions import bash, q

#: What every redacted value becomes.
REDACTED = "********"
#: How many lines of each log the bundle keeps (the last ones).
LINES = 2000
#: Shorter secrets are not searched for whole (they would match everywhere).
MIN_SECRET_LENGTH = 4
#: A line of a multi-line secret (a PEM body line) is searched for from this length on.
MIN_LINE_LENGTH = 16
#: Log lines about pushes: "push" in any case, or "Notification" (Mattermost's messages).
PUSH_LINE_PATTERN = "[Pp][Uu][Ss][Hh]|Notification"
#: The push API paths whose NGINX access lines are kept.
PUSH_PATHS = ("/api/v1/send_push", "/api/v1/ack", "/version")
NGINX_ERROR_LOG = "/var/log/nginx/error.log"
NGINX_ACCESS_LOG = "/var/log/nginx/access.log"
#: The packages whose versions every bundle records.
PACKAGES = ("nginx", "openssl", "ca-certificates", "curl")
#: The effective settings push-settings.json records (Mattermost's names).
PUSH_SETTINGS = (
    SEND,
    SERVER,
    CONTENTS,
    ("LogSettings", "FileLevel"),
    ("LogSettings", "ConsoleLevel"),
    ("NotificationLogSettings", "FileLevel"),
)
#: The bundle's files, in the order MANIFEST.txt lists them.
FILES = (
    "push-settings.json",
    "notifications.log",
    "mattermost.log",
    "push-proxy.journal",
    "nginx-error.log",
    "nginx-access-push.log",
    "certificates.txt",
    "versions.txt",
)
MANIFEST = "MANIFEST.txt"

#: Runs a read-only command on the host: (command, what it reads) -> stdout; raises
#: :class:`BundleError` naming the host and ``what`` when the command fails.
Runner = Callable[[str, str], str]


class BundleError(RuntimeError):
    """A read on the host failed, or the bundle could not be written; the message says which."""


# --- redaction ------------------------------------------------------------------------------

_SENSITIVE_WORDS = re.compile(
    r"pass|pwd|secret|token|private|credential|data_?source|dsn|salt|cookie|authorization"
    r"|api_?key|signature",
    re.IGNORECASE,
)
# Every pattern is anchored (a literal, or a look-behind at the start of a run) and bounded,
# so that no log line, however odd, makes redaction slow.
_PEM_BOUNDARY = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")
_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.{0,16384}?-----END \1PRIVATE KEY-----", re.DOTALL
)
#: A private key block cut short (a truncated log line): up to the first character that
#: cannot be part of it (base64, PEM headers, whitespace, escaped newlines).
_PEM_OPEN = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:\\[nr]|[A-Za-z0-9+/=:,\- \t\r\n])*"
)
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization\b[\"']?[ \t]*[:=][ \t]*[\"']?[ \t]*"
    r"(?:(?:bearer|basic|token|digest)[ \t]+)?)([^\s\"',;]{1,4096})"
)
_BEARER = re.compile(r"(?i)(\bbearer[ \t]+)([A-Za-z0-9._~+/=-]{6,4096})")
_URL_PASSWORD = re.compile(
    r"((?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s/:@\"']{0,256}:)"
    r"([^\s/@\"']{1,256})(@)"
)
_MYSQL_PASSWORD = re.compile(
    r"((?<![^\s:/@\"'(])[^\s:/@\"'(]{1,256}:)([^\s/@\"']{1,256})(@(?:tcp|unix)\()"
)
#: ``name=value`` (a query parameter, a log field, an environment variable).
_KEY_VALUE = re.compile(
    r"(?<![\w.-])([\w.-]{1,80})(=)(\"(?:[^\"\\\n]|\\.){0,4096}\"|[^\s&\"',;)]{1,4096})"
)
_JSON_VALUE = re.compile(r'"((?:[^"\\\n]|\\.){1,100})"([ \t]*:[ \t]*)"((?:[^"\\\n]|\\.){0,65536})"')
_ESCAPED_JSON_VALUE = re.compile(
    r'\\"([^"\\]{1,100})\\"([ \t]*:[ \t]*)\\"((?:(?!\\").){0,65536})\\"'
)


#: Mattermost's DEBUG line with a push's text (notification_push.go): users' messages stay out
#: of a support bundle, the line itself stays (it shows a push was sent, and to which device).
_MESSAGE_TEXT = re.compile(r"( wi msg of ')(.*)(')(?=\s+caller=|\"|[ \t]*$)", re.MULTILINE)
MESSAGE_REMOVED = "<message text removed>"


def sensitive_name(name: str) -> bool:
    """Whether a key named ``name`` holds a secret: ``Password``, ``SMTPPassword``,
    ``DataSource``, ``PrivateKey``, ``AtRestEncryptKey``, ``access_token``, ``signature``...
    (``AppleAuthKeyID`` and ``AppleAuthKeyFile`` are not)."""
    return bool(_SENSITIVE_WORDS.search(name)) or name.lower().endswith("key")


def _escaped_forms(text: str) -> set[str]:
    """``text`` as a JSON string holds it (Python's and Go's escaping) and URL-encoded."""
    json_form = json.dumps(text)[1:-1]
    go_form = json_form.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return {json_form, go_form, quote(text, safe="")}


def _lines(text: str) -> Iterator[str]:
    """The non-trivial lines of ``text``, split at real and at JSON-escaped newlines: long
    enough, not a PEM boundary (not secret, and needed to find whole blocks), not one repeated
    character."""
    for line in re.split(r"\r?\n|\\r\\n|\\n", text):
        line = line.strip()
        if (
            len(line) >= MIN_LINE_LENGTH
            and not _PEM_BOUNDARY.fullmatch(line)
            and len(set(line)) >= 4
        ):
            yield line


def _sensitive_json_values(text: str) -> Iterator[str]:
    """The string values of secret-looking keys in a JSON document (a service account's
    ``private_key``), at any depth; nothing when ``text`` is not JSON."""
    try:
        document = json.loads(text)
    except ValueError:
        return
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str) and sensitive_name(str(key)):
                    yield item
                else:
                    stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def _base64_forms(content: bytes) -> set[str]:
    """The secret base64-encoded: whole, and the lines of its 64- and 76-column wrappings."""
    forms = set()
    for data in {content, content.strip()}:
        encoded = base64.b64encode(data).decode()
        forms.add(encoded)
        for width in (64, 76):
            forms.update(
                encoded[start : start + width]
                for start in range(0, len(encoded), width)
                if len(encoded[start : start + width]) >= MIN_LINE_LENGTH
            )
    return forms


def secret_forms(content: bytes) -> set[str]:
    """Every string a log may hold of the secret ``content`` (see :class:`Redactor`); none
    shorter than MIN_SECRET_LENGTH (they would match everywhere)."""
    if len(content.strip()) < MIN_SECRET_LENGTH:
        return set()
    forms = _base64_forms(content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = ""  # a binary secret (a .p12) can only be in a text as base64
    values = [text.strip(), *(value.strip() for value in _sensitive_json_values(text))]
    for value in values:
        for form in [value, *_lines(value)]:
            forms.add(form)
            forms.update(_escaped_forms(form))
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH and set(form) != {"*"}}


class Redactor:
    """Takes secrets out of text before it is written anywhere.

        redactor = Redactor(host_secrets(settings, runbook))
        redactor.redact('Authorization: Bearer abc123xyz')  == 'Authorization: Bearer ********'

    Each secret is searched for whole, line by line (a PEM key quoted one line at a time),
    JSON-escaped (a service account's ``private_key`` with its ``\\n``), URL-encoded and base64
    encoded; then these patterns: PEM private key blocks (whole or cut short),
    ``Authorization: ...`` and ``Bearer ...`` credentials, ``token=``, ``password=``... values,
    the password of ``scheme://user:password@host`` URLs and MySQL DSNs, and the string values
    of JSON keys named like secrets (``"Password"``, ``"DataSource"``, ``"PrivateKey"``...).
    ``count`` is how many occurrences were redacted so far.
    """

    def __init__(self, secrets: Iterable[bytes]) -> None:
        forms: set[str] = set()
        for content in secrets:
            forms |= secret_forms(content)
        # longest first: a whole key goes as one, before its lines are searched
        self._forms = sorted(forms, key=lambda form: (-len(form), form))
        self.count = 0

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} secret forms)"

    def redact(self, text: str) -> str:
        """``text`` without secrets; adds what it redacted to ``count``."""
        return self.redact_counted(text)[0]

    def redact_counted(self, text: str) -> tuple[str, int]:
        """``text`` without secrets, and how many occurrences were redacted in it."""
        found = 0
        for pattern in (_PEM_BLOCK, _PEM_OPEN):
            text, number = pattern.subn(REDACTED, text)
            found += number
        for form in self._forms:
            number = text.count(form)
            if number:
                text = text.replace(form, REDACTED)
                found += number
        for pattern in (_AUTHORIZATION, _BEARER, _URL_PASSWORD, _MYSQL_PASSWORD):
            text, number = _replace_group(pattern, text, 2)
            found += number
        for pattern in (_KEY_VALUE, _JSON_VALUE, _ESCAPED_JSON_VALUE):
            text, number = _replace_named_values(pattern, text)
            found += number
        text = _MESSAGE_TEXT.sub(rf"\g<1>{MESSAGE_REMOVED}\g<3>", text)
        self.count += found
        return text, found


def _replace_group(pattern: re.Pattern[str], text: str, group: int) -> tuple[str, int]:
    """Replace ``group`` of each match by REDACTED; count the values that were not already."""
    found = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        value = match.group(group)
        if value.strip("\"'") == REDACTED:
            return match.group(0)
        found += 1
        start, end = (position - match.start(0) for position in match.span(group))
        return match.group(0)[:start] + REDACTED + match.group(0)[end:]

    return pattern.sub(replace, text), found


def _replace_named_values(pattern: re.Pattern[str], text: str) -> tuple[str, int]:
    """Replace the value (group 3) of each ``name=value`` or JSON ``"name": "value"`` whose
    name (group 1) looks like a secret's; empty and already redacted values stay."""
    found = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        value = match.group(3)
        if not value.strip('"') or value.strip('"') == REDACTED:
            return match.group(0)
        if not sensitive_name(match.group(1)):
            return match.group(0)
        found += 1
        start, end = (position - match.start(0) for position in match.span(3))
        quoted = len(value) > 1 and value.startswith('"') and value.endswith('"')
        replacement = f'"{REDACTED}"' if quoted else REDACTED
        return match.group(0)[:start] + replacement + match.group(0)[end:]

    return pattern.sub(replace, text), found


def _walk_secrets(value: Any) -> Iterator[Secret]:
    """Every :class:`Secret` in a settings value: dataclass fields, tuples, lists, dicts."""
    if isinstance(value, Secret):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _walk_secrets(getattr(value, item.name))
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _walk_secrets(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk_secrets(item)


def host_secrets(settings: Settings, runbook: RunbookSettings | None = None) -> list[bytes]:
    """The content of every credential the host's settings hold (APNs keys, certificates and
    their passwords, FCM service accounts, the admin token, the DM sender's token, the TSIG
    secret, a certificate's key...), found by walking the settings, so a new kind of secret
    is covered the day it is added. In order, each once."""
    seen: dict[bytes, None] = {}
    for secret in _walk_secrets((settings, runbook)):
        seen.setdefault(secret.content, None)
    return list(seen)


# --- what is read on the host ------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One read on the host: the bundle file it goes to, what it is (for messages), the
    command (its output is base64) and what the file says when there is nothing to show."""

    file: str
    what: str
    command: str
    empty: str = ""


def not_found(path: str) -> str:
    """What the bundle says for a file that does not exist on the host."""
    return f"(not found: {path})"


def read_command(body: str) -> str:
    """The command for a read: ``body`` (bash, read-only, printing text) with every step
    checked, its output base64-encoded so any bytes cross intact."""
    return bash(f"set -euo pipefail\n{{\n{body}\n}} | base64 -w 0")


def decode_output(stdout: str) -> str:
    """The text a :func:`read_command` printed."""
    try:
        raw = base64.b64decode("".join(stdout.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise BundleError(f"the host's answer is not base64 ({error})") from None
    return raw.decode("utf-8", "replace")


def log_lines_body(
    path: str, pattern: str | None = None, limit: int = LINES, rotated: bool = False
) -> str:
    """bash: the last ``limit`` lines of ``path`` (matching the extended regex ``pattern``,
    if given), ``(not found: path)`` when there is no such file. ``rotated``: the previous
    file (``path.1``, uncompressed by logrotate's delaycompress) is read first."""
    quoted = q(path)
    lines = [
        f"if [ ! -e {quoted} ]; then echo {q(not_found(path))}; exit 0; fi",
        "files=()",
    ]
    if rotated:
        lines.append(f"if [ -f {q(path + '.1')} ]; then files+=({q(path + '.1')}); fi")
    lines.append(f"files+=({quoted})")
    if pattern is None:
        lines.append(f'cat -- "${{files[@]}}" | tail -n {int(limit)}')
    else:
        # grep exits 1 when nothing matches: not an error; 2 (unreadable) is
        lines.append(
            f'{{ grep -a -h -E -- {q(pattern)} "${{files[@]}}" || [ "$?" -eq 1 ]; }} '
            f"| tail -n {int(limit)}"
        )
    return "\n".join(lines)


def journal_body(unit: str, limit: int = LINES) -> str:
    """bash: the unit's journal of the last 24 hours, its last ``limit`` lines."""
    return (
        f"journalctl -u {q(unit)} --since=-24h -n {int(limit)} -o short-iso --no-pager -q "
        f"| tail -n {int(limit)}"
    )


def access_pattern(paths: Iterable[str] = PUSH_PATHS) -> str:
    """The extended regex of NGINX access lines (combined format) requesting ``paths``."""
    alternatives = "|".join(re.escape(path) for path in paths)
    return f'"[A-Z]+ ({alternatives})([?/ ]|")'


def certificates_body(tls_dir: str = TLS_DIR) -> str:
    """bash: expiry, subject and issuer of each ``<tls_dir>/<name>/fullchain.pem`` (its leaf),
    and where it came from; never a key."""
    return "\n".join(
        [
            "shopt -s nullglob",
            "found=0",
            f"for chain in {q(tls_dir)}/*/fullchain.pem; do",
            "  found=1",
            '  echo "== $chain"',
            '  source_file="${chain%/fullchain.pem}/source"',
            '  if [ -f "$source_file" ]; then echo "source: $(head -c 300 "$source_file")"; fi',
            '  openssl x509 -in "$chain" -noout -enddate -subject -issuer 2>&1 '
            '|| echo "(openssl cannot read $chain)"',
            "done",
            f'if [ "$found" = 0 ]; then echo {q(f"(no certificate under {tls_dir})")}; fi',
        ]
    )


def packages_body(packages: Iterable[str] = PACKAGES) -> str:
    """bash: ``<status> <package> <version>`` for each package (``un`` when not installed)."""
    names = " ".join(q(name) for name in packages)
    return (
        'echo "packages (dpkg-query):"\n'
        f"for package in {names}; do\n"
        "  dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' \"$package\" "
        '2>/dev/null || echo "un  $package (not installed)"\n'
        "done"
    )


def debian_body() -> str:
    """bash: the Debian version."""
    path = "/etc/debian_version"
    missing = q("debian: " + not_found(path))
    return f'if [ -f {path} ]; then echo "debian: $(cat {path})"; else echo {missing}; fi'


def mattermost_version_body(mattermost: MattermostSettings) -> str:
    """bash, best effort, never failing: the running server's version (its ``X-Version-Id``
    header on the ping URL), else ``<working dir>/bin/mattermost version`` run as the
    service's user, else ``unknown``."""
    unit = q(mattermost.service)
    return "\n".join(
        [
            f"v=$(curl -sS --noproxy '*' --max-time 5 -o /dev/null -D - {q(mattermost.ping_url)} "
            "2>/dev/null | tr -d '\\r' | sed -n 's/^[Xx]-[Vv]ersion-[Ii][Dd]: *//p' "
            '| head -n 1) || v=""',
            'if [ -n "$v" ]; then echo "mattermost: $v (X-Version-Id)"; exit 0; fi',
            f"wd=$(systemctl show -p WorkingDirectory --value {unit} 2>/dev/null) || wd=''",
            f"user=$(systemctl show -p User --value {unit} 2>/dev/null) || user=''",
            'bin="${wd:-/opt/mattermost}/bin/mattermost"',
            'if [ -x "$bin" ] && [ -n "$user" ] && [ "$user" != root ]; then',
            '  v=$(cd "${wd:-/opt/mattermost}" && timeout 20 runuser -u "$user" -- "$bin" version '
            "2>/dev/null | head -n 3 | tr '\\n' ' ') || v=\"\"",
            "fi",
            'echo "mattermost: ${v:-unknown}"',
        ]
    )


def push_proxy_version_body(root: str = ROOT) -> str:
    """bash, never failing: the current release (the symlink's target) and what the binary
    says with ``-version``, run as the service's user."""
    current = q(f"{root}/current")
    binary = q(f"{root}/current/{BINARY}")
    return "\n".join(
        [
            f"if [ ! -e {current} ]; then echo {q('push proxy: ' + not_found(root + '/current'))}"
            "; exit 0; fi",
            f'echo "push proxy release: $(readlink -f {current})"',
            f"v=$(cd {current} && timeout 10 runuser -u {q(USER)} -- {binary} -version 2>&1 "
            "| head -n 5 | tr '\\n' ' ') || v=''",
            'echo "push proxy -version: ${v:-(no answer)}"',
        ]
    )


def read_item(run: Runner, item: Item) -> str:
    """The text of one item, read with ``run``."""
    text = decode_output(run(item.command, item.what))
    if not text.strip() and item.empty:
        return item.empty + "\n"
    return text


def nginx_items() -> list[Item]:
    """NGINX's error lines and the access lines of the push API."""
    return [
        Item(
            "nginx-error.log",
            "NGINX's error log",
            read_command(log_lines_body(NGINX_ERROR_LOG, rotated=True)),
            f"(no lines in {NGINX_ERROR_LOG})",
        ),
        Item(
            "nginx-access-push.log",
            "NGINX's access lines of the push API",
            read_command(log_lines_body(NGINX_ACCESS_LOG, access_pattern(), rotated=True)),
            f"(no lines for {', '.join(PUSH_PATHS)} in {NGINX_ACCESS_LOG})",
        ),
    ]


def certificates_item() -> Item:
    return Item("certificates.txt", "the certificates' dates", read_command(certificates_body()))


def version_items(settings: Settings) -> list[Item]:
    """What versions.txt says, one read each: packages, kernel, Debian, and the versions of
    Mattermost and the push proxy where they run."""
    items = [
        Item("versions.txt", "the package versions", read_command(packages_body())),
        Item("versions.txt", "the kernel version", read_command('echo "kernel: $(uname -r)"')),
        Item("versions.txt", "the Debian version", read_command(debian_body())),
    ]
    if settings.in_group("mattermost"):
        body = mattermost_version_body(settings.mattermost)
        items.append(Item("versions.txt", "the Mattermost version", read_command(body)))
    if settings.in_group("push_proxies"):
        body = push_proxy_version_body()
        items.append(Item("versions.txt", "the push proxy version", read_command(body)))
    return items


def push_settings_json(effective_text: str, source: str, logs: Mapping[str, str]) -> str:
    """push-settings.json: the push settings the running server has (never the whole
    configuration), where they were read, and where its logs are."""
    document = {
        "read_from": source,
        "settings": {".".join(keys): value_at(effective_text, keys) for keys in PUSH_SETTINGS},
        "log_files": dict(logs),
    }
    return json.dumps(document, indent=2) + "\n"


def mattermost_files(run: Runner, mattermost: MattermostSettings) -> dict[str, str]:
    """push-settings.json and the push lines of both logs, read where the running server has
    them (its effective configuration says where its logs are)."""
    try:
        effective = read_effective_config(
            lambda command: run(command, "reading the effective configuration"), mattermost
        )
    except ConfigReadError as error:
        raise BundleError(f"the effective push settings: {error}") from None
    working_directory = run(
        working_directory_command(mattermost.service), "reading the service's working directory"
    ).strip()
    paths = log_paths(effective.text, working_directory)
    files = {
        "push-settings.json": push_settings_json(
            effective.text,
            effective.source,
            {"mattermost.log": paths.server, "notifications.log": paths.notifications},
        )
    }
    for name, path in (
        ("notifications.log", paths.notifications),
        ("mattermost.log", paths.server),
    ):
        item = Item(
            name,
            f"the push lines of {path}",
            read_command(log_lines_body(path, PUSH_LINE_PATTERN)),
            f"(no push lines in {path})",
        )
        files[name] = read_item(run, item)
    return files


def collect(run: Runner, settings: Settings) -> dict[str, str]:
    """Every file of the host's bundle (name -> text, not yet redacted), per its groups."""
    files: dict[str, str] = {}
    items: list[Item] = []
    if settings.in_group("mattermost"):
        files.update(mattermost_files(run, settings.mattermost))
    if settings.in_group("push_proxies"):
        items.append(
            Item(
                "push-proxy.journal",
                "the push proxy's journal",
                read_command(journal_body(PUSH_PROXY_SERVICE)),
                f"(no journal lines of {PUSH_PROXY_SERVICE} in the last 24 hours)",
            )
        )
    if settings.in_group("push_proxies") or settings.in_group("outbound_proxies"):
        items += [*nginx_items(), certificates_item()]
    items += version_items(settings)
    for item in items:
        text = read_item(run, item)
        files[item.file] = files.get(item.file, "") + text
    return files


# --- writing on the control node -----------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A written bundle: its directory, its files (name -> size in bytes, MANIFEST.txt
    included) and how many secrets were redacted."""

    directory: Path
    files: dict[str, int]
    redacted: int


def safe_host_name(host_name: str) -> str:
    """The host's name as a file name: ``safe_host_name("me@10.0.0.5") == "me_10.0.0.5"``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", host_name).lstrip(".") or "host"


def bundle_directory(support_dir: str | Path, host_name: str, now: dt.datetime) -> Path:
    """``<support_dir>/<host>-<UTC %Y%m%dT%H%M%SZ>`` (the host name made safe for a path)."""
    return (
        Path(support_dir) / f"{safe_host_name(host_name)}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    )


def _write_private(path: Path, data: bytes) -> None:
    """A new file born 0600 (never readable by others, whatever the umask)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


def _make_directory(directory: Path) -> Path:
    """Create ``directory`` 0700 (``-2``, ``-3``... when it exists: two runs in a second)."""
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    candidate = directory
    for number in range(2, 100):
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            candidate = directory.with_name(f"{directory.name}-{number}")
            continue
        os.chmod(candidate, 0o700)
        return candidate
    raise BundleError(f"{directory}: too many bundles of this second")


def manifest_text(header: Mapping[str, str], files: Mapping[str, int], redacted: int) -> str:
    """MANIFEST.txt: who and when, each file with its size, and how many secrets were
    redacted (a count, never what)."""
    lines = ["mmpush support bundle"]
    lines += [f"{key}: {value}" for key, value in header.items()]
    lines += [f"secrets redacted: {redacted} occurrences", "", "files:"]
    width = max((len(name) for name in files), default=0)
    lines += [f"  {name:<{width}}  {size} bytes" for name, size in files.items()]
    return "\n".join(lines) + "\n"


def write_bundle(
    directory: Path,
    contents: Mapping[str, str],
    redactor: Redactor,
    header: Mapping[str, str] | None = None,
) -> Bundle:
    """Write ``contents`` (file name -> text) into a new ``directory`` (0700), each file
    redacted, then born 0600, in the order of :data:`FILES`, and MANIFEST.txt. On failure
    nothing is left behind."""
    unknown = sorted(set(contents) - set(FILES))
    if unknown:
        raise BundleError(f"not a bundle file: {', '.join(unknown)}")
    directory = _make_directory(directory)
    try:
        sizes: dict[str, int] = {}
        redacted = 0
        for name in FILES:
            if name not in contents:
                continue
            text, found = redactor.redact_counted(contents[name])
            redacted += found
            data = text.encode()
            _write_private(directory / name, data)
            sizes[name] = len(data)
        manifest = manifest_text(header or {}, sizes, redacted).encode()
        _write_private(directory / MANIFEST, manifest)
        sizes[MANIFEST] = len(manifest)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return Bundle(directory, sizes, redacted)


# --- the operation -----------------------------------------------------------------------


def _runner(state: Any, target: Any, redactor: Redactor) -> Runner:
    """Runs read commands on ``target`` with the operation's sudo; their output is never
    printed (``print_output=False`` whatever the verbosity), the commands are (``-vvv``)."""

    def run(command: str, what: str) -> str:
        ok, output = target.run_shell_command(
            StringCommand(command),
            print_input=state.print_input,
            print_output=False,
            **connector_arguments(target),
        )
        if not ok:
            stderr = redactor.redact(output.stderr.strip())
            raise BundleError(f"{what} failed on {target.name}: {stderr}")
        return output.stdout

    return run


def _collect(state: Any, host: Any, settings: Settings, runbook: RunbookSettings) -> bool:
    """The host's bundle, read and written (the operation's FunctionCommand: pyinfra passes
    ``state`` and ``host`` by these names)."""
    redactor = Redactor(host_secrets(settings, runbook))
    now = dt.datetime.now(dt.UTC)
    try:
        contents = collect(_runner(state, host, redactor), settings)
        header = {
            "host": host.name,
            "groups": ", ".join(settings.groups) or "-",
            "collected": f"{now:%Y-%m-%dT%H:%M:%SZ}",
        }
        bundle = write_bundle(
            bundle_directory(runbook.support_dir, host.name, now), contents, redactor, header
        )
    except Exception as error:  # any failure, reported without a secret in it
        message = redactor.redact(f"{error}")
        host.log_styled(f"support bundle: {message}", fg="red", log_func=logger.error)
        return False
    host.log_styled(
        f"support bundle: {bundle.directory} ({len(bundle.files)} files, "
        f"{bundle.redacted} secrets redacted)",
        log_func=logger.info,
    )
    return True


@operation()
def collect_support_bundle(settings: Settings, runbook: RunbookSettings):
    """Collect the host's push evidence into a support bundle on the control node, secrets
    redacted (see the module docs for what, per group).

    + settings: the host's settings (``load_settings(host)``): its groups, where Mattermost
      keeps its configuration, and every credential to redact
    + runbook: the runbook settings (``load_runbook_settings(host)``): ``support_dir``, and the
      DM sender's token to redact

    **Example:**

    .. code:: python

        collect_support_bundle(
            name="Support bundle into support/",
            settings=load_settings(host),
            runbook=load_runbook_settings(host),
        )

    Give it a ``name``: without one, pyinfra names the operation after its arguments.
    With ``--dry`` nothing is read or written: pyinfra never runs the operation's command, and
    the plan says ``would collect a support bundle into <support_dir>/<host>-<UTC time>/``.
    Each host logs ``support bundle: <dir> (N files, M secrets redacted)``.
    """
    if not state.is_executing:
        # preparing (--dry, or before the confirmation): say what the run would do
        where = Path(runbook.support_dir) / f"{safe_host_name(host.name)}-<UTC time>"
        host.log(f"would collect a support bundle into {where}/")
    yield FunctionCommand(_collect, (settings, runbook), {})
