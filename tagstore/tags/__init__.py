"""Learned tags in the store: examples (resolving and keeping them), fitting (one refit: fit → score →
save), assists (propagate, suggest, explain) and views (listings). The numerical core is
:mod:`tagstore.learning`; the statements are :mod:`tagstore.catalogue.tags`.
"""
