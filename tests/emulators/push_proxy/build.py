"""Build a release-shaped, deterministic tarball of the push proxy EMULATOR.

The real release asset ``mattermost-push-proxy-linux-amd64.tar.gz`` unpacks to
``mattermost-push-proxy-linux-amd64/`` with ``bin/mattermost-push-proxy``,
``config/mattermost-push-proxy.sample.json``, ``config/build.txt``, ``logs/``, ``LICENSE.txt``,
``NOTICE.txt`` and ``README.md``. This builder writes the same layout with the emulator as the
binary. The output is byte-for-byte reproducible for a given (version, arch), so a sha256 can be
pinned in group data exactly as for a real release; another version gives other bytes.

CLI: ``python -m tests.emulators.push_proxy.build DEST [--version X] [--arch A]`` prints the
tarball path on the first line and its sha256 (hex) on the second.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

EMULATOR_SOURCE = Path(__file__).with_name("mattermost_push_proxy_emulator.py")
DEFAULT_VERSION = "6.5.0"
DEFAULT_ARCH = "linux-amd64"
# Fixed timestamp for every entry (2025-01-01T00:00:00Z): reproducible output.
FIXED_MTIME = 1735689600
FIXED_BUILD_DATE = "2025-01-01T00:00:00Z"

SAMPLE_CONFIG = {
    "ListenAddress": ":8066",
    "ThrottlePerSec": 300,
    "ThrottleMemoryStoreSize": 50000,
    "ThrottleVaryByHeader": "X-Forwarded-For",
    "EnableMetrics": False,
    "SendTimeoutSec": 30,
    "RetryTimeoutSec": 8,
    "ApplePushSettings": [
        {
            "Type": "apple",
            "ApplePushUseDevelopment": False,
            "ApplePushCertPrivate": "",
            "ApplePushCertPassword": "",
            "ApplePushTopic": "com.mattermost.Mattermost",
            "AppleAuthKeyFile": "",
            "AppleAuthKeyID": "",
            "AppleTeamID": "",
        },
        {
            "Type": "apple_rn",
            "ApplePushUseDevelopment": False,
            "ApplePushCertPrivate": "",
            "ApplePushCertPassword": "",
            "ApplePushTopic": "com.mattermost.react.native",
            "AppleAuthKeyFile": "",
            "AppleAuthKeyID": "",
            "AppleTeamID": "",
        },
    ],
    "AndroidPushSettings": [
        {"Type": "android", "ServiceFileLocation": ""},
        {"Type": "android_rn", "ServiceFileLocation": ""},
    ],
    "EnableConsoleLog": True,
    "EnableFileLog": False,
    "LogFileLocation": "",
    "LogFormat": "plain",
    "LogLevel": "info",
}

LICENSE_TEXT = """\
Mattermost Push Proxy EMULATOR (test stand-in, not the Mattermost Push Proxy)

Part of the mmpush project, licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License. You may obtain a copy of the
License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the
License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either
express or implied. See the License for the specific language governing permissions and
limitations under the License.
"""

NOTICE_TEXT = """\
Mattermost Push Proxy EMULATOR

This archive only imitates the layout of a Mattermost Push Proxy release so that deployment code
can be tested offline. It contains no Mattermost code. "Mattermost" is a trademark of
Mattermost, Inc.
"""

README_TEMPLATE = """\
# Mattermost Push Proxy EMULATOR {version}

**This is an EMULATOR for tests, not the real Mattermost Push Proxy.** It sends pushes to the
APNs and FCM host names over HTTP/1.1 (the real APNs needs HTTP/2), so it only works against the
test stand-ins. `bin/mattermost-push-proxy` is a Python 3 program (needs `python3-cryptography`)
that reads `config/mattermost-push-proxy.json` with the real search order (`/tmp/<name>`,
`./config/<name>`, `../config/<name>`, then `<name>`), parses the credentials as the real proxy
does, serves the real routes (`/`, `/version`, `/api/v1/send_push`, `/api/v1/ack`, `/metrics`)
and logs every delivered push as `EMULATOR-DELIVERY {{json}}` (and in
`$PUSH_PROXY_EMULATOR_RECORD` when set), every other one as `EMULATOR-UNDELIVERED {{json}}`.

Getting started, as with a real release: copy `config/mattermost-push-proxy.sample.json` to
`config/mattermost-push-proxy.json`, fill in the credentials, then run
`bin/mattermost-push-proxy` from this directory.

Version {version}, platform {platform}, build hash {hash}.
"""


def emulator_hash(version: str) -> str:
    """A stable 40-hex "git commit" for a version (what /version and -version report)."""
    return hashlib.sha1(f"mattermost-push-proxy-emulator {version}".encode()).hexdigest()


def baked_emulator_source(version: str, arch: str) -> bytes:
    """The emulator's source with its version constants replaced."""
    source = EMULATOR_SOURCE.read_text(encoding="utf-8")
    replacements = {
        "EMULATOR_VERSION": version,
        "EMULATOR_HASH": emulator_hash(version),
        "EMULATOR_BUILD_DATE": FIXED_BUILD_DATE,
        "EMULATOR_PLATFORM": arch.replace("-", "/", 1),
    }
    for name, value in replacements.items():
        pattern = re.compile(rf'^{name} = "[^"\n]*"$', re.MULTILINE)
        source, count = pattern.subn(f"{name} = {json.dumps(value)}", source)
        if count != 1:
            raise RuntimeError(f"{EMULATOR_SOURCE}: expected one {name} constant, found {count}")
    return source.encode("utf-8")


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    _normalise(info)
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    _normalise(info)
    tar.addfile(info)


def _normalise(info: tarfile.TarInfo) -> None:
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"


def build_release_tarball(
    dest_dir: Path, version: str = DEFAULT_VERSION, arch: str = DEFAULT_ARCH
) -> Path:
    """Write ``mattermost-push-proxy-<arch>.tar.gz`` into dest_dir and return its path."""
    if not re.fullmatch(r"[0-9A-Za-z.+-]+", version):
        raise ValueError(f"invalid version {version!r}")
    if not re.fullmatch(r"[a-z0-9]+-[a-z0-9_]+", arch):
        raise ValueError(f"invalid arch {arch!r} (expected e.g. linux-amd64)")
    top = f"mattermost-push-proxy-{arch}"
    platform = arch.replace("-", "/", 1)
    build_hash = emulator_hash(version)
    sample = json.dumps(SAMPLE_CONFIG, indent=4) + "\n"
    build_txt = (
        f"Version: {version}\nBuild Date: {FIXED_BUILD_DATE}\nBuild Hash: {build_hash}\n"
        f"Platform: {platform}\nEmulator: yes (tests only, not the real push proxy)\n"
    )
    files: dict[str, tuple[bytes, int] | None] = {
        f"{top}/": None,
        f"{top}/bin/": None,
        f"{top}/bin/mattermost-push-proxy": (baked_emulator_source(version, arch), 0o755),
        f"{top}/config/": None,
        f"{top}/config/build.txt": (build_txt.encode(), 0o644),
        f"{top}/config/mattermost-push-proxy.sample.json": (sample.encode(), 0o644),
        f"{top}/logs/": None,
        f"{top}/LICENSE.txt": (LICENSE_TEXT.encode(), 0o644),
        f"{top}/NOTICE.txt": (NOTICE_TEXT.encode(), 0o644),
        f"{top}/README.md": (
            README_TEMPLATE.format(version=version, platform=platform, hash=build_hash).encode(),
            0o644,
        ),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            entry = files[name]
            if entry is None:
                _add_dir(tar, name.rstrip("/"))
            else:
                _add_file(tar, name, entry[0], entry[1])
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"{top}.tar.gz"
    with (
        open(out, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(buffer.getvalue())
    return out


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.push_proxy.build",
        description="Build the push proxy EMULATOR release tarball (deterministic).",
    )
    parser.add_argument("dest", type=Path, help="directory to write the tarball into")
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--arch", default=DEFAULT_ARCH)
    args = parser.parse_args(argv)
    path = build_release_tarball(args.dest, args.version, args.arch)
    print(path)
    print(sha256_of(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
