"""The training loop.

`train` builds (or, with a resume checkpoint, restores) the model, optimizer and data order, then
runs: linear warmup and cosine LR decay, gradient accumulation, mixed precision where the device has
it, gradient clipping, a loss estimate on train and val every eval_interval steps, best.pt whenever
val loss improves and ckpt.pt at each eval, and a metrics.jsonl line for every log and eval.

A resumed run continues exactly where the checkpoint left it: weights, optimizer moments, grad scaler,
iteration, best val loss, the running loss average, and every random generator (python, torch, CUDA,
data sampling). On the CPU, an interrupted and resumed run is bit-for-bit the run that never stopped.

It reports progress through `on_event(kind, info)` and never prints. The first SIGINT/SIGTERM finishes
the current step, saves ckpt.pt and raises `TrainingInterrupted`; a second one aborts at once (the
checkpoint files are still intact, since every write is atomic). A lock file stops two processes from
training the same run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nanogpt_cli import __version__, distributed, paths
from nanogpt_cli.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from nanogpt_cli.config import (
    DEFAULT_PRESET_FOR_DEVICE,
    ModelConfig,
    TrainConfig,
    build_configs,
    model_config_from_dict,
    train_config_from_dict,
)
from nanogpt_cli.data import BatchSampler, Dataset, load_dataset
from nanogpt_cli.device import autocast, describe, peak_flops, resolve_device, resolve_dtype
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.model import build_model, count_parameters, flops_per_token
from nanogpt_cli.sources import bundled_dataset
from nanogpt_cli.tokenizer import spec_name

EventHandler = Callable[[str, dict[str, Any]], None]

# Settings a resumed run may change: they alter the schedule or bookkeeping, not the model or data.
RESUMABLE_CHANGES = {"max_iters", "lr_decay_iters", "min_lr", "eval_interval", "eval_iters", "log_interval",
                     "device", "dtype", "keep", "allow_nan", "compile", "peak_flops"}


class TrainingInterrupted(Exception):
    """Raised after an interrupted run has saved its checkpoint."""

    def __init__(self, run: str, iteration: int, checkpoint: Path):
        super().__init__(f"interrupted at iteration {iteration}")
        self.run = run
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
def estimate_loss(model: torch.nn.Module, sampler: BatchSampler, iters: int, ctx_factory, seed: int,
                  forward=None) -> float:
    """Mean loss over `iters` batches. The sampler is reseeded so every eval sees the same batches,
    which makes successive evals (and the best-checkpoint choice) comparable. `forward` (default: the
    model itself) is what computes the loss, e.g. a compiled version of the model."""
    was_training = model.training
    model.eval()
    sampler.generator.manual_seed(seed)
    total = 0.0
    for _ in range(iters):
        x, y = sampler.next()
        with ctx_factory():
            _, loss = (forward or model)(x, y)
        total += loss.item()
    model.train(was_training)
    return total / iters


# ----------------------------------------------------------------------------------- planning a run


@dataclass
class RunPlan:
    """What `nanogpt train` will do, settled before any work starts."""

    preset: str | None
    model_config: ModelConfig
    train_config: TrainConfig
    bundled_source: str | None = None  # bundled text to prepare first, when the dataset is missing
    bundled_tokenizer: str = "char"
    run: str | None = None
    resume_from: Path | None = None  # the checkpoint to continue from
    init: InitWeights | None = None  # weights to start from (--init-from)


@dataclass
class InitWeights:
    """What --init-from loaded: a model config, its weights, the tokenizer they were trained with."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: dict[str, Any]
    description: str


def plan_run(preset: str | None, overrides: dict[str, Any], run: str | None = None, world: int = 1,
             progress=None) -> RunPlan:
    """Pick the preset (by device when none is given), merge the flags and check them all, so a bad
    flag fails before any dataset is prepared or run folder created. With `world` data-parallel
    processes, the micro-steps of gradient accumulation are shared out among them."""
    device = resolve_device(overrides.get("device") or "auto")
    if preset is None:
        preset = "bigram" if overrides.get("model") == "bigram" else DEFAULT_PRESET_FOR_DEVICE[device.type]
    model_config, train_config = build_configs(preset, overrides)
    model_config.validate()
    train_config.validate()
    check_world(train_config, world, explicit=overrides.get("grad_accum") is not None)
    resolve_dtype(train_config.dtype, device)
    init = None
    if train_config.init_from:
        init = _load_init(train_config.init_from, overrides, progress)
        model_config = init.config
    bundled = None
    if not (paths.dataset_dir(train_config.dataset) / "meta.json").is_file():
        bundled = bundled_dataset(train_config.dataset)
    return RunPlan(preset, model_config, train_config, *(bundled or (None, "char")), run=run, init=init)


def check_world(cfg: TrainConfig, world: int, explicit: bool) -> None:
    """Each of `world` processes does grad_accum / world micro-steps. A preset's accumulation is
    rounded up to a multiple of the process count; one the user typed must divide evenly."""
    if world <= 1 or cfg.grad_accum % world == 0:
        return
    if explicit:
        raise NanoGPTError(
            f"--grad-accum {cfg.grad_accum} must be divisible by the number of processes ({world}): "
            "each process does its share of the micro-steps"
        )
    cfg.grad_accum = -(-cfg.grad_accum // world) * world


def _load_init(spec: str, overrides: dict[str, Any], progress=None) -> InitWeights:
    """Load --init-from weights; the model's shape is theirs, but dropout may be set and the block size
    shrunk (the position table is cropped, as nanoGPT does)."""
    from nanogpt_cli.pretrained import load_init

    config, weights, tokenizer, description = load_init(spec, progress)
    for key in ("model", "n_layer", "n_head", "n_embd", "bias"):
        if overrides.get(key) is not None and overrides[key] != getattr(config, key):
            raise NanoGPTError(
                f"--{key.replace('_', '-')} cannot change the shape of a model started from {description} "
                f"(it has {getattr(config, key)}); leave it out"
            )
    block_size = overrides.get("block_size")
    if block_size is not None:
        if block_size > config.block_size:
            raise NanoGPTError(f"--block-size {block_size} is larger than {description}'s ({config.block_size})")
        weights = {**weights, "transformer.wpe.weight": weights["transformer.wpe.weight"][:block_size].clone()}
        config.block_size = block_size
    config.dropout = overrides.get("dropout") or 0.0
    config.validate()
    return InitWeights(config, weights, tokenizer, description)


def plan_resume(run: str | None, preset: str | None, overrides: dict[str, Any], world: int = 1) -> RunPlan:
    """Continue `run` (default: the latest) from its ckpt.pt with its own settings; flags may extend
    the schedule but not change the model or the data."""
    from nanogpt_cli.catalog import resolve_run

    if preset is not None:
        raise NanoGPTError("--preset cannot be combined with --resume: a resumed run keeps its own settings")
    run_dir = resolve_run(run, need="ckpt.pt")
    path = run_dir / "ckpt.pt"
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt or "rng" not in ckpt.get("train_state", {}):
        raise NanoGPTError(f"{path} holds weights only, not a full training state; it cannot be resumed")
    model_config = model_config_from_dict(ckpt["model_config"])
    train_values = asdict(train_config_from_dict(ckpt["train_config"]))
    for key, value in overrides.items():
        if value is None:
            continue
        current = getattr(model_config, key, train_values.get(key))
        if key in RESUMABLE_CHANGES:
            train_values[key] = value
        elif value != current and key != "vocab_size":
            raise NanoGPTError(
                f"--{key.replace('_', '-')} {value} would change run {run_dir.name!r} (it has {current}); "
                "a resumed run keeps its model and data. Start a new run to change it"
            )
    train_config = train_config_from_dict(train_values)
    train_config.validate()
    check_world(train_config, world, explicit=True)
    resolve_dtype(train_config.dtype, resolve_device(train_config.device))
    done = ckpt["train_state"]["iteration"]
    if done >= train_config.max_iters:
        raise NanoGPTError(
            f"run {run_dir.name!r} already finished {done} of {train_config.max_iters} iterations; "
            f"pass a larger --max-iters to train it further"
        )
    preset = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("preset")
    return RunPlan(preset, model_config, train_config, run=run_dir.name, resume_from=path)


def same_tokenizer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two tokenizer specs give the same ids ('gpt2' and 'r50k_base' do)."""
    if a.get("kind") == b.get("kind") == "tiktoken":
        return a.get("encoding") == b.get("encoding")
    return a == b


def new_run_name(dataset: str) -> str:
    base = f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while paths.run_dir(name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


# ------------------------------------------------------------------------------- run-level helpers


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


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on the run folder; a second `train` of the same run is refused. The
    operating system drops the lock when the process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run without one
        yield
        return
    path = run_dir / ".lock"
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise NanoGPTError(
                f"run {run_dir.name!r} is being trained by another process (pid {owner}); "
                "wait for it to finish or choose another --run name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _trim_metrics(path: Path, iteration: int) -> None:
    """Drop metrics written after the checkpoint a run resumes from (they will be written again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["iter"] <= iteration:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# --------------------------------------------------------------------------------------- training


class Trainer:
    """One training run: its model, optimizer, data samplers, run folder and bookkeeping."""

    def __init__(self, model_config: ModelConfig, cfg: TrainConfig, run_dir: Path, preset: str | None,
                 emit: EventHandler, resume: dict[str, Any] | None, init: InitWeights | None = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.group = distributed.current()
        self.emit = emit if self.group.is_main else (lambda kind, info: None)  # only rank 0 reports
        self.device = resolve_device(cfg.device)
        if self.group.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        check_world(cfg, self.group.world, explicit=True)
        self.micro_steps = cfg.grad_accum // self.group.world
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.dataset = load_dataset(cfg.dataset)
        if resume is not None and resume["tokenizer"] != self.dataset.meta["tokenizer"]:
            raise NanoGPTError(
                f"dataset {self.dataset.name!r} has been prepared again with a different tokenizer since run "
                f"{run_dir.name!r} started; prepare it as before to resume"
            )
        if init is not None and not same_tokenizer(init.tokenizer, self.dataset.meta["tokenizer"]):
            raise NanoGPTError(
                f"{init.description} was trained with the {spec_name(init.tokenizer)} tokenizer but dataset "
                f"{self.dataset.name!r} uses {spec_name(self.dataset.meta['tokenizer'])}; prepare the data with "
                "the same tokenizer (`nanogpt prepare ... --tokenizer gpt2` for GPT-2 weights)"
            )
        if resume is None and init is None:
            model_config.vocab_size = model_vocab_size(self.dataset)
        model_config.validate()
        check_fits(self.dataset, model_config.block_size)
        self.model_config = model_config

        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = build_model(model_config, init.weights if init else None).to(self.device)
        use_compile = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        self.compiled = torch.compile(self.model) if use_compile else None
        self.parallel = self._wrap_ddp()
        if self.group.active:  # different dropout masks on each rank
            torch.manual_seed(cfg.seed + 1000 * self.group.rank)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(self.dtype == torch.float16))
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        block = model_config.block_size
        self.train_batches = BatchSampler(self.dataset.tokens("train"), cfg.batch_size, block, self.device, cfg.seed,
                                          self.group.rank, self.group.world)
        self.eval_batches = {
            split: BatchSampler(self.dataset.tokens(split), cfg.batch_size, block, self.device, cfg.seed)
            for split in ("train", "val")
        }
        n_params = count_parameters(self.model)
        self.flops_per_step = flops_per_token(model_config, n_params) * cfg.batch_size * model_config.block_size * cfg.grad_accum
        self.peak_flops = cfg.peak_flops or peak_flops(self.device, self.dtype)
        self.step = 0
        self.best_val_loss = math.inf
        # Training loss summed on the device since the last log line, and over how many steps.
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        self.last_eval: dict[str, Any] = {}
        if resume is not None:
            self._restore(resume)
        self.info = {
            "run": run_dir.name,
            "run_dir": str(run_dir),
            "dataset": self.dataset.name,
            "preset": preset,
            "parameters": n_params,
            "compile": self.compiled is not None,
            "peak_flops": self.peak_flops,
            "device": describe(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "model_config": asdict(model_config),
            "train_config": asdict(cfg),
            "tokenizer": self.dataset.meta["tokenizer"],
            "nanogpt_version": __version__,
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resumed_from": self.step if resume is not None else None,
            "init_from": init.description if init else (resume or {}).get("init_from"),
        }

    def autocast(self):
        return autocast(self.device, self.dtype)

    def _wrap_ddp(self):
        """The model wrapped in DistributedDataParallel when several processes train together."""
        if not self.group.active:
            return None
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.compiled or self.model, device_ids=ids)

    def forward(self, x: torch.Tensor, y: torch.Tensor, parallel: bool = False):
        """The model's forward pass (through DDP for training steps when distributed), compiled when
        asked; a compile failure (it shows on the first call) falls back to eager mode, one warning."""
        try:
            if parallel and self.parallel is not None:
                return self.parallel(x, y)
            return (self.compiled or self.model)(x, y)
        except Exception as exc:
            if self.compiled is None:
                raise
            self.emit("warning", {"message": f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                             "continuing without it (--no-compile skips it)"})
            self.compiled = None
            self.parallel = self._wrap_ddp()
            return self.forward(x, y, parallel)

    # -- checkpoints

    def _restore(self, ckpt: dict[str, Any]) -> None:
        state = ckpt["train_state"]
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = state["iteration"]
        self.best_val_loss = state["best_val_loss"]
        self.loss_sum.fill_(state["loss_sum"])
        self.loss_count = state["loss_count"]
        rng = state["rng"]
        random.setstate((3, tuple(rng["python"]), None))
        by_rank = rng.get("torch_by_rank") or []
        torch.set_rng_state(by_rank[self.group.rank] if len(by_rank) == self.group.world else rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.train_batches.rewind(rng["sampler"])

    def _payload(self, full: bool) -> dict[str, Any]:
        payload = {
            "format_version": FORMAT_VERSION,
            "nanogpt_version": __version__,
            "model_config": asdict(self.model_config),
            "train_config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "tokenizer": self.dataset.meta["tokenizer"],
            "dataset": self.dataset.name,
            "train_state": {"iteration": self.step, "best_val_loss": self.best_val_loss},
        }
        if self.info["init_from"]:
            payload["init_from"] = self.info["init_from"]
        if full:  # everything needed to continue exactly
            payload["optimizer"] = self.optimizer.state_dict()
            payload["scaler"] = self.scaler.state_dict() if self.scaler.is_enabled() else {}
            payload["train_state"].update(
                loss_sum=self.loss_sum.item(),
                loss_count=self.loss_count,
                rng={
                    "python": list(random.getstate()[1]),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                    "sampler": self.train_batches.position(),
                    "torch_by_rank": distributed.gather(torch.get_rng_state()) if self.group.active else [],
                },
            )
        return payload

    def save(self, best: bool = False) -> None:
        """Write best.pt (weights) when asked, then ckpt.pt (full state). best.pt goes first: if the
        process dies in between, resuming from the older ckpt.pt redoes this eval and rewrites both.
        Every rank calls this (their RNG states are gathered); only rank 0 writes."""
        payload = self._payload(full=True)
        if not self.group.is_main:
            return
        if best:
            save_checkpoint(self.run_dir / "best.pt", self._payload(full=False))
        save_checkpoint(self.run_dir / "ckpt.pt", payload)
        if self.cfg.keep > 1:
            self._keep_history()

    def _keep_history(self) -> None:
        """Keep the last `keep` periodic checkpoints as ckpt-<iteration>.pt (hard links: no extra disk)."""
        snapshot = self.run_dir / f"ckpt-{self.step:08d}.pt"
        snapshot.unlink(missing_ok=True)
        try:
            os.link(self.run_dir / "ckpt.pt", snapshot)
        except OSError:
            import shutil

            shutil.copyfile(self.run_dir / "ckpt.pt", snapshot)
        for old in sorted(self.run_dir.glob("ckpt-*.pt"))[: -self.cfg.keep]:
            old.unlink(missing_ok=True)

    # -- the loop

    def _check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value) and not self.cfg.allow_nan:
            kept = (f"its last good checkpoint is kept in {self.run_dir}" if (self.run_dir / "ckpt.pt").exists()
                    else "no checkpoint had been written yet")
            raise NanoGPTError(
                f"the {what} became {value} at iteration {self.step}; the run stopped and {kept}. "
                "Lower --lr, use --dtype float32, or pass --allow-nan to go on"
            )

    def evaluate(self, log) -> None:
        cfg = self.cfg
        train_loss = estimate_loss(self.model, self.eval_batches["train"], cfg.eval_iters, self.autocast, cfg.seed + 1,
                                   self.forward)
        val_loss = estimate_loss(self.model, self.eval_batches["val"], cfg.eval_iters, self.autocast, cfg.seed + 2,
                                 self.forward)
        self._check_finite(val_loss, "validation loss")
        improved = val_loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val_loss)
        row = {"kind": "eval", "iter": self.step, "train_loss": train_loss, "val_loss": val_loss,
               "lr": lr_at(self.step, cfg), "elapsed": round(time.perf_counter() - self.started, 3)}
        log(row)
        if self.step > 0:
            self.save(best=improved)
        self.last_eval = row
        self.emit("eval", {**row, "best_val_loss": self.best_val_loss, "improved": improved})

    def throughput(self, steps: int, seconds: float) -> dict[str, float]:
        """Tokens per second over `steps` optimizer steps, and model FLOPs utilisation when the
        device's peak is known (every process has its own device)."""
        seconds = max(seconds, 1e-9)
        tokens = self.cfg.batch_size * self.model_config.block_size * self.cfg.grad_accum * steps
        result = {"tokens_per_second": round(tokens / seconds, 1)}
        if self.peak_flops:
            result["mfu"] = round(self.flops_per_step * steps / seconds / (self.peak_flops * self.group.world), 4)
        return result

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step over grad_accum micro-batches; returns the next batch and the mean loss."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in range(self.micro_steps):
            # Under DDP, gradients are averaged across processes only after the last micro-step.
            last = micro == self.micro_steps - 1
            sync = contextlib.nullcontext() if last or self.parallel is None else self.parallel.no_sync()
            with sync:
                with self.autocast():
                    _, loss = self.forward(x, y, parallel=True)
                    loss = loss / self.micro_steps
                x, y = self.train_batches.next()  # fetch the next batch while the GPU works
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return x, y, total

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        metrics_path = self.run_dir / "metrics.jsonl"
        resumed = self.info["resumed_from"] is not None
        main = self.group.is_main
        if main:
            if resumed:
                _trim_metrics(metrics_path, self.step)
            else:
                metrics_path.unlink(missing_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.info, indent=2) + "\n", encoding="utf-8")
        self.emit("start", self.info)

        timer, timed_steps = time.perf_counter(), 0
        total_steps, total_seconds = 0, 0.0  # training time only, for the summary's throughput
        self.started = time.perf_counter()
        x, y = self.train_batches.next()
        self.model.train()
        with open(metrics_path if main else os.devnull, "a", encoding="utf-8") as metrics, _StopRequests() as stop:

            def log(row: dict[str, Any]) -> None:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()

            skip_eval = resumed  # a checkpoint at an eval step was written after that eval
            while True:
                if (self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters) and not skip_eval:
                    self.evaluate(log)
                    timer, timed_steps = time.perf_counter(), 0  # tokens/s counts training time only
                skip_eval = False
                if self.step >= cfg.max_iters:
                    break
                if distributed.any_rank(stop.requested, self.device):
                    self.save()
                    raise TrainingInterrupted(self.run_dir.name, self.step, self.run_dir / "ckpt.pt")

                x, y, loss = self.train_step(x, y)
                self.loss_sum += loss
                self.loss_count += 1
                timed_steps += 1
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_iters:
                    mean = distributed.mean(self.loss_sum).item() / self.loss_count  # one sync per log line
                    self._check_finite(mean, "training loss")
                    seconds = time.perf_counter() - timer
                    total_steps, total_seconds = total_steps + timed_steps, total_seconds + seconds
                    row = {"kind": "train", "iter": self.step, "loss": mean, "lr": lr_at(self.step - 1, cfg),
                           **self.throughput(timed_steps, seconds)}
                    log(row)
                    self.emit("step", {**row, "max_iters": cfg.max_iters, "val_loss": self.last_eval.get("val_loss")})
                    self.loss_sum.zero_()
                    self.loss_count = 0
                    timer, timed_steps = time.perf_counter(), 0

        summary = {
            "run": self.run_dir.name,
            "run_dir": str(self.run_dir),
            "iterations": self.step,
            "best_val_loss": self.best_val_loss,
            "final_train_loss": self.last_eval.get("train_loss"),
            "final_val_loss": self.last_eval.get("val_loss"),
            "elapsed": time.perf_counter() - self.started,
            "parameters": self.info["parameters"],
            "checkpoint": str(self.run_dir / "best.pt"),
            **self.throughput(total_steps, total_seconds),
        }
        self.emit("done", summary)
        return summary


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    run: str | None = None,
    overwrite: bool = False,
    preset: str | None = None,
    on_event: EventHandler | None = None,
    resume_from: Path | None = None,
    init: InitWeights | None = None,
) -> dict[str, Any]:
    """Train a new run (or continue one from `resume_from`); return a summary of it."""
    train_config.validate()
    resume = load_checkpoint(resume_from) if resume_from is not None else None
    main = distributed.current().is_main
    run_dir = paths.run_dir(distributed.broadcast(run or new_run_name(train_config.dataset)))

    def claim_run_dir() -> None:
        if resume is None and any((run_dir / name).exists() for name in ("config.json", "ckpt.pt", "best.pt")):
            if not overwrite:
                raise NanoGPTError(
                    f"run {run_dir.name!r} already exists; continue it with --resume, choose another --run "
                    "name, or pass --overwrite to replace it"
                )
            for old in [*run_dir.glob("*.pt"), run_dir / "metrics.jsonl", run_dir / "config.json"]:
                old.unlink(missing_ok=True)

    created = main and not run_dir.exists()
    try:
        with run_lock(paths.ensure_dir(run_dir)) if main else contextlib.nullcontext():
            distributed.on_main(claim_run_dir)
            trainer = Trainer(model_config, train_config, run_dir, preset, on_event or (lambda kind, info: None), resume, init)
            return trainer.run()
    except BaseException:
        if created:
            remove_if_unused(run_dir)
        raise


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder that a failed start left holding nothing but its lock file."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {".lock"}:
            shutil.rmtree(run_dir)
    except OSError:
        pass
