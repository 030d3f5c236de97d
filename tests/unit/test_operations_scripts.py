"""mmpush.operations.nginx_transaction_script, run for real by a shell against fake ``nginx``
and ``systemctl`` commands, on files in tmp_path (no root, no NGINX, no host).

The script is what nginx_files runs on the host once the new files are staged as
``NGINX_STAGING/new-<i>``; the tests stage them the same way."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmpush import operations

# pyinfra runs commands with `sh -c` (dash on Debian); the brief's shell is bash: run both.
SHELLS = [shell for shell in ("bash", "sh") if shutil.which(shell)]

FAKE_NGINX = """#!/bin/sh
echo "nginx $*" >> "$FAKE_LOG"
if [ "$1" = "-t" ]; then
    if [ "$FAKE_NGINX_T" != 0 ]; then
        echo 'nginx: [emerg] unknown directive "bogus" in /etc/nginx/conf.d/x.conf:1' >&2
    fi
    exit "$FAKE_NGINX_T"
fi
exit 0
"""
FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
if [ "$1" = is-active ]; then
    [ "$FAKE_ACTIVE" = 0 ] || exit 3
    case " $* " in *" --quiet "*) ;; *) echo active ;; esac
    exit 0
fi
exit 0
"""


@dataclass
class Host:
    """A fake host: an /etc/nginx-like tree, fake commands and a staging directory."""

    root: Path
    bin: Path
    log: Path
    staging: Path
    shell: str

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def run(
        self, changed: Mapping[Path, bytes | None], nginx_t: int = 0, active: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Stage the new files (as nginx_files uploads them), then run the transaction."""
        by_path = {str(path): content for path, content in changed.items()}
        self.staging.mkdir(mode=0o700)
        for index, content in enumerate(by_path.values()):
            if content is not None:
                (self.staging / f"new-{index}").write_bytes(content)
        # nginx_transaction_script only looks at content being None or not
        script = operations.nginx_transaction_script(
            {path: None if c is None else c.decode("latin-1") for path, c in by_path.items()}
        )
        env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "FAKE_LOG": str(self.log),
            "FAKE_NGINX_T": str(nginx_t),
            "FAKE_ACTIVE": "0" if active else "1",
        }
        return subprocess.run(
            [self.shell, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )


@pytest.fixture(params=SHELLS)
def host(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nginx", FAKE_NGINX), ("systemctl", FAKE_SYSTEMCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    staging = tmp_path / "var-lib-mmpush" / "nginx-transaction"
    staging.parent.mkdir()
    # read by nginx_transaction_script when it builds the script
    monkeypatch.setattr(operations, "NGINX_STAGING", str(staging))
    return Host(tmp_path / "etc" / "nginx", bin_dir, tmp_path / "calls.log", staging, request.param)


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


OLD_CONF = b"user www-data;\r\n# old \xff bytes, no trailing newline"
OLD_SITE = b"server { listen 80; }\n"


def populate(root: Path) -> dict[str, Path]:
    """A Debian-like /etc/nginx: nginx.conf, a site in conf.d, sites-enabled/default as a
    symlink to sites-available/default."""
    (root / "conf.d").mkdir(parents=True)
    (root / "sites-available").mkdir()
    (root / "sites-enabled").mkdir()
    (root / "nginx.conf").write_bytes(OLD_CONF)
    (root / "nginx.conf").chmod(0o640)
    (root / "conf.d" / "old.conf").write_bytes(OLD_SITE)
    (root / "sites-available" / "default").write_bytes(b"server { listen 80 default; }\n")
    (root / "sites-enabled" / "default").symlink_to("../sites-available/default")
    return {
        "changed": root / "nginx.conf",
        "removed": root / "conf.d" / "old.conf",
        "removed_link": root / "sites-enabled" / "default",
        "created": root / "conf.d" / "new site.conf",  # a space: quoting matters
        "created_in_new_dir": root / "streams.d" / "push.conf",
    }


def transaction(paths: dict[str, Path]) -> dict[Path, bytes | None]:
    return {
        paths["changed"]: b"user www-data;\nhttp { server_tokens off; }\n",
        paths["removed"]: None,
        paths["removed_link"]: None,
        paths["created"]: b"server { listen 443 ssl; }\n",
        paths["created_in_new_dir"]: b"# stream\n",
    }


# --- nginx -t passes ------------------------------------------------------------------------------


def test_the_script_uses_the_staging_directory_of_the_moment(host: Host) -> None:
    script = operations.nginx_transaction_script({"/etc/nginx/x.conf": "x"})
    assert f"{host.staging}/new-0" in script
    assert "/var/lib/mmpush" not in script


def test_on_success_new_contents_are_in_place_and_removed_files_are_gone(host: Host) -> None:
    paths = populate(host.root)
    changed = transaction(paths)
    result = host.run(changed)
    assert result.returncode == 0, result.stderr
    for path, content in changed.items():
        if content is None:
            assert not path.exists() and not path.is_symlink()
        else:
            assert path.read_bytes() == content
    # removing the symlink leaves what it pointed at alone
    assert (host.root / "sites-available" / "default").read_bytes().startswith(b"server")


def test_on_success_the_staging_directory_is_removed(host: Host) -> None:
    result = host.run(transaction(populate(host.root)))
    assert result.returncode == 0, result.stderr
    assert not host.staging.exists()


def test_on_success_nginx_is_tested_then_reloaded_once(host: Host) -> None:
    result = host.run(transaction(populate(host.root)))
    assert result.returncode == 0, result.stderr
    assert host.calls() == [
        "nginx -t -q",
        "systemctl is-active --quiet nginx",
        "systemctl reload nginx",
    ]
    assert host.calls().count("systemctl reload nginx") == 1
    assert "rolled back" not in result.stderr


def test_on_success_a_stopped_nginx_is_started_not_reloaded(host: Host) -> None:
    result = host.run(transaction(populate(host.root)), active=False)
    assert result.returncode == 0, result.stderr
    assert host.calls() == [
        "nginx -t -q",
        "systemctl is-active --quiet nginx",
        "systemctl start nginx",
    ]


def test_removing_a_file_that_is_already_gone_is_harmless(host: Host) -> None:
    paths = populate(host.root)
    result = host.run({host.root / "conf.d" / "never-there.conf": None, paths["removed"]: None})
    assert result.returncode == 0, result.stderr
    assert not paths["removed"].exists()


# --- nginx -t fails: everything is put back -----------------------------------------------------


def test_on_nginx_t_failure_every_file_is_restored_byte_for_byte(host: Host) -> None:
    paths = populate(host.root)
    before = snapshot(host.root)
    result = host.run(transaction(paths), nginx_t=1)
    assert result.returncode == 1
    after = snapshot(host.root)
    # the only trace is the (empty) directory made for a new file
    assert after.pop("streams.d") == ("dir",)
    assert after == before


def test_on_nginx_t_failure_the_symlink_is_a_symlink_again(host: Host) -> None:
    paths = populate(host.root)
    host.run(transaction(paths), nginx_t=1)
    assert paths["removed_link"].is_symlink()
    assert os.readlink(paths["removed_link"]) == "../sites-available/default"
    assert paths["changed"].read_bytes() == OLD_CONF
    assert stat.S_IMODE(paths["changed"].stat().st_mode) == 0o640


def test_on_nginx_t_failure_new_files_are_removed(host: Host) -> None:
    paths = populate(host.root)
    host.run(transaction(paths), nginx_t=1)
    assert not paths["created"].exists()
    assert not paths["created_in_new_dir"].exists()


def test_on_nginx_t_failure_nginx_is_not_reloaded(host: Host) -> None:
    host.run(transaction(populate(host.root)), nginx_t=1)
    assert host.calls() == ["nginx -t -q"]


def test_on_nginx_t_failure_the_script_fails_with_the_rollback_message(host: Host) -> None:
    result = host.run(transaction(populate(host.root)), nginx_t=1)
    assert result.returncode == 1
    assert "nginx -t failed: the new configuration was rolled back" in result.stderr
    assert "NGINX was not reloaded" in result.stderr
    assert 'unknown directive "bogus"' in result.stderr  # nginx -t's own message is kept


def test_on_nginx_t_failure_the_staging_directory_is_removed(host: Host) -> None:
    host.run(transaction(populate(host.root)), nginx_t=1)
    assert not host.staging.exists()


def test_a_dangling_symlink_that_is_removed_comes_back_on_failure(host: Host) -> None:
    paths = populate(host.root)
    dangling = host.root / "sites-enabled" / "gone"
    dangling.symlink_to("../sites-available/gone")
    result = host.run({dangling: None, paths["changed"]: b"bogus;\n"}, nginx_t=1)
    assert result.returncode == 1
    assert dangling.is_symlink() and os.readlink(dangling) == "../sites-available/gone"


def test_a_changed_symlink_and_its_target_are_restored_on_failure(host: Host) -> None:
    populate(host.root)
    (host.root / "sites-available" / "push").write_bytes(OLD_SITE)
    link = host.root / "sites-enabled" / "push"
    link.symlink_to("../sites-available/push")
    before = snapshot(host.root)
    result = host.run({link: b"bogus;\n"}, nginx_t=1)
    assert result.returncode == 1
    assert snapshot(host.root) == before
