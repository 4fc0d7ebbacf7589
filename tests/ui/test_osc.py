"""OSC in and out, with python-osc and Debian's liblo-tools (oscsend, oscdump) as independent peers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from arvae_midi.ui.surface import UiOptions
from tests.ui.conftest import LiveServe, wait_for


def _knobs(run: LiveServe) -> dict[str, object]:
    assert run.surface is not None and run.surface._core is not None
    snap = run.surface._core.knobs.snapshot()
    return {**snap.values, "amount": snap.amount, "freeze": snap.freeze}


def _osc_in(run: LiveServe) -> tuple[str, int]:
    assert run.surface is not None and run.surface.osc_address is not None
    return run.surface.osc_address


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_python_osc_sets_every_control(live: Callable[..., LiveServe]) -> None:
    run = live(UiOptions(osc_port=0))
    assert "OSC in: udp 127.0.0.1:" in run.output.getvalue()
    client = SimpleUDPClient(*_osc_in(run))
    client.send_message("/arvae/knob/note_density", 100)
    client.send_message("/arvae/knob/contour", 0.5)
    client.send_message("/arvae/amount", 0.25)
    client.send_message("/arvae/freeze", 1)
    client.send_message("/arvae/knob/brightness", 3)  # not ours: counted, ignored
    wait_for(lambda: _knobs(run)["freeze"] is True and _knobs(run)["amount"] == 0.25, what="the OSC knobs")
    assert _knobs(run)["note_density"] == 100 and _knobs(run)["contour"] == 64
    wait_for(lambda: run.surface is not None and run.surface.counters["commands_bad"] == 1, what="the bad message")
    client.send_message("/arvae/freeze", 0)
    client.send_message("/arvae/mode", "loop")
    wait_for(lambda: run.surface is not None and run.surface._core is not None
             and run.surface._core.status.mode == "loop", what="loop mode")


def test_a_flood_coalesces_and_the_bridge_plays_on(live: Callable[..., LiveServe]) -> None:
    run = live(UiOptions(osc_port=0))
    client = SimpleUDPClient(*_osc_in(run))
    flood = threading.Thread(target=lambda: [client.send_message("/arvae/knob/pitch_range", i % 128)
                                             for i in range(30000)])
    flood.start()
    run.play_bar()  # the bar is captured and answered while the flood lasts
    flood.join()
    wait_for(lambda: len(run.engine.calls) >= 1, what="the variation")
    surface = run.surface
    assert surface is not None
    received = -1
    while surface.osc.received != received:  # let the loop read what the kernel kept
        received = surface.osc.received
        time.sleep(0.2)
    client.send_message("/arvae/knob/pitch_range", 5)
    wait_for(lambda: _knobs(run)["pitch_range"] == 5, what="the last value")
    assert surface.counters["commands"] > 1
    def ons() -> list[int]:
        return [m.note for m in run.pair.sent if m.type == "note_on" and m.velocity > 0]

    wait_for(lambda: len(ons()) >= 4, what="the answer to play")
    assert ons() == [62, 66, 69, 74]  # the whole answer played
    assert run.surface is not None and run.surface._core is not None
    assert run.surface._core.status.misses == 0


@pytest.mark.skipif(shutil.which("oscsend") is None or shutil.which("oscdump") is None,
                    reason="liblo-tools (oscsend, oscdump) are not installed")
def test_liblo_tools_set_a_knob_and_receive_the_bar(live: Callable[..., LiveServe]) -> None:
    out_port = _free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(out_port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    lines: list[str] = []
    assert dump.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(dump.stdout or []), daemon=True)
    reader.start()
    try:
        probe = SimpleUDPClient("127.0.0.1", out_port)
        wait_for(lambda: probe.send_message("/probe", 1) or any("/probe" in line for line in list(lines)),
                 what="oscdump to listen")
        run = live(UiOptions(osc_port=0, osc_out=("127.0.0.1", out_port)))
        host, port = _osc_in(run)
        subprocess.run(["oscsend", host, str(port), "/arvae/knob/rhythmic_complexity", "i", "42"], check=True,
                       timeout=10)
        wait_for(lambda: _knobs(run)["rhythmic_complexity"] == 42, what="oscsend's knob")
        run.play_bar()
        wait_for(lambda: len(run.engine.calls) >= 1, what="the variation")
        assert run.engine.calls[0]["knobs"]["rhythmic_complexity"] == 42
        wait_for(lambda: any("/arvae/variation" in line for line in list(lines)), what="oscdump to get the bar")
    finally:
        dump.terminate()
        dump.wait(10)
        reader.join(10)
    assert any(line.rstrip().endswith("/arvae/bar i 1") for line in lines), lines
    variation = next(line for line in lines if "/arvae/variation" in line).split()
    # four notes as (pitch i, start f, length f, velocity i) groups
    assert variation[2] == "iffi" * 4 and variation[-4:] == ["74", "3.000000", "0.500000", "100"]
    assert any("/arvae/attributes/out ffff" in line for line in lines)
    assert any("/arvae/attributes/in ffff" in line for line in lines)


def test_python_osc_receives_the_bar(live: Callable[..., LiveServe]) -> None:
    received: list[tuple[str, tuple[object, ...]]] = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.append((address, args)))
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = live(UiOptions(osc_out=("127.0.0.1", server.server_address[1])))
        run.play_bar()
        wait_for(lambda: any(a == "/arvae/variation" for a, _ in received), what="the variation")
    finally:
        server.shutdown()
        server.server_close()
    assert ("/arvae/bar", (1,)) in received
    notes = next(args for a, args in received if a == "/arvae/variation")
    assert [notes[i] for i in range(0, len(notes), 4)] == [62, 66, 69, 74]
    assert len(next(args for a, args in received if a == "/arvae/attributes/out")) == 4


@pytest.mark.skipif(shutil.which("pd") is None, reason="Pure Data is not installed (Debian package puredata-core)")
def test_the_pure_data_patch_drives_the_knobs(live: Callable[..., LiveServe]) -> None:
    patch = Path(__file__).resolve().parents[2] / "examples" / "arvae-knobs.pd"
    run = live(UiOptions(osc_port=0))
    host, port = _osc_in(run)
    # The patch's sliders and toggle listen on receive names, so -send moves them as a mouse would.
    subprocess.run(["pd", "-nogui", "-noaudio", "-nomidi", "-open", str(patch),
                    "-send", f"arvae-osc connect {host} {port}", "-send", "arvae-note_density 0.5",
                    "-send", "arvae-amount 0.25", "-send", "arvae-freeze 1", "-send", "pd quit"],
                   check=True, timeout=30, capture_output=True)
    wait_for(lambda: _knobs(run)["freeze"] is True, what="the patch's messages")
    assert _knobs(run)["note_density"] == 64 and _knobs(run)["amount"] == 0.25
