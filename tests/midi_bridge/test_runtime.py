"""The threaded runtime and ``serve`` with in-memory ports: real threads, real clock.

These runs take about a second of wall time at 300 bpm. They check what was sent and that
everything ends silent, never how long anything took.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mido
import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.errors import BackendError
from arvae_midi.midi_bridge import serve as serve_module
from arvae_midi.midi_bridge.bridge import BridgeCore
from arvae_midi.midi_bridge.clock import MonotonicClock, pulse_period
from arvae_midi.midi_bridge.config import BridgeConfig
from arvae_midi.midi_bridge.knobs import load_cc_map
from arvae_midi.midi_bridge.runtime import BridgeRuntime
from arvae_midi.midi_bridge.serve import ServeOptions, serve
from tests.midi_bridge.harness import FakeEngine, sounding_after
from tests.midi_bridge.memory import HealthyPorts, MemoryInput, MemoryOutput

BPM = 300


#: Musical options for threaded runs: lateness and clock-loss limits that only a hang could
#: reach, so a busy CI machine that delays a thread can neither drop a note nor make the clock
#: look lost (timing is the benchmark's business, not these tests').
CONFIG = BridgeConfig(bpm=BPM, late_tolerance_s=60.0, clock_timeout_s=60.0)


def _play_one_bar(port: MemoryInput, ready: Callable[[], bool], bars: int = 2) -> None:
    """Start, clock for ``bars`` bars at 300 bpm, three notes in bar 0 (absolute-time feeder).

    After pulse 93, where bar 0's capture closes, the feeder holds the clock until ``ready()``
    says the variation is scheduled (an event, not a guess at how long inference takes on a
    loaded machine): the bridge never runs more than two pulses ahead of the clock, so bar 1
    cannot start without its variation. The held pulses then come late, all at once, as from
    a stalled input; the bridge counts each once.
    """
    period = pulse_period(BPM)
    t0 = time.monotonic() + 0.02
    events = [(t0, [0xFA])] + [(t0 + i * period, [0xF8]) for i in range(96 * bars)]
    for k, key in enumerate((60, 64, 67)):
        events += [(t0 + 24 * k * period, [0x90, key, 100]), (t0 + (24 * k + 12) * period, [0x80, key, 0])]
    events.sort(key=lambda e: e[0])
    held = t0 + 93.5 * period
    for t, data in events:
        if t > held:
            _wait_for(ready, 60.0)
            held = float("inf")
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        port.inject(data)


def _texts(out: MemoryOutput) -> list[str]:
    return [f"{m.type} {getattr(m, 'note', getattr(m, 'control', ''))}" for _, m in out.messages]


def test_runtime_plays_the_variation_and_stops_silent() -> None:
    clock = MonotonicClock()
    port_in, port_out = MemoryInput(), MemoryOutput(clock.now)
    with ThreadPoolExecutor(1) as executor:
        core = BridgeCore(CONFIG, FakeEngine(), port_out.send, clock, executor)
        runtime = BridgeRuntime(core, port_in, clock)
        runtime.start()
        _play_one_bar(port_in, lambda: core.scheduler.next_pos() is not None, bars=2)
        runtime.stop("test")
    assert not runtime.running and runtime.error is None
    ons = [m.note for _, m in port_out.messages if m.type == "note_on"]
    assert ons == [62, 66, 69]
    assert sounding_after(m for _, m in port_out.messages) == set()
    assert _texts(port_out)[-1] == "control_change 123"
    assert core.status.misses == 0 and core.status.late == 0


def test_an_internal_error_still_ends_all_notes() -> None:
    clock = MonotonicClock()
    port_in, port_out = MemoryInput(), MemoryOutput(clock.now)
    with ThreadPoolExecutor(1) as executor:
        core = BridgeCore(BridgeConfig(thru=True), FakeEngine(), port_out.send, clock, executor)
        runtime = BridgeRuntime(core, port_in, clock)
        runtime.start()
        port_in.inject([0x90, 60, 100])  # thru: sounds at once
        deadline = time.monotonic() + 5
        while not port_out.messages and time.monotonic() < deadline:
            time.sleep(0.005)

        def broken(t: float, data: object) -> None:
            raise RuntimeError("bug")

        core.feed = broken  # type: ignore[method-assign]
        port_in.inject([0x90, 62, 100])
        runtime.stop("test")
    assert isinstance(runtime.error, RuntimeError)
    assert sounding_after(m for _, m in port_out.messages) == set()
    assert _texts(port_out)[-1] == "control_change 123"


@dataclass
class FakePair(HealthyPorts):
    """Stands in for :class:`arvae_midi.midi_bridge.ports.PortPair` with memory ports."""

    input: MemoryInput = field(default_factory=MemoryInput)
    output: MemoryOutput = field(default_factory=MemoryOutput)
    backend: str = "memory"
    gone: str | None = None
    closed: bool = False
    steps: list[str] = field(default_factory=list)  # shutdown steps, with the output sent before each

    def _step(self, name: str) -> None:
        self.steps.append(f"{name} after {len(self.output.messages)} sent")

    def lost(self) -> str | None:
        return self.gone

    def flush(self, timeout: float) -> bool:
        self._step("flush")
        return True

    def detach(self) -> None:
        self._step("detach")

    def close(self) -> None:
        self._step("close")
        self.closed = True


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> FakePair:
    fake = FakePair()
    monkeypatch.setattr(serve_module, "open_ports", lambda *args: fake)
    monkeypatch.setattr(serve_module, "load_engine", lambda model, device: FakeEngine())
    return fake


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_serve_runs_until_stopped_and_writes_the_log(
    pair: FakePair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    log = tmp_path / "events.jsonl"
    options = ServeOptions(bridge=CONFIG, quiet=True, log=log)
    cores: list[BridgeCore] = []

    class Core(BridgeCore):  # the core serve builds, so the feeder can wait for its variation
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            cores.append(self)

    monkeypatch.setattr(serve_module, "BridgeCore", Core)
    thread = threading.Thread(target=serve, args=(options, stop))
    thread.start()
    _wait_for(lambda: pair.input._callback is not None)
    _play_one_bar(pair.input, lambda: bool(cores) and cores[0].scheduler.next_pos() is not None, bars=2)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and pair.closed
    assert [m.note for _, m in pair.output.messages if m.type == "note_on"] == [62, 66, 69]
    assert pair.output.messages[-1][1] == mido.Message("control_change", control=123, value=0)
    lines = log.read_text().splitlines()
    assert any('"event": "bar"' in line for line in lines) and '"event": "shutdown"' in lines[-1]


def test_serve_reports_a_lost_port_after_silencing(pair: FakePair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_module, "PORT_CHECK_S", 0.05)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(ServeOptions(bridge=BridgeConfig(thru=True), quiet=True))
        except BackendError as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    _wait_for(lambda: pair.input._callback is not None)
    pair.input.inject([0x90, 60, 100])
    _wait_for(lambda: pair.output.messages)
    pair.gone = "input port 'x' lost"
    thread.join(5)
    assert not thread.is_alive()
    assert errors and "input port 'x' lost" in str(errors[0])
    assert sounding_after(m for _, m in pair.output.messages) == set()


def test_sigterm_stops_serve_cleanly(pair: FakePair) -> None:
    """`arvae-midi serve` under SIGTERM: exit status 0, every note off, All Notes Off."""

    def terminate() -> None:
        _wait_for(lambda: pair.input._callback is not None)  # handlers are installed by then
        pair.input.inject([0x90, 60, 100])  # the input's first note starts the internal tempo
        pair.input.inject([0x80, 60, 0])
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate)
    killer.start()
    result = CliRunner().invoke(app, ["serve", "--quiet", "--thru"])
    killer.join()
    assert result.exit_code == 0, result.output
    assert [m.type for _, m in pair.output.messages] == ["note_on", "note_off", "control_change"]
    assert pair.closed


def test_shutdown_runs_in_order_after_a_signal(pair: FakePair, tmp_path: Path) -> None:
    """Panic, then flush, then detach, then close, all before serve returns; the log is complete."""

    def terminate() -> None:
        _wait_for(lambda: pair.input._callback is not None)
        pair.input.inject([0x90, 60, 100])
        _wait_for(lambda: pair.output.messages)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate)
    killer.start()
    result = serve(ServeOptions(bridge=BridgeConfig(thru=True), quiet=True, log=tmp_path / "log.jsonl"))
    killer.join()
    assert result == signal.SIGTERM
    assert _texts(pair.output) == ["note_on 60", "note_off 60", "control_change 123"]
    assert pair.steps[:3] == ["flush after 3 sent", "detach after 3 sent", "close after 3 sent"]
    assert pair.input._callback is None and pair.closed
    assert '"event": "shutdown"' in (tmp_path / "log.jsonl").read_text().splitlines()[-1]


def test_a_signal_while_the_ports_open_ends_serve_cleanly(pair: FakePair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handlers are installed before the ports appear: a signal then is a clean stop, not a kill."""
    opened: list[FakePair] = []

    def open_then_signal(*args: object) -> FakePair:
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the ports open
        opened.append(pair)
        return pair

    monkeypatch.setattr(serve_module, "open_ports", open_then_signal)
    assert serve(ServeOptions(quiet=True)) == signal.SIGINT
    assert opened and pair.closed
    assert _texts(pair.output) == ["control_change 123"]
    assert pair.steps == ["flush after 1 sent", "detach after 1 sent", "close after 1 sent"]


def test_serve_learn_writes_the_map_then_serves_with_it(pair: FakePair, tmp_path: Path) -> None:
    path = tmp_path / "learned.toml"
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(ServeOptions(cc_map=path, learn=True, quiet=True), stop))
    thread.start()
    _wait_for(lambda: pair.input._callback is not None)
    # The user turns one knob after another until the map is written. Moves made before a prompt
    # are discarded, so a starved serve thread may need more turns: the controls go round 40..99
    # (a taken one is ignored) until a hang guard, instead of stopping after 60 turns.
    deadline, turn = time.monotonic() + 60.0, 0
    while not path.exists() and thread.is_alive() and time.monotonic() < deadline:
        pair.input.inject([0xB0, 40 + turn % 60, 64])
        turn += 1
        time.sleep(0.03)
    _wait_for(lambda: path.exists())
    stop.set()
    thread.join(5)
    learned = load_cc_map(path)
    numbers = [*learned.attributes.values(), learned.amount, learned.freeze]
    assert len(set(numbers)) == 6 and all(40 <= n < 100 for n in numbers)
    assert list(learned.attributes) == list(ATTRIBUTE_NAMES)
