"""OSC for ``serve``: knob messages in (``--osc-port``), bar, attributes and variation out (``--osc-out``).

The address space is in ``docs/osc.md``. Input is a non-blocking UDP socket read by the control
surface's loop at most :data:`READS_PER_TICK` datagrams per tick: a flood costs the loop a
bounded amount of work per tick, and what it cannot read waits in (and overflows from) the
kernel's socket buffer. Every message becomes a :class:`~arvae_midi.ui.protocol.Command`, the
same as a page's; a malformed one is counted and dropped. Output goes from the same loop
through a non-blocking UDP socket: a peer that is not listening loses the message, nothing waits.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError

from arvae_midi.midi_bridge.config import attributes_of
from arvae_midi.ui.protocol import CommandError, note_groups, parse_osc

if TYPE_CHECKING:
    from arvae_midi.ui.surface import ControlSurface

#: Most datagrams read per tick of the loop (a tick is 20 ms: up to 12,800 messages/s).
READS_PER_TICK = 256
#: Largest datagram read, bytes (an /arvae/ command is under 64).
MAX_DATAGRAM = 1024


def build(address: str, args: list[tuple[Any, str]]) -> bytes:
    """One OSC message as bytes; ``args`` are (value, OSC type tag) pairs ('i', 'f', 's')."""
    builder = OscMessageBuilder(address)
    for value, tag in args:
        builder.add_arg(value, tag)
    return builder.build().dgram


class OscPeer:
    """The OSC input socket (when ``port`` is set) and output target (when ``out`` is set)."""

    def __init__(self, surface: ControlSurface, host: str, port: int | None, out: tuple[str, int] | None) -> None:
        self.surface = surface
        self.out = out
        self.bound: tuple[str, int] | None = None
        self.received = 0
        self.sent = 0
        self._in: socket.socket | None = None
        self._out: socket.socket | None = None
        if port is not None:
            self._in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self._in.bind((host, port))
            except OSError:
                self._in.close()
                raise
            self._in.setblocking(False)
            name = self._in.getsockname()
            self.bound = (str(name[0]), int(name[1]))
        if out is not None:
            self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._out.setblocking(False)

    def read(self) -> None:
        """Read what has arrived, at most :data:`READS_PER_TICK` datagrams, and queue the commands."""
        if self._in is None:
            return
        attributes = self.surface.hello.get("attributes", [])
        for _ in range(READS_PER_TICK):
            try:
                data = self._in.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ICMP errors surfacing on a UDP socket: not fatal
                self.surface.reject(f"OSC socket: {e}")
                return
            self.received += 1
            try:
                messages = [timed.message for timed in OscPacket(data).messages]
            except ParseError as e:
                self.surface.reject(f"OSC: not an OSC packet ({e})")
                continue
            for message in messages:
                try:
                    self.surface.submit(parse_osc(message.address, list(message.params), attributes))
                except CommandError as e:
                    self.surface.reject(f"OSC: {e}")

    def send_bar(self, event: dict[str, Any], scheduled: dict[str, Any] | None) -> None:
        """At a bar's start: /arvae/bar, and for a played bar its attributes and notes."""
        if self._out is None:
            return
        core = self.surface._core
        assert core is not None
        self._send(build("/arvae/bar", [(int(event["bar"]), "i")]))
        tokens = event.get("tokens")
        if tokens is None:
            return
        names, vocab = core.model_attributes, core.vocab
        source = scheduled.get("source_tokens") if scheduled is not None else None
        if source is not None:
            values = attributes_of(source, vocab, names)
            self._send(build("/arvae/attributes/in", [(float(values[n]), "f") for n in names]))
        values = attributes_of(tokens, vocab, names)
        self._send(build("/arvae/attributes/out", [(float(values[n]), "f") for n in names]))
        args: list[tuple[Any, str]] = []
        played = int(scheduled.get("velocity", 90)) if scheduled is not None else 90
        for pitch, start, length, velocity in note_groups(tokens, vocab, played):
            args += [(int(pitch), "i"), (float(start), "f"), (float(length), "f"), (int(velocity), "i")]
        self._send(build("/arvae/variation", args))

    def _send(self, data: bytes) -> None:
        assert self._out is not None and self.out is not None
        try:
            self._out.sendto(data, self.out)
            self.sent += 1
        except OSError:  # nobody listening (ICMP refused) or the buffer is full: drop, never wait
            self.surface.counters["sent_dropped"] += 1

    def close(self) -> None:
        """Close both sockets."""
        for sock in (self._in, self._out):
            if sock is not None:
                sock.close()
