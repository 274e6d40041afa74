"""The runtime policy of a training or inference process: devices (one GPU, several, or the CPU), precision
(float32, float16 or bfloat16: `precision_policy`) and XLA (`jit_compile`). Pure reads of the machine and the
environment; nothing here builds a model."""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..base import records
from ..base.console import say, stderr_captured
from ..base.errors import UserError
from ..base.fileio import write_json
from ..base.records import Shape


_GPUS: list = []


def gpus() -> list:
    """TensorFlow's GPUs (physical devices), asked once a process: the first ask starts TensorFlow's runtime, whose
    CUDA probe prints start-up lines ("failed call to cuInit" on a machine without a GPU) on file descriptor 2,
    captured here so that a command's stderr keeps its one-line errors even where TensorFlow was imported before
    the CLI could quiet it (a notebook, a test)."""
    if not _GPUS:
        import tensorflow as tf
        with stderr_captured():
            tf.config.list_logical_devices("GPU")  # starts the runtime (and its probe)
        _GPUS.append(tf.config.list_physical_devices("GPU"))
    return _GPUS[0]


def inference_devices() -> list[str | None]:
    """Where predict puts a copy of its models, one batch each in turn: every logical GPU (Kaggle's T4 x2: two), else
    the CPU's logical devices where a process split it in more than one (as the tests do), else [None] (TensorFlow
    places them). Another Keras backend than TensorFlow: [None]."""
    import keras
    if keras.backend.backend() != "tensorflow":
        return [None]
    import tensorflow as tf
    gpus()  # the runtime started quietly
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")]
    return devices if len(devices) > 1 else [None]


def pick_strategy():
    """MirroredStrategy over several GPUs (Kaggle's 2x T4), else the default one-device strategy."""
    import tensorflow as tf
    if len(gpus()) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def build_optimizer(model) -> None:
    """Make a compiled model's optimizer variables now, before its first training step. Without a
    distribution strategy Keras makes them inside the first trace of the train step, and TensorFlow then
    traces the step a second time (a function that created variables is traced again without): about 1.8 s
    of a tiny U-Net's 3.1 s first step, and the same seconds on every fold, refiner and resume. Under a
    strategy (MirroredStrategy on Kaggle's 2x T4) Keras builds them itself, in the strategy's scope."""
    import keras
    optimizer = model.optimizer
    if optimizer is None or optimizer.built:
        return
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        if tf.distribute.has_strategy():
            return
    optimizer.build(model.trainable_variables)


XLA_ENV = "COMPETITION_XLA"


def xla_setting() -> bool | None:
    """COMPETITION_XLA as asked (None: unset), or a one-line UserError: train checks it before any work."""
    setting = os.environ.get(XLA_ENV, "")
    if setting in ("0", "1"):
        return setting == "1"
    if setting:
        raise UserError(f"{XLA_ENV}={setting!r}: use 1 (XLA on), 0 (off) or leave it unset (measured once per CPU and model shape)")
    return None


def jit_compile(policy: str | None = None, probe: Callable[[], tuple[float, float]] | None = None,
                key: str = "") -> bool | str:
    """XLA for the training and validation steps where Keras would leave it off: on a machine without GPUs,
    when it is faster there, and never for a model that computes in bfloat16 (`policy`, the model's dtype
    policy; default the global one).

    Keras's "auto" turns XLA off on CPU-only machines, yet it halves the demo and cpu nets' float32 step
    time on some 2-core CPUs (0.51 -> 0.26 s an image) and makes it 0.7x on others (issue 36): so with a
    `probe` (a few steps timed without and with XLA: seconds a step) the first run of a configuration `key`
    on this CPU measures it and `xla_choice` caches the answer; without one, XLA is on. In bfloat16 XLA's
    CPU backend computes without the CPU's bfloat16 instructions (a 4-image cpu step 0.56 s with XLA,
    0.24 s without), so bfloat16 models compile without it. On GPUs "auto" already compiles (and keeps XLA off
    under MirroredStrategy, Kaggle's 2x T4), so Keras's choice stays. COMPETITION_XLA=0 turns it off, =1
    forces it."""
    setting = xla_setting()
    if setting is not None:
        return setting
    import keras
    if keras.backend.backend() != "tensorflow":  # JAX (calibrate on a lent GPU): Keras compiles every step
        return "auto"
    import tensorflow as tf
    if gpus():
        return "auto"
    policy = policy or keras.mixed_precision.global_policy().name
    if policy == "mixed_bfloat16":
        return False
    return True if probe is None else xla_choice(f"{cpu_model()} | {tf.__version__} | {policy} | {key}", probe)


XLA_CACHE_ENV = "COMPETITION_XLA_CACHE"
XLA_MARGIN = 0.95  # XLA only when a step takes under 95% of the time without it: never slower, within noise


def xla_cache_path() -> Path:
    """Where measured XLA choices are kept: $COMPETITION_XLA_CACHE, else ~/.cache/competition/xla.json."""
    if os.environ.get(XLA_CACHE_ENV):
        return Path(os.environ[XLA_CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "competition" / "xla.json"


XLA_ENTRY = Shape("a measured XLA choice", required={"xla": "bool"},
                  optional={"step_s_without": "finite", "step_s_with": "finite"})
XLA_SHAPE = Shape("measured XLA choices", check=lambda r: next(
    (f"{key!r}: {XLA_ENTRY.problem(v)}" for key, v in r.items() if XLA_ENTRY.problem(v)), None))


def read_xla_cache() -> dict:
    """The measured XLA choices ({} before the first), checked: a damaged one is one line (train reads it before it
    writes anything)."""
    path = xla_cache_path()
    if not path.is_file():
        return {}
    return records.load(path, XLA_SHAPE, "delete it: the next train measures the choice again")


def xla_choice(key: str, probe: Callable[[], tuple[float, float]]) -> bool:
    """Whether XLA is faster for configuration `key` on this host: read from the cache, else `probe()` (seconds
    a step without and with XLA) measured once, said in one line and kept (delete the file to measure again)."""
    path = xla_cache_path()
    cache = read_xla_cache()
    if key in cache:
        return cache[key]["xla"]
    without, with_xla = probe()
    on = with_xla < XLA_MARGIN * without
    say(f"XLA {'on' if on else 'off'}: a training step takes {with_xla:.3f} s with it, {without:.3f} s without, "
        f"on this CPU (measured once, kept in {path}; COMPETITION_XLA=0/1 forces it)")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**cache, key: {"xla": on, "step_s_without": round(without, 4),
                                         "step_s_with": round(with_xla, 4)}})
    return on


def cpu_model() -> str:
    """The CPU's model name and a digest of its feature flags from /proc/cpuinfo (VMs sold as one "AMD EPYC"
    differ in AVX-512 and bfloat16), else the platform's processor string."""
    with contextlib.suppress(OSError):
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "model name" in fields:
            flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()[:8]
            return f"{fields['model name']} (flags {flags})"
    return platform.processor() or platform.machine()


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of x86 CPUs with bfloat16 arithmetic


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo's flags (or
    `cpuinfo`, its text); False where there is no such file (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip() == "flags"
             for f in line.split(":", 1)[-1].split()}
    return any(f in flags for f in BF16_FLAGS)


@dataclass(frozen=True)
class Device:
    """What the precision decision needs to know of a machine: its GPU's CUDA compute capability (None: no GPU) and,
    without one, whether the CPU has bfloat16 instructions."""

    gpu_capability: tuple[int, int] | None = None
    bf16_cpu: bool = False


FAST_FLOAT16 = ((6, 0), (7, 0), (7, 2), (7, 5))  # P100, V100, Xavier, T4 (and Turing cards): float16 tensor math
BFLOAT16_FROM = (8, 0)  # Ampere and newer (A100, L4, RTX 30xx/40xx, H100): bfloat16 as fast as float16, no scaling


def precision_policy(mixed: bool, device: Device) -> str:
    """The Keras dtype policy a run trains in, from the device alone: with `mixed_precision`, bfloat16 on Ampere and
    newer GPUs, float16 on those that lack bfloat16 but do float16 well (T4, P100, V100), bfloat16 on CPUs with
    AVX512-BF16 or AMX (about 2x a cpu-preset epoch there: docs/results.md); float32 everywhere else (older GPUs,
    other CPUs: emulated half precision would be slower) and without `mixed_precision`. Variables, the loss and the
    output's sigmoid stay float32 either way."""
    if not mixed:
        return "float32"
    if device.gpu_capability is not None:
        if tuple(device.gpu_capability) >= BFLOAT16_FROM:
            return "mixed_bfloat16"
        return "mixed_float16" if tuple(device.gpu_capability) in FAST_FLOAT16 else "float32"
    return "mixed_bfloat16" if device.bf16_cpu else "float32"


def this_device() -> Device:
    """This machine's Device: the first GPU TensorFlow sees (its compute capability), else the CPU's flags."""
    import tensorflow as tf
    found = gpus()
    if found:
        details = tf.config.experimental.get_device_details(found[0])
        return Device(gpu_capability=tuple(details.get("compute_capability") or (7, 5)))  # unknown: as a T4
    return Device(bf16_cpu=cpu_has_bf16())


def device_name() -> str:
    """What trains here, as a key of measurements: the first GPU's name (and how many), else the CPU's model."""
    import tensorflow as tf
    found = gpus()
    if found:
        name = tf.config.experimental.get_device_details(found[0]).get("device_name", "GPU")
        return f"{len(found)}x {name}"
    return cpu_model()


def machine_policy(mixed: bool) -> str:
    """`precision_policy` on this machine."""
    return precision_policy(mixed, this_device())


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Keras's global dtype policy set to `policy` while the block builds (or loads) a model, then restored: the
    model keeps its policy (and saves it), nothing built after it in this process (a refiner, a test) does."""
    import keras
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
