"""The optional control surface of ``arvae-midi serve``: a local web page and OSC (extra ``[ui]``).

* :mod:`~arvae_midi.ui.protocol`: the one command language (web page JSON and OSC addresses
  both become :class:`~arvae_midi.ui.protocol.Command`), and the bar figures both sides show.
* :mod:`~arvae_midi.ui.surface`: :class:`~arvae_midi.ui.surface.ControlSurface`, one asyncio
  event loop on its own thread that takes the bridge's log events, applies commands to the knob
  state and feeds the page and the OSC peers.
* :mod:`~arvae_midi.ui.web`: HTTP for the page and the WebSocket, with the token and Origin checks.
* :mod:`~arvae_midi.ui.osc`: OSC input (bounded reads per tick) and per-bar OSC output.
* ``static/``: the page itself (HTML, CSS and one small script; no build step).

The bridge thread's only cost is one ``deque.append`` per log event (see ``surface.py``).
"""

from __future__ import annotations

import importlib.util

from arvae_midi.errors import ConfigError

#: Modules the ``[ui]`` extra installs, with the pip distribution that provides each.
UI_MODULES = {"websockets": "websockets", "pythonosc": "python-osc"}


def require_ui(feature: str) -> None:
    """ConfigError with one line saying what to install when the ``[ui]`` extra is missing."""
    missing = [dist for module, dist in UI_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(
            f"{feature} needs the [ui] extra: pip install 'arvae-midi[ui]' (missing: {', '.join(missing)})"
        )
