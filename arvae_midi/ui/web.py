"""HTTP for the page and its WebSocket on one port, with the token, Origin and Host checks.

Requests (all on the loop thread of :class:`~arvae_midi.ui.surface.ControlSurface`):

* ``GET /?token=T``: the page. ``/ui.js`` and ``/ui.css``: its script and style (no secrets).
* ``GET /ws?token=T`` with ``Upgrade: websocket``: the event stream and command channel.

Who may connect: the token ``T`` is made fresh at every start (``secrets.token_urlsafe``) and
is only in the URL ``serve`` prints, so another web page in the same browser cannot guess it.
A request whose ``Origin`` header is not this server's own origin is refused (403), as is one
whose ``Host`` is not the address the server listens on (DNS rebinding); a WebSocket client
that sends no ``Origin`` (a script, not a browser) still needs the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from arvae_midi.ui.protocol import CommandError, parse_json_command

if TYPE_CHECKING:
    from arvae_midi.ui.surface import ControlSurface

#: Events queued for one page before that page starts losing events (a dead or slow tab).
CLIENT_QUEUE = 512
#: Largest command message accepted from a page, bytes.
MAX_MESSAGE = 4096
#: Frames buffered from one page before the server stops reading it (websockets' flow control).
MAX_FRAMES = 16
STATIC = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}
#: The page may load only its own script and style and talk only to this server; no framing.
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " \
      "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

log = logging.getLogger("arvae_midi.ui")


def _static(name: str) -> bytes:
    return (resources.files("arvae_midi.ui") / "static" / name).read_bytes()


def _response(status: int, body: bytes, content_type: str) -> Response:
    code = http.HTTPStatus(status)
    headers = Headers([
        ("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
        ("Connection", "close"), ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"), ("Content-Security-Policy", CSP),
    ])
    return Response(code.value, code.phrase, headers, body)


def _refuse(status: int, why: str) -> Response:
    return _response(status, (why + "\n").encode(), "text/plain; charset=utf-8")


class _Client:
    """One open page: its bounded outgoing queue and the task that writes it."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.dropped = 0


class WebServer:
    """The page and WebSocket server of one :class:`ControlSurface`."""

    def __init__(self, surface: ControlSurface, host: str, port: int) -> None:
        self.surface = surface
        self.host = host
        self.port = port
        self.clients: set[_Client] = set()
        self._server: Server | None = None
        self._page = _static("index.html")
        self._files = {name: _static(name) for name in STATIC}
        self._hosts: set[str] = set()
        self._origins: set[str] = set()

    async def start(self) -> None:
        """Listen (OSError when the address is taken or not ours)."""
        self._server = await serve(
            self._handle, self.host, self.port, process_request=self._check, max_size=MAX_MESSAGE,
            max_queue=MAX_FRAMES, ping_interval=5, ping_timeout=10, logger=log, server_header=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        names = {self.host, "127.0.0.1", "localhost"} if self.host in ("127.0.0.1", "localhost") else {self.host}
        if self.host in ("::1",):
            names = {"[::1]", "localhost"}
        self._hosts = {f"{name}:{self.port}" for name in names}
        self._origins = {f"http://{host}" for host in self._hosts}

    @property
    def url(self) -> str:
        """The page's address with this start's token."""
        host = "127.0.0.1" if self.host in ("127.0.0.1", "0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/?token={self.surface.token}"

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP requests; let a WebSocket handshake through only when allowed."""
        if self.host not in ("0.0.0.0", "::", "") and request.headers.get("Host") not in self._hosts:
            return _refuse(403, "unknown Host")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self._origins and not (
                self.host in ("0.0.0.0", "::", "") and origin == f"http://{request.headers.get('Host')}"):
            return _refuse(403, f"foreign Origin {origin}")
        url = urlsplit(request.path)
        token = parse_qs(url.query).get("token", [""])[0]
        allowed = hmac.compare_digest(token.encode(), self.surface.token.encode())
        if url.path in ("/", "/index.html"):
            if not allowed:
                return _refuse(403, "wrong or missing token: open the URL 'arvae-midi serve' printed")
            return _response(200, self._page, "text/html; charset=utf-8")
        if url.path.lstrip("/") in STATIC:
            name = url.path.lstrip("/")
            return _response(200, self._files[name], STATIC[name])
        if url.path == "/ws":
            return None if allowed else _refuse(403, "wrong or missing token")
        return _refuse(404, "not found")

    async def _handle(self, connection: ServerConnection) -> None:
        client = _Client(connection)
        surface = self.surface
        for text in (json.dumps(surface.hello), *surface.latest.values()):
            client.queue.put_nowait(text)
        self.clients.add(client)
        writer = asyncio.create_task(self._write(client))
        try:
            async for message in connection:
                try:
                    surface.submit(parse_json_command(message, surface.hello["attributes"]))
                except CommandError as e:
                    surface.reject(str(e))
                    self._put(client, json.dumps({"event": "command_error", "error": str(e)}))
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self, client: _Client) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await client.connection.send(await client.queue.get())

    def _put(self, client: _Client, text: str) -> None:
        try:
            client.queue.put_nowait(text)
        except asyncio.QueueFull:  # this page stopped reading: it loses events, nobody waits
            client.dropped += 1
            self.surface.counters["sent_dropped"] += 1

    def broadcast(self, text: str) -> None:
        """Queue ``text`` for every open page."""
        for client in self.clients:
            self._put(client, text)

    async def close(self) -> None:
        """Close every page's connection and stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
