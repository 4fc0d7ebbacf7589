"""JACK fixtures for the tests marked ``jack``: one dummy server per module, stale ones cleaned first."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.midi_bridge.jackd import JackdUnavailable, clean_stale, start_jackd, stop_jackd


@pytest.fixture(scope="session")
def jack_clean() -> None:
    """Once per session, before the first server: stop orphaned pool servers, drop their files."""
    clean_stale()


def jack_env(name: str) -> dict[str, str]:
    """The environment that points clients at server ``name`` (and never starts one)."""
    return {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}


@pytest.fixture(scope="module")
def jack_server(jack_clean: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A dummy JACK server (48 kHz, 64-frame periods, no realtime); yields its env, also set here."""
    log = tmp_path_factory.mktemp("jackd") / "jackd.log"
    try:
        name, proc = start_jackd(log)
    except JackdUnavailable as e:
        if "not installed" in str(e):
            pytest.skip(str(e))
        raise
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JACK_DEFAULT_SERVER", name)
            mp.setenv("JACK_NO_START_SERVER", "1")
            yield jack_env(name)
    finally:
        stop_jackd(proc)
