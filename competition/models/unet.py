"""One parametrised U-Net: depth, filters, pooling (max | strided), dropout, batch norm.

With depth 4, 64 filters, max-pooling and dropout 0.3 in the two deepest blocks it is exactly the
article's U-Net (conv_block / upsampling_block, he_normal, transposed-conv upsampling, final 3x3
conv then 1x1 sigmoid). Layer names are stable (`enc{i}_*`, `dec{i}_*`) so weights can be mapped.
"""
from __future__ import annotations

import keras
from keras import layers


def _conv(x, filters: int, name: str, batchnorm: bool, strides: int = 1):
    """3x3 convolution (+ batch norm) + ReLU, he_normal initialised."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", kernel_initializer="he_normal",
                      use_bias=not batchnorm, activation=None if batchnorm else "relu", name=name)(x)
    if batchnorm:
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def conv_block(x, filters: int, name: str, batchnorm: bool, dropout: float = 0.0):
    """Two 3x3 convolutions, then dropout if asked (the article's conv_block without the pooling)."""
    x = _conv(x, filters, f"{name}_conv1", batchnorm)
    x = _conv(x, filters, f"{name}_conv2", batchnorm)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def downsample(x, filters: int, name: str, pooling: str, batchnorm: bool):
    """Halve height and width: 2x2 max-pool, or a stride-2 3x3 convolution."""
    if pooling == "max":
        return layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return _conv(x, filters, f"{name}_down", batchnorm, strides=2)


def upsampling_block(x, skip, filters: int, name: str, batchnorm: bool):
    """3x3 stride-2 transposed convolution, concatenate the skip (when there is one), two 3x3 convolutions: the
    decoder block of the plain U-Net and of the encoder U-Nets (encoders.py) alike."""
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", kernel_initializer="he_normal",
                               name=f"{name}_up")(x)
    if skip is not None:
        x = layers.Concatenate(axis=-1, name=f"{name}_concat")([x, skip])
    return conv_block(x, filters, name, batchnorm)


def build_unet(input_shape: tuple[int, int, int] = (96, 128, 3), depth: int = 4, filters: int = 64,
               pooling: str = "max", dropout: float = 0.3, dropout_blocks: int = 2,
               batchnorm: bool = False, name: str = "unet") -> keras.Model:
    """U-Net with `depth` downsamplings; filters double per level; sigmoid probability output."""
    h, w = input_shape[:2]  # None, None: any size that is a multiple of 2^depth (for training on crops)
    if (h or 0) % 2**depth or (w or 0) % 2**depth:
        raise ValueError(f"input {h}x{w} is not a multiple of 2^{depth}={2**depth}")
    inputs = keras.Input(input_shape, name="image")
    x, skips = inputs, []
    for level in range(depth + 1):  # the last level is the bottleneck, without pooling
        n = filters * 2**level
        drop = dropout if level > depth - dropout_blocks else 0.0
        x = conv_block(x, n, f"enc{level + 1}", batchnorm, drop)
        if level < depth:
            skips.append(x)
            x = downsample(x, n, f"enc{level + 1}", pooling, batchnorm)
    for level in reversed(range(depth)):
        x = upsampling_block(x, skips[level], filters * 2**level, f"dec{level + 1}", batchnorm)
    x = _conv(x, filters, "head_conv", batchnorm)
    logits = layers.Conv2D(1, 1, padding="same", name="head_logits")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="mask")(logits)
    return keras.Model(inputs, outputs, name=name)
