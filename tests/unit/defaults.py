"""Shared test data: the documented defaults every host starts from (group_data/all.py)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: The documented defaults (group_data/all.py), public names only.
DEFAULTS: dict[str, Any] = {
    key: value
    for key, value in runpy.run_path(str(ROOT / "group_data" / "all.py")).items()
    if not key.startswith("_")
}
#: A well-formed push_proxy_sha256 (64 lowercase hex characters).
SHA = "0123456789abcdef" * 4
