"""MIDI ports through python-rtmidi: ALSA, JACK, CoreMIDI and WinMM.

Ports have two small interfaces: an :class:`InputPort` calls one callback with the raw bytes of
each event (the callback only timestamps and enqueues; decoding happens on the bridge thread),
and an :class:`OutputPort` sends mido messages. ``serve`` either opens a virtual pair that a DAW
connects to (``--port-name``) or connects to existing ports by name (``--in``/``--out``).

Port names a DAW sees for ``--port-name arvae-midi``:

* ALSA: client ``arvae-midi`` with ports ``in`` and ``out``;
* JACK: ``arvae-midi:in`` and ``arvae-midi-out:out`` (one JACK client per direction, and JACK
  client names must be unique);
* CoreMIDI: virtual endpoints ``arvae-midi in`` and ``arvae-midi out``.

Backend failures become :class:`~arvae_midi.errors.BackendError` with one line saying what to
install or start. The C libraries print their own diagnostics on stderr while probing; those are
silenced so the one line stays one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import mido

from arvae_midi.errors import BackendError

#: Backend name on the command line -> python-rtmidi API constant name.
RTMIDI_APIS = {"alsa": "API_LINUX_ALSA", "jack": "API_UNIX_JACK", "coremidi": "API_MACOSX_CORE",
               "winmm": "API_WINDOWS_MM"}
BACKEND_CHOICES = ("auto", "alsa", "jack", "coremidi")
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
#: Poll period while waiting for JACK cycles (seconds).
CYCLE_POLL_S = 0.001


def auto_order(platform: str = sys.platform) -> tuple[str, ...]:
    """Backends ``--backend auto`` tries, in order, on ``platform``."""
    if platform == "darwin":
        return ("coremidi", "jack")
    if platform.startswith("win"):
        return ("winmm",)
    return ("alsa", "jack")


class InputPort(Protocol):
    """An input: raw event bytes go to the callback (called from the backend's thread)."""

    name: str

    def set_callback(self, callback: Callable[[Sequence[int]], None] | None) -> None: ...

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


class RtMidiInput:
    """An rtmidi input (virtual, or connected to an existing source)."""

    def __init__(self, rt: Any, name: str) -> None:
        self._rt = rt
        self.name = name
        self._callback: Callable[[Sequence[int]], None] | None = None
        rt.ignore_types(sysex=False, timing=False, active_sense=True)
        rt.set_callback(self._on_event)

    def _on_event(self, event: tuple[Sequence[int], float], _data: Any = None) -> None:
        callback = self._callback
        if callback is not None:
            callback(event[0])

    def set_callback(self, callback: Callable[[Sequence[int]], None] | None) -> None:
        """Route events to ``callback`` (None: drop them)."""
        self._callback = callback

    def listing(self) -> list[str]:
        """Sources this input's backend sees now (used to notice lost ports)."""
        return list(self._rt.get_ports())

    def close(self) -> None:
        """Stop the callback and release the port."""
        self._callback = None
        with contextlib.suppress(Exception):
            self._rt.cancel_callback()
            self._rt.close_port()
            self._rt.delete()


class RtMidiOutput:
    """An rtmidi output; sends are serialised by a lock."""

    def __init__(self, rt: Any, name: str) -> None:
        self._rt = rt
        self.name = name
        self._lock = threading.Lock()
        self.closed = False

    def send(self, msg: mido.Message) -> None:
        """Send one message; OSError when the backend refuses."""
        import rtmidi

        with self._lock:
            if self.closed:
                raise OSError(f"output port {self.name!r} is closed")
            try:
                self._rt.send_message(msg.bytes())
            except rtmidi.RtMidiError as e:
                raise OSError(f"output port {self.name!r}: {e}") from e

    def listing(self) -> list[str]:
        """Destinations this output's backend sees now (used to notice lost ports)."""
        return list(self._rt.get_ports())

    def close(self) -> None:
        """Release the port."""
        with self._lock:
            self.closed = True
            with contextlib.suppress(Exception):
                self._rt.close_port()
                self._rt.delete()


class JackWatch:
    """Notices the JACK server going away, which rtmidi does not report.

    After a JACK server dies, rtmidi's clients keep listing their stale ports and accept sends,
    so the bridge would play into the void. This opens one more JACK client through libjack
    (never activated: it takes no part in the process graph) whose shutdown callback sets
    :attr:`dead`.
    """

    def __init__(self, name: str) -> None:
        import ctypes
        import ctypes.util

        self.dead = False
        self._lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
        self._lib.jack_client_open.restype = ctypes.c_void_p
        self._lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        shutdown_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        self._lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, shutdown_type, ctypes.c_void_p]
        self._lib.jack_client_close.argtypes = [ctypes.c_void_p]
        self._lib.jack_last_frame_time.argtypes = [ctypes.c_void_p]
        self._lib.jack_last_frame_time.restype = ctypes.c_uint32
        self._callback = shutdown_type(self._on_shutdown)  # keep a reference while the client lives
        status = ctypes.c_int(0)
        no_start_server = 0x01
        self._client = self._lib.jack_client_open(name.encode(), no_start_server, ctypes.byref(status))
        if not self._client:
            raise BackendError(f"jack: cannot open a client (status {status.value:#x}); {HINTS['jack']}")
        self._lib.jack_on_shutdown(self._client, self._callback, None)

    def _on_shutdown(self, _arg: object) -> None:
        self.dead = True

    def wait_cycles(self, cycles: int, timeout: float) -> bool:
        """Wait until the server has started ``cycles`` new process cycles; False after ``timeout`` s
        or when the server is gone.

        The frame time of the current cycle lives in the server's shared memory, so an inactive
        client can read it; it changes once per cycle (by the period, e.g. 64 frames).
        """
        if self.dead or not self._client:
            return False
        deadline = time.monotonic() + timeout
        last = self._lib.jack_last_frame_time(self._client)
        seen = 0
        while seen < cycles:
            if time.monotonic() >= deadline:
                return False
            time.sleep(CYCLE_POLL_S)
            if self.dead:  # the shared memory may be going away with the server
                return False
            now = self._lib.jack_last_frame_time(self._client)
            if now != last:
                seen, last = seen + 1, now
        return True

    def close(self) -> None:
        """Close the watch client (not after the server died: there is nothing to close then)."""
        if self._client and not self.dead:
            self._lib.jack_client_close(self._client)
        self._client = None


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
    _closed: bool = field(default=False, repr=False)

    def lost(self) -> str | None:
        """What disappeared ("input port 'x' lost", "the JACK server stopped"), or None."""
        if self.jack_watch is not None and self.jack_watch.dead:
            return "the JACK server stopped"
        try:
            with quiet_stderr():
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

    def close(self) -> None:
        """Close both ports (idempotent), the output first.

        For JACK, rtmidi's ``close_port`` on the output waits (at most 1 s) for one more process
        cycle of the output client, which hands on whatever is still queued, and closing each
        client waits for the server. python-rtmidi holds the GIL throughout, so on a loaded
        machine this can stall every Python thread for a few hundred ms: a caller with a
        deadline flushes (:meth:`flush`) and lets the process exit close the clients instead.
        """
        if not self._closed:
            self._closed = True
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
    client name is taken.
    """
    import rtmidi

    name = choose_backend(backend)
    api = _rtmidi_api(name)
    in_client, in_port_name, out_client, out_port_name = _virtual_names(name, port_name)
    if name == "winmm" and (in_port is None or out_port is None):
        raise BackendError(
            "Windows has no virtual MIDI ports: create two loopMIDI ports (one to the bridge, one back) "
            "and pass --in NAME --out NAME"
        )
    try:
        with quiet_stderr():
            midi_in = rtmidi.MidiIn(rtapi=api, name=in_client, queue_size_limit=4096)
            midi_out = rtmidi.MidiOut(rtapi=api, name=out_client)
            sources, destinations = list(midi_in.get_ports()), list(midi_out.get_ports())
            if name == "jack":
                listed = sources + destinations
                taken = [c for c in (in_client, out_client) if any(p.startswith(f"{c}:") for p in listed)]
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
    except rtmidi.RtMidiError as e:
        raise BackendError(f"{name}: cannot open ports ({str(e).strip()}); {HINTS[name]}") from e
    pair = PortPair(
        name, RtMidiInput(midi_in, in_label), RtMidiOutput(midi_out, out_label), watch_in, watch_out,
        existing_in=in_port is not None, existing_out=out_port is not None,
    )
    if name == "jack":
        try:
            with quiet_stderr():
                pair.jack_watch = JackWatch(f"{port_name}-watch")
        except (OSError, BackendError):
            pass  # no libjack to load: server loss then goes unnoticed, as with rtmidi alone
    return pair
