"""mmpush.certs.dns01 against a real authoritative DNS server: BIND (Debian `bind9`) on loopback.

Each fixture writes a named.conf and a zone file for ``internal.test`` (NS ns1 and ns2, both
127.0.0.1) into a tmp directory, with a TSIG key whose ``update-policy`` lets it change only
the TXT records of the ``_acme-challenge`` names of GRANTED (the configuration a site needs,
see ``named_conf``), starts ``named -g`` on a free port of
127.0.0.1, and stops it at the end. A second named with a stale copy of the zone plays a
secondary whose transfers stopped, for the "lagging server" cases.

Without named the tests fail saying what to install; MMPUSH_NO_DNS_SERVER=1 skips them.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from mmpush.certs import dns01
from mmpush.certs.dns01 import (
    AuthoritativeServer,
    Dns01Error,
    Dns01Publisher,
    DnsUpdateError,
    DnsUpdater,
    NotInZoneError,
    PropagationTimeout,
)
from tests.emulators import harness as h

ZONE = "internal.test"
KEY_NAME = "acme-update"
ALGORITHM = "hmac-sha256"
SECRET = base64.b64encode(secrets.token_bytes(32)).decode()
GRANTED = ("push.internal.test", "mm.internal.test", "internal.test")
PUSH_CHALLENGE = "_acme-challenge.push.internal.test"
ZONE_FILE = f"""$TTL 60
@       IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 60 60 600 60
@       IN NS  ns1.{ZONE}.
@       IN NS  ns2.{ZONE}.
ns1     IN A   127.0.0.1
ns2     IN A   127.0.0.1
push    IN A   127.0.0.1
"""

# A zone whose only NS lies outside it: its address comes from the control node's resolver.
OUTSIDE_ZONE = "ext.test"
OUTSIDE_ZONE_FILE = f"""$TTL 60
@       IN SOA localhost. hostmaster.{OUTSIDE_ZONE}. 1 60 60 600 60
@       IN NS  localhost.
"""


def named_binary() -> str:
    """Path of named; fails (or skips with MMPUSH_NO_DNS_SERVER=1) saying what to install."""
    found = shutil.which("named") or shutil.which("named", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    if os.environ.get("MMPUSH_NO_DNS_SERVER") == "1":
        pytest.skip("named is not installed and MMPUSH_NO_DNS_SERVER=1")
    pytest.fail(
        "named is not installed: these tests run a real authoritative DNS server;"
        " install it with 'apt-get install -y bind9' (Debian package bind9), or set"
        " MMPUSH_NO_DNS_SERVER=1 to skip them"
    )


def named_conf(directory: Path, port: int, *, updates: bool, secret: str = SECRET) -> str:
    """A named.conf serving ZONE on 127.0.0.1:port; with ``updates``, KEY_NAME may change
    the TXT records of the _acme-challenge names of GRANTED and nothing else."""
    grants = "".join(
        f"        grant {KEY_NAME}. name _acme-challenge.{name}. TXT;\n" for name in GRANTED
    )
    policy = f"    update-policy {{\n{grants}    }};\n" if updates else ""
    return f"""options {{
    directory "{directory}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    recursion no;
    notify no;
    dnssec-validation no;
    allow-transfer {{ none; }};
}};
controls {{ }};
key "{KEY_NAME}" {{
    algorithm {ALGORITHM};
    secret "{secret}";
}};
zone "{ZONE}" {{
    type primary;
    file "{directory}/{ZONE}.zone";
{policy}}};
zone "{OUTSIDE_ZONE}" {{
    type primary;
    file "{directory}/{OUTSIDE_ZONE}.zone";
}};
"""


@dataclass
class Named:
    """A running named: where it listens and how to stop it."""

    port: int
    process: subprocess.Popen
    log: Path

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def txt(self, name: str) -> list[str]:
        """The TXT strings the server answers for ``name`` (asked directly)."""
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        query.flags &= ~dns.flags.RD
        response = dns.query.tcp(query, "127.0.0.1", timeout=3, port=self.port)
        return [
            b"".join(rdata.strings).decode()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_named(directory: Path, *, updates: bool = True, timeout: float = 15) -> Named:
    """Start named serving ZONE from ``directory`` and wait until it answers the SOA."""
    binary = named_binary()
    directory.mkdir(parents=True, exist_ok=True)
    port = h.free_port()
    (directory / f"{ZONE}.zone").write_text(ZONE_FILE)
    (directory / f"{OUTSIDE_ZONE}.zone").write_text(OUTSIDE_ZONE_FILE)
    conf = directory / "named.conf"
    conf.write_text(named_conf(directory, port, updates=updates))
    log = directory / "named.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, "-g", "-4", "-n", "1", "-c", str(conf)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    named = Named(port, process, log)
    deadline = time.monotonic() + timeout
    while not answers_soa(port):
        if process.poll() is not None or time.monotonic() > deadline:
            named.stop()
            raise RuntimeError(f"named did not start on {port}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return named


def answers_soa(port: int) -> bool:
    query = dns.message.make_query(ZONE, dns.rdatatype.SOA)
    try:
        response = dns.query.udp(query, "127.0.0.1", timeout=0.2, port=port)
    except (dns.exception.Timeout, OSError):
        return False
    return bool(response.flags & dns.flags.AA) and response.rcode() == dns.rcode.NOERROR


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Named]:
    named = start_named(tmp_path_factory.mktemp("named-primary"))
    yield named
    named.stop()


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Named]:
    """A second server of the zone that never receives the updates (a stale secondary)."""
    named = start_named(tmp_path_factory.mktemp("named-stale"), updates=False)
    yield named
    named.stop()


def updater_for(named: Named, **overrides: str) -> DnsUpdater:
    arguments = {
        "server": named.server,
        "zone": ZONE,
        "tsig_key_name": KEY_NAME,
        "tsig_algorithm": ALGORITHM,
        "tsig_secret": SECRET,
    }
    arguments.update(overrides)
    return DnsUpdater(**arguments, timeout=5)  # type: ignore[arg-type]


def servers_of(*named: Named) -> list[AuthoritativeServer]:
    return [
        AuthoritativeServer(f"ns{number}.{ZONE}", ("127.0.0.1",), server.port)
        for number, server in enumerate(named, start=1)
    ]


def token() -> str:
    return secrets.token_urlsafe(32)


# --- add, wait, delete --------------------------------------------------------------------------


def test_authoritative_servers_are_the_zones_ns_with_their_addresses(primary: Named) -> None:
    servers = dns01.authoritative_servers(ZONE, via=primary.server, port=primary.port)
    assert servers == [
        AuthoritativeServer("ns1.internal.test", ("127.0.0.1",), primary.port),
        AuthoritativeServer("ns2.internal.test", ("127.0.0.1",), primary.port),
    ]
    assert str(servers[0]) == f"ns1.internal.test (127.0.0.1:{primary.port})"


def test_ns_outside_the_zone_is_resolved_by_the_control_node(primary: Named) -> None:
    servers = dns01.authoritative_servers(OUTSIDE_ZONE, via=primary.server, port=primary.port)
    [server] = servers
    assert server.name == "localhost"
    assert "127.0.0.1" in server.addresses


def test_add_wait_delete(primary: Named) -> None:
    updater = updater_for(primary)
    value = token()
    updater.add_txt(PUSH_CHALLENGE, value)
    assert value in primary.txt(PUSH_CHALLENGE)
    servers = dns01.authoritative_servers(ZONE, via=primary.server, port=primary.port)
    dns01.wait_for_txt(PUSH_CHALLENGE, value, servers, timeout=5, interval=0.1)
    updater.delete_txt(PUSH_CHALLENGE, value)
    assert value not in primary.txt(PUSH_CHALLENGE)
    updater.delete_txt(PUSH_CHALLENGE, value)  # already gone: fine


def test_values_of_one_name_are_added_and_removed_one_by_one(primary: Named) -> None:
    # A wildcard and its base name share one challenge name with two values.
    updater = updater_for(primary)
    first, second = token(), token()
    updater.add_txt(PUSH_CHALLENGE, first)
    updater.add_txt(PUSH_CHALLENGE, second)
    updater.delete_txt(PUSH_CHALLENGE, first)
    assert primary.txt(PUSH_CHALLENGE) == [second]
    updater.delete_txt(PUSH_CHALLENGE, second)
    assert primary.txt(PUSH_CHALLENGE) == []


def test_a_value_longer_than_255_bytes_round_trips(primary: Named) -> None:
    updater = updater_for(primary)
    value = "v" * 300
    with dns01.published_txt(updater, PUSH_CHALLENGE, value, servers_of(primary), timeout=5):
        assert primary.txt(PUSH_CHALLENGE) == [value]
    assert primary.txt(PUSH_CHALLENGE) == []


def test_published_txt_is_visible_inside_and_removed_after(primary: Named) -> None:
    updater = updater_for(primary)
    value = token()
    with dns01.published_txt(updater, PUSH_CHALLENGE, value, servers_of(primary, primary)):
        assert primary.txt(PUSH_CHALLENGE) == [value]
    assert primary.txt(PUSH_CHALLENGE) == []


def test_published_txt_removes_the_record_when_the_body_fails(primary: Named) -> None:
    updater = updater_for(primary)
    value = token()
    with (
        pytest.raises(RuntimeError, match="the CA refused"),
        dns01.published_txt(updater, PUSH_CHALLENGE, value, servers_of(primary)),
    ):
        assert primary.txt(PUSH_CHALLENGE) == [value]
        raise RuntimeError("the CA refused")
    assert primary.txt(PUSH_CHALLENGE) == []


def test_publisher_publishes_on_every_server_and_unpublishes(primary: Named) -> None:
    publisher = Dns01Publisher(updater_for(primary), port=primary.port, timeout=5, interval=0.1)
    value = token()
    publisher.publish(PUSH_CHALLENGE, value)
    assert [server.name for server in publisher.authoritative()] == [
        "ns1.internal.test",
        "ns2.internal.test",
    ]
    assert primary.txt(PUSH_CHALLENGE) == [value]
    assert publisher.published == [(PUSH_CHALLENGE, value)]
    publisher.unpublish(PUSH_CHALLENGE, value)
    assert primary.txt(PUSH_CHALLENGE) == []
    assert publisher.published == []


def test_publisher_refuses_a_name_outside_the_zone(primary: Named) -> None:
    publisher = Dns01Publisher(updater_for(primary), servers_of(primary))
    with pytest.raises(NotInZoneError, match=r"_acme-challenge\.push\.example\.com"):
        publisher.publish("_acme-challenge.push.example.com", token())
    assert publisher.published == []


def test_probe_update_access_leaves_nothing(primary: Named) -> None:
    updater = updater_for(primary)
    dns01.probe_update_access(updater, "mm.internal.test", port=primary.port, timeout=5)
    assert primary.txt("_acme-challenge.mm.internal.test") == []


# --- refusals -----------------------------------------------------------------------------------


def test_wrong_secret_is_notauth_naming_server_zone_and_key(primary: Named) -> None:
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(DnsUpdateError) as failure:
        updater_for(primary, tsig_secret=wrong).add_txt(PUSH_CHALLENGE, token())
    message = str(failure.value)
    assert message.startswith(
        f"DNS update (adding TXT {PUSH_CHALLENGE}) of zone {ZONE} at {primary.server} failed:"
        " NOTAUTH (TSIG BADSIG)"
    )
    assert "'acme-update'" in message and "the secret is wrong" in message
    assert wrong not in message and SECRET not in message
    assert failure.value.refused
    assert primary.txt(PUSH_CHALLENGE) == []


def test_unknown_key_name_is_notauth_badkey(primary: Named) -> None:
    with pytest.raises(DnsUpdateError, match=r"NOTAUTH \(TSIG BADKEY\).*'someone-else'"):
        updater_for(primary, tsig_key_name="someone-else").add_txt(PUSH_CHALLENGE, token())


def test_wrong_algorithm_is_notauth(primary: Named) -> None:
    with pytest.raises(DnsUpdateError, match=r"NOTAUTH \(TSIG BAD.*hmac-sha512"):
        updater_for(primary, tsig_algorithm="hmac-sha512").add_txt(PUSH_CHALLENGE, token())


def test_zone_that_does_not_exist_there(primary: Named) -> None:
    updater = updater_for(primary, zone="nothere.test")
    with pytest.raises(DnsUpdateError) as failure:
        updater.add_txt("_acme-challenge.push.nothere.test", token())
    assert str(failure.value) == (
        "DNS update (adding TXT _acme-challenge.push.nothere.test) of zone nothere.test at"
        f" {primary.server} failed: NOTAUTH: the server is not authoritative for zone"
        " nothere.test (the zone does not exist there)"
    )


def test_update_policy_refuses_other_names_and_types(primary: Named) -> None:
    updater = updater_for(primary)
    with pytest.raises(DnsUpdateError, match=r"REFUSED: TSIG key 'acme-update' may not"):
        updater.add_txt("_acme-challenge.www.internal.test", token())
    with pytest.raises(DnsUpdateError, match="REFUSED"):
        updater.add_txt("push.internal.test", token())
    assert primary.txt("_acme-challenge.www.internal.test") == []


def test_probe_update_access_reports_a_name_the_policy_does_not_grant(primary: Named) -> None:
    with pytest.raises(DnsUpdateError, match=r"REFUSED.*_acme-challenge\.www\.internal\.test"):
        dns01.probe_update_access(
            updater_for(primary), "www.internal.test", servers_of(primary), timeout=5
        )


def test_name_outside_the_zone_is_refused_before_sending(primary: Named) -> None:
    with pytest.raises(DnsUpdateError) as failure:
        updater_for(primary).add_txt("_acme-challenge.push.example.com", token())
    assert "is not inside the DNS zone internal.test" in str(failure.value)
    assert failure.value.refused


def test_connection_refused() -> None:
    updater = DnsUpdater(f"127.0.0.1:{h.free_port()}", ZONE, KEY_NAME, ALGORITHM, SECRET)
    with pytest.raises(DnsUpdateError, match="connection refused") as failure:
        updater.add_txt(PUSH_CHALLENGE, token())
    assert not failure.value.refused


def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        updater = DnsUpdater(f"127.0.0.1:{port}", ZONE, KEY_NAME, ALGORITHM, SECRET, timeout=0.5)
        with pytest.raises(DnsUpdateError, match=r"failed: no answer within 0\.5 s"):
            updater.delete_txt(PUSH_CHALLENGE, token())


# --- propagation --------------------------------------------------------------------------------


def test_lagging_server_times_out_naming_it_and_its_answer(primary: Named, stale: Named) -> None:
    updater = updater_for(primary)
    value = token()
    updater.add_txt(PUSH_CHALLENGE, value)
    try:
        with pytest.raises(PropagationTimeout) as failure:
            dns01.wait_for_txt(
                PUSH_CHALLENGE, value, servers_of(primary, stale), timeout=0.5, interval=0.1
            )
    finally:
        updater.delete_txt(PUSH_CHALLENGE, value)
    assert failure.value.lagging == ("ns2.internal.test",)
    message = str(failure.value)
    lagging = f"ns2.internal.test (127.0.0.1:{stale.port}) answered NXDOMAIN (no such name)"
    assert f"lagging: {lagging}" in message
    assert f"(in sync: ns1.internal.test (127.0.0.1:{primary.port}))" in message


def test_lagging_server_with_an_old_value_is_quoted(primary: Named) -> None:
    updater = updater_for(primary)
    old, new = token(), token()
    with (
        dns01.published_txt(updater, PUSH_CHALLENGE, old, servers_of(primary)),
        pytest.raises(PropagationTimeout) as failure,
    ):
        dns01.wait_for_txt(PUSH_CHALLENGE, new, servers_of(primary), timeout=0.3, interval=0.1)
    assert f"answered TXT '{old}'" in str(failure.value)


def test_unreachable_and_wrong_servers_are_described() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        server = AuthoritativeServer("ns9.internal.test", ("127.0.0.1",), silent.getsockname()[1])
        with pytest.raises(PropagationTimeout, match=r"ns9\.internal\.test .* answered no answer"):
            dns01.wait_for_txt(PUSH_CHALLENGE, "x", [server], timeout=0.3, interval=0.1)


def test_published_txt_removes_the_record_when_propagation_times_out(
    primary: Named, stale: Named
) -> None:
    value = token()
    with (
        pytest.raises(PropagationTimeout, match=r"ns2\.internal\.test"),
        dns01.published_txt(
            updater_for(primary), PUSH_CHALLENGE, value, servers_of(primary, stale),
            timeout=0.3, interval=0.1,
        ),
    ):  # fmt: skip
        pytest.fail("the body must not run when the record did not propagate")
    assert primary.txt(PUSH_CHALLENGE) == []


def test_removal_failure_is_reported_without_hiding_the_original_error(tmp_path: Path) -> None:
    named = start_named(tmp_path / "named")
    try:
        updater = updater_for(named)
        with (
            pytest.raises(RuntimeError, match="the CA refused") as failure,
            dns01.published_txt(updater, PUSH_CHALLENGE, token(), servers_of(named)),
        ):
            named.stop()  # the server goes away: the removal cannot succeed
            raise RuntimeError("the CA refused")
    finally:
        named.stop()
    assert str(failure.value) == "the CA refused"
    [note] = failure.value.__notes__
    assert note.startswith(f"the TXT record {PUSH_CHALLENGE} was not removed: DNS update")
    assert "connection refused" in note


def test_removal_failure_is_added_to_the_message_of_a_dns01_error(tmp_path: Path) -> None:
    named = start_named(tmp_path / "named")
    try:
        error = PropagationTimeout("TXT did not reach ns2", ["ns2.internal.test"])
        with (
            pytest.raises(PropagationTimeout) as failure,
            dns01.published_txt(updater_for(named), PUSH_CHALLENGE, "v", servers_of(named)),
        ):
            named.stop()
            raise error
    finally:
        named.stop()
    assert str(failure.value).startswith(
        f"TXT did not reach ns2; also, the TXT record {PUSH_CHALLENGE} was not removed:"
    )


def test_authoritative_servers_of_a_zone_the_server_does_not_serve(primary: Named) -> None:
    with pytest.raises(Dns01Error, match=r"lists no NS records for zone other\.test .*REFUSED"):
        dns01.authoritative_servers("other.test", via=primary.server, port=primary.port)


def test_authoritative_servers_when_nothing_answers() -> None:
    with pytest.raises(Dns01Error, match=r"cannot look up the NS .*connection refused|no answer"):
        dns01.authoritative_servers(ZONE, via=f"127.0.0.1:{h.free_port()}", timeout=0.3)


# --- names, secrets, settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("push.internal.test", "_acme-challenge.push.internal.test"),
        ("Push.Internal.Test.", "_acme-challenge.push.internal.test"),
        ("*.internal.test", "_acme-challenge.internal.test"),
        ("internal.test", "_acme-challenge.internal.test"),
    ],
)
def test_challenge_name(domain: str, expected: str) -> None:
    assert dns01.challenge_name(domain, ZONE) == expected


def test_challenge_name_outside_the_zone_names_both() -> None:
    with pytest.raises(NotInZoneError) as failure:
        dns01.challenge_name("push.example.com", ZONE)
    assert str(failure.value) == (
        "_acme-challenge.push.example.com (the DNS-01 challenge name of push.example.com) is"
        " not inside the DNS zone internal.test: the zone must be the one that holds the"
        " certificate's names"
    )
    with pytest.raises(NotInZoneError):
        dns01.challenge_name("push.notinternal.test", ZONE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ns1.internal.test", ("ns1.internal.test", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert dns01.parse_server(text) == expected


@pytest.mark.parametrize("text", ["", "ns1:", "ns1:http", "ns1:70000", "[::1]:x", "[::1]:", "[::1"])
def test_parse_server_refuses(text: str) -> None:
    with pytest.raises(Dns01Error, match="is not a DNS server"):
        dns01.parse_server(text)


def test_secret_is_in_no_repr_nor_message() -> None:
    updater = DnsUpdater("127.0.0.1:53", ZONE, KEY_NAME, ALGORITHM, SECRET)
    assert SECRET not in repr(updater) and SECRET not in str(updater)
    assert repr(updater) == (
        "DnsUpdater(server='127.0.0.1:53', zone='internal.test', tsig_key_name='acme-update',"
        " tsig_algorithm='hmac-sha256')"
    )
    with pytest.raises(Dns01Error) as failure:
        DnsUpdater("127.0.0.1", ZONE, KEY_NAME, ALGORITHM, "not base64 at all!")
    assert str(failure.value) == "the secret of TSIG key 'acme-update' is not base64 text"
    assert failure.value.__cause__ is None and "base64 at all" not in repr(failure.value)


def test_secret_may_be_a_bind_key_clause_or_raw_bytes(primary: Named) -> None:
    clause = f'key "{KEY_NAME}" {{\n\talgorithm {ALGORITHM};\n\tsecret "{SECRET}";\n}};\n'
    for secret in (clause, base64.b64decode(SECRET), f"  {SECRET}\n"):
        value = token()
        updater = updater_for(primary, tsig_secret=secret)  # type: ignore[arg-type]
        updater.add_txt(PUSH_CHALLENGE, value)
        updater.delete_txt(PUSH_CHALLENGE, value)


def test_unknown_algorithm_lists_the_known_ones() -> None:
    with pytest.raises(Dns01Error, match=r"'hmac-sha3' is not a TSIG algorithm .*hmac-sha256"):
        DnsUpdater("127.0.0.1", ZONE, KEY_NAME, "hmac-sha3", SECRET)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(Dns01Error, match="secret of TSIG key 'acme-update' is empty"):
        DnsUpdater("127.0.0.1", ZONE, KEY_NAME, ALGORITHM, "")
