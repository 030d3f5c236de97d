"""Custom pyinfra facts. They collect only what the deploys need and never anything secret:
pyinfra prints a fact's output with ``-vvv``, so a fact that read config.json or an
environment file whole would print the database password.

host.get_fact(FileBytes, path="/opt/x/releases/6.5.0/.mmpush-sha256")  # non-secret files only
host.get_fact(PrivateFileState, path="/opt/mattermost/config/config.json")
host.get_fact(MattermostEnvironment, unit="mattermost")
"""

from __future__ import annotations

import base64
import shlex

from pyinfra.api import FactBase

MISSING = "__MMPUSH_MISSING__"


class FileBytes(FactBase[bytes | None]):
    """The exact bytes of a file (pyinfra's FileContents splits lines), or None if absent.
    Only for files that hold nothing secret: the output is printed with ``-vvv``.

    raw = host.get_fact(FileBytes, path="/opt/x/releases/6.5.0/.mmpush-sha256")
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return f"if [ -f {quoted} ]; then base64 -w0 {quoted}; echo; else echo {MISSING}; fi"

    def process(self, output: list[str]) -> bytes | None:
        text = "".join(line.strip() for line in output)
        if text == MISSING:
            return None
        return base64.b64decode(text)


class PrivateFileState(FactBase[dict[str, object]]):
    """Where a file that may hold secrets really is and whether it can be changed, without
    reading it: ``{"exists": True, "target": "/real/path.json", "writable": True,
    "sha256": "..."}``. ``target`` is the file a symlink points to; ``writable`` is false on a
    read-only mount or when the file or its directory refuses writes.

        host.get_fact(PrivateFileState, path="/opt/mattermost/config/config.json")
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f'p={quoted}; if [ ! -f "$p" ]; then echo missing; exit 0; fi; '
            't=$(readlink -f -- "$p"); echo "target=$t"; '
            'if [ -w "$t" ] && [ -w "$(dirname -- "$t")" ]; then echo writable=yes; '
            "else echo writable=no; fi; "
            'echo "sha256=$(sha256sum -- "$t" | cut -d" " -f1)"'
        )

    def process(self, output: list[str]) -> dict[str, object]:
        fields = dict(line.strip().split("=", 1) for line in output if "=" in line)
        if not fields:
            return self.default()
        return {
            "exists": True,
            "target": fields.get("target", ""),
            "writable": fields.get("writable") == "yes",
            "sha256": fields.get("sha256", ""),
        }

    def default(self) -> dict[str, object]:
        return {"exists": False, "target": "", "writable": False, "sha256": ""}


class MattermostEnvironment(FactBase[dict[str, list[str]]]):
    """Names (never values) of ``MM_*`` environment variables, Mattermost's config overrides,
    that reach a systemd unit's process, with where each comes from: the unit's
    ``Environment=``, an ``EnvironmentFile=``, the service manager's own environment
    (``systemctl set-environment``, inherited at the next start), or the running process.

        host.get_fact(MattermostEnvironment, unit="mattermost")
        # {"MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER": ["unit Environment="]}
    """

    def command(self, unit: str) -> str:
        u = shlex.quote(unit)
        name = "MM_[A-Za-z0-9_]+"
        return "; ".join(
            [
                f"systemctl show {u} -p Environment --value 2>/dev/null "
                f"| grep -oE '(^|[[:space:]])\"?{name}=' "
                "| sed -E 's/^[[:space:]]*\"?//; s/=$//; s/^/unit\\t/'",
                f"for f in $(systemctl show {u} -p EnvironmentFiles --value 2>/dev/null "
                "| sed 's/ (ignore_errors=[a-z]*)//'); do f=${f#-}; [ -f \"$f\" ] && "
                # systemd takes NAME=value lines only: `export NAME=value` is ignored
                f'sed -nE "s/^[[:space:]]*({name})[[:space:]]*=.*/file $f\\t\\1/p" "$f"; done',
                "systemctl show-environment 2>/dev/null "
                f"| sed -nE 's/^({name})=.*/manager\\t\\1/p'",
                f"pid=$(systemctl show {u} -p MainPID --value 2>/dev/null)",
                'if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r /proc/$pid/environ ]; then '
                f"tr '\\0' '\\n' < /proc/$pid/environ | sed -nE 's/^({name})=.*/process\\t\\1/p'; "
                "fi",
                "true",
            ]
        )

    def process(self, output: list[str]) -> dict[str, list[str]]:
        labels = {
            "unit": "the unit's Environment=",
            "manager": "the service manager's environment (systemctl set-environment)",
            "process": "the running process",
        }
        found: dict[str, list[str]] = {}
        for line in output:
            source, _, name = line.strip().partition("\t")
            if not name.startswith("MM_"):
                continue
            label = labels.get(source)
            if label is None and source.startswith("file "):
                label = f"EnvironmentFile {source[5:]}"
            found.setdefault(name, [])
            if label and label not in found[name]:
                found[name].append(label)
        return found

    def default(self) -> dict[str, list[str]]:
        return {}


class PublicKeySha256(FactBase[str | None]):
    """sha256 (hex) of the DER public key of a PEM private key on the host, or None.

    host.get_fact(PublicKeySha256, path="/etc/mmpush/tls/push.example.com/privkey.pem")
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"if [ -f {quoted} ]; then openssl pkey -in {quoted} -pubout -outform DER "
            f"| sha256sum | cut -d' ' -f1; else echo {MISSING}; fi"
        )

    def process(self, output: list[str]) -> str | None:
        text = "".join(output).strip()
        return None if text in (MISSING, "") else text


class UnitExists(FactBase[bool]):
    """Whether systemd knows a unit (a unit file is installed for it).

    host.get_fact(UnitExists, unit="mattermost")  # True
    """

    def command(self, unit: str) -> str:
        u = shlex.quote(unit)
        return f"systemctl show {u} -p LoadState --value 2>/dev/null || true"

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() not in ("", "not-found")

    def default(self) -> bool:
        return False


class SystemUser(FactBase[dict[str, str] | None]):
    """A local user's passwd entry (never /etc/shadow), or None when there is no such user:
    ``{"uid": "998", "gid": "998", "home": "/opt/x", "shell": "/usr/sbin/nologin"}``.

        host.get_fact(SystemUser, user="mattermost-push-proxy")
    """

    def command(self, user: str) -> str:
        return f"getent passwd {shlex.quote(user)} || true"

    def process(self, output: list[str]) -> dict[str, str] | None:
        fields = "".join(output).strip().split(":")
        if len(fields) < 7:
            return None
        return {"uid": fields[2], "gid": fields[3], "home": fields[5], "shell": fields[6]}

    def default(self) -> dict[str, str] | None:
        return None
