"""How long `pyinfra -y inventories/lab.py deploys/eas.py` takes on a fresh lab (cold), and
a no-op re-run, measured side by side in one run.

    python -m bench.eas_deploy        # as root; brings up a fresh lab and leaves it down
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def timed(*args: str) -> float:
    """Seconds one command takes (it must succeed)."""
    started = time.monotonic()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True, timeout=1800)
    return time.monotonic() - started


def main() -> None:
    deploy = (str(BIN / "pyinfra"), "-y", "inventories/lab.py", "deploys/eas.py")
    try:
        timed(str(BIN / "mmpush"), "lab", "up")
        cold = timed(*deploy)
        noop = [timed(*deploy) for _ in range(3)]
    finally:
        subprocess.run([str(BIN / "mmpush"), "lab", "down"], capture_output=True, timeout=300)
    best = min(noop)
    print(f"deploys/eas.py, cold on a fresh lab: {cold:6.1f} s")
    print(f"deploys/eas.py, no-op re-run (best of 3): {best:6.1f} s")
    print(f"cold / no-op: {cold / best:.1f}x")


if __name__ == "__main__":
    main()
