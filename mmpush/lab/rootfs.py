"""The lab hosts' Debian root filesystem: built once with mmdebstrap, then cached.

The cache key is a hash of everything that goes into the build (suite, packages, the
customisation below), so changing the package list builds a new rootfs and the second
``mmpush lab up`` reuses the first one's.

    path = ensure_rootfs(LabPaths.default())   # /var/cache/mmpush-lab/rootfs/<key>
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from mmpush.lab.layout import DEPLOY_UID, DEPLOY_USER, ROOTFS_PACKAGES, SUITE, LabPaths
from mmpush.lab.sh import LabError, run

COMPLETE_MARKER = ".mmpush-rootfs-complete"

#: Run by mmdebstrap on the finished tree ("$1" is its root). Every lab host shares this
#: tree read-only (overlayfs), so nothing host-specific may stay in it: the SSH host keys
#: and the machine id are made per host when it is created.
CUSTOMIZE = rf"""
set -e
rm -f "$1"/etc/ssh/ssh_host_*
: > "$1"/etc/machine-id
chroot "$1" useradd --create-home --shell /bin/bash --uid {DEPLOY_UID} {DEPLOY_USER}
echo '{DEPLOY_USER} ALL=(ALL:ALL) NOPASSWD: ALL' > "$1"/etc/sudoers.d/{DEPLOY_USER}
chmod 440 "$1"/etc/sudoers.d/{DEPLOY_USER}
cat > "$1"/etc/ssh/sshd_config.d/mmpush-lab.conf <<END
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
PermitRootLogin no
UseDNS no
END
# PostgreSQL and BIND run on the lab's database and DNS hosts only (enabled after boot)
chroot "$1" systemctl disable postgresql.service named.service
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$1/etc/systemd/system/$unit"
done
""".strip()


def rootfs_key() -> str:
    """A short hash naming the rootfs built from the current package list and customisation."""
    recipe = "\n".join([SUITE, "minbase", *sorted(ROOTFS_PACKAGES), CUSTOMIZE])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def cached_rootfs(paths: LabPaths) -> Path | None:
    """The cached rootfs for the current recipe, or None if it was never (fully) built."""
    path = paths.rootfs_cache / rootfs_key()
    return path if (path / COMPLETE_MARKER).exists() else None


def ensure_rootfs(paths: LabPaths) -> Path:
    """Return the cached rootfs, building it with mmdebstrap first if needed.

    A build writes into a temporary directory and is renamed into place only when complete,
    so an interrupted build is never mistaken for a cached one.
    """
    cached = cached_rootfs(paths)
    if cached:
        return cached
    final = paths.rootfs_cache / rootfs_key()
    building = final.with_name(final.name + ".building")
    for leftover in (building, final):
        if leftover.exists():
            shutil.rmtree(leftover)
    paths.rootfs_cache.mkdir(parents=True, exist_ok=True)
    try:
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=" + ",".join(ROOTFS_PACKAGES),
                "--customize-hook=" + CUSTOMIZE,
                SUITE,
                str(building),
            ],
            timeout=900,
        )
    except LabError:
        shutil.rmtree(building, ignore_errors=True)
        raise
    (building / COMPLETE_MARKER).write_text(rootfs_key() + "\n")
    building.rename(final)
    for stale in paths.rootfs_cache.iterdir():
        if stale != final and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return final
