"""In-memory ports for tests: the bridge without any MIDI backend.

They satisfy :class:`~arvae_midi.midi_bridge.ports.InputPort` and
:class:`~arvae_midi.midi_bridge.ports.OutputPort` like the rtmidi ports do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import mido

from arvae_midi.midi_bridge.ports import InputCallback


class MemoryInput:
    """In-memory input for tests: :meth:`inject` delivers bytes to the callback."""

    def __init__(self, name: str = "memory in") -> None:
        self.name = name
        self._callback: InputCallback | None = None
        self.closed = False

    def set_callback(self, callback: InputCallback | None) -> None:
        """Route injected events to ``callback``."""
        self._callback = callback

    def inject(self, data: Sequence[int] | mido.Message) -> None:
        """Deliver one event as a port's input thread would (from the caller's thread, arriving now)."""
        if self._callback is not None:
            self._callback(data.bytes() if isinstance(data, mido.Message) else list(data), None)

    def close(self) -> None:
        """Stop delivering."""
        self._callback, self.closed = None, True


class MemoryOutput:
    """In-memory output for tests: records (time, message); ``fail`` makes sends raise OSError."""

    def __init__(self, clock: Callable[[], float] | None = None, name: str = "memory out") -> None:
        self.name = name
        self.messages: list[tuple[float, mido.Message]] = []
        self.fail = False
        self.closed = False
        self._clock = clock or (lambda: 0.0)
        self._lock = threading.Lock()

    def send(self, msg: mido.Message) -> None:
        """Record ``msg``; raise OSError when failing or closed."""
        if self.fail or self.closed:
            raise OSError(f"output port {self.name!r} is gone")
        with self._lock:
            self.messages.append((self._clock(), msg.copy()))

    def close(self) -> None:
        """Refuse further sends."""
        self.closed = True


class HealthyPorts:
    """Mixin for in-memory stand-ins of :class:`~arvae_midi.midi_bridge.ports.PortPair`: the health
    queries of a connected, non-realtime backend whose server never goes away."""

    def lost(self) -> str | None:
        return None

    def server_gone(self) -> bool:
        return False

    def unconnected(self) -> list[str]:
        return []

    def server_realtime(self) -> bool | None:
        return None
