"""Encoder variants (``model.encoder``) and the CPU speed options: build, train, bit-reproducibility."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arvae_midi.core.config import from_dict, to_dict
from arvae_midi.errors import ConfigError
from arvae_midi.train.build import build_model
from arvae_midi.train.models import HierarchicalVAE, ModelConfig
from arvae_midi.train.recipe import TrainConfig, load_recipe
from arvae_midi.train.trainer import train
from tests.synthetic import write_synthetic_npz

ENCODERS = ("conv", "mlp")


@pytest.fixture(scope="module")
def measure_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "measure.npz", "measure", n=240, seed=0)


def fast(data: Path, encoder: str, **changes: object) -> TrainConfig:
    """The tiny recipe with an encoder variant, bf16 autocast and dropout (masks must reproduce)."""
    cfg = load_recipe("tiny").replace(data=str(data), cpu_amp=True, **changes)
    model = replace(cfg.model, encoder=encoder, enc_layers=2, enc_dropout=0.2, dec_layers=2, dec_dropout=0.2)
    return cfg.replace(model=model)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_shapes_and_gradients(encoder: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=encoder, embed_dim=4, enc_hidden=8, head_hidden=8, latent_dim=6, dec_hidden=8)
    model = build_model(cfg)
    assert isinstance(model, HierarchicalVAE) and not hasattr(model, "enc_rnn")
    tokens = torch.randint(0, cfg.vocab_size, (5, 24))
    out = model(tokens, teacher_forcing=True)
    assert out.mu.shape == out.logvar.shape == (5, 6) and out.logits.shape == (5, 24, cfg.vocab_size)
    out.logits.sum().backward()
    enc = model.token_encoder
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    # a changed token changes the posterior: every position reaches the summary
    for pos in (0, 23):
        other = tokens.clone()
        other[:, pos] = (other[:, pos] + 1) % cfg.vocab_size
        with torch.no_grad():
            assert not torch.allclose(model.eval().encode(other)[0], model.encode(tokens)[0])


def test_encoder_option_is_validated_and_defaults_to_the_paper() -> None:
    assert ModelConfig().encoder == "bigru"
    assert hasattr(build_model(ModelConfig(enc_hidden=8, dec_hidden=8)), "enc_rnn")
    with pytest.raises(ConfigError, match="valid: bigru, conv, mlp"):
        ModelConfig(encoder="lstm")
    with pytest.raises(ConfigError, match="needs arch"):
        ModelConfig(arch="cnn", encoder="conv", num_beats=2, ticks_per_beat=8)
    # older configs (no encoder key) load as the bi-GRU; the key round-trips
    old = to_dict(ModelConfig())
    del old["encoder"]
    assert from_dict(ModelConfig, old).encoder == "bigru"
    assert from_dict(ModelConfig, to_dict(ModelConfig(encoder="conv"))).encoder == "conv"
    assert load_recipe("folk-arvae").model.encoder == "bigru" and not load_recipe("folk-arvae").cpu_amp


@pytest.mark.parametrize("encoder", ENCODERS)
def test_speed_options_train_bit_reproducibly(encoder: str, measure_npz: Path, tmp_path: Path) -> None:
    cfg = fast(measure_npz, encoder, epochs=2, max_train_batches=3, max_val_batches=1)
    a = train(cfg, tmp_path / "a")
    train(cfg.replace(epochs=1), tmp_path / "b")
    b = train(cfg, tmp_path / "b", resume=True)
    assert a.step == b.step == 6 and a.last["train_loss"] == b.last["train_loss"]
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.startswith("token_encoder.") for k in wa)
    # training moved the weights away from their initialisation
    torch.manual_seed(cfg.seed)
    init = build_model(replace(cfg.model, vocab_size=32)).state_dict()
    assert any(not torch.equal(init[k], wa[k]) for k in wa)


def test_cpu_amp_runs_the_model_in_bfloat16(measure_npz: Path, tmp_path: Path) -> None:
    from arvae_midi.train import trainer
    from arvae_midi.train.models import VAEOutput

    seen: list[torch.dtype] = []
    cfg = fast(measure_npz, "conv", max_train_batches=1, max_val_batches=1)
    original = trainer._Forward.forward

    def spy(self: trainer._Forward, tokens: torch.Tensor, teacher_forcing: bool) -> VAEOutput:
        out = original(self, tokens, teacher_forcing)
        seen.append(out.logits.dtype)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer._Forward, "forward", spy)
        train(cfg, tmp_path / "amp")
        train(cfg.replace(cpu_amp=False), tmp_path / "fp32")
    assert seen[0] == torch.bfloat16 and seen[-1] == torch.float32
