"""The pyinfra operation that changes push settings through Mattermost's config API.

    api_push_settings(name="Push settings through the config API", access=access,
                      values=values, cluster="database postgres://db1:5432/mattermost",
                      precheck=push_url_check(url), _serial=True)

Run with ``_serial=True``: the servers of a cluster go one at a time; the first that needs the
change patches the shared configuration, each later one only checks that it sees it (after
asking it to reload, as a server without Enterprise clustering needs). Nothing is restarted:
the server applies config changes live.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, OperationError, operation

from mmpush.mattermost.access import ConfigAccess
from mmpush.mattermost.api import ConfigApiError, config_patch, effective_push_settings
from mmpush.mattermost.cluster import verify_cluster
from mmpush.transactions import bash

#: Which host patched each cluster's configuration in this run: {cluster key: host name}.
PATCHED_BY: dict[str, str] = {}
#: How long a cluster node may take to show a change another node made.
PROPAGATION_TIMEOUT = 30.0


@operation()
def api_push_settings(
    access: ConfigAccess,
    values: dict[tuple[str, ...], Any],
    cluster: str | None = None,
    precheck: str | None = None,
):
    """Make the server's effective push settings ``values`` through its config API (see the
    module docs); no change when it already has them. ``precheck``: a shell command that must
    succeed on the host before anything changes (the push URL answers)."""
    try:
        current = access.get(host)
    except ConfigApiError as error:
        raise OperationError(f"{host.name}: {error}") from None
    patch = config_patch(current, values)
    if patch is None:
        host.noop(f"the configuration already has these push settings ({access.where})")
        return
    for path, value in values.items():
        old = effective_push_settings(current, [path])[path]
        if old != value:
            logger.info(f"    [{host.name}] {'.'.join(path)}: {old!r} -> {value!r}")
    if precheck:
        yield bash(precheck)
    yield FunctionCommand(_apply, (access, values, patch, cluster), {})


def _apply(
    state: Any,
    host: Any,
    access: ConfigAccess,
    values: dict[tuple[str, ...], Any],
    patch: dict[str, Any],
    cluster: str | None,
) -> bool:
    """Patch (the first node of a cluster) or check the peer's patch arrived (the others)."""
    try:
        patched_by = PATCHED_BY.get(cluster) if cluster else None
        if patched_by is not None:
            _wait_for_peer(host, access, values, patched_by)
            return True
        answer = access.patch(host, patch)
        now = effective_push_settings(answer, list(values))
        if verify_cluster({"wanted": values, host.name: now}):
            raise ConfigApiError(
                f"the server accepted the patch but reports {now} (an MM_* environment "
                "variable may lock these settings)"
            )
        if cluster:
            PATCHED_BY[cluster] = host.name
        logger.info(f"    [{host.name}] patched through {access.where} (no restart needed)")
        return True
    except (ConfigApiError, OperationError) as error:
        host.log_styled(f"push settings not changed: {error}", fg="red", log_func=logger.error)
        return False


def _wait_for_peer(
    target: Any, access: ConfigAccess, values: dict[tuple[str, ...], Any], peer: str
) -> None:
    """This node shares its configuration with ``peer``, which patched it: ask it to reload
    and wait (bounded) until it reports the new values; else fail naming both."""
    deadline = time.monotonic() + PROPAGATION_TIMEOUT
    now: dict[tuple[str, ...], Any] = {}
    while True:
        # an older server has no reload route: then the cluster message must do
        with contextlib.suppress(ConfigApiError):
            access.reload(target)
        now = effective_push_settings(access.get(target), list(values))
        if not verify_cluster({peer: values, target.name: now}):
            logger.info(f"    [{target.name}] has {peer}'s change (one shared configuration)")
            return
        if time.monotonic() >= deadline:
            shown = "; ".join(f"{'.'.join(k)} = {v!r}" for k, v in now.items())
            raise ConfigApiError(
                f"{PROPAGATION_TIMEOUT:.0f} s after {peer} changed the shared configuration, "
                f"{target.name} still reports {shown}: the cluster's nodes do not share one "
                "configuration (check MM_CONFIG and mattermost_cluster)"
            )
        time.sleep(1)
