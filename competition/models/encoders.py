"""Pretrained `keras.applications` backbones under a U-Net decoder with a skip at every scale.

`ENCODERS` is the one table: for each name, the keras.applications constructor, the skip layers from
the highest resolution to the lowest with their output strides, the bottleneck layer (stride 32), the
backbone's input preprocessing and the file keras.applications downloads for its ImageNet weights.

The model is image (float32 RGB in [0, 1], as every model of the toolkit takes) -> `preprocess` (a frozen
1x1 convolution holding the backbone's own preprocessing: scale, channel order, mean) -> `encoder` (the
backbone as a nested model with one output per skip and the bottleneck) -> decoder blocks (upsample,
concatenate the skip, two 3x3 convolutions) -> `mask` (float32 sigmoid). Only stock Keras layers: the
saved model.keras loads with `models.saving.load_model` and no custom_objects, so predict, score and
kernels treat it like any other model.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..base.errors import UserError
from .saving import load_model

ENCODER_LAYER = "encoder"        # the nested backbone model: what --freeze-encoder freezes
PREPROCESS_LAYER = "preprocess"  # the frozen 1x1 convolution in front of it
FINETUNE_LR_FACTOR = 0.1         # after --freeze-encoder epochs: the learning rate becomes lr * this
BOTTLENECK_STRIDE = 32


@dataclass(frozen=True)
class Encoder:
    """One backbone: where its skips are, how it wants its input, which file holds its ImageNet weights."""

    constructor: str               # keras.applications.<constructor>(include_top=False, ...)
    skips: tuple[str, ...]         # skip layers, highest resolution first
    strides: tuple[int, ...]       # output stride of each skip (input side / skip side)
    bottleneck: str                # the deepest feature map, stride 32
    preprocess: str                # "caffe" (BGR, 0..255 less the ImageNet mean) | "tf" (-1..1) | "raw255" (0..255)
    weights_file: str              # the no-top ImageNet file keras.applications fetches into ~/.keras/models/


ENCODERS: dict[str, Encoder] = {
    # TernausNet's choice (a VGG encoder); skips at full resolution too: the best edges, the most memory.
    "vgg16": Encoder("VGG16", ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
                     (1, 2, 4, 8, 16), "block5_pool", "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # The ResNet family of the 1st place (ResNet34 / LinkNet34; Keras ships ResNet50 as its smallest).
    "resnet50": Encoder("ResNet50", ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
                        (2, 4, 8, 16), "conv5_block3_out", "caffe",
                        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # Cheap and strong: ImageNet top-1 above ResNet50's with a sixth of its parameters and FLOPs.
    "efficientnetb0": Encoder("EfficientNetB0", ("block2a_expand_activation", "block3a_expand_activation",
                                                 "block4a_expand_activation", "block6a_expand_activation"),
                              (2, 4, 8, 16), "top_activation", "raw255", "efficientnetb0_notop.h5"),
    # The cheapest: trains on a CPU or a small GPU.
    "mobilenetv2": Encoder("MobileNetV2", ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                                           "block_13_expand_relu"), (2, 4, 8, 16), "out_relu", "tf",
                           "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
}

# ImageNet channel means (RGB) on the 0..255 scale, as keras.applications' "caffe" preprocessing subtracts them.
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


def encoder_spec(name: str) -> Encoder:
    """The table's entry for `name`; an unknown name is a one-line UserError listing the known ones."""
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def preprocess_affine(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(kernel[in, out], bias[out]) mapping RGB in [0, 1] to what a backbone with `mode` preprocessing takes."""
    if mode == "caffe":  # RGB -> BGR, 0..255, ImageNet mean subtracted
        kernel = np.zeros((3, 3), np.float32)
        for c in range(3):
            kernel[c, 2 - c] = 255.0
        return kernel, -np.array(_CAFFE_MEAN_RGB[::-1], np.float32)
    if mode == "tf":  # -1..1
        return 2.0 * np.eye(3, dtype=np.float32), -np.ones(3, np.float32)
    if mode == "raw255":  # 0..255: the backbone normalises inside itself
        return 255.0 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)
    raise ValueError(f"unknown preprocessing {mode!r}")


def keras_cache_dir() -> Path:
    """Where keras.applications looks for (and downloads) weight files: $KERAS_HOME or ~/.keras, then models/."""
    try:
        from keras.src.backend import config
        home = config.keras_home()
    except (ImportError, AttributeError):
        home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(os.path.expanduser(home)) / "models"


def _no_imagenet(name: str, spec: Encoder, error: BaseException) -> UserError:
    return UserError(
        f"could not download the ImageNet weights of encoder {name} ({' '.join(str(error).split())[:160]}): "
        f"put {spec.weights_file} in {keras_cache_dir()}/ (Keras' cache), or pass --encoder-weights PATH to that "
        f"file, or --encoder-weights none; on Kaggle attach it as a dataset with --weights-dataset user/slug")


def build_backbone(name: str, input_shape: tuple[int, int, int], weights: str = "none") -> Any:
    """The keras.applications backbone without its top; weights "imagenet" | "none" | a file (see load_weights)."""
    import keras
    spec = encoder_spec(name)
    constructor = getattr(keras.applications, spec.constructor)
    if weights != "imagenet":
        backbone = constructor(include_top=False, weights=None, input_shape=input_shape)
        if weights not in ("", "none"):
            load_weights(backbone, Path(weights), name)
        return backbone
    try:
        with warnings.catch_warnings():  # "weights for input shape (224, 224) will be loaded": right for a U-Net's
            warnings.filterwarnings("ignore", message=".*input_shape.*")  # convolutions, and not the user's to act on
            return constructor(include_top=False, weights="imagenet", input_shape=input_shape)
    except Exception as e:  # keras' get_file raises a bare Exception ("URL fetch failure ...") when offline
        if (keras_cache_dir() / spec.weights_file).is_file():
            raise  # the file is there: not a download failure
        raise _no_imagenet(name, spec, e) from e


def fetch_imagenet(name: str) -> None:
    """The ImageNet weights of encoder `name` in Keras' cache, downloaded now when missing (a one-line UserError when
    they cannot be): `train` asks before it writes anything, so a failed download leaves the run folder as it was."""
    if (keras_cache_dir() / encoder_spec(name).weights_file).is_file():
        return
    import keras
    build_backbone(name, (BOTTLENECK_STRIDE * 2, BOTTLENECK_STRIDE * 2, 3), "imagenet")  # the weights fit any size
    keras.backend.clear_session()


def _weight_layers(model: Any) -> dict[str, Any]:
    """name -> layer, for every layer with weights, nested models included."""
    found: dict[str, Any] = {}
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found.update(_weight_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def load_weights(backbone: Any, path: Path, name: str) -> None:
    """Backbone weights from `path`: a .h5 / .weights.h5 of the backbone (the ImageNet file keras.applications
    downloads, or `backbone.save_weights`), or a saved .keras model whose layers of the same names give them
    (a model of this toolkit with this encoder, or a saved keras.applications model)."""
    if not path.is_file():
        raise UserError(f"--encoder-weights {path}: no such file (expected 'imagenet', 'none' or a weights file)")
    if zipfile.is_zipfile(path) and not path.name.endswith(".weights.h5"):
        _load_from_model(backbone, path, name)
        return
    try:
        backbone.load_weights(str(path))
    except (ValueError, KeyError, OSError) as e:
        raise UserError(f"--encoder-weights {path}: not weights of the {name} backbone "
                        f"({' '.join(str(e).split())[:200]})") from e


def _load_from_model(backbone: Any, path: Path, name: str) -> None:
    """Copy the weights of every backbone layer from the layer of the same name in the saved model at `path`."""
    from . import losses  # noqa: F401  registers the toolkit's loss for models saved compiled
    source = _weight_layers(load_model(path, compile=False, rebuild="pass another --encoder-weights file"))
    targets = _weight_layers(backbone)
    missing = [n for n in targets if n not in source]
    if missing:
        raise UserError(f"--encoder-weights {path}: has no layer {missing[0]} (and {len(missing) - 1} more) of the "
                        f"{name} backbone; is it a model with --encoder {name}?")
    for layer_name, layer in targets.items():
        try:
            layer.set_weights(source[layer_name].get_weights())
        except ValueError as e:
            raise UserError(f"--encoder-weights {path}: layer {layer_name} does not fit the {name} backbone "
                            f"({' '.join(str(e).split())[:160]})") from e


def feature_model(backbone: Any, name: str) -> Any:
    """The backbone as one model with an output per skip (highest resolution first), then the bottleneck."""
    import keras
    spec = encoder_spec(name)
    outputs = [backbone.get_layer(n).output for n in (*spec.skips, spec.bottleneck)]
    return keras.Model(backbone.inputs, outputs, name=ENCODER_LAYER)


def build_encoder_unet(input_shape: tuple[int, int, int], encoder: str, weights: str = "none", filters: int = 16,
                       batchnorm: bool = True, freeze: bool = False, name: str | None = None) -> Any:
    """U-Net on a keras.applications backbone: decoder block at stride s has filters * s filters (16: 256..16)."""
    import keras
    from keras import layers

    from .unet import upsampling_block
    spec = encoder_spec(encoder)
    h, w = input_shape[:2]  # None: any multiple of the stride (a crop-trained model takes crops and frames)
    if (h or 0) % BOTTLENECK_STRIDE or (w or 0) % BOTTLENECK_STRIDE:
        raise ValueError(f"input {h}x{w} is not a multiple of {BOTTLENECK_STRIDE}")
    features = feature_model(build_backbone(encoder, input_shape, weights), encoder)
    features.trainable = not freeze
    inputs = keras.Input(input_shape, name="image")
    prep = layers.Conv2D(3, 1, name=PREPROCESS_LAYER, dtype="float32", trainable=False,
                         kernel_initializer="zeros", bias_initializer="zeros")
    *skips, x = features(prep(inputs))
    kernel, bias = preprocess_affine(spec.preprocess)
    prep.set_weights([kernel[None, None], bias])
    by_stride = dict(zip(spec.strides, skips))
    stride = BOTTLENECK_STRIDE
    while stride > 1:
        stride //= 2
        level = stride.bit_length()  # dec1 at stride 1, like the plain U-Net's
        x = upsampling_block(x, by_stride.get(stride), filters * stride, f"dec{level}", batchnorm)
    logits = layers.Conv2D(1, 1, padding="same", name="head_logits")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="mask")(logits)
    return keras.Model(inputs, outputs, name=name or f"unet_{encoder}")


def set_encoder_trainable(model: Any, trainable: bool) -> bool:
    """Freeze or unfreeze the backbone of an encoder U-Net (the preprocessing stays frozen); False if none."""
    try:
        encoder = model.get_layer(ENCODER_LAYER)
    except ValueError:
        return False
    encoder.trainable = trainable
    return True
