"""The input decoder: running status, interleaved realtime bytes, SysEx and garbage."""

from __future__ import annotations

import mido

from arvae_midi.midi_bridge.messages import MidiDecoder, all_notes_off, is_note_off, is_note_on, note_on


def _decode(*events: list[int]) -> tuple[list[str], int]:
    decoder = MidiDecoder()
    out = [str(m) for event in events for m in decoder.feed(event)]
    return out, decoder.ignored


def test_running_status_across_events() -> None:
    msgs, ignored = _decode([0x91, 60, 100], [62, 90], [60, 0])
    assert msgs == [
        "note_on channel=1 note=60 velocity=100 time=0",
        "note_on channel=1 note=62 velocity=90 time=0",
        "note_on channel=1 note=60 velocity=0 time=0",
    ]
    assert ignored == 0


def test_realtime_bytes_interleave_without_breaking_a_message() -> None:
    msgs, _ = _decode([0x90, 0xF8, 60, 0xFA, 100, 0xFC])
    assert msgs == ["clock time=0", "start time=0", "note_on channel=0 note=60 velocity=100 time=0", "stop time=0"]


def test_sysex_is_skipped_and_clears_running_status() -> None:
    msgs, ignored = _decode([0x90, 60, 100], [0xF0, 1, 2, 3, 0xF7], [61, 100], [0xB0, 20, 5])
    assert msgs == [
        "note_on channel=0 note=60 velocity=100 time=0", "control_change channel=0 control=20 value=5 time=0",
    ]
    assert ignored == 3  # the SysEx and the two stray data bytes after it


def test_song_position_and_undefined_status() -> None:
    msgs, ignored = _decode([0xF2, 0x10, 0x01], [0xF4], [0xF9, 0xFD, 0xFE], [5])
    assert msgs == ["songpos pos=144 time=0"]  # 0x10 + 1 * 128
    assert ignored == 2  # 0xF4 and the stray data byte


def test_program_change_takes_one_data_byte() -> None:
    msgs, _ = _decode([0xC0, 5, 6], [0x90, 60, 1])
    assert msgs[:2] == ["program_change channel=0 program=5 time=0", "program_change channel=0 program=6 time=0"]


def test_output_helpers() -> None:
    assert note_on(2, 60, 0).velocity == 1 and note_on(2, 60, 200).velocity == 127
    assert all_notes_off(3).bytes() == [0xB3, 123, 0]
    assert is_note_on(mido.Message("note_on", velocity=3)) and is_note_off(mido.Message("note_on", velocity=0))
