"""Mattermost servers that share one configuration: patched once, verified on every node.

    keys = [(name, cluster_key(data_of[name], source_of[name])) for name in inventory_order]
    leaders = cluster_leaders(keys)          # {"mm2": "mm2", "mm3": "mm2", "mm1": "mm1"}
    # mm2 patches the shared configuration; mm3 only checks it, then:
    differing = verify_cluster({"mm2": values_mm2, "mm3": values_mm3})   # ["mm3"] or []

Nodes share a configuration when they read the same database (the same DSN identity: scheme,
host, port, database) or when the inventory says so (``mattermost_cluster``: a name, for DSNs
that spell one database differently, e.g. ``db1`` and ``10.0.0.5``). A file-configured server is
its own. A DSN whose host is local to each machine (``localhost``, a unix socket) names a
different database on every host, so it is its own too unless ``mattermost_cluster`` says
otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from mmpush.mattermost.api import same_json
from mmpush.mattermost.source import ConfigSource

CLUSTER_SETTING = "mattermost_cluster"


class HostDataLike(Protocol):
    """pyinfra's host.data (or any object with ``get``)."""

    def get(self, key: str, default: Any = None) -> Any: ...


class ClusterError(ValueError):
    """``mattermost_cluster`` cannot apply to this host (the message says why)."""


def cluster_key(host_data: HostDataLike | Mapping[str, Any], source: ConfigSource) -> str | None:
    """The name of the shared configuration this host belongs to, or None when it is alone
    (file sources, unknown sources, host-local DSNs without ``mattermost_cluster``).

        cluster_key({"mattermost_cluster": "prod"}, database_source)   # "cluster prod"
        cluster_key({}, database_source)          # "database postgres://db1:5432/mattermost"
        cluster_key({}, file_source)              # None

    :class:`ClusterError` when ``mattermost_cluster`` is set on a host whose configuration is
    a file (patching one node's file would not change the others').
    """
    name = host_data.get(CLUSTER_SETTING)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ClusterError(
            f"{CLUSTER_SETTING} = {name!r}: give the cluster a name (a non-empty string)"
        )
    if name is not None and source.kind == "file":
        raise ClusterError(
            f"{CLUSTER_SETTING} = {name!r}, but this server reads {source.describe()}: a "
            "file configuration is each node's own, so nodes cannot share it; keep the "
            f"configuration in the database or remove {CLUSTER_SETTING}"
        )
    if name is not None:
        return f"cluster {name.strip()}"
    if source.kind != "database" or source.identity is None or source.identity.is_local:
        return None
    return f"database {source.identity.key}"


def cluster_leaders(hosts: Sequence[tuple[str, str | None]]) -> dict[str, str]:
    """For each host, the host that patches its configuration: the first host of its cluster
    in ``hosts`` (inventory order); a host without a cluster key leads itself.

        cluster_leaders([("mm1", None), ("mm2", "k"), ("mm3", "k")])
        # {"mm1": "mm1", "mm2": "mm2", "mm3": "mm2"}
    """
    first: dict[str, str] = {}
    leaders: dict[str, str] = {}
    for name, key in hosts:
        if key is None:
            leaders[name] = name
        else:
            leaders[name] = first.setdefault(key, name)
    return leaders


def verify_cluster(
    values_by_node: Mapping[str, Mapping[Any, Any]], leader: str | None = None
) -> list[str]:
    """The nodes whose push settings differ from the leader's (the first node unless
    ``leader`` is given), in the mapping's order; [] when all agree. Values compare as JSON
    (``true`` is not ``1``); a key missing on a node differs from any value.

        verify_cluster({"mm2": {"k": True}, "mm3": {"k": False}})   # ["mm3"]
    """
    if not values_by_node:
        return []
    reference_name = leader if leader is not None else next(iter(values_by_node))
    reference = values_by_node[reference_name]
    return [
        name
        for name, values in values_by_node.items()
        if name != reference_name and not _same_values(reference, values)
    ]


def _same_values(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> bool:
    missing = object()
    return a.keys() == b.keys() and all(same_json(a[k], b.get(k, missing)) for k in a)


def cluster_mismatch_message(
    cluster: str,
    values_by_node: Mapping[str, Mapping[tuple[str, ...], Any]],
    leader: str | None = None,
) -> str | None:
    """A sentence naming each node that reports other push settings than the leader, and
    what it reports; None when all agree.

        cluster_mismatch_message("database postgres://db1:5432/mm", values)
        # "cluster database postgres://db1:5432/mm: after mm2 changed the shared
        #  configuration, mm3 reports EmailSettings.PushNotificationServer = '' (mm2: 'https://...')"
    """
    differing = verify_cluster(values_by_node, leader)
    if not differing:
        return None
    reference_name = leader if leader is not None else next(iter(values_by_node))
    reference = values_by_node[reference_name]
    parts = []
    for name in differing:
        values = values_by_node[name]
        details = [
            f"{'.'.join(key)} = {values.get(key)!r} ({reference_name}: {reference.get(key)!r})"
            for key in sorted(set(reference) | set(values))
            if not same_json(reference.get(key), values.get(key))
        ]
        parts.append(f"{name} reports {', '.join(details)}")
    return (
        f"{cluster}: after {reference_name} changed the shared configuration, "
        + "; ".join(parts)
        + " (a node outside an Enterprise cluster sees the change only after "
        "POST /api/v4/config/reload or a restart)"
    )
