"""A run's configuration: `TrainConfig` and its checks (settings.py) and the named presets (presets.py)."""
from .presets import OFFERED, PRESETS, RENAMED, REPRODUCTIONS, RETIRED, offered_help, preset
from .settings import (ARCHS, AUGMENTS, CONFIG_VERSION, LOSSES, POOLINGS, REFINER_FROM, REFINER_STEPS, REFINES,
                       SCHEDULES, TrainConfig, check_config, check_encoder, check_refine, check_threshold, load_config,
                       parse_crop, parse_size, refine_words, save_config)

__all__ = ["ARCHS", "AUGMENTS", "CONFIG_VERSION", "LOSSES", "OFFERED", "POOLINGS", "PRESETS", "REFINER_FROM",
           "REFINER_STEPS", "REFINES", "RENAMED", "REPRODUCTIONS", "RETIRED", "SCHEDULES", "TrainConfig", "check_config",
           "check_encoder", "check_refine", "check_threshold", "load_config", "offered_help", "parse_crop",
           "parse_size", "preset", "refine_words", "save_config"]
