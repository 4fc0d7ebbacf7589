"""The control surface: one asyncio event loop on its own thread, between the bridge and its peers.

Realtime safety, in one place:

* The bridge thread hands each log event over with :meth:`ControlSurface.publish`: one append to
  a bounded ``deque`` (no lock, no system call, no allocation beyond the event it already built).
  When the loop falls behind, the oldest events are dropped and counted, never waited for.
* Commands from the page and from OSC land in a *pending* dict keyed by control: a bounded
  queue that keeps only the latest value of each control (a flood coalesces into one value).
  Every :data:`TICK_S` the loop applies them through :meth:`KnobState.set`, the CC path's entry
  point, and :meth:`BridgeCore.set_mode`.
* OSC input is read at most :data:`~arvae_midi.ui.osc.READS_PER_TICK` datagrams per tick, so a
  flood costs this thread (and the GIL the bridge thread needs) a bounded share; the rest
  waits in, and overflows from, the kernel's socket buffer.
* Each page has its own bounded outgoing queue; a dead or slow tab fills its own queue and
  loses its own events, nothing else (see ``web.py``).
* The loop thread shares the GIL with the bridge thread: it runs at a realtime priority below
  the bridge's where allowed, and the switch interval drops to 1 ms (see
  :func:`_realtime_below_bridge`), so the bridge never waits long for the GIL.

Status and knob positions are polled from the bridge each tick (its status record is replaced
as a whole, so reading it needs no lock), so a CC from the DAW reaches the page within a tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from arvae_midi.errors import ConfigError
from arvae_midi.midi_bridge.bridge import BridgeCore
from arvae_midi.midi_bridge.config import KEY_LOCK_BARS, attributes_of
from arvae_midi.midi_bridge.sched import request_realtime
from arvae_midi.ui.protocol import Command, jsonable, key_lock_scale, note_groups

#: Seconds between two passes of the loop over events, commands and the status.
TICK_S = 0.02
#: Bridge events held for the loop; beyond this the oldest are dropped (and counted).
EVENT_LIMIT = 4096
#: Seconds :meth:`ControlSurface.start` waits for the servers to come up.
START_TIMEOUT_S = 10.0
#: Bars of scheduled variations remembered (for OSC output when their bar starts).
KEEP_BARS = 8


#: SCHED_FIFO priority of the loop thread where the system grants it: below the bridge thread's
#: (``runtime.REALTIME_PRIORITY``), above ordinary processes. See :func:`_realtime_below_bridge`.
UI_PRIORITY = 20
#: Longest time (s) one Python thread keeps the GIL while another waits for it, with the surface on.
SWITCH_INTERVAL_S = 0.001


def _realtime_below_bridge() -> bool:
    """Give the loop thread SCHED_FIFO at :data:`UI_PRIORITY` where allowed; True when granted.

    Why realtime for a UI: the bridge thread (SCHED_FIFO 40) and this thread share the GIL. An
    ordinary thread that holds the GIL and is then preempted by other processes keeps the bridge
    waiting until the scheduler comes back to it: on a loaded machine, many milliseconds (priority
    inversion). At a realtime priority this thread is not preempted by ordinary processes, so it
    holds the GIL only as long as it runs (at most the switch interval once the bridge asks).
    Its work per tick is bounded (see the module docstring), so it cannot starve the machine.
    """
    return request_realtime(UI_PRIORITY)


@dataclass(frozen=True)
class UiOptions:
    """What ``--ui``, ``--ui-port``, ``--ui-host``, ``--osc-port`` and ``--osc-out`` asked for."""

    web: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 8765  # 0: any free port (the printed URL has the one taken)
    osc_port: int | None = None
    osc_host: str = "127.0.0.1"
    osc_out: tuple[str, int] | None = None  # (host, port) that gets /arvae/bar etc. every bar
    token: str | None = None  # None: a fresh random token per start

    @property
    def enabled(self) -> bool:
        """True when any part of the surface was asked for."""
        return self.web or self.osc_port is not None or self.osc_out is not None


class ControlSurface:
    """Web page, WebSocket and OSC around one running bridge; see the module docstring."""

    def __init__(self, options: UiOptions) -> None:
        self.options = options
        self.token = options.token or secrets.token_urlsafe(16)
        self.url: str | None = None  # set by start() when the page is served
        self.osc_address: tuple[str, int] | None = None  # the bound OSC input, set by start()
        self.counters = {"events_dropped": 0, "commands": 0, "commands_bad": 0, "sent_dropped": 0, "errors": 0}
        self.last_error = ""
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENT_LIMIT)
        self._pending: dict[str, Command] = {}
        self._pending_lock = threading.Lock()
        self._core: BridgeCore | None = None
        self._dropped: Callable[[], int] = lambda: 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.realtime = False  # whether the loop thread got SCHED_FIFO (set on its thread)
        # State owned by the loop thread.
        self.web: Any = None  # web.WebServer
        self.osc: Any = None  # osc.OscPeer
        self.hello: dict[str, Any] = {}
        self._scheduled: dict[int, dict[str, Any]] = {}
        self._recent: list[tuple[int, list[int]]] = []  # (source bar, tokens) for the key-lock scale
        self.latest: dict[str, str] = {}  # event name -> last JSON text (status, knobs, roll) for new pages
        self._last_status: Any = None
        self._last_knobs: Any = None
        self._scale_key: tuple[int, ...] = ()

    # ----- bridge side (any thread) --------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        """Hand one bridge log event over (called on the bridge thread): never blocks."""
        if len(self._events) == EVENT_LIMIT:
            self.counters["events_dropped"] += 1
        self._events.append(event)

    def submit(self, command: Command) -> None:
        """Queue one command (any thread); a newer command for the same control replaces it."""
        with self._pending_lock:
            self._pending[command.target] = command
        self.counters["commands"] += 1

    def reject(self, error: str) -> None:
        """Count a malformed command (any thread)."""
        self.counters["commands_bad"] += 1
        self.last_error = error

    # ----- lifecycle -----------------------------------------------------------------------

    def start(self, core: BridgeCore, dropped: Callable[[], int] | None = None) -> None:
        """Start the loop thread and its servers for ``core``; ConfigError when they cannot start."""
        self._core = core
        self._dropped = dropped or (lambda: 0)
        self.hello = self._hello(core)
        # The bridge thread waits at most this long for the GIL while this loop's thread runs Python.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="arvae-ui", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise ConfigError("the control surface did not start within 10 s")
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self.stop()
            if isinstance(failure, ConfigError):
                raise failure
            raise ConfigError(f"cannot start the control surface: {failure}") from failure

    def stop(self, timeout: float = 2.0) -> None:
        """Close the servers and end the loop thread, waiting at most ``timeout`` s."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        self.realtime = _realtime_below_bridge()
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to start(); after start the loop logs and ends
            self._failure = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        from arvae_midi.ui.osc import OscPeer
        from arvae_midi.ui.web import WebServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        opts = self.options
        try:
            if opts.web:
                self.web = WebServer(self, opts.web_host, opts.web_port)
                try:
                    await self.web.start()
                except OSError as e:
                    raise ConfigError(f"cannot serve the page on {opts.web_host}:{opts.web_port}: "
                                      f"{e.strerror or e}") from e
                self.url = self.web.url
            if opts.osc_port is not None or opts.osc_out is not None:
                try:
                    self.osc = OscPeer(self, opts.osc_host, opts.osc_port, opts.osc_out)
                except OSError as e:
                    raise ConfigError(f"cannot take OSC on {opts.osc_host}:{opts.osc_port}: {e.strerror or e}") from e
                self.osc_address = self.osc.bound
                self.hello["osc"] = None if self.osc_address is None else list(self.osc_address)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception as e:  # a bug here must not end the page or touch the bridge
                    self.counters["errors"] += 1
                    self.last_error = f"control surface: {type(e).__name__}: {e}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), TICK_S)
        finally:
            if self.web is not None:
                await self.web.close()
            if self.osc is not None:
                self.osc.close()

    # ----- the loop's pass ---------------------------------------------------------------------

    def tick(self) -> None:
        """One pass: OSC input, commands, bridge events, status and knobs (loop thread only)."""
        if self.osc is not None:
            self.osc.read()
        self._apply_commands()
        while self._events:
            self._on_event(self._events.popleft())
        self._poll()

    def _apply_commands(self) -> None:
        core = self._core
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if core is None:
            return
        for cmd in pending.values():
            try:
                if cmd.target == "mode":
                    core.set_mode(str(cmd.value))
                else:
                    assert not isinstance(cmd.value, str)
                    core.knobs.set(cmd.target, cmd.value)
            except ValueError as e:  # an attribute this map has no knob for
                self.reject(str(e))

    def _on_event(self, event: dict[str, Any]) -> None:
        text = json.dumps(jsonable(event))
        self.broadcast(text)
        kind = event.get("event")
        if kind == "scheduled":
            self._on_scheduled(event)
        elif kind == "bar":
            if self.osc is not None:
                self.osc.send_bar(event, self._scheduled.get(int(event["bar"])))
            self._update_scale()

    def _update_scale(self) -> None:
        """Send the key-lock scale when the recent input bars changed.

        Done at a bar's start, not when its successor is scheduled: estimating a scale costs
        milliseconds of Python (the GIL), and the bar start has just sent its downbeat, while the
        moment of scheduling is just before a downbeat is due.
        """
        core = self._core
        assert core is not None
        key = tuple(b for b, _ in self._recent)
        if key == self._scale_key or not core.config.key_lock:
            return
        self._scale_key = key
        scale = key_lock_scale([t for _, t in self._recent], core.vocab)
        text = json.dumps(jsonable({"event": "scale", "scale": scale}))
        self.latest["scale"] = text
        self.broadcast(text)

    def _on_scheduled(self, event: dict[str, Any]) -> None:
        core = self._core
        assert core is not None
        bar = int(event["bar"])
        self._scheduled[bar] = event
        for old in [b for b in self._scheduled if b < bar - KEEP_BARS]:
            del self._scheduled[old]
        source, source_bar = event.get("source_tokens"), event.get("source_bar")
        if source is not None and source_bar is not None and all(b != source_bar for b, _ in self._recent):
            self._recent = [*self._recent, (int(source_bar), list(source))][-KEY_LOCK_BARS:]
        vocab, names = core.vocab, core.model_attributes
        roll = {
            "event": "roll", "bar": bar, "plan": event.get("plan"), "source_bar": source_bar,
            "input": note_groups(source, vocab) if source is not None else None,
            "variation": note_groups(event["tokens"], vocab, int(event.get("velocity", 90))),
            "in_attributes": attributes_of(source, vocab, names) if source is not None else None,
            "out_attributes": attributes_of(event["tokens"], vocab, names),
        }
        text = json.dumps(jsonable(roll))
        self.latest["roll"] = text
        self.broadcast(text)

    def _poll(self) -> None:
        core = self._core
        if core is None:
            return
        status = core.status
        dropped = self._dropped()
        pages = len(self.web.clients) if self.web is not None else 0
        key = (status, dropped, pages, tuple(self.counters.values()))
        if key != self._last_status:
            self._last_status = key
            doc = {"event": "status", **asdict(status), "dropped": dropped, "pages": pages,
                   "ui": dict(self.counters), "ui_error": self.last_error}
            text = json.dumps(jsonable(doc))
            self.latest["status"] = text
            self.broadcast(text)
        knobs = core.knobs.snapshot()
        if knobs != self._last_knobs:
            self._last_knobs = knobs
            doc = {"event": "knobs", "values": dict(knobs.values), "amount": round(knobs.amount, 4),
                   "freeze": knobs.freeze}
            text = json.dumps(jsonable(doc))
            self.latest["knobs"] = text
            self.broadcast(text)

    def broadcast(self, text: str) -> None:
        """Queue one JSON text for every open page (loop thread)."""
        if self.web is not None:
            self.web.broadcast(text)

    # ----- what a new page learns first --------------------------------------------------------

    def _hello(self, core: BridgeCore) -> dict[str, Any]:
        """Fixed facts: attributes, CC map, mode, pitch range and knob -> target tables."""
        names = list(core.model_attributes)
        targets: dict[str, list[float]] = {}
        to_attribute = getattr(core.engine, "knob_to_attribute", None)
        if to_attribute is not None:
            with contextlib.suppress(Exception):  # an engine without calibration: no targets shown
                targets = {name: [round(float(to_attribute(name, v)), 4) for v in range(128)] for name in names}
        cc = core.knobs.cc_map
        pitches = [int(p) for p in core.vocab.pitch_table if p >= 0]
        return {
            "event": "hello", "attributes": names, "targets": targets,
            "cc_map": {"attributes": dict(cc.attributes), "amount": cc.amount, "freeze": cc.freeze,
                       "channel": cc.channel},
            "mode": core.config.mode, "key_lock": core.config.key_lock, "bpm": core.config.bpm,
            "pitch_range": [min(pitches), max(pitches)] if pitches else [55, 84],
            "osc": None if self.osc_address is None else list(self.osc_address),
        }
