"""Implementation of tag learning; the public API is :mod:`tagstore.learn`.

stats (catalogue normalisation, input checks) · probe (exact logistic regression) · metrics (folds, AP,
F1 threshold, reference constants) · model (TagModel, serialisation) · fit (fit_tag) · neighbours
(propagate, suggest, explain). Pure numpy: no DuckDB, no CLI, no scipy or scikit-learn.
"""
