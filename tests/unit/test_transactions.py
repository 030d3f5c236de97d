"""mmpush.transactions: the host-side scripts, run for real by bash on files in tmp_path, with
fake ``nginx`` and ``systemctl`` commands and a ``cp`` that can fail or silently truncate what
it writes (a full disk), so every failure path is exercised without root or a host."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mmpush.transactions import (
    FileChange,
    bash,
    new_private_key_script,
    nginx_transaction_script,
    release_unpack_script,
    replace_file_script,
)

FAKE_NGINX = """#!/bin/sh
echo "nginx $*" >> "$FAKE_LOG"
if [ "$1" = "-t" ] && [ "$FAKE_NGINX_T" != 0 ]; then
    echo 'nginx: [emerg] unknown directive "bogus" in /etc/nginx/conf.d/x.conf:1' >&2
    exit 1
fi
exit 0
"""
FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
if [ "$1" = is-active ]; then [ "$FAKE_ACTIVE" = 1 ] && exit 0; exit 3; fi
exit 0
"""
# cp as on a full disk: FAKE_CP_FAIL (a substring of the destination) fails after writing a
# partial file; FAKE_CP_TRUNCATE succeeds but leaves the destination 1 byte long.
FAKE_CP = """#!/bin/sh
last=""; for a in "$@"; do last=$a; done
if [ -n "$FAKE_CP_FAIL" ]; then
    case "$last" in *"$FAKE_CP_FAIL"*)
        printf 'x' > "$last"; echo "cp: error writing '$last': No space left on device" >&2
        exit 1;;
    esac
fi
/bin/cp "$@" || exit $?
if [ -n "$FAKE_CP_TRUNCATE" ]; then
    case "$last" in *"$FAKE_CP_TRUNCATE"*)
        if [ -f "$last" ] && [ ! -L "$last" ]; then truncate -s 1 "$last"; fi;;
    esac
fi
exit 0
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Box:
    """A fake host: files under ``root``, fake commands, a staging and a backup directory."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.tmp / "etc"

    @property
    def staging(self) -> Path:
        return self.tmp / "staging"

    @property
    def backup(self) -> Path:
        return self.tmp / "backup" / "tx-1"

    @property
    def log(self) -> Path:
        return self.tmp / "calls.log"

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stage(self, name: str, content: bytes) -> Path:
        self.staging.mkdir(exist_ok=True)
        path = self.staging / name
        path.write_bytes(content)
        return path

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", bash(script)],
            env={**os.environ, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture
def box(tmp_path: Path) -> Box:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nginx", FAKE_NGINX), ("systemctl", FAKE_SYSTEMCTL), ("cp", FAKE_CP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    made = Box(tmp_path)
    made.env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_LOG": str(made.log),
        "FAKE_NGINX_T": "0",
        "FAKE_ACTIVE": "1",
        "FAKE_CP_FAIL": "",
        "FAKE_CP_TRUNCATE": "",
    }
    made.root.mkdir()
    return made


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: symlinks by target, files by bytes and mode."""
    entries: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            entries[name] = ("link", os.readlink(path))
        elif path.is_file():
            entries[name] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        else:
            entries[name] = ("dir",)
    return entries


# --- NGINX transactions ------------------------------------------------------------------

OLD_CONF = b"user www-data;\r\n# old \xff bytes, no trailing newline" * 300
OLD_SITE = b"server { listen 80; }\n"
NEW_CONF = b"user www-data;\n# new\n" * 400
NEW_SITE = b"server { listen 8080; }\n"


def nginx_tree(box: Box) -> list[FileChange]:
    """nginx.conf and a site replaced, a symlinked default site removed, a new file added."""
    (box.root / "nginx.conf").write_bytes(OLD_CONF)
    (box.root / "conf.d").mkdir()
    (box.root / "conf.d" / "site.conf").write_bytes(OLD_SITE)
    (box.root / "sites-available").mkdir()
    (box.root / "sites-available" / "default").write_bytes(b"default site\n")
    (box.root / "sites-enabled").mkdir()
    (box.root / "sites-enabled" / "default").symlink_to("../sites-available/default")
    return [
        FileChange(str(box.root / "nginx.conf"), str(box.stage("n0", NEW_CONF)), sha(NEW_CONF)),
        FileChange(
            str(box.root / "conf.d" / "site.conf"), str(box.stage("n1", NEW_SITE)), sha(NEW_SITE)
        ),
        FileChange(str(box.root / "sites-enabled" / "default"), None),
        FileChange(
            str(box.root / "conf.d" / "added.conf"), str(box.stage("n3", NEW_SITE)), sha(NEW_SITE)
        ),
    ]


def test_the_script_is_strict_bash() -> None:
    script = nginx_transaction_script([FileChange("/etc/nginx/x.conf", None)], "/b")
    assert script.startswith("set -euo pipefail\n")
    assert bash(script).startswith("bash -c ")


def test_success_puts_new_contents_in_place_and_cleans_up(box: Box) -> None:
    changes = nginx_tree(box)
    result = box.run(nginx_transaction_script(changes, str(box.backup)))
    assert result.returncode == 0, result.stderr
    assert (box.root / "nginx.conf").read_bytes() == NEW_CONF
    assert (box.root / "conf.d" / "site.conf").read_bytes() == NEW_SITE
    assert (box.root / "conf.d" / "added.conf").read_bytes() == NEW_SITE
    assert stat.S_IMODE((box.root / "conf.d" / "added.conf").stat().st_mode) == 0o644
    assert not (box.root / "sites-enabled" / "default").is_symlink()
    assert not box.backup.exists()
    assert list(box.staging.iterdir()) == []
    assert not [p for p in box.root.rglob(".*")], "no temporary file is left"
    assert box.calls() == [
        "nginx -t",
        "systemctl is-active --quiet nginx",
        "systemctl reload nginx",
    ]


def test_a_stopped_nginx_is_started_or_left_alone(box: Box) -> None:
    changes = nginx_tree(box)
    result = box.run(nginx_transaction_script(changes, str(box.backup)), FAKE_ACTIVE="0")
    assert result.returncode == 0, result.stderr
    assert box.calls()[-1] == "systemctl start nginx"
    box.log.unlink()
    again = [FileChange(changes[0].path, str(box.stage("n0", OLD_CONF)), sha(OLD_CONF))]
    script = nginx_transaction_script(again, str(box.backup), start_if_stopped=False)
    assert box.run(script, FAKE_ACTIVE="0").returncode == 0
    assert "systemctl start nginx" not in box.calls()


def test_nginx_t_failure_restores_every_file_byte_for_byte_and_does_not_reload(box: Box) -> None:
    changes = nginx_tree(box)
    before = snapshot(box.root)
    result = box.run(nginx_transaction_script(changes, str(box.backup)), FAKE_NGINX_T="1")
    assert result.returncode == 1
    assert snapshot(box.root) == before
    assert (box.root / "sites-enabled" / "default").is_symlink()
    assert 'unknown directive "bogus"' in result.stderr
    assert "nginx -t failed" in result.stderr
    assert "still serves the previous configuration" in result.stderr
    assert "systemctl reload nginx" not in box.calls()
    assert not box.backup.exists()
    assert list(box.staging.iterdir()) == []


def test_a_full_disk_while_saving_changes_nothing(box: Box) -> None:
    changes = nginx_tree(box)
    before = snapshot(box.root)
    result = box.run(nginx_transaction_script(changes, str(box.backup)), FAKE_CP_FAIL="old-1")
    assert result.returncode == 1
    assert snapshot(box.root) == before
    assert "could not save a verified copy of" in result.stderr
    assert "nothing was changed" in result.stderr
    assert "nginx -t" not in box.calls()


def test_a_silently_truncated_backup_is_caught_and_nothing_changes(box: Box) -> None:
    changes = nginx_tree(box)
    before = snapshot(box.root)
    result = box.run(nginx_transaction_script(changes, str(box.backup)), FAKE_CP_TRUNCATE="old-0")
    assert result.returncode == 1
    assert snapshot(box.root) == before
    assert "could not save a verified copy" in result.stderr


def test_a_full_disk_while_writing_puts_back_what_was_written(box: Box) -> None:
    changes = nginx_tree(box)
    before = snapshot(box.root)
    # nginx.conf is written, then the site's new content comes out truncated
    result = box.run(
        nginx_transaction_script(changes, str(box.backup)), FAKE_CP_TRUNCATE=".site.conf.mmpush-new"
    )
    assert result.returncode == 1
    assert snapshot(box.root) == before
    assert "could not write" in result.stderr and "site.conf" in result.stderr
    assert "put back from its verified copy" in result.stderr
    assert "nginx -t" not in box.calls()


def test_an_incomplete_upload_changes_nothing(box: Box) -> None:
    changes = nginx_tree(box)
    Path(changes[1].staged or "").write_bytes(NEW_SITE[:5])
    before = snapshot(box.root)
    result = box.run(nginx_transaction_script(changes, str(box.backup)))
    assert result.returncode == 1
    assert snapshot(box.root) == before
    assert "incomplete" in result.stderr


def test_a_rollback_that_cannot_restore_says_so_and_keeps_the_verified_copies(box: Box) -> None:
    changes = nginx_tree(box)
    result = box.run(
        nginx_transaction_script(changes, str(box.backup)),
        FAKE_NGINX_T="1",
        FAKE_CP_FAIL="mmpush-restore",
    )
    assert result.returncode == 1
    assert "ROLLBACK INCOMPLETE" in result.stderr
    assert str(box.backup) in result.stderr
    assert "rolled back" not in result.stderr
    assert (box.backup / "old-0").read_bytes() == OLD_CONF
    assert (box.backup / "old-1").read_bytes() == OLD_SITE
    manifest = (box.backup / "MANIFEST").read_text().splitlines()
    assert manifest[:2] == [f"old-0\t{changes[0].path}", f"old-1\t{changes[1].path}"]
    assert "systemctl reload nginx" not in box.calls()


def test_a_removed_dangling_symlink_comes_back_on_failure(box: Box) -> None:
    link = box.root / "gone"
    link.symlink_to("/nonexistent/target")
    result = box.run(
        nginx_transaction_script([FileChange(str(link), None)], str(box.backup)), FAKE_NGINX_T="1"
    )
    assert result.returncode == 1
    assert link.is_symlink() and os.readlink(link) == "/nonexistent/target"


# --- one file ---------------------------------------------------------------------------


def config_file(box: Box, content: bytes = b'{"a": 1}') -> Path:
    path = box.root / "config.json"
    path.write_bytes(content)
    path.chmod(0o640)
    return path


def test_replace_keeps_a_checked_backup_and_the_owner_and_mode(box: Box) -> None:
    path = config_file(box)
    new = b'{"a": 2}'
    staged = box.stage("c", new)
    script = replace_file_script(
        FileChange(str(path), str(staged), sha(new)),
        expected_sha256=sha(b'{"a": 1}'),
        backup_suffix=".bak.1",
    )
    result = box.run(script)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (box.root / "config.json.bak.1").read_bytes() == b'{"a": 1}'
    assert stat.S_IMODE((box.root / "config.json.bak.1").stat().st_mode) == 0o640
    assert not staged.exists()
    assert sorted(p.name for p in box.root.iterdir()) == ["config.json", "config.json.bak.1"]


def test_replace_refuses_a_file_that_changed_since_it_was_read(box: Box) -> None:
    path = config_file(box, b'{"a": "edited meanwhile"}')
    staged = box.stage("c", b'{"a": 2}')
    script = replace_file_script(
        FileChange(str(path), str(staged), sha(b'{"a": 2}')), expected_sha256=sha(b'{"a": 1}')
    )
    result = box.run(script)
    assert result.returncode == 1
    assert path.read_bytes() == b'{"a": "edited meanwhile"}'
    assert "changed on the host" in result.stderr and "was not changed" in result.stderr
    assert not staged.exists()


@pytest.mark.parametrize("fault", ["FAKE_CP_FAIL", "FAKE_CP_TRUNCATE"])
def test_replace_with_a_full_disk_for_the_backup_changes_nothing(box: Box, fault: str) -> None:
    path = config_file(box)
    staged = box.stage("c", b'{"a": 2}')
    script = replace_file_script(
        FileChange(str(path), str(staged), sha(b'{"a": 2}')), backup_suffix=".bak.1"
    )
    result = box.run(script, **{fault: ".bak.1"})
    assert result.returncode == 1
    assert path.read_bytes() == b'{"a": 1}'
    assert "could not save a verified backup" in result.stderr
    assert sorted(p.name for p in box.root.iterdir()) == ["config.json"]
    assert not staged.exists()


def test_replace_with_a_full_disk_for_the_new_content_changes_nothing(box: Box) -> None:
    path = config_file(box)
    staged = box.stage("c", b'{"a": 2}')
    script = replace_file_script(FileChange(str(path), str(staged), sha(b'{"a": 2}')))
    result = box.run(script, FAKE_CP_TRUNCATE=".config.json.mmpush-new")
    assert result.returncode == 1
    assert path.read_bytes() == b'{"a": 1}'
    assert sorted(p.name for p in box.root.iterdir()) == ["config.json"]


def test_replace_edits_a_symlinks_target_in_place(box: Box) -> None:
    real = box.root / "real"
    real.mkdir()
    target = real / "config.json"
    target.write_bytes(b'{"a": 1}')
    link = box.root / "config.json"
    link.symlink_to(target)
    staged = box.stage("c", b'{"a": 2}')
    script = replace_file_script(
        FileChange(str(link), str(staged), sha(b'{"a": 2}')),
        backup_suffix=".bak.1",
        follow_symlink=True,
    )
    result = box.run(script)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b'{"a": 2}'
    assert (real / "config.json.bak.1").read_bytes() == b'{"a": 1}'


def test_replace_with_an_explicit_owner_sets_the_mode(box: Box) -> None:
    dest = box.root / "secret.pem"
    staged = box.stage("s", b"secret")
    owner = f"{os.getuid()}:{os.getgid()}"
    script = replace_file_script(
        FileChange(str(dest), str(staged), sha(b"secret"), mode="600"), owner=owner
    )
    assert box.run(script).returncode == 0
    assert dest.read_bytes() == b"secret"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_a_new_private_key_is_private_and_an_existing_one_is_kept(box: Box) -> None:
    key = box.root / "tls" / "name" / "privkey.pem"
    assert box.run(new_private_key_script(str(key))).returncode == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    first = key.read_bytes()
    assert b"PRIVATE KEY" in first
    assert box.run(new_private_key_script(str(key))).returncode == 0
    assert key.read_bytes() == first
    assert [p.name for p in key.parent.iterdir()] == ["privkey.pem"]


# --- releases ---------------------------------------------------------------------------


def release_archive(box: Box, binary: bool = True) -> Path:
    """A release-shaped tarball: a top directory holding bin/mattermost-push-proxy."""
    top = box.tmp / "src" / "mattermost-push-proxy-linux-amd64"
    (top / "bin").mkdir(parents=True)
    if binary:
        (top / "bin" / "mattermost-push-proxy").write_text("#!/bin/sh\necho proxy\n")
        (top / "bin" / "mattermost-push-proxy").chmod(0o755)
    (top / "config").mkdir()
    (top / "config" / "mattermost-push-proxy.sample.json").write_text("{}")
    archive = box.tmp / "release.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(top.parent), top.name], check=True)
    return archive


def unpack(box: Box, archive: Path, sha256: str) -> subprocess.CompletedProcess[str]:
    releases = box.root / "releases"
    releases.mkdir(exist_ok=True)
    download = releases / ".6.5.0.tar.gz"
    download.write_bytes(archive.read_bytes())
    script = release_unpack_script(
        str(download),
        str(releases / ".6.5.0.unpack"),
        str(releases / "6.5.0"),
        sha256,
        "bin/mattermost-push-proxy",
        "push proxy 6.5.0",
    )
    return box.run(script)


def test_a_release_with_the_pinned_sha256_is_installed_readable_by_the_service(box: Box) -> None:
    archive = release_archive(box)
    result = unpack(box, archive, sha(archive.read_bytes()))
    assert result.returncode == 0, result.stderr
    installed = box.root / "releases" / "6.5.0"
    binary = installed / "bin" / "mattermost-push-proxy"
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    assert (installed / ".mmpush-sha256").read_text().strip() == sha(archive.read_bytes())
    assert sorted(p.name for p in (box.root / "releases").iterdir()) == ["6.5.0"]


def test_a_release_whose_sha256_differs_installs_nothing(box: Box) -> None:
    (box.root / "releases" / "6.4.0").mkdir(parents=True)
    result = unpack(box, release_archive(box), "0" * 64)
    assert result.returncode == 1
    assert "sha256 mismatch" in result.stderr and "nothing was installed" in result.stderr
    assert sorted(p.name for p in (box.root / "releases").iterdir()) == ["6.4.0"]


@pytest.mark.parametrize("damage", ["truncated", "no-binary"])
def test_a_broken_release_installs_nothing(box: Box, damage: str) -> None:
    archive = release_archive(box, binary=damage != "no-binary")
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:100])
    result = unpack(box, archive, sha(archive.read_bytes()))
    assert result.returncode == 1
    assert "nothing was installed" in result.stderr
    assert list((box.root / "releases").iterdir()) == []
