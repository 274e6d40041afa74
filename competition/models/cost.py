"""What a built Keras model costs: FLOPs of one image's forward pass and a training step's memory. One counter for
every network here (the U-Nets, the encoder U-Nets, the refiner): `plan` prices recipes with it, `bench`
estimates GPU throughput with it."""
from __future__ import annotations

from typing import Any

import numpy as np


def _layer_flops(layer: Any) -> int:
    """Multiply-adds x 2 of one convolution or dense layer's forward pass for one image; 0 for the others."""
    from keras import layers
    if not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Conv2DTranspose, layers.Dense)):
        return 0
    cin = int(layer.input.shape[-1])
    out = [int(d) for d in layer.output.shape[1:]]
    if isinstance(layer, layers.Dense):
        return 2 * int(np.prod(out[:-1] or [1])) * cin * out[-1]
    kh, kw = layer.kernel_size
    if isinstance(layer, layers.DepthwiseConv2D):
        return 2 * out[0] * out[1] * kh * kw * out[2]
    if isinstance(layer, layers.Conv2DTranspose):  # each input pixel scatters a kh x kw x cout patch
        hin, win = (int(d) for d in layer.input.shape[1:3])
        return 2 * hin * win * kh * kw * cin * out[2]
    return 2 * out[0] * out[1] * kh * kw * (cin // layer.groups) * out[2]


def forward_flops(model: Any) -> int:
    """FLOPs (2 x multiply-adds) of one image's forward pass through the convolutions and dense layers."""
    total = 0
    for layer in model.layers:
        total += forward_flops(layer) if hasattr(layer, "layers") else _layer_flops(layer)
    return total


def activation_elements(model: Any) -> int:
    """Elements of every layer's output for one image: the activations a training step keeps for backprop."""
    from keras import layers
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers"):
            total += activation_elements(layer)
        elif not isinstance(layer, layers.InputLayer):
            outs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
            total += sum(int(np.prod(o.shape[1:])) for o in outs)
    return total


def training_memory_estimate(model: Any, batch: int, activation_bytes: int = 4) -> int:
    """Bytes a training step needs, roughly: every activation kept once, plus weights, gradients and Adam's two
    moments in float32. An estimate (no workspace, no fused or recomputed ops); measured figures: docs/guide.md."""
    return batch * activation_elements(model) * activation_bytes + 4 * 4 * model.count_params()
