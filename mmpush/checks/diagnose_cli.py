"""`mmpush diagnose INVENTORY`: the push notification guide's troubleshooting checklist, run
against every Mattermost server of an inventory and the push proxies / outbound proxies it
relies on (mmpush/checks/diagnose.py), over SSH as pyinfra reaches the hosts.

    mmpush diagnose inventories/lab.py
    mmpush diagnose inventories/mysite/inventory.py --data push_mode=hpns --format json
    mmpush diagnose inventories/lab.py --host mm1 --host push1

Exit codes: 0 no check failed, 1 a check failed, 2 a usage error (bad inventory, bad --data,
unknown --host). An unreachable host is a failed ``reachable`` check, not an error.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from mmpush.checks.diagnose import (
    DEFAULT_LOG_LINES,
    FAIL,
    WARN,
    CheckResult,
    CommandResult,
    ControlNode,
    Runner,
    summary,
)
from mmpush.checks.diagnose import diagnose as run_diagnosis
from mmpush.inventory import InventoryError, InventoryHost, load_inventory, ssh_config


def data_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--data`` items as pyinfra reads them (true/false, numbers and JSON parsed); a
    malformed item is a usage error.

        data_overrides(["push_mode=hpns", "x=[1]"]) == {"push_mode": "hpns", "x": [1]}
    """
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE, e.g. push_mode=hpns", param_hint="--data"
            )
        overrides[key] = parse_data_value(value)
    return overrides


def parse_data_value(text: str) -> Any:
    """One ``--data`` value as pyinfra parses it (``pyinfra_cli/util.py`` parse_cli_arg:
    true/false, an integer, JSON, else the text). Not imported from pyinfra_cli: importing it
    monkey-patches ssl and socket (gevent), which this command uses.

        parse_data_value("8000") == 8000; parse_data_value('["10.0.0.0/8"]') == ["10.0.0.0/8"]
    """
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def make_runner(host: InventoryHost, ssh_config_file: Path) -> Runner:
    """A runner for ``host``: testinfra over OpenSSH with the inventory's SSH data (strict
    host keys), through sudo when the inventory connects with ``_sudo``. An SSH failure is an
    answer (exit 255 and ssh's message), never an exception."""
    import testinfra

    backend = testinfra.get_host(
        f"ssh://{host.name}",
        ssh_config=str(ssh_config_file),
        controlpersist=0,
        sudo=bool(host.data.get("_sudo")),
    )

    def run(command: str) -> CommandResult:
        try:
            result = backend.run(command)
        except RuntimeError as error:  # testinfra raises on ssh's exit 255
            answer = error.args[0] if error.args else None
            stderr = getattr(answer, "stderr", "") or "ssh failed"
            return CommandResult(255, "", str(stderr))
        except OSError as error:
            return CommandResult(255, "", f"cannot run ssh: {error}")
        return CommandResult(result.rc, result.stdout, result.stderr)

    return run


def render_text(results: Sequence[CheckResult]) -> list[str]:
    """One line per check per host (STATUS host check: evidence, then the fix when it is not
    ok), then the summary.

    for line in render_text(results): print(line)
    """
    host_width = max((len(r.host) for r in results), default=4)
    check_width = max((len(r.check) for r in results), default=5)
    lines = []
    for result in results:
        fix = f"  => fix: {result.fix}" if result.fix and result.status in (FAIL, WARN) else ""
        lines.append(
            f"{result.status.upper():<4}  {result.host:<{host_width}}  "
            f"{result.check:<{check_width}}  {result.evidence}{fix}"
        )
    counts = summary(results)
    failed = sorted({r.host for r in results if r.status == FAIL})
    verdict = f"FAIL ({', '.join(failed)})" if failed else "OK"
    lines.append(
        f"Summary: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail, "
        f"{counts['skip']} skip. Result: {verdict}"
    )
    return lines


def render_json(results: Sequence[CheckResult]) -> str:
    """``{"results": [{"host", "check", "status", "evidence", "fix"}, ...], "summary":
    {"ok": n, "warn": n, "fail": n, "skip": n}, "ok": bool}``."""
    counts = summary(results)
    return json.dumps(
        {
            "results": [result.to_dict() for result in results],
            "summary": counts,
            "ok": counts[FAIL] == 0,
        },
        indent=2,
    )


@click.command("diagnose")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data", multiple=True, metavar="KEY=VALUE", help="As pyinfra --data.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one line per check; json: the same results for machines.",
)
@click.option(
    "--host",
    "host_names",
    multiple=True,
    metavar="NAME",
    help="Check only this inventory host (repeatable); the others still count as data.",
)
@click.option(
    "--log-lines",
    type=click.IntRange(min=1, max=500),
    default=DEFAULT_LOG_LINES,
    show_default=True,
    help="How many of the last error lines of each log to explain.",
)
def diagnose(
    inventory: str,
    data: tuple[str, ...],
    output_format: str,
    host_names: tuple[str, ...],
    log_lines: int,
) -> None:
    """Run Mattermost's push notification troubleshooting checklist against INVENTORY: push
    settings, the push URL from each server, its certificate, the outbound proxy, the push
    proxy and its credentials, the licence, environment overrides and config sources, and
    recent push errors in the logs. Exits 1 when a check fails."""
    overrides = data_overrides(data)
    try:
        loaded = load_inventory(Path(inventory).resolve(), data=list(data))
    except InventoryError as error:
        raise click.UsageError(str(error)) from error
    hosts = [InventoryHost(h.name, h.groups, {**h.data, **overrides}) for h in loaded]
    if not hosts:
        raise click.UsageError(f"{inventory} has no host")
    names = [h.name for h in hosts]
    unknown = [name for name in host_names if name not in names]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)} not in {inventory} (hosts: {', '.join(names)})",
            param_hint="--host",
        )
    selected = list(host_names) or names
    click.echo(f"[diagnose] checking {', '.join(selected)}", err=True)
    with tempfile.TemporaryDirectory(prefix="mmpush-diagnose-") as directory:
        config = Path(directory) / "ssh_config"
        config.write_text(ssh_config(hosts))
        runners = {h.name: make_runner(h, config) for h in hosts if h.name in selected}
        results = run_diagnosis(
            hosts,
            runners,
            ControlNode(),
            selected=selected,
            inventory_label=inventory,
            log_lines=log_lines,
        )
    if output_format == "json":
        click.echo(render_json(results))
    else:
        click.echo("\n".join(render_text(results)))
    sys.exit(1 if any(r.status == FAIL for r in results) else 0)
