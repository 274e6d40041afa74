"""A synthetic Carvana-shaped dataset: same names and formats, 16 views per car, thin antennas.

Each car is a coloured body with a cabin, windows, wheels and a 1-3 px antenna, on a textured wall
and floor with a soft shadow (not part of the mask), seen from 16 angles. It is made so that a small
U-Net can learn it on a CPU in minutes and so that antenna errors show up in the per-image dice.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import NATIVE_HEIGHT, NATIVE_WIDTH
from ..base import rle
from ..base.errors import UserError
from ..base.fileio import atomic_open, read_json, temp_path, write_bytes, write_json, write_text
from ..base.images import encode_jpeg
from ..base.masks import encode_mask_gif

VIEWS = 16
MAKES = [("Acura", "TL"), ("Audi", "A4"), ("BMW", "3 Series"), ("Ford", "Focus"), ("Honda", "Civic"),
         ("Kia", "Soul"), ("Mazda", "CX-5"), ("Toyota", "Camry"), ("Volvo", "XC60"), ("Jeep", "Wrangler")]


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; stored beside the data so a rerun with the same spec is a no-op."""

    cars: int = 8
    test: int = 32
    seed: int = 0
    zip: bool = False
    height: int = NATIVE_HEIGHT
    width: int = NATIVE_WIDTH
    # Each view shows its car's paint under another light (`view_paint`): the same cars, shapes and studios,
    # but 8 cars' 128 paints instead of 8, so the training folds hold paints near a held-out car's (issue 36:
    # fold 0 of `make demo` holds out a pale cyan car unlike its six training cars). The CLI's `synth` (and so
    # `make demo`) sets it; the default keeps the sets the tests' fixtures were made on.
    varied: bool = False

    def stamp(self) -> dict:
        """synth.json's content: fields at their default that earlier versions lacked are left out, so a set
        made before them (the tests' fingerprinted ones among them) reads as the same set."""
        d = asdict(self)
        if not d["varied"]:
            del d["varied"]
        return d


def car_ids(n: int, rng: np.random.Generator) -> list[str]:
    """n distinct 12-hex-digit car ids, like Kaggle's."""
    ids: set[str] = set()
    while len(ids) < n:
        ids.add("".join(rng.choice(list("0123456789abcdef"), 12)))
    return sorted(ids)


def _car_color(rng: np.random.Generator, avoid: list[np.ndarray]) -> list[int]:
    """A paint colour clearly different from the studio's wall and floor (like real cars vs the turntable)."""
    while True:
        c = rng.integers(10, 246, 3)
        if all(np.abs(c - a).sum() > 150 for a in avoid):
            return c.tolist()


def view_paint(color: list[int], avoid: list[list[int]], rng: np.random.Generator) -> list[int]:
    """The car's paint as one view shows it under `SynthSpec.varied`: hue moved up to +-50 degrees and lightness
    up to +-0.14, as far from the studio's wall and floor as `_car_color` asks (else the paint as drawn)."""
    hue, light, sat = cv2.cvtColor(np.uint8([[color]]), cv2.COLOR_RGB2HLS)[0, 0].astype(float)
    for _ in range(10):
        hls = [(hue + rng.uniform(-25, 25)) % 180, np.clip(light + rng.uniform(-36, 36), 20, 235), sat]
        c = cv2.cvtColor(np.uint8([[hls]]), cv2.COLOR_HLS2RGB)[0, 0].astype(int)
        if all(np.abs(c - np.array(a)).sum() > 150 for a in avoid):
            return c.tolist()
    return list(color)


def _car_params(rng: np.random.Generator) -> dict:
    # One studio for every car, as in Carvana's photos: light wall, grey floor, small variations.
    wall = (rng.integers(205, 235) + rng.integers(-8, 9, 3)).tolist()
    floor = (rng.integers(140, 175) + rng.integers(-8, 9, 3)).tolist()
    return {
        "color": _car_color(rng, [np.array(wall), np.array(floor)]),
        "length": float(rng.uniform(0.50, 0.62)),   # of the image width, side view
        "depth": float(rng.uniform(0.42, 0.5)),      # car width / car length
        "body_h": float(rng.uniform(0.13, 0.17)),    # of the image height
        "cabin_h": float(rng.uniform(0.10, 0.14)),
        "cabin_len": float(rng.uniform(0.45, 0.6)),
        "wheel_r": float(rng.uniform(0.055, 0.07)),
        "antenna_len": float(rng.uniform(0.06, 0.10)),
        "antenna_w": int(rng.integers(1, 4)),
        "antenna_tilt": float(rng.uniform(-0.5, 0.5)),
        "wall": wall,
        "floor": floor,
        "horizon": float(rng.uniform(0.58, 0.64)),
        "ground": float(rng.uniform(0.76, 0.84)),
    }


def _background(p: dict, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Wall above the horizon, floor below, with low-frequency texture and fine noise."""
    img = np.empty((h, w, 3), np.float32)
    horizon = int(p["horizon"] * h)
    img[:horizon] = p["wall"]
    img[horizon:] = p["floor"]
    ramp = np.linspace(-10, 10, h, dtype=np.float32)[:, None, None]
    texture = cv2.resize(rng.normal(0, 6, (16, 24, 1)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += ramp + texture[..., None]
    grain = rng.normal(0, 3, (-(-h // 4), -(-w // 4), 1)).astype(np.float32)
    img += grain.repeat(4, 0).repeat(4, 1)[:h, :w]
    return img


def _draw_car(canvas: np.ndarray, p: dict, view: int, colors: dict, h: int, w: int) -> None:
    """Draw the car of view 1..16 onto `canvas` with the given colours (numbers for a mask)."""
    theta = 2 * math.pi * (view - 1) / VIEWS
    side, front = abs(math.sin(theta)), abs(math.cos(theta))
    length = w * p["length"] * (side + p["depth"] * front)
    cx, ground = w / 2 + w * 0.03 * math.cos(theta), p["ground"] * h
    wheel_r = p["wheel_r"] * h
    body_bottom = ground - wheel_r * 0.6
    body_top = body_bottom - p["body_h"] * h
    x0, x1 = cx - length / 2, cx + length / 2
    body = np.array([[x0, body_bottom], [x0, body_top + 20], [x0 + 25, body_top], [x1 - 25, body_top],
                     [x1, body_top + 20], [x1, body_bottom]], np.int32)
    cv2.fillPoly(canvas, [body], colors["body"])
    cabin_len = length * p["cabin_len"]
    shift = length * 0.08 * math.cos(theta) * (1 if math.sin(theta) >= 0 else -1)
    c0, c1 = cx - cabin_len / 2 + shift, cx + cabin_len / 2 + shift
    top = body_top - p["cabin_h"] * h
    slope = cabin_len * 0.18
    cabin = np.array([[c0, body_top], [c0 + slope, top], [c1 - slope, top], [c1, body_top]], np.int32)
    cv2.fillPoly(canvas, [cabin], colors["body"])
    inset = 10
    window = np.array([[c0 + inset + 6, body_top - 4], [c0 + slope + inset, top + inset],
                       [c1 - slope - inset, top + inset], [c1 - inset - 6, body_top - 4]], np.int32)
    cv2.fillPoly(canvas, [window], colors["window"])
    for wx in (x0 + length * 0.2, x1 - length * 0.2) if side > 0.3 else (x0 + length * 0.18, x1 - length * 0.18):
        axes = (max(6, int(wheel_r * max(0.35, side))), int(wheel_r))
        cv2.ellipse(canvas, (int(wx), int(ground - wheel_r)), axes, 0, 0, 360, colors["wheel"], -1)
    # The antenna: a thin line from the rear of the roof, 1-3 px wide.
    ax = c1 - slope - 15 if math.sin(theta) >= 0 else c0 + slope + 15
    alen = p["antenna_len"] * h
    tip = (int(ax + alen * p["antenna_tilt"]), int(top - alen))
    cv2.line(canvas, (int(ax), int(top) + 2), tip, colors["antenna"], p["antenna_w"], lineType=cv2.LINE_8)


def render_view(p: dict, view: int, seed: int, h: int = NATIVE_HEIGHT, w: int = NATIVE_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and 0/1 mask of one view of one car."""
    rng = np.random.default_rng(seed)
    img = _background(p, rng, h, w)
    shadow = np.zeros((h, w), np.float32)
    theta = 2 * math.pi * (view - 1) / VIEWS
    length = w * p["length"] * (abs(math.sin(theta)) + p["depth"] * abs(math.cos(theta)))
    cv2.ellipse(shadow, (w // 2, int(p["ground"] * h)), (int(length * 0.6), int(h * 0.035)), 0, 0, 360, 1.0, -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 18)
    img *= (1 - 0.55 * shadow)[..., None]
    paint = view_paint(p["color"], [p["wall"], p["floor"]], np.random.default_rng([seed, 36])) if p.get("varied") \
        else p["color"]
    color = np.array(paint, np.float32)
    colors = {"body": color.tolist(), "window": (color * 0.25 + np.array([30, 40, 60])).tolist(),
              "wheel": [25, 25, 28], "antenna": (color * 0.4).tolist()}
    _draw_car(img, p, view, colors, h, w)
    mask = np.zeros((h, w), np.uint8)
    _draw_car(mask, p, view, {k: 1 for k in colors}, h, w)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img += rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _render_files(args: tuple) -> tuple[str, bytes, bytes, str]:
    image_id, p, view, seed, h, w = args
    img, mask = render_view(p, view, seed, h, w)
    return image_id, encode_jpeg(img, 92), encode_mask_gif(mask), rle.encode(mask)


def _holds(out: Path, spec: SynthSpec) -> str | None:
    """None when `out` is free for this set (absent, empty); "this" when it already holds it; else what it holds."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    try:
        made = read_json(out / "synth.json")
    except (UserError, OSError):
        return "files that are not a synthetic set made by `synth` (no readable synth.json)"
    if made == spec.stamp():
        return "this"
    return f"another synthetic set ({', '.join(f'{k} {v}' for k, v in sorted(made.items()) if k != 'varied')})" \
        if isinstance(made, dict) else "a damaged synth.json"


def generate(out: Path, spec: SynthSpec = SynthSpec(), workers: int = 2, force: bool = False) -> bool:
    """Write the dataset under `out`; returns False (and does nothing) when it is already there. A folder that holds
    anything else is refused in one line (force: replaced, once the new set is complete). The set is written in a
    temporary folder beside `out` and renamed into place: never half a set, never two sets mixed."""
    held = _holds(out, spec)
    if held == "this":
        return False
    if held is not None and not force:
        raise UserError(f"--out {out} already holds {held}: pass another --out, or --force to replace it with this "
                        f"set (once it is complete)")
    tmp = temp_path(out)
    try:
        _write_set(tmp, spec, workers)
    except BaseException:  # Ctrl-C, a full disk: nothing half-written left beside it
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = temp_path(out)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return True


def _write_set(out: Path, spec: SynthSpec, workers: int) -> None:
    """The whole set, written into `out` (a fresh folder)."""
    stamp = out / "synth.json"
    rng = np.random.default_rng(spec.seed)
    n_test_cars = -(-spec.test // VIEWS)
    ids = car_ids(spec.cars + n_test_cars, rng)
    params = {car: _car_params(rng) for car in ids}
    if spec.varied:
        params = {car: {**p, "varied": True} for car, p in params.items()}
    train_cars = sorted(rng.choice(ids, spec.cars, replace=False).tolist())
    test_cars = [c for c in ids if c not in train_cars]
    jobs = [(f"{car}_{v:02d}", params[car], v, int(rng.integers(2**31)), spec.height, spec.width)
            for car in train_cars for v in range(1, VIEWS + 1)]
    test_jobs = [(f"{car}_{v:02d}", params[car], v, int(rng.integers(2**31)), spec.height, spec.width)
                 for car in test_cars for v in range(1, VIEWS + 1)][: spec.test]
    with ThreadPoolExecutor(workers) as pool:
        train = list(pool.map(_render_files, jobs))
        test = list(pool.map(_render_files, test_jobs))
    files: dict[str, dict[str, bytes]] = {"train_hq": {}, "train_masks": {}, "test_hq": {}}
    for image_id, jpg, gif, _ in train:
        files["train_hq"][f"{image_id}.jpg"] = jpg
        files["train_masks"][f"{image_id}_mask.gif"] = gif
    for image_id, jpg, _, _ in test:
        files["test_hq"][f"{image_id}.jpg"] = jpg
    csvs = {
        "train_masks.csv": _csv(["img", "rle_mask"], [[f"{i}.jpg", r] for i, _, _, r in train]),
        "sample_submission.csv": _csv(["img", "rle_mask"], [[f"{i}.jpg", "1 1"] for i, *_ in sorted(test)]),
        "metadata.csv": _metadata(ids, rng),
    }
    out.mkdir(parents=True, exist_ok=True)
    for folder, members in files.items():
        if spec.zip:
            with atomic_open(out / f"{folder}.zip", "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
                for name, data in sorted(members.items()):
                    zf.writestr(f"{folder}/{name}", data)
        else:
            for name, data in members.items():
                write_bytes(out / folder / name, data)
    for name, text in csvs.items():
        if spec.zip:
            with atomic_open(out / f"{name}.zip", "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(name, text)
        else:
            write_text(out / name, text)
    write_json(stamp, spec.stamp())


def _csv(header: list[str], rows: list[list[str]], quote_all: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _metadata(cars: list[str], rng: np.random.Generator) -> str:
    rows = []
    for car in cars:
        make, model = MAKES[int(rng.integers(len(MAKES)))]
        rows.append([car, str(int(rng.integers(2008, 2017))), make, model, model, ""])
    return _csv(["id", "year", "make", "model", "trim1", "trim2"], rows, quote_all=True)
