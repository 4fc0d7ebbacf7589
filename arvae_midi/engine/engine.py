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

Knobs run a closed loop (:meth:`Engine.vary`, :mod:`arvae_midi.engine.policy`): a raw latent
traversal only reaches the calibrated attribute on average, so each variation brackets its
targets along the monotone regularised dims in one batched decoder run per round and keeps the
row nearest the targets. The key lock's pitch mask applies to every row.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.scales import allowed_mask_bits, token_mask
from arvae_midi.core.tokens import REST_ID
from arvae_midi.engine.calibration import KNOB_STEPS, CurveInverse, knob_attribute, knob_table
from arvae_midi.engine.feeds import GraphFeeds
from arvae_midi.engine.metadata import INPUTS, MASK_FORBIDDEN, METADATA_KEY, OUTPUTS, ModelMetadata, parse_metadata
from arvae_midi.engine.policy import (
    CONTEXT_BARS,
    DEFAULT_CANDIDATES,
    DEFAULT_ROUNDS,
    KEY_LOCK,
    MIN_SPAN,
    Knob,
    LoopConfig,
    search,
    step_scale,
)
from arvae_midi.errors import ConfigError, ModelFileError
from arvae_midi.presets import DEFAULT_MODEL  # the shipped model, used when no path is given

DEVICES = ("auto", "cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: Bars whose encoding the engine keeps (a bar varied again, e.g. as knobs move, is not re-encoded).
_ENCODE_CACHE = 64


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
        # Calibrated attributes the engine can measure on decoded bars: name -> attributes() column.
        self._attr_columns = {a: ATTRIBUTE_NAMES.index(a) for a in meta.attributes if a in ATTRIBUTE_NAMES}
        self._knob_attr = {a: knob_attribute(cal[a]) for a in self._attr_columns}  # (128,) targets each
        self._attr_span = {a: max(abs(float(t[-1] - t[0])), MIN_SPAN) for a, t in self._knob_attr.items()}
        self._latent_span = {a: float(cal[a].latent[-1] - cal[a].latent[0]) for a in meta.attributes}
        self._orientation = {a: 1.0 if np.polyfit(cal[a].latent, cal[a].median, 1)[0] >= 0 else -1.0
                             for a in meta.attributes}  # fmt: skip
        # The search's start: the median curve's inverse, continued past its ends for bars that can
        # go further than the median bar (e.g. a narrower range than the curve's floor).
        self._inverse = {a: CurveInverse(cal[a], self.loop.extrapolate) for a in self._attr_columns}
        self._step_scale = {a: step_scale(self._attr_span[a], float(inv.abscissa[-1] - inv.abscissa[0]))
                            for a, inv in self._inverse.items()}  # fmt: skip
        self._cache_lock = threading.Lock()
        # bar bytes -> (mu (1, Z), the bar's attributes (4,))
        self._encodings: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock_masks: dict[int | None, np.ndarray] = {}  # allowed pitch-class bits -> (V,) mask
        self._lock_by_bars: OrderedDict[bytes, np.ndarray] = OrderedDict()  # context + bar bytes -> mask

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
        """Target attribute value of knob position ``value`` (evenly over the training bars'
        2nd..98th percentile, see :mod:`arvae_midi.engine.calibration`)."""
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
        key_lock: bool | None = None,
        context: Sequence[np.ndarray] | np.ndarray | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        rounds: int = DEFAULT_ROUNDS,
    ) -> np.ndarray:
        """``n`` variations (n, 24) int64 of one bar (24,): the one call ``vary`` and ``serve`` make.

        The bar is encoded to its mean (cached: an unchanged bar is not encoded again); each
        knob that is set (0..127) asks for its calibrated target attribute value
        (:meth:`knob_to_attribute`), unset (None or missing) knobs keep the bar's own value;
        ``amount`` (0..1) scales seeded standard-normal noise added to the free (unregularised)
        dims, so n > 1 gives n different variations when amount > 0. The same seed gives the
        same variations.

        Key lock (``key_lock=None`` follows :data:`~arvae_midi.engine.policy.KEY_LOCK`, on): the
        decoder may only emit pitches of the scale estimated from the bar and its ``context``
        (the bars before it, (K, 24) or a sequence of (24,); the last ``CONTEXT_BARS - 1`` are
        used), plus the pitch classes they play. A ``pitch_mask`` as in :meth:`decode` ((V,) or
        (n, V)) replaces it; ``key_lock=True`` together with a ``pitch_mask`` is an error.

        Closed loop (``candidates`` > 1 and a knob set): :func:`arvae_midi.engine.policy.search`
        brackets each target along its monotone dim in ``rounds`` decoder runs of
        ``n * candidates`` rows; the decoded row nearest the targets wins, so a target the bar
        cannot reach gives the nearest reachable value. ``candidates=1`` is the raw latent
        traversal (each set dim at :meth:`knob_to_latent`).
        """
        if key_lock and pitch_mask is not None:
            raise ConfigError("give either pitch_mask or key_lock, not both")
        if not 0.0 <= amount <= 1.0:
            raise ConfigError(f"amount must be in 0..1, got {amount}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"n (variations) must be a positive integer, got {n!r}")
        for label, count in (("candidates", candidates), ("rounds", rounds)):
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
                raise ConfigError(f"{label} must be a positive integer (candidates 1 = raw latent traversal), "
                                  f"got {count!r}")
        settings: dict[str, int] = {}
        for attribute, value in knobs.items():
            if value is not None:
                self.knob_to_latent(attribute, value)  # validates name and range first
                settings[attribute] = int(value)
        ids = np.asarray(bar, dtype=np.int64).reshape(1, -1)
        if pitch_mask is None and (KEY_LOCK if key_lock is None else key_lock):
            lock = self._key_lock_mask(ids, context)  # (V,) additive, cached per allowed set
            mask = np.broadcast_to(lock, (n, len(lock)))
        else:
            mask = self._mask(pitch_mask, n)  # (n, V) additive, validated against n
        mu, own = self._encode_cached(ids)
        z = np.repeat(mu, n, axis=0)  # (n, Z)
        if amount > 0 and len(self._free_dims):
            rng = np.random.default_rng(seed)
            noise = rng.standard_normal((n, len(self._free_dims))).astype(np.float32)
            z[:, self._free_dims] += np.float32(amount) * noise
        looped = {a: v for a, v in settings.items() if a in self._attr_columns} if candidates > 1 else {}
        for attribute, value in settings.items():  # the raw traversal, for knobs the loop does not steer
            if attribute not in looped:
                z[:, self.meta.attribute_dims[attribute]] = self._knobs[attribute][value]
        if not looped:
            return self.decode(z, mask)
        specs = {a: self._knob_spec(a, v, float(mu[0, self.meta.attribute_dims[a]]), float(own[self._attr_columns[a]]))
                 for a, v in looped.items()}  # fmt: skip
        free = {self._attr_columns[a]: self._attr_span[a] for a in self._attr_columns if a not in looped}
        rows_mask = np.repeat(np.ascontiguousarray(mask), int(candidates), axis=0)

        def decode(cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = self.decode(cand, rows_mask)
            return self.attributes(out), out

        return search(z, decode, specs, own, free, int(candidates), int(rounds), self.loop.crosstalk)

    def _knob_spec(self, attribute: str, value: int, latent: float, own: float) -> Knob:
        """The search's view of one set knob, for a bar whose own latent and attribute are given."""
        target = float(self._knob_attr[attribute][value])
        # The median curve's shape at the bar's own level: start where the curve says the
        # attribute moves by (target - own) when walking from the bar's own latent value.
        inverse = self._inverse[attribute]
        curve = inverse(np.asarray([target, own]))
        start = latent + float(curve[0] - curve[1])
        ends = inverse.clipped(np.asarray([target, own]))
        return Knob(self._attr_columns[attribute], self.meta.attribute_dims[attribute], target, start,
                    self.loop.step * self._latent_span[attribute] * self._step_scale[attribute],
                    self._attr_span[attribute],
                    self._orientation[attribute], latent + float(ends[0] - ends[1]))

    def _encode_cached(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu (1, Z), attributes (4,)) of one bar (1, 24), cached for recently varied bars."""
        key = ids.tobytes()
        with self._cache_lock:
            hit = self._encodings.get(key)
            if hit is not None:
                self._encodings.move_to_end(key)
                return hit[0].copy(), hit[1]
        mu, _ = self.encode(ids)
        own = self.attributes(ids)[0]
        with self._cache_lock:
            self._encodings[key] = (mu, own)
            while len(self._encodings) > _ENCODE_CACHE:
                self._encodings.popitem(last=False)
        return mu.copy(), own

    def _key_lock_mask(self, ids: np.ndarray, context: Sequence[np.ndarray] | np.ndarray | None) -> np.ndarray:
        """Additive (V,) mask of the key lock for bar ``ids`` (1, 24) and its ``context`` bars."""
        bars = ids
        if context is not None and len(context):
            recent = np.asarray(context, dtype=np.int64).reshape(-1, ids.shape[1])[-(CONTEXT_BARS - 1):]
            bars = np.concatenate([recent, ids])
        key = bars.tobytes()
        with self._cache_lock:
            mask = self._lock_by_bars.get(key)
        if mask is not None:
            return mask
        bits = allowed_mask_bits(bars, self.meta.vocab)
        with self._cache_lock:
            mask = self._lock_masks.get(bits)
        if mask is None:
            pcs = None if bits is None else frozenset(pc for pc in range(12) if bits >> pc & 1)
            mask = self._mask(token_mask(pcs, self.meta.vocab), 1)[0]
            mask.setflags(write=False)
        with self._cache_lock:
            self._lock_masks[bits] = mask
            self._lock_by_bars[key] = mask
            while len(self._lock_by_bars) > _ENCODE_CACHE:
                self._lock_by_bars.popitem(last=False)
        return mask

    def attributes(self, tokens: np.ndarray) -> np.ndarray:
        """The four bar attributes (N, 4) float32 of bars (N, 24), in ``ATTRIBUTE_NAMES`` order."""
        return compute_attributes(np.atleast_2d(np.asarray(tokens, dtype=np.int64)), self.meta.vocab)

