"""A run folder and its files: config, folds, the ids of each fold, trained folds, digests, out-of-fold
probabilities, the refiner's files, the resume protocol (backup/ and state.json), history.csv and curves, and
--mirror copies. No TensorFlow here."""
