"""A TCP relay that adds latency, for a lab whose kernel has no ``sch_netem``.

It listens on one address, connects to a target for each client, and holds every chunk it
reads, in each direction, for ``delay_ms`` before writing it on: a round trip through it costs
at least ``2 * delay_ms``. Order and the byte stream are kept, half-close (FIN) and close are
passed on after the same delay, buffers are bounded (a slow reader slows the writer down, it
does not fill the relay's memory), and each connection is independent (asyncio).

``first_data_delay_ms`` is added once, to a connection's first data from the client: the
client's TCP handshake ends at the relay, on the same host, so it costs nothing, while over a
real path it costs a round trip before any data. The lab measured "25 ms each way plus 50 ms
on a connection's first data" as its 50 ms round trip (reference/lab-facts.md, second round).

Standard library only: the lab copies this file onto lab hosts and runs it with their python3.

    python3 delay_relay.py --listen 0.0.0.0:443 --target 127.0.0.1:8443 --delay-ms 25 \\
        --first-data-delay-ms 50

    async with Relay(RelayConfig(("127.0.0.1", 0), ("127.0.0.1", 8443), delay_ms=25)) as relay:
        ...  # connect to relay.port

    relay_unit("0.0.0.0:443", "127.0.0.1:8443", 25)   # the systemd unit text the lab installs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

LOG = logging.getLogger("delay-relay")

#: The largest chunk read at once, and how many chunks may wait in each direction: together
#: they bound what one direction of a connection holds (RelayConfig.max_buffered_bytes, about
#: 4 MiB by default), and so the throughput: at most that much per delay.
CHUNK_BYTES = 64 * 1024
BUFFER_CHUNKS = 64
CONNECT_TIMEOUT_S = 5.0

#: Where the lab installs this file on a host, and the name of the unit that runs it.
RELAY_PATH = "/usr/local/lib/mmpush-lab/delay_relay.py"
RELAY_UNIT_NAME = "mmpush-lab-delay-relay.service"

Address = tuple[str, int]


@dataclass(frozen=True)
class RelayConfig:
    """What one relay does: ``RelayConfig(("0.0.0.0", 443), ("127.0.0.1", 8443), 25.0)``."""

    listen: Address
    target: Address
    delay_ms: float
    first_data_delay_ms: float = 0.0
    chunk_bytes: int = CHUNK_BYTES
    buffer_chunks: int = BUFFER_CHUNKS
    connect_timeout_s: float = CONNECT_TIMEOUT_S

    @property
    def max_buffered_bytes(self) -> int:
        """The most one direction of one connection holds: the queued chunks, the one being
        queued and the one being sent."""
        return (self.buffer_chunks + 2) * self.chunk_bytes

    def __post_init__(self) -> None:
        check_delays(self.delay_ms, self.first_data_delay_ms)
        if self.chunk_bytes < 1 or self.buffer_chunks < 1:
            raise ValueError("chunk_bytes and buffer_chunks are >= 1")


def check_delays(delay_ms: float, first_data_delay_ms: float) -> None:
    """Raise ValueError unless both delays are milliseconds >= 0: ``check_delays(25, 50)``."""
    if not all(math.isfinite(d) and d >= 0 for d in (delay_ms, first_data_delay_ms)):
        raise ValueError(f"delays are milliseconds >= 0, not {delay_ms} and {first_data_delay_ms}")


def parse_address(text: str) -> Address:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port).

    parse_address("0.0.0.0:443") == ("0.0.0.0", 443)
    parse_address("[::1]:8443") == ("::1", 8443)
    """
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:443")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (a port from 0 to 65535)")
    return host, int(port)


def format_address(address: Address) -> str:
    """The inverse of :func:`parse_address`: ``format_address(("::1", 443)) == "[::1]:443"``."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: The end of one direction's stream (the reader saw EOF), queued like data.
_EOF = b""


class _Stats:
    """Counters the tests read: how many bytes wait in the relay now, and at most."""

    def __init__(self) -> None:
        self.buffered_bytes = 0
        self.peak_buffered_bytes = 0
        self.connections = 0
        self.failed_connects = 0

    def add(self, size: int) -> None:
        self.buffered_bytes += size
        self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)

    def remove(self, size: int) -> None:
        self.buffered_bytes -= size


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    """No Nagle: a small chunk held for the delay must leave as soon as it is due."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _sleep_until(due: float) -> None:
    """Sleep until the event loop's clock reaches ``due`` (never wakes early)."""
    loop = asyncio.get_running_loop()
    while (left := due - loop.time()) > 0:
        await asyncio.sleep(left)


async def _read_side(
    reader: asyncio.StreamReader,
    queue: asyncio.Queue[tuple[float, bytes]],
    config: RelayConfig,
    extra_first_s: float,
    stats: _Stats,
) -> None:
    """Read chunks, stamp each with the time it is due out, queue them (blocks when full)."""
    loop = asyncio.get_running_loop()
    delay_s = config.delay_ms / 1000
    extra_s = extra_first_s
    while True:
        chunk = await reader.read(config.chunk_bytes)
        due = loop.time() + delay_s + extra_s
        extra_s = 0.0
        stats.add(len(chunk))
        await queue.put((due, chunk))
        if chunk == _EOF:
            return


async def _write_side(
    writer: asyncio.StreamWriter, queue: asyncio.Queue[tuple[float, bytes]], stats: _Stats
) -> None:
    """Write each queued chunk when it is due, in order; pass EOF on as a half-close."""
    while True:
        due, chunk = await queue.get()
        await _sleep_until(due)
        stats.remove(len(chunk))
        if chunk == _EOF:
            if writer.can_write_eof():
                writer.write_eof()
            await writer.drain()
            return
        writer.write(chunk)
        await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    config: RelayConfig,
    extra_first_s: float,
    stats: _Stats,
) -> None:
    """One direction: from ``reader`` to ``writer``, every chunk held for the delay."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=config.buffer_chunks)
    reading = asyncio.create_task(_read_side(reader, queue, config, extra_first_s, stats))
    writing = asyncio.create_task(_write_side(writer, queue, stats))
    try:
        await asyncio.gather(reading, writing)
    finally:
        for task in (reading, writing):
            task.cancel()
        for _due, chunk in _drain_queue(queue):
            stats.remove(len(chunk))


def _drain_queue(queue: asyncio.Queue[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Take everything still queued (a connection that failed drops its buffered data)."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _close(writer: asyncio.StreamWriter, abort: bool) -> None:
    """Close a side: gracefully (after what was written) or at once."""
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()


class Relay:
    """A running relay (an async context manager); ``port`` is where it listens.

    async with Relay(config) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    """

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.stats = _Stats()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port the relay listens on (useful when the configured one is 0)."""
        assert self._server is not None, "the relay is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on the configured address."""
        host, port = self.config.listen
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    async def close(self) -> None:
        """Stop listening and end every open connection (connections first: from Python
        3.12 on, ``wait_closed`` also waits for them)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        assert self._server is not None, "the relay is not started"
        await self._server.serve_forever()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._relay(client_reader, client_writer)
        except asyncio.CancelledError:
            # close() ends this connection: finish normally, or asyncio's stream callback logs
            # the cancellation as an error (it asks a cancelled task for its exception)
            pass
        finally:
            self._connections.discard(task)

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        """One client: connect to the target (or close the client), then pipe both ways."""
        config = self.config
        peer = client_writer.get_extra_info("peername")
        try:
            target_reader, target_writer = await asyncio.wait_for(
                asyncio.open_connection(*config.target), config.connect_timeout_s
            )
        except OSError as error:  # TimeoutError is an OSError
            self.stats.failed_connects += 1
            LOG.warning(
                "client %s: target %s unreachable (%s); closing the client",
                peer,
                format_address(config.target),
                error or "timed out",
            )
            await _close(client_writer, abort=False)
            return
        self.stats.connections += 1
        for writer in (client_writer, target_writer):
            _set_nodelay(writer)
        first_s = config.first_data_delay_ms / 1000
        upstream = asyncio.create_task(
            _pipe(client_reader, target_writer, config, first_s, self.stats)
        )
        downstream = asyncio.create_task(
            _pipe(target_reader, client_writer, config, 0.0, self.stats)
        )
        failed = True
        try:
            await asyncio.gather(upstream, downstream)
            failed = False
        except (OSError, asyncio.IncompleteReadError) as error:
            LOG.info("client %s: connection ended by an error (%s)", peer, error)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            await _close(target_writer, abort=failed)
            await _close(client_writer, abort=failed)


async def serve(config: RelayConfig) -> None:
    """Run a relay until cancelled (the CLI's main loop)."""
    async with Relay(config) as relay:
        LOG.warning(
            "relaying %s -> %s with %g ms each way (+%g ms on first data)",
            format_address((config.listen[0], relay.port)),
            format_address(config.target),
            config.delay_ms,
            config.first_data_delay_ms,
        )
        await relay.serve_forever()


def relay_unit(
    listen: str,
    target: str,
    delay_ms: float,
    first_data_delay_ms: float = 0.0,
    script: str = RELAY_PATH,
) -> str:
    """The systemd unit that runs this relay on a lab host (installed by the lab as
    :data:`RELAY_UNIT_NAME`, with this file at ``script``).

    relay_unit("0.0.0.0:443", "127.0.0.1:8443", 25, first_data_delay_ms=50)
    """
    parse_address(listen)
    parse_address(target)
    check_delays(delay_ms, first_data_delay_ms)
    command = " ".join(
        [
            "/usr/bin/python3",
            script,
            f"--listen {listen}",
            f"--target {target}",
            f"--delay-ms {delay_ms:g}",
            f"--first-data-delay-ms {first_data_delay_ms:g}",
        ]
    )
    return f"""\
# Managed by mmpush lab (mmpush/lab/delay_relay.py relay_unit): adds {delay_ms:g} ms each way
# (+{first_data_delay_ms:g} ms on a connection's first data) between {listen} and {target}.
[Unit]
Description=mmpush lab delay relay {listen} -> {target}
After=network.target

[Service]
Type=exec
ExecStart={command}
Restart=on-failure
RestartSec=1s
DynamicUser=yes
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectSystem=strict
ProtectHome=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
UMask=0077
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def parse_args(argv: Sequence[str] | None = None) -> RelayConfig:
    """The relay's configuration from its command line."""
    parser = argparse.ArgumentParser(
        description="TCP relay that adds latency in each direction (a netem stand-in)."
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept clients on")
    parser.add_argument("--target", required=True, help="HOST:PORT to connect each client to")
    parser.add_argument(
        "--delay-ms", type=float, required=True, help="added to every chunk, each way"
    )
    parser.add_argument(
        "--first-data-delay-ms",
        type=float,
        default=0.0,
        help="added once, to a connection's first data from the client (a handshake's cost)",
    )
    parser.add_argument("--buffer-chunks", type=int, default=BUFFER_CHUNKS)
    parser.add_argument("--verbose", action="store_true", help="log every failed connection")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return RelayConfig(
            parse_address(args.listen),
            parse_address(args.target),
            args.delay_ms,
            args.first_data_delay_ms,
            buffer_chunks=args.buffer_chunks,
        )
    except ValueError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 delay_relay.py --listen ... --target ... --delay-ms N``."""
    config = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
