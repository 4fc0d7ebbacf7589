"""Dataset loading: the npz contract, its error messages, the dMelodies split, the loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.errors import DatasetError
from arvae_midi.train.data import (
    DMELODIES_FACTOR_NAMES,
    TokenDataset,
    dmelodies_split,
    load_npz,
    make_loader,
)
from tests.synthetic import write_synthetic_npz


@pytest.fixture
def measure_npz(tmp_path: Path) -> Path:
    return write_synthetic_npz(tmp_path / "measure.npz", "measure", n=200, seed=1)


def _rewrite(src: Path, dst: Path, drop: tuple[str, ...] = (), replace: dict[str, Any] | None = None) -> Path:
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    arrays.update(replace or {})
    np.savez(dst, **arrays)
    return dst


def test_measure_file_loads_with_its_split_and_attributes(measure_npz: Path) -> None:
    data = load_npz(measure_npz)
    assert data.kind == "measure"
    assert data.tokens.shape == (200, 24) and data.tokens.dtype == np.int64
    assert data.label_names == list(ATTRIBUTE_NAMES)
    assert data.labels.shape == (200, 4) and data.labels.dtype == np.float32
    assert data.vocab[:3] == ["__", "rest", "55"]
    assert [len(data.indices(s)) for s in ("train", "val", "test")] == [140, 40, 20]
    assert data.label_index(["pitch_range", "rhythmic_complexity"]) == [2, 0]


def test_dmelodies_split_is_seeded_70_20_10(tmp_path: Path) -> None:
    path = write_synthetic_npz(tmp_path / "dm.npz", "dmelodies", n=1000, seed=0)
    a, b, c = load_npz(path, split_seed=0), load_npz(path, split_seed=0), load_npz(path, split_seed=1)
    assert a.kind == "dmelodies" and a.tokens.shape == (1000, 16)
    assert a.label_names == list(DMELODIES_FACTOR_NAMES)
    assert np.array_equal(a.split, b.split)
    assert not np.array_equal(a.split, c.split)
    assert np.bincount(a.split, minlength=3).tolist() == [700, 200, 100]
    # Same rows as the reference's np.random.seed(seed) + shuffle of all indices.
    np.random.seed(0)
    order = np.arange(1000)
    np.random.shuffle(order)
    assert np.array_equal(np.flatnonzero(dmelodies_split(1000, 0) == 0), np.sort(order[:700]))


def test_missing_file_and_non_npz(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_npz(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable npz"):
        load_npz(bad)


def test_missing_arrays_are_named(measure_npz: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="lacks array.*split"):
        load_npz(_rewrite(measure_npz, tmp_path / "a.npz", drop=("split",)))
    with pytest.raises(DatasetError, match="needs `attributes`.*`factors`"):
        load_npz(_rewrite(measure_npz, tmp_path / "b.npz", drop=("attributes",)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokens": np.zeros((200, 16), dtype=np.int64)}, r"tokens must have shape \(N, 24\)"),
        ({"tokens": np.full((200, 24), 99, dtype=np.int64)}, r"token ids span 99\.\.99"),
        ({"tokens": np.zeros((200, 24), dtype=np.float32)}, "tokens must be integer"),
        ({"attributes": np.zeros((200, 3), dtype=np.float32)}, r"attributes must have shape \(M, 4\)"),
        ({"split": np.full(200, 5, dtype=np.int8)}, "split values must be 0"),
        ({"split": np.zeros(10, dtype=np.int8)}, "split must be an integer array"),
        ({"vocab": np.array(["rest", "__", "55"])}, "invalid vocab"),
    ],
)
def test_malformed_arrays_say_what_is_wrong(
    measure_npz: Path, tmp_path: Path, change: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(DatasetError, match=message):
        load_npz(_rewrite(measure_npz, tmp_path / "x.npz", replace=change))


def test_unknown_label_lists_the_valid_ones(measure_npz: Path) -> None:
    with pytest.raises(DatasetError, match="no label.*tonic.*has rhythmic_complexity"):
        load_npz(measure_npz).label_index(["tonic"])


def test_loader_batches_and_reproducible_shuffle(measure_npz: Path) -> None:
    ds = TokenDataset(load_npz(measure_npz), "train")
    loader = make_loader(ds, 32, shuffle=True, seed=3, drop_last=True)
    loader.sampler.set_epoch(0)  # type: ignore[attr-defined]
    first = [t for t, _ in loader]
    assert len(first) == 140 // 32
    assert all(t.shape == (32, 24) and t.dtype == torch.int64 for t in first)
    loader.sampler.set_epoch(0)  # type: ignore[attr-defined]
    again = [t for t, _ in loader]
    loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
    other = [t for t, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    tokens, labels = next(iter(loader))
    assert labels.shape == (32, 4) and labels.dtype == torch.float32


def test_distributed_shards_are_disjoint(measure_npz: Path) -> None:
    ds = TokenDataset(load_npz(measure_npz), "train")
    shards = [list(make_loader(ds, 10, shuffle=True, seed=0, world_size=2, rank=r).sampler) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 70
    assert sorted(shards[0] + shards[1]) == list(range(140))
