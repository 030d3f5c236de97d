"""mmpush.upstream_watch: the watcher script, rendered and run for real by bash in tmp_path
with fake ``dig``, ``getent``, ``nginx`` and ``systemctl`` commands (the pattern of
test_transactions.py), and its two systemd units."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import crossplane
import pytest

from mmpush.upstream_watch import (
    DEFAULT_INTERVAL_S,
    DIG_PACKAGE,
    SERVICE_FILE,
    TIMER_FILE,
    WATCH_SCRIPT,
    WatchPaths,
    dig_server,
    required_packages,
    watch_files,
    watch_script,
    watch_service,
    watch_timer,
)

UPSTREAM = "global.push.mattermost.com"
RESOLVER = "192.0.2.53"
SECOND_RESOLVER = "192.0.2.54:8053"

# dig as the script calls it: `dig +short ... -p PORT @SERVER NAME A`. The answer for a
# server is the file $FAKE_DNS/SERVER#PORT; without one, the server does not answer.
FAKE_DIG = r"""#!/bin/sh
echo "dig $*" >> "$FAKE_LOG"
server=""; port=53
while [ $# -gt 0 ]; do
  case "$1" in @*) server=${1#@};; -p) shift; port=$1;; esac
  shift
done
if [ ! -f "$FAKE_DNS/$server#$port" ]; then
  echo ";; connection timed out; no servers could be reached"
  exit 9
fi
cat "$FAKE_DNS/$server#$port"
"""
# getent ahostsv4 NAME: the addresses in $FAKE_DNS/host, printed as glibc's getent does.
FAKE_GETENT = r"""#!/bin/sh
echo "getent $*" >> "$FAKE_LOG"
[ "$1" = ahostsv4 ] && [ -f "$FAKE_DNS/host" ] || exit 2
awk -v name="$2" '{ print $1 "      STREAM " name; print $1 "      DGRAM"; print $1 "      RAW" }' \
  "$FAKE_DNS/host"
"""
# nginx -t records the server lines it was given; it fails when FAKE_NGINX_T is not 0.
FAKE_NGINX = r"""#!/bin/sh
echo "nginx $* with: $(grep '^server' "$FAKE_SERVERS" | tr '\n' ' ')" >> "$FAKE_LOG"
if [ "$1" = -t ] && [ "$FAKE_NGINX_T" != 0 ]; then
  echo 'nginx: [emerg] host not found in upstream "x" in /etc/nginx/conf.d/x.conf:3' >&2
  echo 'nginx: configuration file /etc/nginx/nginx.conf test failed' >&2
  exit 1
fi
echo 'nginx: configuration file /etc/nginx/nginx.conf test is successful' >&2
"""
FAKE_SYSTEMCTL = r"""#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
case "$1" in
  is-active) [ "$FAKE_ACTIVE" = 1 ] && exit 0; exit 3;;
  reload) [ "$FAKE_RELOAD" = 0 ] && exit 0; echo "Job for nginx.service failed." >&2; exit 1;;
esac
exit 0
"""


@dataclass
class Host:
    """A fake proxy host: the watcher's files under ``tmp``, fake commands, DNS answers."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> WatchPaths:
        return WatchPaths(
            script=str(self.tmp / "mmpush-upstream-watch"),
            state_file=str(self.tmp / "var/lib/mmpush/upstream-addresses"),
            servers_file=str(self.tmp / "etc/nginx/mmpush-upstream/servers.conf"),
            lock_file=str(self.tmp / "var/lib/mmpush/upstream-watch.lock"),
        )

    @property
    def state(self) -> Path:
        return Path(self.paths.state_file)

    @property
    def servers(self) -> Path:
        return Path(self.paths.servers_file)

    @property
    def log(self) -> Path:
        return self.tmp / "calls.log"

    def answer(self, resolver: str, *lines: str) -> None:
        """What a resolver (``"host"``: the host's own) answers from now on; no lines: an
        empty answer (as for NXDOMAIN)."""
        if resolver == "host":
            name = "host"
        else:
            address, port = dig_server(resolver)
            name = f"{address}#{port}"
        (self.tmp / "dns" / name).write_text("".join(line + "\n" for line in lines))

    def silence(self, resolver: str) -> None:
        """The resolver stops answering."""
        address, port = dig_server(resolver)
        (self.tmp / "dns" / f"{address}#{port}").unlink()

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def nginx_calls(self) -> list[str]:
        return [c for c in self.calls() if c.startswith(("nginx", "systemctl reload"))]

    def run(
        self, resolvers: list[str] | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Render the script for ``resolvers`` (default: RESOLVER) and run it once."""
        script = Path(self.paths.script)
        chosen = [RESOLVER] if resolvers is None else resolvers
        script.write_text(watch_script(UPSTREAM, 443, chosen, self.paths))
        self.log.unlink(missing_ok=True)
        return subprocess.run(
            ["bash", str(script)],
            env={**os.environ, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def host(tmp_path: Path) -> Host:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "dns").mkdir()
    fakes = {"dig": FAKE_DIG, "getent": FAKE_GETENT, "nginx": FAKE_NGINX}
    for name, text in {**fakes, "systemctl": FAKE_SYSTEMCTL}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    made = Host(tmp_path)
    made.env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_LOG": str(made.log),
        "FAKE_DNS": str(tmp_path / "dns"),
        "FAKE_SERVERS": made.paths.servers_file,
        "FAKE_NGINX_T": "0",
        "FAKE_ACTIVE": "1",
        "FAKE_RELOAD": "0",
    }
    made.env.pop("JOURNAL_STREAM", None)
    return made


def server_lines(*addresses: str) -> str:
    lines = [f"# Managed by mmpush-upstream-watch: the addresses of {UPSTREAM}. Do not edit."]
    return "\n".join(lines + [f"server {a}:443;" for a in addresses]) + "\n"


def settled(host: Host, *addresses: str) -> None:
    """Bring the host to NGINX running with ``addresses`` (a first successful run)."""
    host.answer(RESOLVER, *addresses)
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.state.read_text() == "".join(a + "\n" for a in sorted_ips(addresses))


def sorted_ips(addresses: tuple[str, ...] | list[str]) -> list[str]:
    return sorted(set(addresses), key=lambda a: tuple(int(part) for part in a.split(".")))


# --- following a change -----------------------------------------------------------------------


def test_the_first_run_writes_the_server_lines_tests_and_reloads(host: Host) -> None:
    host.answer(RESOLVER, "203.0.113.20", "203.0.113.3")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.servers.read_text() == server_lines("203.0.113.3", "203.0.113.20")
    assert host.state.read_text() == "203.0.113.3\n203.0.113.20\n"
    assert host.nginx_calls() == [
        "nginx -t with: server 203.0.113.3:443; server 203.0.113.20:443; ",
        "systemctl reload nginx",
    ]
    assert result.stdout == (
        f"mmpush-upstream-watch: {UPSTREAM} moved from (none) to 203.0.113.3 203.0.113.20: "
        "NGINX reloaded\n"
    )
    assert result.stderr == ""


def test_the_same_addresses_change_nothing(host: Host) -> None:
    settled(host, "203.0.113.3", "203.0.113.20")
    before = host.servers.stat().st_mtime_ns, host.state.stat().st_mtime_ns
    host.answer(RESOLVER, "203.0.113.20", "203.0.113.3", "203.0.113.20")  # order, duplicates
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.nginx_calls() == [], "no nginx -t, no reload"
    assert (result.stdout, result.stderr) == ("", ""), "nothing logged every interval"
    assert (host.servers.stat().st_mtime_ns, host.state.stat().st_mtime_ns) == before


def test_a_new_address_is_tested_then_reloaded_then_recorded(host: Host) -> None:
    settled(host, "203.0.113.3")
    host.answer(RESOLVER, "198.51.100.7")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.nginx_calls() == [
        "nginx -t with: server 198.51.100.7:443; ",
        "systemctl reload nginx",
    ]
    assert host.servers.read_text() == server_lines("198.51.100.7")
    assert host.state.read_text() == "198.51.100.7\n"
    assert "moved from 203.0.113.3 to 198.51.100.7: NGINX reloaded" in result.stdout
    assert len(result.stdout.splitlines()) == 1, "one line in the journal"
    assert not list(host.servers.parent.glob("*.mmpush-*")), "no temporary file left"


def test_cname_lines_are_not_addresses(host: Host) -> None:
    host.answer(RESOLVER, "push-lb.example.net.", "203.0.113.9")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.state.read_text() == "203.0.113.9\n"


def test_server_lines_are_valid_in_an_upstream_block(host: Host, tmp_path: Path) -> None:
    settled(host, "203.0.113.3", "203.0.113.20")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp {\n  upstream mmpush_hpns {\n"
        f"    include {host.servers};\n    keepalive 16;\n  }}\n}}\n"
    )
    parsed = crossplane.parse(str(conf), check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]
    included = next(c for c in parsed["config"] if c["file"] == str(host.servers))
    assert [(d["directive"], d["args"]) for d in included["parsed"]] == [
        ("server", ["203.0.113.3:443"]),
        ("server", ["203.0.113.20:443"]),
    ]


# --- lookups that fail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fail",
    [
        pytest.param(lambda host: host.silence(RESOLVER), id="no-answer"),
        pytest.param(lambda host: host.answer(RESOLVER), id="empty-answer"),
        pytest.param(lambda host: host.answer(RESOLVER, "only-a-cname.example."), id="no-a"),
    ],
)
def test_a_failed_lookup_changes_nothing(host: Host, fail: object) -> None:
    settled(host, "203.0.113.3")
    before = host.servers.read_bytes(), host.state.read_bytes()
    fail(host)  # type: ignore[operator]
    result = host.run()
    assert result.returncode == 1
    assert host.nginx_calls() == [], "no nginx -t, no reload"
    assert (host.servers.read_bytes(), host.state.read_bytes()) == before, "the pool is kept"
    assert f"could not resolve {UPSTREAM}: NGINX keeps the addresses it has" in result.stderr


def test_a_failed_first_lookup_writes_nothing(host: Host) -> None:
    result = host.run()  # the resolver does not answer
    assert result.returncode == 1
    assert not host.servers.exists()
    assert not host.state.exists()
    assert f"no address for {UPSTREAM} from {RESOLVER} port 53" in result.stderr


def test_the_next_resolver_answers_when_the_first_does_not(host: Host) -> None:
    host.answer(SECOND_RESOLVER, "203.0.113.30")
    result = host.run([RESOLVER, SECOND_RESOLVER])
    assert result.returncode == 0, result.stderr
    assert host.state.read_text() == "203.0.113.30\n"
    digs = [c for c in host.calls() if c.startswith("dig")]
    assert [c.split()[-4:] for c in digs] == [
        ["53", "@192.0.2.53", UPSTREAM, "A"],
        ["8053", "@192.0.2.54", UPSTREAM, "A"],
    ]


def test_without_resolvers_the_hosts_resolver_is_used(host: Host) -> None:
    host.answer("host", "203.0.113.40", "203.0.113.41")
    result = host.run([])
    assert result.returncode == 0, result.stderr
    assert host.state.read_text() == "203.0.113.40\n203.0.113.41\n"
    assert f"getent ahostsv4 {UPSTREAM}" in host.calls()
    assert not [c for c in host.calls() if c.startswith("dig")]


def test_a_failed_host_lookup_changes_nothing(host: Host) -> None:
    host.answer("host", "203.0.113.40")
    assert host.run([]).returncode == 0
    (host.tmp / "dns" / "host").unlink()
    before = host.state.read_bytes()
    result = host.run([])
    assert result.returncode == 1
    assert host.nginx_calls() == []
    assert host.state.read_bytes() == before


# --- NGINX refuses ----------------------------------------------------------------------------


def test_a_failed_nginx_test_puts_the_old_lines_back_and_retries_next_time(host: Host) -> None:
    settled(host, "203.0.113.3")
    before = host.servers.read_bytes(), host.state.read_bytes()
    host.answer(RESOLVER, "198.51.100.7")
    result = host.run(FAKE_NGINX_T="1")
    assert result.returncode == 1
    assert host.nginx_calls() == ["nginx -t with: server 198.51.100.7:443; "], "no reload"
    assert (host.servers.read_bytes(), host.state.read_bytes()) == before
    assert not list(host.servers.parent.glob("*.mmpush-*"))
    assert "nginx -t refused the new addresses" in result.stderr
    assert "NGINX keeps 203.0.113.3" in result.stderr
    assert 'host not found in upstream "x"' in result.stderr
    assert len(result.stderr.splitlines()) == 1, "one line in the journal"

    again = host.run()  # nginx -t passes now: the change is made on the next run
    assert again.returncode == 0, again.stderr
    assert host.nginx_calls()[-1] == "systemctl reload nginx"
    assert host.state.read_text() == "198.51.100.7\n"


def test_a_failed_nginx_test_on_the_first_run_leaves_no_server_lines(host: Host) -> None:
    host.answer(RESOLVER, "203.0.113.3")
    result = host.run(FAKE_NGINX_T="1")
    assert result.returncode == 1
    assert not host.servers.exists()
    assert not host.state.exists()
    assert "NGINX keeps (none)" in result.stderr


def test_a_failed_reload_puts_the_old_lines_back(host: Host) -> None:
    settled(host, "203.0.113.3")
    before = host.servers.read_bytes(), host.state.read_bytes()
    host.answer(RESOLVER, "198.51.100.7")
    result = host.run(FAKE_RELOAD="1")
    assert result.returncode == 1
    assert (host.servers.read_bytes(), host.state.read_bytes()) == before
    assert "reloading NGINX failed" in result.stderr
    assert "Job for nginx.service failed." in result.stderr


def test_nginx_not_running_gets_the_lines_without_a_reload(host: Host) -> None:
    host.answer(RESOLVER, "203.0.113.3")
    result = host.run(FAKE_ACTIVE="0")
    assert result.returncode == 0, result.stderr
    assert host.nginx_calls() == ["nginx -t with: server 203.0.113.3:443; "]
    assert host.servers.read_text() == server_lines("203.0.113.3")
    assert "NGINX is not running and uses them when it starts" in result.stdout


def test_lost_server_lines_are_written_again(host: Host) -> None:
    settled(host, "203.0.113.3")
    host.servers.unlink()
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.servers.read_text() == server_lines("203.0.113.3")
    assert host.nginx_calls()[-1] == "systemctl reload nginx"


def test_under_systemd_lines_carry_their_journal_priority(host: Host) -> None:
    host.answer(RESOLVER, "203.0.113.3")
    changed = host.run(JOURNAL_STREAM="8:1234")
    assert changed.stdout.startswith("<5>mmpush-upstream-watch: ")
    host.silence(RESOLVER)
    failed = host.run(JOURNAL_STREAM="8:1234")
    assert failed.stderr.splitlines()[-1].startswith("<4>mmpush-upstream-watch: could not")


# --- rendering --------------------------------------------------------------------------------


def test_the_script_is_valid_bash_and_shellcheck_clean(tmp_path: Path) -> None:
    script = tmp_path / "watch.sh"
    script.write_text(watch_script(UPSTREAM, 443, [RESOLVER, "[2001:db8::53]:5353"]))
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    if shutil.which("shellcheck"):  # a developer tool; bash -n above always runs
        checked = subprocess.run(
            ["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout


def test_the_script_quotes_what_it_is_given() -> None:
    text = watch_script(UPSTREAM, 8443, ["[2001:db8::53]:5353", "10.0.0.2"])
    assert "resolver_hosts=(2001:db8::53 10.0.0.2)\n" in text
    assert "resolver_ports=(5353 53)\n" in text
    assert "upstream_port=8443\n" in text
    odd = WatchPaths(state_file="/var/lib/mm push/state")
    assert f"state_file={shlex.quote('/var/lib/mm push/state')}\n" in watch_script(
        UPSTREAM, 443, [], odd
    )


@pytest.mark.parametrize(
    ("resolver", "server"),
    [
        ("10.0.0.53", ("10.0.0.53", 53)),
        ("192.0.2.1:8053", ("192.0.2.1", 8053)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ],
)
def test_resolvers_become_dig_servers(resolver: str, server: tuple[str, int]) -> None:
    assert dig_server(resolver) == server


@pytest.mark.parametrize("resolver", ["2001:db8::53", "dns.example", "10.0.0.1:0", "10.0.0.1;x"])
def test_bad_resolvers_are_refused(resolver: str) -> None:
    with pytest.raises(ValueError, match="resolver"):
        watch_script(UPSTREAM, 443, [resolver])


@pytest.mark.parametrize(
    ("host_name", "port"), [("x; rm -rf /", 443), ("203.0.113.3", 443), (UPSTREAM, 0)]
)
def test_bad_upstreams_are_refused(host_name: str, port: int) -> None:
    with pytest.raises(ValueError, match="upstream"):
        watch_script(host_name, port, [])


def test_dig_is_needed_only_with_resolvers() -> None:
    assert required_packages([RESOLVER]) == [DIG_PACKAGE] == ["bind9-dnsutils"]
    assert required_packages([]) == []


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values, in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def test_the_service_runs_the_script_once_hardened() -> None:
    service = unit_sections(watch_service(UPSTREAM))["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [WATCH_SCRIPT]
    assert service["ProtectSystem"] == ["strict"]
    writable = service["ReadWritePaths"][0].split()
    assert writable == ["/etc/nginx/mmpush-upstream", "/var/lib/mmpush", "/var/log/nginx", "/run"]
    assert service["CapabilityBoundingSet"] == ["CAP_DAC_OVERRIDE CAP_NET_BIND_SERVICE"]
    assert service["NoNewPrivileges"] == ["yes"]


def test_the_timer_starts_it_every_interval() -> None:
    assert DEFAULT_INTERVAL_S == 15
    timer = unit_sections(watch_timer(UPSTREAM))
    assert timer["Timer"]["OnBootSec"] == ["15s"]
    assert timer["Timer"]["OnUnitActiveSec"] == ["15s"]
    assert timer["Timer"]["AccuracySec"] == ["1s"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    assert unit_sections(watch_timer(UPSTREAM, 30))["Timer"]["OnUnitActiveSec"] == ["30s"]


@pytest.mark.parametrize("interval", [0, 61, -5])
def test_an_interval_that_cannot_follow_within_a_minute_is_refused(interval: int) -> None:
    with pytest.raises(ValueError, match="interval"):
        watch_timer(UPSTREAM, interval)


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    paths = WatchPaths(script=str(tmp_path / "mmpush-upstream-watch"))
    files = watch_files(UPSTREAM, 443, [RESOLVER], 15, paths)
    Path(paths.script).write_text(files[paths.script])
    Path(paths.script).chmod(0o755)
    units = []
    for path in (SERVICE_FILE, TIMER_FILE):
        unit = tmp_path / Path(path).name
        unit.write_text(files[path])
        units.append(str(unit))
    result = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_watch_files_names_the_three_files() -> None:
    files = watch_files(UPSTREAM, 443, [RESOLVER], 20)
    assert sorted(files) == sorted([WATCH_SCRIPT, SERVICE_FILE, TIMER_FILE])
    assert files[WATCH_SCRIPT].startswith("#!/bin/bash\n")
    assert "OnUnitActiveSec=20s" in files[TIMER_FILE]
