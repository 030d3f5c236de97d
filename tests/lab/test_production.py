"""A first production run, as an admin would make it: the shipped example inventory copied
and filled in the documented places, a control node installed with `make install` by a user
without root, hosts reached as a user with sudo; and the rollout's safety nets (a push front
that fails leaves the Mattermost servers alone, restarts one server at a time, stopping at
the first that does not come back). Also the root path, which must keep working."""

from __future__ import annotations

import ast
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.helpers import (
    REPO,
    SshRunner,
    apple_device,
    deploy,
    grand_total,
    lab_skips,
    mmpush,
    parse_junit,
    pushes,
    send_dm,
    verify,
)

pytestmark = pytest.mark.lab

CONFIG = "/opt/mattermost/config/config.json"
#: The file-configured servers (mm2 and mm3, the database-configured cluster, are not
#: restarted: their configuration changes live).
SERVERS = ("mm1", "mm4", "mm5")
OPS_USER = "mmpush-ops"


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any]) -> dict[str, Any]:
    """A fresh lab with three file-configured Mattermost servers, EAS deployed."""
    up = mmpush("lab", "up", "--mattermost-hosts", "3")
    assert up.returncode == 0, up.stderr[-3000:]
    state = json.loads(mmpush("lab", "status", "--json").stdout)
    names = [h["name"] for h in state["hosts"] if "mattermost" in h["groups"]]
    assert set(SERVERS) <= set(names) and len(names) == len(SERVERS) + 2, names
    first = deploy("deploys/eas.py")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    return state


def config_sha(on: SshRunner, host: str) -> str:
    return on(host, f"sha256sum {CONFIG}").stdout.split()[0]


# --- rollout safety -------------------------------------------------------------------------


def test_a_failing_push_front_leaves_the_mattermost_servers_untouched(
    fleet: dict[str, Any], on: SshRunner
) -> None:
    before = {mm: config_sha(on, mm) for mm in SERVERS}
    cluster_before = on(
        "mm2",
        "curl -sS --unix-socket /var/tmp/mattermost_local.socket http://localhost/api/v4/config",
    ).stdout
    # a new push name the CA cannot validate: the front gets no certificate for it
    result = deploy(
        "deploys/eas.py",
        "push_name=push-new.lab.test",
        "acme_directory_url=https://127.0.0.1:1/dir",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "cannot use the push service https://push-new.lab.test" in output
    assert "left as they were" in output
    assert {mm: config_sha(on, mm) for mm in SERVERS} == before
    assert (
        on(
            "mm2",
            "curl -sS --unix-socket /var/tmp/mattermost_local.socket "
            "http://localhost/api/v4/config",
        ).stdout
        == cluster_before
    )
    # what they point at still works
    post = send_dm(fleet, "still pushing", device := apple_device())
    assert [r.outcome for r in pushes(post["id"], device)] == ["delivered"]
    assert deploy("deploys/eas.py").returncode == 0


def service_times(on: SshRunner, host: str) -> tuple[int, int]:
    """(when mattermost last went down, when it was up again): CLOCK_MONOTONIC microseconds,
    one clock for every lab host (they share the kernel)."""
    out = on(
        host,
        "systemctl show mattermost -p InactiveEnterTimestampMonotonic "
        "-p ActiveEnterTimestampMonotonic",
    ).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return int(values["InactiveEnterTimestampMonotonic"]), int(
        values["ActiveEnterTimestampMonotonic"]
    )


def test_restarts_go_one_server_at_a_time(fleet: dict[str, Any], on: SshRunner) -> None:
    try:
        result = deploy("deploys/eas.py", "push_contents=full")
        assert result.returncode == 0, result.stderr[-2000:]
        windows = sorted(service_times(on, mm) for mm in SERVERS)
        for (_, up), (down, _) in itertools.pairwise(windows):
            assert down >= up, f"a restart began before the previous server was back: {windows}"
    finally:
        assert deploy("deploys/eas.py").returncode == 0


def test_restarts_stop_at_the_first_server_that_does_not_come_back(
    fleet: dict[str, Any], on: SshRunner
) -> None:
    """mm1 and mm4 cannot start any more: whichever of them restarts first does not come back,
    and the other is not restarted at all (it keeps running). pyinfra picks the order."""
    dropin = "/etc/systemd/system/mattermost.service.d/mmpush-test-broken.conf"
    broken = ("mm1", "mm4")
    for host in broken:
        on(
            host,
            f"mkdir -p $(dirname {dropin}) && printf '[Service]\\nExecStartPre=/bin/false\\n'"
            f" > {dropin} && systemctl daemon-reload",
        )
    pids = {
        h: on(h, "systemctl show -p MainPID --value mattermost").stdout.strip() for h in SERVERS
    }
    try:
        result = deploy("deploys/eas.py", "push_contents=full")
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "mattermost did not come back after the restart" in output
        now = {
            h: on(h, "systemctl show -p MainPID --value mattermost").stdout.strip() for h in SERVERS
        }
        down = [h for h in broken if now[h] in ("", "0")]
        kept = [h for h in broken if now[h] == pids[h]]
        assert len(down) == 1 and len(kept) == 1, (pids, now)
        assert f"{down[0]} did not come back after its restart" in output
        assert re.search(rf"\[{kept[0]}\].*was not restarted", output), output[-3000:]
        assert on(kept[0], "systemctl is-active mattermost").stdout.strip() == "active"
    finally:
        for host in broken:
            on(host, f"rm -f {dropin} && systemctl daemon-reload && systemctl restart mattermost")
        assert deploy("deploys/eas.py").returncode == 0


def test_the_root_path_still_works(fleet: dict[str, Any], on: SshRunner) -> None:
    """Sites that connect as root (no sudo) keep working: push1 and mm1 let root in for the
    length of this test, and the deploy and the verify suite run as root."""
    dropin = "/etc/ssh/sshd_config.d/00-mmpush-test-root.conf"
    hosts = ("mm1", "mm4", "mm5", "push1")
    for host in hosts:
        on(host, f"echo 'PermitRootLogin prohibit-password' > {dropin} && systemctl reload ssh")
    try:
        as_root = ("ssh_user=root", "_sudo=false")
        result = deploy("deploys/eas.py", *as_root, "push_contents=full", extra=("--limit", "mm1"))
        assert result.returncode == 0, result.stderr[-2000:]
        assert grand_total(result)["success"] >= 1
        assert "full" in on("mm1", f"grep PushNotificationContents {CONFIG}").stdout
        again = deploy("deploys/eas.py", *as_root, extra=("--limit", "push1"))
        assert again.returncode == 0 and grand_total(again)["success"] == 0, again.stderr[-2000:]
    finally:
        for host in hosts:
            on(host, f"rm -f {dropin} && systemctl reload ssh")
        assert deploy("deploys/eas.py").returncode == 0
    refused = subprocess.run(
        ["ssh", "-F", fleet["ssh"]["config"], "-l", "root", "mm1", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 255, "root may not log in again"


# --- a production run from the shipped inventory, on a control node without root ------------


def as_user(command: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with bash as the unprivileged ops user, in ``cwd``."""
    return subprocess.run(
        [
            shutil.which("runuser") or "/usr/sbin/runuser",
            "-u",
            OPS_USER,
            "--",
            "bash",
            "-c",
            command,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": f"/home/{OPS_USER}",
            "LANG": "C.UTF-8",
            # the wheels install-deps prepared: the control node installs without PyPI
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(REPO / ".cache" / "wheelhouse"),
        },
    )


@pytest.fixture
def ops_user() -> Iterator[Path]:
    """A user without root and its home: the control node of this test."""
    subprocess.run(["userdel", "-r", OPS_USER], capture_output=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", OPS_USER], check=True)
    home = Path(f"/home/{OPS_USER}")
    try:
        yield home
    finally:
        subprocess.run(["pkill", "-u", OPS_USER], capture_output=True)
        subprocess.run(["userdel", "-r", OPS_USER], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def give(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """A file of the ops user's (in a directory of theirs, private)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.chown(path.parent, OPS_USER, OPS_USER)
    path.write_bytes(data)
    path.chmod(mode)
    shutil.chown(path, OPS_USER, OPS_USER)
    return path


def fill_placeholders(path: Path, values: dict[str, str]) -> None:
    """Replace each ``"CHANGE-ME: ..."`` string of a group_data file by the site's value, as an
    admin edits it: each is found by what it is for (the start of its hint)."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    spans = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for hint, value in values.items():
                if node.value.startswith(f"CHANGE-ME: {hint}"):
                    start = offsets[node.lineno - 1] + node.col_offset
                    end = offsets[(node.end_lineno or node.lineno) - 1] + (node.end_col_offset or 0)
                    spans.append((start, end, hint, json.dumps(value)))
    assert sorted(h for *_, h, _ in spans) == sorted(values), (path.name, spans)
    for start, end, _, replacement in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[end:]
    left = [
        node.value
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Constant) and str(node.value).startswith("CHANGE-ME")
    ]
    assert not left, f"{path.name} still has placeholders: {left}"
    path.write_text(text)


def test_a_first_production_run_from_the_shipped_inventory_as_a_user_without_root(
    fleet: dict[str, Any], ops_user: Path
) -> None:
    toolkit = ops_user / "toolkit"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO / name
        if source.is_file():
            target = toolkit / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["chown", "-R", f"{OPS_USER}:{OPS_USER}", str(ops_user)], check=True)

    # 1. the control node: README's `make install`, no root
    install = as_user("make install", toolkit)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (
        "root"
        not in subprocess.run(
            ["stat", "-c", "%U", str(toolkit / ".venv")], capture_output=True, text=True
        ).stdout
    )

    # 2. what the site brings, on the control node, private to its admin
    fixtures = fleet["fixtures"]
    secrets_dir = ops_user / "secrets"
    key = give(secrets_dir / "id_ed25519", Path(fleet["ssh"]["key"]).read_bytes())
    known = give(secrets_dir / "known_hosts", Path(fleet["ssh"]["known_hosts"]).read_bytes())
    bundle = give(secrets_dir / "lab-ca.pem", Path(fleet["acme"]["ca_bundle"]).read_bytes())
    apns = give(secrets_dir / "AuthKey_LABKEY0001.p8", Path(fixtures["apns_key"]).read_bytes())
    fcm = give(secrets_dir / "fcm.json", Path(fixtures["fcm_service_account"]).read_bytes())
    archive = give(
        secrets_dir / "mattermost-push-proxy.tar.gz", Path(fixtures["archive"]).read_bytes()
    )

    # 3. the site, copied the way the README says, filled in the documented places only
    copied = as_user("cp -r inventories/prod inventories/labsite", toolkit)
    assert copied.returncode == 0, copied.stderr
    site = toolkit / "inventories" / "labsite"
    ssh = {
        "ssh_user": "deploy",
        "_sudo": True,
        "ssh_key": str(key),
        "ssh_known_hosts_file": str(known),
        "ssh_strict_host_key_checking": "yes",
    }
    ips = {h["name"]: h["ip"] for h in fleet["hosts"]}
    inventory = (site / "inventory.py").read_text()
    inventory = inventory.replace(
        '("mm1.example.com", {**_ssh}),\n    ("mm2.example.com", {**_ssh}),',
        f'("mm1", {{**_ssh, "ssh_hostname": "{ips["mm1"]}"}}),',
    ).replace(
        '("push1.example.com", {**_ssh}),',
        f'("push1", {{**_ssh, "ssh_hostname": "{ips["push1"]}"}}),',
    )
    inventory = inventory.replace('_ssh = {"ssh_user": "deploy", "_sudo": True}', f"_ssh = {ssh!r}")
    assert inventory.count("ssh_hostname") == 2, inventory
    (site / "inventory.py").write_text(inventory)
    fill_placeholders(site / "group_data" / "all.py", {"the push proxy's": "push.lab.test"})
    with (site / "group_data" / "all.py").open("a") as extra:
        extra.write(
            f'acme_directory_url = "{fleet["acme"]["directory_url"]}"\n'
            f'acme_ca_bundle = "{bundle}"\n'
        )
    fill_placeholders(
        site / "group_data" / "push_proxies.py",
        {
            "the sha256 of": fixtures["sha256"],
            "your iOS app's bundle id": "com.mattermost.rnbeta",
            "path on this control node to AuthKey": str(apns),
            "the 10-character key id": "LABKEY0001",
            "your 10-character Apple": "LABTEAM001",
            "path on this control node to the FCM": str(fcm),
        },
    )
    with (site / "group_data" / "push_proxies.py").open("a") as extra:
        extra.write(f'push_proxy_archive = "{archive}"\n')
    subprocess.run(["chown", "-R", f"{OPS_USER}:{OPS_USER}", str(site)], check=True)

    # 4. README's production commands, as printed, in the activated venv
    site_inventory = "inventories/labsite/inventory.py"
    checked = as_user(f". .venv/bin/activate && mmpush check {site_inventory}", toolkit)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 hosts, 0 with invalid settings" in checked.stdout
    dry = as_user(f". .venv/bin/activate && pyinfra {site_inventory} deploys/eas.py --dry", toolkit)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    run = as_user(f". .venv/bin/activate && pyinfra -y {site_inventory} deploys/eas.py", toolkit)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    again = as_user(f". .venv/bin/activate && pyinfra -y {site_inventory} deploys/eas.py", toolkit)
    assert again.returncode == 0 and grand_total(again)["success"] == 0, again.stdout[-3000:]
    report = ops_user / "verify.xml"
    verified = as_user(
        f". .venv/bin/activate && pytest -q -p no:cacheprovider tests/verify "
        f"--inventory {site_inventory} --junitxml={report}",
        toolkit,
    )
    assert verified.returncode == 0, verified.stdout[-4000:]
    outcomes = parse_junit(report.read_text())
    ran = {f"{o.module}::{o.name}" for o in outcomes if o.outcome == "passed"}
    assert {o.outcome for o in outcomes} <= {"passed", "skipped"}
    assert "test_eas.py::test_every_app_types_credentials_are_accepted[push1]" in ran
    assert "test_modes.py::test_mattermost_config_holds_the_push_values_of_the_mode[mm1]" in ran
    # only the outbound proxy's checks (no such host at this site) and the off-mode check
    # and the two push-front checks that do not apply to this site: its
    # push_front_allowed_networks is empty and its certificate comes from ACME, not files
    not_applicable = {
        "test_eas.py::test_clients_outside_the_allowed_networks_are_refused[push1]",
        "test_eas.py::test_push_certificate_files_are_not_about_to_expire[push1]",
    }
    assert all(
        (o.module == "test_outbound_proxy.py" and o.name.endswith("[none]"))
        or o.name.startswith("test_off_mode")
        or f"{o.module}::{o.name}" in not_applicable
        for o in outcomes
        if o.outcome == "skipped"
    ), sorted(f"{o.module}::{o.name}" for o in outcomes if o.outcome == "skipped")
    # the control node never needed root: everything it made belongs to the ops user
    owners = subprocess.run(
        ["find", str(ops_user), "!", "-user", OPS_USER], capture_output=True, text=True
    ).stdout
    assert owners.strip() == "", owners


def test_the_lab_still_verifies_with_all_its_servers(fleet: dict[str, Any]) -> None:
    verify().assert_passed(lab_skips("eas", mattermost=(*SERVERS, "mm2", "mm3")))
