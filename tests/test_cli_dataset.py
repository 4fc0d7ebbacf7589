"""``arvae-midi dataset`` end to end on a few small corpus files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("music21")

from arvae_midi.cli import app  # noqa: E402
from arvae_midi.core.attributes import compute_attributes  # noqa: E402
from arvae_midi.core.tokens import Vocabulary  # noqa: E402
from arvae_midi.errors import DatasetError  # noqa: E402

runner = CliRunner()


FOLK_ARGS = ["--only", "ryansMammoth/A[cd]*", "--jobs", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One parse cache for the module: files parsed by one test are cached for the next."""
    directory = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARVAE_MIDI_CACHE", str(directory))
        yield directory


@pytest.fixture(scope="module")
def folk_build(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``dataset folk`` on four small files with an empty cache: (output file, printed output)."""
    out = tmp_path_factory.mktemp("folk") / "folk.npz"
    result = runner.invoke(app, ["dataset", "folk", "--out", str(out), *FOLK_ARGS])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_folk_end_to_end(tmp_path: Path, folk_build: tuple[Path, str]) -> None:
    out, output = folk_build
    assert "tunes" in output and "dropped" in output and "meter 2/4" in output
    with np.load(out, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    n = len(arrays["tokens"])
    assert arrays["tokens"].shape == (n, 24) and n > 0
    assert arrays["attributes"].shape == (n, 4) and arrays["attributes"].dtype == np.float32
    assert arrays["tune"].shape == arrays["split"].shape == arrays["transpose"].shape == (n,)
    vocab = Vocabulary.from_tokens(arrays["vocab"].tolist())
    assert vocab == Vocabulary(55, 84)
    assert np.allclose(arrays["attributes"], compute_attributes(arrays["tokens"].astype(np.int64), vocab))
    for t in np.unique(arrays["tune"]):
        assert len(np.unique(arrays["split"][arrays["tune"] == t])) == 1
    info = json.loads(str(arrays["info"]))
    assert info["summary"]["rows"] == n and info["summary"]["cached_files"] == 0

    # Second build: every file from the cache, same arrays.
    again = tmp_path / "again.npz"
    result = runner.invoke(app, ["dataset", "folk", "--out", str(again), *FOLK_ARGS, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["cached_files"] == summary["files"] > 0
    with np.load(again, allow_pickle=False) as z:
        assert np.array_equal(z["tokens"], arrays["tokens"]) and np.array_equal(z["split"], arrays["split"])


def test_folk_file_loads_with_the_training_loader(folk_build: tuple[Path, str]) -> None:
    pytest.importorskip("torch")
    from arvae_midi.train.data import load_npz

    data = load_npz(folk_build[0])
    assert data.kind == "measure" and data.seq_len == 24 and len(data) > 0


def test_chorales_all_voices(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "ch.npz"
    base = ["dataset", "chorales", "--only", "bach/bwv145-a", "--jobs", "1", "--json"]
    result = runner.invoke(app, [*base, "--out", str(out), "--voices", "all"])
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as z:
        assert z["tune_names"].tolist() == [f"chorales:bach/bwv145-a#{v}" for v in ("soprano", "alto", "tenor", "bass")]
        assert z["tune_voice"].tolist() == [0, 1, 2, 3]
        assert len(set(z["tune_split"].tolist())) == 1  # the voices of a chorale share its split
    soprano = tmp_path / "s.npz"
    result = runner.invoke(app, [*base, "--out", str(soprano)])
    assert result.exit_code == 0, result.output
    with np.load(soprano, allow_pickle=False) as z:
        assert z["tune_names"].tolist() == ["chorales:bach/bwv145-a#soprano"]


def test_folk_chorales_unites_both(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "fc.npz"
    base = ["dataset", "folk-chorales", "--out", str(out), "--jobs", "1", "--voices", "all"]
    result = runner.invoke(app, [*base, "--only", "ryansMammoth/Ac*"])
    # The glob matches folk files but no chorale: an error that says so (exit 1 through main()).
    assert isinstance(result.exception, DatasetError) and "no chorales files match" in str(result.exception)
    result = runner.invoke(app, [*base, "--only", "ryansMammoth/Ac*,bach/bwv145-a"])
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as z:
        names = z["tune_names"].tolist()
        corpus_of = dict(zip(names, z["tune_corpus"].tolist(), strict=True))
    # Folk tunes and the chorale's soprano only (folk-chorales ignores --voices all).
    assert "chorales:bach/bwv145-a#soprano" in names and not any(n.endswith("#alto") for n in names)
    assert {c for n, c in corpus_of.items() if n.startswith("folk:")} == {"folk"}
    assert sum(n.startswith("folk:ryansMammoth/") for n in names) >= 1


def test_dmelodies_calls_the_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arvae_midi.train import dmelodies

    calls: list[Path] = []

    def fake(path: Path, **kwargs: object) -> dict[str, object]:
        calls.append(Path(path))
        return {"melodies": 3, "seconds": 0.5, "path": str(path)}

    monkeypatch.setattr(dmelodies, "save_dmelodies", fake)
    result = runner.invoke(app, ["dataset", "dmelodies", "--out", str(tmp_path / "d.npz")])
    assert result.exit_code == 0, result.output
    assert calls == [tmp_path / "d.npz"] and "3 melodies" in result.output


def test_bad_options() -> None:
    result = runner.invoke(app, ["dataset", "folk", "--out", "x.npz", "--voices", "tenor"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["dataset", "jazz", "--out", "x.npz"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["dataset", "folk", "--out", "x.npz", "--jobs", "0"])
    assert result.exit_code == 2
