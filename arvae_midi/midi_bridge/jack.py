"""What the bridge asks libjack directly (through ctypes), beside python-rtmidi's clients.

RtMidi (thestk/rtmidi, ``RtMidi.cpp``) opens one JACK client per ``MidiIn``/``MidiOut`` and
reports neither the server going away, nor the port's connections, nor whether the server runs
with realtime scheduling. :class:`JackWatch` opens one more client that is never activated (it
has no process callback, so it takes no part in the process graph and adds no work to JACK's
cycle) and answers those questions from the server's shared state.

:func:`silence_libjack` stops libjack printing its own diagnostics on stderr (after a server
dies, JACK2's client library prints a dozen lines such as "Cannot read socket fd" before the
bridge can say what happened in one line). Only libjack's messages go; the rest of the process
keeps its stderr.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from pathlib import Path
from typing import Any

from arvae_midi.errors import BackendError

#: Poll period while waiting for JACK cycles (seconds).
CYCLE_POLL_S = 0.001
_JACK_NO_START_SERVER = 0x01
_SHUTDOWN_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
#: ctypes callbacks handed to libjack must outlive every client they were given to: a callback
#: freed while libjack can still call it is a crash, so they are kept for the process's life.
_KEEP_ALIVE: list[Any] = []
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_silenced = False


def libjack() -> ctypes.CDLL:
    """The libjack instance python-rtmidi uses; OSError when absent.

    python-rtmidi's Linux wheels bring their own copy (``python_rtmidi.libs/libjack-*.so``). A
    second libjack in the same process (the system's) keeps separate global state next to the
    first, and closing a client through it was seen to deadlock inside ``jack_client_close``
    while rtmidi's clients came and went; so the watch client goes through rtmidi's copy.
    """
    global _lib
    with _lock:
        if _lib is None:
            import rtmidi  # noqa: F401  (loads its libjack, if it has one)

            loaded = _loaded_libjacks()
            path = loaded[0] if loaded else ctypes.util.find_library("jack") or "libjack.so.0"
            lib = ctypes.CDLL(path)
            lib.jack_client_open.restype = ctypes.c_void_p
            lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, _SHUTDOWN_T, ctypes.c_void_p]
            lib.jack_client_close.argtypes = [ctypes.c_void_p]
            lib.jack_last_frame_time.argtypes = [ctypes.c_void_p]
            lib.jack_last_frame_time.restype = ctypes.c_uint32
            lib.jack_is_realtime.argtypes = [ctypes.c_void_p]
            lib.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.jack_port_by_name.restype = ctypes.c_void_p
            lib.jack_port_connected.argtypes = [ctypes.c_void_p]
            lib.jack_set_error_function.argtypes = [ctypes.c_void_p]
            lib.jack_set_info_function.argtypes = [ctypes.c_void_p]
            _lib = lib
        return _lib


def _loaded_libjacks() -> list[str]:
    """Paths of every libjack mapped into this process (each keeps its own error handler)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    fields = (line.split(None, 5) for line in maps.splitlines())
    paths = {f[5].strip() for f in fields if len(f) == 6}
    return sorted(p for p in paths if "/libjack" in p and ".so" in p)


def silence_libjack() -> bool:
    """Route the error and info messages of every loaded libjack to a C function that ignores
    them; True when done. Call it after ``import rtmidi`` (which loads its libjack).

    The handler must be C: libjack calls it from its own threads (the process thread included),
    where a Python callback would have to take the GIL. libjack wants ``void f(const char *)``;
    libc's ``strlen`` reads the message and returns a length the caller ignores, which on every
    C ABI is the same as doing nothing (the return value only lives in a register).
    """
    global _silenced
    if _silenced:
        return True
    try:
        libs = [libjack(), *(ctypes.CDLL(path) for path in _loaded_libjacks())]
        noop = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p)
        for lib in libs:
            lib.jack_set_error_function.argtypes = [ctypes.c_void_p]
            lib.jack_set_info_function.argtypes = [ctypes.c_void_p]
            lib.jack_set_error_function(noop)
            lib.jack_set_info_function(noop)
    except (OSError, AttributeError):
        return False
    _silenced = True
    return True


class JackWatch:
    """An inactive libjack client: server loss, process cycles, realtime mode, port connections.

    The shutdown callback is the one piece of Python libjack ever calls, and only once, when the
    server goes away: libjack calls it from the client's notification thread (an inactive client
    has no process thread), and it only sets a flag.
    """

    def __init__(self, name: str) -> None:
        self.dead = False
        self._lib = libjack()
        callback = _SHUTDOWN_T(self._on_shutdown)
        _KEEP_ALIVE.append(callback)
        status = ctypes.c_int(0)
        self._client: int | None = self._lib.jack_client_open(name.encode(), _JACK_NO_START_SERVER,
                                                              ctypes.byref(status))
        if not self._client:
            raise BackendError(f"jack: cannot open a client (status {status.value:#x}); no JACK server running")
        self._lib.jack_on_shutdown(self._client, callback, None)

    def _on_shutdown(self, _arg: object) -> None:
        self.dead = True

    @property
    def usable(self) -> bool:
        """True while the client is open and its server alive."""
        return bool(self._client) and not self.dead

    def realtime(self) -> bool | None:
        """Whether the server runs its cycles with realtime scheduling (None: cannot tell)."""
        if not self.usable:
            return None
        return bool(self._lib.jack_is_realtime(self._client))

    def connections(self, port: str) -> int | None:
        """How many connections the port ``port`` ("client:port") has (None: no such port)."""
        if not self.usable:
            return None
        handle = self._lib.jack_port_by_name(self._client, port.encode())
        if not handle:
            return None
        return int(self._lib.jack_port_connected(handle))

    def wait_cycles(self, cycles: int, timeout: float) -> bool:
        """Wait until the server has started ``cycles`` new process cycles; False after ``timeout`` s
        or when the server is gone.

        The frame time of the current cycle lives in the server's shared memory, so an inactive
        client can read it; it changes once per cycle (by the period, e.g. 64 frames).
        """
        if not self.usable:
            return False
        deadline = time.monotonic() + timeout
        last = self._lib.jack_last_frame_time(self._client)
        seen = 0
        while seen < cycles:
            if time.monotonic() >= deadline:
                return False
            time.sleep(CYCLE_POLL_S)
            if not self.usable:  # the shared memory may be going away with the server
                return False
            now = self._lib.jack_last_frame_time(self._client)
            if now != last:
                seen, last = seen + 1, now
        return True

    def close(self) -> None:
        """Close the client (not after the server died: there is nothing to close then)."""
        if self._client and not self.dead:
            self._lib.jack_client_close(self._client)
        self._client = None


# ----- closing an rtmidi JACK client without racing its process thread ----------------------
#
# RtMidi's JACK ports close by unregistering the port while the client is still active
# (thestk/rtmidi:RtMidi.cpp, MidiInJack::closePort, MidiOutJack::closePort; the destructors call
# them, then free the output's ringbuffer, and only then close the client), so a process cycle
# can run on a port, or a ringbuffer, that is going away: a crash in JACK's thread, seen here in
# about one in four runs of 200 open/close cycles under traffic. libremidi synchronises port
# closing with the process callback (celtera/libremidi#213); RtMidi offers no way to, so this
# does it from outside: ``jack_deactivate`` on RtMidi's own client (once it returns, JACK runs no
# more process cycles for it), then the port pointer RtMidi checks is set to NULL, so that
# RtMidi's destructor skips its closePort and just closes the client. The client handle is read
# from python-rtmidi's and RtMidi's object layout, and used only after the port handle found
# next to it matches the one libjack reports for the port's name.

#: python-rtmidi releases whose object layout was checked: MidiIn/MidiOut keep their ``thisptr``
#: after the object header, the vtable pointer and MidiBase's three object fields.
_LAYOUT_CHECKED = ("1.5.",)
_THISPTR_OFFSET = 16 + 8 + 3 * 8
_RTAPI_OFFSET = 8  # RtMidi { vtable; MidiApi *rtapi_; }
_APIDATA_OFFSET = 8  # MidiApi { vtable; void *apiData_; ... }
_PORT_OFFSET = 8  # JackMidiData { jack_client_t *client; jack_port_t *port; ... }


def _readable_ranges() -> list[tuple[int, int]]:
    ranges = []
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[1].startswith("r"):
                lo, hi = fields[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        pass
    return ranges


def _read_pointer(address: int, ranges: list[tuple[int, int]]) -> int | None:
    if not address or not any(lo <= address and address + 8 <= hi for lo, hi in ranges):
        return None
    return ctypes.c_void_p.from_address(address).value or None


def deactivate_rtmidi_client(rt: Any, port: str, watch: JackWatch) -> bool:
    """Deactivate the JACK client of rtmidi object ``rt`` whose port is ``port`` ("client:port"),
    and mark that port closed for RtMidi; True when done (then ``rt.delete()`` is race-free).

    False, and nothing touched, when the layout is not the one checked or does not lead to that
    port: the caller then closes the RtMidi way.
    """
    try:
        import rtmidi

        version = rtmidi.version.version if hasattr(rtmidi.version, "version") else str(rtmidi.version)
    except (ImportError, AttributeError):
        return False
    if not str(version).startswith(_LAYOUT_CHECKED) or not watch.usable:
        return False
    lib = watch._lib
    expected = lib.jack_port_by_name(watch._client, port.encode())
    if not expected:
        return False
    ranges = _readable_ranges()
    thisptr = _read_pointer(id(rt) + _THISPTR_OFFSET, ranges)
    rtapi = _read_pointer(thisptr + _RTAPI_OFFSET, ranges) if thisptr else None
    data = _read_pointer(rtapi + _APIDATA_OFFSET, ranges) if rtapi else None
    if not data or not any(lo <= data and data + 16 <= hi for lo, hi in ranges):
        return False
    client = ctypes.c_void_p.from_address(data).value
    if not client or ctypes.c_void_p.from_address(data + _PORT_OFFSET).value != expected:
        return False
    lib.jack_deactivate.argtypes = [ctypes.c_void_p]
    if lib.jack_deactivate(client) != 0:
        return False
    ctypes.c_void_p.from_address(data + _PORT_OFFSET).value = None  # RtMidi: "no port open"
    return True
