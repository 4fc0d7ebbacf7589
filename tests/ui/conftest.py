"""A running ``serve`` with the control surface, on in-memory ports and the harness's FakeEngine.

:class:`LiveServe` runs :func:`arvae_midi.midi_bridge.serve.serve` on a thread (real clock,
real threads, the real WebSocket and OSC sockets) with in-memory MIDI ports, so tests can
inject notes, clock and CCs and read what the bridge played and which knobs each variation used.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mido
import pytest
from rich.console import Console

pytest.importorskip("websockets", reason="the [ui] extra (websockets) is not installed")
pytest.importorskip("pythonosc", reason="the [ui] extra (python-osc) is not installed")

from arvae_midi.midi_bridge import serve as serve_module  # noqa: E402
from arvae_midi.midi_bridge.clock import pulse_period  # noqa: E402
from arvae_midi.midi_bridge.config import BridgeConfig  # noqa: E402
from arvae_midi.midi_bridge.serve import ServeOptions, serve  # noqa: E402
from arvae_midi.ui.surface import ControlSurface, UiOptions  # noqa: E402
from tests.midi_bridge.harness import FakeEngine  # noqa: E402

BPM = 240.0


class MemoryIn:
    """Input port: :meth:`inject` delivers bytes to the bridge's callback from the test thread."""

    name = "memory in"

    def __init__(self) -> None:
        self.callback: Callable[[Sequence[int]], None] | None = None

    def set_callback(self, callback: Callable[[Sequence[int]], None] | None) -> None:
        self.callback = callback

    def inject(self, msg: mido.Message) -> None:
        if self.callback is not None:
            self.callback(msg.bytes())


@dataclass
class MemoryPair:
    """Stands in for :class:`arvae_midi.midi_bridge.ports.PortPair`; records what was sent."""

    input: MemoryIn = field(default_factory=MemoryIn)
    sent: list[mido.Message] = field(default_factory=list)
    backend: str = "memory"

    @property
    def output(self) -> MemoryPair:
        return self

    name = "memory out"

    def send(self, msg: mido.Message) -> None:
        self.sent.append(msg.copy())

    def lost(self) -> str | None:
        return None

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail the test (never hang) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class LiveServe:
    """``serve`` on a thread; the test plays the DAW through :attr:`pair`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ui: UiOptions, log: Path | None = None,
                 config: BridgeConfig | None = None, engine: Any = None) -> None:
        self.pair = MemoryPair()
        self.engine = engine or FakeEngine()
        monkeypatch.setattr(serve_module, "open_ports", lambda *args: self.pair)
        monkeypatch.setattr(serve_module, "load_engine", lambda model, device: self.engine)
        surfaces: list[ControlSurface] = []
        make_surface = serve_module._surface
        monkeypatch.setattr(serve_module, "_surface", lambda o: surfaces.append(make_surface(o)) or surfaces[-1])
        self.output = io.StringIO()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        options = ServeOptions(bridge=config or BridgeConfig(bpm=BPM, late_tolerance_s=1.0), quiet=True, log=log,
                               ui=ui)
        console = Console(file=self.output, width=400)
        self.thread = threading.Thread(target=self._run, args=(options, console), daemon=True)
        self.thread.start()
        wait_for(lambda: self.pair.input.callback is not None or not self.thread.is_alive(), what="serve to start")
        self.surface: ControlSurface | None = surfaces[0] if surfaces else None

    def _run(self, options: ServeOptions, console: Console) -> None:
        try:
            serve(options, self.stop, console=console)
        except BaseException as e:
            self.error = e

    @property
    def url(self) -> str:
        match = re.search(r"control page: (\S+)", self.output.getvalue())
        assert match, self.output.getvalue()
        return match.group(1)

    def play_bar(self, *bars: Sequence[int], bpm: float = BPM) -> None:
        """Bars of four quarter notes each (default one bar C E G C) on the internal tempo, the
        first note starting it; every note is timed from that first note, so bars stay aligned."""
        beat = 24 * pulse_period(bpm)
        t0 = time.monotonic()
        for b, keys in enumerate(bars or ((60, 64, 67, 72),)):
            for i, key in enumerate(keys):
                _sleep_until(t0 + (4 * b + i) * beat)
                self.pair.input.inject(mido.Message("note_on", note=key, velocity=100))
                _sleep_until(t0 + (4 * b + i) * beat + beat / 2)
                self.pair.input.inject(mido.Message("note_off", note=key, velocity=0))

    def cc(self, control: int, value: int) -> None:
        self.pair.input.inject(mido.Message("control_change", control=control, value=value))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "serve did not stop"


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., LiveServe]]:
    """Factory of :class:`LiveServe` runs, all stopped at the end of the test."""
    runs: list[LiveServe] = []

    def start(ui: UiOptions, **kwargs: object) -> LiveServe:
        run = LiveServe(monkeypatch, ui, **kwargs)  # type: ignore[arg-type]
        runs.append(run)
        if run.error is not None:
            raise run.error
        return run

    yield start
    for run in runs:
        run.close()
