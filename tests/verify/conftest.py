"""Verify any inventory's hosts with testinfra: the lab in CI, production for ops.

    pytest tests/verify --inventory inventories/lab.py
    pytest tests/verify --inventory inventories/mysite/inventory.py -k push_proxies
    pytest tests/verify --inventory inventories/lab.py --data push_mode=hpns

Hosts, groups and data come from the pyinfra inventory itself (group_data/ included), and
hosts are reached over SSH as pyinfra reaches them, host keys checked strictly. ``--data
key=value`` (repeatable) overrides every host's data exactly as ``pyinfra --data`` does: give
the suite the same overrides the deploy had, or it checks the inventory's defaults.
Tests ask for a group with ``@pytest.mark.group("push_proxies")`` and get one ``host``
per inventory host in that group (a group with no hosts is skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import testinfra
from pyinfra_cli.util import parse_cli_arg

from mmpush.inventory import InventoryHost, load_inventory, ssh_config
from mmpush.settings import Settings, settings_from_data

REPO = Path(__file__).resolve().parents[2]

# The shared helpers assert like the tests do: pytest rewrites their asserts too, so a failure
# shows the same explanation as one in a test module.
pytest.register_assert_rewrite("tests.verify.hostcheck", "tests.verify.tls")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--inventory",
        default=None,
        help="pyinfra inventory to verify: inventories/lab.py, inventories/<site>/inventory.py",
    )
    parser.addoption(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a data value for every host, as `pyinfra --data` (repeatable), "
        "e.g. --data push_mode=hpns",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "group(name): run once per inventory host in group")
    _data_overrides(config.getoption("--data"))  # a malformed --data stops the run here


def _data_overrides(items: list[str]) -> dict[str, Any]:
    """``--data`` items as pyinfra reads them: ``["push_mode=hpns", "x=[1]"]`` ->
    ``{"push_mode": "hpns", "x": [1]}`` (true/false, numbers and JSON parsed)."""
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise pytest.UsageError(f"--data {item!r}: expected KEY=VALUE, e.g. push_mode=hpns")
        overrides[key] = parse_cli_arg(value)
    return overrides


def _inventory(config: pytest.Config) -> list[InventoryHost]:
    cached = getattr(config, "_mmpush_inventory", None)
    if cached is None:
        inventory = config.getoption("--inventory")
        if not inventory:
            raise pytest.UsageError("tests/verify needs --inventory (e.g. inventories/lab.py)")
        items: list[str] = config.getoption("--data")
        overrides = _data_overrides(items)
        # pyinfra applies the overrides while loading (inventory code sees them as in a
        # deploy); merging the parsed values again makes them exactly what a deploy reads.
        cached = [
            InventoryHost(host.name, host.groups, {**host.data, **overrides})
            for host in load_inventory(Path(inventory).resolve(), cwd=REPO, data=items)
        ]
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
    control master), through sudo when the inventory connects with ``_sudo`` (as production
    does: a user with sudo, not root)."""
    return testinfra.get_host(
        f"ssh://{inventory_host.name}",
        ssh_config=str(ssh_config_file),
        controlpersist=0,
        sudo=bool(inventory_host.data.get("_sudo")),
    )


@pytest.fixture
def settings(inventory_host: InventoryHost, inventory: list[InventoryHost]) -> Settings:
    """What ``inventory_host`` should look like: its data validated as a deploy would
    (``mmpush.settings``; credential files are read on this control node).

    Mattermost hosts also get the inventory's outbound_proxies hosts' data, as
    ``load_settings`` gives them in a deploy: in hpns mode their push server is the outbound
    proxy's URL (unless ``hpns_use_outbound_proxy`` is False)."""
    proxies = {
        proxy.name: proxy.data
        for proxy in inventory
        if proxy.in_group("outbound_proxies") and inventory_host.in_group("mattermost")
    }
    return settings_from_data(
        inventory_host.name, inventory_host.groups, inventory_host.data, proxies
    )
