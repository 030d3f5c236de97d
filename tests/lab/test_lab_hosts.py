"""The lab's hosts are real, reachable as production hosts are, and fenced in."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import testinfra

from tests.lab.helpers import BIN, SshRunner, lab_skips, mmpush, pyinfra, verify

pytestmark = pytest.mark.lab


def test_pyinfra_reaches_every_host(lab: dict[str, Any]) -> None:
    # what each host calls itself (earlier modules may have left a host degraded on purpose,
    # so systemctl is-system-running is not the question here)
    result = pyinfra("-y", "inventories/lab.py", "exec", "--", "uname", "-n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # the groups inventories/lab.py has (db1 and ns1 are no deploy's target)
    groups = {"mattermost", "push_proxies", "outbound_proxies", "lab_upstreams"}
    inventory = [entry["name"] for entry in lab["hosts"] if groups & set(entry["groups"])]
    assert len(inventory) >= 8, inventory
    for name in inventory:
        assert f"[{name}]" in output, (name, output[-3000:])


def test_verify_suite_passes_on_a_deployed_lab(eas_site: dict[str, Any]) -> None:
    # depends on nothing else: eas_site is a fresh lab with EAS deployed
    verify().assert_passed(lab_skips("eas"))


def test_testinfra_over_ssh_with_pinned_host_keys(lab: dict[str, Any]) -> None:
    for entry in lab["hosts"]:
        host = testinfra.get_host(
            f"ssh://{entry['name']}", ssh_config=lab["ssh"]["config"], controlpersist=0
        )
        assert host.system_info.distribution == "debian"
        assert host.system_info.release.startswith("12")
        assert host.run("systemctl is-system-running").stdout.strip() == "running"
        # production-like: a user with sudo, not root
        assert host.user().name == "deploy"
        assert host.run("sudo -n id -u").stdout.strip() == "0"


def _tampered_known_hosts(lab: dict[str, Any], tmp_path: Path) -> Path:
    """A known_hosts in which mm1's pinned key is another host's key."""
    lines = Path(lab["ssh"]["known_hosts"]).read_text().splitlines()
    keys = {line.split(",")[1]: line.split(" ", 1)[1] for line in lines}
    bad = [line for line in lines if line.split(",")[1] != "mm1"]
    bad.append(f"10.77.44.11,mm1 {keys['push1']}")
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(bad) + "\n")
    return path


def test_a_host_with_an_unexpected_key_is_refused(lab: dict[str, Any], tmp_path: Path) -> None:
    known_hosts = _tampered_known_hosts(lab, tmp_path)
    result = pyinfra(
        "-y",
        "--limit",
        "mm1",
        "--data",
        f"ssh_known_hosts_file={known_hosts}",
        "inventories/lab.py",
        "exec",
        "--",
        "true",
    )
    assert result.returncode != 0
    ssh_options = ["-F", lab["ssh"]["config"], "-o", f"UserKnownHostsFile={known_hosts}"]
    openssh = subprocess.run(
        ["ssh", *ssh_options, "mm1", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert openssh.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in openssh.stderr or "verification failed" in (
        openssh.stderr
    )


def test_a_lab_host_can_apt_get_install(on: SshRunner) -> None:
    on("proxy1", "apt-get update -qq", timeout=300)
    on("proxy1", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq", timeout=300)
    assert on("proxy1", "echo '{\"a\": 1}' | jq .a").stdout.strip() == "1"


def test_lab_names_resolve_inside_the_lab_only(lab: dict[str, Any], on: SshRunner) -> None:
    answers = on("mm1", "getent hosts push.lab.test push.mattermost.com push-test.mattermost.com")
    addresses = {line.split()[0] for line in answers.stdout.splitlines()}
    upstream = next(h["ip"] for h in lab["hosts"] if h["name"] == "upstream1")
    push = next(h["ip"] for h in lab["hosts"] if h["name"] == "push1")
    assert addresses == {push, upstream}
    # no DNS inside the lab: a name that is not the lab's or the registry's does not resolve
    assert on("mm1", "getent hosts example.com", check=False).returncode != 0


def test_nat_lets_lab_hosts_reach_only_the_package_registry(lab: dict[str, Any]) -> None:
    table = json.loads(
        subprocess.run(
            ["nft", "-j", "list", "table", "inet", lab["network"]["nft_table"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    text = json.dumps(table)
    registry_ips = {ip for ips in lab["registry"].values() for ip in ips}
    for ip in registry_ips:
        assert ip in text
    rules = [item["rule"] for item in table["nftables"] if "rule" in item]
    forward = [r for r in rules if r["chain"] == "forward"]
    # the last rules drop everything else in and out of the lab bridge
    assert all("drop" in json.dumps(r["expr"]) for r in forward[-2:])
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"


def test_status_json_is_the_documented_object(lab: dict[str, Any]) -> None:
    for key in ("version", "phase", "running", "hosts", "ssh", "acme", "network", "rootfs"):
        assert key in lab
    assert lab["phase"] == "up" and lab["running"] is True
    assert lab["acme"]["directory_url"].endswith("/dir")
    # the lab CA (Pebble's listener), Pebble's issuing root, the site PKI's root (files)
    assert Path(lab["acme"]["ca_bundle"]).read_text().count("BEGIN CERTIFICATE") == 3
    for entry in lab["hosts"]:
        assert {"name", "ip", "fqdns", "groups", "running"} <= set(entry)
    assert {h["name"] for h in lab["hosts"]} == {
        "mm1",
        "mm2",
        "mm3",
        "db1",
        "ns1",
        "push1",
        "proxy1",
        "upstream1",
        "upstream2",
        "apns1",
    }


def test_status_exits_nonzero_and_says_so_when_down(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "MMPUSH_LAB_DIR": str(tmp_path / "nolab")}
    result = subprocess.run(
        [str(BIN / "mmpush"), "lab", "status"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 3
    assert "mmpush lab up" in result.stdout
    assert mmpush("lab", "ssh", "nosuchhost", "true").returncode != 0
    for command in (["send-dm", "hello"], ["ssh", "mm1", "true"]):
        down = subprocess.run(
            [str(BIN / "mmpush"), "lab", *command], capture_output=True, text=True, env=env
        )
        assert down.returncode == 1, (command, down.stderr)
        assert "Traceback" not in down.stderr
        [line] = down.stderr.strip().splitlines()
        assert line.startswith("mmpush lab: error:") and "mmpush lab up" in line, line
