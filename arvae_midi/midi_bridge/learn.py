"""``serve --learn``: ask for each knob in turn, take the controller that moves, write the map.

For every attribute knob of the model, then the amount knob and the freeze switch, the user is
asked to move (or press) the control. Changes that arrived before the prompt are discarded;
the first control change after it on a controller number not taken yet is assigned (the rest
of a knob's burst is on a taken number and ignored). Controllers 120..127 (channel mode) are
never taken. A control that does not move within the timeout keeps its current assignment.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence

from arvae_midi.midi_bridge.clock import Clock, MonotonicClock
from arvae_midi.midi_bridge.knobs import MAX_CC, CCMap
from arvae_midi.midi_bridge.messages import MidiDecoder


def learn_cc_map(
    events: queue.Queue[tuple[float, Sequence[int]]],
    attributes: Sequence[str],
    ask: Callable[[str], None],
    start: CCMap | None = None,
    timeout_s: float = 15.0,
    clock: Clock | None = None,
) -> CCMap:
    """Build a CC map from the user's moves; ``events`` holds (time, raw bytes) from the input.

    ``ask`` shows each prompt and each result; event times and the timeout are on ``clock``.
    Returns a new map (``start`` gives the assignments kept for controls not moved in time).
    """
    clock = clock or MonotonicClock()
    base = start or CCMap()
    targets = [*(f"attributes.{a}" for a in attributes), "amount", "freeze"]
    current = {f"attributes.{k}": v for k, v in base.attributes.items()}
    current |= {"amount": base.amount, "freeze": base.freeze}
    assigned: dict[str, int] = {}
    decoder = MidiDecoder()
    channel = base.channel
    for target in targets:
        label = target.removeprefix("attributes.")
        verb = "press" if target == "freeze" else "move"
        while not events.empty():  # moves made before the prompt do not count
            events.get_nowait()
        ask(f"{verb} the control for {label} (waiting {timeout_s:.0f} s) ...")
        cc = _wait_for_new_cc(events, decoder, set(assigned.values()), timeout_s, clock)
        if cc is None:
            keep = current.get(target)
            if keep is None or keep in assigned.values():
                ask(f"  {label}: nothing moved, left unassigned")
                continue
            assigned[target] = keep
            ask(f"  {label}: nothing moved, keeps CC {keep}")
            continue
        assigned[target] = cc
        ask(f"  {label} -> CC {cc}")
    attrs = {k.removeprefix("attributes."): v for k, v in assigned.items() if k.startswith("attributes.")}
    amount = assigned.get("amount", _free_cc(set(assigned.values())))
    freeze = assigned.get("freeze", _free_cc(set(assigned.values()) | {amount}))
    return CCMap(attributes=attrs, amount=amount, freeze=freeze, channel=channel)


def _wait_for_new_cc(
    events: queue.Queue[tuple[float, Sequence[int]]],
    decoder: MidiDecoder,
    taken: set[int],
    timeout_s: float,
    clock: Clock,
) -> int | None:
    """First controller number of a control change not in ``taken``, or None after the timeout."""
    deadline = clock.now() + timeout_s
    while True:
        try:
            _, data = events.get(timeout=max(deadline - clock.now(), 0.0))
        except queue.Empty:
            return None
        for msg in decoder.feed(data):
            if msg.type == "control_change" and msg.control <= MAX_CC and msg.control not in taken:
                return int(msg.control)


def _free_cc(taken: set[int]) -> int:
    """Lowest undefined controller (20..31, then 102..119) not in ``taken``."""
    for cc in [*range(20, 32), *range(102, MAX_CC + 1)]:
        if cc not in taken:
            return cc
    raise ValueError("no free controller number left")
