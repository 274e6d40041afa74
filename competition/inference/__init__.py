"""Inference: fold models x TTA (predictor.py), upsampling to native 1918x1280 (upsample.py), an ensemble of runs in
which one run is the one-member case (ensemble.py), and the streamed, resumable CSV (writer.py).

predict.py, score.py and refiner.py call it; it calls none of them.
"""
