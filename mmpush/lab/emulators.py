"""Installing the test emulators (tests/emulators/) on lab hosts.

The lab installs them, never the deploys: a deploy must not know it talks to an emulator.
Files are placed in the host's filesystem before boot; :func:`post_boot_script` then creates
users and starts services over SSH.

    files = emulator_files(lab_host("mm1"))      # {"/opt/mattermost/bin/mattermost": (...)}
    ssh(paths, host, post_boot_script(host))
"""

from __future__ import annotations

from pathlib import Path

from mmpush.lab.layout import LabHost

#: The emulators live with the tests, in the repository this package is installed from.
EMULATORS_DIR = Path(__file__).resolve().parents[2] / "tests" / "emulators"

#: The lab CA bundle's place in every lab host's trust store.
TRUST_STORE_FILE = "/usr/local/share/ca-certificates/mmpush-lab.crt"

MATTERMOST_HOME = "/opt/mattermost"
HPNS_DATA_DIR = "/var/lib/hpns-emulator"
HPNS_CERT_DIR = "/etc/hpns-emulator"


def _read(relative: str) -> bytes:
    path = EMULATORS_DIR / relative
    if not path.exists():
        raise FileNotFoundError(f"emulator file missing from the repository: {path}")
    return path.read_bytes()


def emulator_files(host: LabHost) -> dict[str, tuple[bytes, int]]:
    """The emulator files ``host`` gets before boot: {path inside host: (content, mode)}."""
    files: dict[str, tuple[bytes, int]] = {}
    if "mattermost" in host.emulators:
        files[f"{MATTERMOST_HOME}/bin/mattermost"] = (
            _read("mattermost/mattermost_emulator.py"),
            0o755,
        )
        files[f"{MATTERMOST_HOME}/config/config.json"] = (_read("mattermost/config.json"), 0o600)
        files["/etc/systemd/system/mattermost.service"] = (
            _read("mattermost/mattermost.service"),
            0o644,
        )
    if "hpns" in host.emulators:
        files["/usr/local/bin/hpns-emulator"] = (_read("hpns/hpns_emulator.py"), 0o755)
        files["/etc/systemd/system/hpns-emulator.service"] = (
            _read("hpns/hpns-emulator.service"),
            0o644,
        )
    return files


def post_boot_script(host: LabHost) -> str:
    """Shell run once on ``host`` after boot: trust the lab CA, then start its emulators."""
    lines = ["set -e", "update-ca-certificates >/dev/null"]
    if "mattermost" in host.emulators:
        lines += [
            "id mattermost >/dev/null 2>&1 || useradd --system --user-group "
            f"--home-dir {MATTERMOST_HOME} --shell /usr/sbin/nologin mattermost",
            f"mkdir -p {MATTERMOST_HOME}/logs {MATTERMOST_HOME}/data",
            f"chown -R mattermost:mattermost {MATTERMOST_HOME}",
            "systemctl daemon-reload",
            "systemctl enable --now mattermost.service",
        ]
    if "hpns" in host.emulators:
        lines += [
            f"mkdir -p {HPNS_DATA_DIR}/acme-challenge {HPNS_CERT_DIR}",
            "systemctl daemon-reload",
            "systemctl enable --now hpns-emulator.service",
        ]
    return "\n".join(lines) + "\n"
