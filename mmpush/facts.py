"""Custom pyinfra facts.

host.get_fact(FileBytes, path="/opt/mattermost/config/config.json")  # exact bytes or None
host.get_fact(MattermostEnvironment, unit="mattermost")
"""

from __future__ import annotations

import base64
import shlex

from pyinfra.api import FactBase

MISSING = "__MMPUSH_MISSING__"


class FileBytes(FactBase[bytes | None]):
    """The exact bytes of a file (pyinfra's FileContents splits lines), or None if absent.

    raw = host.get_fact(FileBytes, path="/opt/mattermost/config/config.json")
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return f"if [ -f {quoted} ]; then base64 -w0 {quoted}; echo; else echo {MISSING}; fi"

    def process(self, output: list[str]) -> bytes | None:
        text = "".join(line.strip() for line in output)
        if text == MISSING:
            return None
        return base64.b64decode(text)


class MattermostEnvironment(FactBase[list[str]]):
    """Names of ``MM_*`` environment variables (Mattermost's config overrides) that a systemd
    unit sets (``Environment=``, ``EnvironmentFile=``) or its running process has.

        host.get_fact(MattermostEnvironment, unit="mattermost")
        # ["MM_EMAILSETTINGS_PUSHNOTIFICATIONSERVER"]
    """

    def command(self, unit: str) -> str:
        unit_q = shlex.quote(unit)
        return (
            f"systemctl show {unit_q} -p Environment --value 2>/dev/null | tr ' ' '\\n'; "
            f"for f in $(systemctl show {unit_q} -p EnvironmentFiles --value 2>/dev/null "
            '| sed \'s/ (ignore_errors=[a-z]*)//\'); do f=${f#-}; [ -f "$f" ] && cat "$f"; '
            f"done; pid=$(systemctl show {unit_q} -p MainPID --value 2>/dev/null); "
            'if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r /proc/$pid/environ ]; then '
            "tr '\\0' '\\n' < /proc/$pid/environ; fi; true"
        )

    def process(self, output: list[str]) -> list[str]:
        names = set()
        for line in output:
            name = line.strip().removeprefix("export ").split("=", 1)[0].strip().strip('"')
            if name.startswith("MM_") and "=" in line:
                names.add(name)
        return sorted(names)

    def default(self) -> list[str]:
        return []


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
