"""The bridge's core: a single-threaded state machine from timestamped input to timed output.

:class:`BridgeCore` owns the transport, the bar capture, the knobs, the scheduler and the
output tracker. It is driven from outside by three calls, all with absolute clock times:

* :meth:`BridgeCore.feed` with the raw bytes of each input event and its arrival time,
* :meth:`BridgeCore.step` at (or after) :meth:`BridgeCore.next_wakeup`, which runs every timer
  and sends every event due by then,
* :meth:`BridgeCore.shutdown` once, at the end.

The threaded runtime (:mod:`arvae_midi.midi_bridge.runtime`) calls them from one thread; tests
call them with a :class:`~arvae_midi.midi_bridge.clock.ManualClock` and get exact times.

The bar cycle, for bar k (positions in pulses, 96 per bar):
``96k`` bar k starts (its variation was scheduled earlier, or it falls back) ->
during bar k every change of the captured bar (an onset, a release) and every knob move runs the
variation of bar k as it stands *speculatively* on the worker (one job at a time; the newest
input waits while one runs, older waiting inputs are dropped) ->
``96k + 93`` bar k's capture closes and the knobs are read: the newest result whose input equals
the final bar is used at once; only a change since (e.g. in the last 1/32 of the bar) needs a
fresh run ->
inference finishes on the worker: its notes are scheduled if bar k+1 has not started yet; a knob
moved after the close re-runs it and the new result replaces the scheduled one up to the barline ->
``96(k+1)`` bar k+1 starts; no result yet means a miss: silence or thru for that bar.

Each result is the whole batch of ``variations_per_bar`` rows for one input (bar, knobs, key-lock
context, seed), kept by that input: the following bars that play other rows of the same batch do
not decode again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from typing import Any

import mido
import numpy as np

from arvae_midi.core.constants import DEFAULT_VELOCITY
from arvae_midi.core.tokens import TICKS_PER_BAR, tokens_to_notes
from arvae_midi.midi_bridge.capture import BarCapture, CapturedBar, bar_of, close_position
from arvae_midi.midi_bridge.clock import PULSES_PER_BAR, PULSES_PER_QUARTER, Clock, Transport
from arvae_midi.midi_bridge.config import (
    KEY_LOCK_BARS,
    BridgeConfig,
    BridgeStatus,
    VariationEngine,
    attributes_of,
)
from arvae_midi.midi_bridge.knobs import CCMap, KnobSnapshot, KnobState
from arvae_midi.midi_bridge.messages import MidiDecoder, is_note_off, is_note_on
from arvae_midi.midi_bridge.scheduler import THRU, VARIATION, OutputTracker, Scheduler

_EPS = 1e-9


@dataclass
class Plan:
    """What output bar ``bar`` plays: a variation (being computed), a repeat, or silence."""

    bar: int
    kind: str  # "variation" | "repeat" | "silence"
    source: CapturedBar | None = None
    index: int = 0  # which of the n variations of ``source``
    knobs: KnobSnapshot | None = None
    key: Hashable | None = None  # the input (bar, knobs, context, seed) whose batch it plays
    ready_key: Hashable | None = None  # the input of the batch its scheduled notes come from
    tokens: np.ndarray | None = None
    velocity: int = DEFAULT_VELOCITY
    ready_at: float | None = None
    inference_ms: float | None = None
    error: str | None = None
    scheduled: bool = False
    missed: bool = False


@dataclass
class _Cycle:
    """The next bar-cycle timer: ("close", k) at 96k + 93 or ("start", k) at 96k."""

    kind: str
    bar: int

    @property
    def pos(self) -> float:
        return close_position(self.bar) if self.kind == "close" else float(PULSES_PER_BAR * self.bar)


@dataclass
class _Voice:
    """Variation source state across bars (respond answers, loop phrases)."""

    source: CapturedBar | None = None
    index: int = 0
    last_tokens: np.ndarray | None = None
    last_velocity: int = DEFAULT_VELOCITY
    idle: int = 0
    recent: list[np.ndarray] = field(default_factory=list)  # tokens of the last non-empty input bars
    plans: dict[int, Plan] = field(default_factory=dict)


@dataclass
class _Job:
    """One input to the engine: a source bar, a knob snapshot and the key lock's recent bars."""

    key: Hashable
    source: CapturedBar
    knobs: KnobSnapshot
    recent: tuple[np.ndarray, ...]


#: Finished batches kept by input (the current and the next bars' need a handful at most).
_RESULTS_KEPT = 8


class BridgeCore:
    """Input events in, scheduled output out; see the module docstring for the bar cycle."""

    def __init__(
        self,
        config: BridgeConfig,
        engine: VariationEngine,
        send: Callable[[mido.Message], None],
        clock: Clock,
        executor: Executor,
        cc_map: CCMap | None = None,
        log: Callable[[dict[str, Any]], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.vocab = engine.meta.vocab
        self.model_attributes = tuple(engine.meta.attributes)
        self.clock = clock
        self.executor = executor
        self.knobs = KnobState((cc_map or CCMap()).restricted_to(self.model_attributes), config.amount)
        self.transport = Transport(config.bpm, config.clock_timeout_s)
        self.capture = BarCapture(self.vocab)
        self.scheduler = Scheduler()
        self.tracker = OutputTracker(self._send)
        self.decoder = MidiDecoder()
        self.status = BridgeStatus(tempo=config.bpm, mode=config.mode)
        self.failed: str | None = None  # set when a port fails; the runtime then stops
        self._output_broken = False
        self._port_send = send
        self._log = log or (lambda event: None)
        self.on_ready = on_ready  # wakes the runtime when a worker finishes
        self.closed = False
        self._out = config.out_channel - 1
        self._in = None if config.in_channel is None else config.in_channel - 1
        self._cycle: _Cycle | None = None
        self._voice = _Voice()
        self._fallback_thru_bar: int | None = None
        self._inflight: tuple[_Job, Future[Any]] | None = None  # the job on the worker
        self._queued: _Job | None = None  # the newest input waiting for the worker
        self._results: OrderedDict[Hashable, tuple[np.ndarray, float, float]] = OrderedDict()
        self._errors: dict[Hashable, str] = {}
        self._last_input: dict[int, float] = {}  # bar -> time of its last captured note event
        self._lock = threading.Lock()  # guards nothing musical: only the status counters' updates

    # ----- driving -------------------------------------------------------------------------

    def feed(self, t: float, data: bytes | bytearray | Sequence[int]) -> None:
        """Raw bytes of one input event that arrived at time ``t``."""
        for msg in self.decoder.feed(data):
            self.handle(t, msg)
        if self.decoder.ignored != self.status.ignored:
            self._set_status(ignored=self.decoder.ignored)

    def handle(self, t: float, msg: mido.Message) -> None:
        """One decoded input message that arrived at time ``t``."""
        kind = msg.type
        if kind == "clock":
            change = self.transport.on_pulse(t)
            if change == "switched":
                self._cut(t, "midi clock took over", panic=True)
            elif change in ("started", "resumed"):
                if change == "resumed":  # Start/Continue already cleared the slate; a resume did not
                    self._cut(t, "clock resumed", panic=False)
                self._log({"event": "transport", "t": t, "what": f"playing from pulse {self.transport.pulse}",
                           "source": "clock"})
                self._arm(float(self.transport.pulse))
            elif change == "stranded":
                what = "clock back after a long gap: waiting for Start, Continue or Song Position"
                self._log({"event": "transport", "t": t, "what": what, "source": "clock"})
                self._set_status(state="waiting", message=what)
        elif kind in ("start", "continue"):
            was_running = self.transport.running
            getattr(self.transport, f"on_{kind}")(t)
            self._cut(t, kind, panic=was_running)
            self._set_status(state="waiting", source="clock")
        elif kind == "stop":
            self.transport.on_stop(t)
            self._cut(t, "stop", panic=True)
            self._set_status(state="stopped")
        elif kind == "songpos":
            if self.transport.on_song_position(t, msg.pos):
                self._cut(t, "song position", panic=True)
        elif kind in ("note_on", "note_off"):
            self._handle_note(t, msg)
        elif kind == "control_change" and self.knobs.handle(msg.channel, msg.control, msg.value):
            self._speculate(t)  # a knob moved: the pending variation may change up to the barline

    def step(self, now: float) -> None:
        """Run every timer and send every event due at ``now``."""
        self._collect_inference(now)
        if self.transport.check_timeout(now):
            self._cut(now, "clock lost", panic=True)
            self._set_status(state="clock lost")
        while self.transport.running and self._cycle is not None:
            pos = self.transport.position_at(now) + _EPS
            cycle_pos = self._cycle.pos
            event_pos = self.scheduler.next_pos()
            if cycle_pos <= pos and (event_pos is None or cycle_pos <= event_pos):
                cycle = self._cycle
                if cycle.kind == "close":
                    self._close_bar(now, cycle.bar)
                else:
                    self._start_bar(now, cycle.bar)
            elif event_pos is not None and event_pos <= pos:
                self._fire(now, event_pos)
            else:
                break

    def next_wakeup(self) -> float:
        """Absolute time of the next timer or event (``inf``: only input can wake the bridge)."""
        times = [self.transport.timeout_at()]
        if self.transport.running and self._cycle is not None:
            times.append(self.transport.time_at(self._cycle.pos))
            event_pos = self.scheduler.next_pos()
            if event_pos is not None:
                times.append(self.transport.time_at(event_pos))
        return min(times)

    def shutdown(self, reason: str) -> None:
        """Stop for good: every sounding note off and All Notes Off (Ctrl-C, SIGTERM, port loss)."""
        if self.closed:
            return
        self.closed = True
        self.scheduler.clear()
        self.tracker.panic({self._out})
        self.transport.stop()
        self._cycle = None
        self._voice.plans.clear()
        self._log({"event": "shutdown", "t": self.clock.now(), "reason": reason})
        self._set_status(state="failed" if self.failed else "stopped", message=reason)

    def port_lost(self, reason: str) -> None:
        """A port or the whole backend disappeared (``reason`` says which): panic and fail."""
        self.failed = reason
        self.shutdown(reason)

    def set_mode(self, mode: str) -> None:
        """Switch between respond and loop from any thread; the next bar's plan follows it.

        ValueError for another mode. One attribute assignment, so the bridge thread reads either
        the old or the new config, never a mix.
        """
        self.config = replace(self.config, mode=mode)
        self._set_status(mode=mode)

    # ----- input ---------------------------------------------------------------------------

    def _handle_note(self, t: float, msg: mido.Message) -> None:
        if self._in is not None and msg.channel != self._in:
            return
        if is_note_on(msg):
            transport = self.transport
            if not (transport.running or transport.clock_present(t) or transport.armed or transport.expects_clock(t)):
                # No MIDI clock (nor one just lost): the internal tempo starts with this note as the downbeat.
                self.transport.start_internal(t)
                self._cut(t, "internal start", panic=False)
                self._arm(0.0)
                self._set_status(state="playing", source="internal", tempo=self.transport.bpm)
            if self.transport.running or self.transport.armed:
                # Between Start and its first pulse a note counts at the position that pulse takes.
                pos = self._position(t)
                self.capture.note_on(pos, msg.channel, msg.note, msg.velocity)
                self._last_input[bar_of(pos)] = t
                self._speculate(t)
            if self._thru_active(t):
                self.tracker.note_on(self._out, msg.note, msg.velocity, THRU)
        elif is_note_off(msg):
            if self.transport.running or self.transport.armed:
                pos = self._position(t)
                self.capture.note_off(pos, msg.channel, msg.note)
                self._last_input[bar_of(pos)] = t
                self._speculate(t)
            self.tracker.note_off(self._out, msg.note, THRU)

    def _position(self, t: float) -> float:
        transport = self.transport
        return float(transport.armed_position) if transport.armed else transport.position_at(t)

    def _thru_active(self, t: float) -> bool:
        if self.config.thru:
            return True
        if self._fallback_thru_bar is None or not self.transport.running:
            return False
        return int(self.transport.position_at(t) // PULSES_PER_BAR) == self._fallback_thru_bar

    # ----- bar cycle -----------------------------------------------------------------------

    def _arm(self, pos: float) -> None:
        """Set the next timer for a song (re)started at ``pos`` pulses."""
        bar = int(pos // PULSES_PER_BAR)
        self._cycle = _Cycle("close", bar) if pos < close_position(bar) else _Cycle("start", bar + 1)

    def _cut(self, t: float, reason: str, panic: bool) -> None:
        """A transport jump: drop what was scheduled and captured; end sounding variation notes."""
        self.scheduler.clear()
        self.capture.reset()
        self._voice = _Voice()
        self._cycle = None
        self._fallback_thru_bar = None
        self._queued = None
        self._last_input.clear()
        if panic:
            self.tracker.panic({self._out})
        else:
            self.tracker.release(VARIATION)
        self._log({"event": "transport", "t": t, "what": reason, "source": self.transport.source})

    def _close_bar(self, now: float, bar: int) -> None:
        captured = self.capture.close(bar)
        knobs = self.knobs.snapshot()
        plan = self._plan(bar + 1, captured, knobs, now)
        self._voice.plans[bar + 1] = plan
        self._cycle = _Cycle("start", bar + 1)
        if plan.kind == "repeat":
            self._schedule(plan)
        if captured.empty:
            self._voice.idle += 1
        else:
            self._voice.idle = 0

    def _tentative(self, captured: CapturedBar) -> tuple[CapturedBar | None, int, list[np.ndarray]]:
        """(source, index, recent bars) that closing ``captured`` now would give; changes nothing."""
        voice, n = self._voice, self.config.variations_per_bar
        if not captured.empty:
            return captured, 0, [*voice.recent, captured.tokens][-KEY_LOCK_BARS:]
        if voice.source is not None and (self.config.mode == "loop" or voice.index + 1 < n):
            return voice.source, (voice.index + 1) % n, voice.recent
        return None, 0, voice.recent

    def _job(self, source: CapturedBar, knobs: KnobSnapshot, recent: Sequence[np.ndarray]) -> _Job:
        """The engine input for a source bar: its key is everything the batch depends on."""
        context = tuple(recent) if self.config.key_lock else ()
        key = (source.index, source.tokens.tobytes(), tuple(sorted(knobs.values.items())), round(knobs.amount, 6),
               b"".join(np.asarray(r, np.int64).tobytes() for r in context))  # fmt: skip
        return _Job(key, source, knobs, context)

    def _plan(self, bar: int, captured: CapturedBar, knobs: KnobSnapshot, now: float) -> Plan:
        voice = self._voice
        if knobs.freeze and voice.last_tokens is not None:
            return Plan(bar, "repeat", knobs=knobs, tokens=voice.last_tokens, velocity=voice.last_velocity)
        voice.source, voice.index, voice.recent = self._tentative(captured)
        if voice.source is None:
            return Plan(bar, "silence", knobs=knobs)
        job = self._job(voice.source, knobs, voice.recent)
        plan = Plan(bar, "variation", voice.source, voice.index, knobs, key=job.key,
                    velocity=voice.source.velocity or DEFAULT_VELOCITY)  # fmt: skip
        self._voice.plans[bar] = plan
        self._want(job, now)
        self._resolve(now)
        return plan

    def _speculate(self, now: float) -> None:
        """The captured bar or the knobs changed: run the variation of the bar as it stands now.

        Before the open bar's capture closes, that is the variation it would get; between the
        close and the barline a knob move re-runs the pending variation of the next bar.
        """
        if self.closed or not self.transport.running:
            return
        pos = self.transport.position_at(now)
        current = int(pos // PULSES_PER_BAR)
        knobs = self.knobs.snapshot()
        pending = self._voice.plans.get(current + 1)
        if pos + _EPS >= close_position(current):
            # Bar ``current`` is closed: a knob move may still change its pending variation.
            if pending is not None and pending.kind == "variation" and pending.source is not None:
                job = self._job(pending.source, knobs, self._voice.recent)
                if job.key != pending.key:
                    pending.key, pending.knobs = job.key, knobs
                    self._want(job, now)
                    self._resolve(now)
            return
        if knobs.freeze:
            return
        source, _, recent = self._tentative(self.capture.peek(current))
        if source is not None:
            self._want(self._job(source, knobs, recent), now)

    def _want(self, job: _Job, now: float) -> None:
        """Make sure ``job``'s batch is, or will be, computed; the newest wins the waiting slot."""
        if job.key in self._results or job.key in self._errors:
            return
        if self._inflight is not None:
            if self._inflight[0].key != job.key:
                self._queued = job
            return
        self._submit(job, now)

    def _submit(self, job: _Job, now: float) -> None:
        self._queued = None
        future = self.executor.submit(self._infer, job.source, job.knobs, job.recent)
        self._inflight = (job, future)
        if self.on_ready is not None:
            on_ready = self.on_ready
            future.add_done_callback(lambda _f: on_ready())
        self._log({"event": "submit", "t": now, "source_bar": job.source.index})

    def _infer(
        self, source: CapturedBar, knobs: KnobSnapshot, recent: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, float, float]:
        """Worker thread: one batch of variations. Returns (tokens (n, 24), seconds, ready time).

        ``recent``: the last input bars (24,), the source last, whose scale the key lock keeps;
        empty = no lock. The engine's one variation call, as ``vary`` makes it.
        """
        started = time.perf_counter()
        batch = self.engine.vary(
            source.tokens, knobs.values, amount=knobs.amount, seed=self.config.seed + source.index,
            n=self.config.variations_per_bar, key_lock=bool(recent), context=recent[:-1] if recent else None,
        )
        elapsed = time.perf_counter() - started
        out = np.asarray(batch)
        if out.shape != (self.config.variations_per_bar, TICKS_PER_BAR):
            raise ValueError(f"engine returned shape {out.shape}, expected ({self.config.variations_per_bar}, 24)")
        if out.min() < 0 or out.max() >= len(self.vocab):
            raise ValueError("engine returned token ids outside the vocabulary")
        return out.astype(np.int64), elapsed, self.clock.now()

    def _collect_inference(self, now: float) -> None:
        """Store a finished batch, start the waiting input, and play results whose bar is ahead."""
        if self._inflight is not None and self._inflight[1].done():
            job, future = self._inflight
            self._inflight = None
            error = future.exception()
            if error is not None:
                self._errors[job.key] = f"{type(error).__name__}: {error}"
                while len(self._errors) > _RESULTS_KEPT:  # speculative inputs no bar ended with
                    del self._errors[next(iter(self._errors))]
            else:
                self._results[job.key] = future.result()
                while len(self._results) > _RESULTS_KEPT:
                    self._results.popitem(last=False)
            if self._queued is not None:
                queued, self._queued = self._queued, None
                self._want(queued, now)
        self._resolve(now)

    def _resolve(self, now: float) -> None:
        """Give every pending variation plan the batch of its input once it is there."""
        for plan in list(self._voice.plans.values()):
            if plan.kind != "variation" or plan.missed or plan.key is None:
                continue
            if plan.key in self._errors:
                plan.error = self._errors.pop(plan.key)
                plan.key = None
                self._set_status(errors=self.status.errors + 1, message=f"inference failed: {plan.error}")
                self._log({"event": "error", "t": now, "bar": plan.bar, "error": plan.error})
                self.scheduler.clear()
                self.tracker.panic({self._out})
                continue
            result = self._results.get(plan.key)
            if result is None or (plan.scheduled and plan.tokens is not None and plan.ready_key == plan.key):
                continue
            batch, seconds, ready = result
            if not (self.transport.running and self.transport.position_at(now) + _EPS < plan.bar * PULSES_PER_BAR):
                continue
            if plan.scheduled:  # a knob moved after the close: the new variation replaces the old
                self.scheduler.drop_bar(plan.bar)
                self._log({"event": "replace", "t": now, "bar": plan.bar})
            plan.tokens, plan.inference_ms, plan.ready_key = batch[plan.index], 1000.0 * seconds, plan.key
            plan.ready_at = max(ready, plan.ready_at or ready) if plan.scheduled else ready
            self._schedule(plan)

    def _schedule(self, plan: Plan) -> None:
        assert plan.tokens is not None
        start = plan.bar * PULSES_PER_BAR
        for note in tokens_to_notes(plan.tokens, self.vocab, velocity=plan.velocity):
            on = start + round(note.start * PULSES_PER_QUARTER)
            off = start + round(note.end * PULSES_PER_QUARTER)
            self.scheduler.add_note(self._out, note.pitch, note.velocity, on, off, plan.bar)
        plan.scheduled = True
        # What bar plan.bar will play, as soon as it is known (the control page shows it ahead).
        source = plan.source
        self._log({"event": "scheduled", "t": self.clock.now(), "bar": plan.bar, "plan": plan.kind,
                   "tokens": [int(x) for x in plan.tokens], "velocity": plan.velocity,
                   "source_bar": None if source is None else source.index,
                   "source_tokens": None if source is None else [int(x) for x in source.tokens]})

    def _start_bar(self, now: float, bar: int) -> None:
        plan = self._voice.plans.pop(bar, None)
        self._cycle = _Cycle("close", bar)
        for old in [b for b in self._voice.plans if b < bar]:
            del self._voice.plans[old]
        self._fallback_thru_bar = None
        for old in [b for b in self._last_input if b < bar - KEY_LOCK_BARS]:
            del self._last_input[old]
        status: dict[str, Any] = {"bar": bar, "state": "playing", "tempo": self.transport.bpm,
                                  "source": self.transport.source}
        event: dict[str, Any] = {"event": "bar", "t": now, "bar": bar, "tempo": round(self.transport.bpm, 3),
                                 "source": self.transport.source, "plan": plan.kind if plan else "silence"}
        if plan is not None and plan.kind == "variation" and not plan.scheduled:
            plan.missed = True
            if self.config.fallback == "thru":
                self._fallback_thru_bar = bar
            status["misses"] = self.status.misses + 1
            event.update(miss=True, fallback=self.config.fallback, error=plan.error)
        elif plan is not None and plan.tokens is not None:
            self._voice.last_tokens, self._voice.last_velocity = plan.tokens, plan.velocity
            status["out_attributes"] = attributes_of(plan.tokens, self.vocab, self.model_attributes)
            if plan.ready_at is not None:
                bar_seconds = PULSES_PER_BAR * self.transport.period
                margin = (self.transport.time_at(bar * PULSES_PER_BAR) - plan.ready_at) / bar_seconds
                status.update(margin=margin, inference_ms=plan.inference_ms)
                event.update(margin=round(margin, 6), inference_ms=plan.inference_ms, ready_at=plan.ready_at)
                if plan.source is not None and plan.source.index in self._last_input:
                    event["last_input"] = self._last_input[plan.source.index]
            event["tokens"] = [int(x) for x in plan.tokens]
        if plan is not None and plan.source is not None:
            status["in_attributes"] = attributes_of(plan.source.tokens, self.vocab, self.model_attributes)
        if plan is not None and plan.knobs is not None:
            event["knobs"] = dict(plan.knobs.values)
            targets = self._targets(plan.knobs)
            status["knob_targets"] = targets or None
            if targets:
                event["targets"] = targets
                if plan.tokens is not None:
                    event["achieved"] = {a: v for a, v in status["out_attributes"].items() if a in targets}
            event["amount"] = round(plan.knobs.amount, 4)
            status["frozen"] = plan.knobs.freeze
        if plan is None or plan.kind == "silence":
            status["in_attributes"] = status["out_attributes"] = None
        self._set_status(**status)
        self._log(event)
        self._idle_stop(now, plan)

    def _targets(self, knobs: KnobSnapshot) -> dict[str, float]:
        """Attribute value each set knob asks for (engines without calibration report none)."""
        to_attribute = getattr(self.engine, "knob_to_attribute", None)
        if to_attribute is None:
            return {}
        return {a: round(float(to_attribute(a, v)), 4) for a, v in knobs.values.items() if v is not None}

    def _idle_stop(self, now: float, plan: Plan | None) -> None:
        """Internal tempo, respond mode: after ``idle_bars`` silent bars wait for the next note."""
        if self.transport.source != "internal" or self.config.mode != "respond":
            return
        if (plan is None or plan.kind == "silence") and self._voice.idle >= self.config.idle_bars:
            self.transport.stop()
            self._cut(now, "idle", panic=False)
            self._set_status(state="waiting")

    def _fire(self, now: float, pos: float) -> None:
        """Send the events at ``pos``; note_ons later than the tolerance are dropped."""
        scheduled = self.transport.time_at(pos)
        late = now - scheduled > self.config.late_tolerance_s
        for event in self.scheduler.pop_due(pos):
            if event.is_on:
                if late:
                    self._set_status(late=self.status.late + 1)
                    self._log({"event": "late", "scheduled": scheduled, "t": now, "pos": event.pos, "key": event.key,
                               "bar": event.bar})
                    continue
                self.tracker.note_on(event.channel, event.key, event.velocity, VARIATION)
            elif not self.tracker.note_off(event.channel, event.key, VARIATION):
                continue
            self._log({"event": "send", "scheduled": scheduled, "sent": self.clock.now(), "pos": event.pos,
                       "on": event.is_on, "key": event.key, "bar": event.bar})

    # ----- output and status ---------------------------------------------------------------

    def _send(self, msg: mido.Message) -> None:
        if self._output_broken:
            return
        try:
            self._port_send(msg)
        except Exception as e:  # the port is gone (OSError) or the backend broke: stop cleanly
            self._output_broken = True
            self.failed = f"output port failed: {e}"
            self.tracker.forget()

    def _set_status(self, **changes: Any) -> None:
        with self._lock:
            self.status = replace(self.status, **changes)

