"""python-rtmidi ports with no Python on the backend's thread.

**Why no callback.** python-rtmidi runs a Python input callback on the backend's thread, under
the GIL (``SpotlightKid/python-rtmidi:src/_rtmidi.pyx``, ``_cb_func ... with gil``). For JACK
that thread is JACK's process thread: while another Python thread holds the GIL, the JACK cycle
waits, overruns, and loses or doubles events (clock pulses included); a non-realtime server
under load may drop the client from the graph altogether. Removing the callback races too:
RtMidi's ``MidiInApi::cancelCallback`` clears the callback and its data pointer without a lock
(``thestk/rtmidi:RtMidi.cpp``), so a process cycle that already read them can enter the
callback with the Python data python-rtmidi's ``cancel_callback`` has just released: a segfault
in ``close``. So :class:`RtMidiInput` never sets a callback. RtMidi then queues each event in C
(a lock-free single-producer ring, ``MidiInApi::MidiQueue``) and our own thread drains it with
``get_message()``; the backend's thread never waits for Python.

**Timing.** Polling adds up to :data:`POLL_S` of delay before the bridge *sees* an event, but
not to the time it is stamped with: RtMidi stores the microseconds between events as read from
``jack_get_time()`` (JACK2: ``CLOCK_MONOTONIC``, the clock ``time.monotonic`` reads) in each
process cycle, and :class:`ArrivalTimes` rebuilds absolute arrival times from those deltas. So
the clock follows pulse arrivals as exactly as a callback would (to one JACK period), and the
polling delay only shifts when the bridge reacts, by at most 1 ms.

**Unterminated SysEx.** RtMidi's JACK input appends every event that follows an ``F0`` without
``F7`` to that SysEx until some event ends in ``F7`` (``jackProcessIn``: ``continueSysex``);
nothing reaches the queue meanwhile, and ``ignore_types(sysex=True)`` would throw the swallowed
events away. With JACK, a guard client sends a lone ``F7`` into our own input port every
:data:`GUARD_S`, which ends any such SysEx: the swallowed events then come out as one message
whose bytes :class:`~arvae_midi.midi_bridge.messages.MidiDecoder` splits again (realtime bytes
anywhere, a status byte ends a SysEx). Nothing is lost; events swallowed this way are late by at
most :data:`GUARD_S` and share one arrival time. The lone ``F7`` themselves are dropped here.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import mido

from arvae_midi.midi_bridge.sched import request_realtime

#: An input callback: (event bytes, arrival time in ``time.monotonic`` seconds or None: "now").
InputCallback = Callable[[Sequence[int], "float | None"], None]
#: Sleep of the input thread when RtMidi's queue is empty (seconds).
POLL_S = 0.001
#: Period of the guard's lone F7 into our JACK input (seconds): the longest an unterminated
#: SysEx can hold other input back.
GUARD_S = 0.01
#: Window of :class:`ArrivalTimes`' offset estimate (seconds): a delta lost inside RtMidi (a
#: full queue, a swallowed SysEx) skews the times by at most that delta, for at most this long.
ARRIVAL_WINDOW_S = 1.0
#: RtMidi's input queue (events): 20,000 CCs in 2 s fill it in 1.6 s if the thread stalls.
QUEUE_SIZE = 16384
_LONE_EOX = [0xF7]


class ArrivalTimes:
    """Absolute arrival times from RtMidi's inter-event deltas and the times we popped events.

    An event popped at ``now`` arrived at ``offset + cum``, where ``cum`` is the sum of all deltas
    so far and ``offset`` is unknown but at most ``now - cum`` for every event (nothing is popped
    before it arrived). The smallest ``now - cum`` seen within :data:`ARRIVAL_WINDOW_S` is the
    estimate: exact as soon as one event in the window was popped promptly, and self-healing
    when a delta went missing. The result is never later than ``now``.
    """

    def __init__(self, window: float = ARRIVAL_WINDOW_S) -> None:
        self.window = window
        self._cum: float | None = None
        self._mins: collections.deque[tuple[float, float]] = collections.deque()  # (popped at, now - cum)

    def stamp(self, delta: float, now: float) -> float:
        """Arrival time of the event RtMidi stamped ``delta`` s after the previous one, popped at ``now``."""
        cum = 0.0 if self._cum is None else self._cum + max(delta, 0.0)
        self._cum = cum
        candidate = now - cum
        mins = self._mins
        while mins and mins[-1][1] >= candidate:
            mins.pop()
        mins.append((now, candidate))
        while mins[0][0] < now - self.window:
            mins.popleft()
        return min(mins[0][1] + cum, now)


class RtMidiInput:
    """An rtmidi input drained by our own thread (see the module docstring).

    ``guard``, for JACK, is an rtmidi output connected to this input; the thread sends it a lone
    ``F7`` every :data:`GUARD_S`.
    """

    def __init__(self, rt: Any, name: str, guard: Any = None) -> None:
        self._rt = self.rt = rt
        self.name = name
        self._guard = self.guard = guard
        self._callback: InputCallback | None = None
        self._stop = threading.Event()
        self._taking = threading.Event()  # set by the first callback: until then events stay queued
        self.realtime = False  # whether the input thread got SCHED_FIFO
        self.errors = 0  # get_message/guard failures (the thread keeps going)
        # SysEx stays enabled: ignoring it makes RtMidi drop what an unterminated one swallowed.
        rt.ignore_types(sysex=False, timing=False, active_sense=True)
        self._thread = threading.Thread(target=self._run, name="arvae-midi-in", daemon=True)
        self._thread.start()

    def set_callback(self, callback: InputCallback | None) -> None:
        """Route events to ``callback(data, arrival)``; None after a callback: drain and drop them.

        Until the first callback is set, events wait in RtMidi's queue (with their times): a DAW
        that connects and sends Start while the bridge is still setting up must not lose it.
        """
        if callback is not None:
            self._taking.set()
        self._callback = callback

    def _run(self) -> None:
        self.realtime = request_realtime()
        times = ArrivalTimes()
        rt, guard = self._rt, self._guard
        next_guard = time.monotonic()
        while not self._stop.is_set():
            got = 0
            try:
                while got < 256 and self._taking.is_set():  # then look at the guard and the stop flag again
                    event = rt.get_message()
                    if event is None:
                        break
                    got += 1
                    data, delta = event
                    arrival = times.stamp(delta, time.monotonic())
                    callback = self._callback
                    if callback is not None and data != _LONE_EOX:
                        callback(data, arrival)
                if guard is not None and time.monotonic() >= next_guard:
                    next_guard = time.monotonic() + GUARD_S
                    guard.send_message(_LONE_EOX)
            except Exception:  # a bug or a dying backend must not end input silently
                self.errors += 1
                time.sleep(POLL_S)
            if not got:
                time.sleep(POLL_S)

    def detach(self, timeout: float = 1.0) -> bool:
        """Stop the input thread and wait for it: afterwards nothing calls into the rtmidi objects."""
        self._callback = None
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def listing(self) -> list[str]:
        """Sources this input's backend sees now (used to notice lost ports)."""
        return list(self._rt.get_ports())

    def close(self) -> None:
        """Detach, close the ports (the guard's, then ours), then delete the clients."""
        if not self.detach():
            abandon(self._guard, self._rt)  # the thread is stuck inside rtmidi: freeing under it would crash
            return
        for rt in (self._guard, self._rt):
            if rt is not None:
                with contextlib.suppress(Exception):
                    rt.close_port()
                    rt.delete()

    def abandon(self) -> None:
        """Detach and never touch the clients again (their JACK server is gone)."""
        self.detach()
        abandon(self._guard, self._rt)


class RtMidiOutput:
    """An rtmidi output; sends are serialised by a lock. ``gone()`` True drops sends."""

    def __init__(self, rt: Any, name: str, gone: Callable[[], bool] | None = None) -> None:
        self._rt = self.rt = rt
        self.name = name
        self._lock = threading.Lock()
        self._gone = gone
        self.closed = False

    def send(self, msg: mido.Message) -> None:
        """Send one message; OSError when the backend refuses or the port is closed.

        Once ``gone()`` (the JACK server died) sends are dropped: RtMidi's JACK ``sendMessage``
        spins until its ringbuffer has room, which never comes then. Whoever watches the server
        reports its loss (``serve`` within a status refresh).
        """
        import rtmidi

        with self._lock:
            if self.closed:
                raise OSError(f"output port {self.name!r} is closed")
            if self._gone is not None and self._gone():
                return
            try:
                self._rt.send_message(msg.bytes())
            except rtmidi.RtMidiError as e:
                raise OSError(f"output port {self.name!r}: {e}") from e

    def listing(self) -> list[str]:
        """Destinations this output's backend sees now (used to notice lost ports)."""
        return list(self._rt.get_ports())

    def close(self) -> None:
        """Close the port (JACK: RtMidi waits for one more cycle to hand on what is queued), then
        delete the client."""
        with self._lock:
            self.closed = True
            with contextlib.suppress(Exception):
                self._rt.close_port()
                self._rt.delete()

    def abandon(self) -> None:
        """Refuse sends and never touch the client again (its JACK server is gone)."""
        with self._lock:
            self.closed = True
            abandon(self._rt)


def abandon(*objects: Any) -> None:
    """Keep rtmidi objects from ever being freed, for the rest of the process.

    After the JACK server died, RtMidi's JACK ``closePort`` waits 1 s for a process cycle that
    never comes (``MidiOutJack::closePort``: ``sem_timedwait``), with the GIL held, and the
    destructors call it too, at the latest when the interpreter exits. The clients died with
    their server, so nothing is left to release; one extra reference keeps the destructor away.
    """
    import ctypes

    for obj in objects:
        if obj is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
