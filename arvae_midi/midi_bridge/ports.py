"""MIDI ports through python-rtmidi: ALSA, JACK, CoreMIDI and WinMM.

Ports have two small interfaces: an :class:`InputPort` calls one callback with the raw bytes and
arrival time of each event, from the port's own input thread (never the backend's: see
:mod:`~arvae_midi.midi_bridge.rtmidi_io`), and an :class:`OutputPort` sends mido messages.
``serve`` either opens a virtual pair that a DAW connects to (``--port-name``) or connects to
existing ports by name (``--in``/``--out``).

Port names a DAW sees for ``--port-name arvae-midi``:

* ALSA: client ``arvae-midi`` with ports ``in`` and ``out``;
* JACK: ``arvae-midi:in`` and ``arvae-midi-out:out`` (one JACK client per direction, and JACK
  client names must be unique), plus ``arvae-midi-guard:guard``, connected to ``arvae-midi:in``
  (leave it so: it ends unterminated SysEx);
* CoreMIDI: virtual endpoints ``arvae-midi in`` and ``arvae-midi out``.

Backend failures become :class:`~arvae_midi.errors.BackendError` with one line saying what to
install or start. The C libraries print their own diagnostics on stderr while probing; those are
silenced so the one line stays one line (at startup by muting stderr around the probe, before the
bridge's threads run; libjack for good by :func:`~arvae_midi.midi_bridge.jack.silence_libjack`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import mido

from arvae_midi.errors import BackendError
from arvae_midi.midi_bridge.config import Backend
from arvae_midi.midi_bridge.jack import JackWatch, deactivate_rtmidi_client, silence_libjack
from arvae_midi.midi_bridge.rtmidi_io import QUEUE_SIZE, InputCallback, RtMidiInput, RtMidiOutput

__all__ = [
    "BACKEND_CHOICES", "BackendProbe", "InputCallback", "InputPort", "JackWatch", "OutputPort", "PortPair",
    "RtMidiInput", "RtMidiOutput", "choose_backend", "match_port", "open_ports", "probe_all", "probe_backend",
    "quiet_stderr",
]

#: Backend name on the command line -> python-rtmidi API constant name.
RTMIDI_APIS = {"alsa": "API_LINUX_ALSA", "jack": "API_UNIX_JACK", "coremidi": "API_MACOSX_CORE",
               "winmm": "API_WINDOWS_MM"}
BACKEND_CHOICES = tuple(b.value for b in Backend)
HINTS = {
    "alsa": "no ALSA sequencer (/dev/snd/seq); load it ('sudo modprobe snd-seq') "
            "or start a JACK server and use --backend jack",
    "jack": "no JACK server running; start one ('jackd -d alsa', or 'jackd -d dummy' without a sound card)",
    "coremidi": "CoreMIDI is only available on macOS",
    "winmm": "Windows MultiMedia MIDI is only available on Windows",
}
#: JACK server cycles that must start after the last send before the output counts as flushed:
#: rtmidi queues JACK sends in a ringbuffer that the output client's process callback drains
#: into the port at the start of each cycle, so the first new cycle carries everything sent
#: before it; the clients reading the port take it in that cycle, or one cycle later when they
#: run late (JACK2 runs asynchronously by default). A cycle is one period: 1.33 ms at 64 frames
#: and 48 kHz, tens of ms when a loaded machine runs them late without realtime scheduling.
FLUSH_CYCLES = 3


def auto_order(platform: str = sys.platform) -> tuple[str, ...]:
    """Backends ``--backend auto`` tries, in order, on ``platform``."""
    if platform == "darwin":
        return ("coremidi", "jack")
    if platform.startswith("win"):
        return ("winmm",)
    return ("alsa", "jack")


class InputPort(Protocol):
    """An input: ``callback(bytes, arrival)`` per event, from the port's thread; ``arrival`` is in
    ``time.monotonic`` seconds, or None for "now"."""

    name: str

    def set_callback(self, callback: InputCallback | None) -> None: ...

    def close(self) -> None: ...


class OutputPort(Protocol):
    """An output: :meth:`send` raises OSError when the port is gone."""

    name: str

    def send(self, msg: mido.Message) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendProbe:
    """What one backend offers here: ``ok`` with its ports, or the reason it is unusable."""

    name: str
    ok: bool
    error: str = ""
    inputs: tuple[str, ...] = ()  # ports we can read from (--in)
    outputs: tuple[str, ...] = ()  # ports we can write to (--out)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (ALSA and JACK print diagnostics there when they fail)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            sys.stderr.flush()
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _rtmidi_api(name: str) -> int:
    """python-rtmidi API constant of backend ``name``; BackendError when not compiled in."""
    import rtmidi

    api = getattr(rtmidi, RTMIDI_APIS[name])
    if api not in rtmidi.get_compiled_api():
        raise BackendError(f"{name}: this python-rtmidi build has no {name} support; {HINTS[name]}")
    return int(api)


def probe_backend(name: str) -> BackendProbe:
    """Try backend ``name``: list its ports, or say why it does not work."""
    import rtmidi

    try:
        api = _rtmidi_api(name)
        with quiet_stderr():
            midi_in = rtmidi.MidiIn(rtapi=api, name="arvae-midi-probe")
            midi_out = rtmidi.MidiOut(rtapi=api, name="arvae-midi-probe")
            inputs, outputs = tuple(midi_in.get_ports()), tuple(midi_out.get_ports())
            midi_in.delete()
            midi_out.delete()
    except BackendError as e:
        return BackendProbe(name, False, str(e))
    except (rtmidi.RtMidiError, OSError):
        return BackendProbe(name, False, f"{name}: {HINTS[name]}")
    return BackendProbe(name, True, inputs=inputs, outputs=outputs)


def probe_all(names: Sequence[str] | None = None) -> list[BackendProbe]:
    """Probe every backend this platform may have (``auto`` order), or ``names``."""
    return [probe_backend(n) for n in (names or auto_order())]


def choose_backend(requested: str, probe: Callable[[str], BackendProbe] = probe_backend) -> str:
    """Resolve ``auto`` to the first working backend; BackendError naming each failure."""
    if requested not in BACKEND_CHOICES and requested not in RTMIDI_APIS:
        raise BackendError(f"unknown backend {requested!r}; valid: {', '.join(BACKEND_CHOICES)}")
    names = auto_order() if requested == "auto" else (requested,)
    failures = []
    for name in names:
        result = probe(name)
        if result.ok:
            return name
        failures.append(result.error)
    if len(failures) == 1:
        raise BackendError(failures[0])
    raise BackendError("no usable MIDI backend: " + "; ".join(failures))


def match_port(name: str, available: Sequence[str], direction: str) -> int:
    """Index of port ``name`` in ``available``: exact, else one case-insensitive substring match."""
    if name in available:
        return list(available).index(name)
    hits = [i for i, port in enumerate(available) if name.lower() in port.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(repr(p) for p in available) or "none"
    what = "matches several" if hits else "matches no"
    raise BackendError(f"{direction} port {name!r} {what} port; available {direction} ports: {listing}")


@dataclass
class PortPair:
    """The bridge's input and output, plus how to find them in the backend's port listings."""

    backend: str
    input: RtMidiInput
    output: RtMidiOutput
    watch_in: str = ""  # our virtual input (a destination) or the existing source we read
    watch_out: str = ""  # our virtual output (a source) or the existing destination we write
    existing_in: bool = False
    existing_out: bool = False
    jack_watch: JackWatch | None = None
    own_in: str = ""  # JACK: our input port's full name (the DAW connects to it, or we to --in)
    own_out: str = ""  # JACK: our output port's full name
    guarded: bool = False  # JACK: the SysEx guard is connected to our input (one connection)
    guard_port: str = ""  # JACK: the guard's port
    _closed: bool = field(default=False, repr=False)

    def server_gone(self) -> bool:
        """True once the JACK server has stopped (cheap: a flag libjack sets)."""
        return self.jack_watch is not None and self.jack_watch.dead

    def lost(self) -> str | None:
        """What disappeared ("input port 'x' lost", "the JACK server stopped"), or None.

        libjack's own messages are silenced for good when the ports open, so listing the ports
        needs no muting of the process's stderr.
        """
        if self.server_gone():
            return "the JACK server stopped"
        try:
            destinations, sources = self.output.listing(), self.input.listing()
        except Exception as e:
            return f"the {self.backend} backend failed ({e})"
        in_listing = sources if self.existing_in else destinations
        out_listing = destinations if self.existing_out else sources
        if self.watch_in and not any(self.watch_in in p for p in in_listing):
            return f"input port {self.watch_in!r} lost"
        if self.watch_out and not any(self.watch_out in p for p in out_listing):
            return f"output port {self.watch_out!r} lost"
        return None

    def unconnected(self) -> list[str]:
        """Which of our ports nothing is connected to (JACK only; other backends cannot tell)."""
        if self.jack_watch is None or not self.jack_watch.usable:
            return []
        missing = []
        n_in = self.jack_watch.connections(self.own_in) if self.own_in else None
        if n_in is not None and n_in <= int(self.guarded):
            missing.append(f"nothing plays into {self.own_in!r}")
        n_out = self.jack_watch.connections(self.own_out) if self.own_out else None
        if n_out == 0:
            missing.append(f"nothing listens to {self.own_out!r}")
        return missing

    def server_realtime(self) -> bool | None:
        """Whether the JACK server runs with realtime scheduling (None: not JACK, or unknown)."""
        return self.jack_watch.realtime() if self.jack_watch is not None else None

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until what was sent has left this process; True when it has.

        Only JACK queues: a send lands in rtmidi's ringbuffer and leaves with the output client's
        next process cycle, so this waits for :data:`FLUSH_CYCLES` server cycles (a few ms; more
        when a loaded machine runs the cycles late). ALSA, CoreMIDI and WinMM hand each message
        to the system inside ``send``.
        """
        if self.backend != "jack":
            return True
        if self.jack_watch is None:  # no way to see the cycles: give them a moment
            time.sleep(min(timeout, 0.05))
            return False
        return self.jack_watch.wait_cycles(FLUSH_CYCLES, timeout)

    def detach(self) -> None:
        """Stop the input thread: afterwards no thread of ours calls into the input's client."""
        self.input.detach()

    def close(self) -> None:
        """Detach, close and free both ports (idempotent), from the calling thread; :meth:`flush`
        first what must still arrive.

        The order: the input thread stops (nothing calls into the input any more; RtMidi never
        had a callback to cancel); with JACK, each rtmidi client is deactivated, so that no
        process cycle runs while its port goes (see
        :func:`~arvae_midi.midi_bridge.jack.deactivate_rtmidi_client`); then the output, guard
        and input ports close and each client is freed, the watch client last. After the JACK server died, nothing is
        closed: the clients died with it, and closing them would wait for cycles that never come.
        """
        if self._closed:
            return
        self._closed = True
        self.input.detach()
        if self.server_gone():
            self.output.abandon()
            self.input.abandon()
            return
        watch = self.jack_watch
        if watch is not None and watch.usable:  # JACK: stop the process cycles before the ports go
            for rt, port in ((self.output.rt, self.own_out), (self.input.guard, self.guard_port),
                             (self.input.rt, self.own_in)):
                if rt is not None and port:
                    deactivate_rtmidi_client(rt, port, watch)
        self.output.close()
        self.input.close()
        if self.jack_watch is not None:
            self.jack_watch.close()


def _virtual_names(backend: str, port_name: str) -> tuple[str, str, str, str]:
    """(input client, input port, output client, output port) for a virtual pair."""
    if backend == "jack":
        return port_name, "in", f"{port_name}-out", "out"
    if backend == "coremidi":
        return port_name, f"{port_name} in", port_name, f"{port_name} out"
    return port_name, "in", port_name, "out"


def open_ports(
    backend: str = "auto",
    port_name: str = "arvae-midi",
    in_port: str | None = None,
    out_port: str | None = None,
) -> PortPair:
    """Open the bridge's ports: a virtual pair named ``port_name``, or existing ``in_port``/``out_port``.

    Either of ``in_port``/``out_port`` may be given alone; the other side is then virtual.
    Raises BackendError when the backend is unusable, a name matches no port, or (JACK) the
    client name is taken. With JACK, a third client (``NAME-guard``) feeds our input the lone
    ``F7`` that ends an unterminated SysEx (see :mod:`~arvae_midi.midi_bridge.rtmidi_io`), and an
    inactive fourth (``NAME-watch``) notices the server stopping.
    """
    import rtmidi

    # A backend named on the command line is not probed first: opening the ports fails with the
    # same one line when it is unusable, and a probe would open and close two more clients.
    name = choose_backend(backend) if backend == "auto" or backend not in RTMIDI_APIS else backend
    api = _rtmidi_api(name)
    in_client, in_port_name, out_client, out_port_name = _virtual_names(name, port_name)
    if name == "winmm" and (in_port is None or out_port is None):
        raise BackendError(
            "Windows has no virtual MIDI ports: create two loopMIDI ports (one to the bridge, one back) "
            "and pass --in NAME --out NAME"
        )
    if name == "jack":
        silence_libjack()
    opened: list[object] = []
    try:
        with quiet_stderr():
            midi_in = rtmidi.MidiIn(rtapi=api, name=in_client, queue_size_limit=QUEUE_SIZE)
            opened.append(midi_in)
            midi_out = rtmidi.MidiOut(rtapi=api, name=out_client)
            opened.append(midi_out)
            sources, destinations = list(midi_in.get_ports()), list(midi_out.get_ports())
            if name == "jack":
                listed = sources + destinations
                taken = [c for c in (in_client, out_client, f"{port_name}-guard")
                         if any(p.startswith(f"{c}:") for p in listed)]
                if taken:
                    raise BackendError(f"a JACK client named {taken[0]!r} already exists; pick another --port-name")
            if in_port is None:
                midi_in.open_virtual_port(in_port_name)
                watch_in = f"{in_client}:{in_port_name}" if name != "coremidi" else in_port_name
                in_label = watch_in
            else:
                index = match_port(in_port, sources, "input")
                in_label = watch_in = sources[index]
                midi_in.open_port(index, in_port_name)
            if out_port is None:
                midi_out.open_virtual_port(out_port_name)
                watch_out = f"{out_client}:{out_port_name}" if name != "coremidi" else out_port_name
                out_label = watch_out
            else:
                index = match_port(out_port, destinations, "output")
                out_label = watch_out = destinations[index]
                midi_out.open_port(index, out_port_name)
            guard = _open_guard(rtmidi, api, f"{port_name}-guard", f"{in_client}:{in_port_name}") \
                if name == "jack" else None
            if guard is not None:
                opened.append(guard)
    except (rtmidi.RtMidiError, SystemError) as e:  # python-rtmidi raises SystemError for some driver errors
        for rt in reversed(opened):
            with contextlib.suppress(Exception):
                rt.delete()  # type: ignore[attr-defined]
        if not opened:  # not even a client: the backend is unusable, as a probe would have said
            raise BackendError(f"{name}: {HINTS[name]}") from e
        raise BackendError(f"{name}: cannot open ports ({str(e).strip()}); {HINTS[name]}") from e
    except BaseException:
        for rt in reversed(opened):
            with contextlib.suppress(Exception):
                rt.delete()  # type: ignore[attr-defined]
        raise
    watch = None
    if name == "jack":
        # No libjack to load: server loss then goes unnoticed, as with rtmidi alone.
        with contextlib.suppress(OSError, BackendError):
            watch = JackWatch(f"{port_name}-watch")
    gone = (lambda: watch.dead) if watch is not None else None
    return PortPair(
        name, RtMidiInput(midi_in, in_label, guard), RtMidiOutput(midi_out, out_label, gone), watch_in, watch_out,
        existing_in=in_port is not None, existing_out=out_port is not None, jack_watch=watch,
        own_in=f"{in_client}:{in_port_name}" if name == "jack" else "",
        own_out=f"{out_client}:{out_port_name}" if name == "jack" else "",
        guarded=guard is not None, guard_port=f"{port_name}-guard:guard" if guard is not None else "",
    )


def _open_guard(rtmidi: Any, api: int, client: str, target: str) -> Any:
    """An rtmidi JACK output connected to our input port ``target`` (the SysEx guard)."""
    guard = rtmidi.MidiOut(rtapi=api, name=client)
    try:
        destinations = list(guard.get_ports())
        if target not in destinations:
            raise rtmidi.RtMidiError(f"our input port {target!r} is not listed")
        guard.open_port(destinations.index(target), "guard")
    except BaseException:
        guard.delete()
        raise
    return guard
