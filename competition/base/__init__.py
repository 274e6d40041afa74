"""The small pieces every layer shares: one-line user errors, atomic file writing, the console (progress bars,
--quiet, TensorFlow's start-up chatter), Kaggle's RLE, GIF masks, JPEG decoding, native <-> model size, TTA pairs,
--time-limit. Imports nothing of the package but its root."""
