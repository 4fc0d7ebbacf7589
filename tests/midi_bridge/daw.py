"""The DAW side of the JACK tests: ``arvae-midi serve`` as a subprocess, and this process as the DAW.

The DAW reads the bridge's output through the bridge's own :class:`RtMidiInput` (drained by a
thread of ours with JACK arrival times), so no Python runs on JACK's thread in the test process
either.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rtmidi

from arvae_midi.midi_bridge.clock import pulse_period
from arvae_midi.midi_bridge.ports import quiet_stderr
from arvae_midi.midi_bridge.rtmidi_io import RtMidiInput

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny.onnx"
BPM = 120
P = pulse_period(BPM)


def serve(env: dict[str, str], name: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    """``arvae-midi serve --backend jack --quiet --log LOG`` with the tiny model, ports ``NAME``."""
    return subprocess.Popen(
        [sys.executable, "-m", "arvae_midi.cli", "serve", "--backend", "jack", "--model", str(TINY),
         "--port-name", name, "--quiet", "--log", str(log), *extra],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


class Daw:
    """One JACK client writing to the bridge, one reading what comes back.

    Positions are measured against the times the DAW actually handed each clock pulse to JACK.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[tuple[float, list[int]]] = []  # (arrival, monotonic s; bytes)
        self.sent: list[float] = []  # monotonic time each clock pulse was handed to JACK
        self._lock = threading.Lock()
        with quiet_stderr():
            self._rt_in = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=f"{name}-in", queue_size_limit=65536)
            self.midi_out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=f"{name}-out")
        self.midi_in: RtMidiInput | None = None

    def _on_event(self, data: Sequence[int], arrival: float | None) -> None:
        with self._lock:
            self.received.append((arrival if arrival is not None else time.monotonic(), list(data)))

    def messages(self) -> list[list[int]]:
        """Every message received so far."""
        with self._lock:
            return [m for _, m in self.received]

    def connect(self, bridge_in: str, bridge_out: str, timeout: float = 30.0) -> None:
        """Wait for the bridge's ports to appear, then connect to them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outs, ins = self.midi_out.get_ports(), self._rt_in.get_ports()
            if bridge_in in outs and bridge_out in ins:
                self.midi_out.open_port(outs.index(bridge_in), "out")
                self._rt_in.open_port(ins.index(bridge_out), "in")
                self.midi_in = RtMidiInput(self._rt_in, bridge_out)
                self.midi_in.set_callback(self._on_event)
                time.sleep(0.1)  # let the connections settle for a few periods
                return
            time.sleep(0.05)
        raise AssertionError(f"the bridge's ports {bridge_in!r}, {bridge_out!r} did not appear")

    def send(self, data: Sequence[int]) -> None:
        """One message now."""
        self.midi_out.send_message(list(data))
        if list(data) == [0xF8]:
            self.sent.append(time.monotonic())

    def play(self, pulses: int, notes: Sequence[tuple[int, int, int]] = (), start: bool = True,
             extra: Sequence[tuple[float, Sequence[int]]] = ()) -> None:
        """Start, ``pulses`` clock pulses, ``notes`` (key, on pulse, off pulse) and ``extra``
        (pulse, bytes), each by absolute time."""
        t0 = time.monotonic() + 0.05
        events: list[tuple[float, int, Sequence[int]]] = [(t0 - 0.002, 0, [0xFA])] if start else []
        events += [(t0 + i * P, 1, [0xF8]) for i in range(pulses)]
        for key, on, off in notes:
            events += [(t0 + on * P, 2, [0x90, key, 100]), (t0 + off * P, 2, [0x80, key, 0])]
        events += [(t0 + pos * P, 3, data) for pos, data in extra]
        events.sort(key=lambda e: (e[0], e[1]))
        for t, _, data in events:
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send(data)

    def position(self, t: float) -> float:
        """Pulse position of time ``t``: how many pulses the DAW had sent by then (interpolated)."""
        return float(np.interp(t, self.sent, np.arange(len(self.sent))))

    def abandon(self) -> None:
        """After the server died: stop reading and never touch the clients again (see ``abandon``)."""
        from arvae_midi.midi_bridge.rtmidi_io import abandon

        if self.midi_in is not None:
            self.midi_in.abandon()
        abandon(self._rt_in, self.midi_out)

    def close(self) -> None:
        if self.midi_in is not None:
            self.midi_in.close()
        else:
            self._rt_in.delete()
        self.midi_out.delete()


def wait_for(condition: object, timeout: float = 20.0) -> bool:
    """Poll ``condition()`` until true or ``timeout`` s (a hang guard, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(condition())  # type: ignore[operator]


def read_log(path: Path) -> list[dict[str, object]]:
    """The bridge's JSON-lines log."""
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Session:
    """``serve`` plus a connected :class:`Daw`; :meth:`end` stops it with a signal and collects."""

    def __init__(self, env: dict[str, str], log: Path, *extra: str) -> None:
        import uuid

        self.name = f"f-{uuid.uuid4().hex[:6]}"
        self.log = log
        self.proc = serve(env, self.name, log, *extra)
        self.daw = Daw(f"daw-{self.name}")
        self.returncode: int | None = None
        self.stderr = ""
        try:
            self.daw.connect(f"{self.name}:in", f"{self.name}-out:out")
        except BaseException:
            self.end()
            raise

    def end(self, sig: int = 15, timeout: float = 20.0) -> int | None:
        """Send ``sig`` (SIGTERM by default) unless it already exited; wait; close the DAW."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                _, self.stderr = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:  # a hang: the test fails on the status
                self.proc.kill()
                _, self.stderr = self.proc.communicate()
            time.sleep(0.3)  # the last messages cross the JACK graph (late cycles on a busy machine)
        finally:
            self.daw.close()
        self.returncode = self.proc.returncode
        return self.returncode
