"""A running ``serve`` with the control surface, on in-memory ports and the harness's FakeEngine.

:class:`LiveServe` runs :func:`arvae_midi.midi_bridge.serve.serve` on a thread (real clock,
real threads, the real WebSocket and OSC sockets) with in-memory MIDI ports; a DAW thread sends
MIDI clock and the notes of :meth:`LiveServe.play_bar`, so tests can read what the bridge played
and which knobs each variation used.
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
from tests.midi_bridge.memory import HealthyPorts  # noqa: E402

BPM = 240.0
#: The DAW stalls its clock after this pulse of a bar with notes (the capture closes at 93).
CLOSE_PULSE = 94


class MemoryIn:
    """Input port: :meth:`inject` delivers bytes to the bridge's callback from the test thread."""

    name = "memory in"

    def __init__(self) -> None:
        self.callback: Callable[[Sequence[int], float | None], None] | None = None

    def set_callback(self, callback: Callable[[Sequence[int], float | None], None] | None) -> None:
        self.callback = callback

    def inject(self, msg: mido.Message) -> None:
        if self.callback is not None:
            self.callback(msg.bytes(), None)  # (bytes, arrival time): None = arrived now


@dataclass
class MemoryPair(HealthyPorts):
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

    def detach(self) -> None:
        self.input.set_callback(None)

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
        self.events: list[dict[str, Any]] = []  # every bridge log event, as the surface gets them
        make_surface = serve_module._surface

        def tapped(options: ServeOptions) -> ControlSurface | None:
            surface = make_surface(options)
            if surface is not None:
                publish = surface.publish
                surface.publish = lambda event: (self.events.append(event), publish(event))[-1]  # type: ignore[method-assign]
                surfaces.append(surface)
            return surface

        monkeypatch.setattr(serve_module, "_surface", tapped)
        self._daw: threading.Thread | None = None
        self._daw_stop = threading.Event()
        self._daw_lock = threading.Lock()
        self._pulse = 0  # the next clock pulse the DAW sends
        self._notes: dict[int, list[mido.Message]] = {}
        self._bars: set[int] = set()
        self.output = io.StringIO()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        config = config or BridgeConfig(bpm=BPM, late_tolerance_s=1.0, clock_timeout_s=30.0)
        options = ServeOptions(bridge=config, quiet=True, log=log, ui=ui)
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

    def play_bar(self, *bars: Sequence[int]) -> int:
        """Play bars of four quarter notes each (default one bar C E G C) from the next bar on.

        The first call sends MIDI Start and plays from bar 0; the DAW thread keeps the clock
        running afterwards. Returns when the last of these bars has closed and its variation is
        scheduled; returns the first bar's number.
        """
        with self._daw_lock:
            first = 0 if self._daw is None else self._pulse // 96 + 1
            for b, keys in enumerate(bars or ((60, 64, 67, 72),)):
                base = 96 * (first + b)
                self._bars.add(first + b)
                for i, key in enumerate(keys):
                    self._notes.setdefault(base + 24 * i, []).append(mido.Message("note_on", note=key, velocity=100))
                    self._notes.setdefault(base + 24 * i + 12, []).append(mido.Message("note_off", note=key))
            last = first + len(bars or (0,)) - 1
            if self._daw is None:
                self._daw = threading.Thread(target=self._clock, daemon=True)
                self._daw.start()
        wait_for(lambda: self._pulse > 96 * last + CLOSE_PULSE, what=f"bar {last} to close")
        return first

    def _clock(self) -> None:
        """The DAW: MIDI Start, then clock pulses at :data:`BPM` until close(); notes on their pulses.

        After a bar with notes closes (pulse 94), the clock stalls until that bar's variation is
        scheduled: the bridge never runs ahead of a stalled clock, so even a loaded machine
        cannot make it miss (the same trick as ``tests/midi_bridge/test_runtime.py``).
        """
        period = pulse_period(BPM)
        port = self.pair.input
        t = time.monotonic()
        port.inject(mido.Message("start"))
        while not self._daw_stop.is_set():
            with self._daw_lock:
                pulse = self._pulse
                notes = self._notes.pop(pulse, [])
            _sleep_until(t)
            port.inject(mido.Message("clock"))
            for msg in notes:
                port.inject(msg)
            bar = pulse // 96
            if pulse % 96 == CLOSE_PULSE and bar in self._bars:
                deadline = time.monotonic() + 20
                while not any(e.get("event") in ("scheduled", "error") and e.get("bar") == bar + 1
                              for e in list(self.events)) and time.monotonic() < deadline:
                    time.sleep(0.005)
                t = time.monotonic()  # the clock resumes from here
            with self._daw_lock:
                self._pulse = pulse + 1
            t += period

    def cc(self, control: int, value: int) -> None:
        self.pair.input.inject(mido.Message("control_change", control=control, value=value))

    def close(self) -> None:
        self._daw_stop.set()
        if self._daw is not None:
            self._daw.join(10)
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
