"""The refiner net: a small second-stage net that corrects the first stage's upsampled probability with the photo.

It sees the photo at the guide's resolution (inference/upsample.py) beside the first stage's probability resized
to it, and outputs a correction to that probability's logit: a few dilated 3x3 convolutions (receptive field 35
guide pixels). refiner.py trains it; inference/predictor.py loads and runs it.
"""
from __future__ import annotations

import numpy as np

from .cost import forward_flops
from .runtime import dtype_policy

CHANNELS = 16
DILATIONS = (1, 2, 4, 8, 1)  # after a first 3x3 convolution: receptive field 1 + 2 * (1 + 1 + 2 + 4 + 8 + 1) = 35

def refiner_inputs(photo: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Photo (H, W, 3) uint8 and probability (H, W) in 0..1 -> (H, W, 4) float32: colours centred on 0, then
    the probability's logit / 4 (the channel the net corrects)."""
    p = np.clip(prob.astype(np.float32), 1e-3, 1 - 1e-3)
    return np.concatenate([photo.astype(np.float32) / 255.0 - 0.5, (np.log(p / (1 - p)) / 4)[..., None]], -1)


def build_refiner(channels: int | None = None, policy: str = "float32", size: tuple[int, int] | None = None):
    """sigmoid(logit + correction): the correction's last layer starts at zero, so an untrained refiner returns
    its input probability unchanged. `policy` "mixed_bfloat16" computes the convolutions in bfloat16 (a
    mixed-precision run on a CPU with bfloat16 instructions: `refiner_policy`); the logit it corrects, the
    correction's last layer, their sum and the sigmoid stay float32 whatever the policy (bfloat16 keeps 8 bits
    of a logit: 0.03 at a logit of 4). `size`: a fixed input size (what `refiner_flops` counts over); any by default."""
    import keras

    channels = channels or CHANNELS
    exact = "float32"
    with dtype_policy(policy):
        x = keras.Input((*(size or (None, None)), 4), name="photo_and_logit")
        pick = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="logit", dtype=exact)  # 4 x the last
        logit = pick(x)                                                                                 # channel
        h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv0")(x)
        for i, d in enumerate(DILATIONS, 1):
            h = keras.layers.Conv2D(channels, 3, padding="same", dilation_rate=d, activation="relu",
                                    name=f"conv{i}")(h)
        correction = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", name="correction", dtype=exact)(h)
        summed = keras.layers.Add(name="corrected", dtype=exact)([logit, correction])
        out = keras.layers.Activation("sigmoid", name="refined", dtype=exact)(summed)
    pick.set_weights([np.array([0.0, 0.0, 0.0, 4.0], np.float32).reshape(1, 1, 4, 1)])
    return keras.Model(x, out, name="refiner")


def refiner_flops(height: int, width: int, channels: int | None = None) -> float:
    """FLOPs of build_refiner's pass over one height x width guide (what `plan` costs the refiner's pass by on a GPU),
    counted by models.cost like every other network's."""
    import keras

    flops = forward_flops(build_refiner(channels, size=(height, width)))
    keras.backend.clear_session()
    return float(flops)
