"""Typed exceptions raised by the library.

The CLI catches :class:`ArvaeError` at its edge, prints the message on one line and exits with
status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ArvaeError(Exception):
    """Base class of every error the library raises on purpose."""


class MidiFileError(ArvaeError):
    """A MIDI file cannot be read (not MIDI, truncated, empty) or written."""


class UnsupportedMeterError(MidiFileError):
    """A MIDI file is not in 4/4."""


class OffGridError(ArvaeError):
    """A note or rest does not fall on the 24-tick measure grid."""


class ConfigError(ArvaeError):
    """A preset, CC map or config value is invalid (unknown key, wrong type, out of range)."""


class DatasetError(ArvaeError):
    """A dataset file is missing, malformed or does not match what was asked for."""


class ModelFileError(ArvaeError):
    """An ONNX model file or checkpoint is missing, malformed or of an unknown format version."""


class BackendError(ArvaeError):
    """No usable MIDI backend or port (no ALSA sequencer, no JACK server, unknown port)."""
