"""ACME DNS-01 answers through RFC 2136 dynamic updates signed with TSIG, from the control node.

The control node adds ``_acme-challenge.<domain>`` TXT records at the zone's primary server,
waits until EVERY authoritative server of the zone answers them (asked directly, no recursion,
bounded in time), lets the CA validate, and removes the records afterwards, on failure too.

    updater = DnsUpdater("ns1.internal.example", "internal.example", "acme-update",
                         "hmac-sha256", secret_base64)
    publisher = Dns01Publisher(updater)          # NS servers found on first use
    issued = acme.obtain_certificate_dns01(settings, account_key, csr_pem,
                                           publisher.publish, publisher.unpublish)

    # or one record by hand (a pre-flight check that the key may update the name):
    servers = authoritative_servers("internal.example", via="ns1.internal.example")
    with published_txt(updater, challenge_name("push.internal.example", "internal.example"),
                       "probe", servers):
        ...

Every failure is a `Dns01Error`: `DnsUpdateError` (the update was refused or the server could
not be reached; the message names the server, the zone and the reason in words),
`PropagationTimeout` (names the lagging servers and what they answered) or `NotInZoneError`.
The TSIG secret is never part of a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import secrets
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
from dns.rdtypes.ANY.TXT import TXT

DEFAULT_PORT = 53
#: Upper bound of one DNS query while looking up servers or waiting for a record, in seconds.
QUERY_TIMEOUT = 3.0
#: Upper bound of one dynamic update (sent over TCP), in seconds.
UPDATE_TIMEOUT = 10.0
#: TTL of challenge records: short, so that no resolver keeps a stale answer for long.
CHALLENGE_TTL = 60
#: How long to wait for every authoritative server to answer a new record, in seconds.
PROPAGATION_TIMEOUT = 120.0
PROPAGATION_INTERVAL = 2.0

CHALLENGE_LABEL = "_acme-challenge"

TSIG_ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}

log = logging.getLogger(__name__)


class Dns01Error(RuntimeError):
    """A DNS-01 step failed; the message says which, where and why (never the TSIG secret)."""


class DnsUpdateError(Dns01Error):
    """A dynamic update failed. ``refused`` is True when the server answered and changed
    nothing (a refusal), False when the outcome is unknown (timeout, connection lost)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class PropagationTimeout(Dns01Error):
    """Not every authoritative server answered the record in time; ``lagging`` names them."""

    def __init__(self, message: str, lagging: Sequence[str]) -> None:
        super().__init__(message)
        self.lagging = tuple(lagging)


class NotInZoneError(Dns01Error, ValueError):
    """A challenge name lies outside the zone that is updated."""


# --- names and addresses ------------------------------------------------------------------------


def challenge_name(domain: str, zone: str) -> str:
    """The TXT name that answers DNS-01 for ``domain``, checked to lie inside ``zone``.

    A wildcard is validated at its base name (RFC 8555, section 8.4).

        challenge_name("push.internal.test", "internal.test")  # _acme-challenge.push.internal.test
        challenge_name("*.internal.test", "internal.test")  # "_acme-challenge.internal.test"
        challenge_name("push.example.com", "internal.test")  # NotInZoneError naming both
    """
    base = domain.strip().rstrip(".").lower().removeprefix("*.")
    name = f"{CHALLENGE_LABEL}.{base}"
    check_in_zone(name, zone, f" (the DNS-01 challenge name of {domain})")
    return name


def check_in_zone(name: str, zone: str, what: str = "") -> None:
    """Raise NotInZoneError unless ``name`` is ``zone`` or below it.

    check_in_zone("_acme-challenge.push.internal.test", "internal.test")  # fine
    """
    if not _absolute(name).is_subdomain(_absolute(zone)):
        raise NotInZoneError(
            f"{name.rstrip('.')}{what} is not inside the DNS zone {zone.rstrip('.')}: the zone"
            " must be the one that holds the certificate's names"
        )


def parse_server(server: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address into (host, port).

    parse_server("ns1.example.org") == ("ns1.example.org", 53)
    parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    parse_server("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    """
    text = server.strip()
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d*))?", text)
    if bracketed:
        host, port = bracketed.group(1), bracketed.group(2)
    elif text.startswith("["):
        host, port = "", None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        raise Dns01Error(f"{server!r} is not a DNS server (host, host:port or [IPv6]:port)")
    return host, int(port) if port else default_port


def _endpoint(address: str, port: int) -> str:
    """address:port, with brackets around IPv6 addresses."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _system_addresses(host: str, port: int) -> list[str]:
    """Addresses of ``host`` from the control node's resolver, IPv4 first ([] when unknown)."""
    if _is_ip(host):
        return [host]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return []
    found = _unique([str(info[4][0]) for info in infos])
    return sorted(found, key=lambda address: ":" in address)


def _absolute(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name
    try:
        return dns.name.from_text(name.strip())
    except dns.exception.DNSException as error:
        raise Dns01Error(f"{name!r} is not a DNS name: {error}") from error


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- TSIG ---------------------------------------------------------------------------------------


def lookup_tsig_algorithm(name: str) -> dns.name.Name:
    """The TSIG algorithm for a name such as ``hmac-sha256`` (case and final dot ignored).

    lookup_tsig_algorithm("HMAC-SHA256.") == dns.tsig.HMAC_SHA256
    """
    algorithm = TSIG_ALGORITHMS.get(name.strip().rstrip(".").lower())
    if algorithm is None:
        raise Dns01Error(
            f"{name!r} is not a TSIG algorithm (use one of {', '.join(TSIG_ALGORITHMS)})"
        )
    return algorithm


def parse_tsig_secret(text: str) -> str:
    """The base64 secret from a bare secret or from a BIND key clause (``tsig-keygen`` output).

    parse_tsig_secret("c2VjcmV0\\n") == "c2VjcmV0"
    parse_tsig_secret('key "acme" { algorithm hmac-sha256; secret "c2VjcmV0"; };') == "c2VjcmV0"
    """
    clause = re.search(r'\bsecret\s+"([^"]*)"', text)
    secret = clause.group(1) if clause else text
    return "".join(secret.split())


def _tsig_key(key_name: str, algorithm: dns.name.Name, secret: bytes | str) -> dns.tsig.Key:
    """A dnspython TSIG key; ``secret`` is base64 text (str) or the raw key (bytes)."""
    if isinstance(secret, str):
        try:
            raw = base64.b64decode(parse_tsig_secret(secret), validate=True)
        except (binascii.Error, ValueError):
            raise Dns01Error(f"the secret of TSIG key {key_name!r} is not base64 text") from None
    else:
        raw = secret
    if not raw:
        raise Dns01Error(f"the secret of TSIG key {key_name!r} is empty")
    return dns.tsig.Key(_absolute(key_name), raw, algorithm)


# --- dynamic updates ----------------------------------------------------------------------------


class DnsUpdater:
    """Sends TSIG-signed RFC 2136 updates of TXT records in one zone to one (primary) server.

    ``tsig_secret`` is the base64 text of the key (as ``tsig-keygen`` prints it; a whole BIND
    key clause is accepted too) or, as bytes, the raw key.

        updater = DnsUpdater("127.0.0.1:5353", "internal.test", "acme-update", "hmac-sha256",
                             "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")
        updater.add_txt("_acme-challenge.push.internal.test", "token-digest", ttl=60)
        updater.delete_txt("_acme-challenge.push.internal.test", "token-digest")
    """

    def __init__(
        self,
        server: str,
        zone: str,
        tsig_key_name: str,
        tsig_algorithm: str,
        tsig_secret: bytes | str,
        *,
        timeout: float = UPDATE_TIMEOUT,
    ) -> None:
        self.server = server
        self.host, self.port = parse_server(server)
        self.zone = _text(_absolute(zone))
        self.tsig_key_name = tsig_key_name
        self.tsig_algorithm = _text(lookup_tsig_algorithm(tsig_algorithm))
        self.timeout = timeout
        self._key = _tsig_key(tsig_key_name, _absolute(self.tsig_algorithm), tsig_secret)

    def __repr__(self) -> str:
        return (
            f"DnsUpdater(server={self.server!r}, zone={self.zone!r},"
            f" tsig_key_name={self.tsig_key_name!r}, tsig_algorithm={self.tsig_algorithm!r})"
        )

    __str__ = __repr__

    def add_txt(self, name: str, value: str, ttl: int = CHALLENGE_TTL) -> None:
        """Add ``value`` to the TXT records of ``name`` (other values of the name stay).

        updater.add_txt("_acme-challenge.push.internal.test", "digest")
        """
        update = self._update(name)
        update.add(_absolute(name), ttl, _txt(value))
        self._send(update, f"adding TXT {name.rstrip('.')}")

    def delete_txt(self, name: str, value: str) -> None:
        """Remove ``value`` from the TXT records of ``name``; nothing to remove is fine.

        updater.delete_txt("_acme-challenge.push.internal.test", "digest")
        """
        update = self._update(name)
        update.delete(_absolute(name), _txt(value))
        self._send(update, f"removing TXT {name.rstrip('.')}")

    def _update(self, name: str) -> dns.update.UpdateMessage:
        try:
            check_in_zone(name, self.zone)
        except NotInZoneError as error:
            raise self._failure(f"updating {name}", str(error), refused=True) from None
        return dns.update.UpdateMessage(self.zone, keyring=self._key)

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        """Send over TCP; any failure becomes one DnsUpdateError in words."""
        try:
            address = self._address()
            response = dns.query.tcp(update, address, timeout=self.timeout, port=self.port)
        except dns.tsig.PeerError as error:
            raise self._failure(what, self._tsig_reason(error), refused=True) from None
        except dns.exception.Timeout:
            raise self._failure(what, f"no answer within {self.timeout:g} s") from None
        except ConnectionRefusedError:
            reason = f"connection refused (is a DNS server listening on TCP port {self.port}?)"
            raise self._failure(what, reason) from None
        except OSError as error:
            raise self._failure(what, f"cannot reach it: {error.strerror or error}") from None
        except dns.exception.DNSException as error:
            reason = f"its answer cannot be used: {type(error).__name__}: {error}"
            raise self._failure(what, reason) from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise self._failure(what, self._rcode_reason(rcode, what), refused=True)

    def _address(self) -> str:
        addresses = _system_addresses(self.host, self.port)
        if not addresses:
            raise OSError(0, f"the name {self.host} does not resolve on the control node")
        return addresses[0]

    def _failure(self, what: str, reason: str, refused: bool = False) -> DnsUpdateError:
        return DnsUpdateError(
            f"DNS update ({what}) of zone {self.zone} at {self.server} failed: {reason}",
            refused=refused,
        )

    def _tsig_reason(self, error: dns.tsig.PeerError) -> str:
        key = repr(self.tsig_key_name)
        if isinstance(error, dns.tsig.PeerBadKey):
            return (
                f"NOTAUTH (TSIG BADKEY): the server does not know TSIG key {key} with algorithm"
                f" {self.tsig_algorithm} (check the key name and algorithm)"
            )
        if isinstance(error, dns.tsig.PeerBadSignature):
            return (
                f"NOTAUTH (TSIG BADSIG): the server rejected the signature made with TSIG key"
                f" {key}: the secret is wrong"
            )
        if isinstance(error, dns.tsig.PeerBadTime):
            return (
                "NOTAUTH (TSIG BADTIME): the clocks of the control node and the DNS server"
                " differ by more than the TSIG fudge (300 s)"
            )
        return f"NOTAUTH: the server rejected TSIG key {key}: {type(error).__name__}"

    def _rcode_reason(self, rcode: dns.rcode.Rcode, what: str) -> str:
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.NOTAUTH:
            return (
                f"NOTAUTH: the server is not authoritative for zone {self.zone} (the zone does"
                " not exist there)"
            )
        if rcode == dns.rcode.NOTZONE:
            return f"NOTZONE: the name is not inside zone {self.zone} as the server has it"
        if rcode == dns.rcode.REFUSED:
            return (
                f"REFUSED: TSIG key {self.tsig_key_name!r} may not do this ({what}; see the"
                f" zone's update-policy), or the server does not serve zone {self.zone} or"
                " accepts no updates for it"
            )
        if rcode == dns.rcode.SERVFAIL:
            return "SERVFAIL: the server could not apply the update (see its log)"
        if rcode == dns.rcode.NOTIMP:
            return "NOTIMP: the server does not support dynamic updates"
        return f"{text}: the server did not apply the update"


def _txt(value: str) -> TXT:
    """A TXT rdata holding ``value`` as one string (split in 255-byte pieces when longer)."""
    data = value.encode()
    pieces = [data[start : start + 255] for start in range(0, len(data), 255)] or [b""]
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, pieces)


# --- authoritative servers and propagation ------------------------------------------------------


@dataclass(frozen=True)
class AuthoritativeServer:
    """One NS of a zone: its name, its addresses (IPv4 first) and the port it is asked on.

    str(AuthoritativeServer("ns1.internal.test", ("127.0.0.1",)))
    # "ns1.internal.test (127.0.0.1:53)"
    """

    name: str
    addresses: tuple[str, ...]
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        endpoints = ", ".join(_endpoint(address, self.port) for address in self.addresses)
        return f"{self.name} ({endpoints})"


def _query(
    name: str | dns.name.Name, rdtype: dns.rdatatype.RdataType, address: str, port: int,
    timeout: float,
) -> dns.message.Message:  # fmt: skip
    """Ask one server directly (recursion not desired), UDP with a TCP retry when truncated."""
    query = dns.message.make_query(_absolute(name), rdtype)
    query.flags &= ~dns.flags.RD
    response, _ = dns.query.udp_with_fallback(query, address, timeout=timeout, port=port)
    return response


def _transport_reason(error: Exception, timeout: float) -> str:
    """A failed query in words."""
    if isinstance(error, dns.exception.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError):
        return f"unreachable ({error.strerror or error})"
    return f"an unusable answer ({type(error).__name__}: {error})"


_QUERY_FAILURES = (dns.exception.DNSException, OSError)


def authoritative_servers(
    zone: str, via: str, port: int = DEFAULT_PORT, timeout: float = QUERY_TIMEOUT
) -> list[AuthoritativeServer]:
    """The zone's NS servers and their addresses, asked of ``via`` (usually the primary).

    Addresses come from ``via`` first (glue, in-zone names), then from the control node's
    resolver. ``port`` is the port every NS is asked on later (53 outside tests).

        authoritative_servers("internal.test", via="127.0.0.1:5353", port=5353)
        # [AuthoritativeServer("ns1.internal.test", ("127.0.0.1",), 5353), ...]
    """
    zone_name = _absolute(zone)
    host, via_port = parse_server(via)
    failure = f"cannot look up the NS of zone {_text(zone_name)} at {via}"
    via_addresses = _system_addresses(host, via_port)
    if not via_addresses:
        raise Dns01Error(f"{failure}: {host} does not resolve on the control node")
    via_address = via_addresses[0]
    try:
        response = _query(zone_name, dns.rdatatype.NS, via_address, via_port, timeout)
    except _QUERY_FAILURES as error:
        raise Dns01Error(f"{failure}: {_transport_reason(error, timeout)}") from None
    ns_names = sorted(
        _text(rdata.target)
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.NS and rrset.name == zone_name
        for rdata in rrset
    )
    if not ns_names:
        answered = dns.rcode.to_text(response.rcode())
        raise Dns01Error(
            f"{via} lists no NS records for zone {_text(zone_name)} (it answered {answered}):"
            " is it a server of that zone?"
        )
    glue = _addresses_in(response.additional)
    servers = []
    for ns in ns_names:
        addresses = glue.get(ns) or _addresses_via(ns, via_address, via_port, timeout)
        addresses = addresses or _system_addresses(ns, port)
        if not addresses:
            raise Dns01Error(
                f"cannot find an address of {ns}, a server of zone {_text(zone_name)}: neither"
                f" {via} nor the control node's resolver knows one"
            )
        servers.append(AuthoritativeServer(ns, tuple(addresses), port))
    return servers


def _addresses_in(rrsets: list) -> dict[str, list[str]]:
    """name -> A then AAAA addresses found in a message section."""
    found: dict[str, list[str]] = {}
    for rrset in sorted(rrsets, key=lambda rrset: rrset.rdtype != dns.rdatatype.A):
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            found.setdefault(_text(rrset.name), []).extend(rdata.address for rdata in rrset)
    return found


def _addresses_via(name: str, address: str, port: int, timeout: float) -> list[str]:
    """A then AAAA addresses of ``name`` as the server at address:port answers them."""
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            response = _query(name, rdtype, address, port, timeout)
        except _QUERY_FAILURES:
            continue
        found += _addresses_in(response.answer).get(name, [])
    return found


def wait_for_txt(
    name: str,
    value: str,
    servers: Sequence[AuthoritativeServer],
    timeout: float = PROPAGATION_TIMEOUT,
    interval: float = PROPAGATION_INTERVAL,
    query_timeout: float = QUERY_TIMEOUT,
) -> None:
    """Wait until every server answers TXT ``value`` at ``name`` authoritatively.

    Each server is asked directly (any one of its addresses will do) every ``interval``
    seconds until it does; at most ``timeout`` seconds in all (one round is always made).
    Raises PropagationTimeout naming each lagging server and what it answered.

        wait_for_txt("_acme-challenge.push.internal.test", "digest", servers, timeout=60)
    """
    if not servers:
        raise Dns01Error(f"no authoritative server to ask for TXT {name}")
    deadline = time.monotonic() + timeout
    lagging: dict[AuthoritativeServer, str] = {server: "" for server in servers}
    while True:
        for server in list(lagging):
            remaining = max(0.1, deadline - time.monotonic())
            answer = _server_lag(server, name, value, min(query_timeout, remaining))
            if answer is None:
                del lagging[server]
            else:
                lagging[server] = answer
        remaining = deadline - time.monotonic()
        if not lagging:
            return
        if remaining <= 0:
            raise _propagation_timeout(name, value, servers, lagging, timeout)
        time.sleep(min(interval, remaining))


def _propagation_timeout(
    name: str,
    value: str,
    servers: Sequence[AuthoritativeServer],
    lagging: dict[AuthoritativeServer, str],
    timeout: float,
) -> PropagationTimeout:
    details = "; ".join(f"{server} answered {answer}" for server, answer in lagging.items())
    in_sync = [str(server) for server in servers if server not in lagging]
    message = (
        f"TXT {name.rstrip('.')} = {value!r} did not reach every authoritative server within"
        f" {timeout:g} s: lagging: {details}"
    )
    if in_sync:
        message += f" (in sync: {', '.join(in_sync)})"
    return PropagationTimeout(message, [server.name for server in lagging])


def _server_lag(server: AuthoritativeServer, name: str, value: str, timeout: float) -> str | None:
    """None when one of the server's addresses answers ``value``, else what they answered."""
    answers = []
    for address in server.addresses:
        try:
            response = _query(name, dns.rdatatype.TXT, address, server.port, timeout)
        except _QUERY_FAILURES as error:
            answers.append(_transport_reason(error, timeout))
            continue
        values = _txt_values(response, name)
        if value in values:
            return None
        answers.append(_describe_answer(response, values))
    if len(server.addresses) == 1:
        return answers[0]
    return ", ".join(
        f"{_endpoint(address, server.port)}: {answer}"
        for address, answer in zip(server.addresses, answers, strict=True)
    )


def _txt_values(response: dns.message.Message, name: str) -> list[str]:
    """The TXT strings an authoritative answer holds for ``name`` ([] when not authoritative)."""
    if not response.flags & dns.flags.AA or response.rcode() != dns.rcode.NOERROR:
        return []
    absolute = _absolute(name)
    return [
        b"".join(rdata.strings).decode(errors="replace")
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT and rrset.name == absolute
        for rdata in rrset
    ]


def _describe_answer(response: dns.message.Message, values: list[str]) -> str:
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return "NXDOMAIN (no such name)"
    if rcode == dns.rcode.REFUSED:
        return "REFUSED (it does not serve the zone)"
    if rcode != dns.rcode.NOERROR:
        return dns.rcode.to_text(rcode)
    if not response.flags & dns.flags.AA:
        return "a non-authoritative answer (it does not serve the zone)"
    if not values:
        return "no TXT record"
    return "TXT " + ", ".join(repr(value) for value in values)


# --- add, wait, run, always remove --------------------------------------------------------------


@contextmanager
def published_txt(
    updater: DnsUpdater,
    name: str,
    value: str,
    servers: Sequence[AuthoritativeServer],
    *,
    ttl: int = CHALLENGE_TTL,
    timeout: float = PROPAGATION_TIMEOUT,
    interval: float = PROPAGATION_INTERVAL,
) -> Iterator[None]:
    """Add a TXT record, wait until every server answers it, run the body, ALWAYS remove it.

    When the body (or the wait) fails, a failed removal is added to that error (its message
    for Dns01Error, a note otherwise) and the original error is raised; when only the
    removal fails, its DnsUpdateError is raised.

        with published_txt(updater, "_acme-challenge.push.internal.test", "x", servers):
            ask_the_ca_to_validate()
    """
    try:
        updater.add_txt(name, value, ttl)
    except DnsUpdateError as error:
        if not error.refused:  # it may have been applied
            _remove_after_failure(updater, name, value, error)
        raise
    try:
        wait_for_txt(name, value, servers, timeout, interval)
        yield
    except BaseException as error:
        _remove_after_failure(updater, name, value, error)
        raise
    updater.delete_txt(name, value)


def _remove_after_failure(
    updater: DnsUpdater, name: str, value: str, error: BaseException
) -> None:
    """Remove the record after ``error``; a failed removal is told without hiding ``error``."""
    try:
        updater.delete_txt(name, value)
    except DnsUpdateError as removal:
        add_failure(error, f"the TXT record {name} was not removed: {removal}")


def add_failure(error: BaseException, text: str) -> None:
    """Attach a second failure to ``error`` without hiding it: appended to the message of a
    Dns01Error, as a note on any other exception; and logged.

        add_failure(original, "the TXT record was not removed: ...")
    """
    log.error(text)
    if isinstance(error, Dns01Error) and len(error.args) == 1:
        error.args = (f"{error.args[0]}; also, {text}",)
    else:
        error.add_note(text)


def probe_update_access(
    updater: DnsUpdater,
    domain: str,
    servers: Sequence[AuthoritativeServer] | None = None,
    *,
    timeout: float = PROPAGATION_TIMEOUT,
    interval: float = PROPAGATION_INTERVAL,
    port: int = DEFAULT_PORT,
) -> None:
    """Before any host changes: add a random TXT at ``domain``'s challenge name, wait until
    every authoritative server answers it, remove it. Raises Dns01Error naming the problem
    (key, policy, zone, lagging servers).

        probe_update_access(updater, "push.internal.test")
    """
    name = challenge_name(domain, updater.zone)
    if servers is None:
        servers = authoritative_servers(updater.zone, via=updater.server, port=port)
    probe = f"mmpush-probe-{secrets.token_hex(8)}"
    with published_txt(updater, name, probe, servers, timeout=timeout, interval=interval):
        pass


# --- callbacks for mmpush.acme.obtain_certificate_dns01 ------------------------------------------


@dataclass
class Dns01Publisher:
    """``publish(name, value)`` / ``unpublish(name, value)`` for
    `mmpush.acme.obtain_certificate_dns01`: publish adds the TXT record and returns once every
    authoritative server answers it; unpublish removes it. ``servers`` None: the zone's NS,
    looked up at the updater's server on first use (asked on ``port``).

        publisher = Dns01Publisher(updater, timeout=120)
        acme.obtain_certificate_dns01(settings, key, csr, publisher.publish, publisher.unpublish)
    """

    updater: DnsUpdater
    servers: Sequence[AuthoritativeServer] | None = None
    ttl: int = CHALLENGE_TTL
    timeout: float = PROPAGATION_TIMEOUT
    interval: float = PROPAGATION_INTERVAL
    port: int = DEFAULT_PORT
    published: list[tuple[str, str]] = field(default_factory=list)

    def publish(self, name: str, value: str) -> None:
        """Add TXT ``value`` at ``name`` and wait until every authoritative server has it."""
        check_in_zone(name, self.updater.zone)
        self.updater.add_txt(name, value, self.ttl)
        self.published.append((name, value))
        wait_for_txt(name, value, self.authoritative(), self.timeout, self.interval)

    def unpublish(self, name: str, value: str) -> None:
        """Remove TXT ``value`` at ``name`` (nothing there is fine)."""
        self.updater.delete_txt(name, value)
        if (name, value) in self.published:
            self.published.remove((name, value))

    def authoritative(self) -> Sequence[AuthoritativeServer]:
        """The servers asked while waiting (looked up once)."""
        if self.servers is None:
            self.servers = authoritative_servers(
                self.updater.zone, via=self.updater.server, port=self.port
            )
        return self.servers
