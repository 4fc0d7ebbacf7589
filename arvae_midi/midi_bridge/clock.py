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

How the bar grid stays on the DAW's when the clock misbehaves (each rule is a named test in
``tests/midi_bridge/test_clock_faults.py``):

* **Jitter** is filtered by the DLL; the pulse count, hence the grid, is never touched by it.
* **Tempo jumps**: three pulses in a row far (> 25 % of a period) from their prediction, all
  late or all early, re-lock the period on the new intervals at once (jitter errs both ways);
  positions keep counting pulse by pulse. The loop restarts from the mean of those few
  intervals; a straight line through the first 12, then 24 pulses at the new tempo refines it.
* **Pulses lost on the way** (a gap of about k periods, then pulses at the old period again):
  the k - 1 missing pulses are counted when the pulse after the gap confirms the tempo did not
  change, so a dropped pulse cannot shift the barlines for the rest of the song. Pulses that
  arrive late in a burst (intervals under a quarter period) are counted as they come and kept
  out of the tempo estimate, so a late delivery neither doubles nor loses a pulse.
* **A clock that stops without Stop** counts as lost after ``clock_timeout`` (at least six
  periods): the bridge ends its notes and holds the grid. When pulses come back without Start
  or Continue, the DAW is taken to have played on through the gap, as it does when a cable or
  port was disconnected: the returning pulse takes the position the tempo measured before the
  gap predicts (gap / period, rounded to a whole pulse), so the bridge rejoins the DAW's bar.
  The tempo for that estimate comes from a straight line through the last two bars of pulses
  (the loop's own period wanders by a fraction of a percent under jitter). Pulses held up
  during the gap that arrive in a burst with the returning one are already counted by the
  estimate. A gap longer than ``REALIGN_MAX_PULSES`` (16 bars) is not guessed at, because a
  small tempo error would then put the grid a tick or more off: the bridge waits, silent and
  saying so, for Start, Continue or a Song Position Pointer.
* Both gap rules follow a DAW that plays on, as a DAW's clock follows its audio clock. A clock
  that pauses without Stop and resumes where it paused cannot be told from one whose pulses
  were lost; a DAW that relocates says so with Song Position, which the bridge follows.
* **Song Position Pointer** always wins over any estimate: one received while playing, lost
  or waiting relocates the next pulse to it (a DAW's loop jump or locate); one received while
  stopped sets where Continue resumes. After a lost clock, Continue resumes after the last
  pulse heard, as it does after Stop.
"""

from __future__ import annotations

import math
import time
from collections import deque
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
#: That many such pulses in a row, all late or all early, re-lock the period at once.
RELOCK_PULSES = 3
#: An interval shorter than this fraction of a period is a late-delivered burst, not tempo.
BURST_FRACTION = 0.25
#: An interval of at least this many periods, then one at the old period: pulses were lost.
FILL_MIN_PERIODS = 1.5
#: A lost clock that returns within this many pulses (by the old tempo) rejoins at the
#: estimated position; after a longer gap the bridge waits for Start, Continue or Song Position.
REALIGN_MAX_PULSES = 16 * PULSES_PER_BAR
#: Pulses in the straight-line fit that measures the tempo a lost clock is extrapolated with:
#: over two bars, +-2 ms of jitter leaves the period off by ~1e-4, a tenth of a pulse in 16 bars.
FIT_PULSES = 2 * PULSES_PER_BAR
#: Fit sizes at which the DLL's period is replaced by the fit's: the loop starts from the period
#: of one interval (after Start, a gap or a tempo jump), which jitter can put 20 % off. Only early,
#: and only when the two agree within RELOCK_FRACTION: a longer window may span a tempo change.
_REFIT_AT = frozenset({12, 24})


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
        self._raw: deque[float] = deque(maxlen=RELOCK_PULSES)  # raw times of the last pulses
        self._big_errors = 0  # consecutive pulses far from their prediction, all on one side
        self._big_sign = 0.0
        self._fit: deque[tuple[int, float]] = deque(maxlen=FIT_PULSES)  # (pulse, raw time), one tempo
        self._measured = False  # period measured from the clock (not the --bpm guess)
        self._pulse = -1  # index of the last pulse received while running
        self._armed: int | None = None  # position the next pulse takes after Start/Continue
        self._song_pos = 0  # pulse Continue resumes from
        self._suspect = 0  # pulses left whose raw times must not measure the period (after a burst)
        self._fill: tuple[int, float] | None = None  # (pulses missing in the last gap, period before it)
        self._lost_at: tuple[int, float, float] | None = None  # (last pulse, its time, period) when lost
        self.stranded = False  # clock back after too long a gap: waiting for Start/Continue/SPP
        self._absorb = False  # burst pulses right after a gap estimate are the ones it counted

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

    def expects_clock(self, t: float) -> bool:
        """True while a lost clock may still come back and be rejoined (see the module docstring):
        a note played then must not start the internal tempo in its place."""
        if not self.lost or self._lost_at is None:
            return False
        _, lost_t, period = self._lost_at
        return (t - lost_t) / period <= REALIGN_MAX_PULSES

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
        self._arm_at(0)
        return True

    def on_continue(self, t: float) -> bool:
        """MIDI Continue: the next pulse resumes at the stopped (or Song Position) position."""
        self._arm_at(self._song_pos)
        return True

    def on_stop(self, t: float) -> bool:
        """MIDI Stop: halt; Continue resumes after the last pulse."""
        was = self.running or self._armed is not None or self.lost
        if self.source == "clock" and self.running:
            self._song_pos = self._pulse + 1
        self.running, self._armed = False, None
        self._clear_faults()
        return was

    def on_song_position(self, t: float, sixteenths: int) -> bool:
        """Song Position Pointer (in 16th notes = 6 pulses).

        Stopped: sets where Continue resumes (False). Playing, lost or waiting after a long gap:
        the next pulse takes the new position (True: a jump, the bridge cuts what it scheduled).
        """
        self._song_pos = 6 * int(sixteenths)
        if self.source == "clock" and (self.running or self.lost or self.stranded):
            self._arm_at(self._song_pos)
            return True
        return False

    def on_pulse(self, t: float) -> str | None:
        """MIDI clock pulse at time ``t``.

        Returns ``"switched"`` when it replaced a running internal tempo (the song stops until
        the DAW's Start/Continue), ``"started"`` when it is the first pulse after Start/Continue
        (or a Song Position jump), ``"resumed"`` when a lost clock came back without either and
        rejoined at the estimated position, ``"stranded"`` when it came back after too long a
        gap to estimate (the song waits for Start/Continue/Song Position), else None.
        """
        change: str | None = None
        interval = None if self._last_raw_t is None else t - self._last_raw_t
        gap = interval is not None and interval > max(self.clock_timeout, 6 * self.period)
        if gap and self.running and self.source == "clock":
            self._mark_lost()  # the bridge did not look at the time out yet; same thing
        # Lost pulses are only judged against a period the line fit has refined (see _REFIT_AT).
        period_before, settled = self.period, self._measured and len(self._fit) >= min(_REFIT_AT)
        burst = self._update_tempo(t, reset=gap or self._last_raw_t is None)
        self._last_raw_t = t
        self._raw.append(t)
        if self.source == "internal":
            # A DAW is sending clock: follow it from its next Start/Continue.
            change = "switched" if self.running else None
            self.source, self.running = "clock", False
        if self._armed is not None:
            self._pulse, self._armed = self._armed, None
            self.running, self.lost, change = True, False, "started"
            self._fit.clear()
        elif self.running and burst and self._absorb:
            pass  # held up with the pulse the gap estimate placed: already counted by it
        elif self.running:
            self._pulse += 1 + self._confirmed_fill(interval)
            if interval is not None and not burst and settled and interval >= FILL_MIN_PERIODS * period_before:
                self._fill = (round(interval / period_before) - 1, period_before)
        elif self.lost:
            target = self._estimate(t)
            self.lost, self._lost_at = False, None
            if target is None:
                self.stranded, change = True, "stranded"
            else:
                self._pulse, self.running, change = target, True, "resumed"
        self._absorb = change == "resumed" or (self._absorb and burst)
        if self.running:
            self._anchor_pos = float(self._pulse)
            if not burst:
                self._fit.append((self._pulse, t))
                if len(self._fit) in _REFIT_AT and self._measured:
                    period = self._fitted(self._pulse)[1]
                    if abs(period - self.period) <= RELOCK_FRACTION * self.period:
                        self.period = period
        return change

    def check_timeout(self, t: float) -> bool:
        """Mark the clock lost when pulses stopped arriving while running; True on that change."""
        if t >= self.timeout_at():
            self._mark_lost()
            return True
        return False

    def _arm_at(self, pos: int) -> None:
        """Start, Continue or a relocation: the next pulse takes position ``pos``."""
        self.source, self.running = "clock", False
        self._armed = pos
        self._clear_faults()

    def _clear_faults(self) -> None:
        self.lost, self.stranded = False, False
        self._fill, self._lost_at = None, None

    def _mark_lost(self) -> None:
        """No pulse for too long while running: hold the grid and remember where it stood."""
        self._lost_at = (self._pulse, *self._fitted(self._pulse))
        self._song_pos = self._pulse + 1  # a Continue resumes after the last pulse, as after Stop
        self.running, self.lost, self._fill = False, True, None

    def _fitted(self, pulse: int) -> tuple[float, float]:
        """(time of ``pulse``, period) from a least-squares line through the recent raw pulses.

        The DLL's period follows the tempo quickly but wanders by a fraction of a percent under
        jitter; a gap is extrapolated over hundreds of pulses, so it takes the straight line.
        A window whose halves disagree on the tempo spans a change: then only the newer half.
        """
        points = list(self._fit)
        if len(points) < 8:
            return self._anchor_t, self.period
        half = len(points) // 2
        if len(points) >= 16:
            older, newer = _line(points[:half]), _line(points[half:])
            if abs(older[1] - newer[1]) > 0.02 * newer[1]:
                points = points[half:]
        t0, period = _line(points)
        return t0 + pulse * period, _clamp_period(period)

    def _estimate(self, t: float) -> int | None:
        """Position of a pulse at ``t`` after a lost clock, if the DAW played on; None: too far."""
        if self._lost_at is None:
            return None
        pulse, anchor_t, period = self._lost_at
        ahead = max(1, round((t - anchor_t) / period))
        return pulse + ahead if ahead <= REALIGN_MAX_PULSES else None

    def _confirmed_fill(self, interval: float | None) -> int:
        """Pulses lost in the previous gap, once this interval shows the tempo did not change."""
        if self._fill is None or interval is None:
            return 0
        missing, period = self._fill
        self._fill = None
        return missing if abs(interval - period) <= RELOCK_FRACTION * period else 0

    def _update_tempo(self, t: float, reset: bool) -> bool:
        """One DLL step with the raw arrival time ``t`` of a pulse; True for a burst pulse."""
        if reset or self._next_t is None:
            self._anchor_t, self._next_t = t, t + self.period
            self._measured, self._suspect = False, 0
            self._fit.clear()
            self._raw.clear()
            return False
        assert self._last_raw_t is not None
        interval = t - self._last_raw_t
        floor = self.period if self._measured else pulse_period(MAX_BPM)
        if interval < BURST_FRACTION * floor:
            # Delivered late, together with others: its time says nothing about the tempo.
            self._anchor_t, self._next_t, self._suspect = t, t + self.period, RELOCK_PULSES
            return True
        suspect, self._suspect = self._suspect > 0, max(0, self._suspect - 1)
        if not self._measured:
            # The second pulse: measure the period instead of trusting the --bpm guess.
            self.period = _clamp_period(interval)
            self._anchor_t, self._next_t, self._measured = t, t + self.period, True
            return False
        err = t - self._next_t
        if abs(err) > RELOCK_FRACTION * self.period:
            # A tempo jump (or one badly late pulse): after RELOCK_PULSES such pulses in a row, re-lock
            # on the mean of the last raw intervals instead of crawling there through the loop.
            # Jitter scatters to both sides; a tempo jump errs to one side again and again.
            sign = math.copysign(1.0, err)
            self._big_errors = self._big_errors + 1 if sign == self._big_sign else 1
            self._big_sign = sign
            if self._big_errors >= RELOCK_PULSES and len(self._raw) == RELOCK_PULSES and not suspect:
                self.period = _clamp_period((t - self._raw[0]) / RELOCK_PULSES)
                self._big_errors = 0
                self._fit.clear()
            self._anchor_t, self._next_t = t, t + self.period  # trust the raw time, not the loop
            return False
        self._big_errors, self._big_sign = 0, 0.0
        omega = 2.0 * math.pi * DLL_BANDWIDTH_HZ * self.period
        b, c = math.sqrt(2.0) * omega, omega * omega
        self._anchor_t = self._next_t
        self._next_t += b * err + self.period
        self.period = _clamp_period(self.period + c * err)
        return False


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of raw time against pulse index."""
    n = len(points)
    mean_i = sum(i for i, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    var = sum((i - mean_i) ** 2 for i, _ in points)
    slope = sum((i - mean_i) * (t - mean_t) for i, t in points) / var
    return mean_t - mean_i * slope, slope
