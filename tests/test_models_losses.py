"""Model builders, losses and metrics on tiny hand-made arrays, serialisation, joint augmentation."""
import numpy as np
import pytest

import keras

from competition.models import losses
from competition.config import preset
from competition.base.errors import UserError
from competition.models import build_model
from competition.models.simple import build_simple
from competition.models.unet import build_unet


@pytest.mark.parametrize("depth, size", [(2, (32, 48)), (3, (64, 64)), (4, (96, 128)), (3, (40, 80))])
@pytest.mark.parametrize("pooling", ["max", "strided"])
def test_unet_builds_for_sizes(depth, size, pooling):
    m = build_unet(size + (3,), depth=depth, filters=4, pooling=pooling, dropout=0.3, dropout_blocks=1, batchnorm=True)
    assert m.output_shape == (None,) + size + (1,)
    assert m.get_layer("enc1_conv1") is not None and m.get_layer(f"dec{depth}_up") is not None


@pytest.mark.parametrize("size", [(96, 128), (64, 96), (40, 48)])
def test_simple_builds(size):
    assert build_simple(size + (3,), filters=4).output_shape == (None,) + size + (1,)


def test_seed_presets_are_the_article_models():
    simple, unet = preset("article-simple"), preset("article-unet")
    assert (simple.height, simple.width, simple.batch, simple.lr, simple.epsilon) == (96, 128, 32, 1e-4, 1e-6)
    assert simple.loss == unet.loss == "dice_global" and unet.patience == 2 and unet.monitor == "val_loss"
    m = build_model(unet)
    assert [l.rate for l in m.layers if isinstance(l, keras.layers.Dropout)] == [0.3, 0.3]
    assert sum(isinstance(l, keras.layers.MaxPooling2D) for l in m.layers) == 4
    assert m.get_layer("enc5_conv1").filters == 1024 and m.get_layer("head_conv").filters == 64
    assert m.get_layer("enc1_conv1").kernel_initializer.__class__.__name__ == "HeNormal"
    s = build_model(simple)
    assert [l.strides for l in s.layers if isinstance(l, keras.layers.Conv2D) and l.name.endswith("down")] == [(2, 2)] * 3
    assert not any(isinstance(l, keras.layers.Concatenate) for l in s.layers)
    strided = build_model(preset("article-unet-strided"))
    assert not any(isinstance(l, keras.layers.MaxPooling2D) for l in strided.layers)


@pytest.mark.parametrize("size", ["100x128", "96x130"])
def test_bad_size_is_one_line(size):
    h, w = (int(v) for v in size.split("x"))
    with pytest.raises(UserError, match=r"not a multiple of 16 .*try 96x128"):
        preset("article-unet", height=h, width=w)


def test_unknown_names_are_user_errors():
    for kwargs in ({"loss": "focal"}, {"arch": "resnet"}, {"pooling": "avg"}, {"threshold": 1.5}):
        with pytest.raises(UserError):
            preset("tiny", **kwargs)
    with pytest.raises(UserError, match="unknown preset"):
        preset("nope")


def _pair():
    t = np.zeros((2, 4, 4, 1), np.float32)
    p = np.zeros((2, 4, 4, 1), np.float32)
    t[0, :2, :2] = 1       # 4 true pixels
    p[0, :2, :1] = 1       # 2 of them predicted ...
    p[0, 3, 3] = 1         # ... plus 1 false positive
    return t, p            # image 1: both empty


def test_dice_values_by_hand():
    t, p = _pair()
    per_image = keras.ops.convert_to_numpy(losses.soft_dice_per_image(t, p, smooth=1.0))
    np.testing.assert_allclose(per_image, [(2 * 2 + 1) / (4 + 3 + 1), 1.0], rtol=1e-6)
    hard = keras.ops.convert_to_numpy(losses.hard_dice_per_image(t, p))
    np.testing.assert_allclose(hard, [4 / 7, 1.0], rtol=1e-6)
    g = float(losses.soft_dice_global(t, p))
    np.testing.assert_allclose(g, (4 + 1e-5) / (7 + 1e-5), rtol=1e-6)


def test_losses_perfect_and_disjoint():
    t, _ = _pair()
    t[1, 1, 1] = 1
    for kind in ("dice", "dice_global", "dice_bce"):
        perfect = float(keras.ops.mean(losses.SegmentationLoss(kind)(t, t)))
        assert perfect < 1e-3, kind
        disjoint = float(keras.ops.mean(losses.SegmentationLoss(kind, bce_weight=0.0)(t, 1 - t)))
        assert disjoint > 0.9, kind
    d = float(losses.SegmentationLoss("dice")(t, t * 0.5))
    b = float(losses.SegmentationLoss("bce")(t, t * 0.5))
    mix = float(losses.SegmentationLoss("dice_bce", bce_weight=0.25)(t, t * 0.5))
    np.testing.assert_allclose(mix, 0.75 * d + 0.25 * b, rtol=1e-5)


def test_losses_are_float32_under_float16_inputs():
    t, p = _pair()
    v = losses.SegmentationLoss("dice_bce")(t.astype(np.float16), p.astype(np.float16))
    assert keras.ops.convert_to_numpy(v).dtype == np.float32


def test_compiled_model_round_trips_through_plain_load_model(tmp_path):
    m = build_model(preset("tiny"))
    m.compile(optimizer="adam", loss=losses.make_loss("dice_bce", 0.3), metrics=losses.make_metrics())
    x = np.random.default_rng(0).random((2, 32, 48, 3)).astype(np.float32)
    m.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.loss.kind == "dice_bce" and loaded.loss.bce_weight == 0.3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)
    bare = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert bare.output_shape == (None, 32, 48, 1)


