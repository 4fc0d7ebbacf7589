"""The control page in a real headless chromium against a running ``serve`` (in-memory MIDI).

Set ``ARVAE_UI_SCREENSHOT=docs/img/ui.png`` to refresh the README's screenshot; otherwise it
goes to the test's temporary folder.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from arvae_midi.ui.surface import UiOptions
from tests.ui.browser import Chromium, find_chromium
from tests.ui.conftest import LiveServe, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = find_chromium()
DENSITY_CC, RANGE_CC = 21, 22  # presets/cc_map.toml


@pytest.fixture
def browser() -> Iterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    chromium = Chromium(CHROMIUM)
    yield chromium
    chromium.close()


def _open_page(browser: Chromium, run: LiveServe) -> None:
    browser.open(run.url)
    browser.wait_for("document.body.dataset.state === 'connected' && !!document.getElementById('knob-contour')",
                     "the page to connect")


def _slider_value(browser: Chromium, name: str) -> int:
    return int(browser.evaluate(f"document.getElementById('knob-{name}').value"))


def _click_slider(browser: Chromium, name: str, fraction: float) -> int:
    """Click the slider's track at ``fraction`` of its width (a real mouse click); its new value."""
    box = browser.evaluate(f"document.getElementById('knob-{name}').getBoundingClientRect().toJSON()")
    browser.click(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)
    return _slider_value(browser, name)


def _page_knob(browser: Chromium, name: str) -> object:
    """The knob value the server last reported to the page."""
    return browser.evaluate(f"JSON.parse(document.body.dataset.knobs || '{{}}').values?.{name} ?? null")


def test_a_slider_steers_the_next_variation_and_a_cc_moves_the_slider(
        live: Callable[..., LiveServe], browser: Chromium) -> None:
    run = live(UiOptions(web=True, web_port=0))
    _open_page(browser, run)

    first = _click_slider(browser, "note_density", 0.2)
    wait_for(lambda: _page_knob(browser, "note_density") == first, what="the server to take the slider value")
    run.play_bar()
    wait_for(lambda: len(run.engine.calls) >= 1, what="the first variation")
    assert run.engine.calls[0]["knobs"]["note_density"] == first

    second = _click_slider(browser, "note_density", 0.85)
    assert second != first
    wait_for(lambda: _page_knob(browser, "note_density") == second, what="the second slider value")
    run.play_bar()
    wait_for(lambda: len(run.engine.calls) >= 2, what="the second variation")
    assert run.engine.calls[-1]["knobs"]["note_density"] == second
    assert run.engine.calls[-1]["knobs"]["pitch_range"] is None  # a knob nobody moved stays the bar's own

    run.cc(RANGE_CC, 17)  # the DAW turns the mapped CC: the page's slider follows
    browser.wait_for("document.getElementById('knob-pitch_range').value === '17'", "the slider to follow the CC")
    run.cc(DENSITY_CC, 3)
    browser.wait_for("document.getElementById('knob-note_density').value === '3'", "the density slider")
    assert browser.evaluate("document.getElementById('val-pitch_range').textContent") == "17"


def test_a_wrong_token_or_a_foreign_origin_is_refused(
        live: Callable[..., LiveServe], browser: Chromium, tmp_path: Path) -> None:
    run = live(UiOptions(web=True, web_port=0))
    right = run.url
    wrong = right.split("token=")[0] + "token=not-the-token"
    browser.open(wrong)
    assert "wrong or missing token" in browser.evaluate("document.body.innerText")

    # Another web site open in the same browser knows the right URL and still cannot connect.
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        browser.open(f"http://127.0.0.1:{other.server_address[1]}/index.html")
        socket_url = right.replace("http://", "ws://").replace("/?token=", "/ws?token=")
        outcome = browser.evaluate(f"""new Promise((resolve) => {{
            const ws = new WebSocket({json.dumps(socket_url)});
            ws.onopen = () => {{ resolve('open'); ws.close(); }};
            ws.onclose = () => resolve('refused');
        }})""")
        assert outcome == "refused"
    finally:
        other.shutdown()
        other.server_close()
    # The same socket from the page's own origin opens (the page shows "live").
    _open_page(browser, run)


def test_screenshot_while_a_phrase_plays(live: Callable[..., LiveServe], browser: Chromium, tmp_path: Path) -> None:
    from arvae_midi.engine.engine import Engine

    run = live(UiOptions(web=True, web_port=0), engine=Engine.load(None, threads=1))
    _open_page(browser, run)
    run.cc(DENSITY_CC, 100)
    run.cc(RANGE_CC, 90)
    browser.wait_for("document.getElementById('knob-note_density').value === '100'", "the knobs")
    run.play_bar((60, 62, 64, 67), (67, 65, 64, 62))
    browser.wait_for("Number(document.body.dataset.roll) >= 2", "the variation of the second bar")
    path = Path(os.environ.get("ARVAE_UI_SCREENSHOT", tmp_path / "ui.png"))
    png = browser.screenshot(path)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert browser.evaluate("document.getElementById('target-note_density').textContent") not in ("-", "own")
