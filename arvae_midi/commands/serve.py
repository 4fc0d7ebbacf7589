"""``arvae-midi serve`` (the realtime MIDI bridge) and ``arvae-midi ports`` (what MIDI is here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from arvae_midi.errors import BackendError, ConfigError
from arvae_midi.midi_bridge.config import Backend, Fallback, Mode  # the one definition of each choice


def serve(
    model: Annotated[Path | None, typer.Option(help="ONNX model file; default: the shipped default model.",
                                                  exists=True, dir_okay=False)] = None,
    device: Annotated[str, typer.Option(help="Inference device: auto, cpu or cuda.")] = "auto",
    backend: Annotated[Backend, typer.Option(help="MIDI backend.")] = Backend.auto,
    port_name: Annotated[str, typer.Option(help="Name of the virtual in/out port pair.")] = "arvae-midi",
    in_port: Annotated[str | None, typer.Option("--in", help="Read from this existing port instead of a "
                                                   "virtual one (name or unique part of it).")] = None,
    out_port: Annotated[str | None, typer.Option("--out", help="Write to this existing port instead of a "
                                                    "virtual one.")] = None,
    mode: Annotated[Mode, typer.Option(help="respond: bar k's variation plays in bar k+1; "
                                            "loop: the last played bar is re-varied every bar.")] = Mode.respond,
    bpm: Annotated[float, typer.Option(help="Tempo when no MIDI clock arrives.", min=20, max=300)] = 120.0,
    in_channel: Annotated[int | None, typer.Option(help="Capture only this MIDI channel (default: all).",
                                                      min=1, max=16)] = None,
    out_channel: Annotated[int, typer.Option(help="MIDI channel of the variations.", min=1, max=16)] = 1,
    variations_per_bar: Annotated[int, typer.Option(help="Variations decoded per captured bar; they play one "
                                                         "per bar in the bars that follow.", min=1, max=16)] = 1,
    thru: Annotated[bool, typer.Option("--thru/--no-thru", help="Echo input notes on the output channel.")] = False,
    key_lock: Annotated[bool, typer.Option("--key-lock/--no-key-lock", help="Keep variations in the scale of the "
                                                                           "recent input bars.")] = True,
    fallback: Annotated[Fallback, typer.Option(help="A bar whose variation is late plays silence or the "
                                                    "input thru.")] = Fallback.silence,
    amount: Annotated[float, typer.Option(help="Variation amount until the amount knob moves (0..1).",
                                          min=0.0, max=1.0)] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the variation noise.")] = 0,
    cc_map: Annotated[Path | None, typer.Option(help="CC map TOML (default: presets/cc_map.toml); with "
                                                        "--learn, where the learned map is written.",
                                                   dir_okay=False)] = None,
    learn: Annotated[bool, typer.Option("--learn", help="Ask for each knob in turn, write the CC map, "
                                                        "then serve with it.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No status line.")] = False,
    log: Annotated[Path | None, typer.Option(help="Write every bridge event as a JSON line to this file.",
                                                dir_okay=False)] = None,
    ui: Annotated[bool, typer.Option("--ui", help="Serve the control page (needs the ui extra); its URL is printed.",
                                     rich_help_panel="Control surface")] = False,
    ui_port: Annotated[int, typer.Option(help="TCP port of the control page (0: any free port).", min=0,
                                         max=65535, rich_help_panel="Control surface")] = 8765,
    ui_host: Annotated[str, typer.Option(help="Address the control page listens on; anything but loopback "
                                              "is reachable from other machines (a warning is printed).",
                                         rich_help_panel="Control surface")] = "127.0.0.1",
    osc_port: Annotated[int | None, typer.Option(help="Take OSC knob messages on this UDP port (needs the ui extra).",
                                                  min=0, max=65535, rich_help_panel="Control surface")] = None,
    osc_host: Annotated[str, typer.Option(help="Address the OSC input listens on.",
                                          rich_help_panel="Control surface")] = "127.0.0.1",
    osc_out: Annotated[str | None, typer.Option(help="Send /arvae/bar, attributes and the variation to "
                                                     "HOST:PORT every bar (needs the ui extra).", metavar="HOST:PORT",
                                                rich_help_panel="Control surface")] = None,
) -> None:
    """Realtime MIDI bridge: play a bar in, hear its variation; CC knobs steer the attributes."""
    from arvae_midi.midi_bridge.config import BridgeConfig
    from arvae_midi.midi_bridge.serve import ServeOptions
    from arvae_midi.midi_bridge.serve import serve as run_serve
    from arvae_midi.ui.surface import UiOptions

    if cc_map is not None and not learn and not cc_map.is_file():
        raise ConfigError(f"{cc_map}: no such file (use --learn to create it)")
    bridge = BridgeConfig(
        mode=mode.value, bpm=bpm, in_channel=in_channel, out_channel=out_channel, thru=thru,
        fallback=fallback.value, variations_per_bar=variations_per_bar, key_lock=key_lock, amount=amount, seed=seed,
    )
    options = ServeOptions(
        bridge=bridge, model=str(model) if model else None, device=device, backend=backend.value,
        port_name=port_name, in_port=in_port, out_port=out_port, cc_map=cc_map, learn=learn, quiet=quiet, log=log,
        ui=UiOptions(web=ui, web_host=ui_host, web_port=ui_port, osc_port=osc_port, osc_host=osc_host,
                     osc_out=_host_port(osc_out) if osc_out else None),
    )
    # After SIGINT/SIGTERM the bridge has silenced every note, flushed and closed its ports:
    # returning ends the command with status 0. The arvae-midi process itself finishes at
    # realtime priority where allowed; in-process callers (CliRunner, an embedding program) keep
    # their thread's scheduling.
    run_serve(options, realtime_exit=_is_console_entry())


def _is_console_entry() -> bool:
    """True when this process is ``arvae-midi`` itself: the console script or ``python -m arvae_midi.cli``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", None) == "arvae_midi.cli":  # python -m arvae_midi.cli
        return True
    entry = getattr(main, "main", None)  # the console script does `from arvae_midi.cli import main`
    return getattr(entry, "__module__", None) == "arvae_midi.cli"


def _host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ConfigError saying the form otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--osc-out: expected HOST:PORT such as 127.0.0.1:9001, got {text!r}")
    return host, int(port)


def ports(
    backend: Annotated[Backend, typer.Option(help="Only this backend (auto: every one this platform has).")]
    = Backend.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the MIDI backends that work here and their ports."""
    from arvae_midi.midi_bridge.ports import probe_all

    results = probe_all(None if backend == Backend.auto else [backend.value])
    working = [r for r in results if r.ok]
    if as_json:
        typer.echo(json.dumps({"backends": [
            {"name": r.name, "ok": r.ok, "error": r.error or None, "inputs": list(r.inputs), "outputs": list(r.outputs)}
            for r in results]}))
    if not working:
        prefix = "no usable MIDI backend: " if len(results) > 1 else ""
        raise BackendError(prefix + "; ".join(r.error for r in results))
    if as_json:
        return
    for r in results:
        if not r.ok:
            typer.echo(f"{r.name}: unavailable ({r.error.removeprefix(r.name + ': ')})")
            continue
        typer.echo(f"{r.name}: ok")
        typer.echo("  inputs (read with --in):" + ("" if r.inputs else " none"))
        for name in r.inputs:
            typer.echo(f"    {name}")
        typer.echo("  outputs (write with --out):" + ("" if r.outputs else " none"))
        for name in r.outputs:
            typer.echo(f"    {name}")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``ports`` to the app."""
    app.command()(serve)
    app.command()(ports)
