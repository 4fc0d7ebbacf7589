"""Shared, torch-free building blocks: tokens, attributes, MIDI files, config loading."""
