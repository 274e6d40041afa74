"""What GPU work costs on Kaggle: the data's image counts (and a fold's share of them), GPU cards' published
peaks, the efficiency assumed of them, Kaggle's session and quota figures. Constants only: `plan` prices a recipe with them, `bench` estimates a
T4's throughput with them; neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig

TEST_IMAGES = 100_064      # Kaggle's test set
TRAIN_IMAGES = 5_088       # Kaggle's training set; a fold trains on 4/5 of it
# Published NVIDIA T4 peaks (T4 datasheet): FP32 8.1 TFLOPS, FP16/FP32-accumulate tensor cores 65 TFLOPS.
T4_PEAK_TFLOPS = {"fp32": 8.1, "fp16": 65.0}
# Assumed fraction of peak a Keras U-Net reaches on a T4 (an assumption, stated in RESULTS.md).
T4_EFFICIENCY = {"fp32": 0.5, "fp16": 0.2}
MIN_ESTIMATE_FLOPS = 1e9   # below 1 GFLOP/image a GPU is bound by kernel launches: no FLOP-based estimate
MULTI_GPU_SCALING = 0.9    # assumed: each GPU of a MirroredStrategy session adds 90% of one GPU's speed


@dataclass(frozen=True)
class Gpu:
    """One GPU card's published dense peaks (TFLOPS) and memory."""

    card: str
    fp16_tflops: float  # tensor cores, FP16 in / FP32 accumulate, dense
    fp32_tflops: float
    memory_gb: float
    source: str


CARDS: dict[str, Gpu] = {
    "T4": Gpu("T4", T4_PEAK_TFLOPS["fp16"], T4_PEAK_TFLOPS["fp32"], 16, "NVIDIA T4 datasheet"),
    "L4": Gpu("L4", 121.0, 30.3, 24, "NVIDIA L4 datasheet (dense)"),
    "P100": Gpu("P100", 18.7, 9.3, 16, "NVIDIA P100 PCIe datasheet (no tensor cores)"),
    "H100": Gpu("H100", 989.0, 67.0, 80, "NVIDIA H100 SXM datasheet (dense)"),
    "H100-PCIe": Gpu("H100-PCIe", 756.0, 51.0, 80, "NVIDIA H100 PCIe datasheet (dense)"),
    "H200": Gpu("H200", 989.0, 67.0, 141, "NVIDIA H200 datasheet (dense)"),
}


# The cpu preset's first stage as measured on a 2-core CPU (CHANGELOG.md, "real-cpu at 192x288"): 20 epochs of
# 397 photos at 192x288 (depth 4, 16 filters) in about 15 minutes in bfloat16, about twice that in float32.
CPU_MEASURED = {"pixels": 192 * 288, "filters": 16, "depth": 4, "image_epochs": 20 * 397, "minutes": 15.0}
FULL_SIZE_PIXELS = 320 * 480  # an input above this is a full-size preset's: not for the synthetic set
DAYS_ON_A_CPU = 24.0          # hours of a fold on a CPU past which train asks for --preset cpu (or --anyway)


def cpu_fold_hours(pixels: int, filters: int, depth: int, image_epochs: int, bf16: bool) -> float:
    """An estimate of a fold's first-stage training on a 2-core CPU: the cpu preset's measured time scaled by input
    pixels, a U-Net's cost per pixel (filters squared times levels: each level halves the side and doubles the
    filters, so costs about the same) and images x epochs; float32 (no bfloat16) twice the time."""
    m = CPU_MEASURED
    per_pixel = (filters ** 2 * (depth + 1)) / (m["filters"] ** 2 * (m["depth"] + 1))
    scale = pixels / m["pixels"] * per_pixel * image_epochs / m["image_epochs"]
    return m["minutes"] * scale * (1 if bf16 else 2) / 60


def fold_images(cfg: TrainConfig) -> tuple[int, int]:
    """(training, validation) photos of one fold of Kaggle's training set (all of it, or cfg.max_images) in k folds."""
    images = min(cfg.max_images, TRAIN_IMAGES) if cfg.max_images else TRAIN_IMAGES
    val = round(images / cfg.k)
    return images - val, val
