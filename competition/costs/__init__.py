"""What work costs: the facts it is priced from (image counts, GPU peaks, Kaggle's quota), `plan` (a recipe in GPU
hours before it is spent) and `calibrate` (measured speed on an accelerator)."""
