"""Clocks and the transport: musical position (MIDI clock pulses) <-> clock seconds.

Everything in the bridge is timed by one injectable :class:`Clock` (monotonic seconds). The
:class:`Transport` maps musical positions to absolute clock times and back, either from an
internal tempo (``--bpm``) or by following MIDI clock from a DAW (0xF8 at 24 pulses per quarter,
Start/Stop/Continue/Song Position Pointer). Positions are counted in pulses from song start:
a 4/4 bar is 96 pulses and every tick of the 24-tick measure grid falls on a whole pulse.

Incoming clock is smoothed with a second-order delay-locked loop (F. Adriaensen, "Using a DLL
to filter time", LAC 2005): it filters the jitter of each pulse's arrival time and tracks tempo
changes within about a second. Events are scheduled by position and converted to absolute
times through the latest estimate, so a tempo change re-times everything still pending and
note order never changes.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

PULSES_PER_QUARTER = 24
PULSES_PER_BAR = 4 * PULSES_PER_QUARTER  # 96
MIN_BPM, MAX_BPM = 20.0, 300.0
#: DLL bandwidth in Hz: low enough to smooth millisecond jitter, high enough to follow ramps.
DLL_BANDWIDTH_HZ = 1.0
#: While following clock, positions are extrapolated at most this many pulses past the last
#: pulse received, so a clock that stalls holds the schedule instead of running away.
MAX_EXTRAPOLATION_PULSES = 2.0
#: A pulse this far (fraction of a period) from its prediction counts as a tempo jump.
RELOCK_FRACTION = 0.25


class Clock(Protocol):
    """Source of absolute time in seconds; monotonic, never goes back."""

    def now(self) -> float:
        """Current time in seconds."""
        ...


class MonotonicClock:
    """The system's monotonic clock (``time.monotonic``), shared by all processes of a machine."""

    def now(self) -> float:
        """Current time in seconds."""
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to: drives hardware-free tests deterministically."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        """Current simulated time in seconds."""
        return self._t

    def set(self, t: float) -> None:
        """Move to absolute time ``t``; going back raises ValueError."""
        if t < self._t:
            raise ValueError(f"a clock cannot go back from {self._t} to {t}")
        self._t = float(t)

    def advance(self, dt: float) -> None:
        """Move forward by ``dt`` seconds."""
        self.set(self._t + dt)


def pulse_period(bpm: float) -> float:
    """Seconds per MIDI clock pulse at ``bpm`` quarter notes per minute."""
    return 60.0 / (bpm * PULSES_PER_QUARTER)


def _clamp_period(period: float) -> float:
    return min(max(period, pulse_period(MAX_BPM)), pulse_period(MIN_BPM))


class Transport:
    """Where the song is: running or not, tempo, and position <-> time mapping.

    ``source`` is ``"internal"`` (fixed ``bpm``, started by :meth:`start_internal`) or
    ``"clock"`` (MIDI clock: position advances one pulse per 0xF8 while running). The bridge
    calls the ``on_*`` methods with each message's arrival time; they return True when the
    transport jumped (start, stop, relocation) so the bridge can cut what it scheduled.
    """

    def __init__(self, bpm: float = 120.0, clock_timeout: float = 0.3) -> None:
        if not MIN_BPM <= bpm <= MAX_BPM:
            raise ValueError(f"bpm must lie in {MIN_BPM:g}..{MAX_BPM:g}, got {bpm}")
        self.internal_bpm = float(bpm)
        self.clock_timeout = float(clock_timeout)
        self.source = "internal"
        self.running = False
        self.lost = False  # clock stopped arriving while running
        self.period = pulse_period(bpm)  # seconds per pulse, smoothed when following clock
        self._anchor_pos = 0.0  # pulses
        self._anchor_t = 0.0  # seconds: (filtered) time of the anchor pulse
        # DLL state: predicted time of the next pulse, raw time of the last pulse.
        self._next_t: float | None = None
        self._last_raw_t: float | None = None
        self._prev_raw_t: float | None = None  # raw time of the pulse before the last one
        self._big_errors = 0
        self._measured = False  # period measured from the clock (not the --bpm guess)
        self._pulse = -1  # index of the last pulse received while running
        self._armed: int | None = None  # position the next pulse takes after Start/Continue
        self._song_pos = 0  # pulse Continue resumes from

    # ----- mapping -------------------------------------------------------------------------

    @property
    def bpm(self) -> float:
        """Current tempo estimate in quarter notes per minute."""
        return 60.0 / (self.period * PULSES_PER_QUARTER)

    @property
    def pulse(self) -> int:
        """Index of the last MIDI clock pulse counted while running (-1 before the first)."""
        return self._pulse

    @property
    def armed(self) -> bool:
        """True between Start/Continue and the first pulse that follows it."""
        return self._armed is not None

    @property
    def armed_position(self) -> int:
        """Position the next pulse takes while armed (else the position Continue resumes from)."""
        return self._armed if self._armed is not None else self._song_pos

    def position_at(self, t: float) -> float:
        """Position in pulses at time ``t`` (only meaningful while running)."""
        pos = self._anchor_pos + (t - self._anchor_t) / self.period
        if self.source == "clock":
            pos = min(pos, self._anchor_pos + MAX_EXTRAPOLATION_PULSES)
        return pos

    def time_at(self, pos: float) -> float:
        """Absolute time of position ``pos``; ``inf`` when it cannot be predicted yet."""
        if not self.running:
            return math.inf
        if self.source == "clock" and pos > self._anchor_pos + MAX_EXTRAPOLATION_PULSES + 1e-9:
            return math.inf  # wait for more pulses before predicting that far
        return self._anchor_t + (pos - self._anchor_pos) * self.period

    def clock_present(self, t: float) -> bool:
        """True while MIDI clock pulses keep arriving (within the timeout)."""
        return self._last_raw_t is not None and t - self._last_raw_t <= self.clock_timeout

    def timeout_at(self) -> float:
        """Time at which a running clock counts as lost if no pulse arrives; ``inf`` if n/a."""
        if self.source != "clock" or not self.running or self._last_raw_t is None:
            return math.inf
        return self._last_raw_t + max(self.clock_timeout, 6 * self.period)

    # ----- internal tempo ------------------------------------------------------------------

    def start_internal(self, t: float, pos: float = 0.0) -> None:
        """Run at the internal tempo with position ``pos`` at time ``t``."""
        self.source, self.running, self.lost = "internal", True, False
        self.period = pulse_period(self.internal_bpm)
        self._anchor_pos, self._anchor_t = float(pos), float(t)

    def stop(self) -> None:
        """Stop (internal idle stop, shutdown); the position is kept for Continue."""
        self.running = False

    # ----- MIDI clock ----------------------------------------------------------------------

    def on_start(self, t: float) -> bool:
        """MIDI Start: the next pulse is position 0."""
        self.source, self.running, self.lost = "clock", False, False
        self._armed = 0
        return True

    def on_continue(self, t: float) -> bool:
        """MIDI Continue: the next pulse resumes at the stopped (or Song Position) position."""
        self.source, self.running, self.lost = "clock", False, False
        self._armed = self._song_pos
        return True

    def on_stop(self, t: float) -> bool:
        """MIDI Stop: halt; Continue resumes after the last pulse."""
        was = self.running or self._armed is not None
        if self.source == "clock" and self.running:
            self._song_pos = self._pulse + 1
        self.running, self._armed, self.lost = False, None, False
        return was

    def on_song_position(self, t: float, sixteenths: int) -> bool:
        """Song Position Pointer (in 16th notes = 6 pulses); relocates a running song too."""
        self._song_pos = 6 * int(sixteenths)
        if self.running and self.source == "clock":
            # A jump while playing: resume counting from the new position at the next pulse.
            self.running, self._armed = False, self._song_pos
            return True
        return False

    def on_pulse(self, t: float) -> str | None:
        """MIDI clock pulse at time ``t``.

        Returns ``"switched"`` when it replaced a running internal tempo (the song stops until
        the DAW's Start/Continue), ``"started"`` when it is the first pulse after Start/Continue,
        ``"resumed"`` when a lost clock came back without either, else None.
        """
        change: str | None = None
        gap = self._last_raw_t is not None and t - self._last_raw_t > max(self.clock_timeout, 6 * self.period)
        self._update_tempo(t, reset=gap or self._last_raw_t is None)
        self._prev_raw_t, self._last_raw_t = self._last_raw_t, t
        if self.source == "internal":
            # A DAW is sending clock: follow it from its next Start/Continue.
            change = "switched" if self.running else None
            self.source, self.running = "clock", False
        if self._armed is not None:
            self._pulse, self._armed = self._armed, None
            self.running, self.lost, change = True, False, "started"
        elif self.running:
            self._pulse += 1
        elif self.lost:  # the clock came back without Start: carry on where it stalled
            self._pulse += 1
            self.running, self.lost, change = True, False, "resumed"
        if self.running:
            self._anchor_pos = float(self._pulse)
        return change

    def check_timeout(self, t: float) -> bool:
        """Mark the clock lost when pulses stopped arriving while running; True on that change."""
        if t >= self.timeout_at():
            self.running, self.lost = False, True
            return True
        return False

    def _update_tempo(self, t: float, reset: bool) -> None:
        """One DLL step with the raw arrival time ``t`` of a pulse."""
        if reset or self._next_t is None:
            self._anchor_t, self._next_t = t, t + self.period
            self._measured = False
            return
        if not self._measured and self._last_raw_t is not None:
            # The second pulse: measure the period instead of trusting the --bpm guess.
            self.period = _clamp_period(t - self._last_raw_t)
            self._anchor_t, self._next_t, self._measured = t, t + self.period, True
            return
        err = t - self._next_t
        if abs(err) > RELOCK_FRACTION * self.period:
            # A tempo jump (or one badly late pulse): after two such pulses in a row, re-lock on
            # the mean of the last two raw intervals instead of crawling there through the loop.
            self._big_errors += 1
            if self._big_errors >= 2 and self._prev_raw_t is not None:
                self.period = _clamp_period((t - self._prev_raw_t) / 2)
                self._big_errors = 0
            self._anchor_t, self._next_t = t, t + self.period  # trust the raw time, not the loop
            return
        else:
            self._big_errors = 0
        omega = 2.0 * math.pi * DLL_BANDWIDTH_HZ * self.period
        b, c = math.sqrt(2.0) * omega, omega * omega
        self._anchor_t = self._next_t
        self._next_t += b * err + self.period
        self.period = _clamp_period(self.period + c * err)
