"""The one-line status display and the JSON-lines event log.

The status line shows tempo and its source, bar number, knob values, the input and output
attributes of the last bar, inference time, deadline margin, the miss / late / error counts, the
input events dropped, whether JACK and the bridge's threads run with realtime scheduling, and
what is missing (an unconnected port; no MIDI clock or note yet).
On a terminal it is a rich ``Live`` line refreshed a few times a second from the main thread;
elsewhere (a pipe, a log file) one plain line is printed per bar. ``--log FILE`` writes every
bridge event as one JSON object per line from a writer thread, so the bridge thread only
appends to a queue.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from arvae_midi.core.attributes import ATTRIBUTE_SHORT
from arvae_midi.errors import ConfigError
from arvae_midi.midi_bridge.config import BridgeStatus
from arvae_midi.midi_bridge.knobs import KnobSnapshot

#: Short names of the attributes on the status line.
SHORT = ATTRIBUTE_SHORT


def _attrs(values: Mapping[str, float] | None) -> str:
    if not values:
        return "-"
    return " ".join(f"{SHORT.get(k, k[:3])} {v:+.2f}" if k == "contour" else f"{SHORT.get(k, k[:3])} {v:.2f}"
                    for k, v in values.items())


#: What the status line and the log say while nothing has started the bridge yet.
NO_CLOCK = "waiting for MIDI clock (Start) or a note"


@dataclass(frozen=True)
class Health:
    """What the status line tells about the setup rather than the music."""

    dropped: int = 0  # input events the bridge could not take (a flood beyond its queue)
    thread_realtime: bool = True  # the bridge's threads got SCHED_FIFO
    server_realtime: bool | None = None  # JACK's cycles run with realtime scheduling (None: not JACK)
    notes: tuple[str, ...] = ()  # what is missing, e.g. "nothing plays into 'arvae-midi:in'"


def _health(health: Health, status: BridgeStatus) -> list[str]:
    rt = "rt" if health.thread_realtime else "no-rt"
    if health.server_realtime is not None:
        rt += " jack " + ("rt" if health.server_realtime else "no-rt")
    parts = [f"drop {health.dropped} {rt}"]
    parts += health.notes
    if status.state == "waiting" and status.bar < 0 and NO_CLOCK not in health.notes:
        parts.append(NO_CLOCK)
    return parts


def format_status(status: BridgeStatus, knobs: KnobSnapshot, health: Health | None = None) -> str:
    """The status line as plain text."""
    knob_text = " ".join(f"{SHORT.get(k, k[:3])} {'-' if v is None else v}" for k, v in knobs.values.items())
    freeze = " FROZEN" if knobs.freeze else ""
    inference = "-" if status.inference_ms is None else f"{status.inference_ms:.1f} ms"
    margin = "" if status.margin is None else f" ready {100 * status.margin:.1f}% early"
    bar = "-" if status.bar < 0 else str(status.bar)
    parts = [
        f"{status.tempo:6.1f} bpm {status.source}",
        f"{status.state} bar {bar} {status.mode}",
        f"knobs {knob_text} amt {knobs.amount:.2f}{freeze}",
        f"in {_attrs(status.in_attributes)}",
        f"out {_attrs(status.out_attributes)}",
        f"inference {inference}{margin}",
        f"miss {status.misses} late {status.late} err {status.errors}",
    ]
    if health is not None:
        parts += _health(health, status)
    if status.knob_targets:  # each set knob's target next to what the played bar achieved
        out = status.out_attributes or {}
        parts.insert(3, "target→got " + " ".join(
            f"{SHORT.get(k, k[:3])} {t:.2f}→{'-' if out.get(k) is None else format(out[k], '.2f')}"
            for k, t in status.knob_targets.items()))
    if status.message:
        parts.append(status.message)
    return " | ".join(parts)


class StatusDisplay:
    """Shows the status line: live on a terminal, one line per bar otherwise, nothing if quiet."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console()
        self._live: Live | None = None
        self._last_bar: int | None = None
        self._last_text = ""

    def __enter__(self) -> StatusDisplay:
        if not self.quiet and self.console.is_terminal:
            self._live = Live(Text(""), console=self.console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def update(self, status: BridgeStatus, knobs: KnobSnapshot, health: Health | None = None) -> None:
        """Show the latest figures."""
        if self.quiet:
            return
        text = format_status(status, knobs, health)
        if self._live is not None:
            self._live.update(Text(text, no_wrap=True, overflow="ellipsis"))
        elif status.bar != self._last_bar or (status.state != "playing" and text != self._last_text):
            self.console.print(text, soft_wrap=True, highlight=False)
            self._last_bar, self._last_text = status.bar, text

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonLog:
    """Writes events as JSON lines to ``path`` from a writer thread; :meth:`write` never blocks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: IO[str] = self.path.open("w", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot write the log file {self.path}: {e}") from e
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="arvae-log", daemon=True)
        self._thread.start()

    def write(self, event: dict[str, Any]) -> None:
        """Queue one event (called from the bridge thread)."""
        self._queue.put(event)

    def _drain(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                break
            self._file.write(json.dumps({k: _jsonable(v) for k, v in event.items()}) + "\n")
            if self._queue.empty():
                self._file.flush()
        self._file.close()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued and close the file, waiting at most ``timeout`` s."""
        self._queue.put(None)
        self._thread.join(timeout)
