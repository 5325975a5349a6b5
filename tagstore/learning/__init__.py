"""Tag learning on frozen embeddings: the numerical core, on numpy arrays (no DuckDB, no CLI, no
scipy or scikit-learn).

After Ma & Lerch (2024), "Music auto-tagging in the long tail: a few-shot approach": a per-tag linear
probe on standardised embeddings learns rare tags from 1-20 examples; prototypes help at 1-5; an
ensemble averages both on a common catalogue z scale. Entry point: :func:`fit_tag` -> :class:`TagModel`.

stats (the one catalogue mean/std, input checks) · sampling (the fixed-order unlabelled sample) ·
probe (exact logistic regression) · metrics (AP, ROC-AUC, F1 threshold, reference constants) ·
decision (grouped folds, calibration, threshold rules) · model (TagModel, serialisation) · fit (fit_tag) ·
neighbours (propagate, suggest, explain).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tagstore.learning.decision import Calibration, OutOfFold, Rule
    from tagstore.learning.fit import FALLBACK_Z, N_FOLDS, UNLABELLED_WEIGHT, fit_tag, rethreshold
    from tagstore.learning.metrics import average_precision, best_f1_threshold
    from tagstore.learning.model import FORMAT_VERSION, METHODS, TagModel, score_tags
    from tagstore.learning.neighbours import Contribution, Explanation, Suggestion, explain, propagate, suggest
    from tagstore.learning.probe import C_DEFAULT, C_GRID, fit_probe
    from tagstore.learning.stats import CatalogueStats

_HOMES = {
    "decision": ("Calibration", "OutOfFold", "Rule"),
    "fit": ("FALLBACK_Z", "N_FOLDS", "UNLABELLED_WEIGHT", "fit_tag", "rethreshold"),
    "metrics": ("average_precision", "best_f1_threshold"),
    "model": ("FORMAT_VERSION", "METHODS", "TagModel", "score_tags"),
    "neighbours": ("Contribution", "Explanation", "Suggestion", "explain", "propagate", "suggest"),
    "probe": ("C_DEFAULT", "C_GRID", "fit_probe"),
    "stats": ("CatalogueStats",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """The public names, each loaded from its module on first use (``tagstore.learning.stats`` alone stays cheap)."""
    if name in _HOME_OF:
        return getattr(importlib.import_module(f"tagstore.learning.{_HOME_OF[name]}"), name)
    raise AttributeError(f"module 'tagstore.learning' has no attribute {name!r}")


__all__ = [
    "C_DEFAULT", "C_GRID", "FALLBACK_Z", "FORMAT_VERSION", "METHODS", "N_FOLDS", "UNLABELLED_WEIGHT",
    "Calibration", "CatalogueStats", "Contribution", "Explanation", "OutOfFold", "Rule", "Suggestion",
    "TagModel", "average_precision", "best_f1_threshold", "explain", "fit_probe", "fit_tag", "propagate",
    "rethreshold", "score_tags", "suggest",
]  # fmt: skip
