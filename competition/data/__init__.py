"""Data: the dataset view over Kaggle's layouts, folds, the synthetic dataset, downloads, pipelines."""
