"""Configuration: the knobs (fields.py), presets (presets.py), run config files (runfile.py) and
merging them with flags (merge.py). Import from here."""

from dataclasses import asdict

from nanogpt_cli.config.fields import (
    DERIVED,
    KNOBS,
    LOGGERS,
    MLPS,
    MODEL,
    MODEL_TYPES,
    NORMS,
    OPTIMIZERS,
    POSITIONS,
    RUN,
    SCHEDULES,
    SECTIONS,
    TRAINING,
    InvalidValue,
    Knob,
    ModelConfig,
    TrainConfig,
    check_option,
    check_seed,
    config_from_dict,
    knob,
    knobs_of,
    model_config_from_dict,
    parse_duration,
    range_help,
    train_config_from_dict,
)
from nanogpt_cli.config.merge import FINETUNE, build_configs
from nanogpt_cli.config.presets import DEFAULT_PRESET_FOR_DEVICE, PRESETS, Preset, get_preset
from nanogpt_cli.config.runfile import RunFile, read_run_file, to_toml

__all__ = ["DERIVED", "KNOBS", "LOGGERS", "MLPS", "MODEL", "MODEL_TYPES", "NORMS", "OPTIMIZERS", "POSITIONS", "RUN",
           "SCHEDULES", "SECTIONS", "TRAINING", "InvalidValue", "Knob", "ModelConfig", "TrainConfig",
           "check_option", "check_seed", "config_from_dict", "knob", "knobs_of", "model_config_from_dict",
           "parse_duration", "range_help",
           "train_config_from_dict",
           "DEFAULT_PRESET_FOR_DEVICE", "FINETUNE", "PRESETS", "Preset", "build_configs", "get_preset", "RunFile",
           "read_run_file", "to_toml", "asdict"]
