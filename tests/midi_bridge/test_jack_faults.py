"""Faults over a real JACK server: ``arvae-midi serve`` as a subprocess, this process as the DAW.

None of them may crash the bridge, hang it or leave a note sounding. Positions are checked
against the DAW's own clock: a bridge note scheduled at pulse ``pos`` and sent at time ``sent``
sits at ``daw.position(sent) - pos`` pulses off the DAW's grid. That offset is a small constant
(the bridge's latency) unless the bridge lost or doubled a pulse, which moves every later note by
a whole pulse (20.8 ms at 120 bpm). Medians over a bar before and after a fault are compared,
so a loaded machine's jitter on single notes does not count, and no time is asserted.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

import mido
import pytest

from tests.midi_bridge.conftest import jack_env, start_test_server
from tests.midi_bridge.daw import Session, read_log, wait_for
from tests.midi_bridge.harness import sounding_after
from tests.midi_bridge.jackd import stop_jackd

pytestmark = pytest.mark.jack

PHRASE = [(60, 0, 12), (64, 24, 36), (67, 48, 60), (72, 72, 90)]


def _phrases(bars: range) -> list[tuple[int, int, int]]:
    return [(key, on + 96 * bar, off + 96 * bar) for bar in bars for key, on, off in PHRASE]


def _sounding(session: Session) -> set[tuple[int, int]]:
    return sounding_after(mido.Message.from_bytes(m) for m in session.daw.messages())


def _offsets(session: Session, events: list[dict], bars: set[int]) -> list[float]:
    """DAW-grid offset (pulses) of every note_on the bridge sent in ``bars``."""
    return [session.daw.position(float(e["sent"])) - float(e["pos"])
            for e in events if e["event"] == "send" and e["on"] and e["bar"] in bars]


def _bars(events: list[dict]) -> list[int]:
    return [int(e["bar"]) for e in events if e["event"] == "bar"]


def _assert_grid_held(session: Session, events: list[dict], before: set[int], after: set[int]) -> None:
    """Every bar logged once, in order; the notes after the fault sit where those before it sat."""
    bars = _bars(events)
    assert bars == sorted(set(bars)) and set(range(1, max(after) + 1)) <= set(bars), bars
    early, late = _offsets(session, events, before), _offsets(session, events, after)
    if not early or not late:  # every variation in those bars missed its deadline (a very busy machine)
        misses = [e["bar"] for e in events if e["event"] == "bar" and e.get("miss")]
        assert misses, (early, late)
        return
    shift = statistics.median(late) - statistics.median(early)
    assert abs(shift) < 0.5, (shift, early, late)


def _need_realtime(env: dict[str, str]) -> None:
    if env.get("ARVAE_TEST_JACK_RT") != "1":
        pytest.skip("exact pulse counts need a realtime JACK server: without one, a loaded machine runs "
                    "JACK's cycles late and JACK drops events between clients")


def _end_clean(session: Session, sig: int = signal.SIGTERM) -> None:
    assert session.end(sig) == 0, session.stderr
    assert _sounding(session) == set(), session.daw.messages()[-8:]
    assert session.daw.messages()[-1] == [0xB0, 123, 0]


def test_cc_flood_of_20000_in_2_s_loses_no_pulse_and_shifts_no_barline(
    jack_server: dict[str, str], tmp_path: Path
) -> None:
    _need_realtime(jack_server)
    session = Session(jack_server, tmp_path / "log.jsonl")
    try:
        flood = [(192 + 96 * i / 20000, [0xB0, 20 + i % 4, i % 128]) for i in range(20000)]  # bar 2: 2 s
        session.daw.play(96 * 5 + 6, _phrases(range(5)), extra=flood)
    finally:
        _end_clean(session)
    events = read_log(session.log)
    _assert_grid_held(session, events, before={1}, after={3, 4})
    assert not [e for e in events if e["event"] == "transport" and e["what"] == "clock lost"]


def test_sysex_flood_and_one_unterminated_sysex_swallow_nothing(jack_server: dict[str, str], tmp_path: Path) -> None:
    _need_realtime(jack_server)
    session = Session(jack_server, tmp_path / "log.jsonl")
    try:
        sysex = [(96 + 96 * i / 1000, [0xF0, 0x7D, *range(30), 0xF7]) for i in range(1000)]  # bar 1
        unterminated = [(200.5, [0xF0, 0x7D, 0x01, 0x02])]  # no F7: RtMidi appends what follows to it
        session.daw.play(96 * 5 + 6, _phrases(range(5)), extra=sysex + unterminated)
    finally:
        _end_clean(session)
    events = read_log(session.log)
    _assert_grid_held(session, events, before={1}, after={3, 4})
    assert not [e for e in events if e["event"] == "transport" and e["what"] == "clock lost"]


def test_notes_held_across_stop_are_released(jack_server: dict[str, str], tmp_path: Path) -> None:
    session = Session(jack_server, tmp_path / "log.jsonl", "--thru")
    try:
        held = [(100.0, [0x90, 62, 100]), (101.0, [0x90, 70, 90])]  # never released before Stop
        session.daw.play(96 + 30, _phrases(range(1)), extra=held)  # the variation of bar 0 is sounding
        session.daw.send([0xFC])  # Stop
        assert wait_for(lambda: _sounding(session) == set()), session.daw.messages()[-10:]
        session.daw.send([0x80, 62, 0])  # the player lets go after the Stop: stray, ignored
        session.daw.send([0x80, 70, 0])
        assert session.proc.poll() is None
    finally:
        _end_clean(session)
    thru_ons = [m for m in session.daw.messages() if m[0] == 0x90 and m[1] in (62, 70) and m[2] > 0]
    assert len(thru_ons) == 2  # the held notes did sound (thru), and were released by the bridge


def test_ten_rapid_start_stop_cycles(jack_server: dict[str, str], tmp_path: Path) -> None:
    session = Session(jack_server, tmp_path / "log.jsonl", "--thru")
    try:
        for cycle in range(10):
            session.daw.play(12 + 3 * cycle, [(60 + cycle, 2, 40)])  # Stop cuts the note short
            session.daw.send([0xFC])
        assert wait_for(lambda: _sounding(session) == set()), session.daw.messages()[-10:]
        session.daw.play(96 + 60, _phrases(range(2)))  # and it still plays afterwards
        assert session.proc.poll() is None
    finally:
        _end_clean(session)
    events = read_log(session.log)
    starts = [e for e in events if e["event"] == "transport" and str(e["what"]).startswith("playing from")]
    assert len(starts) == 11
    assert 1 in _bars(events[events.index(starts[-1]):])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_variation_silences_everything_and_exits_0(
    jack_server: dict[str, str], tmp_path: Path, sig: int
) -> None:
    session = Session(jack_server, tmp_path / "log.jsonl")
    try:
        session.daw.play(96 + 30, _phrases(range(2)))  # bar 1's variation is sounding
    finally:
        _end_clean(session, sig)
    assert read_log(session.log)[-1]["event"] == "shutdown"


def test_ports_disconnected_and_reconnected_mid_play(jack_server: dict[str, str], tmp_path: Path) -> None:
    session = Session(jack_server, tmp_path / "log.jsonl")
    try:
        daw = session.daw
        daw.play(96 + 30, _phrases(range(2)))
        daw.midi_out.close_port()  # the cable to the bridge is pulled mid-variation
        assert wait_for(lambda: any(e["event"] == "transport" and e["what"] == "clock lost"
                                    for e in read_log(session.log)))
        assert wait_for(lambda: _sounding(session) == set()), daw.messages()[-10:]
        ports = daw.midi_out.get_ports()
        daw.midi_out.open_port(ports.index(f"{session.name}:in"), "out")  # and plugged back in
        time.sleep(0.1)
        daw.play(96 * 2 + 60, _phrases(range(3)))
        assert session.proc.poll() is None
    finally:
        _end_clean(session)
    events = read_log(session.log)
    lost = next(i for i, e in enumerate(events) if e["event"] == "transport" and e["what"] == "clock lost")
    assert {1, 2} <= set(_bars(events[lost:]))  # it played on after the reconnection


def test_jack_server_stopped_mid_play_ends_serve_with_one_line(
    jack_clean: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM to the server while the bridge plays (never SIGKILL: see jackd.py)."""
    server, jack, _ = start_test_server(tmp_path / "jackd.log")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server)  # for the DAW's clients in this process
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    session = None
    try:
        session = Session(jack_env(server), tmp_path / "log.jsonl")
        session.daw.play(96 + 30, _phrases(range(2)))
        stop_jackd(jack)
        stopped = time.monotonic()
        _, session.stderr = session.proc.communicate(timeout=20)
        exited = time.monotonic() - stopped
    finally:
        stop_jackd(jack)
        if session is not None:
            if session.proc.poll() is None:
                session.proc.kill()
                session.proc.communicate()
            session.daw.abandon()
    print(f"serve exited {exited:.3f} s after the JACK server stopped")
    assert session.proc.returncode == 1
    assert session.stderr.splitlines() == [
        "error: the JACK server stopped; the bridge sent all notes off where it still could"], exited
