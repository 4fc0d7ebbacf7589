"""Realtime MIDI bridge behind ``arvae-midi serve`` and ``arvae-midi ports``; never imports torch.

A tour, from the wire inwards:

* :mod:`~arvae_midi.midi_bridge.ports`: python-rtmidi ports (virtual pair or existing ports by
  name), backend probing and one-line :class:`~arvae_midi.errors.BackendError` messages;
  :mod:`~arvae_midi.midi_bridge.rtmidi_io`: the rtmidi ports themselves, drained by our own
  thread so that no Python runs on the backend's (JACK's) thread;
  :mod:`~arvae_midi.midi_bridge.jack`: what is asked of libjack directly (server loss, cycles,
  connections, realtime mode, its stderr); :mod:`~arvae_midi.midi_bridge.sched`: SCHED_FIFO.
* :mod:`~arvae_midi.midi_bridge.messages`: tolerant byte decoding (running status, SysEx,
  garbage) and the note/All-Notes-Off messages the bridge sends.
* :mod:`~arvae_midi.midi_bridge.clock`: the injectable clock and the transport (MIDI clock
  following with a delay-locked loop, or the internal tempo).
* :mod:`~arvae_midi.midi_bridge.capture`: input notes -> one 24-token bar.
* :mod:`~arvae_midi.midi_bridge.knobs` and :mod:`~arvae_midi.midi_bridge.learn`: the CC map
  and the ``--learn`` flow.
* :mod:`~arvae_midi.midi_bridge.scheduler`: output note tracking (every note_on gets its
  note_off) and the position-keyed event queue.
* :mod:`~arvae_midi.midi_bridge.bridge`: :class:`~arvae_midi.midi_bridge.bridge.BridgeCore`,
  the single-threaded state machine (bar cycle, deadline, modes, safety);
  :mod:`~arvae_midi.midi_bridge.config` its options and engine interface.
* :mod:`~arvae_midi.midi_bridge.runtime`: the threads around the core;
  :mod:`~arvae_midi.midi_bridge.status`: status line and JSON-lines log;
  :mod:`~arvae_midi.midi_bridge.serve`: ``serve`` as one library call.
"""
