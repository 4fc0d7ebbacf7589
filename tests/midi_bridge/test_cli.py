"""``arvae-midi ports`` and ``serve`` at the command line: listings, one-line errors, no torch."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.errors import BackendError, ConfigError
from arvae_midi.midi_bridge import ports as ports_module
from arvae_midi.midi_bridge import serve as serve_module
from arvae_midi.midi_bridge.ports import BackendProbe, choose_backend, match_port
from tests.midi_bridge.harness import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny.onnx"
runner = CliRunner()


def _no_jack_env() -> dict[str, str]:
    """Environment whose JACK clients look for a server that does not exist and never start one."""
    return {**os.environ, "JACK_DEFAULT_SERVER": f"arvae-none-{uuid.uuid4().hex[:8]}", "JACK_NO_START_SERVER": "1"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arvae_midi.cli", *args], capture_output=True, text=True,
                          env=_no_jack_env(), cwd=ROOT, timeout=60)


def test_ports_lists_working_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports_module, "probe_all", lambda names=None: [
        BackendProbe("alsa", False, "alsa: no ALSA sequencer"),
        BackendProbe("jack", True, inputs=("system:capture_1",), outputs=()),
    ])
    result = runner.invoke(app, ["ports"])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "alsa: unavailable (no ALSA sequencer)",
        "jack: ok",
        "  inputs (read with --in):",
        "    system:capture_1",
        "  outputs (write with --out): none",
    ]


def test_ports_without_any_backend_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports_module, "probe_all", lambda names=None: [
        BackendProbe("alsa", False, "alsa: no ALSA sequencer"), BackendProbe("jack", False, "jack: no JACK server")])
    result = runner.invoke(app, ["ports"])
    assert result.exit_code == 1 and isinstance(result.exception, BackendError)
    assert str(result.exception) == "no usable MIDI backend: alsa: no ALSA sequencer; jack: no JACK server"


def test_one_line_errors_from_the_console_script() -> None:
    result = _cli("ports", "--backend", "jack")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: jack: no JACK server running; start one ('jackd -d alsa', or 'jackd -d dummy' without a sound card)"
    ]
    result = _cli("serve", "--backend", "jack", "--model", str(TINY), "--quiet")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: jack: no JACK server running")


def test_serve_rejects_a_bad_cc_map_before_opening_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    monkeypatch.setattr(serve_module, "open_ports", lambda *a: opened.append(a))
    monkeypatch.setattr(serve_module, "load_engine", lambda model, device: FakeEngine())
    bad = tmp_path / "map.toml"
    bad.write_text("[attributes]\nbrightness = 30\n")
    result = runner.invoke(app, ["serve", "--cc-map", str(bad)])
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError)
    assert "unknown attribute(s) brightness" in str(result.exception)
    result = runner.invoke(app, ["serve", "--cc-map", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1 and "use --learn" in str(result.exception)
    assert opened == []


def test_serve_validates_its_options() -> None:
    for args in (["--in-channel", "17"], ["--bpm", "5"], ["--mode", "echo"], ["--amount", "2"]):
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code == 2, args


def test_choose_backend_and_port_matching() -> None:
    def probe(name: str) -> BackendProbe:
        return BackendProbe(name, name == "jack", "" if name == "jack" else f"{name}: broken")

    assert choose_backend("auto", probe) in ("jack", "coremidi")  # the first that works
    with pytest.raises(BackendError, match="^alsa: broken$"):
        choose_backend("alsa", probe)
    with pytest.raises(BackendError, match="unknown backend"):
        choose_backend("oss", probe)
    ports = ["loopMIDI Port 1 0", "loopMIDI Port 2 1", "Keystation 49"]
    assert match_port("Keystation 49", ports, "input") == 2
    assert match_port("port 2", ports, "input") == 1
    with pytest.raises(BackendError, match="'loopMIDI' matches several port; available input ports: "):
        match_port("loopMIDI", ports, "input")
    with pytest.raises(BackendError, match="matches no port"):
        match_port("nothing", ports, "output")


def test_the_bridge_never_imports_torch() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "import arvae_midi.midi_bridge as pkg\n"
        "for m in pkgutil.iter_modules(pkg.__path__): importlib.import_module(f'arvae_midi.midi_bridge.{m.name}')\n"
        "import arvae_midi.commands.serve\n"
        f"from arvae_midi.midi_bridge.serve import load_engine; load_engine({str(TINY)!r}, 'cpu')\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(len([m for m in sys.modules if m.startswith('arvae_midi.midi_bridge.')]), bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    count, bad = result.stdout.split(" ", 1)
    assert int(count) >= 10 and bad.strip() == "[]"
