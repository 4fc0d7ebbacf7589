"""Training presets: every one loads, builds its model, and carries the papers' numbers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.errors import ConfigError
from arvae_midi.presets import list_presets, preset_path
from arvae_midi.train.build import build_model
from arvae_midi.train.data import DMELODIES_FACTOR_NAMES
from arvae_midi.train.recipe import TrainConfig, load_recipe

EXPECTED = {
    "folk-arvae", "folk-betavae", "chorales-arvae", "chorales-betavae",
    "dmelodies-betavae-rnn", "dmelodies-betavae-cnn", "dmelodies-annealed-rnn", "dmelodies-annealed-cnn",
    "dmelodies-factorvae-rnn", "dmelodies-factorvae-cnn", "dmelodies-arvae-rnn", "default", "tiny",
}  # fmt: skip



def test_all_training_presets_are_listed() -> None:
    assert set(list_presets()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_loads_and_builds_at_tiny_width(name: str) -> None:
    cfg = load_recipe(name)
    assert cfg.name == name
    dmelodies = name.startswith("dmelodies")
    music = {"data/folk.npz", "data/chorales.npz", "data/folk-chorales.npz"}
    assert cfg.data in ({"data/dmelodies.npz"} if dmelodies else music)
    assert cfg.model.seq_len == (16 if dmelodies else 24)
    labels = DMELODIES_FACTOR_NAMES if dmelodies else ATTRIBUTE_NAMES
    assert set(cfg.reg_names) <= set(labels)
    small = replace(cfg.model, vocab_size=52 if dmelodies else 32, embed_dim=3, enc_hidden=8, head_hidden=8,
                    dec_hidden=8, latent_dim=max(len(cfg.reg_names), 2),
                    cnn_channels=(2, 3, 4, 5) if cfg.model.arch == "cnn" else cfg.model.cnn_channels)
    model = build_model(small)
    tokens = torch.randint(0, small.vocab_size, (3, small.seq_len))
    out = model(tokens, teacher_forcing=True)
    assert out.logits.shape == (3, small.seq_len, small.vocab_size)
    assert out.z.shape == (3, small.latent_dim)


def test_music_presets_carry_the_ar_vae_paper_numbers() -> None:
    for name in ("folk-arvae", "chorales-arvae", "folk-betavae", "chorales-betavae"):
        cfg = load_recipe(name)
        assert (cfg.beta, cfg.batch_size, cfg.epochs, cfg.lr, cfg.teacher_forcing) == (0.001, 256, 30, 1e-4, 0.5)
        m = cfg.model
        assert (m.embed_dim, m.enc_hidden, m.enc_layers, m.latent_dim, m.dec_hidden) == (10, 128, 2, 32, 128)
        assert (cfg.warmup_epochs, cfg.ramp_iterations, cfg.kl_threshold) == (0, 0, 0.0)
    arvae = load_recipe("folk-arvae")
    assert (arvae.objective, arvae.gamma, arvae.delta) == ("arvae", 1.0, 10.0)
    assert arvae.reg_names == list(ATTRIBUTE_NAMES)
    assert load_recipe("folk-betavae").reg_names == []


def test_dmelodies_presets_carry_the_benchmark_numbers() -> None:
    for name in EXPECTED:
        if name.startswith("dmelodies"):
            cfg = load_recipe(name)
            assert (cfg.batch_size, cfg.epochs, cfg.lr) == (512, 100, 1e-4)
            assert cfg.model.latent_dim == 32
            if cfg.objective == "factorvae":
                assert (cfg.capacity, cfg.disc_lr, cfg.disc_betas, cfg.warmup_epochs) == (50.0, 1e-4, (0.8, 0.9), 0)
            else:
                assert (cfg.warmup_epochs, cfg.ramp_iterations) == (11, 100_000)
    assert load_recipe("dmelodies-betavae-rnn").kl_threshold == 50.0
    assert load_recipe("dmelodies-annealed-cnn").capacity == 50.0
    assert load_recipe("dmelodies-arvae-rnn").reg_names == list(DMELODIES_FACTOR_NAMES)
    rnn = load_recipe("dmelodies-betavae-rnn").model
    assert (rnn.num_beats, rnn.ticks_per_beat, rnn.enc_hidden, rnn.dec_dropout) == (2, 8, 64, 0.2)


def test_default_preset_is_the_recipe_of_the_shipped_model() -> None:
    """`arvae-midi train --preset default` re-creates the shipped model's recipe, not another one."""
    from arvae_midi.engine.engine import Engine

    shipped = Engine.load(None, device="cpu", threads=1).meta.recipe
    preset = load_recipe("default")
    for key in ("objective", "beta", "gamma", "delta", "regularized", "batch_size", "epochs", "lr",
                "lr_decay_epochs", "lr_decay", "max_train_batches", "teacher_forcing", "seed", "cpu_amp"):
        assert shipped[key] == getattr(preset, key), key
    model = shipped["model"]
    assert all(model[k] == v for k, v in preset.model.__dict__.items() if not isinstance(v, tuple)), model


def test_unknown_key_is_named(tmp_path: Path) -> None:
    text = preset_path("tiny").read_text() + "\nlearning_rate = 0.1\n"
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="unknown key.*learning_rate"):
        load_recipe(path)
    nested = tmp_path / "bad_model.toml"
    nested.write_text(preset_path("tiny").read_text() + "hidden = 3\n")  # lands in [model]
    with pytest.raises(ConfigError, match=r"model: unknown key.*hidden"):
        load_recipe(nested)


def test_invalid_values_and_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'folk'.*folk-arvae"):
        load_recipe("folk")
    with pytest.raises(ConfigError, match="objective 'vae'"):
        TrainConfig(objective="vae")
    with pytest.raises(ConfigError, match="teacher_forcing"):
        TrainConfig(teacher_forcing=1.5)
    path = tmp_path / "wrong_type.toml"
    path.write_text('objective = "arvae"\nepochs = "many"\n')
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        load_recipe(path)
