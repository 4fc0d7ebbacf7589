"""The onnxruntime engine: loading and validation, encode/decode, knobs, vary; never torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import HOLD_ID, REST_ID, Vocabulary
from arvae_midi.engine import engine as engine_module
from arvae_midi.engine.engine import Engine
from arvae_midi.engine.metadata import METADATA_KEY
from arvae_midi.errors import ConfigError, ModelFileError


def test_engine_never_imports_torch(tiny_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "import arvae_midi.engine.engine as e\n"
        "assert 'torch' not in sys.modules, 'import pulled in torch'\n"
        f"eng = e.Engine.load({str(tiny_path)!r}, device='cpu')\n"
        "eng.vary(np.full(24, 1), {}, amount=0.5, n=2)\n"
        "assert 'torch' not in sys.modules, 'running pulled in torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_load_reports_provider_and_metadata(tiny_engine: Engine) -> None:
    assert tiny_engine.provider == "CPUExecutionProvider"
    meta = tiny_engine.meta
    assert meta.vocab == Vocabulary() and meta.grid.ticks_per_bar == 24
    assert meta.attributes == list(ATTRIBUTE_NAMES)
    assert meta.attribute_dims == {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
    assert meta.free_dims == list(range(4, meta.latent_dim))
    assert meta.name == meta.recipe["name"]


def test_encode_decode_shapes_and_batches(tiny_engine: Engine, heldout_bars: np.ndarray) -> None:
    mu, logvar = tiny_engine.encode(heldout_bars[:5])
    assert mu.shape == logvar.shape == (5, tiny_engine.meta.latent_dim) and mu.dtype == np.float32
    out = tiny_engine.decode(mu)
    assert out.shape == (5, 24) and out.dtype == np.int64
    assert out.min() >= 0 and out.max() < len(tiny_engine.meta.vocab)
    # Rows are independent: batch 1 gives the same as the same row inside a batch.
    np.testing.assert_allclose(tiny_engine.encode(heldout_bars[2:3])[0], mu[2:3], atol=1e-5)
    np.testing.assert_array_equal(tiny_engine.decode(mu[2:3]), out[2:3])
    with pytest.raises(ValueError, match="shape"):
        tiny_engine.encode(np.zeros((2, 16), np.int64))
    with pytest.raises(ValueError, match="token ids"):
        tiny_engine.encode(np.full((1, 24), 99))
    with pytest.raises(ValueError, match="shape"):
        tiny_engine.decode(np.zeros((1, 3), np.float32))


def test_pitch_mask_is_respected(tiny_engine: Engine, heldout_bars: np.ndarray) -> None:
    vocab = tiny_engine.meta.vocab
    mu, _ = tiny_engine.encode(heldout_bars[:50])
    allowed = np.zeros(len(vocab), bool)
    allowed[[HOLD_ID, REST_ID]] = True
    c_major = [p for p in range(vocab.low, vocab.high + 1) if p % 12 in (0, 2, 4, 5, 7, 9, 11)]
    allowed[[vocab.pitch_id(p) for p in c_major]] = True
    out = tiny_engine.decode(mu, allowed)  # (V,) broadcast over the batch
    assert np.isin(out, np.flatnonzero(allowed)).all()
    rest_only = np.zeros((50, len(vocab)), bool)
    rest_only[:, [HOLD_ID, REST_ID]] = True
    assert np.isin(tiny_engine.decode(mu, rest_only), [HOLD_ID, REST_ID]).all()
    with pytest.raises(ValueError, match="pitch_mask"):
        tiny_engine.decode(mu, np.ones((3, len(vocab)), bool))


def test_vary_key_lock(tiny_engine: Engine, heldout_bars: np.ndarray) -> None:
    from arvae_midi.core.scales import allowed_pitch_classes, token_mask

    vocab = tiny_engine.meta.vocab
    for bar in heldout_bars[:20]:
        allowed = token_mask(allowed_pitch_classes(bar[None], vocab), vocab)
        out = tiny_engine.vary(bar, {"note_density": 127}, amount=1.0, seed=3, n=4, key_lock=True)
        assert allowed[out].all()
        np.testing.assert_array_equal(
            out, tiny_engine.vary(bar, {"note_density": 127}, amount=1.0, seed=3, n=4, pitch_mask=allowed)
        )
    with pytest.raises(ConfigError, match="not both"):
        tiny_engine.vary(heldout_bars[0], {}, pitch_mask=allowed, key_lock=True)


def test_vary_reproducible_per_seed(tiny_engine: Engine, heldout_bars: np.ndarray) -> None:
    bar = heldout_bars[0]
    a = tiny_engine.vary(bar, {"note_density": 90}, amount=0.8, seed=7, n=6)
    b = tiny_engine.vary(bar, {"note_density": 90}, amount=0.8, seed=7, n=6)
    c = tiny_engine.vary(bar, {"note_density": 90}, amount=0.8, seed=8, n=6)
    assert a.shape == (6, 24) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({row.tobytes() for row in a}) > 1  # noise makes the n variations differ


def test_vary_without_knobs_or_noise_is_the_reconstruction(tiny_engine: Engine, heldout_bars: np.ndarray) -> None:
    bar = heldout_bars[3]
    recon = tiny_engine.decode(tiny_engine.encode(bar[None])[0])
    out = tiny_engine.vary(bar, {"note_density": None}, amount=0.0, seed=None, n=3)
    np.testing.assert_array_equal(out, np.repeat(recon, 3, axis=0))


def test_knob_mapping(tiny_engine: Engine) -> None:
    for name in ATTRIBUTE_NAMES:
        latents = [tiny_engine.knob_to_latent(name, k) for k in range(128)]
        diffs = np.diff(latents)
        assert np.all(diffs >= 0) or np.all(diffs <= 0)  # monotone in the knob
        assert tiny_engine.latent_to_knob(name, latents[100]) == 100
        assert tiny_engine.knob_to_attribute(name, 0) <= tiny_engine.knob_to_attribute(name, 127)
    with pytest.raises(ConfigError, match="rhythmic_complexity, note_density, pitch_range, contour"):
        tiny_engine.knob_to_latent("loudness", 3)
    for bad in (-1, 128, 2.5, True):
        with pytest.raises(ConfigError, match="0..127"):
            tiny_engine.knob_to_latent("contour", bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="loudness"):
        tiny_engine.vary(np.full(24, REST_ID), {"loudness": 3})
    with pytest.raises(ConfigError, match="amount"):
        tiny_engine.vary(np.full(24, REST_ID), {}, amount=1.5)
    with pytest.raises(ConfigError, match="positive"):
        tiny_engine.vary(np.full(24, REST_ID), {}, n=0)


def test_attributes_helper(tiny_engine: Engine, heldout_bars: np.ndarray) -> None:
    attrs = tiny_engine.attributes(heldout_bars[:4])
    assert attrs.shape == (4, 4)
    assert tiny_engine.attributes(heldout_bars[0]).shape == (1, 4)


# -- bad model files ---------------------------------------------------------------------------


def _metadata(path: Path) -> str:
    return next(p.value for p in onnx.load(str(path)).metadata_props if p.key == METADATA_KEY)


def _save_with_metadata(model: onnx.ModelProto, path: Path, text: str | None) -> Path:
    del model.metadata_props[:]
    if text is not None:
        helper.set_model_props(model, {METADATA_KEY: text})
    onnx.save(model, str(path))
    return path


def _identity_model(inputs: dict[str, tuple[int, list[str | int]]], outputs: dict[str, str]) -> onnx.ModelProto:
    """A graph with the given inputs whose outputs copy some of them (to test I/O checks)."""
    ins = [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()]
    nodes = [helper.make_node("Identity", [src], [out]) for out, src in outputs.items()]
    outs = [helper.make_tensor_value_info(out, inputs[src][0], inputs[src][1]) for out, src in outputs.items()]
    return helper.make_model(helper.make_graph(nodes, "fake", ins, outs), opset_imports=[helper.make_opsetid("", 17)])


def test_bad_model_files(tmp_path: Path, tiny_path: Path) -> None:
    text = _metadata(tiny_path)
    i64, f32 = int(TensorProto.INT64), int(TensorProto.FLOAT)
    good_io: dict[str, tuple[int, list[str | int]]] = {
        "tokens": (i64, ["B", 24]), "z": (f32, ["B", 8]), "pitch_mask": (f32, ["B", 32])
    }
    good_out = {"mu": "z", "logvar": "z", "out_tokens": "tokens"}
    cases: dict[str, tuple[Path, str]] = {}

    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(2000))
    cases["random bytes"] = (tmp_path / "noise.onnx", "not a readable ONNX model")
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases["empty file"] = (tmp_path / "empty.onnx", "not a readable ONNX model")
    cases["missing"] = (tmp_path / "nothing.onnx", "no such model file")
    cases["no metadata"] = (_save_with_metadata(onnx.load(str(tiny_path)), tmp_path / "nometa.onnx", None),
                            "no 'arvae_midi' metadata")  # fmt: skip
    doc = json.loads(text)
    doc["format_version"] = 2
    cases["unknown version"] = (_save_with_metadata(onnx.load(str(tiny_path)), tmp_path / "v2.onnx", json.dumps(doc)),
                                "format version 2 is not supported")  # fmt: skip
    cases["broken JSON"] = (_save_with_metadata(onnx.load(str(tiny_path)), tmp_path / "j.onnx", text[:-5]),
                            "not valid JSON")  # fmt: skip
    renamed: dict[str, tuple[int, list[str | int]]] = {"ids" if k == "tokens" else k: v for k, v in good_io.items()}
    cases["wrong input names"] = (
        _save_with_metadata(_identity_model(renamed, {"mu": "z", "logvar": "z", "out_tokens": "ids"}),
                            tmp_path / "names.onnx", text),
        "graph inputs are ids, z, pitch_mask; expected tokens tensor\\(int64\\) \\(batch, 24\\)",
    )  # fmt: skip
    cases["wrong latent size"] = (
        _save_with_metadata(_identity_model({**good_io, "z": (f32, ["B", 7])}, good_out), tmp_path / "z7.onnx", text),
        "graph input z is tensor\\(float\\) \\['B', 7\\]; expected",
    )
    cases["fixed batch"] = (
        _save_with_metadata(_identity_model({**good_io, "tokens": (i64, [1, 24])}, good_out),
                            tmp_path / "b1.onnx", text),
        "graph input tokens is tensor\\(int64\\) \\[1, 24\\]",
    )  # fmt: skip
    cases["wrong dtype"] = (
        _save_with_metadata(_identity_model({**good_io, "tokens": (int(TensorProto.INT32), ["B", 24])}, good_out),
                            tmp_path / "i32.onnx", text),
        "graph input tokens is tensor\\(int32\\)",
    )  # fmt: skip
    cases["missing output"] = (
        _save_with_metadata(_identity_model(good_io, {"mu": "z", "out_tokens": "tokens"}), tmp_path / "o.onnx", text),
        "graph outputs are mu, out_tokens; expected mu",
    )
    for name, (path, message) in cases.items():
        with pytest.raises(ModelFileError, match=message):
            Engine.load(path, device="cpu")
        assert name  # the case label shows in the traceback on failure


def test_default_model_and_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_path: Path) -> None:
    monkeypatch.setattr(engine_module, "DEFAULT_MODEL", tmp_path / "default.onnx")
    with pytest.raises(ModelFileError, match="no default model .*--model"):
        Engine.load()
    (tmp_path / "default.onnx").write_bytes(tiny_path.read_bytes())
    assert Engine.load(device="cpu").path == tmp_path / "default.onnx"
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        Engine.load(tiny_path, device="tpu")
    with pytest.raises(ConfigError, match="threads"):
        Engine.load(tiny_path, threads=-1)
    auto = Engine.load(tiny_path, device="auto", threads=0)
    assert auto.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")


def test_cuda_request_without_gpu_falls_back(monkeypatch: pytest.MonkeyPatch, tiny_path: Path) -> None:
    monkeypatch.setattr(engine_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(RuntimeWarning, match="CUDA requested"):
        engine = Engine.load(tiny_path, device="cuda")
    assert engine.provider == "CPUExecutionProvider" and engine.device_note is not None


@pytest.mark.gpu
def test_cuda_provider(tiny_path: Path, heldout_bars: np.ndarray) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with a CUDA device is not available")
    gpu = Engine.load(tiny_path, device="cuda")
    cpu = Engine.load(tiny_path, device="cpu")
    assert gpu.provider == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.encode(heldout_bars)[0], cpu.encode(heldout_bars)[0], atol=1e-4)
