"""Folk / chorale corpus parsing, augmentation, splits and the parse cache (tiny inputs only)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("music21")

from arvae_midi.core.attributes import compute_attributes  # noqa: E402
from arvae_midi.core.tokens import HOLD_ID, REST_ID, Vocabulary  # noqa: E402
from arvae_midi.errors import ConfigError, DatasetError  # noqa: E402
from arvae_midi.train import corpus, corpus_cache  # noqa: E402
from arvae_midi.train.corpus import CorpusConfig, DatasetSummary, assemble, augment_line, split_of  # noqa: E402
from arvae_midi.train.corpus_parse import FULL_VOCAB, Line, parse_abc_text, parse_chorale_score  # noqa: E402

H = "__"

TUNES = """X:1
T:Hand worked
M:4/4
L:1/8
K:C
G |: c2 (3cde f4- | f2 z2 g4 | c8 :|

X:2
T:Pickup played again
M:C|
L:1/8
K:D
d | A2 F2 D4 | A2 F2 D4 :|

X:3
T:Waltz
M:3/4
L:1/4
K:G
G A B | c2 d |

X:4
T:Thirty-seconds
M:4/4
L:1/8
K:C
c/4d/4e/4f/4 g7 | c8 |

X:5
T:Two voices
M:4/4
L:1/4
K:C
V:1
c d e f |
V:2
C D E F |

X:6
T:Double stop and rests
M:4/4
L:1/4
K:C
[ce] z z d | c4 |

X:7
T:Free
M:none
L:1/4
K:C
c d e |
"""


def _bars(line: Line) -> list[list[str]]:
    return [FULL_VOCAB.to_strings(bar) for bar in line.tokens.reshape(-1, 24)]


def _bar(*events: tuple[int, str]) -> list[str]:
    """A 24-tick bar of HOLDs with the given (tick, token) onsets."""
    bar = [H] * 24
    for tick, tok in events:
        bar[tick] = tok
    return bar


@pytest.fixture(scope="module")
def parsed() -> corpus.FileResult:
    return parse_abc_text(TUNES, "test.abc")


def _line(parsed: corpus.FileResult, number: int) -> Line:
    (line,) = [ln for ln in parsed.lines if ln.name == f"test.abc#{number}"]
    return line


def test_hand_worked_tune_pickup_triplet_tie_and_repeat(parsed: corpus.FileResult) -> None:
    line = _line(parsed, 1)
    assert line.title == "Hand worked"
    pickup = _bar((0, "rest"), (21, "67"))  # G4 on the last 8th of a padded bar
    # c (1 beat), triplet c d e at beat 1, 1+1/3, 1+2/3 (ticks 6, 8, 10), f tied over the barline.
    bar_a = _bar((0, "72"), (6, "72"), (8, "74"), (10, "76"), (12, "77"))
    bar_b = _bar((6, "rest"), (12, "79"))  # tick 0 HOLD: the tied f continues into this bar
    bar_c = _bar((0, "72"))
    assert _bars(line) == [pickup, bar_a, bar_b, bar_c, bar_a, bar_b, bar_c]  # the repeat is played out
    assert not line.reduced and not line.realigned


def test_repeat_that_replays_the_pickup_is_realigned(parsed: corpus.FileResult) -> None:
    line = _line(parsed, 2)
    pickup = _bar((0, "rest"), (21, "74"))
    bar = _bar((0, "69"), (6, "66"), (12, "62"))
    assert _bars(line) == [pickup, bar, bar, pickup, bar, bar]
    assert line.realigned


def test_chords_reduce_to_the_top_note_and_rests_merge(parsed: corpus.FileResult) -> None:
    line = _line(parsed, 6)
    assert _bars(line) == [_bar((0, "76"), (6, "rest"), (18, "74")), _bar((0, "72"))]
    assert line.reduced


def test_drop_reasons(parsed: corpus.FileResult) -> None:
    reasons = {name: reason for name, _, reason in parsed.dropped}
    assert reasons == {
        "test.abc#3": "meter 3/4",
        "test.abc#4": "off the 24-tick grid",
        "test.abc#5": "more than one voice",
        "test.abc#7": "no meter",
    }
    assert sorted(ln.name for ln in parsed.lines) == ["test.abc#1", "test.abc#2", "test.abc#6"]


def test_chorale_voices_share_the_chorale_as_split_key() -> None:
    from music21 import converter, stream

    score = stream.Score()
    for notes in ("c''4 d'' e'' f''", "g'4 a' b' c''", "e'4 f' g' a'", "c4 d e f"):
        score.insert(0, converter.parse(f"tinyNotation: 4/4 {notes} g1"))
    result = parse_chorale_score(score, "bach/test")
    assert [ln.name for ln in result.lines] == [f"bach/test#{v}" for v in ("soprano", "alto", "tenor", "bass")]
    assert {ln.group for ln in result.lines} == {"bach/test"}
    assert [ln.voice for ln in result.lines] == [0, 1, 2, 3]
    assert FULL_VOCAB.to_strings(result.lines[0].tokens[:24:6]) == ["84", "86", "88", "89"]

    three = stream.Score()
    for _ in range(3):
        three.insert(0, converter.parse("tinyNotation: 4/4 c4 d e f"))
    assert parse_chorale_score(three, "bach/three").dropped == [("bach/three", -1, "3 parts, not 4")]
    waltz = stream.Score()
    for _ in range(4):
        waltz.insert(0, converter.parse("tinyNotation: 3/4 c4 d e"))
    assert parse_chorale_score(waltz, "bach/waltz").dropped == [("bach/waltz", -1, "meter 3/4")]


# ----------------------------------------------------------------------------- augmentation


def _full(pitches_and_holds: list[int | str]) -> np.ndarray:
    """A one-bar FULL_VOCAB line from MIDI pitches, "h" (hold) and "r" (rest); padded with holds."""
    ids = [HOLD_ID if x == "h" else REST_ID if x == "r" else FULL_VOCAB.pitch_id(int(x)) for x in pitches_and_holds]
    return np.array(ids + [HOLD_ID] * (24 - len(ids)), dtype=np.int16)


def test_augmentation_counts_and_pitch_shift() -> None:
    vocab = Vocabulary()
    line = _full([60, "h", 67, "r", 64])  # range 7 -> shifts -5 .. +17: 23 transpositions
    bars, shifts = augment_line(line, vocab)
    assert list(shifts) == list(range(55 - 60, 84 - 67 + 1))
    assert bars.shape == (23, 24)
    pitches = vocab.pitch_table[bars]
    assert pitches[:, 0].tolist() == [60 + s for s in shifts]
    assert pitches.max() == 84 and pitches[pitches >= 0].min() == 55
    # HOLD and REST stay where they were in every transposition.
    assert (bars[:, 1] == HOLD_ID).all() and (bars[:, 3] == REST_ID).all()

    assert len(augment_line(_full([55, 84]), vocab)[1]) == 1  # exactly the range: one shift


def test_wider_than_range_gives_nothing() -> None:
    bars, shifts = augment_line(_full([50, 80]), Vocabulary())  # 30 semitones > 84 - 55
    assert len(shifts) == 0 and bars.shape == (0, 24)


def _lines(n: int, bars: int = 2) -> list[Line]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        pitches = rng.integers(60, 72, size=bars * 4)
        ids = np.full(bars * 24, HOLD_ID, dtype=np.int16)
        ids[::6] = pitches + 2
        out.append(Line(f"tune{i}", f"Tune {i}", f"tune{i}", 0, ids))
    return out


def test_assemble_splits_by_tune_and_labels_every_row() -> None:
    lines = _lines(60)
    first = lines[0].tokens
    lines.append(Line("copy", "A transposed copy", "copy", 0, np.where(first >= 2, first + 3, first)))
    summary = DatasetSummary("test")
    arrays = assemble([("folk", lines)], CorpusConfig(), summary)
    tokens, tune, split = arrays["tokens"], arrays["tune"], arrays["split"]
    assert summary.dropped == {"duplicate of another line (up to transposition)": 1}
    assert summary.tunes == 60 and summary.bars == 120 and summary.rows == len(tokens)
    # Every tune lies in exactly one split, and tune_split agrees with the row column.
    for t in np.unique(tune):
        assert len(np.unique(split[tune == t])) == 1
    assert (arrays["tune_split"][tune] == split).all()
    assert set(np.unique(split)) == {0, 1, 2}  # 60 tunes at 80/10/10: all three splits appear
    assert sum(summary.rows_per_split) == len(tokens)
    assert np.array_equal(arrays["attributes"], compute_attributes(tokens.astype(np.int64), Vocabulary()))
    # Rows of one tune: every transposition of every bar, bar_index running 0, 1, 0, 1, ...
    rows0 = tune == 0
    n_shift = len(augment_line(lines[0].tokens, Vocabulary())[1])
    assert rows0.sum() == 2 * n_shift
    assert arrays["bar_index"][rows0].tolist() == [0, 1] * n_shift
    assert arrays["tune_names"][0] == "folk:tune0"


def test_strict_bars_drops_realigned_lines() -> None:
    lines = _lines(3)
    lines[1].realigned = True
    summary = DatasetSummary("test")
    arrays = assemble([("folk", lines)], CorpusConfig(strict_bars=True), summary)
    assert arrays["tune_names"].tolist() == ["folk:tune0", "folk:tune2"]
    assert summary.dropped == {"barlines had to be realigned (strict bars)": 1}


def test_split_is_deterministic_and_roughly_80_10_10() -> None:
    keys = [f"folk:tune{i}" for i in range(5000)]
    splits = np.array([split_of(k) for k in keys])
    assert np.array_equal(splits, [split_of(k) for k in keys])
    shares = np.bincount(splits, minlength=3) / len(keys)
    assert abs(shares[0] - 0.8) < 0.03 and abs(shares[1] - 0.1) < 0.02
    assert not np.array_equal(splits, [split_of(k, seed=1) for k in keys])


# ------------------------------------------------------------------------------ files and cache


def test_parse_cache_is_reused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CorpusConfig(only="ryansMammoth/Ac*", cache_dir=str(tmp_path), jobs=2)
    first, n_files, n_cached = corpus.parse_corpus("folk", config)
    assert n_files == 2 and n_cached == 0
    assert [r.source for r in first] == ["ryansMammoth/AcaciaReel.abc", "ryansMammoth/AcrobatsHornpipe.abc"]

    def no_parsing(*args: object) -> None:
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(corpus_cache, "_parse_one", no_parsing)
    again, _, n_cached = corpus.parse_corpus("folk", config)
    assert n_cached == 2
    for a, b in zip(first, again, strict=True):
        assert a.dropped == b.dropped
        assert [(x.name, x.title, x.tokens.tolist(), x.realigned) for x in a.lines] == [
            (x.name, x.title, x.tokens.tolist(), x.realigned) for x in b.lines
        ]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="voices"):
        corpus.build_dataset("chorales", CorpusConfig(voices="tenor"))
    with pytest.raises(ConfigError, match="unknown dataset"):
        corpus.build_dataset("jazz", CorpusConfig())
    with pytest.raises(DatasetError, match="no folk files"):
        corpus.build_dataset("folk", CorpusConfig(only="nothing/*"))


def test_file_lists() -> None:
    folk = dict(corpus_cache.corpus_files("folk"))
    assert "ryansMammoth/SoldiersJoy.abc" in folk and "essenFolksong/han1.abc" in folk
    assert not any(name.startswith("josquin/") for name in folk)
    files = dict(corpus_cache.corpus_files("chorales"))
    assert len(files) == 350
    assert files["bach/bwv244.3"].endswith("bwv244.3.mxl")
    assert files["bach/bwv281"].endswith("bwv281.mxl")
