"""The `mmpush` command.

mmpush lab up                 # build (cached) and boot the local lab
mmpush lab status --json      # the lab's documented state, for scripts and inventories/lab.py
mmpush lab ssh mm1 -- systemctl status mattermost
mmpush lab down               # remove everything the lab made
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from mmpush.lab import lab as lab_module
from mmpush.lab.containers import as_root
from mmpush.lab.layout import LabPaths
from mmpush.lab.sh import LabError


@click.group()
def main() -> None:
    """Mattermost push notifications on your own infrastructure."""


@main.group()
def lab() -> None:
    """The local lab: real Debian hosts (systemd-nspawn) and an ACME CA (Pebble)."""


def _fail(error: Exception) -> None:
    click.echo(f"mmpush lab: error: {error}", err=True)
    sys.exit(1)


@lab.command()
def up() -> None:
    """Clean any earlier lab, then build (or reuse) the rootfs and boot the lab hosts."""
    started = time.monotonic()
    try:
        state = lab_module.up(LabPaths.default())
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
    paths = LabPaths.default()
    try:
        target = lab_module.host_for(host)
    except KeyError as error:
        _fail(error)
    if not paths.ssh_config.exists():
        _fail(LabError("the lab is down; start it with `mmpush lab up`"))
    args = ["ssh", "-F", str(paths.ssh_config)]
    if command:
        remote = as_root(" ".join(command))
    else:
        args += ["-t"] if sys.stdin.isatty() else []
        remote = "sudo -i"
    os.execvp("ssh", [*args, target.name, remote])


@lab.command("send-dm")
@click.argument("text", default="Hello from the lab")
@click.option("--device", default="apple_rn-v2:lab-demo-device", help="Recipient's device id.")
def send_dm(text: str, device: str) -> None:
    """Have Account B send Account A a DM on mm1 (Account A's phone is DEVICE), then show what
    the push service received: the push proxy on push1 (EAS) or the HPNS stand-in."""
    from mmpush.lab.containers import ssh as lab_ssh
    from mmpush.lab.layout import lab_host
    from mmpush.mmapi import MattermostClient, send_direct_message

    paths = LabPaths.default()
    mm1 = lab_host("mm1")
    post = send_direct_message(
        MattermostClient(f"http://{mm1.ip}:8065"), "accountb", "accounta", text, device
    )
    click.echo(f"Mattermost on mm1 accepted the DM (post {post['id']}) and sent its push.")
    records = lab_ssh(
        paths,
        lab_host("push1"),
        "journalctl -u mattermost-push-proxy -o cat --no-pager 2>/dev/null"
        f" | grep EMULATOR-DELIVERY | grep {post['id']} || true",
    ).stdout.strip()
    if not records:
        records = lab_ssh(
            paths,
            lab_host("upstream1"),
            f"grep {post['id']} /var/lib/hpns-emulator/received.jsonl || true",
        ).stdout.strip()
    click.echo(records or "No push service recorded it: see /opt/mattermost/logs/mattermost.log")


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
