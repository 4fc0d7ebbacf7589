"""Realtime MIDI bridge behind ``arvae-midi serve``; never imports torch."""
