"""Inference engine: an exported model file run by onnxruntime (numpy only, never torch).

>>> engine = Engine.load("model.onnx", device="cpu")        # or Engine.load() for the default
>>> mu, logvar = engine.encode(bars)                          # (B, 24) int64 -> (B, Z) float32
>>> out = engine.decode(mu)                                   # (B, Z) -> (B, 24) int64
>>> engine.vary(bar, {"note_density": 100}, amount=0.3, seed=1, n=4)   # (4, 24) int64

The file holds one graph with an encoder and a greedy decoder behind ``If`` nodes gated on the
batch size of their input, so :meth:`encode` feeds a zero-row ``z`` and :meth:`decode` a
zero-row ``tokens`` and only the half asked for runs (see :mod:`arvae_midi.engine.metadata`).
Session settings favour one-bar latency: one intra-op thread by default, sequential execution,
all graph optimisations, and a warm-up run at load.

Knobs run a closed loop (:meth:`Engine.vary`, :class:`LoopConfig`): a raw latent traversal only
reaches the calibrated attribute on average, so each variation is decoded with a few seeded
perturbations in the same batch and the one whose attributes land nearest the knob targets is
kept. The key lock's pitch mask applies to every candidate.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.constants import DEFAULT_CANDIDATES
from arvae_midi.core.scales import allowed_pitch_classes, token_mask
from arvae_midi.core.tokens import REST_ID
from arvae_midi.engine.calibration import KNOB_STEPS, knob_attribute, knob_table
from arvae_midi.engine.feeds import GraphFeeds
from arvae_midi.engine.metadata import INPUTS, MASK_FORBIDDEN, METADATA_KEY, OUTPUTS, ModelMetadata, parse_metadata
from arvae_midi.errors import ConfigError, ModelFileError
from arvae_midi.presets import DEFAULT_MODEL  # the shipped model, used when no path is given

DEVICES = ("auto", "cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: Entropy word that separates the closed loop's random stream from the ``amount`` noise's.
_LOOP_STREAM = 0x6C6F6F70
#: Smallest attribute span the closed loop divides by (a flat, uncontrolled calibration).
_MIN_SPAN = 1e-3


@dataclass
class LoopConfig:
    """How :meth:`Engine.vary`'s closed loop perturbs and scores candidates.

    Candidate offsets are seeded normal draws added to the variation's latent: on a set knob's
    dim ``set_spread`` times the dim's calibrated latent span (1st..99th percentile of the
    held-out means), on an unset regularised dim ``unset_spread`` times its span, on the free
    dims ``free_spread`` (latent units; the prior's std is 1). Scoring: distance of each set
    attribute to its knob's target plus ``crosstalk`` times the unset attributes' distance to
    the input bar's own, all in units of the attribute's calibrated knob span.
    """

    set_spread: float = 0.15
    unset_spread: float = 0.1
    free_spread: float = 0.7
    crosstalk: float = 0.4


def _providers(device: str) -> tuple[list[str], str | None]:
    """onnxruntime providers for ``device`` and a note when CUDA was asked for but is missing."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU], None
    if CUDA in available:
        return [CUDA, CPU], None
    note = None
    if device == "cuda":
        note = (f"CUDA requested but onnxruntime offers only {', '.join(available)}; using the CPU "
                "(install onnxruntime-gpu in place of onnxruntime: pip install arvae-midi[gpu])")
    return [CPU], note


def _session_options(threads: int | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    # One intra-op thread: a batch-1 bar is a chain of small GEMVs where a thread pool's wake-up
    # costs more than it saves, and the bridge must not compete with the DAW for cores.
    # threads=0 leaves onnxruntime's default (one thread per physical core).
    so.intra_op_num_threads = 1 if threads is None else int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: no provider chatter on stderr
    return so


def _check_io(session: ort.InferenceSession, meta: ModelMetadata, source: str) -> None:
    """Names, element types and shapes of the graph's inputs and outputs against the contract."""
    sizes = {"T": meta.grid.ticks_per_bar, "Z": meta.latent_dim, "V": len(meta.vocab)}

    def describe(spec: Mapping[str, tuple[str, tuple[str, ...]]]) -> str:
        return ", ".join(f"{n} {t} ({', '.join(str(sizes.get(d, 'batch')) for d in s)})" for n, (t, s) in spec.items())

    for kind, args, spec in (("inputs", session.get_inputs(), INPUTS), ("outputs", session.get_outputs(), OUTPUTS)):
        names = [a.name for a in args]
        if sorted(names) != sorted(spec):
            raise ModelFileError(
                f"{source}: graph {kind} are {', '.join(names) or 'none'}; expected {describe(spec)}"
            )
        for arg in args:
            dtype, dims = spec[arg.name]
            shape = list(arg.shape or [])
            wrong = arg.type != dtype or len(shape) != len(dims)
            for got, want in zip(shape, dims, strict=False):  # lengths compared above
                if want == "B":
                    wrong |= isinstance(got, int)  # the batch must be dynamic (a name or None)
                else:
                    wrong |= got != sizes[want]
            if wrong:
                raise ModelFileError(
                    f"{source}: graph {kind[:-1]} {arg.name} is {arg.type} {shape}; expected {describe(spec)}"
                )


class Engine:
    """An exported arvae-midi model loaded into onnxruntime. Thread-safe for concurrent calls."""

    meta: ModelMetadata
    provider: str  # execution provider actually used, e.g. "CPUExecutionProvider"
    device_note: str | None  # why the requested device was not used, if it was not
    path: Path

    def __init__(self, session: ort.InferenceSession, meta: ModelMetadata, path: Path,
                 device_note: str | None = None) -> None:
        """Wrap a session already checked against ``meta``; use :meth:`load`."""
        self._session = session
        self.meta = meta
        self.path = path
        self.device_note = device_note
        self.provider = session.get_providers()[0]
        # Zero-row feeds switch the other half of the graph off (its If branch returns empties).
        self._feeds = GraphFeeds(meta.grid.ticks_per_bar, meta.latent_dim, len(meta.vocab))
        self._knobs = {name: knob_table(cal) for name, cal in meta.calibration.items()}
        self._free_dims = np.asarray(meta.free_dims, dtype=np.int64)
        #: Closed-loop settings of :meth:`vary`; change them on the instance to tune.
        self.loop = LoopConfig()
        cal = meta.calibration
        self._reg_dims = np.asarray([meta.attribute_dims[a] for a in meta.attributes], dtype=np.int64)  # (R,)
        self._latent_span = np.asarray([cal[a].latent[-1] - cal[a].latent[0] for a in meta.attributes], np.float32)
        # Calibrated attributes the engine can measure on decoded bars: name -> attributes() column.
        self._attr_columns = {a: ATTRIBUTE_NAMES.index(a) for a in meta.attributes if a in ATTRIBUTE_NAMES}
        self._knob_attr = {a: knob_attribute(cal[a]) for a in self._attr_columns}  # (128,) targets each
        self._attr_span = {a: max(abs(float(t[-1] - t[0])), _MIN_SPAN) for a, t in self._knob_attr.items()}

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto", threads: int | None = None) -> Engine:
        """Load and validate a model file; ``None`` loads the shipped default model.

        ``device``: "auto" (CUDA when onnxruntime-gpu finds a GPU, else CPU), "cpu" or "cuda"
        (falls back to the CPU, saying why in :attr:`device_note`). ``threads``: intra-op threads,
        1 by default (best batch-1 latency), 0 for onnxruntime's default.
        Raises ModelFileError naming what is wrong with the file and what is expected.
        """
        if path is None:
            if not DEFAULT_MODEL.is_file():
                raise ModelFileError(
                    f"no default model at {DEFAULT_MODEL}; pass a model file (--model MODEL.onnx) or "
                    "export one with `arvae-midi export RUN_DIR --out MODEL.onnx`"
                )
            path = DEFAULT_MODEL
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        if threads is not None and threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = onnxruntime's default), got {threads}")
        providers, note = _providers(device)
        try:
            session = ort.InferenceSession(str(path), _session_options(threads), providers=providers)
        except Exception as e:  # onnxruntime raises its own (Fail, InvalidProtobuf, ...) types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFileError(f"{path}: not a readable ONNX model ({first})") from e
        meta = parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), str(path))
        _check_io(session, meta, str(path))
        if note is None and device == "cuda" and session.get_providers()[0] != CUDA:
            note = "CUDA provider failed to initialise (see onnxruntime's log); using the CPU"
        if note is not None:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        engine = cls(session, meta, path, note)
        engine._warm_up()
        return engine

    def _warm_up(self) -> None:
        # The first run allocates arenas and finalises kernels; do it now, not on the first bar.
        bar = np.full((1, self.meta.grid.ticks_per_bar), REST_ID, np.int64)
        mu, _ = self.encode(bar)
        self.decode(mu)

    # -- core calls ----------------------------------------------------------------------------
    def encode(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (mu, logvar), each (B, Z) float32, of bars ``tokens`` (B, 24) int."""
        ids = np.ascontiguousarray(tokens, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] != self.meta.grid.ticks_per_bar:
            raise ValueError(f"tokens must have shape (batch, {self.meta.grid.ticks_per_bar}), got {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.meta.vocab)):
            raise ValueError(f"token ids must lie in 0..{len(self.meta.vocab) - 1}")
        mu, logvar = self._session.run(["mu", "logvar"], self._feeds.encoder(ids))
        return mu, logvar

    def decode(self, z: np.ndarray, pitch_mask: np.ndarray | None = None) -> np.ndarray:
        """Greedy bars (B, 24) int64 from latents ``z`` (B, Z).

        ``pitch_mask``: bool (B, V) or (V,), True = the token may be emitted (the key lock; keep
        HOLD and REST allowed); or float, added to the logits as is. None allows every token.
        """
        zz = np.ascontiguousarray(z, dtype=np.float32)
        if zz.ndim != 2 or zz.shape[1] != self.meta.latent_dim:
            raise ValueError(f"z must have shape (batch, {self.meta.latent_dim}), got {zz.shape}")
        mask = self._mask(pitch_mask, len(zz))
        (out,) = self._session.run(["out_tokens"], self._feeds.decoder(zz, mask))
        return out

    def _mask(self, pitch_mask: np.ndarray | None, batch: int) -> np.ndarray:
        v = len(self.meta.vocab)
        if pitch_mask is None:
            return np.zeros((batch, v), np.float32)
        m = np.asarray(pitch_mask)
        if m.shape not in ((v,), (batch, v)):
            raise ValueError(f"pitch_mask must have shape ({v},) or ({batch}, {v}), got {m.shape}")
        additive = np.where(m, 0.0, MASK_FORBIDDEN) if m.dtype == np.bool_ else m
        return np.ascontiguousarray(np.broadcast_to(additive, (batch, v)), dtype=np.float32)

    # -- knobs ---------------------------------------------------------------------------------
    def _check_attribute(self, attribute: str) -> None:
        if attribute not in self.meta.attribute_dims:
            valid = ", ".join(self.meta.attributes) or "none (this model has no regularised attribute)"
            raise ConfigError(f"unknown attribute {attribute!r}; this model controls: {valid}")

    @staticmethod
    def _check_knob(attribute: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < KNOB_STEPS:
            raise ConfigError(f"knob {attribute}: value must be an integer in 0..{KNOB_STEPS - 1}, got {value!r}")
        return int(value)

    def knob_to_latent(self, attribute: str, value: int) -> float:
        """Latent value of ``attribute``'s dim for knob position ``value`` (0..127).

        Knob 0 maps to the lowest calibrated attribute value, 127 to the highest, monotonically.
        ConfigError for an unknown attribute (listing the valid ones) or a value outside 0..127.
        """
        self._check_attribute(attribute)
        return float(self._knobs[attribute][self._check_knob(attribute, value)])

    def knob_to_attribute(self, attribute: str, value: int) -> float:
        """Median attribute value the calibration expects at knob position ``value``."""
        self._check_attribute(attribute)
        return float(knob_attribute(self.meta.calibration[attribute])[self._check_knob(attribute, value)])

    def latent_to_knob(self, attribute: str, latent: float) -> int:
        """Knob position (0..127) whose latent value is nearest to ``latent`` (e.g. a bar's own)."""
        self._check_attribute(attribute)
        return int(np.argmin(np.abs(self._knobs[attribute] - latent)))

    # -- variations ----------------------------------------------------------------------------
    def vary(
        self,
        bar: np.ndarray,
        knobs: Mapping[str, int | None],
        amount: float = 0.0,
        seed: int | None = 0,
        n: int = 1,
        pitch_mask: np.ndarray | None = None,
        key_lock: bool = False,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> np.ndarray:
        """``n`` variations (n, 24) int64 of one bar (24,), decoded in one batch.

        The bar is encoded to its mean; each knob that is set (0..127) overwrites its attribute's
        dim through the calibration, unset (None or missing) knobs keep the bar's own value;
        ``amount`` (0..1) scales seeded standard-normal noise added to the free (unregularised)
        dims, so n > 1 gives n different variations when amount > 0. The same seed gives the
        same variations. ``pitch_mask`` as in :meth:`decode` ((V,) or (n, V)); ``key_lock=True``
        instead derives it from the bar itself (its estimated scale plus its own pitch classes,
        as :func:`arvae_midi.core.scales.allowed_pitch_classes`).

        Closed loop (``candidates`` > 1 and at least one knob set): each variation's latent (the
        raw traversal above) is decoded together with ``candidates - 1`` seeded perturbations of
        it, all ``n * candidates`` rows in one decoder run under the same pitch mask, and the
        candidate whose decoded attributes come nearest to the calibrated targets of the set
        knobs (:meth:`knob_to_attribute`), with a mild penalty for moving the unset attributes
        away from the input bar's own, is kept (see :class:`LoopConfig`). The raw latent is
        always candidate 0 and wins ties, so the loop is never further from the targets by its
        own measure. ``candidates=1`` is the raw latent traversal. The candidates are seeded by
        ``seed`` too (a stream apart from the noise's); ``seed=None`` draws fresh ones each call.
        """
        if key_lock and pitch_mask is not None:
            raise ConfigError("give either pitch_mask or key_lock, not both")
        if key_lock:
            vocab = self.meta.vocab
            pitch_mask = token_mask(allowed_pitch_classes(np.asarray(bar).reshape(1, -1), vocab), vocab)
        if not 0.0 <= amount <= 1.0:
            raise ConfigError(f"amount must be in 0..1, got {amount}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"n (variations) must be a positive integer, got {n!r}")
        if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < 1:
            raise ConfigError(f"candidates must be a positive integer (1 = raw latent traversal), got {candidates!r}")
        settings: dict[str, int] = {}
        for attribute, value in knobs.items():
            if value is not None:
                self.knob_to_latent(attribute, value)  # validates name and range first
                settings[attribute] = int(value)
        ids = np.asarray(bar, dtype=np.int64).reshape(1, -1)
        mu, _ = self.encode(ids)
        z = np.repeat(mu, n, axis=0)  # (n, Z)
        for attribute, value in settings.items():
            z[:, self.meta.attribute_dims[attribute]] = self._knobs[attribute][value]
        if amount > 0 and len(self._free_dims):
            rng = np.random.default_rng(seed)
            noise = rng.standard_normal((n, len(self._free_dims))).astype(np.float32)
            z[:, self._free_dims] += np.float32(amount) * noise
        mask = self._mask(pitch_mask, n)  # (n, V) additive, validated against n
        if candidates == 1 or not any(a in self._attr_columns for a in settings):
            return self.decode(z, mask)  # raw traversal (nothing set that the loop can measure)
        return self._closed_loop(ids[0], z, mask, settings, int(candidates), seed)

    def _closed_loop(
        self, bar: np.ndarray, z: np.ndarray, mask: np.ndarray, settings: Mapping[str, int], k: int,
        seed: int | None,
    ) -> np.ndarray:
        """Best of ``k`` candidates around each row of ``z`` (n, Z); returns (n, 24) int64."""
        n = len(z)
        cfg = self.loop
        # A stream of its own (not the amount noise's), so candidates=1 keeps the raw variations
        # bit for bit and the candidates do not shift the noise of other settings.
        rng = np.random.default_rng(None if seed is None else [int(seed) % 2**63, _LOOP_STREAM])
        cands = np.repeat(z, k, axis=0)  # (n*k, Z): rows i*k .. i*k+k-1 belong to variation i
        offsets = np.zeros((n, k, z.shape[1]), np.float32)
        reg = self._reg_dims
        spread = np.asarray(
            [cfg.set_spread if a in settings else cfg.unset_spread for a in self.meta.attributes], np.float32
        ) * self._latent_span  # (R,) latent units per regularised dim
        offsets[:, 1:, reg] = rng.standard_normal((n, k - 1, len(reg))).astype(np.float32) * spread
        if len(self._free_dims):
            free = rng.standard_normal((n, k - 1, len(self._free_dims))).astype(np.float32)
            offsets[:, 1:, self._free_dims] = np.float32(cfg.free_spread) * free
        cands += offsets.reshape(n * k, -1)
        out = self.decode(cands, np.repeat(mask, k, axis=0))  # one decoder run for all n*k rows
        cost = self._loop_cost(self.attributes(out), self.attributes(bar)[0], settings).reshape(n, k)
        best = np.argmin(cost, axis=1)  # first minimum: the raw candidate wins ties
        picked: np.ndarray = out.reshape(n, k, -1)[np.arange(n), best]
        return picked

    def _loop_cost(self, attrs: np.ndarray, own: np.ndarray, settings: Mapping[str, int]) -> np.ndarray:
        """Closed-loop cost (M,) of decoded attributes (M, 4) given the bar's own (4,).

        Distances are in units of each attribute's calibrated knob span (knob 0 -> 127), so a
        cost of 1 is the whole knob travel: set knobs pay their distance to the target, the
        other calibrated attributes ``LoopConfig.crosstalk`` times their move from ``own``.
        """
        cost = np.zeros(len(attrs), np.float64)
        for attribute, column in self._attr_columns.items():
            scale = self._attr_span[attribute]
            if attribute in settings:
                target = float(self._knob_attr[attribute][settings[attribute]])
                cost += np.abs(attrs[:, column] - target) / scale
            else:
                cost += self.loop.crosstalk * np.abs(attrs[:, column] - own[column]) / scale
        return cost

    def attributes(self, tokens: np.ndarray) -> np.ndarray:
        """The four bar attributes (N, 4) float32 of bars (N, 24), in ``ATTRIBUTE_NAMES`` order."""
        return compute_attributes(np.atleast_2d(np.asarray(tokens, dtype=np.int64)), self.meta.vocab)

