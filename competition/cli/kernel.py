"""The kernel subcommand: build, push and follow Kaggle kernels. Its flags are all declared in add_kernel."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import REFINES
from .options import RUN_HELP, add_accelerator, add_encoder, add_session_hours, folds_arg, shard_arg
from .parser import AddCommand, Whole

BUILD = "kernels/build"  # where `kernel build/push/queue` write push folders


def _names(a: argparse.Namespace) -> tuple[Path | None, str | None]:
    """The run's folder (one --run) and the kernel's run name (a blend: named after it)."""
    from ..inference.ensemble import default_name, parse_member
    from ..runs.folder import run_path
    runs = a.run or []
    run_dir = run_path(runs[0]) if len(runs) == 1 else None  # the kernel is named after the folder's name
    if len(runs) > 1:  # a predict kernel blending runs
        return None, default_name([parse_member(r) for r in runs])
    return run_dir, run_dir.name if run_dir else None


def cmd_kernel(a: argparse.Namespace) -> None:
    from ..base.errors import UserError
    from ..base.fileio import check_folder
    from ..kaggle import checkpoint as kernel_checkpoint, kernels, queue as kernel_queue
    if a.out:
        check_folder(a.out, "--out")
    run_dir, name = _names(a)
    every_fold = a.all_folds or a.folds == "all"  # --folds all: --all-folds's former spelling
    if a.action == "quota":
        return kernels.show_quota()
    if a.action == "queue" or (a.action == "status" and a.fold is None and a.task == "train" and name):
        if not name:
            raise UserError(f"kernel {a.action}: name the run, --run NAME")
        return kernel_queue.run_queue(name, Path(a.out or BUILD)) if a.action == "queue" else kernel_queue.status_table(name)
    spec = kernels.KernelSpec(task=a.task, fold=a.fold or 0, folds=None if every_fold else folds_arg(a.folds),
                              preset=a.preset, name=name, user=a.user, accelerator=a.accelerator,
                              shard=shard_arg(a.shard), blend=a.run if a.run and len(a.run) > 1 else None,
                              train_kernels=a.train_kernels, epochs=a.epochs, encoder=a.encoder,
                              encoder_weights=a.encoder_weights, freeze_encoder=a.freeze_encoder,
                              weights_dataset=a.weights_dataset, filters=a.filters, refine=a.refine,
                              fresh=a.fresh, session_hours=a.session_hours, resume_from=a.resume_from,
                              accept_machine=a.accept_machine, time_limit=a.time_limit, budget=a.budget)
    if a.task == "notebook":
        from ..kaggle.notebook import kernel_command
        return kernel_command(a.action, spec, Path(a.out or BUILD))
    if every_fold and a.action != "push":
        raise UserError(f"--all-folds: for `kernel push` (then `kernel queue`), not `kernel {a.action}`")
    if a.version is not None and a.action not in ("output", "checkpoint", "logs"):
        raise UserError(f"--version: for output, checkpoint and logs (an ended version), not `kernel {a.action}`")
    if a.dry_run and a.action != "push" or a.dry_run and every_fold:
        raise UserError("--dry-run: for `kernel push` of one kernel")
    out_root = Path(a.out or BUILD)
    if a.action == "push" and every_fold:
        return kernel_queue.push_all(spec, max_running=a.max_running, out_root=out_root,
                                     hours_needed=None if a.over_quota else _folds_hours)
    actions = {
        "build": lambda: kernels.build(spec, out_root=out_root),
        "push": lambda: kernels.push(spec, out_root=out_root, dry_run=a.dry_run),
        "status": lambda: kernels.status(spec),
        "checkpoint": lambda: kernel_checkpoint.checkpoint(spec, version=a.version),
        "logs": lambda: kernels.logs(spec, version=a.version),
        "output": lambda: kernels.output(spec, dest=Path(a.out) if a.out else run_dir if a.task == "train" else None,
                                         version=a.version),
    }
    actions[a.action]()


def _folds_hours(spec) -> float:
    """What every fold of the spec's preset costs on its accelerator under its --budget, by `plan`'s arithmetic (an
    estimate where no rate is measured): what push --all-folds weighs against the week's quota."""
    from ..config import preset
    from ..costs.budget import fold_hours
    from ..kaggle.machines import kernel_budget
    cfg = preset(spec.preset, epochs=spec.epochs, filters=spec.filters, encoder=spec.encoder)
    return fold_hours(cfg, spec.accelerator, kernel_budget(spec.budget, spec.epochs), spec.session_hours) * cfg.k


def add_kernel(add: AddCommand) -> None:
    """Every flag of `kernel`, in one place."""
    s = add("kernel", cmd_kernel, "build, push and follow Kaggle kernels that train or predict on GPUs",
            "push --task train --preset unet --fold 0")
    s.add_argument("action", choices=["build", "push", "status", "output", "queue", "checkpoint", "logs", "quota"],
                   help="what to do with the kernel; queue: push the queued folds (push --all-folds) as earlier ones "
                        "end; status --run R without --fold: every fold's kernel in one table; checkpoint: version "
                        "an ended kernel's output as a private dataset (then push --resume-from dataset); logs: the "
                        "kernel's log, followed while it runs; quota: your GPU hours this week")
    s.add_argument("--version", type=Whole(1, 1_000_000), default=None,
                   help="output, checkpoint, logs: that version of the kernel (`kernel status` names the last one with "
                        "a usable output) (default: the latest)")
    s.add_argument("--dry-run", action="store_true",
                   help="push: save a version without running it (no GPU time): Kaggle checks the metadata and "
                        "sources")
    s.add_argument("--over-quota", action="store_true",
                   help="push --all-folds: queue the folds even when their estimated hours exceed this week's "
                        "quota left")
    s.add_argument("--accept-machine", action="store_true",
                   help="push, build: a kernel that gets other GPUs than its --accelerator (or none) trains on them; "
                        "without it, it stops in its first minute and says why")
    s.add_argument("--time-limit", default=None, metavar="DURATION",
                   help="push, build: stop the kernel's training or prediction after at most this long (e.g. 20m: a "
                        "trial stopped after its first epoch, to check that the next version resumes) (default: the "
                        "session less its margin)")
    s.add_argument("--budget", default=None, metavar="DURATION|session|none",
                   help="train: the fold planned to fill this time (`train --budget`); 'session': to fill what is "
                        "left of the session after start-up and the saving margin (it spends the whole session: mind "
                        "the week's quota, `plan --budget`); 'none': the preset's epochs, stopped at the session's "
                        "limit and resumed by the next push (default: the session as a cap, the preset's own "
                        "schedule where it fits in one session, fewer epochs planned to end within it where not)")
    s.add_argument("--task", default="train", choices=["train", "predict", "notebook"], help="the kernel's job")
    s.add_argument("--fold", type=Whole(0, 99), default=None, help="train: the fold to train (default: 0)")
    s.add_argument("--folds", default=None, metavar="0,1,...",
                   help="predict: the folds to ensemble, e.g. 0,1,2,3,4 (default: every trained fold)")
    s.add_argument("--all-folds", action="store_true",
                   help="train push: every fold of the preset, --max-running at a time (then `kernel queue`)")
    s.add_argument("--max-running", type=Whole(1, 10), default=2,
                   help="push --all-folds: Kaggle sessions at a time (Kaggle runs about 2 GPU sessions at once) "
                        "(default: 2)")
    s.add_argument("--fresh", action="store_true",
                   help="push: start over, ignoring this kernel's earlier output (its progress is lost)")
    s.add_argument("--resume-from", default="self", choices=["self", "dataset"],
                   help="push: where the new version finds the earlier progress: self (the kernel's own output, "
                        "mounted as its source) | dataset (the private dataset `kernel checkpoint` made of it) "
                        "(default: self)")
    add_session_hours(s)
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
