"""Presets: TOML training recipes, CC maps and the shipped default model."""
