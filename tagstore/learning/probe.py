"""L2-regularised logistic regression (the linear probe), solved exactly by Newton's method.

Objective, identical to scikit-learn's ``LogisticRegression(penalty="l2", C=C)``::

    min_{w, b}  C * sum_i s_i * log(1 + exp(-y_i (x_i . w + b)))  +  0.5 * ||w||^2

with y_i in {-1, +1}, s_i = sample_weight_i * class_weight[y_i] and the intercept b not penalised.

The probe sees few examples (n ~ 2-600) in many dimensions (d ~ 300-2,000), so the solver works in the
n-dimensional span of the examples: w = X^T a (the representer theorem: every gradient of the objective
lies in that span, so the minimiser does too). With the Gram matrix K = X X^T each Newton step solves one
(n+1) x (n+1) system, whatever d is; the step taken equals the primal Newton step, so convergence is
quadratic and the result is exact to ~1e-10 in objective. Cross-validation reuses blocks of one K.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tagstore.errors import TagError

C_GRID = (0.03, 0.1, 0.3)
"""Inverse L2 strengths tried by cross-validation (sample weights sum to n, features standardised). A
narrow grid: on the demo corpus (dsp, 3 draws) choosing among 1e-4..1 by out-of-fold AP lost 0.02-0.03
macro AP at K = 5-20 against this one (0.486/0.555/0.615 vs 0.511/0.578/0.620 at K = 5/10/20): with a
few held-out positives per fold the wide choice mostly fits noise (benchmarks/README.md, issue 11)."""
C_DEFAULT = 0.1
"""C used when there are too few examples to cross-validate it (K = 1, 2): the grid's middle (K = 2 on the
demo corpus with dsp: 0.419 macro AP, against 0.409 at the former 0.01)."""


def class_weights(
    y: np.ndarray,
    class_weight: None | str | Mapping[int, float] = None,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Per-sample weights ``s`` (n,) float64 with scikit-learn's (>= 1.7) semantics.

    y: (n,) labels in {0, 1} (or bool). ``class_weight="balanced"`` multiplies class c's sample weights
    by sum(sample_weight) / (2 * sum(sample_weight of class c)): both classes then carry the same total
    weight, and a down-weighted sample counts less only relative to others of its class.
    """
    y = np.asarray(y).astype(bool)
    s = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if s.shape != y.shape or (s < 0).any():
        raise TagError(f"sample_weight must be ({y.shape[0]},) and non-negative, got shape {s.shape}")
    if class_weight is None:
        return s.copy()
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise TagError(f"class_weight {class_weight!r} is not 'balanced', a mapping or None")
        total, pos = s.sum(), s[y].sum()
        if not (pos > 0 and total - pos > 0):
            raise TagError("class_weight='balanced' needs positive total weight in both classes")
        cw = {1: total / (2 * pos), 0: total / (2 * (total - pos))}
    else:
        cw = {int(k): float(v) for k, v in class_weight.items()}
    return s * np.where(y, cw.get(1, 1.0), cw.get(0, 1.0))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for any z (tanh form)."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def newton_kernel(
    K: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    C: float,
    alpha: np.ndarray | None = None,
    b: float = 0.0,
    tol: float = 1e-13,
    max_iter: int = 100,
) -> tuple[np.ndarray, float, int]:
    """Solve the probe objective in the span of the examples.

    K: (n, n) float64 Gram matrix of the (standardised) examples; y: (n,) in {-1, +1}; s: (n,) sample
    weights; alpha, b: optional warm start. Returns ``(alpha (n,), b, iterations)``; w = X^T alpha.
    Stops when half the Newton decrement (an estimate of f - f*) is below ``tol * max(1, f)``, or after
    a full step from a decrement below ``tol ** 0.7`` (Newton's quadratic convergence then reaches tol).
    """
    n = y.shape[0]
    cs = C * s
    alpha = np.zeros(n) if alpha is None else alpha.astype(np.float64, copy=True)
    Ka = K @ alpha
    A = np.empty((n + 1, n + 1))
    rhs = np.empty(n + 1)

    def objective(margins: np.ndarray, aKa: float) -> float:
        return float(cs @ np.logaddexp(0.0, -y * margins) + 0.5 * aKa)

    f = objective(Ka + b, alpha @ Ka)
    it = 0
    while it < max_iter:
        it += 1
        p = _sigmoid(y * (Ka + b))
        r = -cs * y * (1.0 - p)  # d loss / d margin
        D = cs * p * (1.0 - p)  # d2 loss / d margin2
        # Newton system for (u, db), dw = X^T u:
        #   (I + D K) u + D db = -(alpha + r);   D.K u + sum(D) db = -sum(r)
        A[:n, :n] = D[:, None] * K
        A[np.arange(n), np.arange(n)] += 1.0
        A[:n, n] = D
        A[n, :n] = D @ K
        A[n, n] = D.sum()
        g = alpha + r
        rhs[:n], rhs[n] = -g, -r.sum()
        sol = np.linalg.solve(A, rhs)
        u, db = sol[:n], float(sol[n])
        Ku = K @ u
        decrement = -(g @ Ku + r.sum() * db)
        if decrement <= 2.0 * tol * max(1.0, abs(f)):
            break
        aKa, uKa, uKu = alpha @ Ka, u @ Ka, u @ Ku
        t = 1.0
        while True:  # backtracking (Armijo); t = 1 is accepted near the optimum
            f_new = objective(Ka + b + t * (Ku + db), aKa + 2 * t * uKa + t * t * uKu)
            if f_new <= f - 1e-4 * t * decrement or t < 1e-10:
                break
            t *= 0.5
        if f_new > f:  # no progress possible in floating point: converged
            break
        alpha += t * u
        b += t * db
        Ka += t * Ku
        f = f_new
        if t == 1.0 and decrement <= 2.0 * tol**0.7 * max(1.0, abs(f)):
            break  # quadratic convergence: the full step left f - f* ~ decrement^2, below tol
    return alpha, b, it


def fit_probe(
    X: np.ndarray,
    y: np.ndarray,
    C: float,
    sample_weight: np.ndarray | None = None,
    class_weight: None | str | Mapping[int, float] = None,
) -> tuple[np.ndarray, float]:
    """Fit the probe on rows ``X`` (n, d) with labels ``y`` (n,) in {0, 1}; returns ``(w (d,) float64, b)``.

    Same minimiser as ``sklearn.linear_model.LogisticRegression(C=C, class_weight=class_weight)
    .fit(X, y, sample_weight=sample_weight)``: decision score = X @ w + b.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise TagError(f"probe data must be X (n, d) and y (n,), got {X.shape} and {y.shape}")
    if y.all() or not y.any():
        raise TagError("the probe needs examples of both classes (positives and negatives)")
    if not C > 0:
        raise TagError(f"C must be positive, got {C}")
    s = class_weights(y, class_weight, sample_weight)
    alpha, b, _ = newton_kernel(X @ X.T, np.where(y, 1.0, -1.0), s, C)
    return X.T @ alpha, b
