"""The kernel subcommand: build, push and follow Kaggle kernels. Its flags are all declared in add_kernel."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import REFINES
from .options import RUN_HELP, add_accelerator, add_encoder, folds_arg, shard_arg
from .parser import AddCommand, Number, Whole

BUILD = "kernels/build"  # where `kernel build/push/queue` write push folders


def cmd_kernel(a: argparse.Namespace) -> None:
    from ..kaggle import checkpoint as kernel_checkpoint, queue as kernel_queue, kernels
    from ..runs.folder import run_path
    from ..base.errors import UserError
    from ..base.fileio import check_folder
    if a.out:
        check_folder(a.out, "--out")
    runs = a.run or []
    run_dir = run_path(runs[0]) if len(runs) == 1 else None  # the kernel is named after the folder's name
    name = run_dir.name if run_dir else None
    if len(runs) > 1:  # a predict kernel blending runs: named after the blend
        from ..inference.ensemble import default_name, parse_member
        name = default_name([parse_member(r) for r in runs])
    every_fold = a.folds == "all"
    if a.action == "queue" or (a.action == "status" and a.fold is None and a.task == "train" and name):
        if not name:
            raise UserError("kernel queue: name the run, --run NAME")
        return kernel_queue.run_queue(name, Path(a.out or BUILD)) if a.action == "queue" else kernel_queue.status_table(name)
    spec = kernels.KernelSpec(task=a.task, fold=a.fold or 0, folds=None if every_fold else folds_arg(a.folds),
                              preset=a.preset, name=name, user=a.user, accelerator=a.accelerator,
                              shard=shard_arg(a.shard), blend=runs if len(runs) > 1 else None,
                              train_kernels=a.train_kernels, epochs=a.epochs, encoder=a.encoder,
                              encoder_weights=a.encoder_weights, freeze_encoder=a.freeze_encoder,
                              weights_dataset=a.weights_dataset, filters=a.filters, refine=a.refine,
                              fresh=a.fresh, session_hours=a.session_hours, resume_from=a.resume_from)
    if a.task == "notebook":
        from ..kaggle.notebook import kernel_command
        return kernel_command(a.action, spec, Path(a.out or BUILD))
    if every_fold and a.action != "push":
        raise UserError(f"--folds all: for `kernel push` (then `kernel queue`), not `kernel {a.action}`")
    if a.action == "build":
        kernels.build(spec, out_root=Path(a.out or BUILD))
    elif a.action == "push" and every_fold:
        kernel_queue.push_all(spec, max_running=a.max_running, out_root=Path(a.out or BUILD))
    elif a.action == "push":
        kernels.push(spec, out_root=Path(a.out or BUILD))
    elif a.action == "status":
        kernels.status(spec)
    elif a.action == "checkpoint":
        kernel_checkpoint.checkpoint(spec)
    else:
        kernels.output(spec, dest=Path(a.out) if a.out else run_dir if a.task == "train" else None)


def add_kernel(add: AddCommand) -> None:
    """Every flag of `kernel`, in one place."""
    s = add("kernel", cmd_kernel, "build, push and follow Kaggle kernels that train or predict on GPUs",
            "push --task train --preset unet --fold 0")
    s.add_argument("action", choices=["build", "push", "status", "output", "queue", "checkpoint"],
                   help="what to do with the kernel; queue: push the queued folds (push --folds all) as earlier ones "
                        "end; status --run R without --fold: every fold's kernel in one table; checkpoint: version "
                        "an ended kernel's output as a private dataset (then push --resume-from dataset)")
    s.add_argument("--task", default="train", choices=["train", "predict", "notebook"], help="the kernel's job")
    s.add_argument("--fold", type=Whole(0, 99), default=None, help="train: the fold to train (default: 0)")
    s.add_argument("--folds", default=None, metavar="0,1,...|all",
                   help="predict: the folds to ensemble, e.g. 0,1,2,3,4 (default: every trained fold); train push: "
                        "all, every fold, --max-running at a time (then `kernel queue`)")
    s.add_argument("--max-running", type=Whole(1, 10), default=2,
                   help="push --folds all: Kaggle sessions at a time (Kaggle runs about 2 GPU sessions at once) "
                        "(default: 2)")
    s.add_argument("--fresh", action="store_true",
                   help="push: start over, ignoring this kernel's earlier output (its progress is lost)")
    s.add_argument("--resume-from", default="self", choices=["self", "dataset"],
                   help="push: where the new version finds the earlier progress: self (the kernel's own output, "
                        "mounted as its source) | dataset (the private dataset `kernel checkpoint` made of it) "
                        "(default: self)")
    s.add_argument("--session-hours", type=Number(0.5, 24), default=None,
                   help="the kernel's session length on Kaggle (default: KAGGLE_SESSION_HOURS, else 12)")
    s.add_argument("--preset", default="unet", help="the preset the kernel trains")
    s.add_argument("--run", "--name", dest="run", default=None, action="append", metavar="RUN",
                   help=f"{RUN_HELP}; names the kernel; train output goes there; predict: give it again to blend "
                        f"runs, --run A --run B[@FOLDS][:WEIGHT] (default: the preset's name)")
    s.add_argument("--user", default=None, help="Kaggle user name (default: from the kaggle config)")
    add_accelerator(s)
    s.add_argument("--shard", default=None, metavar="i/N", help="predict: i/N slice of the test set (default: all)")
    s.add_argument("--train-kernels", default=None,
                   help="predict: comma list of user/slug train kernels (default: the run's fold kernels)")
    s.add_argument("--epochs", type=Whole(1, 10_000), default=None,
                   help="train: override the preset's epochs (e.g. 1 to try it) (default: the preset's)")
    add_encoder(s, kernel=True)
    s.add_argument("--filters", type=Whole(1, 1024), default=None,
                   help="train: override the preset's filters (e.g. 16 with an encoder) (default: the preset's)")
    s.add_argument("--weights-dataset", default=None,
                   help="train: user/slug of a Kaggle dataset holding the encoder's weights file (internet stays "
                        "off) (default: none)")
    s.add_argument("--refine", default=None, choices=REFINES,
                   help="predict: how probabilities reach 1918x1280; 'net' makes the kernel train the refiner on "
                        "the folds' held-out predictions first (`refiner --test-only`) (default: the run's config)")
    s.add_argument("--out", "--dest", dest="out", default=None, metavar="DIR",
                   help=f"build, push, queue: where push folders are written ({BUILD}); output: where the kernel's "
                        f"outputs go (a train kernel's run folder) (--dest: output's former spelling) (default: as "
                        f"said)")
