"""Everything that talks to Kaggle or runs on it: the `kaggle` package's calls, the download and the upload of
submissions, kernel specs and machines, the records of pushed kernels, the queue, checkpoints, the notebook, and
what a kernel runs on Kaggle."""
