"""Training: the fit loop of a fold, its callbacks, the refiner net's training, and one stage = the fold and the
refiner its preset asks for (what `train` runs)."""
