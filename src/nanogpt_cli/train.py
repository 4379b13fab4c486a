"""The training loop.

`train` builds the model and optimizer, then runs: linear warmup and cosine LR decay, gradient
accumulation, mixed precision where the device has it, gradient clipping, a loss estimate on train and
val every eval_interval steps, ckpt.pt at each eval and best.pt whenever val loss improves, and a
metrics.jsonl line for every log and eval. It reports progress through `on_event(kind, info)` and
never prints. Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves ckpt.pt, and raises
`TrainingInterrupted`.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nanogpt_cli import __version__, paths
from nanogpt_cli.checkpoint import FORMAT_VERSION, save_checkpoint
from nanogpt_cli.config import DEFAULT_PRESET_FOR_DEVICE, ModelConfig, TrainConfig, build_configs
from nanogpt_cli.data import BatchSampler, Dataset, bundled_dataset, load_dataset
from nanogpt_cli.device import autocast, describe, resolve_device, resolve_dtype
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.model import build_model, count_parameters

EventHandler = Callable[[str, dict[str, Any]], None]


class TrainingInterrupted(Exception):
    """Raised after an interrupted run has saved its checkpoint."""

    def __init__(self, iteration: int, checkpoint: Path):
        super().__init__(f"interrupted at iteration {iteration}")
        self.iteration = iteration
        self.checkpoint = checkpoint


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr at decay_iters, then flat."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, cfg.decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # Decay only the matrices (linear and embedding weights); biases and LayerNorm gains stay free.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)


def model_vocab_size(dataset: Dataset) -> int:
    """Char vocabularies are used as they are; BPE ones are padded to a multiple of 64 (as nanoGPT
    pads GPT-2's 50257 to 50304) because matmuls with round sizes run faster on GPUs."""
    vocab = dataset.vocab_size
    return vocab if dataset.meta["tokenizer"]["kind"] == "char" else -(-vocab // 64) * 64


def check_fits(dataset: Dataset, block_size: int) -> None:
    for split in ("train", "val"):
        n = len(dataset.tokens(split))
        if n <= block_size:
            raise NanoGPTError(
                f"--block-size {block_size} needs more than {block_size} tokens in each split, but the "
                f"{split} split of {dataset.name!r} has {n}; use a smaller --block-size or more text"
            )


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, sampler: BatchSampler, iters: int, ctx_factory, seed: int) -> float:
    """Mean loss over `iters` batches. The sampler is reseeded so every eval sees the same batches,
    which makes successive evals (and the best-checkpoint choice) comparable."""
    was_training = model.training
    model.eval()
    sampler.generator.manual_seed(seed)
    total = 0.0
    for _ in range(iters):
        x, y = sampler.next()
        with ctx_factory():
            _, loss = model(x, y)
        total += loss.item()
    model.train(was_training)
    return total / iters


class _StopRequests:
    """Turns the first SIGINT/SIGTERM into a flag checked between steps; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class RunPlan:
    """What `nanogpt train` will do, settled before any work starts."""

    preset: str | None
    model_config: ModelConfig
    train_config: TrainConfig
    bundled_source: str | None  # bundled text to prepare first, when the dataset is missing
    bundled_tokenizer: str


def plan_run(preset: str | None, overrides: dict[str, Any]) -> RunPlan:
    """Pick the preset (by device when none is given), merge the flags and check them all, so a bad
    flag fails before any dataset is prepared or run folder created."""
    device = resolve_device(overrides.get("device") or "auto")
    if preset is None:
        preset = "bigram" if overrides.get("model") == "bigram" else DEFAULT_PRESET_FOR_DEVICE[device.type]
    model_config, train_config = build_configs(preset, overrides)
    model_config.validate()
    train_config.validate()
    resolve_dtype(train_config.dtype, device)
    bundled = None
    if not (paths.dataset_dir(train_config.dataset) / "meta.json").is_file():
        bundled = bundled_dataset(train_config.dataset)
    return RunPlan(preset, model_config, train_config, *(bundled or (None, "char")))


def new_run_name(dataset: str) -> str:
    base = f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while paths.run_dir(name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def prepare_run_dir(run: str | None, dataset: str, overwrite: bool) -> Path:
    run_dir = paths.run_dir(run) if run else paths.run_dir(new_run_name(dataset))
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise NanoGPTError(f"run {run_dir.name!r} already exists; choose another --run name or pass --overwrite")
        for name in ("ckpt.pt", "best.pt", "metrics.jsonl", "config.json"):
            (run_dir / name).unlink(missing_ok=True)
    return paths.ensure_dir(run_dir)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    run: str | None = None,
    overwrite: bool = False,
    preset: str | None = None,
    on_event: EventHandler | None = None,
) -> dict[str, Any]:
    """Train a model; return a summary (run, paths, losses, timing)."""
    emit = on_event or (lambda kind, info: None)
    cfg = train_config
    cfg.validate()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    dataset = load_dataset(cfg.dataset)
    model_config.vocab_size = model_vocab_size(dataset)
    model_config.validate()
    check_fits(dataset, model_config.block_size)

    run_dir = prepare_run_dir(run, dataset.name, overwrite)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(model_config).to(device)
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def ctx():
        return autocast(device, dtype)

    train_batches = BatchSampler(dataset.tokens("train"), cfg.batch_size, model_config.block_size, device, cfg.seed)
    eval_batches = {
        split: BatchSampler(dataset.tokens(split), cfg.batch_size, model_config.block_size, device, cfg.seed)
        for split in ("train", "val")
    }
    n_params = count_parameters(model)
    run_info = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "dataset": dataset.name,
        "preset": preset,
        "parameters": n_params,
        "device": describe(device),
        "dtype": str(dtype).removeprefix("torch."),
        "model_config": asdict(model_config),
        "train_config": asdict(cfg),
        "tokenizer": dataset.meta["tokenizer"],
        "nanogpt_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (run_dir / "config.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def log(row: dict[str, Any]) -> None:
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()

    def checkpoint(path: Path, step: int, best_val_loss: float, with_optimizer: bool) -> None:
        payload = {
            "format_version": FORMAT_VERSION,
            "nanogpt_version": __version__,
            "model_config": asdict(model_config),
            "train_config": asdict(cfg),
            "model": model.state_dict(),
            "tokenizer": dataset.meta["tokenizer"],
            "dataset": dataset.name,
            "train_state": {"iteration": step, "best_val_loss": best_val_loss},
        }
        if with_optimizer:
            payload["optimizer"] = optimizer.state_dict()
            payload["scaler"] = scaler.state_dict()
            payload["train_state"]["rng"] = {
                "python": list(random.getstate()[1]),
                "torch": torch.get_rng_state(),
                "sampler": train_batches.generator.get_state(),
            }
        save_checkpoint(path, payload)

    emit("start", run_info)
    tokens_per_step = cfg.batch_size * model_config.block_size * cfg.grad_accum
    best_val_loss = math.inf
    val_loss = train_loss = None
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    train_time = 0.0  # seconds spent in optimizer steps, for tokens/s
    start = time.perf_counter()
    step = 0
    x, y = train_batches.next()
    model.train()
    try:
        with _StopRequests() as stop:
            while True:
                if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                    train_loss = estimate_loss(model, eval_batches["train"], cfg.eval_iters, ctx, cfg.seed + 1)
                    val_loss = estimate_loss(model, eval_batches["val"], cfg.eval_iters, ctx, cfg.seed + 2)
                    improved = val_loss < best_val_loss
                    best_val_loss = min(best_val_loss, val_loss)
                    elapsed = time.perf_counter() - start
                    row = {"kind": "eval", "iter": step, "train_loss": train_loss, "val_loss": val_loss,
                           "lr": lr_at(step, cfg), "elapsed": round(elapsed, 3)}
                    log(row)
                    if step > 0:
                        checkpoint(run_dir / "ckpt.pt", step, best_val_loss, with_optimizer=True)
                        if improved:
                            checkpoint(run_dir / "best.pt", step, best_val_loss, with_optimizer=False)
                    emit("eval", {**row, "best_val_loss": best_val_loss, "improved": improved})
                if step >= cfg.max_iters:
                    break
                if stop.requested:
                    checkpoint(run_dir / "ckpt.pt", step, best_val_loss, with_optimizer=True)
                    raise TrainingInterrupted(step, run_dir / "ckpt.pt")

                t0 = time.perf_counter()
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                for _ in range(cfg.grad_accum):
                    with ctx():
                        _, loss = model(x, y)
                        loss = loss / cfg.grad_accum
                    x, y = train_batches.next()  # fetch the next batch while the GPU works
                    scaler.scale(loss).backward()
                    loss_sum += loss.detach()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_count += 1

                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    loss_value = (loss_sum / loss_count).item()  # one device sync per log line
                    train_time += time.perf_counter() - t0
                    if not math.isfinite(loss_value):
                        raise NanoGPTError(
                            f"the loss became {loss_value} at iteration {step}; lower --lr or use --dtype float32 "
                            f"(the last good checkpoint is in {run_dir})"
                        )
                    row = {"kind": "train", "iter": step, "loss": loss_value, "lr": lr,
                           "tokens_per_second": round(tokens_per_step * loss_count / max(train_time, 1e-9), 1)}
                    log(row)
                    emit("step", {**row, "max_iters": cfg.max_iters, "val_loss": val_loss})
                    loss_sum.zero_()
                    loss_count = 0
                    train_time = 0.0
                else:
                    train_time += time.perf_counter() - t0
    finally:
        metrics.close()

    elapsed = time.perf_counter() - start
    summary = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "iterations": step,
        "best_val_loss": best_val_loss,
        "final_train_loss": train_loss,
        "final_val_loss": val_loss,
        "elapsed": elapsed,
        "parameters": n_params,
        "checkpoint": str(run_dir / "best.pt"),
    }
    emit("done", summary)
    return summary



