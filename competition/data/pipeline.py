"""Training input: a per-size on-disk cache of resized uint8 arrays, then tf.data with joint augmentation.

The first use of a size decodes every JPEG once (at reduced size when the target is small), fits it
with `Geometry.to_model` and stores images and masks as .npy memmaps; later epochs and later folds
read those arrays. Augmentation moves image and mask with the same random transform.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base import records
from ..base.console import bar
from ..base.errors import UserError
from ..base.fileio import damaged, temp_path, write_json
from ..base.geometry import Geometry
from ..base.images import decode_jpeg, reduction_for
from ..base.records import ListOf, Shape
from .layout import Dataset


MANIFEST = Shape("an image cache's manifest", required={"ids": ListOf("str"), "size": ListOf("count"), "fit": "str",
                                                       "interp": "str", "root": "str"})


@dataclass(frozen=True)
class Cache:
    """Resized training images (N, H, W, 3) and masks (N, H, W, 1), uint8, in id order."""

    ids: list[str]
    images: np.ndarray
    masks: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    def index(self, ids: list[str]) -> np.ndarray:
        where = {i: n for n, i in enumerate(self.ids)}
        return np.array([where[i] for i in ids], dtype=np.int64)

    def batch(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(order)  # memmap locality; the batch order is already random
        return self.images[order], self.masks[order]

    def crops(self, order: np.ndarray, tops: np.ndarray, lefts: np.ndarray,
              crop: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Example order[n] cut at (tops[n], lefts[n]), crop-sized: only those rows are read from the memmap."""
        return cut_batch([(self.images[n], self.masks[n]) for n in order], tops, lefts, crop)


@dataclass(frozen=True)
class Streaming(Cache):
    """No cache: every batch is decoded again (`--cache none`, for sizes whose cache won't fit the disk)."""

    ds: Dataset | None = None
    geometry: Geometry | None = None
    interp: str = "area"

    @property
    def size(self) -> tuple[int, int]:
        return self.geometry.height, self.geometry.width

    held: dict | None = None  # `--cache memory`: id -> (JPEG bytes, packed mask bits), filled as read

    def batch(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.example(n) for n in order]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def crops(self, order: np.ndarray, tops: np.ndarray, lefts: np.ndarray,
              crop: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return cut_batch([self.example(n) for n in order], tops, lefts, crop)

    def example(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Example n decoded and fitted to the model size (from memory once read, with `held`)."""
        if self.held is None:
            return load_example(self.ds, self.ids[n], self.geometry, self.interp)
        image_id = self.ids[n]
        if image_id not in self.held:  # a dict assignment is atomic: parallel readers at worst read twice
            mask = self.ds.read_mask(image_id)
            self.held[image_id] = (self.ds.read_train_image(image_id), np.packbits(mask), mask.shape)
        jpeg, bits, shape = self.held[image_id]
        mask = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape)
        return fit_example(jpeg, mask, self.ds.where_train(image_id), self.geometry, self.interp)


def streaming(ds: Dataset, ids: list[str], geom: Geometry, interp: str, hold: bool = False) -> Streaming:
    """Examples decoded on the fly every epoch (reduced JPEG decode); batches decode in parallel in tf.data.

    hold: keep each file's encoded bytes in memory once read (`--cache memory`; Kaggle's train_hq is a few GB of
    JPEGs and the masks ~0.3 MB each as bits), so later epochs decode without touching the disk."""
    empty = np.zeros((0,), np.uint8)
    return Streaming(ids, empty, empty, ds, geom, interp, {} if hold else None)


def load_example(ds: Dataset, image_id: str, geom: Geometry, interp: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one training pair and fit it to the model size (the decode-every-epoch path)."""
    return fit_example(ds.read_train_image(image_id), ds.read_mask(image_id), ds.where_train(image_id), geom, interp)


def fit_example(jpeg: bytes, mask: np.ndarray, where: str, geom: Geometry,
                interp: str) -> tuple[np.ndarray, np.ndarray]:
    """JPEG bytes (decoded reduced when the model is small) and a native mask, fitted to the model size."""
    image = decode_jpeg(jpeg, where, reduction_for(geom.inner))
    return geom.to_model(image, interp), geom.to_model(mask[..., None], "nearest")


def crop_offsets(rng: np.random.Generator, n: int, size: tuple[int, int],
                 crop: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """n random (top, left) corners of a crop inside a frame, uniform over every position it fits."""
    return (rng.integers(0, size[0] - crop[0] + 1, n, dtype=np.int64),
            rng.integers(0, size[1] - crop[1] + 1, n, dtype=np.int64))


def crop_augmentation(rng: np.random.Generator, n: int, augment: tuple[str, ...], rotate: float,
                      contrast: float) -> np.ndarray:
    """(n, 3): per example a flip (0/1), a rotation angle (radians) and a contrast factor, as `augment` asks."""
    none = np.zeros(n)
    flips = (rng.random(n) < 0.5).astype(np.float64) if "flip" in augment else none
    limit = rotate * 2.0 * np.pi
    angles = rng.uniform(-limit, limit, n) if "rotate" in augment and rotate > 0 else none
    factors = rng.uniform(1 - contrast, 1 + contrast, n) if "contrast" in augment and contrast > 0 else none + 1
    return np.stack([flips, angles, factors], axis=1)


def augment_crops(images: np.ndarray, masks: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 crops -> float32 [0, 1], each flipped, rotated about its centre (bilinear photo, nearest mask, reflected
    border) and contrast-scaled (photo only) by its row of `crop_augmentation`.

    OpenCV on uint8 instead of TensorFlow on float32: several times cheaper a pixel, which at full resolution
    decides whether a few CPU cores can feed a GPU."""
    import cv2
    h, w = images.shape[1:3]
    out_x = np.empty(images.shape, np.float32)
    out_y = np.empty(masks.shape, np.float32)
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    mirror = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
    for n, (flip, angle, factor) in enumerate(params):
        x, y = np.ascontiguousarray(images[n]), np.ascontiguousarray(masks[n, ..., 0])
        if angle:  # one warp for rotation and flip together
            m = np.vstack([cv2.getRotationMatrix2D(centre, float(np.degrees(angle)), 1.0), [0.0, 0.0, 1.0]])
            m = (m @ mirror if flip else m)[:2]
            x = cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            y = cv2.warpAffine(y, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
        elif flip:
            x, y = cv2.flip(x, 1), cv2.flip(y, 1)
        # contrast about each channel's mean, and the scaling to [0, 1], as one float32 look-up table per channel
        mean = np.array(cv2.mean(x)[:3]) / 255.0
        lut = np.clip((levels - mean) * factor + mean, 0.0, 1.0).astype(np.float32).reshape(1, 256, 3)
        out_x[n] = cv2.LUT(x, lut)
        out_y[n, ..., 0] = y
    return out_x, out_y


def cut_batch(pairs: list[tuple[np.ndarray, np.ndarray]], tops: np.ndarray, lefts: np.ndarray,
              crop: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each (image, mask) pair cut at its own corner, the same window for both; stacked as a batch."""
    ch, cw = crop
    images = np.stack([im[t:t + ch, l:l + cw] for (im, _), t, l in zip(pairs, tops, lefts)])
    masks = np.stack([m[t:t + ch, l:l + cw] for (_, m), t, l in zip(pairs, tops, lefts)])
    return images, masks


def cache_key(ds: Dataset, ids: list[str], geom: Geometry, interp: str) -> str:
    """Folder name of a cache: the size, fit, interpolation and a hash of the data root, the ids and what each
    photo and mask is (`Dataset.train_stamp`: sizes and modification times, or zip CRCs), so a mask edited in place
    or a photo replaced builds a new cache."""
    h = hashlib.sha1(json.dumps([str(ds.root.resolve()), ids, ds.train_stamp(ids)]).encode()).hexdigest()[:10]
    return f"{geom.height}x{geom.width}-{geom.fit}-{interp}-{h}"


def build_cache(ds: Dataset, ids: list[str], geom: Geometry, interp: str, cache_root: Path,
                workers: int | None = None) -> Cache:
    """Open the cache for these ids at this size, building it first if needed (resumable by rebuild)."""
    shape = (len(ids), geom.height, geom.width)
    folder = cache_root / cache_key(ds, ids, geom, interp)
    done = folder / "done.json"
    if done.is_file():  # its manifest checked before the arrays are trusted
        rebuild = f"delete {folder}: the next train builds it again"
        manifest = records.load(done, MANIFEST, rebuild)
        if manifest["ids"] != ids or manifest["size"] != [geom.height, geom.width]:
            raise damaged(done, "a manifest of other images or another size than its folder's name says", rebuild)
    else:
        made = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again if the build fails
        folder.mkdir(parents=True, exist_ok=True)
        need = len(ids) * geom.height * geom.width * 4
        free = shutil.disk_usage(folder).free
        if need > free:
            raise UserError(f"the {geom.height}x{geom.width} cache of {len(ids)} images needs {need / 1e9:.1f} GB "
                            f"but {folder} has {free / 1e9:.1f} GB free: free space, pass --cache DIR on a bigger "
                            f"disk, or --cache none to decode every epoch")
        tmp_images, tmp_masks = temp_path(folder / "images.npy"), temp_path(folder / "masks.npy")  # a train of
        # another fold building the same cache at once writes its own
        try:
            images = np.lib.format.open_memmap(tmp_images, "w+", np.uint8, shape + (3,))
            masks = np.lib.format.open_memmap(tmp_masks, "w+", np.uint8, shape + (1,))
        except OSError as e:
            raise UserError(f"cannot create the image cache in {folder} ({e}); free disk or pass --cache elsewhere") from e
        try:
            _fill(ds, ids, geom, interp, images, masks, workers)
            images.flush(), masks.flush()
            del images, masks
            os.replace(tmp_images, folder / "images.npy")
            os.replace(tmp_masks, folder / "masks.npy")
        except BaseException:  # a corrupt JPEG, Ctrl-C: no half-built arrays left in the cache
            tmp_images.unlink(missing_ok=True)
            tmp_masks.unlink(missing_ok=True)
            for p in made:  # the folders this build made, deepest first, if nothing else is in them
                with contextlib.suppress(OSError):
                    p.rmdir()
            raise
        write_json(done, {"ids": ids, "size": [geom.height, geom.width], "fit": geom.fit, "interp": interp,
                          "root": str(ds.root)})
    return Cache(ids, _cached(folder / "images.npy", shape + (3,)), _cached(folder / "masks.npy", shape + (1,)))


def _cached(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One array of a built cache, memory-mapped; a damaged one (truncated, empty, another shape) is one line."""
    rebuild = f"delete {path.parent}: the next train builds it again"
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise damaged(path, "not a complete .npy array", rebuild) from e
    if array.shape != shape or array.dtype != np.uint8:
        raise damaged(path, f"{array.dtype} {array.shape} where uint8 {shape} was expected", rebuild)
    return array


def _fill(ds: Dataset, ids: list[str], geom: Geometry, interp: str, images: np.ndarray, masks: np.ndarray,
          workers: int | None) -> None:
    def one(n: int) -> None:
        images[n], masks[n] = load_example(ds, ids[n], geom, interp)

    workers = workers or min(8, os.cpu_count() or 2)
    with ThreadPoolExecutor(workers) as pool, bar(total=len(ids), desc=f"caching {geom.height}x{geom.width}") as b:
        for _ in pool.map(one, range(len(ids))):
            b.update()


# --- tf.data: shuffle, gather, crop and augment (drawn per example and pass), prefetch --------------
def make_dataset(cache: Cache, ids: list[str], batch: int, training: bool, augment: tuple[str, ...] = (),
                 rotate: float = 0.01, contrast: float = 0.2, seed: int = 42, first_epoch: int = 0,
                 crop: tuple[int, int] | None = None):
    """tf.data over cached arrays: (shuffle), batch, gather from the memmap, (crop), (augment), float32, prefetch.

    Pass n over a training dataset is shuffled by (seed, first_epoch + n), so a run resumed at epoch
    `first_epoch` sees the same orders as an uninterrupted one (tf.data's own reshuffling restarts).
    crop (training only): every example of pass n is cut at a corner drawn by (seed, first_epoch + n, 1),
    image and mask alike. Augmentation (training): each example's flip, angle and contrast are drawn by the
    same generator and applied by `augment_crops` (OpenCV on uint8, on the crop's pixels when cropping), so
    every pass draws new ones and a resume repeats them exactly. (Random ops inside tf.data restart their
    sequence with each pass's iterator: every epoch drew the same numbers at each batch position.)
    """
    import tensorflow as tf
    index = cache.index(ids)
    crop = tuple(crop) if training and crop else None
    h, w = crop or cache.size
    drawn = training and (crop is not None or bool(augment))  # examples carry their crop corner and augmentation

    if training:
        passes = itertools.count(first_epoch)  # pass n is shuffled by (seed, n), whatever ran before it
        scalar = tf.TensorSpec([], tf.as_dtype(index.dtype))

        def order():
            n = next(passes)
            perm = np.random.default_rng([seed, n]).permutation(index)
            if not drawn:
                yield from perm
                return
            rng = np.random.default_rng([seed, n, 1])
            if crop is None:
                tops = lefts = np.zeros(len(perm), np.int64)
            else:
                tops, lefts = crop_offsets(rng, len(perm), cache.size, crop)
            yield from zip(perm, tops, lefts, crop_augmentation(rng, len(perm), augment, rotate, contrast))

        sig = scalar if not drawn else (scalar, tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64),
                                        tf.TensorSpec([3], tf.float64))
        ds = tf.data.Dataset.from_generator(order, output_signature=sig)
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(index)))
    else:
        ds = tf.data.Dataset.from_tensor_slices(index)
    ds = ds.batch(batch)

    def gather(idx, tops=None, lefts=None, params=None):
        if tops is None:
            return cache.batch(idx)
        pairs = cache.batch(idx) if crop is None else cache.crops(idx, tops, lefts, crop)
        return augment_crops(*pairs, params)

    def load(*args):
        dtype = tf.float32 if drawn else tf.uint8
        x, y = tf.numpy_function(gather, list(args), [dtype, dtype])
        x.set_shape([None, h, w, 3])
        y.set_shape([None, h, w, 1])
        return (x, y) if drawn else (tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.float32))

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def decode_every_epoch_dataset(ds: Dataset, ids: list[str], geom: Geometry, batch: int):
    """The article's pipeline, for the benchmark: read + decode the full JPEG + resize on every epoch."""
    import tensorflow as tf

    def gen():
        for i in ids:
            image = decode_jpeg(ds.read_train_image(i), i)
            x = tf.image.resize(image, [geom.height, geom.width], method="nearest")
            m = ds.read_mask(i)[..., None]
            y = tf.image.resize(m, [geom.height, geom.width], method="nearest")
            yield tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.float32)

    sig = (tf.TensorSpec([geom.height, geom.width, 3], tf.float32), tf.TensorSpec([geom.height, geom.width, 1], tf.float32))
    return tf.data.Dataset.from_generator(gen, output_signature=sig).batch(batch).prefetch(tf.data.AUTOTUNE)


