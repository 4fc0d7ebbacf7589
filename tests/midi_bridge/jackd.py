"""Dummy JACK servers for tests and benchmarks that never outlive their owner or leak a slot.

JACK2 keeps at most 8 servers per machine in its shared-memory registry, and a server that dies
without its SIGTERM handler (SIGKILL) never frees its entry. JACK2 does reclaim the entry of a
dead server when a new server registers under the *same name*, so servers here take their name
from a small pool (:data:`POOL`): whatever a crash leaves behind is reused by the next start.

* Every server is stopped with SIGTERM, and waited for (:func:`stop_jackd`); never SIGKILL.
* Each runs in its own session and process group (a Ctrl-C in the terminal reaches only its
  owner, which then stops it in order) and gets SIGTERM from the kernel when its owner dies,
  however it dies (``PR_SET_PDEATHSIG`` through ``setpriv``).
* :func:`clean_stale` (once per test session) stops pool servers whose owner is gone and removes
  the shared-memory files of pool servers that are no longer running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import rtmidi

from arvae_midi.midi_bridge.ports import quiet_stderr

#: Server names this project's tests and benchmarks use (one per concurrent server).
POOL = tuple(f"arvae-jack-{os.getuid()}-{k}" for k in range(6))


class JackdUnavailable(RuntimeError):
    """jackd is missing, or no pool name is free."""


def _launcher() -> list[str]:
    """``setpriv --pdeathsig TERM --`` (util-linux): the kernel sends the server SIGTERM when the
    thread that started it dies. (A ``preexec_fn`` could call prctl itself, but is unsafe in a
    process with threads, and the tests' processes have some.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def running_servers() -> dict[str, tuple[int, int]]:
    """Pool server name -> (jackd pid, parent pid) of the jackd processes running now."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"jackd") or b"-n" not in argv:
            continue
        name = argv[argv.index(b"-n") + 1].decode(errors="replace") if argv.index(b"-n") + 1 < len(argv) else ""
        if name in POOL:
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            found[name] = (int(proc.name), ppid)
    return found


def clean_stale() -> None:
    """Stop pool servers whose owner died (SIGTERM, wait) and remove dead pool servers' files."""
    for _name, (pid, ppid) in running_servers().items():
        if ppid == 1:  # orphaned: its owner is gone
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _wait_pid_gone(pid, 10.0)
    running = running_servers()
    for name in POOL:
        if name not in running:
            for leftover in (*Path("/dev/shm").glob(f"jack_sem.*_{name}_*"), *Path("/dev/shm").glob(f"jack_{name}_*")):
                leftover.unlink(missing_ok=True)


def _wait_pid_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def start_jackd(log: Path, realtime: bool = False, period: int = 64, rate: int = 48000
                ) -> tuple[str, subprocess.Popen[bytes]]:
    """A dummy server under the first free pool name, up and answering: (name, process)."""
    jackd = shutil.which("jackd")
    if jackd is None:
        raise JackdUnavailable("jackd is not installed (Debian package jackd2)")
    busy = running_servers()
    for name in POOL:
        if name in busy:
            continue
        for leftover in Path("/dev/shm").glob(f"jack_sem.*_{name}_*"):
            leftover.unlink(missing_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*_launcher(), jackd, "-n", name, "--realtime" if realtime else "--no-realtime",
                 "-d", "dummy", "-r", str(rate), "-p", str(period)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "JACK_NO_START_SERVER": "1"},
                start_new_session=True,
            )
        if _wait_until_up(proc, name):
            return name, proc
        stop_jackd(proc)  # taken meanwhile by someone else, or it failed: try the next name
    raise JackdUnavailable(f"no JACK server could start under {POOL}; jackd said: "
                           f"{log.read_text(errors='replace')[-400:]}")


def stop_jackd(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM and wait (JACK2 frees its registry slot and shared memory only then); never SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)


def _wait_until_up(proc: subprocess.Popen[bytes], name: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    saved = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with quiet_stderr():
                    probe = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="arvae-test-probe")
                    probe.get_ports()
                    probe.delete()
                return proc.poll() is None  # not someone else's server under that name
            except rtmidi.RtMidiError:
                time.sleep(0.1)
        return False
    finally:
        if saved is None:
            del os.environ["JACK_DEFAULT_SERVER"]
        else:
            os.environ["JACK_DEFAULT_SERVER"] = saved
