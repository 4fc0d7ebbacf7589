"""Realtime scheduling for the bridge's own threads (Linux ``SCHED_FIFO``)."""

from __future__ import annotations

import os

#: SCHED_FIFO priority asked for the bridge's threads: below JACK's own threads (JACK2 runs its
#: process threads at 70-95 by default), above everything that is not realtime.
REALTIME_PRIORITY = 40

#: How to get realtime scheduling, for the warning ``serve`` prints when it is missing.
REALTIME_HINT = (
    "allow realtime scheduling for your user (e.g. add it to the 'audio' group with "
    "'@audio - rtprio 95' in /etc/security/limits.d/audio.conf, then log in again)"
)


def request_realtime(priority: int = REALTIME_PRIORITY) -> bool:
    """Ask for SCHED_FIFO at ``priority`` on the calling thread (Linux); True when granted.

    Granted where the user may (root, or an ``rtprio`` limit as audio setups configure for
    JACK); refused quietly elsewhere. The bridge's threads only ever sleep until their next
    event, so a realtime priority cannot starve the machine.
    """
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        return False
    try:
        granted = min(priority, os.sched_get_priority_max(os.SCHED_FIFO))
        setter(0, os.SCHED_FIFO, os.sched_param(granted))  # 0: this thread (Linux)
    except (OSError, AttributeError):
        return False
    return True
