"""Hardware-free test harness: a fake engine, a simulated executor and a simulated run loop.

:class:`Sim` drives a :class:`BridgeCore` the way the threaded runtime does (deliver input,
then step at the next wakeup), but on a :class:`ManualClock`, so every output message is
recorded with the exact time it was sent and runs of many bars take milliseconds.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import mido
import numpy as np

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import HOLD_ID, REST_ID, Vocabulary
from arvae_midi.midi_bridge.bridge import BridgeCore
from arvae_midi.midi_bridge.clock import ManualClock, pulse_period
from arvae_midi.midi_bridge.config import BridgeConfig, VariationEngine
from arvae_midi.midi_bridge.knobs import CCMap


@dataclass
class FakeMeta:
    vocab: Vocabulary = field(default_factory=Vocabulary)
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTE_NAMES))


class FakeEngine:
    """Deterministic stand-in: variation i transposes the bar up by ``shift + i`` semitones.

    Records every call's knobs, amount, seed and n. ``fail`` lists call numbers (0-based) that
    raise RuntimeError instead.
    """

    def __init__(self, shift: int = 2, fail: Iterable[int] = ()) -> None:
        self.meta = FakeMeta()
        self.shift = shift
        self.fail = set(fail)
        self.calls: list[dict[str, Any]] = []

    def vary(
        self,
        bar: np.ndarray,
        knobs: Mapping[str, int | None],
        amount: float = 0.0,
        seed: int | None = 0,
        n: int = 1,
        pitch_mask: np.ndarray | None = None,
        key_lock: bool | None = None,
        context: Sequence[np.ndarray] | np.ndarray | None = None,
    ) -> np.ndarray:
        call = len(self.calls)
        self.calls.append({"bar": np.array(bar), "knobs": dict(knobs), "amount": amount, "seed": seed, "n": n,
                           "pitch_mask": pitch_mask, "key_lock": key_lock,
                           "context": None if context is None else [np.array(c) for c in context]})
        if call in self.fail:
            raise RuntimeError(f"engine failure on call {call}")
        vocab = self.meta.vocab
        out = np.repeat(np.asarray(bar, dtype=np.int64)[None], n, axis=0)
        for i in range(n):
            row = out[i]
            pitched = (row != HOLD_ID) & (row != REST_ID)
            pitches = vocab.pitch_table[row[pitched]] + self.shift + i
            row[pitched] = [vocab.pitch_id(vocab.fold(int(p))) for p in pitches]
        return out


class SimExecutor(Executor):
    """Runs each job when the simulated time reaches its submission time plus ``latency``."""

    def __init__(self, clock: ManualClock, latency: float | Callable[[int], float] = 0.0) -> None:
        self.clock = clock
        self.latency = latency
        self._pending: list[tuple[float, int, Callable[..., Any], tuple[Any, ...], Future[Any]]] = []
        self._seq = itertools.count()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        seq = next(self._seq)
        delay = self.latency(seq) if callable(self.latency) else self.latency
        future: Future[Any] = Future()
        heapq.heappush(self._pending, (self.clock.now() + delay, seq, lambda: fn(*args, **kwargs), (), future))
        return future

    def next_ready(self) -> float:
        return self._pending[0][0] if self._pending else math.inf

    def run_due(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, _, job, _, future = heapq.heappop(self._pending)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except Exception as e:
                future.set_exception(e)


class Sim:
    """A bridge on a manual clock with an in-memory output that records (time, message)."""

    def __init__(
        self,
        config: BridgeConfig | None = None,
        engine: VariationEngine | None = None,
        latency: float | Callable[[int], float] = 0.0,
        cc_map: CCMap | None = None,
        send: Callable[[mido.Message], None] | None = None,
    ) -> None:
        self.clock = ManualClock(0.0)
        self.engine: Any = engine or FakeEngine()
        self.executor = SimExecutor(self.clock, latency)
        self.out: list[tuple[float, mido.Message]] = []
        self.events: list[dict[str, Any]] = []
        self.core = BridgeCore(
            config or BridgeConfig(), self.engine, send or self.record, self.clock, self.executor,
            cc_map=cc_map, log=self.events.append,
        )
        self._inputs: list[tuple[float, int, bytes]] = []
        self._seq = itertools.count()

    def record(self, msg: mido.Message) -> None:
        self.out.append((self.clock.now(), msg))

    def at(self, t: float, *messages: mido.Message | bytes | Sequence[int]) -> None:
        """Queue input messages (or raw bytes) arriving at time ``t``."""
        for msg in messages:
            data = bytes(msg.bytes()) if isinstance(msg, mido.Message) else bytes(msg)
            heapq.heappush(self._inputs, (t, next(self._seq), data))

    def clock_run(self, t0: float, bpm: float, pulses: int, start: bool = True, jitter: Sequence[float] = ()) -> float:
        """MIDI Start at ``t0`` then ``pulses`` clock pulses from ``t0``; returns the next pulse time."""
        period = pulse_period(bpm)
        if start:
            self.at(t0, mido.Message("start"))
        for i in range(pulses):
            self.at(t0 + i * period + (jitter[i % len(jitter)] if jitter else 0.0), mido.Message("clock"))
        return t0 + pulses * period

    def run_until(self, t_end: float) -> None:
        """Advance the simulated time to ``t_end``, delivering input and stepping the bridge."""
        spins, last = 0, -math.inf
        while True:
            t_next = min(
                self._inputs[0][0] if self._inputs else math.inf,
                self.core.next_wakeup(),
                self.executor.next_ready(),
            )
            if t_next > t_end:
                break
            now = max(t_next, self.clock.now())
            spins = spins + 1 if now == last else 0
            assert spins < 1000, f"the bridge keeps waking at t={now} without progress"
            last = now
            self.clock.set(now)
            self.executor.run_due(now)
            while self._inputs and self._inputs[0][0] <= now:
                _, _, data = heapq.heappop(self._inputs)
                self.core.feed(now, data)
            self.core.step(now)
        self.clock.set(max(t_end, self.clock.now()))

    def shutdown(self, reason: str = "test end") -> None:
        self.core.shutdown(reason)

    def sent(self, since: float = -math.inf) -> list[tuple[float, str]]:
        """Output as (time rounded to 1e-9, compact text) pairs, e.g. (3.0, 'on 62 90')."""
        return [(round(t, 9), describe(m)) for t, m in self.out if t >= since]


def describe(msg: mido.Message) -> str:
    """Compact text of an output message: 'on KEY VEL', 'off KEY', 'cc CTRL VAL', channel if not 0."""
    ch = f" ch{msg.channel + 1}" if getattr(msg, "channel", 0) else ""
    if msg.type == "note_on" and msg.velocity > 0:
        return f"on {msg.note} {msg.velocity}{ch}"
    if msg.type in ("note_on", "note_off"):
        return f"off {msg.note}{ch}"
    if msg.type == "control_change":
        return f"cc {msg.control} {msg.value}{ch}"
    return str(msg)


def sounding_after(messages: Iterable[mido.Message]) -> set[tuple[int, int]]:
    """Replay output messages: (channel, key) still sounding at the end. CC 123 is NOT counted,
    so the bridge must have sent an explicit note_off for every note."""
    sounding: set[tuple[int, int]] = set()
    for msg in messages:
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.add((msg.channel, msg.note))
        elif msg.type in ("note_on", "note_off"):
            sounding.discard((msg.channel, msg.note))
    return sounding


def note(kind: str, key: int, velocity: int = 100, channel: int = 0) -> mido.Message:
    """Shorthand for an input note message."""
    if kind == "on":
        return mido.Message("note_on", note=key, velocity=velocity, channel=channel)
    return mido.Message("note_off", note=key, velocity=0, channel=channel)


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    """Shorthand for an input control change."""
    return mido.Message("control_change", control=control, value=value, channel=channel)
