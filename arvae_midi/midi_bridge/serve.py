"""``arvae-midi serve`` as a library call: load, open, run until stopped, clean up.

:func:`serve` loads the model and the CC map (errors surface before any port opens), opens the
ports, optionally runs the ``--learn`` flow, then runs the bridge with a status line until
Ctrl-C, SIGTERM, a lost port or ``stop`` is set. Whatever ends it, the bridge thread sends
note_offs for every sounding note and All Notes Off before the ports close. A lost port raises
BackendError after that cleanup, so the CLI exits 1 with one line.
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
from typing import Any

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

#: Seconds between checks that the ports still exist.
PORT_CHECK_S = 1.0
#: Refresh period of the status line.
STATUS_S = 0.125
#: Pause between the final All Notes Off and closing the ports: rtmidi's JACK output hands
#: messages to the next process cycle, and closing the client first would drop them (cycles
#: can run tens of milliseconds late on a loaded machine without realtime scheduling).
FLUSH_S = 0.2


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


def load_engine(model: str | None, device: str) -> VariationEngine:
    """The ONNX engine on one intra-op thread (lowest latency for one bar, no CPU contention)."""
    from arvae_midi.export.engine import Engine

    engine: VariationEngine = Engine.load(model, device=device, threads=1)
    return engine


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: types.FrameType | None) -> None:
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


def serve(
    options: ServeOptions,
    stop: threading.Event | None = None,
    engine_loader: Callable[[str | None, str], VariationEngine] | None = None,
    clock: Clock | None = None,
    console: Console | None = None,
) -> None:
    """Run the bridge until ``stop`` is set, SIGINT/SIGTERM arrives or a port is lost."""
    stop = stop or threading.Event()
    clock = clock or MonotonicClock()
    console = console or Console()
    def tell(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    say: Callable[[str], None] = (lambda text: None) if options.quiet else tell
    cc_map = None if options.learn else load_cc_map(options.cc_map)
    engine = (engine_loader or load_engine)(options.model, options.device)
    ports = open_ports(options.backend, options.port_name, options.in_port, options.out_port)
    log = JsonLog(options.log) if options.log else None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arvae-infer")
    runtime: BridgeRuntime | None = None
    try:
        if cc_map is None:
            cc_map = _learn(ports, options, list(engine.meta.attributes), tell)  # prompts even when quiet
        core = BridgeCore(options.bridge, engine, ports.output.send, clock, executor, cc_map=cc_map,
                          log=log.write if log else None)
        runtime = BridgeRuntime(core, ports.input, clock)
        cfg = options.bridge
        say(f"arvae-midi serve ({ports.backend}): play into {ports.input.name!r}, listen on {ports.output.name!r}; "
            f"mode {cfg.mode}, out channel {cfg.out_channel}, tempo from MIDI clock or {cfg.bpm:g} bpm; Ctrl-C stops")
        with _signals(stop), StatusDisplay(options.quiet, console) as display:
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
            runtime.stop("stopped")
            display.update(core.status, core.knobs.snapshot())
        if runtime.error is not None:
            raise runtime.error
        if core.failed:
            raise BackendError(f"{core.failed}; the bridge sent all notes off where it still could")
    finally:
        if runtime is not None:
            runtime.stop("stopped")
            time.sleep(FLUSH_S)
        ports.close()
        executor.shutdown(wait=False, cancel_futures=True)
        if log is not None:
            log.close()
