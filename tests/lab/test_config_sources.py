"""Mattermost servers wherever their configuration lives, on the lab: mm1 keeps it in
config.json; mm2 and mm3 are a cluster whose configuration is in PostgreSQL on db1
(MM_CONFIG), with local mode on. Every mode's deploy changes mm1 through its file and the
cluster once through the config API, and a second run changes nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from mmpush.mmapi import MattermostClient
from tests.lab.helpers import (
    SshRunner,
    android_device,
    apple_device,
    deploy,
    grand_total,
    lab_skips,
    mmpush,
    pushes,
    send_dm,
    verify,
)

pytestmark = pytest.mark.lab

CONFIG = "/opt/mattermost/config/config.json"
SOCKET = "/var/tmp/mattermost_local.socket"
CLUSTER = ("mm2", "mm3")
MODES = [
    ("deploys/eas.py", (), "https://push.lab.test"),
    ("deploys/hpns.py", ("push_mode=hpns",), "https://outbound.internal.test:8000"),
    ("deploys/tpns.py", ("push_mode=tpns",), "https://push-test.mattermost.com"),
    ("deploys/off.py", ("push_mode=off",), ""),
]


@pytest.fixture(scope="module")
def sources_lab(lab: dict[str, Any]) -> dict[str, Any]:
    up = mmpush("lab", "up")
    assert up.returncode == 0, up.stderr[-3000:]
    return json.loads(mmpush("lab", "status", "--json").stdout)


def configuration_rows(on: SshRunner) -> int:
    """How many configurations the cluster's store holds (each save adds an active row)."""
    # Mattermost creates it unquoted (CREATE TABLE Configurations): PostgreSQL folds the name
    query = "SELECT count(*) FROM configurations;"
    out = on("db1", "runuser -u postgres -- psql -v ON_ERROR_STOP=1 -tA -d mattermost", input=query)
    return int(out.stdout.strip())


def api_config(on: SshRunner, host: str) -> dict[str, Any]:
    """What the server's config API says now (over its local-mode socket)."""
    out = on(host, f"curl -sS --fail --unix-socket {SOCKET} http://localhost/api/v4/config")
    return json.loads(out.stdout)


def main_pid(on: SshRunner, host: str) -> str:
    return on(host, "systemctl show -p MainPID --value mattermost").stdout.strip()


def test_every_mode_changes_the_file_on_mm1_and_the_cluster_once_through_the_api(
    sources_lab: dict[str, Any], on: SshRunner
) -> None:
    pids = {h: main_pid(on, h) for h in CLUSTER}
    for deploy_file, data, url in [*MODES, MODES[0]]:
        rows = configuration_rows(on)
        result = deploy(deploy_file, *data)
        output = result.stdout + result.stderr
        assert result.returncode == 0, (deploy_file, output[-3000:])
        # one save of the shared configuration for the whole cluster
        assert configuration_rows(on) == rows + 1, deploy_file
        assert output.count("patched through the local-mode socket") == 1, output[-3000:]
        for host in CLUSTER:
            email = api_config(on, host)["EmailSettings"]
            assert email["PushNotificationServer"] == url, (deploy_file, host)
            assert email["SendPushNotifications"] is (url != ""), (deploy_file, host)
        mm1 = json.loads(on("mm1", f"cat {CONFIG}").stdout)["EmailSettings"]
        assert mm1["PushNotificationServer"] == url, deploy_file
        again = deploy(deploy_file, *data)
        assert again.returncode == 0 and grand_total(again)["success"] == 0, again.stdout[-3000:]
        assert configuration_rows(on) == rows + 1
        mode = next((d.split("=")[1] for d in data if d.startswith("push_mode=")), "eas")
        verify(*data).assert_passed(lab_skips(mode, mattermost=("mm1", *CLUSTER)))
    # applied live: the cluster's servers were never restarted
    assert {h: main_pid(on, h) for h in CLUSTER} == pids


def test_a_dm_on_the_cluster_is_pushed_through_the_modes_path(
    sources_lab: dict[str, Any], on: SshRunner
) -> None:
    assert deploy("deploys/eas.py").returncode == 0
    for mm in CLUSTER:
        device = apple_device()
        post = send_dm(sources_lab, f"from {mm}", device, mm=mm)
        assert [r.outcome for r in pushes(post["id"], device)] == ["delivered"], mm
    sent = mmpush("lab", "send-dm", "--host", "mm2", "--device", android_device(7), "Hi")
    assert sent.returncode == 0, sent.stderr
    assert "push proxy on push1: delivered" in sent.stdout


def test_verify_names_mm2_when_its_configuration_changes_behind_the_deploys_back(
    sources_lab: dict[str, Any], on: SshRunner
) -> None:
    assert deploy("deploys/eas.py").returncode == 0
    patch = {"EmailSettings": {"PushNotificationServer": "https://elsewhere.example"}}
    on(
        "mm2",
        f"curl -sS --fail --unix-socket {SOCKET} -X PUT -H 'Content-Type: application/json' "
        "--data-binary @- http://localhost/api/v4/config/patch >/dev/null",
        input=json.dumps(patch),
    )
    try:
        result = verify()
        assert result.returncode != 0
        assert (
            "test_modes.py::test_mattermost_config_holds_the_push_values_of_the_mode[mm2]"
            in result.failures_naming("mm2")
        )
        [mm2] = [o for o in result.outcomes if o.name.endswith("[mm2]") and o.outcome == "failed"]
        assert "config API" in mm2.message and "elsewhere.example" in mm2.message
    finally:
        assert deploy("deploys/eas.py").returncode == 0
    verify().assert_passed(lab_skips("eas", mattermost=("mm1", *CLUSTER)))


def refused_before_any_change(
    result: Any, on: SshRunner, rows: int, mm1_before: str, *texts: str
) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for text in texts:
        assert text in output, (text, output[-3000:])
    assert "Starting operation" not in output and "Traceback" not in output
    assert configuration_rows(on) == rows
    assert on("mm1", f"sha256sum {CONFIG}").stdout == mm1_before


@pytest.fixture
def before(sources_lab: dict[str, Any], on: SshRunner) -> tuple[int, str]:
    assert deploy("deploys/eas.py").returncode == 0
    return configuration_rows(on), on("mm1", f"sha256sum {CONFIG}").stdout


def test_a_database_configuration_without_socket_or_token_is_refused(
    before: tuple[int, str], on: SshRunner
) -> None:
    result = deploy(
        "deploys/eas.py", "push_contents=full", "mattermost_local_socket=/run/no-such.socket"
    )
    refused_before_any_change(result, on, *before, "mattermost_admin_token", "config API")
    assert (
        "host mm2" in result.stdout + result.stderr or "host mm3" in result.stdout + result.stderr
    )


def test_a_rejected_token_is_refused(before: tuple[int, str], on: SshRunner) -> None:
    os.environ["MMPUSH_TEST_BAD_TOKEN"] = "not-a-real-token-0123456789"
    result = deploy(
        "deploys/eas.py",
        "push_contents=full",
        "mattermost_local_socket=/run/no-such.socket",
        "mattermost_api_url=http://10.77.44.16:8065",  # mm2 (the control node has no lab DNS)
        "mattermost_admin_token=env:MMPUSH_TEST_BAD_TOKEN",
    )
    refused_before_any_change(result, on, *before, "mattermost_admin_token", "rejected")
    assert "not-a-real-token" not in result.stdout + result.stderr


def test_an_unreachable_api_is_refused(before: tuple[int, str], on: SshRunner) -> None:
    os.environ["MMPUSH_TEST_TOKEN"] = "unused-0123456789"
    result = deploy(
        "deploys/eas.py",
        "push_contents=full",
        "mattermost_local_socket=/run/no-such.socket",
        "mattermost_api_url=http://10.77.44.16:9",
        "mattermost_admin_token=env:MMPUSH_TEST_TOKEN",
    )
    refused_before_any_change(result, on, *before, "cannot reach", "mattermost_admin_token")


@pytest.fixture
def mm3_on_its_own_database(on: SshRunner) -> Iterator[None]:
    """mm3 repointed at a database of its own: declared in one cluster with mm2, it no longer
    shares mm2's configuration (a site's misconfiguration)."""
    env = "/etc/mattermost/db.env"
    on("db1", "runuser -u postgres -- psql -q -c 'CREATE DATABASE mattermost_alone OWNER mmuser'")
    on("mm3", f"cp -p {env} /root/db.env.orig && sed -i 's#/mattermost?#/mattermost_alone?#' {env}")
    try:
        on("mm3", "systemctl restart mattermost")
        yield
    finally:
        on("mm3", f"cp -p /root/db.env.orig {env} && systemctl restart mattermost")
        on("db1", "runuser -u postgres -- psql -q -c 'DROP DATABASE mattermost_alone'")


def test_cluster_nodes_that_disagree_are_refused_naming_them(
    before: tuple[int, str], on: SshRunner, mm3_on_its_own_database: None
) -> None:
    result = deploy("deploys/eas.py", "push_contents=full", "mattermost_cluster=mmlab")
    refused_before_any_change(result, on, *before, "mm2", "mm3", "do not share one configuration")


def test_the_token_path_changes_the_cluster(sources_lab: dict[str, Any], on: SshRunner) -> None:
    """Without the socket, through mattermost_api_url with a system admin's token."""
    mm2 = next(h for h in sources_lab["hosts"] if h["name"] == "mm2")
    client = MattermostClient(f"http://{mm2['ip']}:8065")
    session, admin = client.login("sysadmin")
    client.patch_config(session, {"ServiceSettings": {"EnableUserAccessTokens": True}})
    os.environ["MMPUSH_TEST_ADMIN_TOKEN"] = client.create_access_token(session, "mmpush")["token"]
    token_data = (
        "mattermost_local_socket=/run/no-such.socket",
        f"mattermost_api_url=http://{mm2['ip']}:8065",
        "mattermost_admin_token=env:MMPUSH_TEST_ADMIN_TOKEN",
    )
    rows = configuration_rows(on)
    try:
        result = deploy("deploys/eas.py", "push_contents=full", *token_data)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert configuration_rows(on) == rows + 1
        assert os.environ["MMPUSH_TEST_ADMIN_TOKEN"] not in result.stdout + result.stderr
        for host in CLUSTER:
            assert api_config(on, host)["EmailSettings"]["PushNotificationContents"] == "full"
        again = deploy("deploys/eas.py", "push_contents=full", *token_data)
        assert grand_total(again)["success"] == 0, again.stdout[-3000:]
    finally:
        assert deploy("deploys/eas.py").returncode == 0
    assert admin["username"] == "sysadmin"


def test_a_server_without_licence_gets_warnings_naming_it(
    sources_lab: dict[str, Any], on: SshRunner
) -> None:
    license_file = "/opt/mattermost/data/license.json"
    on("mm1", f"mv {license_file} /root/license.json")
    try:
        result = deploy(
            "deploys/hpns.py",
            "push_mode=hpns",
            "hpns_use_outbound_proxy=false",
            "push_contents=id_loaded",
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        warnings = [line for line in output.splitlines() if "[mm1]" in line and "licen" in line]
        assert any("HPNS" in w or "hosted" in w for w in warnings), warnings
        assert any("id_loaded" in w for w in warnings), warnings
        assert not [line for line in output.splitlines() if "[mm2]" in line and "licen" in line]
    finally:
        on("mm1", f"mv /root/license.json {license_file}")
        assert deploy("deploys/eas.py").returncode == 0
