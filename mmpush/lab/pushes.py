"""Where a push went in the lab: what the push services (the push proxy on push1, the HPNS
stand-ins) recorded for one Mattermost post. Used by `mmpush lab send-dm` and the lab tests.

Mattermost sends pushes asynchronously, after the post was accepted, so callers wait:

    records = wait_for_push_records(paths, post_id, timeout=30)
    records[0].service, records[0].outcome, records[0].data["device_id"]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from mmpush.lab.containers import ssh
from mmpush.lab.layout import BASE_HOSTS, LabPaths, lab_host

DELIVERED = "EMULATOR-DELIVERY "
UNDELIVERED = "EMULATOR-UNDELIVERED "
HPNS_RECORDS = "/var/lib/hpns-emulator/received.jsonl"


@dataclass(frozen=True)
class PushRecord:
    """One record of a push: ``service`` "push proxy on push1" or "HPNS stand-in on
    upstream1"; ``outcome`` "delivered" (APNs/FCM accepted it), "undelivered" (they refused
    it: ``data["answer"]`` says how) or "received" (the HPNS stand-in got it)."""

    service: str
    outcome: str
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """A one-line summary: ``push proxy on push1: delivered {...}``."""
        return f"{self.service}: {self.outcome} {json.dumps(self.data, sort_keys=True)}"


def push_proxy_records(paths: LabPaths, post_id: str) -> list[PushRecord]:
    """What the push proxy on push1 logged for ``post_id`` (delivered or not)."""
    journal = ssh(
        paths,
        lab_host("push1"),
        "journalctl -u mattermost-push-proxy -o cat --no-pager 2>/dev/null "
        f"| grep -F -e {DELIVERED.strip()} -e {UNDELIVERED.strip()} | grep -F {post_id} || true",
    ).stdout
    records = []
    for line in journal.splitlines():
        for marker, outcome in ((DELIVERED, "delivered"), (UNDELIVERED, "undelivered")):
            _, found, payload = line.partition(marker)
            if found:
                data = json.loads(payload)
                if data.get("post_id") == post_id:
                    records.append(PushRecord("push proxy on push1", outcome, data))
    return records


def hpns_records(paths: LabPaths, post_id: str) -> list[PushRecord]:
    """What the HPNS stand-ins received for ``post_id``."""
    records = []
    for host in (h for h in BASE_HOSTS if "hpns" in h.emulators):
        text = ssh(paths, host, f"grep -F {post_id} {HPNS_RECORDS} 2>/dev/null || true").stdout
        for line in text.splitlines():
            data = json.loads(line)
            body = data.get("body")
            if isinstance(body, dict) and body.get("post_id") == post_id:
                records.append(PushRecord(f"HPNS stand-in on {host.name}", "received", data))
    return records


def find_push_records(paths: LabPaths, post_id: str) -> list[PushRecord]:
    """Every record of ``post_id`` in the lab's push services, now."""
    return push_proxy_records(paths, post_id) + hpns_records(paths, post_id)


def wait_for_push_records(
    paths: LabPaths, post_id: str, timeout: float = 30, count: int = 1
) -> list[PushRecord]:
    """The records of ``post_id`` once there are at least ``count`` (or what there is when
    ``timeout`` seconds have passed: possibly none)."""
    deadline = time.monotonic() + timeout
    while True:
        records = find_push_records(paths, post_id)
        if len(records) >= count or time.monotonic() >= deadline:
            return records
        time.sleep(0.5)
