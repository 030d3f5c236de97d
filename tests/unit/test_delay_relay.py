"""mmpush.lab.delay_relay: the lab's netem stand-in, run for real on 127.0.0.1 against small
asyncio servers (an echo, a half-closing one, a sink that never reads). Delays are checked as
lower bounds only; every wait is bounded by TIMEOUT."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mmpush.lab import delay_relay
from mmpush.lab.delay_relay import (
    Relay,
    RelayConfig,
    format_address,
    parse_address,
    relay_unit,
)

TIMEOUT = 20.0
LOOPBACK = "127.0.0.1"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(scenario: Awaitable[None]) -> None:
    """Run one test's scenario in a fresh event loop, bounded by TIMEOUT."""

    async def bounded() -> None:
        await asyncio.wait_for(scenario, TIMEOUT)

    asyncio.run(bounded())


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    """A loopback server running ``handler`` per connection; yields its port."""
    started = await asyncio.start_server(handler, LOOPBACK, 0)
    try:
        yield int(started.sockets[0].getsockname()[1])
    finally:
        started.close()


@asynccontextmanager
async def relay_to(port: int, delay_ms: float = 1.0, **options: float) -> AsyncIterator[Relay]:
    """A relay on a free loopback port to ``port``."""
    config = RelayConfig((LOOPBACK, 0), (LOOPBACK, port), delay_ms, **options)  # type: ignore[arg-type]
    async with Relay(config) as relay:
        yield relay


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back everything, then close when the client half-closes."""
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    writer.close()


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF (a reset counts as EOF: the peer is gone either way)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


# --- the byte stream --------------------------------------------------------------------------


def test_a_large_payload_arrives_intact_and_in_order() -> None:
    payload = os.urandom(8 * 1024 * 1024)

    async def scenario() -> None:
        async with server(echo) as port, relay_to(port, 2.0, buffer_chunks=4) as relay:
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)

            async def send() -> None:
                for start in range(0, len(payload), 100_000):  # not aligned with any chunk
                    writer.write(payload[start : start + 100_000])
                    await writer.drain()
                writer.write_eof()

            sending = asyncio.create_task(send())
            echoed = await reader.read()
            await sending
            writer.close()
            assert len(echoed) == len(payload)
            assert echoed == payload
            bound = relay.config.max_buffered_bytes  # each way
            assert bound == 6 * delay_relay.CHUNK_BYTES
            assert 0 < relay.stats.peak_buffered_bytes <= 2 * bound, "buffers stay bounded"

    run(scenario())


def test_a_slow_reader_does_not_fill_the_relay() -> None:
    """A target that never reads: the client's writes stall once the relay's bounded buffer
    and the sockets' buffers are full, instead of the relay taking everything in."""
    release = asyncio.Event()
    block = b"x" * (1024 * 1024)

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    async def scenario() -> None:
        async with server(sink) as port, relay_to(port, 1.0, buffer_chunks=8) as relay:
            _reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            written = 0
            while written < 256 * len(block):
                writer.write(block)
                try:
                    await asyncio.wait_for(writer.drain(), 1.0)
                except TimeoutError:
                    break  # stalled: the relay stopped reading
                written += len(block)
            assert relay.stats.peak_buffered_bytes <= relay.config.max_buffered_bytes
            assert written < 128 * len(block), f"the relay took {written} bytes in"
            writer.transport.abort()
            release.set()

    run(scenario())


# --- the delay --------------------------------------------------------------------------------


async def round_trips(port: int, count: int) -> list[float]:
    """Seconds for each of ``count`` request/answer round trips on one connection."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    elapsed = []
    for index in range(count):
        message = f"ping {index}\n".encode()
        started = time.monotonic()
        writer.write(message)
        await writer.drain()
        answer = await reader.readexactly(len(message))
        elapsed.append(time.monotonic() - started)
        assert answer == message
    writer.close()
    return elapsed


def test_each_round_trip_takes_at_least_twice_the_delay() -> None:
    async def scenario() -> None:
        async with server(echo) as port, relay_to(port, 30.0) as relay:
            for seconds in await round_trips(relay.port, 5):
                assert seconds >= 2 * 0.030, f"a round trip took {seconds * 1000:.1f} ms"

    run(scenario())


def test_a_connections_first_data_waits_the_extra_delay() -> None:
    async def scenario() -> None:
        async with server(echo) as port, relay_to(port, 20.0, first_data_delay_ms=60.0) as relay:
            first, *later = await round_trips(relay.port, 3)
            assert first >= 2 * 0.020 + 0.060, f"the first took {first * 1000:.1f} ms"
            assert all(seconds >= 2 * 0.020 for seconds in later)

    run(scenario())


# --- half-close and close ---------------------------------------------------------------------


def test_the_clients_half_close_reaches_the_target_which_can_still_answer() -> None:
    async def count_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = await reader.read()  # until the client's FIN
        writer.write(f"got {len(received)} bytes".encode())
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with server(count_then_answer) as port, relay_to(port, 5.0) as relay:
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            writer.write(b"a" * 1000)
            writer.write_eof()
            assert await reader.read() == b"got 1000 bytes"  # and then EOF: the close passed on
            writer.close()

    run(scenario())


def test_the_targets_half_close_reaches_the_client_which_can_still_send() -> None:
    received: list[bytes] = []

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        writer.write_eof()
        received.append(await reader.read())
        writer.close()

    async def scenario() -> None:
        async with server(greet_then_listen) as port, relay_to(port, 5.0) as relay:
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            assert await reader.read() == b"hello"  # data, then EOF
            writer.write(b"still here")
            writer.write_eof()
            await asyncio.wait_for(_until(lambda: bool(received)), TIMEOUT)
            writer.close()
        assert received == [b"still here"]

    run(scenario())


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (the caller bounds it) until ``condition()`` holds."""
    while not condition():
        await asyncio.sleep(0.01)


def test_a_client_is_closed_when_the_target_is_down() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind((LOOPBACK, 0))
        dead_port = probe.getsockname()[1]

    async def scenario() -> None:
        async with relay_to(dead_port) as relay:
            reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
            assert await read_to_eof(reader) == b""
            writer.close()
            assert relay.stats.failed_connects == 1
            assert relay.stats.connections == 0

    run(scenario())


# --- many connections -------------------------------------------------------------------------


def test_many_connections_are_relayed_at_once() -> None:
    count = 64
    open_now = 0
    all_open = asyncio.Event()

    async def counting_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now
        open_now += 1
        if open_now == count:
            all_open.set()
        try:
            await echo(reader, writer)
        finally:
            open_now -= 1

    async def client(port: int, index: int) -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        message = f"client {index} ".encode() * 50
        writer.write(message)
        await all_open.wait()  # every client is connected through the relay at once
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer

    async def scenario() -> None:
        async with server(counting_echo) as port, relay_to(port, 10.0) as relay:
            answers = await asyncio.gather(*(client(relay.port, i) for i in range(count)))
            assert relay.stats.connections == count
        assert answers == [f"client {i} ".encode() * 50 for i in range(count)]

    run(scenario())


# --- addresses, the command line, the unit ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("0.0.0.0:443", ("0.0.0.0", 443)),
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("[::1]:8443", ("::1", 8443)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_addresses_parse_and_format_back(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address
    assert format_address(address) == text


@pytest.mark.parametrize("text", ["443", ":443", "host:", "host:http", "::1:443", "h:70000"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize(("delay", "first"), [(-1.0, 0.0), (25.0, -5.0), (float("nan"), 0.0)])
def test_bad_delays_are_refused(delay: float, first: float) -> None:
    with pytest.raises(ValueError):
        RelayConfig((LOOPBACK, 0), (LOOPBACK, 1), delay, first)
    with pytest.raises(ValueError):
        relay_unit("0.0.0.0:443", "127.0.0.1:8443", delay, first)


def test_the_unit_runs_the_relay_with_its_settings() -> None:
    unit = unit_sections(relay_unit("0.0.0.0:443", "127.0.0.1:8443", 25, first_data_delay_ms=50))
    (exec_start,) = unit["Service"]["ExecStart"]
    command = shlex.split(exec_start)
    assert command == [
        "/usr/bin/python3",
        delay_relay.RELAY_PATH,
        "--listen",
        "0.0.0.0:443",
        "--target",
        "127.0.0.1:8443",
        "--delay-ms",
        "25",
        "--first-data-delay-ms",
        "50",
    ]
    config = delay_relay.parse_args(command[2:])
    assert config == RelayConfig(("0.0.0.0", 443), ("127.0.0.1", 8443), 25.0, 50.0)
    service = unit["Service"]
    assert service["DynamicUser"] == ["yes"]
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


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


def test_the_unit_refuses_a_bad_address() -> None:
    with pytest.raises(ValueError):
        relay_unit("0.0.0.0", "127.0.0.1:8443", 25)


def test_the_file_runs_alone_on_a_host_with_only_python3() -> None:
    """The lab copies the file by itself: it must import nothing but the standard library
    (``-I``: no site-packages, no current directory on sys.path)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        listen_port = probe.getsockname()[1]

    async def scenario() -> None:
        async with server(echo) as target_port:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(Path(delay_relay.__file__)),
                "--listen",
                f"{LOOPBACK}:{listen_port}",
                "--target",
                f"{LOOPBACK}:{target_port}",
                "--delay-ms",
                "15",
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stderr is not None
                banner = await process.stderr.readline()  # logged once it listens
                assert b"relaying" in banner, banner
                for seconds in await round_trips(listen_port, 2):
                    assert seconds >= 2 * 0.015
            finally:
                process.terminate()
                await process.wait()

    run(scenario())


def test_the_command_line_refuses_a_bad_address() -> None:
    arguments = ["--listen", "443", "--target", "x:1", "--delay-ms", "5"]
    result = subprocess.run(
        [sys.executable, "-I", delay_relay.__file__, *arguments],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert "'443' is not HOST:PORT" in result.stderr
