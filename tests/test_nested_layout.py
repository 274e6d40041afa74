"""A competition folder extracted one level too deep (train_hq/train_hq/*.jpg, as some unzip tools and
mounts leave it) is still found, for each kind of file."""
from __future__ import annotations

import shutil

from competition.data.layout import open_dataset


def test_nested_extracted_folders_are_found(synth_dir, tmp_path):
    root = tmp_path / "carvana"
    shutil.copytree(synth_dir, root)
    flat = open_dataset(root)
    train, test = flat.train_ids, flat.test_ids
    image, mask = flat.read_train_image(train[0]), flat.read_mask(train[0])
    moved = []
    for name in ("train_hq", "train", "train_masks", "test_hq", "test"):
        if (root / name).is_dir():
            (root / name).rename(tmp_path / "moving")
            (root / name).mkdir()
            (tmp_path / "moving").rename(root / name / name)
            (root / name / "__MACOSX").mkdir()  # a zip tool's leftovers are not the folder
            moved.append(name)
    assert len(moved) >= 3  # train images, masks and test images all nested
    nested = open_dataset(root)
    assert nested.train_ids == train and nested.test_ids == test and train and test
    assert nested.read_train_image(train[0]) == image and (nested.read_mask(train[0]) == mask).all()
    assert any(f"/{n}/{n}/" in nested.where_train(train[0]) for n in moved)
