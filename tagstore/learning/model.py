"""A fitted tag model: parameters, normalisation constants, threshold, and its versioned serialisation."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from tagstore.errors import StoreFormatError, TagError
from tagstore.learning.decision import Calibration, OutOfFold, Rule
from tagstore.learning.threads import one_blas_thread

METHODS = ("probe", "prototype", "ensemble")
FORMAT = "tagstore.tagmodel"
FORMAT_VERSION = 2
"""2: calibration, out-of-fold scores, threshold rule and CV AP spread (1: read, without them)."""
SCORE_CHUNK = 1024
"""Rows scored at once: bounds the temporary centred copy to SCORE_CHUNK * d float32, small enough (2 MB at
d = 512) to stay in cache between the centring, the product and the norms (see benchmarks/bench_web.py)."""

Ref = tuple[float, float]
"""(centre, scale) of a score over the reference sample: z = (score - centre) / scale."""


def combine_scores(
    method: str, probe: np.ndarray, proto: np.ndarray, probe_ref: Ref | None, proto_ref: Ref | None
) -> np.ndarray:
    """A method's score from its component scores (same shape): the probe logit, the prototype score, or
    for ``ensemble`` the mean of the two components' z-scores against their reference constants."""
    if method == "probe":
        return probe
    if method == "prototype":
        return proto
    (c1, s1), (c2, s2) = probe_ref, proto_ref
    return 0.5 * ((probe - c1) / s1 + (proto - c2) / s2)


@dataclass(frozen=True, eq=False)
class TagModel:
    """A tag learned from examples. Scoring is a pure function of one track vector and this object.

    Scores by method, for a track x (d,) with xc = x - mean:

    - ``probe``: the logit  intercept + coef . (xc / std)  (coef in standardised space, (d,) float32).
    - ``prototype``: cos(xc, proto_pos) - unit(xc) . proto_neg. proto_pos (d,) is the normalised mean of
      the positives' unit vectors (centred on the catalogue mean). proto_neg (d,) is the weighted mean of
      the negatives' unit vectors (sampled tracks at the unlabelled weight), deliberately *not*
      renormalised: its length in [0, 1] is the negatives' coherence, so a coherent set of user negatives
      subtracts almost their full cosine, while a diffuse random catalogue sample (length ~0.1) subtracts
      little. Renormalising it would give a noise direction full weight (on synthetic catalogues it cut
      the prototype's AP about threefold).
    - ``ensemble``: 0.5 * (z_probe + z_prototype), each z = (score - centre) / scale with the component's
      constants (``probe_ref``, ``proto_ref``) fixed at fit time from a reference catalogue sample.

    ``score_ref`` holds the same constants for the method's own score: ``threshold`` was chosen on that
    z scale by the threshold ``rule`` on grouped cross-validation and stored converted back to the
    score's scale. ``predict`` is ``score >= threshold``. ``cv_ap``: pooled out-of-fold AP, ``cv_ap_std``
    its spread (std over folds). ``oof``: the out-of-fold z-scores the decision was made on;
    ``calibration``: what turns a score into a probability (:meth:`probability`). All three are None/NaN
    when there were too few examples (groups) to cross-validate.
    """

    method: str
    mean: np.ndarray
    std: np.ndarray
    threshold: float
    score_ref: Ref
    coef: np.ndarray | None = None
    intercept: float = 0.0
    C: float = float("nan")
    proto_pos: np.ndarray | None = None
    proto_neg: np.ndarray | None = None
    probe_ref: Ref | None = None
    proto_ref: Ref | None = None
    cv_ap: float = float("nan")
    cv_ap_std: float = float("nan")
    n_pos: int = 0
    n_neg: int = 0
    n_sampled: int = 0
    n_reference: int = 0
    calibration: Calibration | None = None
    oof: OutOfFold | None = None
    rule: Rule = field(default_factory=Rule)
    version: int = field(default=FORMAT_VERSION)

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return int(self.mean.shape[0])

    @property
    def uses_probe(self) -> bool:
        return self.method in ("probe", "ensemble")

    @property
    def uses_prototype(self) -> bool:
        return self.method in ("prototype", "ensemble")

    @cached_property
    def _projection(self) -> np.ndarray:
        """(d, 2) float32: columns coef / std and proto_pos - proto_neg (zeros where unused)."""
        P = np.zeros((self.dim, 2), dtype=np.float64)
        if self.uses_probe:
            P[:, 0] = self.coef / self.std.astype(np.float64)
        if self.uses_prototype:
            P[:, 1] = self.proto_pos.astype(np.float64) - self.proto_neg
        return P.astype(np.float32)

    def components(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probe logits and prototype scores of ``X`` (n, d): two (n,) float32 (zeros where unused)."""
        proj, norms = _project(X, self.mean, self._projection, self.uses_prototype)
        return self._split(proj, norms)

    def _split(self, proj: np.ndarray, norms: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Components from ``(Xc @ _projection)`` (n, 2) and the centred rows' norms (n,)."""
        probe = (
            proj[:, 0] + np.float32(self.intercept) if self.uses_probe else np.zeros(len(proj), np.float32)
        )
        proto = np.zeros(len(proj), np.float32)
        if self.uses_prototype:
            with np.errstate(invalid="ignore"):  # inf rows become NaN, reported by score()
                proto = proj[:, 1] / np.maximum(norms, np.finfo(np.float32).tiny)
        return probe, proto

    def combine(self, probe: np.ndarray, proto: np.ndarray) -> np.ndarray:
        """The method's score from its components (see the class docstring); same shape."""
        return combine_scores(self.method, probe, proto, self.probe_ref, self.proto_ref)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Scores (n,) float32 of track vectors ``X`` (n, d). Each row is scored independently, so scoring
        new tracks in any batches gives the scores a full rescoring would (up to float32 rounding)."""
        return _finite(self.combine(*self.components(X)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``score(X) >= threshold``: (n,) bool."""
        return self.score(X) >= self.threshold

    def to_z(self, scores: np.ndarray) -> np.ndarray:
        """Scores in units of the reference sample's spread: (scores - centre) / scale."""
        return (np.asarray(scores, dtype=np.float64) - self.score_ref[0]) / self.score_ref[1]

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64, same shape) of scores; NaN for an uncalibrated model."""
        if self.calibration is None:
            return np.full(np.shape(scores), np.nan)
        return self.calibration.probability(self.to_z(scores))

    @property
    def threshold_probability(self) -> float:
        """The calibrated probability at the threshold (NaN for an uncalibrated model)."""
        return float(self.probability(np.array([self.threshold]))[0])

    @property
    def expected(self) -> tuple[float, float]:
        """Expected (precision, recall) on the catalogue at the threshold, from cross-validation (NaN, NaN
        for an uncalibrated model)."""
        if self.oof is None or self.calibration is None:
            return float("nan"), float("nan")
        return self.oof.operating_point(float(self.to_z(self.threshold)), self.calibration.prior)

    @property
    def base_rate(self) -> float:
        """The estimated share of the catalogue carrying the tag (NaN for an uncalibrated model)."""
        return float("nan") if self.calibration is None else self.calibration.prior

    # --- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, np.ndarray]:
        """Flat dict of numpy arrays (unused parts omitted), tagged with the format name and version."""
        d: dict[str, np.ndarray] = {
            "format": np.asarray(FORMAT),
            "version": np.asarray(FORMAT_VERSION, dtype=np.int64),  # the layout written is always this one
            "method": np.asarray(self.method),
            "mean": np.asarray(self.mean, dtype=np.float32),
            "std": np.asarray(self.std, dtype=np.float32),
            "scalars": np.asarray([self.threshold, self.intercept, self.C, self.cv_ap, self.cv_ap_std]),
            "counts": np.asarray([self.n_pos, self.n_neg, self.n_sampled, self.n_reference], np.int64),
            "score_ref": np.asarray(self.score_ref, dtype=np.float64),
            "rule": np.asarray([self.rule.kind, "" if self.rule.value is None else repr(float(self.rule.value))]),
        }
        if self.calibration is not None:
            c = self.calibration
            d["calibration"] = np.asarray([c.a, c.b, c.prior], dtype=np.float64)
        if self.oof is not None:
            o = self.oof
            d["oof_pos"], d["oof_neg"], d["oof_w"], d["oof_catalogue"] = o.pos, o.neg, o.w, o.catalogue
        for name in ("coef", "proto_pos", "proto_neg"):
            if getattr(self, name) is not None:
                d[name] = np.asarray(getattr(self, name), dtype=np.float32)
        for name in ("probe_ref", "proto_ref"):
            if getattr(self, name) is not None:
                d[name] = np.asarray(getattr(self, name), dtype=np.float64)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, np.ndarray]) -> TagModel:
        """Inverse of :meth:`to_dict`; StoreFormatError for another format or a newer version."""
        try:
            if str(d["format"]) != FORMAT:
                raise StoreFormatError(f"not a tagstore tag model (format {str(d['format'])!r})")
            version = int(d["version"])
            if version > FORMAT_VERSION:
                raise StoreFormatError(
                    f"tag model format version {version} is newer than this tagstore's {FORMAT_VERSION}; "
                    "upgrade tagstore"
                )
            method = str(d["method"])
            if method not in METHODS:
                raise StoreFormatError(f"tag model has unknown method {method!r}")
            threshold, intercept, C, cv_ap, last = (float(v) for v in d["scalars"])
            cv_ap_std = last if version >= 2 else float("nan")  # version 1 stored the CV F1 there
            n_pos, n_neg, n_sampled, n_reference = (int(v) for v in d["counts"][:4])
            rule = Rule()
            if "rule" in d:
                kind, value = (str(v) for v in d["rule"])
                rule = Rule(kind, float(value) if value else None)
            calibration = Calibration(*(float(v) for v in d["calibration"])) if "calibration" in d else None
            oof = None
            if "oof_pos" in d:
                oof = OutOfFold(*(np.asarray(d[k], np.float64) for k in ("oof_pos", "oof_neg", "oof_w", "oof_catalogue")))

            def ref(name: str) -> Ref | None:
                return (float(d[name][0]), float(d[name][1])) if name in d else None

            def arr(name: str) -> np.ndarray | None:
                return np.asarray(d[name], dtype=np.float32) if name in d else None

            return cls(
                method=method, mean=arr("mean"), std=arr("std"), threshold=threshold,
                score_ref=ref("score_ref"), coef=arr("coef"), intercept=intercept, C=C,
                proto_pos=arr("proto_pos"), proto_neg=arr("proto_neg"), probe_ref=ref("probe_ref"),
                proto_ref=ref("proto_ref"), cv_ap=cv_ap, cv_ap_std=cv_ap_std, n_pos=n_pos, n_neg=n_neg,
                n_sampled=n_sampled, n_reference=n_reference, calibration=calibration, oof=oof, rule=rule,
                version=version,
            )  # fmt: skip
        except KeyError as e:
            raise StoreFormatError(f"tag model is missing {e.args[0]!r}; refit the tag") from None

    def to_bytes(self) -> bytes:
        """An ``.npz`` archive of :meth:`to_dict` (no pickle), for a BLOB column."""
        buf = io.BytesIO()
        np.savez(buf, **self.to_dict())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TagModel:
        """Inverse of :meth:`to_bytes`; StoreFormatError for bytes that are not a tag model."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                d = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise StoreFormatError(f"stored tag model is unreadable ({e}); refit the tag") from None
        return cls.from_dict(d)


def _project(
    X: np.ndarray, mean: np.ndarray, P: np.ndarray, norms: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(X - mean) @ P`` (n, k) float32 and, if asked, the centred rows' L2 norms (n,), in row chunks."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != mean.shape[0]:
        raise TagError(
            f"track vectors have shape {X.shape}, the tag model expects (n, {mean.shape[0]}); "
            "use vectors of the store's embedder layout"
        )
    proj = np.empty((X.shape[0], P.shape[1]), np.float32)
    out_norms = np.empty(X.shape[0], np.float32) if norms else None
    # A (chunk, d) @ (d, 2T) product is memory-bound: BLAS threads only add start-up and contention per call.
    with one_blas_thread():
        for i in range(0, X.shape[0], SCORE_CHUNK):
            Xc = np.subtract(X[i : i + SCORE_CHUNK], mean, dtype=np.float32)
            proj[i : i + SCORE_CHUNK] = Xc @ P
            if out_norms is not None:
                out_norms[i : i + SCORE_CHUNK] = np.sqrt(np.einsum("ij,ij->i", Xc, Xc))
    return proj, out_norms


def _finite(scores: np.ndarray) -> np.ndarray:
    """``scores``, or TagError naming the first row whose input held NaN or inf."""
    bad = ~np.isfinite(scores)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(scores), -1).any(axis=1))[0])
        raise TagError(f"track vector row {row} contains NaN or inf; re-embed it")
    return scores


def score_tags(models: list[TagModel], X: np.ndarray) -> np.ndarray:
    """Scores (n, T) float32 of track vectors ``X`` (n, d) under T tag models (column t: models[t]).

    Equal to ``model.score(X)`` per column; models fitted with the same catalogue mean share one pass over
    X (one centring, one (d, 2T) matrix product), so many tags cost little more than one.
    """
    out = np.empty((np.asarray(X).shape[0], len(models)), dtype=np.float32)
    groups: dict[bytes, list[int]] = {}
    for t, model in enumerate(models):
        groups.setdefault(model.mean.tobytes(), []).append(t)
    for ts in groups.values():
        group = [models[t] for t in ts]
        P = np.hstack([m._projection for m in group])
        proj, norms = _project(X, group[0].mean, P, any(m.uses_prototype for m in group))
        for j, (t, m) in enumerate(zip(ts, group, strict=True)):
            out[:, t] = m.combine(*m._split(proj[:, 2 * j : 2 * j + 2], norms))
    return _finite(out)
