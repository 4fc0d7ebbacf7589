"""The page's HTTP and WebSocket server: who may connect, commands, events, a dead page."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from arvae_midi.cli import app
from arvae_midi.errors import ConfigError
from arvae_midi.ui import UI_MODULES
from arvae_midi.ui.surface import UiOptions
from tests.ui.conftest import LiveServe, wait_for


def _socket_url(page_url: str, token: str | None = None) -> str:
    url = page_url.replace("http://", "ws://").replace("/?token=", "/ws?token=")
    return url if token is None else url.split("token=")[0] + "token=" + token


def _origin(page_url: str) -> str:
    return page_url.split("/?")[0]


def _next(ws: ClientConnection, event: str, where: Callable[[dict[str, object]], bool] = lambda e: True,
          timeout: float = 20.0) -> dict[str, object]:
    """The next message of kind ``event`` that satisfies ``where``."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.001)))
        if message["event"] == event and where(message):
            return message  # type: ignore[no-any-return]


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_only_the_printed_url_gets_in(live: Callable[..., LiveServe]) -> None:
    run = live(UiOptions(web=True, web_port=0))
    url = run.url
    assert url.startswith("http://127.0.0.1:")
    assert _status(url) == 200
    assert _status(url.split("?")[0]) == 403  # no token
    assert _status(url.split("token=")[0] + "token=guess") == 403
    assert _status(url, {"Host": "evil.example:80"}) == 403  # DNS rebinding
    assert _status(url, {"Origin": "http://evil.example"}) == 403
    assert _status(_origin(url) + "/ui.js") == 200
    assert _status(_origin(url) + "/etc/passwd") == 404
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
        assert b'<script src="ui.js"' in reply.read()

    for bad in ({"token": "guess"}, {"token": ""}):
        with pytest.raises(InvalidStatus) as info:
            connect(_socket_url(url, bad["token"]), origin=_origin(url)).close()  # type: ignore[arg-type]
        assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        connect(_socket_url(url), origin="http://evil.example").close()  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    with connect(_socket_url(url), origin=_origin(url)) as ws:  # type: ignore[arg-type]
        hello = _next(ws, "hello")
        assert hello["attributes"] == ["rhythmic_complexity", "note_density", "pitch_range", "contour"]


def test_commands_steer_the_bridge_and_events_arrive(live: Callable[..., LiveServe], tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    run = live(UiOptions(web=True, web_port=0), log=log)
    with connect(_socket_url(run.url), origin=_origin(run.url)) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"cmd": "knob", "attribute": "contour", "value": 7}))
        ws.send(json.dumps({"cmd": "amount", "value": 0.5}))
        _next(ws, "knobs", lambda e: e["values"]["contour"] == 7 and e["amount"] == 0.5)  # type: ignore[index]
        ws.send(json.dumps({"cmd": "knob", "attribute": "contour", "value": 300}))
        error = _next(ws, "command_error")
        assert "integer 0..127" in str(error["error"])
        ws.send(json.dumps({"cmd": "mode", "value": "loop"}))
        _next(ws, "status", lambda e: e["mode"] == "loop")
        run.play_bar()
        roll = _next(ws, "roll", lambda e: e["bar"] == 1)
        assert [n[0] for n in roll["input"]] == [60, 64, 67, 72]  # type: ignore[index, union-attr]
        assert [n[0] for n in roll["variation"]] == [62, 66, 69, 74]  # type: ignore[index, union-attr]
        bar = _next(ws, "bar", lambda e: e["bar"] == 1)
        assert bar["knobs"]["contour"] == 7 and bar["amount"] == 0.5  # type: ignore[index]
        assert run.engine.calls[0]["knobs"]["contour"] == 7 and run.engine.calls[0]["amount"] == 0.5

        # loop: the last captured bar is re-varied in the bars that follow, without new input
        _next(ws, "bar", lambda e: e["bar"] == 3 and e["plan"] == "variation")
    run.close()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["event"] == "scheduled" and e["bar"] == 1 for e in events)  # the page's events are the log's


def _dead_page(page_url: str) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads again (a frozen tab)."""
    host, port = page_url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    path = "/ws?" + page_url.split("?")[1]
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n\r\n"
                  ).encode())
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


def test_a_dead_page_loses_only_its_own_events(live: Callable[..., LiveServe]) -> None:
    run = live(UiOptions(web=True, web_port=0))
    surface = run.surface
    assert surface is not None
    dead = _dead_page(run.url)
    try:
        with connect(_socket_url(run.url), origin=_origin(run.url)) as alive:  # type: ignore[arg-type]
            _next(alive, "hello")
            wait_for(lambda: surface.web is not None and len(surface.web.clients) == 2, what="two pages")
            filler = {"event": "filler", "payload": "x" * 4000}
            for _ in range(100):  # the dead page's socket buffers fill, then its queue overflows
                for _ in range(100):
                    surface.publish(filler)
                time.sleep(0.02)
                if surface.counters["sent_dropped"]:
                    break
            wait_for(lambda: surface.counters["sent_dropped"] > 0, what="the dead page's queue to overflow")
            run.cc(23, 99)  # the live page still hears about a CC at once
            _next(alive, "knobs", lambda e: e["values"]["contour"] == 99)  # type: ignore[index]
    finally:
        dead.close()


def test_missing_extra_and_bad_osc_out_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--osc-out", "nowhere"])
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError)
    assert str(result.exception) == "--osc-out: expected HOST:PORT such as 127.0.0.1:9001, got 'nowhere'"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "websockets" else real(name, *a))
    assert "websockets" in UI_MODULES
    result = runner.invoke(app, ["serve", "--ui"])
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError)
    assert str(result.exception) == "--ui needs the [ui] extra: pip install 'arvae-midi[ui]' (missing: websockets)"


def test_a_taken_port_is_one_line_and_another_host_warns(live: Callable[..., LiveServe]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve the page on 127.0.0.1:{port}: "):
            live(UiOptions(web=True, web_port=port))
    run = live(UiOptions(web=True, web_host="127.0.0.2", web_port=0))  # still loopback, but not the default
    assert "warning: the control page listens on 127.0.0.2" in run.output.getvalue()
    assert run.url.startswith("http://127.0.0.2:") and _status(run.url) == 200
