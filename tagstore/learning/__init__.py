"""Tag learning on frozen embeddings: the numerical core, on numpy arrays (no DuckDB, no CLI, no
scipy or scikit-learn).

After Ma & Lerch (2024), "Music auto-tagging in the long tail: a few-shot approach": a per-tag linear
probe on standardised embeddings learns rare tags from 1-20 examples; prototypes help at 1-5; an
ensemble averages both on a common catalogue z scale. Entry point: :func:`fit_tag` -> :class:`TagModel`.

stats (the one catalogue mean/std, input checks) · sampling (the tag seed, the unlabelled sample) ·
probe (exact logistic regression) · metrics (AP, ROC-AUC, folds, F1 threshold, reference constants) ·
model (TagModel, serialisation) · fit (fit_tag) · neighbours (propagate, suggest, explain).
"""

from __future__ import annotations

from tagstore.learning.fit import FALLBACK_Z, N_FOLDS, UNLABELLED_WEIGHT, fit_tag
from tagstore.learning.metrics import average_precision, best_f1_threshold
from tagstore.learning.model import FORMAT_VERSION, METHODS, TagModel, score_tags
from tagstore.learning.neighbours import Contribution, Explanation, Suggestion, explain, propagate, suggest
from tagstore.learning.probe import C_DEFAULT, C_GRID, fit_probe
from tagstore.learning.stats import CatalogueStats

__all__ = [
    "C_DEFAULT", "C_GRID", "FALLBACK_Z", "FORMAT_VERSION", "METHODS", "N_FOLDS", "UNLABELLED_WEIGHT",
    "CatalogueStats", "Contribution", "Explanation", "Suggestion", "TagModel",
    "average_precision", "best_f1_threshold", "explain", "fit_probe", "fit_tag", "propagate",
    "score_tags", "suggest",
]  # fmt: skip
