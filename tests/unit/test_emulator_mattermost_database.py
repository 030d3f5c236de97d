"""The Mattermost server emulator with its configuration in PostgreSQL (MM_CONFIG or --config
holding a DSN): the Configurations table as config/database.go lays it out, the database and
file sources ignoring each other, the config API writing new active rows, and two emulators on
one database as a cluster. Each module starts its own throwaway PostgreSQL (unix socket only)."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import harness as h
from tests.unit.emulator_helpers import (
    FakePushService,
    MattermostEmulator,
    local_mode_answers,
    postgres_for_tests,
    refused_mattermost_start,
    running_mattermost,
    short_temp_dir,
    write_mattermost_config,
)

PASSWORD = "db-secret-7f3a"
DEVICE_ID = "apple_rn-v2:63c06ca8e3949ca7e5996c31fcf07ecb36c658a3e7c2c227a4af949cc4777a87"
CLUSTER_LICENSE = {"id": "lic0002", "sku_short_name": "enterprise", "features": {"cluster": True}}
_names = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[h.PostgresCluster]:
    with postgres_for_tests() as cluster:
        yield cluster


@pytest.fixture
def dsn(postgres: h.PostgresCluster) -> str:
    """A new empty database for one test, owned by mmuser; its lib/pq DSN."""
    return postgres.create_database(f"mattermost{next(_names)}", "mmuser", PASSWORD)


def database_name(dsn: str) -> str:
    return dsn.split("@/", 1)[1].split("?", 1)[0]


def rows(postgres: h.PostgresCluster, dsn: str) -> list[tuple[Any, ...]]:
    """Configurations rows, oldest first: (Id, Value, CreateAt, Active, SHA)."""
    return postgres.execute(
        "SELECT Id, Value, CreateAt, Active, SHA FROM Configurations ORDER BY CreateAt, Id",
        database=database_name(dsn),
    )


def active_config(postgres: h.PostgresCluster, dsn: str) -> dict[str, Any]:
    [[value]] = postgres.execute(
        "SELECT Value FROM Configurations WHERE Active", database=database_name(dsn)
    )
    return json.loads(value)


def set_active_config(postgres: h.PostgresCluster, dsn: str, config: dict[str, Any]) -> None:
    """Write a new active row by hand, as an admin or a previous server would have."""
    name = database_name(dsn)
    postgres.execute("UPDATE Configurations SET Active = NULL WHERE Active", database=name)
    postgres.execute(
        "INSERT INTO Configurations (Id, Value, CreateAt, Active, SHA) "
        "VALUES (%s, %s, (extract(epoch from now()) * 1000)::bigint, TRUE, '')",
        ("manual" + str(next(_names)).rjust(20, "0"), json.dumps(config, indent=4)),
        database=name,
    )


@contextlib.contextmanager
def db_mattermost(
    workdir: Path,
    dsn: str,
    *args: str,
    env: dict[str, str] | None = None,
    license_: dict[str, Any] | None = None,
    use_flag: bool = False,
) -> Iterator[MattermostEmulator]:
    """An emulator on the database ``dsn`` (MM_CONFIG, or --config with ``use_flag``), listening
    on a free port and with local mode on, both set through environment overrides."""
    port = h.free_port()
    with short_temp_dir() as sockets:
        socket_path = sockets / "mm.sock"
        full_env = {
            "MM_SERVICESETTINGS_LISTENADDRESS": f"127.0.0.1:{port}",
            "MM_SERVICESETTINGS_ENABLELOCALMODE": "true",
            "MM_SERVICESETTINGS_LOCALMODESOCKETLOCATION": str(socket_path),
            "MM_LOGSETTINGS_CONSOLELEVEL": "ERROR",
            "MM_NOTIFICATIONLOGSETTINGS_CONSOLELEVEL": "ERROR",
            **(env or {}),
        }
        if use_flag:
            args = ("--config", dsn, *args)
        else:
            full_env["MM_CONFIG"] = dsn
        if license_ is not None:
            (workdir / "data").mkdir(parents=True, exist_ok=True)
            (workdir / "data" / "license.json").write_text(json.dumps(license_))
        with running_mattermost(workdir, port, *args, env=full_env, socket_path=socket_path) as mm:
            h.wait_for(lambda: local_mode_answers(socket_path), what="the local-mode socket")
            yield mm


def patch(mm: MattermostEmulator, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = mm.local("PUT", "/api/v4/config/patch", body)
    assert status == 200, answer
    return answer


# --------------------------------------------------------------------------------------------


def test_an_empty_database_is_initialised_as_the_real_store_does(
    postgres: h.PostgresCluster, dsn: str, tmp_path: Path
) -> None:
    # A config.json in the working directory must not matter to a database-configured server.
    write_mattermost_config(tmp_path / "config" / "config.json", 1, "http://file.invalid")
    with db_mattermost(tmp_path, dsn) as mm:
        assert mm.config_value("EmailSettings.PushNotificationServer") == ""
        [loaded] = [line for line in mm.log_lines() if line["msg"] == "Loaded config"]
    tables = {
        name
        for (name,) in postgres.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            database=database_name(dsn),
        )
    }
    assert {"configurations", "configurationfiles", "db_config_migrations"} <= tables
    [[count]] = postgres.execute(
        "SELECT count(*) FROM db_config_migrations", database=database_name(dsn)
    )
    assert count == 3
    [(row_id, value, create_at, active, sha)] = rows(postgres, dsn)
    stored = json.loads(value)
    assert len(row_id) == 26 and create_at > 0 and active is True and len(sha.strip()) == 64
    # database.go Load: the first config names its own database; environment overrides
    # (ListenAddress, local mode) are never stored.
    assert stored["SqlSettings"]["DataSource"] == dsn
    assert stored["ServiceSettings"]["ListenAddress"] == ":8065"
    assert stored["ServiceSettings"]["EnableLocalMode"] is False
    assert PASSWORD not in loaded["source"]
    assert PASSWORD not in mm.log_text()
    assert not (tmp_path / "data" / "emulator-db.json").exists()  # users live in the database


def test_the_dsn_in_the_config_flag_works_like_mm_config(
    postgres: h.PostgresCluster, dsn: str, tmp_path: Path
) -> None:
    with db_mattermost(tmp_path, dsn, use_flag=True) as mm:
        patch(mm, {"EmailSettings": {"PushNotificationServer": "https://flag.invalid"}})
    assert active_config(postgres, dsn)["EmailSettings"]["PushNotificationServer"] == (
        "https://flag.invalid"
    )


def test_the_active_row_is_the_config_and_the_environment_wins_over_it(
    postgres: h.PostgresCluster, dsn: str, tmp_path: Path
) -> None:
    with db_mattermost(tmp_path / "first", dsn):
        pass
    config = active_config(postgres, dsn)
    config["EmailSettings"].update(
        SendPushNotifications=True,
        PushNotificationServer="https://row.invalid",
        PushNotificationContents="generic",
    )
    set_active_config(postgres, dsn, config)
    env = {"MM_EMAILSETTINGS_PUSHNOTIFICATIONCONTENTS": "id_loaded"}
    with db_mattermost(tmp_path / "second", dsn, env=env) as mm:
        status, effective = mm.local("GET", "/api/v4/config")
    assert status == 200
    assert effective["EmailSettings"]["PushNotificationServer"] == "https://row.invalid"
    assert effective["EmailSettings"]["PushNotificationContents"] == "id_loaded"
    assert effective["SqlSettings"]["DataSource"] == "*" * 32


def test_a_file_configured_server_ignores_the_database(
    postgres: h.PostgresCluster, dsn: str, tmp_path: Path
) -> None:
    port = h.free_port()
    config = write_mattermost_config(
        tmp_path / "config.json",
        port,
        "http://file.invalid",
        **{"SqlSettings.DataSource": dsn},  # the data source is the database, not the config
    )
    with running_mattermost(tmp_path, port, "--config", str(config)) as mm:
        assert mm.config_value("EmailSettings.PushNotificationServer") == "http://file.invalid"
        status, _ = mm.call(
            "PUT",
            "/api/v4/config/patch",
            mm.admin_token(),
            {"EmailSettings": {"PushNotificationServer": "https://patched.invalid"}},
        )
        assert status == 200
    tables = postgres.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        database=database_name(dsn),
    )
    assert tables == []  # no Configurations table: nothing was read or written there
    stored = json.loads(config.read_text())
    assert stored["EmailSettings"]["PushNotificationServer"] == "https://patched.invalid"


def test_a_patch_writes_a_new_active_row_and_keeps_the_others(
    postgres: h.PostgresCluster, dsn: str, tmp_path: Path
) -> None:
    with db_mattermost(tmp_path, dsn) as mm:
        answer = patch(
            mm,
            {"EmailSettings": {"SendPushNotifications": True, "PushNotificationServer": "x:/y"}},
        )
        assert answer["EmailSettings"]["PushNotificationServer"] == "x:/y"
        same = patch(mm, {"EmailSettings": {"PushNotificationServer": "x:/y"}})  # no change
        assert same["EmailSettings"] == answer["EmailSettings"]
        token = mm.admin_token()  # the HTTP API writes the same way
        status, _ = mm.call(
            "PUT",
            "/api/v4/config/patch",
            token,
            {"EmailSettings": {"PushNotificationContents": "generic"}},
        )
        assert status == 200
    history = rows(postgres, dsn)
    assert [row[3] for row in history] == [None, None, True]
    first, second, third = (json.loads(row[1]) for row in history)
    assert first["EmailSettings"]["SendPushNotifications"] is False
    assert second["EmailSettings"]["PushNotificationServer"] == "x:/y"
    assert third["EmailSettings"]["PushNotificationContents"] == "generic"
    assert third["SqlSettings"]["DataSource"] == dsn  # stored unmasked, as the real one does


def test_an_unreachable_database_is_refused_without_showing_the_password(tmp_path: Path) -> None:
    with short_temp_dir() as nowhere:
        dsn = f"postgres://mmuser:{PASSWORD}@/mattermost?host={nowhere}&connect_timeout=2"
        stderr = refused_mattermost_start(tmp_path, env={"MM_CONFIG": dsn})
    assert "failed to connect to postgres database" in stderr
    assert PASSWORD not in stderr
    assert "****" in stderr


def test_a_mysql_dsn_is_refused_as_unsupported(tmp_path: Path) -> None:
    stderr = refused_mattermost_start(
        tmp_path, "--config", "mysql://mmuser:pw@tcp(localhost:3306)/mattermost"
    )
    assert "supports PostgreSQL only" in stderr


def test_two_nodes_of_a_cluster_see_each_others_changes(
    postgres: h.PostgresCluster, dsn: str, tmp_path: Path
) -> None:
    cluster = {"MM_CLUSTERSETTINGS_ENABLE": "true", "MM_CLUSTERSETTINGS_CLUSTERNAME": "lab"}
    with (
        FakePushService() as push,
        db_mattermost(tmp_path / "mm2", dsn, env=cluster, license_=CLUSTER_LICENSE) as mm2,
        db_mattermost(tmp_path / "mm3", dsn, env=cluster, license_=CLUSTER_LICENSE) as mm3,
    ):
        patch(
            mm2,
            {"EmailSettings": {"SendPushNotifications": True, "PushNotificationServer": push.url}},
        )
        h.wait_for(
            lambda: mm3.config_value("EmailSettings.PushNotificationServer") == push.url,
            what="mm3 seeing mm2's change",
        )
        patch(mm3, {"EmailSettings": {"PushNotificationContents": "generic"}})
        h.wait_for(
            lambda: mm2.config_value("EmailSettings.PushNotificationContents") == "generic",
            what="mm2 seeing mm3's change",
        )
        # Users, sessions and devices are shared too: a phone registered through mm2 gets the
        # push of a message posted through mm3, built with the config both nodes now share.
        token_b, user_b = mm2.login("accountb", device_id=DEVICE_ID)
        token_a, user_a = mm3.login("accounta")
        assert mm3.call("GET", "/api/v4/users/me", token_b)[1]["id"] == user_b["id"]
        _, channel = mm3.call(
            "POST", "/api/v4/channels/direct", token_a, [user_a["id"], user_b["id"]]
        )
        status, post = mm3.call(
            "POST", "/api/v4/posts", token_a, {"channel_id": channel["id"], "message": "ha"}
        )
        assert status == 201
        [body] = h.wait_for(lambda: push.pushes(post["id"]), what="the push from mm3")
    assert body["message"] == "sent you a message."
    assert [row[3] for row in rows(postgres, dsn)].count(True) == 1


def test_the_server_reconnects_after_the_database_restarts(
    postgres: h.PostgresCluster, dsn: str, tmp_path: Path
) -> None:
    with db_mattermost(tmp_path, dsn) as mm:
        patch(mm, {"TeamSettings": {"SiteName": "before"}})
        postgres.restart()

        def patched() -> bool:
            status, _ = mm.local("PUT", "/api/v4/config/patch", {"TeamSettings": {"SiteName": "x"}})
            return status == 200

        h.wait_for(patched, what="a patch after the database restarted")
        assert mm.login("accounta")[1]["username"] == "accounta"
    assert active_config(postgres, dsn)["TeamSettings"]["SiteName"] == "x"
