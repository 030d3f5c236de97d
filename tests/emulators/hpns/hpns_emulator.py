#!/usr/bin/python3
"""HPNS EMULATOR: a stand-in for Mattermost's hosted push service (push.mattermost.com).

Tests only; standard library only. Installed in the lab as ``/usr/local/bin/hpns-emulator`` and
run by ``hpns-emulator.service`` on the host that lab DNS resolves ``push.mattermost.com`` (and
``global.``/``us.``/``eu.``/``ap.push.mattermost.com``) to.

* HTTPS (default :443) with ``/etc/hpns-emulator/fullchain.pem`` + ``privkey.pem``, a certificate
  issued by the lab's ACME CA. It answers like a push proxy: ``POST /api/v1/send_push`` and
  ``POST /api/v1/ack`` -> ``{"status":"OK"}`` (``FAIL`` for a missing server_id / device_id /
  ack id), ``GET /version``, ``GET /``; anything else 404. Every HTTPS request, whatever its path,
  is appended as one JSON line to ``<data-dir>/received.jsonl`` with ``path``, ``method``,
  ``host`` (Host header), ``sni`` (TLS server name, null when the client sent none), ``body``
  (parsed JSON, raw text, or null), ``headers``, ``client`` and ``received_at``.
* Plain HTTP (default :80) serves only ACME HTTP-01 tokens:
  ``GET /.well-known/acme-challenge/<token>`` returns ``<data-dir>/acme-challenge/<token>``.
* Without the certificate files at start, only HTTP runs, and the log says HTTPS is waiting for
  a certificate. SIGHUP reloads the certificate (and starts HTTPS if it was waiting).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EMULATOR_VERSION = "hpns-emulator-1.0"
DEFAULT_CERT = "/etc/hpns-emulator/fullchain.pem"
DEFAULT_KEY = "/etc/hpns-emulator/privkey.pem"
DEFAULT_DATA_DIR = "/var/lib/hpns-emulator"
RECORD_FILE_NAME = "received.jsonl"
ACME_DIR_NAME = "acme-challenge"
ACME_PATH_PREFIX = "/.well-known/acme-challenge/"
ACME_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
TLS_HANDSHAKE_TIMEOUT_SECONDS = 30
ROOT_BANNER = b"<html><body>Mattermost Push Proxy</body></html>"


def iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def log(message: str, **fields: Any) -> None:
    """One plain line on stdout (journald under systemd)."""
    extra = "".join(f" {key}={json.dumps(value)}" for key, value in fields.items())
    sys.stdout.write(f"{iso_now()} hpns-emulator: {message}{extra}\n")
    sys.stdout.flush()


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about our state; no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        pass


class DualStackServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on ``bind`` ("" = every interface, IPv6 and IPv4 when available)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, bind: str, port: int, handler: type[BaseHTTPRequestHandler]):
        host = bind
        if host and ":" in host:
            self.address_family = socket.AF_INET6
        elif not host and socket.has_ipv6:
            self.address_family = socket.AF_INET6
            host = "::"
        try:
            super().__init__((host, port), handler)
        except OSError:
            if host != "::":
                raise
            self.address_family = socket.AF_INET
            super().__init__(("", port), handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


# --------------------------------------------------------------------------------------------
# Port 80: ACME HTTP-01 tokens only
# --------------------------------------------------------------------------------------------


class AcmeChallengeServer(DualStackServer):
    def __init__(self, bind: str, port: int, challenge_dir: Path):
        self.challenge_dir = challenge_dir
        super().__init__(bind, port, AcmeChallengeHandler)


class AcmeChallengeHandler(BaseHTTPRequestHandler):
    """Serves ``/.well-known/acme-challenge/<token>`` from the challenge directory, 404 else."""

    server: AcmeChallengeServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http sets: headers and body are separate writes here, and
    # Nagle + delayed ACK would add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "hpns-emulator"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log("http " + (format % args), client=self.client_address[0])

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(ACME_PATH_PREFIX):
            token = path[len(ACME_PATH_PREFIX) :]
            if ACME_TOKEN.match(token):
                try:
                    content = (self.server.challenge_dir / token).read_bytes()
                except OSError:
                    pass
                else:
                    self._answer(200, content)
                    return
        self._answer(404, b"404 page not found\n")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._answer(404, b"404 page not found\n")

    do_PUT = do_POST
    do_DELETE = do_POST


# --------------------------------------------------------------------------------------------
# Port 443: the push service
# --------------------------------------------------------------------------------------------


def load_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["http/1.1"])

    def remember_server_name(
        tls_socket: ssl.SSLSocket, server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        tls_socket.hpns_sni = server_name  # type: ignore[attr-defined]

    context.sni_callback = remember_server_name
    return context


class PushServiceServer(DualStackServer):
    """HTTPS server: TLS handshake in the worker thread, SNI kept on the TLS socket."""

    def __init__(self, bind: str, port: int, context: ssl.SSLContext, record_path: Path):
        self.context = context
        self.record_path = record_path
        self.record_lock = threading.Lock()
        super().__init__(bind, port, PushServiceHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(TLS_HANDSHAKE_TIMEOUT_SECONDS)
        try:
            tls_socket = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log("TLS handshake failed", client=str(client_address[0]), error=str(exc))
            return
        try:
            self.RequestHandlerClass(tls_socket, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls_socket.close()

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.record_lock, open(self.record_path, "a", encoding="utf-8") as handle:
            handle.write(line)


class PushServiceHandler(BaseHTTPRequestHandler):
    """Answers like a push proxy and records every request."""

    server: PushServiceServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http sets: headers and body are separate writes here, and
    # Nagle + delayed ACK would add ~40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "hpns-emulator"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        log("https " + (format % args), client=self.client_address[0])

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer_json(self, payload: dict[str, Any]) -> None:
        self._answer(200, json.dumps(payload).encode(), "application/json")

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        body: Any = None
        if raw:
            text = raw.decode("utf-8", errors="replace")
            try:
                body = json.loads(text)
            except json.JSONDecodeError:
                body = text
        path = urlsplit(self.path).path
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.server.record(
            {
                "path": path,
                "method": self.command,
                "host": self.headers.get("Host"),
                "sni": getattr(self.connection, "hpns_sni", None),
                "body": body,
                "headers": headers,
                "client": self.client_address[0],
                "received_at": iso_now(),
            }
        )
        route = (self.command, path)
        if route == ("POST", "/api/v1/send_push"):
            self._send_push(body)
        elif route == ("POST", "/api/v1/ack"):
            if not isinstance(body, dict):
                self._answer_json({"status": "FAIL", "error": "Failed to read ack body"})
            elif not body.get("id"):
                self._answer_json({"status": "FAIL", "error": "Failed because of missing ack Id"})
            else:
                self._answer_json({"status": "OK"})
        elif route == ("GET", "/version"):
            self._answer_json({"hash": "hpns-emulator", "version": EMULATOR_VERSION})
        elif route == ("GET", "/"):
            self._answer(200, ROOT_BANNER, "text/html; charset=utf-8")
        else:
            self._answer(404, b"404 page not found\n", "text/plain; charset=utf-8")

    def _send_push(self, body: Any) -> None:
        if not isinstance(body, dict):
            self._answer_json({"status": "FAIL", "error": "Failed to read message body"})
        elif not body.get("server_id"):
            self._answer_json({"status": "FAIL", "error": "Failed because of missing server Id"})
        elif not body.get("device_id"):
            error = f"Failed because of missing device Id serverId={body['server_id']}"
            self._answer_json({"status": "FAIL", "error": error})
        else:
            log(
                "push accepted",
                platform=body.get("platform"),
                type=body.get("type"),
                host=self.headers.get("Host"),
                sni=getattr(self.connection, "hpns_sni", None),
            )
            self._answer_json({"status": "OK"})

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle
    do_HEAD = _handle
    do_PATCH = _handle


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


class HpnsEmulator:
    """Owns both servers; starts HTTPS when (and once) the certificate can be loaded."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.data_dir = Path(args.data_dir)
        self.challenge_dir = self.data_dir / ACME_DIR_NAME
        self.record_path = self.data_dir / RECORD_FILE_NAME
        self.cert = Path(args.cert)
        self.key = Path(args.key)
        self.http_server: AcmeChallengeServer | None = None
        self.https_server: PushServiceServer | None = None
        self.threads: list[threading.Thread] = []

    def _serve(self, server: DualStackServer, name: str) -> None:
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        thread.start()
        self.threads.append(thread)

    def start(self) -> None:
        self.challenge_dir.mkdir(parents=True, exist_ok=True)
        self.http_server = AcmeChallengeServer(
            self.args.bind, self.args.http_port, self.challenge_dir
        )
        self._serve(self.http_server, "http")
        log(
            "HTTP listening (ACME HTTP-01 tokens only)",
            port=self.http_server.server_address[1],
            challenge_dir=str(self.challenge_dir),
        )
        self.load_certificate()

    def load_certificate(self) -> None:
        """Start HTTPS, or swap its certificate; keep serving the old one on failure."""
        if not (self.cert.is_file() and self.key.is_file()):
            log("HTTPS is waiting for a certificate", cert=str(self.cert), key=str(self.key))
            return
        try:
            context = load_tls_context(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            log("Cannot load the certificate; HTTPS not (re)started", error=str(exc))
            return
        if self.https_server is not None:
            self.https_server.context = context
            log("HTTPS certificate reloaded", cert=str(self.cert))
            return
        self.https_server = PushServiceServer(
            self.args.bind, self.args.https_port, context, self.record_path
        )
        self._serve(self.https_server, "https")
        log(
            "HTTPS listening",
            port=self.https_server.server_address[1],
            cert=str(self.cert),
            record=str(self.record_path),
        )

    def stop(self) -> None:
        for server in (self.https_server, self.http_server):
            if server is not None:
                server.shutdown()
                server.server_close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hpns-emulator",
        description="EMULATOR of push.mattermost.com for tests (not Mattermost's HPNS).",
    )
    parser.add_argument("--cert", default=DEFAULT_CERT, help="PEM certificate chain")
    parser.add_argument("--key", default=DEFAULT_KEY, help="PEM private key")
    parser.add_argument("--https-port", type=int, default=443)
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--bind", default="", help='address to listen on ("" = all)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    emulator = HpnsEmulator(args)
    try:
        emulator.start()
    except OSError as exc:
        print(f"hpns-emulator: cannot start: {exc}", file=sys.stderr)
        emulator.stop()
        return 1
    stop_event = threading.Event()
    reload_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_event.set())
    sd_notify("READY=1")
    while not stop_event.wait(0.05):
        if reload_event.is_set():
            reload_event.clear()
            emulator.load_certificate()
    log("stopping")
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
