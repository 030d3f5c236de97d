"""Verify any inventory's hosts with testinfra: the lab in CI, production for ops.

    pytest tests/verify --inventory inventories/lab.py
    pytest tests/verify --inventory inventories/prod.py -k push_proxies

Hosts, groups and data come from the pyinfra inventory itself (group_data/ included), and
hosts are reached over SSH as pyinfra reaches them, host keys checked strictly.
Tests ask for a group with ``@pytest.mark.group("push_proxies")`` and get one ``host``
per inventory host in that group (a group with no hosts is skipped).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import testinfra

from mmpush.inventory import InventoryHost, load_inventory, ssh_config
from mmpush.settings import Settings, settings_from_data

REPO = Path(__file__).resolve().parents[2]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--inventory",
        default=None,
        help="pyinfra inventory to verify, e.g. inventories/lab.py or inventories/prod.py",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "group(name): run once per inventory host in group")


def _inventory(config: pytest.Config) -> list[InventoryHost]:
    cached = getattr(config, "_mmpush_inventory", None)
    if cached is None:
        inventory = config.getoption("--inventory")
        if not inventory:
            raise pytest.UsageError("tests/verify needs --inventory (e.g. inventories/lab.py)")
        cached = load_inventory(Path(inventory).resolve(), cwd=REPO)
        config._mmpush_inventory = cached  # type: ignore[attr-defined]
    return cached


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "inventory_host" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("group")
    hosts = _inventory(metafunc.config)
    if marker:
        hosts = [h for h in hosts if h.in_group(marker.args[0])]
    metafunc.parametrize(
        "inventory_host",
        hosts or [pytest.param(None, marks=pytest.mark.skip(reason="no host in that group"))],
        ids=[h.name for h in hosts] or ["none"],
    )


@pytest.fixture(scope="session")
def inventory(pytestconfig: pytest.Config) -> list[InventoryHost]:
    """Every host of the inventory under test."""
    return _inventory(pytestconfig)


@pytest.fixture(scope="session")
def ssh_config_file(
    inventory: list[InventoryHost], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "config"
    path.write_text(ssh_config(inventory))
    return path


@pytest.fixture
def host(inventory_host: InventoryHost, ssh_config_file: Path) -> testinfra.host.Host:
    """The testinfra host for ``inventory_host`` (OpenSSH, strict host keys, no lingering
    control master)."""
    return testinfra.get_host(
        f"ssh://{inventory_host.name}", ssh_config=str(ssh_config_file), controlpersist=0
    )


@pytest.fixture
def settings(inventory_host: InventoryHost) -> Settings:
    """What ``inventory_host`` should look like: its data validated as a deploy would
    (``mmpush.settings``; credential files are read on this control node)."""
    return settings_from_data(inventory_host.name, inventory_host.groups, inventory_host.data)
