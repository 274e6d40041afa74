"""Scoring: Kaggle's dice at native resolution on held-out folds, per image and per fold, tables and cv.md, and
the HTML report drawn from what scoring saved."""
