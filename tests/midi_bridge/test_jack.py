"""The bridge over a real transport: a dummy JACK server, ``arvae-midi serve`` as a subprocess,
and this test process as the DAW (python-rtmidi JACK clients sending clock and a bar).

Servers come from :mod:`tests.midi_bridge.jackd` (pool names, ``JACK_NO_START_SERVER=1``, stopped
with SIGTERM, never outliving the test process).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mido
import numpy as np
import pytest

from arvae_midi.core.tokens import Vocabulary, tokens_to_notes
from arvae_midi.midi_bridge.ports import open_ports, quiet_stderr
from arvae_midi.midi_bridge.rtmidi_io import RtMidiInput
from tests.midi_bridge.conftest import jack_env
from tests.midi_bridge.daw import ROOT, Daw
from tests.midi_bridge.daw import serve as _serve
from tests.midi_bridge.harness import sounding_after
from tests.midi_bridge.jackd import start_jackd, stop_jackd

pytestmark = pytest.mark.jack


def test_ports_lists_the_jack_server(jack_server: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "arvae_midi.cli", "ports", "--backend", "jack", "--json"],
                            env=jack_server, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (backend,) = json.loads(result.stdout)["backends"]
    assert backend["ok"] and backend["name"] == "jack"


def test_variation_arrives_in_the_next_bar_and_sigterm_ends_all_notes(
    jack_server: dict[str, str], tmp_path: Path
) -> None:
    name = f"br-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "events.jsonl"
    proc = _serve(jack_server, name, log, "--out-channel", "2")
    daw = Daw(f"daw-{name}")
    try:
        daw.connect(f"{name}:in", f"{name}-out:out")
        phrase = [(60, 0, 12), (64, 24, 36), (67, 48, 60), (72, 72, 90)]
        # The same bar twice: bars 1 and 2 play its variations; SIGTERM lands at pulse 276 (bar 2).
        daw.play(276, phrase + [(key, on + 96, off + 96) for key, on, off in phrase])
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=1.0)
        finally:
            exited = time.monotonic() - sigterm_at
        time.sleep(0.5)  # the last messages cross the JACK graph (late cycles on a busy machine)
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
        daw.close()
    assert proc.returncode == 0, stderr
    assert exited < 1.0, f"SIGTERM to exit took {exited:.3f} s"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    late = {(e["pos"], e["key"]) for e in events if e["event"] == "late"}  # dropped, never played late
    sends = [e for e in events if e["event"] == "send" and e["on"]]
    played_bars = 0
    for bar in (1, 2):
        info = next(e for e in events if e["event"] == "bar" and e["bar"] == bar)
        if info.get("miss"):  # inference missed its deadline on a very busy machine: silence
            assert not [e for e in sends if e["bar"] == bar]
            continue
        played_bars += 1
        # The bridge sent the variation of the bar before, note for note, each on its grid pulse
        # (bar 2 up to where SIGTERM cut it) and never later than its tolerance (else: `late`).
        notes = tokens_to_notes(np.array(info["tokens"]), Vocabulary())
        expected = [(96 * bar + round(n.start * 24), n.pitch) for n in notes]
        expected = [(pulse, key) for pulse, key in expected if (pulse, key) not in late]
        sent = [(e["pos"], e["key"]) for e in sends if e["bar"] == bar]
        assert sent == expected[: len(sent)], (bar, sent, expected)
        assert len(sent) == len(expected) if bar == 1 else len(sent) >= len([p for p, _ in expected if p < 240])
        assert all(e["sent"] - e["scheduled"] <= 0.02 for e in sends if e["bar"] == bar)
    assert played_bars >= 1
    # The DAW received those notes in order and in the next bar: not before the DAW sent the pulse
    # 3 before a note's own (the bridge predicts up to 2 pulses ahead of the clock it has), and
    # within half a bar after it. The bound is loose on purpose: without realtime scheduling,
    # JACK cycles on a loaded machine run late and can drop an event (one per bar tolerated);
    # bench/bridge.py measures the actual timing.
    ons = [(daw.position(t), m[1]) for t, m in daw.received if m[0] == 0x91 and m[2] > 0]
    i = missing = 0
    for e in sends:
        if i < len(ons) and ons[i][1] == e["key"] and e["pos"] - 3 <= ons[i][0] < e["pos"] + 48:
            i += 1
        else:
            missing += 1
    assert i == len(ons), ("arrived but not sent, or out of place:", ons[i:], [(e["pos"], e["key"]) for e in sends])
    assert missing <= played_bars, (missing, ons, [(e["pos"], e["key"]) for e in sends])
    # SIGTERM: note_offs for what sounded, then All Notes Off on channel 2, all of it out of the
    # bridge before it exited (the DAW's last messages are shown when this fails)
    tail = [m for _, m in daw.received[-8:]]
    assert daw.received[-1][1] == [0xB1, 123, 0], tail
    assert sounding_after(mido.Message.from_bytes(m) for _, m in daw.received) == set(), tail


def test_flush_sees_the_jack_server_cycle(jack_server: dict[str, str]) -> None:
    """``serve``'s flush before exiting watches the server's frame time from an inactive client."""
    pair = open_ports("jack", f"fl-{uuid.uuid4().hex[:6]}")
    try:
        assert pair.jack_watch is not None
        pair.output.send(mido.Message("control_change", control=123, value=0))
        assert pair.flush(10.0)  # FLUSH_CYCLES new cycles: False only at the timeout
    finally:
        pair.close()
    assert not pair.flush(1.0)  # closed: no client left to read the frame time with (and no crash)


def test_existing_ports_by_name_and_server_loss(jack_server: dict[str, str], tmp_path: Path) -> None:
    """--in/--out connect to a DAW's own ports (the Windows/loopMIDI way of working)."""
    import rtmidi

    name = f"ex-{uuid.uuid4().hex[:6]}"
    with quiet_stderr():
        daw_out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=f"{name}-daw")
        daw_out.open_virtual_port("to-bridge")
        rt_in = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=f"{name}-daw-in")
        rt_in.open_virtual_port("from-bridge")
    received: list[list[int]] = []
    daw_in = RtMidiInput(rt_in, "from-bridge")  # drained by our thread: no Python on JACK's thread
    daw_in.set_callback(lambda data, arrival: received.append(list(data)))
    proc = _serve(jack_server, name, tmp_path / "log.jsonl", "--in", f"{name}-daw:to-bridge",
                  "--out", f"{name}-daw-in:from-bridge", "--thru")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(m[:2] == [0x90, 61] for m in received):
            daw_out.send_message([0x90, 61, 99])  # thru: comes straight back once connected
            time.sleep(0.1)
            daw_out.send_message([0x80, 61, 0])
        assert any(m[:2] == [0x90, 61] for m in received), proc.poll()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        time.sleep(0.5)  # the last messages cross the JACK graph (late cycles on a busy machine)
        daw_in.close()
        daw_out.delete()
    assert proc.returncode == 0, err
    assert received[-1] == [0xB0, 123, 0]


def test_a_stopping_jack_server_stops_serve_with_one_line(jack_clean: None, tmp_path: Path) -> None:
    """The server goes away under a running bridge: exit 1, one line naming the cause."""
    server, jack = start_jackd(tmp_path / "jackd.log")
    env = jack_env(server)
    proc = None
    try:
        proc = _serve(env, "stopping", tmp_path / "log.jsonl")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (tmp_path / "log.jsonl").exists():
            time.sleep(0.05)
        time.sleep(0.5)  # the bridge is up and serving
        assert proc.poll() is None
        stop_jackd(jack)  # SIGTERM: the server goes away mid-play (never SIGKILL: see jackd.py)
        _, err = proc.communicate(timeout=10)
    finally:
        stop_jackd(jack)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        # The bridge's clients outlived their server: remove the semaphores JACK left for them.
        for leftover in Path("/dev/shm").glob(f"jack_sem.*_{server}_*"):
            leftover.unlink(missing_ok=True)
    assert proc.returncode == 1
    # One line: libjack's own complaints about the lost server are silenced.
    assert err.splitlines() == ["error: the JACK server stopped; the bridge sent all notes off where it still could"]


def test_port_pairs_open_and_close_200_times_with_traffic(jack_clean: None, tmp_path: Path) -> None:
    """The shutdown path under stress, in a subprocess whose exit status tells a crash apart.

    Each attempt has a server of its own. jackd2 itself now and then stops answering a client's
    port registration under this churn (the client waits in ``jack_port_register`` for a reply
    that never comes; seen about once in 15 runs of 200 cycles): the stress script then exits
    with ``EXIT_STALLED`` and the stacks (or, when the hang holds the GIL, its watchdog prints
    the stacks on stdout and exits), and the run is tried once more on a fresh server. A crash
    (a signal exit) or a failed check (its JSON report) fails at once.
    """
    from tests.midi_bridge.conftest import start_test_server
    from tests.midi_bridge.stress_ports import stalled

    stalls = []
    for attempt in range(2):
        name, jack, _ = start_test_server(tmp_path / f"jackd{attempt}.log")
        try:
            result = subprocess.run([sys.executable, "-m", "tests.midi_bridge.stress_ports", "200"],
                                    env=jack_env(name), cwd=ROOT, capture_output=True, text=True, timeout=300)
        finally:
            stop_jackd(jack)
        where = stalled(result.returncode, result.stdout)
        if where is None:
            break
        stalls.append(where)
    else:
        pytest.skip(f"jackd stopped answering twice ({'; '.join(stalls)}): a server hang, not a crash")
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:], result.stderr[-6000:])
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["cycles"] == 200 and report["failures"] == [] and report["sink_events"] >= 800
