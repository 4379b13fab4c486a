"""Deciding a run before any work starts: which config, and whether it can start or resume.

`plan_run` picks the preset (by device when none is given), merges defaults < preset < config file <
flags, checks every value once, and loads --init-from weights. `plan_resume` continues a run with its
own saved settings, letting flags change only the schedule and bookkeeping. `attach_dataset` then
opens the dataset (after the bundled one has been prepared, if it had to be) and checks that the
model fits it. A bad flag fails here, before a dataset is prepared or a run folder created. This
module builds no model and trains nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from nanogpt_cli import paths
from nanogpt_cli.catalog import read_json, read_run_config, resolve_run
from nanogpt_cli.checkpoint import load_checkpoint
from nanogpt_cli.config import (
    DEFAULT_PRESET_FOR_DEVICE,
    KNOBS,
    ModelConfig,
    RunFile,
    TrainConfig,
    build_configs,
    model_config_from_dict,
    to_toml,
    train_config_from_dict,
)
from nanogpt_cli.dataset import Dataset, load_dataset
from nanogpt_cli.device import resolve_device, resolve_dtype
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.loggers import check_loggers
from nanogpt_cli.memory import biggest_setting, check_fits, training_bytes
from nanogpt_cli.optim import lr_at
from nanogpt_cli.pretrained import Pretrained, load_source
from nanogpt_cli.sources import bundled_dataset
from nanogpt_cli.tokenizer import same_tokenizer, spec_name

# Model fields that weights fix (every one but the context length, which may shrink, and dropout).
SHAPE_FIELDS = [k.name for k in KNOBS.values() if k.section == "model" and k.name not in ("block_size", "dropout")]

# Settings a resumed run may change: they alter the schedule or bookkeeping, not the model or data.
RESUMABLE_CHANGES = {"max_iters", "time", "lr_decay_iters", "min_lr", "schedule", "decay_frac", "eval_interval",
                     "eval_iters", "log_interval", "device", "dtype", "keep", "allow_nan", "compile", "peak_flops",
                     "log", "wandb_project"}


# What a checkpoint's train_state must hold to be resumed (a best.pt holds weights only).
RESUME_STATE = {"iteration", "best_val_loss", "loss_sum", "loss_count", "rng"}


@dataclass
class RunPlan:
    """What `nanogpt train` will do, settled before any work starts."""

    preset: str | None
    model_config: ModelConfig
    train_config: TrainConfig
    run: str | None = None
    bundled: tuple[str, str] | None = None  # (source, tokenizer) to prepare first when the dataset is missing
    resume: dict[str, Any] | None = None  # the checkpoint to continue from
    init: Pretrained | None = None  # weights to start from (--init-from)
    dataset: Dataset | None = None  # set by attach_dataset
    notes: list[str] = field(default_factory=list)  # things the user should know before training starts


def plan_run(preset: str | None, flags: dict[str, Any], run: str | None = None, world: int = 1,
             progress=None, file: RunFile | None = None) -> RunPlan:
    """A new run. With `world` data-parallel processes, the micro-steps of gradient accumulation are
    shared out among them."""
    preset, model_config, train_config = resolve_config(preset, flags, file)
    device = resolve_device(train_config.device)
    explicit = flags.get("grad_accum") is not None or (file is not None and "grad_accum" in file.values)
    train_config.grad_accum = check_world(train_config.grad_accum, world, explicit)
    dtype = resolve_dtype(train_config.dtype, device)
    init = None
    if train_config.init_from:
        init = _load_init(train_config.init_from, {**(file.values if file else {}), **flags}, progress)
        model_config = init.config
    bundled = None
    if not (paths.dataset_dir(train_config.dataset) / "meta.json").is_file():
        bundled = bundled_dataset(train_config.dataset)
    return RunPlan(preset, model_config, train_config, run=run, bundled=bundled, init=init,
                   notes=apple_gpu_notes(device, dtype, train_config.compile))


def apple_gpu_notes(device: torch.device, dtype: torch.dtype, compile: bool | None) -> list[str]:
    """What users of Apple GPUs have run into with the settings that are not the default there."""
    if device.type != "mps":
        return []
    notes = []
    if compile:
        notes.append("torch.compile on Apple GPUs is a prototype in PyTorch and has produced NaN losses; "
                     "if the loss misbehaves, train with --no-compile")
    if dtype != torch.float32:
        notes.append(f"{str(dtype).removeprefix('torch.')} on Apple GPUs needs a recent macOS and is often slower "
                     "than float32 there; --dtype float32 is the default for a reason")
    return notes


def _is_task_dataset(name: str) -> bool:
    try:
        return "task" in (read_json(paths.dataset_dir(name) / "meta.json") or {})
    except NanoGPTError:  # not a valid dataset name: the dataset check says so later
        return False


def resolve_config(preset: str | None, flags: dict[str, Any], file: RunFile | None = None
                   ) -> tuple[str, ModelConfig, TrainConfig]:
    """The preset (a flag's, else the file's, else by model and device) and the merged, checked configs."""
    given = {**(file.values if file else {}), **{k: v for k, v in flags.items() if v is not None}}
    preset = preset or (file.preset if file else None)
    if preset is None and _is_task_dataset(given.get("dataset") or TrainConfig.dataset):
        preset = "addition"  # a task dataset (nanogpt prepare addition) gets the preset made for it
    if preset is None:
        device = resolve_device(given.get("device") or "auto")
        preset = "bigram" if given.get("model") == "bigram" else DEFAULT_PRESET_FOR_DEVICE[device.type]
    model_config, train_config = build_configs(preset, flags, file)
    return preset, model_config, train_config


def resolved_toml(preset: str | None, flags: dict[str, Any], file: RunFile | None = None, resume: bool = False,
                  run: str | None = None) -> str:
    """What `train --print-config` prints: the config a run would use, as a TOML run config."""
    # The same planning as the run itself, so the fields that --init-from weights fix are theirs.
    plan = plan_resume(run, preset, flags) if resume else plan_run(preset, flags, file=file)
    return to_toml(plan.model_config, plan.train_config, plan.preset)


def check_world(grad_accum: int, world: int, explicit: bool) -> int:
    """The accumulation to use with `world` processes, each doing grad_accum / world micro-steps. A
    preset's accumulation is rounded up to a multiple of the process count; a chosen one must divide."""
    if world <= 1 or grad_accum % world == 0:
        return grad_accum
    if explicit:
        raise NanoGPTError(
            f"--grad-accum {grad_accum} must be divisible by the number of processes ({world}): "
            "each process does its share of the micro-steps"
        )
    return -(-grad_accum // world) * world


def _load_init(spec: str, given: dict[str, Any], progress=None) -> Pretrained:
    """Load --init-from weights; the model's shape is theirs, but dropout may be set and the block size
    shrunk (a learned position table is cropped, as nanoGPT does)."""
    found = load_source(spec, progress=progress)
    config, weights = found.config, found.weights
    for key in SHAPE_FIELDS:
        if given.get(key) is not None and given[key] != getattr(config, key):
            raise NanoGPTError(
                f"--{key.replace('_', '-')} cannot change the shape of a model started from {found.description} "
                f"(it has {getattr(config, key)}); leave it out"
            )
    block_size = given.get("block_size")
    if block_size is not None:
        if block_size > config.block_size:
            raise NanoGPTError(f"--block-size {block_size} is larger than {found.description}'s ({config.block_size})")
        if "transformer.wpe.weight" in weights:
            weights = {**weights, "transformer.wpe.weight": weights["transformer.wpe.weight"][:block_size].clone()}
        config.block_size = block_size
    config.dropout = given.get("dropout") or 0.0  # validated with the other flags
    return replace(found, config=config, weights=weights)


def plan_resume(run: str | None, preset: str | None, flags: dict[str, Any], world: int = 1) -> RunPlan:
    """Continue `run` (default: the latest) from its ckpt.pt with its own settings; flags may extend
    the schedule but not change the model or the data."""
    if preset is not None:
        raise NanoGPTError("--preset cannot be combined with --resume: a resumed run keeps its own settings")
    run_dir = resolve_run(run, need="ckpt.pt")
    for name in ("ckpt.pt", "best.pt", "config.json", "config.toml", "metrics.jsonl"):
        paths.check_own(run_dir / name)  # each is rewritten as the run goes on
    path = run_dir / "ckpt.pt"
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt or "train_config" not in ckpt or not RESUME_STATE <= ckpt.get("train_state", {}).keys():
        raise NanoGPTError(f"{path} holds weights only, not a full training state; it cannot be resumed")
    model_config = model_config_from_dict(ckpt["model_config"])
    before = train_config_from_dict(ckpt["train_config"])
    train_values = asdict(before)
    for key, value in flags.items():
        if value is None:
            continue
        current = getattr(model_config, key, train_values.get(key))
        if key in RESUMABLE_CHANGES:
            train_values[key] = value
        elif value != current:
            raise NanoGPTError(
                f"--{key.replace('_', '-')} {value} would change run {run_dir.name!r} (it has {current}); "
                "a resumed run keeps its model and data. Start a new run to change it"
            )
    train_config = train_config_from_dict(train_values)
    train_config.validate()
    check_world(train_config.grad_accum, world, explicit=True)
    resolve_dtype(train_config.dtype, resolve_device(train_config.device))
    done = ckpt["train_state"]["iteration"]
    used = ckpt["train_state"].get("elapsed", 0.0)
    if train_config.time_budget is not None:
        if used >= train_config.time_budget:
            raise NanoGPTError(
                f"run {run_dir.name!r} already used its {train_config.time} of training ({used:.0f} s); "
                "pass a larger --time to train it further"
            )
    elif done >= train_config.max_iters:
        raise NanoGPTError(
            f"run {run_dir.name!r} already finished {done} of {train_config.max_iters} iterations; "
            f"pass a larger --max-iters to train it further"
        )
    config = read_run_config(paths.check_own(run_dir / "config.json"))  # rewritten when the run starts again
    preset = config.get("preset") if config else None
    notes = [note] if (note := schedule_change(run_dir.name, done, before, train_config)) else []
    return RunPlan(preset, model_config, train_config, run=run_dir.name, resume=ckpt, notes=notes)


def schedule_change(run: str, step: int, before: TrainConfig, after: TrainConfig) -> str | None:
    """One line saying how new settings move a resumed run's learning rate, if they do."""
    if before.time_budget is not None or after.time_budget is not None:
        return None  # a timed schedule follows the share of time used, not the iterations
    old, new = lr_at(step, before), lr_at(step, after)
    if old == new and before.decay_iters == after.decay_iters:
        return None
    changes = [f"at iteration {step:,} the rate goes from {old:.2e} to {new:.2e}"] if old != new else []
    if before.decay_iters != after.decay_iters:
        changes.append(f"it now decays until iteration {after.decay_iters:,} instead of {before.decay_iters:,} "
                       f"(pass --lr-decay-iters {before.decay_iters} to keep the old schedule)")
    return f"the new settings change the learning-rate schedule of run {run!r}: {', and '.join(changes)}"


def model_vocab_size(dataset: Dataset) -> int:
    """Char vocabularies are used as they are; BPE ones are padded to a multiple of 64 (as nanoGPT
    pads GPT-2's 50257 to 50304) because matmuls with round sizes run faster on GPUs."""
    vocab = dataset.vocab_size
    return vocab if dataset.meta["tokenizer"]["kind"] == "char" else -(-vocab // 64) * 64


def attach_dataset(plan: RunPlan, run_name: str) -> RunPlan:
    """The plan with its dataset opened, the vocabulary set from it, and every check that needs the
    data done: the tokenizer a resumed or initial model was trained with, and the block size."""
    check_loggers(plan.train_config.loggers)  # a missing --log extra is found before the run folder is made
    dataset = load_dataset(plan.train_config.dataset)
    if plan.resume is not None and plan.resume["tokenizer"] != dataset.meta["tokenizer"]:
        raise NanoGPTError(
            f"dataset {dataset.name!r} has been prepared again with a different tokenizer since run "
            f"{run_name!r} started; prepare it as before to resume"
        )
    recorded = (plan.resume or {}).get("dataset_fingerprint")
    if recorded is not None and recorded != dataset.fingerprint:
        raise NanoGPTError(
            f"dataset {dataset.name!r} has been prepared again from other text since run {run_name!r} started, so "
            "resuming would train it on tokens it never saw; prepare it as before, or start a new run"
        )
    model_config = plan.model_config
    if plan.init is not None:
        if not same_tokenizer(plan.init.tokenizer, dataset.meta["tokenizer"]):
            raise NanoGPTError(
                f"{plan.init.description} and dataset {dataset.name!r} do not share a tokenizer: "
                f"{tokenizer_difference(plan.init.tokenizer, dataset.meta['tokenizer'])}; "
                + ("a char model continues only on text of its own characters: train a new run on this dataset "
                   "(without --init-from)" if plan.init.tokenizer.get("kind") == "char" else
                   f"prepare the data with the model's tokenizer (`nanogpt prepare ... --tokenizer "
                   f"{spec_name(plan.init.tokenizer)}`)")
            )
    elif plan.resume is None:
        model_config = replace(model_config, vocab_size=model_vocab_size(dataset))
    if dataset.task is not None and plan.resume is None:  # a sequence is one whole problem, whatever was asked
        model_config = replace(model_config, block_size=dataset.task.length - 1)
    for split in ("train", "val"):
        n = len(dataset.tokens(split))
        if n <= model_config.block_size:
            raise NanoGPTError(
                f"--block-size {model_config.block_size} needs more than {model_config.block_size} tokens in each "
                f"split, but the {split} split of {dataset.name!r} has {n}; use a smaller --block-size or more text"
            )
    batch = plan.train_config.batch_size
    check_fits(training_bytes(model_config, batch), resolve_device(plan.train_config.device),
               f"training a {model_config.n_layer}-layer, {model_config.n_embd}-wide model on batches of {batch}",
               f"lower {biggest_setting(model_config, batch)}")
    return replace(plan, model_config=model_config, dataset=dataset)


def tokenizer_difference(model: dict[str, Any], data: dict[str, Any]) -> str:
    """What differs between a model's tokenizer and a dataset's, in words: the kind, or for two char
    vocabularies their sizes and the characters only one of them has."""
    if model.get("kind") != data.get("kind") or model.get("kind") != "char":
        return f"the model uses the {spec_name(model)} tokenizer, the dataset {spec_name(data)}"
    only_model = sorted(set(model["chars"]) - set(data["chars"]))
    only_data = sorted(set(data["chars"]) - set(model["chars"]))
    shown = "; ".join(f"only the {who} has {_chars(chars)}" for who, chars in (("model", only_model),
                                                                                 ("dataset", only_data)) if chars)
    sizes = [len(spec["chars"]) + ("unknown" in spec) for spec in (model, data)]
    return (f"the model's character vocabulary has {sizes[0]} entries, the dataset's {sizes[1]}"
            + (f" ({shown})" if shown else " (the same characters in another order)"))


def _chars(chars: list[str], shown: int = 12) -> str:
    listed = " ".join(repr(c)[1:-1] if c.isprintable() and c != " " else repr(c) for c in chars[:shown])
    return f"{len(chars)} character{'s' if len(chars) != 1 else ''}: {listed}" + (" ..." if len(chars) > shown else "")
