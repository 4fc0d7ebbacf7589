"""How exactly the bridge's input thread times what arrives over JACK; prints one JSON line.

A DAW client in this process sends N clock pulses, one every ``--interval`` ms, into the
bridge's input (``open_ports``: drained by the bridge's own thread with ``get_message()``, see
``arvae_midi/midi_bridge/rtmidi_io.py``). For each pulse it compares the time the DAW handed it to
JACK with (a) the arrival time the input thread rebuilt from RtMidi's JACK timestamps and (b) the
time the thread popped it from RtMidi's queue, which is what a stamp taken on receipt would give.
The baseline is (b), measured in the same run. Usage: ``python bench/bridge_input.py [--pulses
250] [--interval 20] [--realtime] [--load N]``. Reports figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the JACK server helper shared with the tests

from tests.midi_bridge.jackd import start_jackd, stop_jackd  # noqa: E402


def _q(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    return {"p50": round(float(np.percentile(arr, 50)), 4), "p99": round(float(np.percentile(arr, 99)), 4),
            "max": round(float(arr.max()), 4)}


def run(pulses: int, interval: float, realtime: bool, load: int) -> dict[str, object]:
    """One measurement; the JSON-ready report."""
    work = Path(tempfile.mkdtemp(prefix="arvae-bench-input-"))
    server, jack = start_jackd(work / "jackd.log", realtime=realtime)
    os.environ["JACK_DEFAULT_SERVER"], os.environ["JACK_NO_START_SERVER"] = server, "1"
    loaders = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    try:
        import rtmidi

        from arvae_midi.midi_bridge.ports import open_ports

        pair = open_ports("jack", "bench-input")
        seen: list[tuple[float, float]] = []  # (rebuilt arrival, popped)
        pair.input.set_callback(lambda data, arrival: seen.append((arrival or 0.0, time.monotonic()))
                                if list(data) == [0xF8] else None)
        daw = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="bench-input-daw")
        daw.open_port(daw.get_ports().index("bench-input:in"))
        time.sleep(0.3)
        sent = []
        t0 = time.monotonic()
        for i in range(pulses):
            delay = t0 + i * interval / 1000.0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            daw.send_message([0xF8])
            sent.append(time.monotonic())
        deadline = time.monotonic() + 10
        while len(seen) < pulses and time.monotonic() < deadline:
            time.sleep(0.01)
        daw.delete()
        pair.close()
    finally:
        for proc in loaders:
            proc.terminate()
            proc.wait()
        stop_jackd(jack)
    # Pair each pulse received with the last one sent before it was popped (a lost pulse, which
    # JACK without realtime scheduling can drop under load, must not shift every pair after it).
    sent_arr = np.asarray(sent)
    index = np.searchsorted(sent_arr, [popped for _, popped in seen], side="right") - 1
    pairs = [(arrival, popped, sent_arr[j]) for (arrival, popped), j in zip(seen, index, strict=True) if j >= 0]
    return {
        "bench": "bridge_input", "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)},
        "setup": {"pulses": pulses, "interval_ms": interval, "jack_realtime": realtime, "load_processes": load,
                  "jack_period_ms": round(1000 * 64 / 48000, 4)},
        "received": len(seen),
        "rebuilt_arrival_minus_sent_ms": _q([arrival - t for arrival, _, t in pairs]),
        "baseline_popped_minus_sent_ms": _q([popped - t for _, popped, t in pairs]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulses", type=int, default=250)
    parser.add_argument("--interval", type=float, default=20.0, help="ms between pulses (120 bpm: 20.8)")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--load", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args.pulses, args.interval, args.realtime, args.load)))


if __name__ == "__main__":
    main()
