"""``arvae-midi serve`` as a library call: load, open, run until stopped, clean up.

:func:`serve` loads the model and the CC map (errors surface before any port opens), opens the
ports, optionally runs the ``--learn`` flow, then runs the bridge with a status line until
Ctrl-C, SIGTERM, a lost port or ``stop`` is set. Whatever ends it, the bridge thread sends
note_offs for every sounding note and All Notes Off before the ports close. A lost port raises
BackendError after that cleanup, so the CLI exits 1 with one line.

SIGTERM must end the process within a second (issue 6), also on a loaded machine, so the
cleanup after a signal is bounded by one deadline (:data:`SIGNAL_CLEANUP_S`): the panic first
(on the bridge thread), then a wait for the output to leave (JACK: a few process cycles, not
a fixed sleep), then the log. Closing the ports is the one step that cannot be bounded (a JACK
client close waits for the server, and python-rtmidi holds the GIL meanwhile), so a caller
that is about to end the process anyway passes ``exit_after_signal``, which runs before it:
the command line exits there (see ``arvae_midi/commands/serve.py``) and the process exit
closes the clients.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
import types
from collections.abc import Callable, Iterator
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
from arvae_midi.midi_bridge.status import JsonLog, StatusDisplay

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
#: Bound on the cleanup from a SIGINT/SIGTERM to ``exit_after_signal`` (panic, flush, log):
#: inside the 1 s the process has to exit, leaving time for the exit itself (~0.1 s when loaded).
SIGNAL_CLEANUP_S = 0.6
#: The same bound for other endings (``stop``, a lost port, an error), where no deadline applies.
CLEANUP_S = 3.0


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
def _signals(stop: threading.Event, received: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` and are appended to ``received`` (main thread only).

    The main thread waits on ``stop`` with a timeout (a lock wait that a signal interrupts), so
    the handler runs within a millisecond of the signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: types.FrameType | None) -> None:
        received.append(signum)
        stop.set()

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
    ports.input.set_callback(lambda data: events.put((clock.now(), data)))
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
    exit_after_signal: Callable[[int], None] | None = None,
) -> int | None:
    """Run the bridge until ``stop`` is set, SIGINT/SIGTERM arrives or a port is lost.

    Returns the signal number when SIGINT or SIGTERM ended it, else None. Raises BackendError
    (after the cleanup) when a port was lost. ``exit_after_signal(signum)``, when given, is
    called after a signal once the note_offs and All Notes Off have left and the log is closed,
    before the ports close; a function that ends the process (``os._exit``) skips their slow,
    unbounded close.
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
    ports = open_ports(options.backend, options.port_name, options.in_port, options.out_port)
    log = JsonLog(options.log) if options.log else None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arvae-infer")
    runtime: BridgeRuntime | None = None
    deadline: float | None = None  # for the cleanup, set when the bridge stops
    signum: int | None = None  # set only when a signal ended a run without error
    try:
        if cc_map is None:
            cc_map = _learn(ports, options, list(engine.meta.attributes), tell)  # prompts even when quiet
        core = BridgeCore(options.bridge, engine, ports.output.send, clock, executor, cc_map=cc_map,
                          log=_fan_out(log.write if log else None, surface.publish if surface else None))
        runtime = BridgeRuntime(core, ports.input, clock)
        if surface is not None:
            surface.start(core, dropped=lambda: runtime.dropped if runtime else 0)
            _announce(surface, tell)
        cfg = options.bridge
        say(f"arvae-midi serve ({ports.backend}): play into {ports.input.name!r}, listen on {ports.output.name!r}; "
            f"mode {cfg.mode}, out channel {cfg.out_channel}, tempo from MIDI clock or {cfg.bpm:g} bpm; Ctrl-C stops")
        with _signals(stop, signals), StatusDisplay(options.quiet, console) as display:
            runtime.start()
            next_check = clock.now() + PORT_CHECK_S
            while not stop.wait(STATUS_S):
                display.update(core.status, core.knobs.snapshot())
                if not runtime.running:
                    break
                if clock.now() >= next_check:
                    next_check = clock.now() + PORT_CHECK_S
                    lost = ports.lost()
                    if lost:
                        runtime.port_lost(lost)
            # The panic comes first: the bridge thread sends it on its way out.
            deadline = time.monotonic() + (SIGNAL_CLEANUP_S if signals else CLEANUP_S)
            runtime.stop("stopped", timeout=_left(deadline))
            display.update(core.status, core.knobs.snapshot())
        if runtime.error is not None:
            raise runtime.error
        if core.failed:
            raise BackendError(f"{core.failed}; the bridge sent all notes off where it still could")
        signum = signals[0] if signals else None
        return signum
    finally:
        if deadline is None:
            deadline = time.monotonic() + (SIGNAL_CLEANUP_S if signals else CLEANUP_S)
        if runtime is not None:
            runtime.stop("stopped", timeout=_left(deadline))
            ports.flush(min(FLUSH_S, _left(deadline)))
        executor.shutdown(wait=False, cancel_futures=True)
        if surface is not None:
            surface.stop(timeout=max(_left(deadline), 0.1))
        if log is not None:
            log.close(timeout=max(_left(deadline), 0.1))
        if signum is not None and exit_after_signal is not None:
            exit_after_signal(signum)
        ports.close()


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
