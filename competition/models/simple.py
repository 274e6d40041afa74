"""The article's simple U-Net: strided-conv encoder, transposed-conv decoder, no skips, no pooling."""
from __future__ import annotations

import keras
from keras import layers


def build_simple(input_shape: tuple[int, int, int] = (96, 128, 3), filters: int = 64,
                 name: str = "simple") -> keras.Model:
    """Conv2D f/2f/4f stride 2 + stride 1, then Conv2DTranspose 4f/2f/f stride 1 + stride 2; 3x3 sigmoid."""
    h, w = input_shape[:2]
    if (h or 0) % 8 or (w or 0) % 8:  # None: any multiple of 8
        raise ValueError(f"input {h}x{w} is not a multiple of 8")
    conv = dict(activation="relu", padding="same", kernel_initializer="he_normal")
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, n in enumerate((filters, filters * 2, filters * 4), start=1):
        x = layers.Conv2D(n, 3, strides=2, name=f"enc{i}_down", **conv)(x)
        x = layers.Conv2D(n, 3, name=f"enc{i}_conv", **conv)(x)
    for i, n in enumerate((filters * 4, filters * 2, filters), start=1):
        x = layers.Conv2DTranspose(n, 3, name=f"dec{i}_conv", **conv)(x)
        x = layers.Conv2DTranspose(n, 3, strides=2, name=f"dec{i}_up", **conv)(x)
    logits = layers.Conv2D(1, 3, padding="same", name="head_logits")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="mask")(logits)
    return keras.Model(inputs, outputs, name=name)
