"""The model file's metadata: one JSON document under ``metadata_props["arvae_midi"]``.

An exported ``.onnx`` file is self-describing: the engine needs nothing but the file to tokenise
bars, map knobs to latent values and report the model's provenance. The document (format 1)::

    {
      "format_version": 1,
      "vocab": ["__", "rest", "55", ..., "84"],          token strings in id order
      "pitch_range": [55, 84],                          inclusive MIDI range of the pitch tokens
      "grid": {"ticks_per_bar": 24, "beats_per_bar": 4, "tick_positions": [0.0, 0.25, ...]},
      "latent_dim": 32,
      "attribute_dims": {"rhythmic_complexity": 0, ...},  regularised attribute -> latent dim
      "calibration": {"rhythmic_complexity": {"dim": 0, "latent": [...], "median": [...],
                      "q25": [...], "q75": [...], "bars": 512}, ...},
      "recipe": {...}, "metrics": {...}, "data": {...}, "export": {...}
    }

``calibration[attr].latent`` is an ascending grid of values of the attribute's latent dim (the 1st
to 99th percentile of the encoded held-out means, widened by half that span on each side);
``median`` / ``q25`` / ``q75`` are the attribute's median and quartiles over the held-out bars
decoded with that dim set to the grid value. ``target_range`` (optional) holds the attribute's
2nd and 98th percentile over the training bars: the values of knob 0 and knob 127.

The graph contract (names, dtypes, shapes; B is the dynamic batch, T ticks, Z latent, V vocab):
inputs ``tokens`` int64 (B, T), ``z`` float32 (B, Z), ``pitch_mask`` float32 (B, V) (additive:
0 allowed, -1e9 forbidden); outputs ``mu`` / ``logvar`` float32 (B, Z), ``out_tokens`` int64 (B, T).
A zero-row ``tokens`` skips the encoder and a zero-row ``z`` the decoder (their outputs are empty).

This module is pure Python + numpy (no torch, no onnx), so the engine can import it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arvae_midi.core.config import from_dict
from arvae_midi.core.tokens import TICK_POSITIONS, TICKS_PER_BAR, Vocabulary
from arvae_midi.errors import ArvaeError, ModelFileError

#: Version of the metadata document and graph contract; the engine refuses any other.
FORMAT_VERSION = 1
#: ``metadata_props`` key holding the JSON document.
METADATA_KEY = "arvae_midi"

#: Graph inputs and outputs: name -> (ONNX element type, symbolic shape). "T", "Z" and "V" are
#: checked against the metadata; "B" is the dynamic batch.
INPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tokens": ("tensor(int64)", ("B", "T")),
    "z": ("tensor(float)", ("B", "Z")),
    "pitch_mask": ("tensor(float)", ("B", "V")),
}
OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mu": ("tensor(float)", ("B", "Z")),
    "logvar": ("tensor(float)", ("B", "Z")),
    "out_tokens": ("tensor(int64)", ("B", "T")),
}
#: Additive logit-mask value of a forbidden token (finite, so masked rows never produce NaN).
MASK_FORBIDDEN = -1e9


@dataclass
class GridInfo:
    """The bar grid the model was trained on."""

    ticks_per_bar: int
    beats_per_bar: int
    tick_positions: list[float]  # onset of every tick from the bar start, in beats


@dataclass
class Calibration:
    """Latent value -> attribute statistics on one regularised dim, measured on held-out bars."""

    dim: int
    latent: list[float]  # (n,) ascending latent values of ``dim``
    median: list[float]  # (n,) median attribute of the decoded bars at each latent value
    q25: list[float]  # (n,) first quartile
    q75: list[float]  # (n,) third quartile
    bars: int  # held-out bars decoded per grid point
    #: Attribute values of knob 0 and knob 127: the 2nd and 98th percentile of the attribute over
    #: the training bars. Empty in files calibrated before it existed: the knob then spans the
    #: median curve's range.
    target_range: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.latent)
        if n < 2:
            raise ValueError(f"calibration needs at least 2 grid points, got {n}")
        if any(len(v) != n for v in (self.median, self.q25, self.q75)):
            raise ValueError("calibration latent, median, q25 and q75 must have the same length")
        values = np.asarray([self.latent, self.median, self.q25, self.q75], dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("calibration values must be finite")
        if np.any(np.diff(values[0]) <= 0):
            raise ValueError("calibration latent grid must be strictly ascending")
        if self.target_range and (
            len(self.target_range) != 2
            or not np.isfinite(self.target_range).all()
            or self.target_range[0] > self.target_range[1]
        ):
            raise ValueError(f"calibration target_range must be [low, high] with low <= high, got {self.target_range}")


@dataclass
class MetadataDocument:
    """The JSON document exactly as stored (see the module docstring)."""

    format_version: int
    vocab: list[str]
    pitch_range: list[int]
    grid: GridInfo
    latent_dim: int
    attribute_dims: dict[str, int]
    calibration: dict[str, Calibration]
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelMetadata:
    """Validated metadata of a model file, as the engine uses it."""

    document: MetadataDocument
    vocab: Vocabulary
    grid: GridInfo
    latent_dim: int
    attributes: list[str]  # regularised attributes, in latent-dim order
    attribute_dims: dict[str, int]
    calibration: dict[str, Calibration]
    recipe: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any]

    @property
    def name(self) -> str:
        """The model's name: its training recipe's name ("model" when the recipe has none)."""
        return str(self.recipe.get("name") or "model")

    @property
    def free_dims(self) -> list[int]:
        """Latent dims not tied to an attribute (where ``amount`` adds noise)."""
        tied = set(self.attribute_dims.values())
        return [d for d in range(self.latent_dim) if d not in tied]

    def to_json(self) -> str:
        """The stored JSON text."""
        return document_to_json(self.document)


def document_to_json(doc: MetadataDocument) -> str:
    """Serialise a document (compact, keys in schema order) for ``metadata_props``."""
    return json.dumps(dataclasses.asdict(doc), separators=(",", ":"), allow_nan=False)


def parse_metadata(text: str | None, source: str = "model file") -> ModelMetadata:
    """Parse and check the metadata JSON of a model file.

    Raises ModelFileError saying what is wrong: missing document, invalid JSON, an unknown
    format version, missing or mistyped keys, or values that contradict each other.
    """
    if text is None:
        raise ModelFileError(
            f"{source}: no {METADATA_KEY!r} metadata; not an arvae-midi model file "
            "(export one with `arvae-midi export RUN_DIR --out MODEL.onnx`)"
        )
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{source}: the {METADATA_KEY!r} metadata is not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ModelFileError(f"{source}: the {METADATA_KEY!r} metadata must be a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{source}: model format version {version!r} is not supported; this arvae-midi reads "
            f"version {FORMAT_VERSION} (re-export the model with this version)"
        )
    try:
        doc = from_dict(MetadataDocument, raw, where="metadata")
    except ArvaeError as e:
        raise ModelFileError(f"{source}: invalid metadata: {e}") from e
    return _check(doc, source)


def _check(doc: MetadataDocument, source: str) -> ModelMetadata:
    """Cross-field checks; returns the engine-facing view."""

    def bad(msg: str) -> ModelFileError:
        return ModelFileError(f"{source}: invalid metadata: {msg}")

    try:
        vocab = Vocabulary.from_tokens(doc.vocab)
    except ValueError as e:
        raise bad(f"vocab: {e}") from e
    if list(doc.pitch_range) != [vocab.low, vocab.high]:
        raise bad(f"pitch_range {doc.pitch_range} does not match the vocabulary ({vocab.low}..{vocab.high})")
    grid = doc.grid
    positions = np.asarray(grid.tick_positions, dtype=np.float64)
    if grid.ticks_per_bar != TICKS_PER_BAR or positions.shape != TICK_POSITIONS.shape or not np.allclose(
        positions, TICK_POSITIONS, atol=1e-6
    ):
        raise bad(
            f"grid of {grid.ticks_per_bar} ticks per bar; arvae-midi plays {TICKS_PER_BAR}-tick 4/4 measures "
            "(beat fractions 0, 1/4, 1/3, 1/2, 2/3, 3/4)"
        )
    if doc.latent_dim < 1:
        raise bad(f"latent_dim must be positive, got {doc.latent_dim}")
    dims = doc.attribute_dims
    if any(not 0 <= d < doc.latent_dim for d in dims.values()) or len(set(dims.values())) != len(dims):
        raise bad(f"attribute_dims {dims} must map attributes to distinct dims in 0..{doc.latent_dim - 1}")
    if set(doc.calibration) != set(dims):
        raise bad(f"calibration covers {sorted(doc.calibration)} but the attributes are {sorted(dims)}")
    for name, cal in doc.calibration.items():
        if cal.dim != dims[name]:
            raise bad(f"calibration of {name} is for dim {cal.dim}, the attribute is on dim {dims[name]}")
    return ModelMetadata(
        document=doc,
        vocab=vocab,
        grid=grid,
        latent_dim=doc.latent_dim,
        attributes=sorted(dims, key=dims.__getitem__),
        attribute_dims=dict(dims),
        calibration=dict(doc.calibration),
        recipe=doc.recipe,
        metrics=doc.metrics,
        data=doc.data,
    )
