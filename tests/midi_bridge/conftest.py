"""JACK fixtures for the tests marked ``jack``: one dummy server per module, stale ones cleaned first."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.midi_bridge.jackd import JackdUnavailable, clean_stale, start_jackd, stop_jackd


@pytest.fixture(scope="session")
def jack_clean() -> None:
    """Once per session, before the first server: stop orphaned pool servers, drop their files."""
    clean_stale()


def jack_env(name: str) -> dict[str, str]:
    """The environment that points clients at server ``name`` (and never starts one)."""
    return {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}


def start_test_server(log: Path) -> tuple[str, subprocess.Popen[bytes], bool]:
    """A dummy JACK server, realtime where the system allows it: (name, process, realtime).

    Without realtime scheduling a loaded machine runs JACK's cycles late, and JACK then drops
    events between clients (as a live setup would): tests of exact timing need realtime.
    """
    try:
        name, proc = start_jackd(log, realtime=True)
        realtime = "cannot use real-time" not in log.read_text(errors="replace").lower()
    except JackdUnavailable as e:
        if "not installed" in str(e):
            pytest.skip(str(e))
        name, proc = start_jackd(log)
        realtime = False
    return name, proc, realtime


@pytest.fixture(scope="module")
def jack_server(jack_clean: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A dummy JACK server (48 kHz, 64-frame periods); yields its env, also set here.

    ``env["ARVAE_TEST_JACK_RT"]`` is "1" when the server runs with realtime scheduling.
    """
    name, proc, realtime = start_test_server(tmp_path_factory.mktemp("jackd") / "jackd.log")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JACK_DEFAULT_SERVER", name)
            mp.setenv("JACK_NO_START_SERVER", "1")
            yield {**jack_env(name), "ARVAE_TEST_JACK_RT": "1" if realtime else "0"}
    finally:
        stop_jackd(proc)
