"""Open and close the bridge's JACK port pair again and again with traffic flowing through it.

Run as ``python -m tests.midi_bridge.stress_ports N`` against the server named by
``JACK_DEFAULT_SERVER``; the exit status says whether every cycle worked (a crash in the
shutdown path, as python-rtmidi's callback release could cause, shows as a signal exit). A feeder
thread sends a stream of clock and CC into the pair's input for the whole run; each cycle opens
the pair on the feeder's and the sink's ports (``--in``/``--out``), waits until input arrived and
its own notes reached the sink, then closes it in the bridge's order while the stream goes on.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
from collections.abc import Sequence

import mido
import rtmidi

from arvae_midi.midi_bridge.ports import open_ports, quiet_stderr
from arvae_midi.midi_bridge.rtmidi_io import RtMidiInput

#: Hang guard for each wait (seconds); a loaded machine needs far less.
WAIT_S = 20.0
#: Hang guard for the whole run (seconds): 200 cycles take 15 to 90 s on a loaded 2-core machine.
WATCHDOG_S = 240.0
#: A cycle that makes no progress for this long is a hang (seconds; a loaded cycle takes < 2 s).
STALL_S = 45.0
#: Exit status of a run stopped by the stall guard (a crash exits by signal, a failed check with 1).
EXIT_STALLED = 3
#: What faulthandler's watchdog prints first on stdout when it ends a hung run (then it exits with 1).
WATCHDOG_MARK = "Timeout ("


def stalled(returncode: int, stdout: str) -> str | None:
    """Where a finished run hung (the stall guard's report or the watchdog's), or None if it did not."""
    if returncode == EXIT_STALLED:
        return str(json.loads(stdout.splitlines()[-1])["stalled"])
    if returncode == 1 and stdout.lstrip().startswith(WATCHDOG_MARK):
        return f"no end within {WATCHDOG_S:.0f} s (the GIL held inside libjack)"
    return None


class _StallGuard(threading.Thread):
    """Ends the run with :data:`EXIT_STALLED` and every thread's stack on stdout when a cycle stalls.

    stdout, not stderr: libjack's messages are silenced by redirecting file descriptor 2 while the
    ports open and close, which would swallow the stacks of a hang in exactly those calls.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True, name="stall-guard")
        self.where = "start"
        self.last = time.monotonic()

    def step(self, where: str) -> None:
        self.where, self.last = where, time.monotonic()

    def run(self) -> None:
        while True:
            time.sleep(1.0)
            if time.monotonic() - self.last > STALL_S:
                faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
                print(json.dumps({"stalled": self.where, "seconds": STALL_S}), flush=True)
                os._exit(EXIT_STALLED)


def _wait(condition: object, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def main(cycles: int) -> int:
    faulthandler.enable()  # a crash prints every thread's Python stack on stderr
    # A hang ends the run too, before the test's own timeout would kill it silently. Its stacks go
    # to stdout: a hang inside libjack holds the GIL, so the stall guard's thread never runs, and
    # fd 2 may be silenced at that moment (quiet_stderr); faulthandler's own thread still fires.
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=sys.stdout)
    tag = f"stress{os.getpid()}"
    with quiet_stderr():
        feeder = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=f"{tag}-feed")
        feeder.open_virtual_port("feed")
        sink_rt = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=f"{tag}-sink", queue_size_limit=65536)
        sink_rt.open_virtual_port("sink")
    sink = RtMidiInput(sink_rt, "sink")
    at_sink = [0]
    sink.set_callback(lambda data, arrival: at_sink.__setitem__(0, at_sink[0] + 1))
    stop = threading.Event()

    def feed() -> None:  # ~5000 events/s: clock and CC, as a DAW with a busy knob would send
        while not stop.is_set():
            for value in range(5):
                feeder.send_message([0xF8])
                feeder.send_message([0xB0, 20, value])
            time.sleep(0.002)

    feeding = threading.Thread(target=feed, daemon=True)
    feeding.start()
    failures: list[str] = []
    received = 0
    guard = _StallGuard()
    guard.start()
    try:
        for i in range(cycles):
            guard.step(f"cycle {i}: opening the pair")
            pair = open_ports("jack", f"{tag}-{i}", in_port=f"{tag}-feed:feed", out_port=f"{tag}-sink:sink")
            got = [0]

            def count(data: Sequence[int], arrival: float | None, got: list[int] = got) -> None:
                got[0] += 1

            pair.input.set_callback(count)
            guard.step(f"cycle {i}: traffic")
            if not _wait(lambda got=got: got[0] > 0):
                failures.append(f"cycle {i}: no input arrived")
            # A send in the first cycle after the connection may go out before the graph has it:
            # send again until something arrives.
            before, deadline = at_sink[0], time.monotonic() + WAIT_S
            while at_sink[0] < before + 4 and time.monotonic() < deadline:
                for key in (60, 64):
                    pair.output.send(mido.Message("note_on", note=key, velocity=90))
                    pair.output.send(mido.Message("note_off", note=key))
                _wait(lambda before=before: at_sink[0] >= before + 4, 0.05)
            if at_sink[0] < before + 4:
                failures.append(f"cycle {i}: the pair's notes did not reach the sink")
            received += got[0]
            guard.step(f"cycle {i}: closing the pair")
            pair.close()  # detach, close, free: with the feeder still sending into the port
            if failures:
                break
            if i % 50 == 49:
                print(f"{i + 1} cycles", file=sys.stderr, flush=True)
    finally:
        stop.set()
        feeding.join(WAIT_S)
        sink.close()
        if not feeding.is_alive():  # else it may still be inside send_message: leave the client be
            feeder.delete()
    print(json.dumps({"cycles": cycles, "input_events": received, "sink_events": at_sink[0], "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
