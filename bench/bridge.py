"""Benchmark the realtime bridge over JACK and print JSON.

Starts a dummy JACK server (``jackd -d dummy``, a pool name from ``tests/midi_bridge/jackd.py``,
stopped with SIGTERM and waited for, never SIGKILL), optionally ``--load N`` CPU-bound processes
(stopped afterwards), runs ``arvae-midi serve --backend jack`` as a subprocess with a JSON-lines
log, and plays the DAW from this process: MIDI Start, clock and a four-note phrase in every bar,
so every bar answers the previous one (respond mode). It then reports

* ``inference_ms``: engine time per bar (p50, p99, max), from the bridge's log;
* ``ready_after_last_event_ms`` (p50, p99): how long after a bar's last input event the variation
  of its final content was ready (the bridge runs it speculatively on every change; goal p99 <= 5);
* ``deadline_margin``: time between a variation being ready and the start of the bar it plays
  in, as a fraction of a bar (min, p1), and the misses; ``inference_bar_fraction`` gives the
  inference time as a fraction of a bar;
* ``send_error_ms``: when the bridge handed each note to the backend minus its scheduled time;
* ``arrival_error_ms``: when each note reached the DAW's JACK client minus its scheduled time,
  with the JACK period stated. Arrival times are RtMidi's JACK-side timestamps anchored to the
  monotonic clock (``arvae_midi.midi_bridge.rtmidi_io.ArrivalTimes``: the DAW side is drained
  by a thread of ours, as the bridge's input is, so no Python runs on JACK's thread here either);
* ``answered``: bars whose variation was sent, out of the bars that had one to play.

Usage: ``python bench/bridge.py [--bars 24] [--bpm 160] [--period 64] [--model FILE] [--realtime]
[--phrases varied|fixed] [--load N]`` (default: the shipped model, varied phrases, all four knobs
moving). ``--realtime`` runs jackd with realtime scheduling, as a live setup would; it needs
rtprio rights; ``--load N`` keeps N CPU-bound processes busy for the whole run. Timings depend
on the machine's load; this reports them, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the JACK server helper shared with the tests

from tests.midi_bridge.jackd import JackdUnavailable, start_jackd, stop_jackd  # noqa: E402

PHRASE = [(60, 0, 12), (64, 24, 36), (67, 48, 60), (72, 72, 90)]  # (key, on pulse, off pulse) per bar
#: ``--phrases varied``: phrases of varied length and density, one per bar in turn, ending from
#: beat 1 to the last 16th (the readiness goal counts from each bar's last input event).
PHRASES = [
    PHRASE,
    [(62, 0, 20), (65, 24, 44)],  # ends on beat 2
    [(67, 0, 6), (69, 6, 12), (71, 12, 18), (72, 18, 24), (74, 24, 30), (72, 30, 36), (71, 36, 42), (69, 42, 60)],
    [(60, 0, 8), (62, 8, 16), (64, 16, 24), (65, 24, 48), (67, 48, 56), (69, 56, 64), (71, 64, 72), (72, 72, 88)],
    [(64, 0, 70)],  # one long note, released on beat 3
    [(67, 0, 12), (64, 12, 24), (60, 36, 42), (62, 84, 90)],  # a late pickup in the last beat
]
#: CC numbers of the four attribute knobs (presets/cc_map.toml); all set every bar, values moving.
KNOB_CCS = (20, 21, 22, 23)


def _quantiles(values: list[float], *qs: float) -> dict[str, float | None]:
    if not values:
        return {f"p{q:g}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": round(float(np.percentile(arr, q)), 4) for q in qs}


def _start_load(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` CPU-bound processes at normal priority (the competition a busy machine gives)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM and wait (a CPU-bound loop or serve ends on it; jackd frees its slot)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def run(bars: int, bpm: float, period: int, rate: int, model: Path, realtime: bool = False,
        serve_args: Sequence[str] = (), on_start: Callable[[subprocess.Popen[str]], Callable[[], None]] | None = None,
        varied: bool = True, load: int = 0, serve_root: Path = ROOT) -> dict[str, Any]:
    """One benchmark run; returns the JSON-ready report.

    ``serve_args`` are added to the ``serve`` command line; ``on_start(serve)``, when given, runs
    once the DAW ports are connected (serve's stdout is then a pipe it may read) and returns a
    cleanup called after the run (``bench/ui.py`` opens the control page this way). ``varied``:
    phrases of varied length and density with all four knobs moving (else one fixed phrase).
    ``load``: CPU-bound processes kept busy meanwhile; ``serve_root``: the checkout serve runs from.
    """
    work = Path(tempfile.mkdtemp(prefix="arvae-bench-"))
    try:
        server, jack = start_jackd(work / "jackd.log", realtime=realtime, period=period, rate=rate)
    except JackdUnavailable as e:
        raise SystemExit(str(e)) from e
    os.environ["JACK_DEFAULT_SERVER"] = server
    os.environ["JACK_NO_START_SERVER"] = "1"
    loaders = _start_load(load)
    try:
        report = _run(bars, bpm, period, rate, model, realtime, work, serve_root, serve_args, on_start, varied)
    finally:
        for proc in loaders:
            _stop(proc)
        stop_jackd(jack)
    report["setup"]["load_processes"] = load
    report["setup"]["serve_root"] = str(serve_root)
    return report


def _run(bars: int, bpm: float, period: int, rate: int, model: Path, realtime: bool, work: Path,
         serve_root: Path, serve_args: Sequence[str],
         on_start: Callable[[subprocess.Popen[str]], Callable[[], None]] | None, varied: bool) -> dict[str, Any]:
    import rtmidi

    from arvae_midi.midi_bridge.ports import quiet_stderr
    from arvae_midi.midi_bridge.rtmidi_io import RtMidiInput

    log = work / "events.jsonl"
    serve = subprocess.Popen(
        [sys.executable, "-m", "arvae_midi.cli", "serve", "--backend", "jack", "--model", str(model),
         "--port-name", "bench", "--quiet", "--log", str(log), "--out-channel", "2", *serve_args],
        cwd=serve_root, stdout=subprocess.PIPE if on_start else subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )
    cleanup: Callable[[], None] | None = None
    received: list[tuple[float, list[int]]] = []  # (arrival, monotonic s; bytes)
    daw_in: RtMidiInput | None = None
    with quiet_stderr():
        rt_in = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="bench-daw-in", queue_size_limit=65536)
        daw_out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="bench-daw-out")
    try:
        deadline = time.monotonic() + 60
        while True:
            outs, ins = daw_out.get_ports(), rt_in.get_ports()
            if "bench:in" in outs and "bench-out:out" in ins:
                daw_out.open_port(outs.index("bench:in"), "out")
                rt_in.open_port(ins.index("bench-out:out"), "in")
                daw_in = RtMidiInput(rt_in, "bench-out:out")
                daw_in.set_callback(lambda data, arrival: received.append((arrival or time.monotonic(), list(data))))
                break
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(f"the bridge did not start: {serve.stderr.read() if serve.stderr else ''}")
            time.sleep(0.05)
        if on_start is not None:
            cleanup = on_start(serve)
        time.sleep(0.2)
        pulse = 60.0 / (bpm * 24)
        t0 = time.monotonic() + 0.1
        events: list[tuple[float, int, list[int]]] = [(t0 - 0.002, -1, [0xFA])]
        events += [(t0 + i * pulse, i, [0xF8]) for i in range(96 * bars + 12)]
        for bar in range(bars):
            for key, on, off in PHRASES[bar % len(PHRASES)] if varied else PHRASE:
                events += [(t0 + (96 * bar + on) * pulse, -1, [0x90, key, 100]),
                           (t0 + (96 * bar + off) * pulse, -1, [0x80, key, 0])]
            if varied:  # all four knobs set, a new position each bar (the closed loop runs)
                events += [(t0 + (96 * bar + 2) * pulse, -1, [0xB0, cc, (37 * bar + 29 * i) % 128])
                           for i, cc in enumerate(KNOB_CCS)]  # fmt: skip
        events.sort(key=lambda e: e[0])
        clock_error: list[float] = []
        for t, index, data in events:
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            daw_out.send_message(data)
            if index >= 0:
                clock_error.append(1000.0 * (time.monotonic() - t))
        time.sleep(0.1)
    finally:
        if cleanup is not None:
            cleanup()
        _stop(serve)
        time.sleep(0.2)
        if daw_in is not None:
            daw_in.close()
        else:
            rt_in.delete()
        daw_out.delete()
    return _report(log, received, clock_error, bars, bpm, period, rate, model, realtime)


def _report(log: Path, received: list[tuple[float, list[int]]], clock_error: list[float], bars: int,
            bpm: float, period: int, rate: int, model: Path, realtime: bool = False) -> dict[str, Any]:
    events = [json.loads(line) for line in log.read_text().splitlines()]
    bar_events = [e for e in events if e["event"] == "bar" and e["plan"] == "variation"]
    inference = [e["inference_ms"] for e in bar_events if e.get("inference_ms") is not None]
    margins = [e["margin"] for e in bar_events if e.get("margin") is not None]
    # Readiness: the variation matching a bar's final content, ready this long after that bar's
    # last input event (the bridge re-runs it speculatively on every change).
    ready_after = [1000.0 * (e["ready_at"] - e["last_input"]) for e in bar_events
                   if e.get("ready_at") is not None and e.get("last_input") is not None]  # fmt: skip
    bar_s = 4 * 60.0 / bpm
    sends = [e for e in events if e["event"] == "send"]
    send_error = [1000.0 * (e["sent"] - e["scheduled"]) for e in sends]
    # The bridge's output is its logged sends in order, then the shutdown's note_offs and All
    # Notes Off (not logged as sends). Pair each send with the next arrival of the same message
    # (a few entries ahead at most, within 0.1 s): JACK without realtime scheduling can drop an
    # event when a client misses its cycle, and one lost message must not shift every pair.
    notes_in = [(t, m) for t, m in received if m[0] in (0x81, 0x91)]
    matched: list[tuple[dict[str, Any], tuple[float, list[int]]]] = []
    j = 0
    for e in sends:
        status = 0x91 if e["on"] else 0x81
        for k in range(j, min(j + 4, len(notes_in))):
            mono, m = notes_in[k]
            if m[0] == status and m[1] == e["key"] and abs(mono - e["scheduled"]) < 0.1:
                matched.append((e, notes_in[k]))
                j = k + 1
                break
    arrival = [1000.0 * (t - e["scheduled"]) for e, (t, _) in matched]
    period_ms = 1000.0 * period / rate
    bar_events = [e for e in events if e["event"] == "bar" and e["bar"] >= 1]
    answered = sorted({e["bar"] for e in sends})
    health = [e for e in events if e["event"] in ("health", "warning")]
    return {
        "bench": "bridge",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "setup": {"bars": bars, "bpm": bpm, "bar_ms": round(1000 * bar_s, 3), "model": str(model),
                  "jack": {"driver": "dummy", "realtime": realtime, "rate": rate, "period_frames": period,
                           "period_ms": round(period_ms, 4)}},
        "inference_ms": {**_quantiles(inference, 50, 99), "max": round(max(inference), 4) if inference else None,
                         "bars": len(inference)},
        "inference_bar_fraction": {"p99": round(float(np.percentile(inference, 99)) / (1000 * bar_s), 6)
                                   if inference else None,
                                   "goal_max": 0.05},
        "ready_after_last_event_ms": {**_quantiles(ready_after, 50, 99), "bars": len(ready_after), "goal_p99_ms": 5.0},
        "deadline_margin": {"min": round(min(margins), 6) if margins else None, **_quantiles(margins, 1),
                            "misses": sum(1 for e in events if e["event"] == "bar" and e.get("miss")),
                            "late_drops": sum(1 for e in events if e["event"] == "late")},
        "send_error_ms": {**_quantiles(send_error, 50, 99), "max": round(max(send_error), 4) if send_error else None,
                          "notes": len(send_error)},
        "answered": {"bars_with_variation_sent": len(answered), "bars": len(bar_events),
                     "log_events": len(events)},
        "bridge_health": health[-1] if health else None,
        "arrival_error_ms": {
            **_quantiles(arrival, 50, 99), "max": round(max(arrival), 4) if arrival else None,
            "sent": len(sends), "arrived": len(matched), "lost": len(sends) - len(matched),
            "goal_p99_max_ms": round(period_ms + 1.0, 4),
        },
        "daw_clock_send_error_ms": _quantiles(clock_error, 50, 99),
    }


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`run` every bridge bench shares: bars, tempo, JACK period and rate, model."""
    parser.add_argument("--bars", type=int, default=24)
    parser.add_argument("--bpm", type=float, default=160.0)
    parser.add_argument("--period", type=int, default=64, help="JACK period in frames")
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--model", type=Path, default=ROOT / "arvae_midi" / "presets" / "default.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--phrases", choices=("varied", "fixed"), default="varied",
                        help="varied: phrases of varied length and density with all four knobs moving each bar")
    parser.add_argument("--realtime", action="store_true",
                        help="run jackd with realtime scheduling (needs rtprio rights), as a live setup would")
    parser.add_argument("--load", type=int, default=0, help="CPU-bound processes to run meanwhile")
    parser.add_argument("--serve-root", type=Path, default=ROOT,
                        help="run serve from this checkout (a baseline version to compare against)")
    args = parser.parse_args()
    report = run(args.bars, args.bpm, args.period, args.rate, args.model, args.realtime,
                 varied=args.phrases == "varied", load=args.load, serve_root=args.serve_root.resolve())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
