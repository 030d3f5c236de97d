"""Where a Mattermost server's configuration lives: the detection command, run here against a
fake ``systemctl`` (and real processes for a running unit), and the parsing of its output."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mmpush.mattermost.source import (
    ConfigSource,
    DsnIdentity,
    config_source_command,
    parse_config_source,
    source_problem,
)
from tests.emulators import harness as h
from tests.unit.emulator_helpers import short_temp_dir

SECRETS = ("s3cret", "mmuser", "pa55", "zz-param")  # must never be printed

FAKE_SYSTEMCTL = """#!/bin/sh
d={state}
if [ "$1" = show-environment ]; then cat "$d/manager-env" 2>/dev/null; exit 0; fi
if [ "$1" = show ]; then
  if [ "$2" != "$(cat "$d/unit")" ]; then [ "$4" = LoadState ] && echo not-found; exit 0; fi
  cat "$d/$4" 2>/dev/null
  exit 0
fi
exit 1
"""


@dataclass
class FakeUnit:
    """A systemd unit as ``systemctl show`` / ``show-environment`` report it, and a run of the
    detection command against it (as root, with a fake systemctl first on PATH)."""

    root: Path
    name: str = "mattermost"
    props: dict[str, str] = field(default_factory=dict)
    manager_env: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = self.root / "systemd"
        self.bin = self.root / "fakebin"
        self.state.mkdir(parents=True)
        self.bin.mkdir()
        systemctl = self.bin / "systemctl"
        systemctl.write_text(FAKE_SYSTEMCTL.format(state=self.state))
        systemctl.chmod(0o755)
        self.props.setdefault("LoadState", "loaded")
        self.props.setdefault("MainPID", "0")
        self.exec_start("/opt/mattermost/bin/mattermost")
        self.props.setdefault("WorkingDirectory", "/opt/mattermost")

    def exec_start(self, argv: str, path: str | None = None) -> None:
        """ExecStart as systemctl show prints it (argv[] joined with spaces)."""
        binary = path or argv.split(" ")[0]
        self.props["ExecStart"] = (
            f"{{ path={binary} ; argv[]={argv} ; ignore_errors=no ; start_time=[n/a] ; "
            "stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
        )

    def env_file(self, name: str, text: str, flags: str = "no") -> Path:
        path = self.root / name
        path.write_text(text)
        files = self.props.get("EnvironmentFiles", "")
        line = f"{path} (ignore_errors={flags})"
        self.props["EnvironmentFiles"] = f"{files}\n{line}" if files else line
        return path

    def run(self, socket_path: str | None = None) -> list[str]:
        (self.state / "unit").write_text(self.name + "\n")
        for prop, value in self.props.items():
            (self.state / prop).write_text(value + "\n")
        (self.state / "manager-env").write_text("".join(f"{v}\n" for v in self.manager_env))
        command = (
            config_source_command("mattermost")
            if socket_path is None
            else config_source_command("mattermost", socket_path)
        )
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        done = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, env=env, timeout=30
        )
        assert done.returncode == 0, done.stderr
        for secret in SECRETS:
            assert secret not in done.stdout + done.stderr, (secret, done.stdout, done.stderr)
        return done.stdout.splitlines()

    def source(self, socket_path: str | None = None) -> ConfigSource:
        return parse_config_source(self.run(socket_path))


@pytest.fixture
def unit(tmp_path: Path) -> FakeUnit:
    return FakeUnit(tmp_path)


def db(scheme: str, host: str, port: str, dbname: str) -> DsnIdentity:
    return DsnIdentity(scheme, host, port, dbname)


# ---- the command line: --config / -c ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ("/opt/mattermost/bin/mattermost --config /etc/mm/a.json", "/etc/mm/a.json"),
        ("/opt/mattermost/bin/mattermost --config=/etc/mm/a.json", "/etc/mm/a.json"),
        ("/opt/mattermost/bin/mattermost -c /etc/mm/a.json", "/etc/mm/a.json"),
        ("/opt/mattermost/bin/mattermost -c=/etc/mm/a.json", "/etc/mm/a.json"),
        ("/opt/mattermost/bin/mattermost -c/etc/mm/a.json", "/etc/mm/a.json"),
        ("/opt/mattermost/bin/mattermost server --config /etc/mm/a.json", "/etc/mm/a.json"),
        (
            "/opt/mattermost/bin/mattermost -c /etc/mm/x.json --config /etc/mm/a.json",
            "/etc/mm/a.json",
        ),
    ],
)
def test_the_config_flag_in_exec_start_names_the_file(
    unit: FakeUnit, argv: str, expected: str
) -> None:
    unit.exec_start(argv)
    unit.props["Environment"] = "MM_CONFIG=/etc/mm/from-env.json"  # the flag wins
    source = unit.source()
    assert (source.kind, source.path) == ("file", expected)
    assert source.origin == "--config in the unit's ExecStart"


def test_an_empty_flag_or_one_after_double_dash_does_not_count(unit: FakeUnit) -> None:
    unit.props["Environment"] = "MM_CONFIG=/etc/mm/from-env.json"
    for argv in (
        "/opt/mattermost/bin/mattermost --config=",
        "/opt/mattermost/bin/mattermost -- --config /etc/mm/ignored.json",
    ):
        unit.exec_start(argv)
        assert unit.source().path == "/etc/mm/from-env.json"


def test_a_database_dsn_in_the_flag(unit: FakeUnit) -> None:
    unit.exec_start(
        "/opt/mattermost/bin/mattermost --config "
        "postgres://mmuser:s3cret@db1.example.com:5433/mattermost?sslmode=require&password=zz-param"
    )
    lines = unit.run()
    assert "database postgres db1.example.com 5433 mattermost" in lines
    source = parse_config_source(lines)
    assert source.identity == db("postgres", "db1.example.com", "5433", "mattermost")
    assert source.describe() == "the database postgres://db1.example.com:5433/mattermost"


def test_a_variable_in_exec_start_cannot_be_read_from_the_unit(unit: FakeUnit) -> None:
    unit.exec_start("/opt/mattermost/bin/mattermost --config ${MM_CFG}")
    source = unit.source()
    assert source.kind == "unknown"
    assert "variable" in source.reason


# ---- MM_CONFIG: unit Environment=, EnvironmentFile=, the manager ------------------------------


def test_mm_config_in_the_units_environment(unit: FakeUnit) -> None:
    unit.props["Environment"] = (
        '"LANG=C.UTF-8 x" MM_CONFIG=postgres://mmuser:s3cret@db1/mattermost OTHER=1'
    )
    source = unit.source()
    assert source.identity == db("postgres", "db1", "5432", "mattermost")
    assert source.origin == "MM_CONFIG in the unit's Environment="


def test_mm_config_quoted_in_the_units_environment(unit: FakeUnit) -> None:
    unit.props["Environment"] = '"MM_CONFIG=/etc/mm/with space.json" A=1'
    assert unit.source().path == "/etc/mm/with space.json"


def test_lower_case_mm_config_counts_because_go_upper_cases_names(unit: FakeUnit) -> None:
    unit.props["Environment"] = "mm_config=/etc/mm/lower.json"
    assert unit.source().path == "/etc/mm/lower.json"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MM_CONFIG=/etc/mm/plain.json\n", "/etc/mm/plain.json"),
        ('# comment\n; other comment\nMM_CONFIG="/etc/mm/dq.json"\n', "/etc/mm/dq.json"),
        ("MM_CONFIG='/etc/mm/sq.json'   \n", "/etc/mm/sq.json"),
        ("  MM_CONFIG = /etc/mm/spaces.json  \n", "/etc/mm/spaces.json"),
        ("MM_CONFIG=/etc/mm/first.json\nMM_CONFIG=/etc/mm/last.json", "/etc/mm/last.json"),
    ],
)
def test_mm_config_in_an_environment_file(unit: FakeUnit, text: str, expected: str) -> None:
    unit.props["Environment"] = "MM_CONFIG=/etc/mm/unit.json"  # the file wins
    path = unit.env_file("mattermost.env", text)
    source = unit.source()
    assert source.path == expected
    assert source.origin == f"MM_CONFIG in EnvironmentFile {path}"


def test_a_dsn_in_an_environment_file(unit: FakeUnit) -> None:
    unit.env_file(
        "mattermost.env",
        'MM_CONFIG="postgresql://mmuser:s3cret@10.0.0.5/mm_prod?connect_timeout=10"\n',
    )
    assert unit.source().identity == db("postgres", "10.0.0.5", "5432", "mm_prod")


def test_an_export_line_is_ignored_as_systemd_ignores_it(unit: FakeUnit) -> None:
    unit.props["Environment"] = "MM_CONFIG=/etc/mm/unit.json"
    path = unit.env_file("mattermost.env", "export MM_CONFIG=postgres://mmuser:s3cret@db1/mm\n")
    source = unit.source()
    assert source.path == "/etc/mm/unit.json"
    assert source.notes == (
        f"EnvironmentFile {path} has an 'export MM_CONFIG=' line, which systemd ignores",
    )


def test_later_environment_files_win_and_missing_optional_ones_are_skipped(
    unit: FakeUnit, tmp_path: Path
) -> None:
    unit.env_file("a.env", "MM_CONFIG=/etc/mm/a.json\n")
    second = unit.env_file("b.env", "MM_CONFIG=/etc/mm/b.json\n")
    unit.props["EnvironmentFiles"] += f"\n{tmp_path}/missing.env (ignore_errors=yes)"
    source = unit.source()
    assert (source.path, source.origin) == (
        "/etc/mm/b.json",
        f"MM_CONFIG in EnvironmentFile {second}",
    )


def test_the_managers_environment_is_used_last(unit: FakeUnit) -> None:
    unit.manager_env = ["PATH=/usr/bin", "MM_CONFIG=/etc/mm/manager.json"]
    source = unit.source()
    assert source.path == "/etc/mm/manager.json"
    assert "service manager" in source.origin
    unit.props["Environment"] = "MM_CONFIG=/etc/mm/unit.json"
    assert unit.source().path == "/etc/mm/unit.json"


def test_an_empty_mm_config_means_the_default(unit: FakeUnit, tmp_path: Path) -> None:
    (tmp_path / "opt" / "config").mkdir(parents=True)
    (tmp_path / "opt" / "config" / "config.json").write_text("{}")
    unit.props["WorkingDirectory"] = str(tmp_path / "opt")
    unit.props["Environment"] = "MM_CONFIG=postgres://mmuser:s3cret@db1/mattermost"
    unit.env_file("mattermost.env", "MM_CONFIG=\n")
    source = unit.source()
    assert source.path == str(tmp_path / "opt" / "config" / "config.json")
    assert source.origin.startswith("the default config.json (MM_CONFIG in EnvironmentFile")


# ---- relative paths, as config/file.go resolves them -------------------------------------------


def test_the_default_is_config_json_in_the_config_directory_of_the_working_directory(
    unit: FakeUnit, tmp_path: Path
) -> None:
    home = tmp_path / "opt" / "mattermost"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.json").write_text("{}")
    unit.props["WorkingDirectory"] = str(home)
    source = unit.source()
    assert (source.kind, source.path) == ("file", str(home / "config" / "config.json"))
    assert source.origin == "the default config.json (no --config, no MM_CONFIG)"


def test_a_relative_config_is_searched_like_the_server_does(unit: FakeUnit, tmp_path: Path) -> None:
    home = tmp_path / "opt" / "mattermost"
    work = home / "work"
    work.mkdir(parents=True)
    unit.props["WorkingDirectory"] = f"!{work}"  # WorkingDirectory=-/path shows as "!/path"
    unit.exec_start(f"{home}/bin/mattermost --config custom.json")

    # no config directory anywhere: the server would not start
    assert unit.source().kind == "unknown"
    # a config directory in an ancestor: the file would be created there
    (home / "config").mkdir()
    assert unit.source().path == str(home / "config" / "custom.json")
    # the file itself in the working directory
    (work / "custom.json").write_text("{}")
    assert unit.source().path == str(work / "custom.json")
    # config/custom.json near the working directory wins over that
    (home / "config" / "custom.json").write_text("{}")
    assert unit.source().path == str(home / "config" / "custom.json")
    # channels/config/custom.json wins over everything
    (home / "channels" / "config").mkdir(parents=True)
    (home / "channels" / "config" / "custom.json").write_text("{}")
    assert unit.source().path == str(home / "channels" / "config" / "custom.json")


def test_a_relative_config_is_found_near_the_binary(unit: FakeUnit, tmp_path: Path) -> None:
    home = tmp_path / "opt" / "mattermost"
    (home / "bin").mkdir(parents=True)
    (home / "config").mkdir()
    (home / "config" / "config.json").write_text("{}")
    binary = home / "bin" / "mattermost"
    binary.write_text("")
    link = tmp_path / "mattermost-link"
    link.symlink_to(binary)  # the binary's directory is that of its real path
    unit.exec_start(str(link))
    unit.props["WorkingDirectory"] = ""  # systemd's default: /
    assert unit.source().path == str(home / "config" / "config.json")


def test_a_home_working_directory_is_the_users_home(unit: FakeUnit) -> None:
    unit.props["WorkingDirectory"] = "~"
    unit.props["User"] = "root"
    unit.exec_start("/nonexistent/bin/mattermost -c ./mm.json")
    home = subprocess.run(
        ["getent", "passwd", "root"], capture_output=True, text=True, check=True
    ).stdout.split(":")[5]
    source = unit.source()
    # nothing named mm.json or config/ near root's home: unknown, naming where it searched
    assert (source.kind, home in source.reason) == ("unknown", True)


# ---- DSN shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgres://db1/mattermost", db("postgres", "db1", "5432", "mattermost")),
        ("postgres://mmuser@db1:6432/mattermost", db("postgres", "db1", "6432", "mattermost")),
        (
            "postgres://mmuser:s3cret@DB1.Example.COM/mattermost?sslmode=disable&connect_timeout=10",
            db("postgres", "db1.example.com", "5432", "mattermost"),
        ),
        ("postgresql://mmuser:pa55@db1:5432/mm", db("postgres", "db1", "5432", "mm")),
        ("postgres://mmuser:p@ss@db1/mm", db("postgres", "db1", "5432", "mm")),
        (
            "postgres://mmuser:s3cret@/mattermost?host=/var/run/postgresql&password=zz-param",
            db("postgres", "/var/run/postgresql", "5432", "mattermost"),
        ),
        (
            "postgres://mmuser:s3cret@/mm?host=%2Ftmp%2Fpg&port=5499",
            db("postgres", "/tmp/pg", "5499", "mm"),
        ),
        ("postgres://mmuser:s3cret@[::1]:5433/mm", db("postgres", "::1", "5433", "mm")),
        ("postgres://mmuser:s3cret@db1/mm%20prod", db("postgres", "db1", "5432", "mm prod")),
        ("postgres://mmuser:s3cret@db1", db("postgres", "db1", "5432", "")),
        (
            "postgres://mmuser:s3cret@localhost/mm?host=zzz.example",  # lib/pq: the greater wins
            db("postgres", "zzz.example", "5432", "mm"),
        ),
        (
            "mysql://mmuser:s3cret@tcp(db2:3307)/mattermost?charset=utf8mb4,utf8",
            db("mysql", "db2", "3307", "mattermost"),
        ),
        ("mysql://mmuser:s3cret@tcp(db2)/mattermost", db("mysql", "db2", "3306", "mattermost")),
        ("mysql://mmuser:s3cret@/mattermost", db("mysql", "127.0.0.1", "3306", "mattermost")),
        (
            "mysql://mmuser:s3cret@unix(/run/mysqld/mysqld.sock)/mm",
            db("mysql", "/run/mysqld/mysqld.sock", "3306", "mm"),
        ),
    ],
    ids=lambda value: "" if isinstance(value, DsnIdentity) else value.split("://")[0],
)
def test_dsn_shapes(unit: FakeUnit, dsn: str, expected: DsnIdentity) -> None:
    unit.env_file("mattermost.env", f"MM_CONFIG={dsn}\n")
    source = unit.source()
    assert (source.kind, source.identity) == ("database", expected)


def test_a_dsn_scheme_is_case_sensitive_like_is_database_dsn(unit: FakeUnit) -> None:
    # The server takes "POSTGRES://..." for a file name; the file name holds the password, so
    # it is reported as unknown without printing it.
    unit.props["Environment"] = "MM_CONFIG=POSTGRES://mmuser:s3cret@db1/mm"
    source = unit.source()
    assert source.kind == "unknown"
    assert "lower case" in source.reason


def test_a_mysql_dsn_without_a_database_is_unknown(unit: FakeUnit) -> None:
    unit.props["Environment"] = "MM_CONFIG=mysql://mmuser:s3cret@tcp(db2:3306)"
    assert unit.source().kind == "unknown"


# ---- a running server: its command line, environment, working directory and binary -----------


@pytest.fixture
def running_server(tmp_path: Path) -> Iterator[tuple[FakeUnit, Path, list[subprocess.Popen]]]:
    """A fake unit, a copy of python named <tmp>/srv/bin/mattermost to run as its server, and
    the processes started (stopped at the end)."""
    unit = FakeUnit(tmp_path / "u")
    home = tmp_path / "srv"
    (home / "bin").mkdir(parents=True)
    shutil.copy(os.path.realpath(sys.executable), home / "bin" / "mattermost")
    (home / "sleep.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    processes: list[subprocess.Popen] = []
    yield unit, home, processes
    for process in processes:
        process.kill()
        process.wait(timeout=10)


def start_server(
    unit: FakeUnit,
    home: Path,
    processes: list[subprocess.Popen],
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> None:
    process = subprocess.Popen(
        [str(home / "bin" / "mattermost"), str(home / "sleep.py"), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    processes.append(process)
    h.wait_for(lambda: Path(f"/proc/{process.pid}/cmdline").read_bytes().count(b"\0") > 1)
    unit.props["MainPID"] = str(process.pid)


def test_a_running_server_is_read_from_its_process(
    running_server: tuple[FakeUnit, Path, list[subprocess.Popen]], tmp_path: Path
) -> None:
    unit, home, processes = running_server
    # the unit says one thing; the process (started before a change) another: the process wins
    unit.props["Environment"] = "MM_CONFIG=/etc/mm/unit.json"
    start_server(
        unit,
        home,
        processes,
        cwd=tmp_path,
        env={"Mm_Config": "postgres://mmuser:s3cret@db9:5555/live?password=zz-param"},
    )
    source = unit.source()
    assert source.identity == db("postgres", "db9", "5555", "live")
    assert source.origin == "MM_CONFIG in the running process's environment"


def test_a_running_servers_flag_and_relative_paths(
    running_server: tuple[FakeUnit, Path, list[subprocess.Popen]], tmp_path: Path
) -> None:
    unit, home, processes = running_server
    work = tmp_path / "cwd"
    (work / "config").mkdir(parents=True)
    (work / "config" / "live.json").write_text("{}")
    start_server(
        unit,
        home,
        processes,
        "server",
        "--config",
        "live.json",
        cwd=work,
        env={"MM_CONFIG": "/etc/mm/env.json"},
    )
    source = unit.source()
    assert (source.path, source.origin) == (
        str(work / "config" / "live.json"),
        "--config in the running process",
    )


def test_a_running_servers_default_is_found_near_its_binary(
    running_server: tuple[FakeUnit, Path, list[subprocess.Popen]], tmp_path: Path
) -> None:
    unit, home, processes = running_server
    (home / "config").mkdir()
    (home / "config" / "config.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    start_server(unit, home, processes, cwd=elsewhere)
    assert unit.source().path == str(home / "config" / "config.json")


# ---- the local-mode socket --------------------------------------------------------------------


def test_the_local_mode_socket_is_reported_only_when_it_is_a_socket(unit: FakeUnit) -> None:
    with short_temp_dir("mmsrc-") as sockets:
        path = sockets / "mm.sock"
        assert unit.source(str(path)).socket is None
        path.write_text("not a socket")
        assert unit.source(str(path)).socket is None
        path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(path))
            assert unit.source(str(path)).socket == str(path)
        finally:
            server.close()


def test_the_socket_location_from_the_environment(unit: FakeUnit) -> None:
    with short_temp_dir("mmsrc-") as sockets:
        path = sockets / "other.sock"
        unit.props["Environment"] = f"MM_SERVICESETTINGS_LOCALMODESOCKETLOCATION={path}"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(path))
            assert unit.source(str(sockets / "default.sock")).socket == str(path)
        finally:
            server.close()


def test_no_such_unit(unit: FakeUnit) -> None:
    unit.name = "other"
    source = unit.source()
    assert (source.kind, source.reason) == ("unknown", "systemd has no unit mattermost")


def test_no_secret_is_printed_wherever_the_dsn_comes_from(
    running_server: tuple[FakeUnit, Path, list[subprocess.Popen]], tmp_path: Path
) -> None:
    """FakeUnit.run asserts that no password, user or parameter value is in the output; this
    runs every place a DSN can come from at once, with -x tracing off (pyinfra prints stdout
    and stderr)."""
    unit, home, processes = running_server
    dsn = "postgres://mmuser:s3cret@db1/mm?password=zz-param&user=mmuser"
    unit.exec_start(f"/opt/mattermost/bin/mattermost --config {dsn}")
    unit.props["Environment"] = f"MM_CONFIG={dsn}"
    unit.env_file("a.env", f"MM_CONFIG='{dsn}'\nexport MM_CONFIG={dsn}\n")
    unit.manager_env = [f"MM_CONFIG={dsn}"]
    lines = unit.run()
    assert "database postgres db1 - mm" in lines
    start_server(unit, home, processes, "--config", dsn, cwd=tmp_path, env={"MM_CONFIG": dsn})
    assert "database postgres db1 - mm" in unit.run()


# ---- parse_config_source (pure) ---------------------------------------------------------------


def test_parse_defaults_and_normalises() -> None:
    source = parse_config_source(
        [
            "from MM_CONFIG in the unit's Environment=",
            "database postgresql DB1.example - mattermost",
            "socket /var/tmp/mattermost_local.socket",
            "note something",
        ]
    )
    assert source == ConfigSource(
        kind="database",
        identity=db("postgres", "db1.example", "5432", "mattermost"),
        socket="/var/tmp/mattermost_local.socket",
        origin="MM_CONFIG in the unit's Environment=",
        notes=("something",),
    )
    assert parse_config_source(["database mysql - - -"]).identity == db(
        "mysql", "localhost", "3306", ""
    )
    assert parse_config_source(["database postgres /Run/PG - a%20b%2Dc"]).identity == db(
        "postgres", "/Run/PG", "5432", "a b-c"
    )


def test_parse_odd_output() -> None:
    assert parse_config_source([]).kind == "unknown"
    assert parse_config_source([]).reason == "the detection printed nothing"
    assert parse_config_source(["database postgres db1"]).kind == "unknown"
    assert parse_config_source(["database oracle db1 1 x"]).kind == "unknown"
    file_source = parse_config_source(["file /opt/mattermost/config/config.json"])
    assert file_source.describe() == "the file /opt/mattermost/config/config.json"
    assert file_source.reason == ""


def test_identity_key_and_locality() -> None:
    assert db("postgres", "::1", "5432", "mm").key == "postgres://[::1]:5432/mm"
    assert db("postgres", "db1", "5432", "mm").key == "postgres://db1:5432/mm"
    for host in ("localhost", "127.0.0.1", "127.1.2.3", "::1", "/var/run/postgresql"):
        assert db("postgres", host, "5432", "mm").is_local, host
    for host in ("db1", "10.0.0.5", "db.localhost.example"):
        assert not db("postgres", host, "5432", "mm").is_local, host


# ---- source_problem ---------------------------------------------------------------------------

FILE = ConfigSource(kind="file", path="/opt/mattermost/config/config.json", origin="the default")
DATABASE = ConfigSource(
    kind="database", identity=db("postgres", "db1", "5432", "mm"), origin="MM_CONFIG in X"
)
UNKNOWN = ConfigSource(kind="unknown", reason="systemd has no unit mattermost")


def test_source_problems() -> None:
    assert source_problem("mm1", "auto", FILE, has_token=False) is None
    assert source_problem("mm2", "auto", DATABASE, has_token=True) is None
    with_socket = ConfigSource(kind="database", identity=DATABASE.identity, socket="/s")
    assert source_problem("mm2", "auto", with_socket, has_token=False) is None
    assert source_problem("mm1", "file", UNKNOWN, has_token=False) is None

    no_access = source_problem("mm2", "auto", DATABASE, has_token=False)
    assert no_access is not None
    assert no_access.startswith("host mm2: ")
    assert "mattermost_admin_token" in no_access and "postgres://db1:5432/mm" in no_access
    assert "EnableLocalMode" in no_access

    wrong_file = source_problem("mm2", "file", DATABASE, has_token=True)
    assert wrong_file is not None and "mattermost_config_source = 'file'" in wrong_file
    wrong_db = source_problem("mm1", "database", FILE, has_token=True)
    assert wrong_db is not None and "mattermost_config_source = 'database'" in wrong_db
    unknown = source_problem("mm3", "auto", UNKNOWN, has_token=True)
    assert unknown is not None and "systemd has no unit mattermost" in unknown
    forced = source_problem("mm3", "database", UNKNOWN, has_token=False)
    assert forced is not None and "mattermost_admin_token" in forced
    bad = source_problem("mm3", "sql", FILE, has_token=False)
    assert bad is not None and "'sql'" in bad
