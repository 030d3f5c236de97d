"""The `mmpush` command.

mmpush lab up                 # build (cached) and boot the local lab
mmpush lab status --json      # the lab's documented state, for scripts and inventories/lab.py
mmpush lab ssh mm1 -- systemctl status mattermost
mmpush lab down               # remove everything the lab made
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from typing import NoReturn

import click

from mmpush.checks.cli import check_cert
from mmpush.checks.diagnose_cli import diagnose
from mmpush.lab import lab as lab_module
from mmpush.lab.containers import as_root
from mmpush.lab.inventory import LabNotRunning
from mmpush.lab.layout import LabPaths
from mmpush.lab.sh import LabError


@click.group()
def main() -> None:
    """Mattermost push notifications on your own infrastructure."""


@main.command()
@click.argument("inventory")
@click.option("--data", "data", multiple=True, metavar="KEY=VALUE", help="As pyinfra --data.")
def check(inventory: str, data: tuple[str, ...]) -> None:
    """Validate every host's settings in INVENTORY as a deploy would, without connecting to
    any host: exit 1, naming host, setting and value, when one is invalid."""
    from mmpush.check import check_inventory
    from mmpush.inventory import InventoryError

    try:
        results = check_inventory(inventory, list(data))
    except InventoryError as error:
        click.echo(f"mmpush check: error: {error}", err=True)
        sys.exit(1)
    for result in results:
        groups = ", ".join(result.groups) or "no group"
        click.echo(f"{'FAIL' if result.error else 'OK':4}  {result.host}  [{groups}]")
        if result.placeholders:
            click.echo("      placeholders to replace (CHANGE-ME):")
            for key, hint in result.placeholders:
                click.echo(f"        {key}: {hint}")
        elif result.error:
            click.echo(f"      {result.error}")
        for warning in result.warnings:
            click.echo(f"      warning: {warning}")
    failed = sum(1 for r in results if r.error)
    click.echo(f"{len(results)} hosts, {failed} with invalid settings")
    if failed or not results:
        sys.exit(1)


main.add_command(check_cert)
main.add_command(diagnose)


@main.group()
def lab() -> None:
    """The local lab: real Debian hosts (systemd-nspawn) and an ACME CA (Pebble)."""


def _fail(error: BaseException) -> NoReturn:
    """One line on stderr, exit 1: never a traceback for what a user can fix."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    click.echo(f"mmpush lab: error: {message}", err=True)
    sys.exit(1)


@lab.command()
@click.option(
    "--mattermost-hosts",
    default=1,
    show_default=True,
    help="File-configured Mattermost servers: mm1, then mm4, mm5, ... (a fleet).",
)
def up(mattermost_hosts: int) -> None:
    """Clean any earlier lab, then build (or reuse) the rootfs and boot the lab hosts."""
    started = time.monotonic()
    try:
        state = lab_module.up(LabPaths.default(), mattermost_hosts=mattermost_hosts)
    except LabError as error:
        _fail(error)
    click.echo(f"[lab] up in {time.monotonic() - started:.1f} s", err=True)
    _print_summary(state)


@lab.command()
def down() -> None:
    """Remove every container, namespace, veth, bridge, nft table and process of the lab."""
    try:
        lab_module.down(LabPaths.default())
    except LabError as error:
        _fail(error)


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print the state as a JSON object.")
def status(as_json: bool) -> None:
    """Show the lab's hosts, addresses, SSH files and ACME CA (see docs/lab.md)."""
    try:
        state = lab_module.status(LabPaths.default())
    except LabError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(state, indent=2))
    elif not state["hosts"]:
        click.echo("The lab is down. Start it with: mmpush lab up")
    else:
        _print_summary(state)
    if not state["running"]:
        sys.exit(3)


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(host: str, command: tuple[str, ...]) -> None:
    """Open a root shell on a lab host, or run COMMAND there as root: mmpush lab ssh mm1 --
    uptime. Connects as the lab's deploy user and uses its sudo, as an admin would."""
    from mmpush.lab.inventory import lab_state

    paths = LabPaths.default()
    try:
        target = lab_module.host_for(host)
        lab_state(paths)
    except (KeyError, LabError, LabNotRunning) as error:
        _fail(error)
    args = ["ssh", "-F", str(paths.ssh_config)]
    if command:
        remote = as_root(" ".join(command))
    else:
        args += ["-t"] if sys.stdin.isatty() else []
        remote = "sudo -i"
    os.execvp("ssh", [*args, target.name, remote])


@lab.command("send-dm")
@click.argument("text", default="Hello from the lab")
@click.option(
    "--device",
    default=None,
    help="Account A's device id, PLATFORM-v2:TOKEN (default: an iPhone with a new token).",
)
@click.option("--host", "mm_host", default="mm1", show_default=True, help="Mattermost server.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the push.")
def send_dm(text: str, device: str | None, mm_host: str, timeout: float) -> None:
    """Have Account B send Account A a DM on a lab Mattermost server, then show what the push
    services recorded for it (the push proxy on push1, or the HPNS stand-ins). Exits 1 when
    no push service recorded it, or when it was not delivered."""
    from mmpush.lab.inventory import lab_state
    from mmpush.lab.pushes import wait_for_push_records
    from mmpush.mmapi import MattermostClient, send_direct_message

    paths = LabPaths.default()
    device = device or f"apple_rn-v2:{secrets.token_hex(32)}"
    try:
        lab_state(paths)
        target = lab_module.host_for(mm_host)
        post = send_direct_message(
            MattermostClient(f"http://{target.ip}:8065"), "accountb", "accounta", text, device
        )
        click.echo(f"Mattermost on {target.name} accepted the DM (post {post['id']}) for {device}.")
        records = wait_for_push_records(paths, post["id"], timeout=timeout)
    except (LabError, LabNotRunning, KeyError, OSError, AssertionError) as error:
        _fail(error)
    for record in records:
        click.echo(record.line())
    if not records:
        _fail(
            LabError(
                f"no push service recorded post {post['id']} within {timeout:.0f} s: see "
                f"{target.name}:/opt/mattermost/logs/notifications.log"
            )
        )
    if not any(r.outcome in ("delivered", "received") for r in records):
        _fail(LabError("the push was not delivered (see the answer above)"))


def _print_summary(state: dict[str, object]) -> None:
    hosts = state["hosts"]
    assert isinstance(hosts, list)
    click.echo("Lab hosts:")
    for entry in hosts:
        names = ", ".join(entry["fqdns"])
        groups = ", ".join(entry["groups"])
        click.echo(f"  {entry['name']:<10} {entry['ip']:<13} {names}  [{groups}]")
    acme = state["acme"]
    ssh_files = state["ssh"]
    assert isinstance(acme, dict) and isinstance(ssh_files, dict)
    click.echo(f"ACME directory: {acme['directory_url']}  (CA bundle: {acme['ca_bundle']})")
    click.echo(f"SSH: mmpush lab ssh mm1   (or: ssh -F {ssh_files['config']} mm1)")
    click.echo("Deploy: pyinfra -y inventories/lab.py deploys/<mode>.py")
