"""``arvae-midi serve`` as a library call: load, open, run until stopped, clean up.

:func:`serve` loads the model and the CC map (errors surface before any port opens), installs
its SIGINT/SIGTERM handlers, opens the ports, optionally runs the ``--learn`` flow, then runs the
bridge with a status line until Ctrl-C, SIGTERM, a lost port or ``stop`` is set. Whatever ends
it, the shutdown runs from the calling thread in one fixed order (:func:`_shut_down`):

1. stop taking input (the runtime drops what still arrives);
2. panic: the bridge thread sends note_offs for every sounding note, then All Notes Off, and ends;
3. flush: wait until the output has left (JACK: a few process cycles, not a fixed sleep);
4. detach: stop the input thread, the only thread that calls into the input client (RtMidi never
   gets a callback: :mod:`~arvae_midi.midi_bridge.rtmidi_io` says why);
5. close the ports; 6. free the clients (after a dead JACK server: leave them, see ``PortPair.close``).

A lost port raises BackendError after that, so the CLI exits 1 with one line.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from arvae_midi.errors import BackendError
from arvae_midi.midi_bridge.bridge import BridgeCore
from arvae_midi.midi_bridge.clock import Clock, MonotonicClock
from arvae_midi.midi_bridge.config import BridgeConfig, VariationEngine
from arvae_midi.midi_bridge.knobs import CCMap, load_cc_map, save_cc_map
from arvae_midi.midi_bridge.learn import learn_cc_map
from arvae_midi.midi_bridge.ports import PortPair, open_ports
from arvae_midi.midi_bridge.runtime import BridgeRuntime
from arvae_midi.midi_bridge.sched import REALTIME_HINT, request_realtime
from arvae_midi.midi_bridge.status import NO_CLOCK, Health, JsonLog, StatusDisplay

if TYPE_CHECKING:
    from arvae_midi.ui.surface import ControlSurface, UiOptions

#: Seconds between checks that the ports still exist.
PORT_CHECK_S = 1.0
#: Refresh period of the status line.
STATUS_S = 0.125
#: Longest wait after the final All Notes Off for the output to leave before the ports close or
#: the process exits: rtmidi's JACK output hands messages to the next process cycle, and closing
#: the client first would drop them (cycles can run tens of milliseconds late on a loaded machine
#: without realtime scheduling, and an overloaded JACK server can stall for longer). The wait
#: ends as soon as the cycles have run (usually ~5 ms).
FLUSH_S = 0.5
#: Bound on the panic, flush and log after a SIGINT/SIGTERM: the process should be gone within
#: 1 s of SIGTERM, and closing the ports and the interpreter's exit come after this.
SIGNAL_CLEANUP_S = 0.5
#: The same bound for other endings (``stop``, a lost port, an error), where no deadline applies.
CLEANUP_S = 3.0
#: Longest wait at start for the bridge thread to say whether it got realtime scheduling.
STARTED_S = 1.0


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``serve`` needs besides the musical :class:`BridgeConfig`."""

    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    model: str | None = None  # None: the shipped default model
    device: str = "auto"
    backend: str = "auto"
    port_name: str = "arvae-midi"
    in_port: str | None = None
    out_port: str | None = None
    cc_map: Path | None = None  # None: presets/cc_map.toml (with --learn: ./cc_map.toml)
    learn: bool = False
    quiet: bool = False
    log: Path | None = None
    ui: UiOptions | None = None  # the control page and OSC (extra [ui]); None: neither


def _fan_out(*listeners: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None] | None:
    """One log callback calling each given listener (the bridge thread's event stream)."""
    chosen = [f for f in listeners if f is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def emit(event: dict[str, Any]) -> None:
        for listener in chosen:
            listener(event)

    return emit


def _surface(options: ServeOptions) -> ControlSurface | None:
    """The control surface asked for, or None; ConfigError naming the extra when it is missing."""
    if options.ui is None or not options.ui.enabled:
        return None
    from arvae_midi.ui import require_ui
    from arvae_midi.ui.surface import ControlSurface

    require_ui("--ui" if options.ui.web else "--osc-port/--osc-out")
    return ControlSurface(options.ui)


def load_engine(model: str | None, device: str) -> VariationEngine:
    """The ONNX engine on one intra-op thread (lowest latency for one bar, no CPU contention)."""
    from arvae_midi.engine.engine import Engine

    engine: VariationEngine = Engine.load(model, device=device, threads=1)
    return engine


@contextlib.contextmanager
def _signals(stop: threading.Event, received: list[int], interrupt: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` and are appended to ``received`` (main thread only); while
    ``interrupt`` is set (the ``--learn`` prompts) they also raise KeyboardInterrupt.

    The main thread waits on ``stop`` with a timeout (a lock wait that a signal interrupts), so
    the handler runs within a millisecond of the signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: types.FrameType | None) -> None:
        received.append(signum)
        stop.set()
        if interrupt.is_set():
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _learn(ports: PortPair, options: ServeOptions, attributes: list[str], say: Callable[[str], None]) -> CCMap:
    """Run the learn flow on the open input and write the map."""
    events: queue.Queue[tuple[float, Any]] = queue.Queue()
    clock = MonotonicClock()
    def take(data: Sequence[int], arrival: float | None = None) -> None:
        events.put((clock.now(), data))

    ports.input.set_callback(take)
    try:
        start = load_cc_map(options.cc_map) if options.cc_map and options.cc_map.is_file() else None
        cc_map = learn_cc_map(events, attributes, say, start=start, clock=clock)
    finally:
        ports.input.set_callback(None)
    path = options.cc_map or Path("cc_map.toml")
    save_cc_map(cc_map, path)
    say(f"wrote {path}")
    return cc_map


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (monotonic), never negative."""
    return max(deadline - time.monotonic(), 0.0)


def serve(
    options: ServeOptions,
    stop: threading.Event | None = None,
    engine_loader: Callable[[str | None, str], VariationEngine] | None = None,
    clock: Clock | None = None,
    console: Console | None = None,
    realtime_exit: bool = False,
) -> int | None:
    """Run the bridge until ``stop`` is set, SIGINT/SIGTERM arrives or a port is lost.

    Returns the signal number when SIGINT or SIGTERM ended it, else None. Raises BackendError
    (after the cleanup) when a port was lost. Signal handlers (main thread only) are in place
    before the ports appear, so a signal at any moment after loading ends it the same way.
    ``realtime_exit``: after a signal, the calling thread keeps SCHED_FIFO for the shutdown and
    the process exit that follows (for a process that ends right after; not for an embedder).
    """
    stop = stop or threading.Event()
    signals: list[int] = []
    clock = clock or MonotonicClock()
    console = console or Console()

    def tell(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    say: Callable[[str], None] = (lambda text: None) if options.quiet else tell
    cc_map = None if options.learn else load_cc_map(options.cc_map)
    surface = _surface(options)
    engine = (engine_loader or load_engine)(options.model, options.device)
    learning = threading.Event()
    with _signals(stop, signals, learning):
        ports = open_ports(options.backend, options.port_name, options.in_port, options.out_port)
        log = None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arvae-infer")
        runtime: BridgeRuntime | None = None
        shut = False
        try:
            log = JsonLog(options.log) if options.log else None
            if cc_map is None:
                if stop.is_set():  # a signal while the ports opened
                    return signals[0] if signals else None
                learning.set()
                try:
                    cc_map = _learn(ports, options, list(engine.meta.attributes), tell)  # prompts even when quiet
                finally:
                    learning.clear()
            core = BridgeCore(options.bridge, engine, ports.output.send, clock, executor, cc_map=cc_map,
                              log=_fan_out(log.write if log else None, surface.publish if surface else None))
            runtime = BridgeRuntime(core, ports.input, clock)
            if surface is not None:
                bridge_runtime = runtime
                surface.start(core, dropped=lambda: bridge_runtime.dropped)
                _announce(surface, tell)
            cfg = options.bridge
            say(f"arvae-midi serve ({ports.backend}): play into {ports.input.name!r}, listen on "
                f"{ports.output.name!r}; mode {cfg.mode}, out channel {cfg.out_channel}, tempo from MIDI clock "
                f"or {cfg.bpm:g} bpm; Ctrl-C stops")
            with StatusDisplay(options.quiet, console) as display:
                runtime.start()
                health = _Watch(ports, runtime, log, clock)
                if not stop.is_set():
                    runtime.started.wait(STARTED_S)
                    for warning in health.warnings():
                        tell(f"warning: {warning}")
                next_check = clock.now() + PORT_CHECK_S
                while not stop.wait(STATUS_S):
                    display.update(core.status, core.knobs.snapshot(), health.now())
                    if not runtime.running:
                        break
                    if ports.server_gone():  # a flag: checked every refresh, so this ends within 1 s
                        runtime.port_lost("the JACK server stopped")
                    elif clock.now() >= next_check:
                        next_check = clock.now() + PORT_CHECK_S
                        health.check()
                        lost = ports.lost()
                        if lost:
                            runtime.port_lost(lost)
                if signals and realtime_exit:
                    # SIGTERM must end the process within a second, also on a loaded machine: the
                    # shutdown and the interpreter's exit run at the bridge's realtime priority
                    # where the system grants it (~0.1 s of CPU; starved, it took up to 0.7 s).
                    request_realtime()
                shut = _shut_down(ports, runtime, time.monotonic() + (SIGNAL_CLEANUP_S if signals else CLEANUP_S))
                display.update(core.status, core.knobs.snapshot(), health.now())
            if runtime.error is not None:
                raise runtime.error
            if core.failed:
                raise BackendError(f"{core.failed}; the bridge sent all notes off where it still could")
            return signals[0] if signals else None
        finally:
            deadline = time.monotonic() + (SIGNAL_CLEANUP_S if signals else CLEANUP_S)
            if not shut:  # an exception, or an early return, left before the shutdown
                _shut_down(ports, runtime, deadline)
            executor.shutdown(wait=False, cancel_futures=True)
            if surface is not None:
                surface.stop(timeout=max(_left(deadline), 0.1))
            if log is not None:
                log.close(timeout=max(_left(deadline), 0.1))
            if runtime is None or not runtime.running:
                ports.close()
            # else: the bridge thread is stuck (a bug) and may still send: leave the ports to the exit


def _shut_down(ports: PortPair, runtime: BridgeRuntime | None, deadline: float) -> bool:
    """Steps 1 to 4 of the shutdown (module docstring), bounded by ``deadline``; returns True."""
    if runtime is not None:
        runtime.stop("stopped", timeout=_left(deadline))  # 1. no more input, 2. panic on the bridge thread
        if not ports.server_gone():
            ports.flush(min(FLUSH_S, _left(deadline)))  # 3.
    ports.detach()  # 4.
    return True


class _Watch:
    """What ``serve`` tells about the setup: realtime scheduling, connections, dropped input.

    Each finding goes to the log once when it changes (event ``health``) and is shown on the
    status line.
    """

    def __init__(self, ports: PortPair, runtime: BridgeRuntime, log: JsonLog | None, clock: Clock) -> None:
        self.ports, self.runtime, self.log, self.clock = ports, runtime, log, clock
        self.server_rt = ports.server_realtime()
        self.unconnected = ports.unconnected()
        self._logged: Health | None = None

    def now(self) -> Health:
        """The current figures (cheap: no backend calls)."""
        thread_rt = self.runtime.realtime and getattr(self.ports.input, "realtime", True)
        dropped = self.runtime.dropped + getattr(self.ports.input, "errors", 0)
        status = self.runtime.core.status
        waiting = (NO_CLOCK,) if status.state == "waiting" and status.bar < 0 else ()
        return Health(dropped=dropped, thread_realtime=thread_rt, server_realtime=self.server_rt,
                      notes=(*self.unconnected, *waiting))

    def check(self) -> None:
        """Look at the connections again and log what changed."""
        self.unconnected = self.ports.unconnected()
        health = self.now()
        if self.log is not None and health != self._logged:
            self.log.write({"event": "health", "t": self.clock.now(), "dropped": health.dropped,
                            "thread_realtime": health.thread_realtime, "server_realtime": health.server_realtime,
                            "notes": list(health.notes)})
        self._logged = health

    def warnings(self) -> list[str]:
        """The start-up warnings (shown once), also logged."""
        self.check()
        out = []
        if self.server_rt is False:
            out.append("the JACK server runs without realtime scheduling: under load its cycles run late and "
                       "MIDI events arrive late or get lost; restart it with 'jackd --realtime' (-R) and "
                       + REALTIME_HINT)
        if not self.now().thread_realtime:
            out.append("the bridge's threads run without realtime (SCHED_FIFO) scheduling, so other programs can "
                       "delay its notes; " + REALTIME_HINT)
        if self.log is not None:
            for text in out:
                self.log.write({"event": "warning", "t": self.clock.now(), "what": text})
        return out


def _announce(surface: ControlSurface, tell: Callable[[str], None]) -> None:
    """Print where the page and OSC listen (even with --quiet: the URL holds the token)."""
    ui = surface.options
    if surface.url is not None:
        tell(f"control page: {surface.url}")
        if ui.web_host not in ("127.0.0.1", "localhost", "::1"):
            tell(f"warning: the control page listens on {ui.web_host}, not only this machine; anyone who "
                 "can reach it and has the URL can steer the bridge")
    if surface.osc_address is not None:
        tell(f"OSC in: udp {surface.osc_address[0]}:{surface.osc_address[1]} (/arvae/knob/<attribute>, ...)")
        if ui.osc_host not in ("127.0.0.1", "localhost", "::1"):
            tell(f"warning: OSC input listens on {ui.osc_host}; OSC has no token: anyone who can reach it "
                 "can steer the bridge")
    if ui.osc_out is not None:
        tell(f"OSC out: udp {ui.osc_out[0]}:{ui.osc_out[1]} (/arvae/bar, /arvae/attributes/*, /arvae/variation)")
