"""Pure logic of the lab: names, addresses, generated files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmpush.inventory import InventoryHost, ssh_config
from mmpush.lab import containers, network, rootfs
from mmpush.lab.layout import BRIDGE, LAB_HOSTS, SUBNET, LabPaths, lab_host


def test_lab_hosts_have_distinct_addresses_names_and_short_interface_names() -> None:
    assert len({h.ip for h in LAB_HOSTS}) == len(LAB_HOSTS)
    names = [n for h in LAB_HOSTS for n in h.fqdns]
    assert len(names) == len(set(names))
    for host in LAB_HOSTS:
        assert len(host.veth) <= 15, "Linux interface names are at most 15 characters"


def test_each_group_of_the_design_has_a_lab_host() -> None:
    groups = {g for h in LAB_HOSTS for g in h.groups}
    assert {"mattermost", "push_proxies", "outbound_proxies"} <= groups
    assert "push.mattermost.com" in lab_host("upstream1").fqdns
    assert "push-test.mattermost.com" in lab_host("upstream1").fqdns


def test_unknown_lab_host_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="mm1"):
        lab_host("nope")


def test_nat_ruleset_allows_only_the_registry_and_drops_the_rest() -> None:
    rules = network.nat_ruleset(["203.0.113.80", "203.0.113.81"])
    assert "ip daddr { 203.0.113.80, 203.0.113.81 } tcp dport { 80, 443 } accept" in rules
    assert f'iifname "{BRIDGE}" counter drop' in rules
    assert f"ip saddr {SUBNET}" in rules and "masquerade" in rules


def test_registry_names_come_from_the_rootfs_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
    )
    assert network.registry_names(tmp_path) == ["deb.debian.org", "security.debian.org"]


def test_etc_hosts_names_every_lab_host_and_pins_the_registry() -> None:
    text = containers.etc_hosts(lab_host("mm1"), {"deb.debian.org": ["203.0.113.80"]})
    for host in LAB_HOSTS:
        assert f"{host.ip}\t{' '.join(host.fqdns)} {host.name}" in text
    assert "203.0.113.80\tdeb.debian.org" in text


def test_rootfs_key_changes_with_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = rootfs.rootfs_key()
    monkeypatch.setattr(rootfs, "ROOTFS_PACKAGES", (*rootfs.ROOTFS_PACKAGES, "nginx"))
    assert rootfs.rootfs_key() != before


def test_an_interrupted_rootfs_build_is_not_a_cache_hit(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path / "state", tmp_path / "cache")
    half_built = paths.rootfs_cache / rootfs.rootfs_key()
    half_built.mkdir(parents=True)
    assert rootfs.cached_rootfs(paths) is None
    (half_built / rootfs.COMPLETE_MARKER).write_text("done")
    assert rootfs.cached_rootfs(paths) == half_built


def test_ssh_keypair_is_openssh_ed25519() -> None:
    private, public = containers.new_ssh_keypair()
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public.startswith("ssh-ed25519 ")


def test_ssh_config_from_inventory_keeps_strict_host_key_checking() -> None:
    hosts = [
        InventoryHost(
            "mm1",
            ("mattermost",),
            {
                "ssh_hostname": "10.77.44.11",
                "ssh_user": "root",
                "ssh_key": "/k",
                "ssh_known_hosts_file": "/kh",
                "ssh_port": 2222,
            },
        ),
        InventoryHost("mm2.example.com", ("mattermost",), {}),
    ]
    text = ssh_config(hosts)
    assert "Host mm1\n    HostName 10.77.44.11\n    User root\n    Port 2222" in text
    assert "UserKnownHostsFile /kh" in text
    assert "Host mm2.example.com\n    HostName mm2.example.com" in text
    assert text.count("StrictHostKeyChecking yes") == 2
