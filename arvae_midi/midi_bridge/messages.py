"""MIDI bytes -> mido messages, tolerant of whatever a port delivers; output message helpers.

Backends hand the bridge raw bytes, one event per callback. :class:`MidiDecoder` keeps state
across events so that running status (data bytes that reuse the previous channel status) works,
lets realtime bytes (clock, start, stop) interleave anywhere, skips SysEx of any length and
drops stray or undefined bytes instead of raising. Channels are 0..15 inside the bridge and
1..16 on the command line.

SysEx cannot make the decoder deaf. Nothing in the bridge reads SysEx, so the decoder never
buffers it (a flood costs no memory), and it follows MIDI 1.0 on where one ends: at F7, or at
any other status byte, which ends an unterminated SysEx and is decoded as itself. Realtime
bytes inside a SysEx pass through as they arrive. So after ``F0 7D 01 02`` with no F7, the next
clock, note or Start is heard, and a SysEx split across several events is skipped whole. An
event that a backend glued together (RtMidi's JACK input appends events to an unterminated
SysEx until one ends in F7) still yields every clock pulse and note inside it, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import mido

CLOCK, START, CONTINUE, STOP = 0xF8, 0xFA, 0xFB, 0xFC
SYSEX_START, SYSEX_END = 0xF0, 0xF7
SONG_POSITION = 0xF2
ALL_NOTES_OFF = 123  # channel mode CC
#: Data bytes that follow each system common status (0xF1..0xF6).
_SYSTEM_COMMON_LENGTH = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF4: 0, 0xF5: 0, 0xF6: 0}
_REALTIME_KEPT = {CLOCK: "clock", START: "start", CONTINUE: "continue", STOP: "stop"}


def _channel_data_length(status: int) -> int:
    """Data bytes of a channel voice message: program change and channel pressure take one."""
    return 1 if status & 0xF0 in (0xC0, 0xD0) else 2


class MidiDecoder:
    """Stateful byte-stream decoder; :meth:`feed` never raises on malformed input."""

    def __init__(self) -> None:
        self._status = 0  # running status (0 = none)
        self._need = 0  # data bytes the current status needs
        self._data: list[int] = []
        self._in_sysex = False
        self.ignored = 0  # bytes or messages dropped (SysEx, stray data, undefined status)
        self.sysex = 0  # SysEx messages skipped
        self.sysex_unterminated = 0  # of those, ended by another status byte instead of F7

    def feed(self, data: bytes | bytearray | Sequence[int]) -> list[mido.Message]:
        """Decode the bytes of one event (or a stream); returns the complete messages."""
        out: list[mido.Message] = []
        for byte in data:
            byte = int(byte) & 0xFF
            if byte >= 0xF8:  # realtime: may appear anywhere, even inside other messages
                kind = _REALTIME_KEPT.get(byte)
                if kind is not None:
                    out.append(mido.Message(kind))
                continue
            if byte == SYSEX_START:
                self._end_sysex()
                self._in_sysex, self._status = True, 0
                self.ignored += 1
                self.sysex += 1
                continue
            if byte == SYSEX_END:
                self._in_sysex, self._status = False, 0
                continue
            if byte >= 0x80:
                self._end_sysex()
                self._data = []
                if byte >= 0xF1:  # system common: clears running status
                    if byte not in _SYSTEM_COMMON_LENGTH:
                        self._status = 0
                        self.ignored += 1
                        continue
                    self._status, self._need = byte, _SYSTEM_COMMON_LENGTH[byte]
                else:
                    self._status, self._need = byte, _channel_data_length(byte)
                if self._need == 0:
                    self._emit(out)
                continue
            # data byte
            if self._in_sysex:
                continue
            if not self._status:
                self.ignored += 1
                continue
            self._data.append(byte)
            if len(self._data) == self._need:
                self._emit(out)
        return out

    def _end_sysex(self) -> None:
        """A status byte other than F7 and realtime: it ends a SysEx still open (MIDI 1.0)."""
        if self._in_sysex:
            self._in_sysex = False
            self.sysex_unterminated += 1

    def _emit(self, out: list[mido.Message]) -> None:
        status, data = self._status, self._data
        self._data = []
        if status >= 0xF0:
            self._status = 0  # no running status after system common
            if status == SONG_POSITION:
                out.append(mido.Message("songpos", pos=data[0] | (data[1] << 7)))
            else:
                self.ignored += 1
            return
        try:
            out.append(mido.Message.from_bytes([status, *data]))
        except ValueError:
            self.ignored += 1


def note_on(channel: int, note: int, velocity: int) -> mido.Message:
    """A note_on with ``velocity`` clamped to 1..127 (0 would mean note_off)."""
    return mido.Message("note_on", channel=channel, note=note, velocity=min(max(int(velocity), 1), 127))


def note_off(channel: int, note: int) -> mido.Message:
    """A note_off with release velocity 0."""
    return mido.Message("note_off", channel=channel, note=note, velocity=0)


def all_notes_off(channel: int) -> mido.Message:
    """All Notes Off (CC 123) on ``channel``."""
    return mido.Message("control_change", channel=channel, control=ALL_NOTES_OFF, value=0)


def is_note_on(msg: mido.Message) -> bool:
    """True for a note_on with velocity > 0."""
    return bool(msg.type == "note_on" and msg.velocity > 0)


def is_note_off(msg: mido.Message) -> bool:
    """True for a note_off, or a note_on with velocity 0."""
    return bool(msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0))
