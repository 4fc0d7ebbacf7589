"""The threads around :class:`~arvae_midi.midi_bridge.bridge.BridgeCore`.

* The input port's thread (never the backend's own: see
  :mod:`~arvae_midi.midi_bridge.rtmidi_io`): :meth:`BridgeRuntime.on_input` takes each event
  with its arrival time and puts it in a bounded queue. Nothing else happens there.
* The bridge thread (:meth:`BridgeRuntime._run`): waits on that queue until the core's next
  absolute wakeup time (timeout = wakeup - now, recomputed every time, so waits never add up
  to drift), feeds what arrived, then steps the core, which sends whatever is due. It asks for
  SCHED_FIFO realtime scheduling where the system grants it (as JACK clients do).
* The inference worker (a one-thread executor owned by the caller): runs ``engine.vary`` and
  wakes the bridge thread when done.

All calls into the core come from the bridge thread. :meth:`BridgeRuntime.stop` ends the thread;
on the way out the core sends note_offs for everything sounding and All Notes Off.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence

from arvae_midi.midi_bridge.bridge import BridgeCore
from arvae_midi.midi_bridge.clock import Clock, MonotonicClock
from arvae_midi.midi_bridge.ports import InputPort
from arvae_midi.midi_bridge.sched import REALTIME_PRIORITY, request_realtime

__all__ = ["INBOX_LIMIT", "MAX_WAIT_S", "REALTIME_PRIORITY", "BridgeRuntime", "request_realtime"]

#: Longest single wait: bounds how stale a stop request or a lost-port report can get.
MAX_WAIT_S = 0.05
#: Input events waiting for the bridge thread beyond this are dropped (a flood, not music).
INBOX_LIMIT = 20000
#: Passes in a row that find work already due before the thread forces a 1 ms wait.
SPIN_LIMIT = 1000

_WAKE = object()


class BridgeRuntime:
    """Runs ``core`` on its own thread, fed by ``input_port``."""

    def __init__(self, core: BridgeCore, input_port: InputPort, clock: Clock) -> None:
        self.core = core
        self.clock = clock
        self.input_port = input_port
        self.dropped = 0  # input events dropped because the inbox was full
        self.error: BaseException | None = None  # an unexpected exception on the bridge thread
        self.realtime = False  # whether the bridge thread got realtime scheduling
        self._inbox: queue.Queue[object] = queue.Queue(maxsize=INBOX_LIMIT)
        self._stop = threading.Event()
        self._reason = "stopped"
        self.started = threading.Event()  # set once the thread knows whether it got realtime
        self._thread = threading.Thread(target=self._run, name="arvae-bridge", daemon=True)
        # Ports stamp arrivals with time.monotonic: usable as is when the bridge runs on it.
        self._port_times = isinstance(clock, MonotonicClock)
        core.on_ready = self.wake

    def on_input(self, data: Sequence[int], arrival: float | None = None) -> None:
        """Input port callback: enqueue with the arrival time (None: now), nothing more."""
        now = self.clock.now()
        t = min(arrival, now) if arrival is not None and self._port_times else now
        try:
            self._inbox.put_nowait((t, data))
        except queue.Full:
            self.dropped += 1

    def wake(self) -> None:
        """Make the bridge thread look at the core now (an inference finished)."""
        # A full inbox means the thread is busy with input anyway and steps right after it.
        with contextlib.suppress(queue.Full):
            self._inbox.put_nowait(_WAKE)

    def port_lost(self, reason: str) -> None:
        """Report a lost port (``reason`` says which); the bridge thread panics and ends."""
        try:
            self._inbox.put_nowait(("lost", reason))
        except queue.Full:
            self._reason = reason
            self._stop.set()

    def start(self) -> None:
        """Start the bridge thread and begin taking input."""
        self._thread.start()
        self.input_port.set_callback(self.on_input)

    @property
    def running(self) -> bool:
        """True while the bridge thread runs."""
        return self._thread.is_alive()

    def stop(self, reason: str = "stopped", timeout: float = 1.0) -> None:
        """End the bridge thread (all notes off on the way out) and wait up to ``timeout`` s."""
        self.input_port.set_callback(None)
        self._reason = reason
        self._stop.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        core = self.core
        self.realtime = request_realtime()
        self.started.set()
        busy = 0  # consecutive passes with something already due: guards against a spin
        try:
            while not self._stop.is_set() and not core.failed:
                timeout = min(max(core.next_wakeup() - self.clock.now(), 0.0), MAX_WAIT_S)
                busy = busy + 1 if timeout == 0.0 else 0
                if busy > SPIN_LIMIT:  # a bug must not pin a (possibly realtime) core
                    timeout, busy = 0.001, 0
                try:
                    item: object | None = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
                except queue.Empty:
                    item = None
                while item is not None:
                    if isinstance(item, tuple) and item[0] == "lost":
                        core.port_lost(str(item[1]))
                    elif isinstance(item, tuple):
                        core.feed(item[0], item[1])
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        item = None
                core.step(self.clock.now())
        except BaseException as e:  # a bug must still not leave notes hanging
            self.error = e
            self._reason = f"internal error: {type(e).__name__}: {e}"
        finally:
            core.shutdown(core.failed or self._reason)
