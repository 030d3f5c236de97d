"""Clusters of Mattermost servers sharing one configuration: which one patches, and the
verification that every node reports the same push settings afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from mmpush.mattermost.cluster import (
    ClusterError,
    cluster_key,
    cluster_leaders,
    cluster_mismatch_message,
    verify_cluster,
)
from mmpush.mattermost.source import ConfigSource, DsnIdentity

SERVER = ("EmailSettings", "PushNotificationServer")
SEND = ("EmailSettings", "SendPushNotifications")


def database(host: str = "db1", port: str = "5432", dbname: str = "mattermost") -> ConfigSource:
    return ConfigSource(kind="database", identity=DsnIdentity("postgres", host, port, dbname))


FILE = ConfigSource(kind="file", path="/opt/mattermost/config/config.json")
UNKNOWN = ConfigSource(kind="unknown", reason="x")


class HostData:
    """Like pyinfra's host.data: attribute-ish access through get()."""

    def __init__(self, **values: Any) -> None:
        self._values = values

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)


def test_cluster_keys() -> None:
    assert cluster_key({}, database()) == "database postgres://db1:5432/mattermost"
    assert cluster_key(HostData(), database()) == cluster_key({}, database())
    assert cluster_key({}, database(port="5433")) != cluster_key({}, database())
    assert cluster_key({}, database(dbname="other")) != cluster_key({}, database())
    assert cluster_key({}, FILE) is None
    assert cluster_key({}, UNKNOWN) is None
    # a DSN local to each machine names a different database on every host
    assert cluster_key({}, database(host="localhost")) is None
    assert cluster_key({}, database(host="/var/run/postgresql")) is None
    # an explicit name groups DSNs that spell one database differently
    named = HostData(mattermost_cluster="prod")
    assert cluster_key(named, database(host="db1")) == "cluster prod"
    assert cluster_key(named, database(host="10.0.0.5")) == "cluster prod"
    assert cluster_key(named, database(host="localhost")) == "cluster prod"
    assert cluster_key(named, UNKNOWN) == "cluster prod"


def test_a_cluster_name_on_a_file_server_or_an_empty_name_is_refused() -> None:
    with pytest.raises(ClusterError, match="file configuration is each node's own"):
        cluster_key({"mattermost_cluster": "prod"}, FILE)
    for bad in ("", "  ", 3):
        with pytest.raises(ClusterError, match="give the cluster a name"):
            cluster_key({"mattermost_cluster": bad}, database())


def test_the_first_host_of_each_cluster_in_inventory_order_leads() -> None:
    hosts = [
        ("mm1", None),
        ("mm3", "database postgres://db1:5432/mm"),
        ("mm2", "database postgres://db1:5432/mm"),
        ("mm4", "cluster other"),
        ("mm5", None),
        ("mm6", "cluster other"),
    ]
    assert cluster_leaders(hosts) == {
        "mm1": "mm1",
        "mm3": "mm3",
        "mm2": "mm3",
        "mm4": "mm4",
        "mm5": "mm5",
        "mm6": "mm4",
    }
    assert cluster_leaders([]) == {}


def test_verify_cluster_names_the_nodes_that_differ() -> None:
    same = {SEND: True, SERVER: "https://push.example.com"}
    assert verify_cluster({"mm2": same, "mm3": dict(same)}) == []
    assert verify_cluster({}) == []
    values = {
        "mm2": same,
        "mm3": {SEND: True, SERVER: "https://old.example.com"},
        "mm4": {SEND: 1, SERVER: "https://push.example.com"},  # 1 is not true
        "mm5": {SEND: True},  # a missing key differs
        "mm6": dict(same),
    }
    assert verify_cluster(values) == ["mm3", "mm4", "mm5"]
    assert verify_cluster(values, leader="mm3") == ["mm2", "mm4", "mm5", "mm6"]


def test_the_mismatch_message() -> None:
    values = {
        "mm2": {SEND: True, SERVER: "https://push.example.com"},
        "mm3": {SEND: True, SERVER: ""},
    }
    message = cluster_mismatch_message("database postgres://db1:5432/mm", values)
    assert message is not None
    assert message.startswith(
        "database postgres://db1:5432/mm: after mm2 changed the shared configuration, mm3 "
        "reports EmailSettings.PushNotificationServer = '' (mm2: 'https://push.example.com')"
    )
    assert "config/reload" in message
    assert cluster_mismatch_message("c", {"mm2": values["mm2"]}) is None
