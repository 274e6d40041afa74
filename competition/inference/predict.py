"""predict: one run's fold ensemble, or a blend of runs, over the test set into a resumable submission CSV.

Decoding runs ahead of the models in a thread pool; the models see batches; post-processing (to native
1918x1280 - with the photo's edges when a run refines, inference/upsample.py - threshold, RLE) runs in another
pool while the next batch is on the models; rows are written in sample order by the resumable
`SubmissionWriter`. One run is the one-member ensemble (inference/ensemble.py), bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import rle
from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import check_file_out, check_folder
from ..base.tta import transforms_for
from ..config import check_refine, check_threshold, refine_words
from ..data.layout import open_dataset
from ..runs.folder import model_digests
from .ensemble import (Member, MemberSpec, as_specs, blend_dir, blend_threshold, default_batch, describe_members,
                       open_members, probabilities, to_native)
from .upsample import threshold_native
from .writer import SubmissionWriter, refine_meta, shard_path, shard_slice, write_stream


def predict(runs: Path | str | list[MemberSpec], data: str | None, out: Path, folds: list[int] | None = None,
            tta: str = "hflip", threshold: float | None = None, batch: int | None = None,
            shard: tuple[int, int] | None = None, limit: int | None = None, time_limit=None,
            mirror: Path | None = None, name: str | None = None, refine: str | None = None) -> Path | None:
    """Predict the test set into a (resumable) submission file; returns its path (None: stopped by time_limit).

    runs: a run folder (its fold ensemble), or MemberSpecs (several: their blend). time_limit: a `timelimit.Deadline`:
    stop after the chunk whose successor would cross it (the same command resumes). mirror: a folder that gets
    the partial file and its progress record as each chunk is written. refine: "none" | "guided" | "net", else
    each run's (config.json); "net" refines with R/refiner/all.keras. name: a blend's name (its saved threshold)."""
    if not (out.name.endswith(".csv") or out.name.endswith(".csv.gz")):
        raise UserError(f"--out {out}: the submission must end in .csv or .csv.gz")
    check_file_out(out, force=True)  # user-given paths before any work: one line each (an existing file: replaced
                                     # once the new one is complete and valid)
    if mirror is not None:
        check_folder(mirror, "--mirror")
    transforms_for(tta)  # a mistyped TTA answers before the models load
    if threshold is not None:
        check_threshold(threshold)  # before the models load: a mistyped option answers at once
    if refine is not None:
        check_refine(refine)  # before the models load, as the threshold
    ds = open_dataset(data)
    all_ids = ds.test_ids
    ids = shard_slice(all_ids[:limit] if limit else all_ids, shard)
    ds.check_test_photos(ids)  # every photo there, each a 1918x1280 JPEG by its header: before the models load
    specs = as_specs(runs)
    members = open_members(specs, folds, tta, refine)
    threshold, source = _threshold(members, specs, name, threshold)
    target = shard_path(out, shard)
    writer = SubmissionWriter(target, ids, _record(members, tta, threshold, shard), mirror=mirror)
    if len(members) > 1:
        say(f"blend of {describe_members(members)}; threshold {threshold} ({source})")
    if writer.done:
        say(f"resuming {target}: {writer.done} of {len(ids)} rows already written")
    batch = batch or default_batch(members)
    devices = members[0].predictor.devices
    if len(devices) > 1:
        say(f"models on {len(devices)} devices ({', '.join(devices)}): batches of {batch} go to each in turn")

    def post(item: tuple[str, list[np.ndarray]]) -> tuple[str, str]:
        image_id, probs = item  # a member reads the photo only when its run refines
        native = to_native(members, probs, lambda: ds.read_test_image(image_id), ds.where_test(image_id))
        return image_id, rle.encode(threshold_native(native, threshold))

    stream = probabilities(members, writer.remaining, ds.read_test_image, ds.where_test, batch)
    return write_stream(writer, target, stream, post, batch, len(ids), all_ids, time_limit, shard, limit,
                        _what(members, tta, threshold))


def _threshold(members: list[Member], specs: list[MemberSpec], name: str | None,
               threshold: float | None) -> tuple[float, str]:
    """One run: --threshold, else its config's; a blend: `blend_threshold` (its tuned one, or the runs' mean)."""
    if len(members) == 1:
        return (members[0].cfg.threshold, "the run's") if threshold is None else (threshold, "--threshold")
    return blend_threshold(members, blend_dir(specs, name), threshold)


def _record(members: list[Member], tta: str, threshold: float, shard: tuple[int, int] | None) -> dict:
    """What made a (partial) submission's rows: a rerun made otherwise refuses the partial file."""
    if len(members) == 1:
        m = members[0]
        meta = {"run": str(m.run_dir), "folds": m.folds, "tta": tta, "threshold": threshold,
                "shard": list(shard or []), "models": model_digests(m.run_dir, m.folds),
                **refine_meta(m.predictor.refine)}
        if m.predictor.refiner is not None:  # its bytes, and what it learnt from and how
            meta["refiner"], meta["refiner_made"] = m.predictor.refiner.digest, m.predictor.refiner.made
        return meta
    models = {}
    for m in members:  # run/fold<k> -> sha256: any member retrained refuses the partial file
        models.update({str(m.run_dir / k): v for k, v in model_digests(m.run_dir, m.folds).items()})
    meta = {"runs": [str(m.run_dir) for m in members], "weights": [m.weight for m in members],
            "folds": [m.folds for m in members], "tta": tta, "threshold": threshold, "shard": list(shard or []),
            "models": models, **refine_meta(*[m.predictor.refine for m in members])}
    refiners = [m.predictor.refiner for m in members]
    if any(refiners):  # member by member (None: not refined by a net): the refiners' bytes, and what each
        # learnt from and how (what merge compares: the paths differ between sessions)
        meta["refiner"] = [r and r.digest for r in refiners]
        meta["refiner_made"] = [r and r.made for r in refiners]
    return meta


def _what(members: list[Member], tta: str, threshold: float) -> str:
    if len(members) == 1:
        m = members[0]
        return f"folds {m.folds}, TTA {tta}, threshold {threshold}{refine_words(m.predictor.refine)}"
    return f"blend of {len(members)} runs, TTA {tta}, threshold {threshold}"
