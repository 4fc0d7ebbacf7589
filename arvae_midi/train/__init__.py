"""Torch side: datasets, models, losses, trainer, metrics, plots (needs the ``train`` extra)."""
