"""Merging a run's values in one order: dataclass defaults < preset < finetuning (with --init-from) <
run config file < command-line flags, validated once. A value that is wrong names where it came from:
the flag, or the file, key and line."""

from __future__ import annotations

from typing import Any

from nanogpt_cli.config.fields import KNOBS, InvalidValue, ModelConfig, TrainConfig
from nanogpt_cli.config.presets import get_preset
from nanogpt_cli.config.runfile import RunFile
from nanogpt_cli.errors import NanoGPTError

# Finetuning (--init-from): nanoGPT's recipe for a pretrained model, AdamW at a small constant rate (no
# warmup, no decay). A preset's rates are made for random weights: Muon's orthogonalised steps or a
# rate of 1e-3 would overwrite what the model knows in its first steps. Values the user gives win.
FINETUNE = dict(optimizer="adamw", lr=3e-5, min_lr=3e-5, warmup_iters=0)


def build_configs(preset: str | None, flags: dict[str, Any], file: RunFile | None = None
                  ) -> tuple[ModelConfig, TrainConfig]:
    """Merge defaults < preset < finetuning (with --init-from) < file < flags (a None flag means 'not
    given') and validate the result. An invalid value is reported against where it came from."""
    values: dict[str, Any] = dict(get_preset(preset).values) if preset else {}
    given = {**(file.values if file else {}), **{k: v for k, v in flags.items() if v is not None}}
    finetune = bool(given.get("init_from"))
    if finetune:
        values.update(FINETUNE)
    if "lr" in given and "min_lr" not in given:
        # keep the decay's floor below a newly chosen peak; a finetuning rate stays constant
        values["min_lr"] = given["lr"] if finetune else given["lr"] / 10
    values.update(given)
    unknown = set(values) - set(KNOBS)
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    model = ModelConfig(**{k: v for k, v in values.items() if KNOBS[k].section == "model"})
    train = TrainConfig(**{k: v for k, v in values.items() if KNOBS[k].section == "train"})
    try:
        model.validate()
        train.validate()
    except InvalidValue as exc:
        if file is not None and exc.name in file.values and flags.get(exc.name) is None:
            where = file.where(exc.name, KNOBS[exc.name].section)
            raise NanoGPTError(f"{where}: {exc.name} {exc.requirement}") from None
        raise
    return model, train
