"""How long `mmpush lab up` takes cold (rootfs built by mmdebstrap) and warm (cached).

    python -m bench.lab_up            # as root; leaves no lab behind

The cold run uses an empty, temporary rootfs cache, so the machine's real cache is kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MMPUSH = str(Path(sys.executable).with_name("mmpush"))


def timed_up(env: dict[str, str]) -> float:
    """Seconds one `mmpush lab up` takes with ``env``."""
    started = time.monotonic()
    subprocess.run([MMPUSH, "lab", "up"], env=env, check=True, capture_output=True, timeout=1800)
    return time.monotonic() - started


def main() -> None:
    cache = tempfile.mkdtemp(prefix="mmpush-bench-cache-")
    env = {**os.environ, "MMPUSH_LAB_CACHE": cache}
    try:
        cold = timed_up(env)
        warm = timed_up(env)
    finally:
        subprocess.run([MMPUSH, "lab", "down"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(cache, ignore_errors=True)
    print(f"mmpush lab up, cold (rootfs build): {cold:6.1f} s")
    print(f"mmpush lab up, warm (cached rootfs): {warm:6.1f} s")
    print(f"cold / warm: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
