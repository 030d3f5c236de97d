"""What the outbound proxy costs per push, against a direct connection, measured side by side
in one run on the lab.

    python -m bench.outbound_proxy      # as root; brings up a fresh lab and leaves it down

From mm1 (where Mattermost runs), N pushes are sent one after another over one persistent
HTTPS connection, as Mattermost's HTTP client does, to:
  direct      https://global.push.mattermost.com (the HPNS stand-in), no proxy
  resolve     https://outbound.lab.test:8000, the default design: the upstream's name is
              re-resolved while running (variable proxy_pass + resolver), TLS sessions to the
              upstream are resumed, but each push opens a new upstream connection
  keepalive   the same proxy with outbound_proxy_keepalive = True: pooled upstream connections,
              name resolved only at start/reload
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PUSHES = 300

#: Runs on mm1 with its python3 (stdlib only): prints per-push latencies in ms as JSON.
CLIENT = r"""
import http.client, json, ssl, sys, time, urllib.parse
url, count = sys.argv[1], int(sys.argv[2])
parts = urllib.parse.urlsplit(url)
connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443,
                                         context=ssl.create_default_context(), timeout=30)
body = json.dumps({"server_id": "bench", "device_id": "bench-device", "platform": "apple_rn",
                   "type": "message", "message": "bench"})
latencies = []
for index in range(count + 10):
    started = time.perf_counter()
    connection.request("POST", "/api/v1/send_push", body, {"Content-Type": "application/json"})
    reply = connection.getresponse()
    answer = reply.read()
    if reply.status != 200 or json.loads(answer)["status"] != "OK":
        raise SystemExit(f"push {index} failed: {reply.status} {answer!r}")
    if index >= 10:  # the first pushes warm up connections and TLS sessions
        latencies.append((time.perf_counter() - started) * 1000)
print(json.dumps(latencies))
"""


def run(*args: str) -> str:
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result.stdout


def measure(url: str) -> list[float]:
    """Per-push latencies (ms) from mm1 to ``url``."""
    output = run(
        str(BIN / "mmpush"),
        "lab",
        "ssh",
        "mm1",
        "--",
        "python3",
        "-c",
        f"'{CLIENT}'",
        url,
        str(PUSHES),
    )
    return sorted(json.loads(output))


def summary(name: str, latencies: list[float], baseline: list[float] | None) -> str:
    mean = sum(latencies) / len(latencies)
    p50 = latencies[len(latencies) // 2]
    p95 = latencies[int(len(latencies) * 0.95)]
    ratio = "" if baseline is None else f"  {mean / (sum(baseline) / len(baseline)):.2f}x direct"
    return f"{name:<10} mean {mean:6.2f} ms  p50 {p50:6.2f} ms  p95 {p95:6.2f} ms{ratio}"


def main() -> None:
    deploy = [
        str(BIN / "pyinfra"),
        "-y",
        "inventories/lab.py",
        "deploys/hpns.py",
        "--data",
        "push_mode=hpns",
    ]
    try:
        run(str(BIN / "mmpush"), "lab", "up")
        run(*deploy)
        direct = measure("https://global.push.mattermost.com")
        resolve = measure("https://outbound.lab.test:8000")
        run(*deploy, "--data", "outbound_proxy_keepalive=true")
        keepalive = measure("https://outbound.lab.test:8000")
    finally:
        subprocess.run([str(BIN / "mmpush"), "lab", "down"], capture_output=True, timeout=300)
    print(f"{PUSHES} pushes each, sequential, one persistent client connection, from mm1:")
    print(summary("direct", direct, None))
    print(summary("resolve", resolve, direct))
    print(summary("keepalive", keepalive, direct))


if __name__ == "__main__":
    main()
