"""The training loop.

`Trainer` builds a run's model, optimizer and data samplers (restoring them from a checkpoint when
resuming) and `Trainer.run` trains: linear warmup and cosine LR decay, gradient accumulation, mixed
precision where the device has it, gradient clipping, a loss estimate on train and val every
eval_interval steps, best.pt whenever val loss improves and ckpt.pt at each eval, and a metrics.jsonl
line for every log and eval. A resumed run continues exactly where its checkpoint left it: weights,
optimizer moments, grad scaler, iteration, best val loss, the running loss average, and every random
generator (torch, CUDA, data sampling); on the CPU it is bit-for-bit the run that never stopped.

`train(plan)` claims the run folder (runs.py), builds a Trainer from a plan (plan.py) and runs it;
session.py wraps it with the process group and the bundled data.

It reports progress through `on_event(kind, info)` and never prints. The first SIGINT/SIGTERM finishes
the current step, saves ckpt.pt and raises `TrainingInterrupted`; a second one aborts at once (the
checkpoint files are still intact, since every write is atomic).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from nanogpt_cli import __version__, distributed, paths
from nanogpt_cli.batches import BatchSampler, estimate_loss
from nanogpt_cli.checkpoint import FORMAT_VERSION, save_checkpoint
from nanogpt_cli.device import autocast, default_compile, describe, peak_flops, resolve_device, resolve_dtype
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.loggers import open_loggers
from nanogpt_cli.model import build_model, count_parameters, flops_per_token
from nanogpt_cli.optim import describe_orthogonalize, lr_at, make_optimizer
from nanogpt_cli.plan import RunPlan, attach_dataset
from nanogpt_cli.runs import MetricsLog, new_run_name, open_run, write_config

EventHandler = Callable[[str, dict[str, Any]], None]


class TrainingInterrupted(Exception):
    """Raised after an interrupted run has saved its checkpoint."""

    def __init__(self, run: str, iteration: int, checkpoint: Path, main: bool = True):
        super().__init__(f"interrupted at iteration {iteration}")
        self.main = main  # whether this is the process that reports
        self.run = run
        self.iteration = iteration
        self.checkpoint = checkpoint


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


# --------------------------------------------------------------------------------------- training


class Trainer:
    """One training run: its model, optimizer, data samplers, run folder and bookkeeping. Building it
    does no training; `run` does."""

    def __init__(self, plan: RunPlan, run_dir: Path, emit: EventHandler):
        cfg, model_config, dataset = plan.train_config, plan.model_config, plan.dataset
        self.cfg, self.model_config, self.dataset, self.run_dir = cfg, model_config, dataset, run_dir
        self.group = distributed.current()
        self.emit = emit if self.group.is_main else (lambda kind, info: None)  # only rank 0 reports
        self.device = resolve_device(cfg.device)
        if self.group.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        self.micro_steps = cfg.grad_accum // self.group.world
        self.dtype = resolve_dtype(cfg.dtype, self.device)

        torch.manual_seed(cfg.seed)
        self.model = build_model(model_config, plan.init.weights if plan.init else None).to(self.device)
        block = model_config.block_size
        self.train_batches = BatchSampler(dataset.tokens("train"), cfg.batch_size, block, self.device, cfg.seed,
                                          self.group.rank, self.group.world, dataset.task)
        self.eval_batches = {
            split: BatchSampler(dataset.tokens(split), cfg.batch_size, block, self.device, cfg.seed, task=dataset.task)
            for split in ("train", "val")
        }
        use_compile = cfg.compile if cfg.compile is not None else default_compile(self.device)
        self.compiled = self._compile() if use_compile else None
        self.parallel = self._wrap_ddp()
        if self.group.active:  # different dropout masks on each rank
            torch.manual_seed(cfg.seed + 1000 * self.group.rank)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(self.dtype == torch.float16))
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        n_params = count_parameters(self.model)
        self.flops_per_step = flops_per_token(model_config, n_params) * cfg.batch_size * block * cfg.grad_accum
        self.peak_flops = cfg.peak_flops or peak_flops(self.device, self.dtype)
        self.step = 0
        self.elapsed_before = 0.0  # training time of earlier sessions of this run (resumed runs)
        self.started: float | None = None  # when this session's training began
        self.metrics: MetricsLog | None = None  # open while `run` runs
        self.budget = cfg.time_budget  # seconds, for a run measured in time instead of iterations
        self.evals_per_budget = 10  # a timed run evaluates at every tenth of its budget (at most)
        self.last_eval_step: int | None = None
        self.best_val_loss = math.inf
        # Training loss summed on the device since the last log line, and over how many steps.
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        self.last_eval: dict[str, Any] = {}
        if plan.resume is not None:
            self._restore(plan.resume)
        self.preset = plan.preset
        self.info = {
            "run": run_dir.name,
            "run_dir": str(run_dir),
            "dataset": dataset.name,
            "preset": plan.preset,
            "parameters": n_params,
            "compile": self.compiled is not None,
            "peak_flops": self.peak_flops,
            "device": describe(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            # Muon's Newton-Schulz runs in bfloat16 only where the hardware has it natively.
            "muon_orthogonalize": describe_orthogonalize(self.device) if "muon" in self.optimizer.parts else None,
            "model_config": asdict(model_config),
            "train_config": asdict(cfg),
            "tokenizer": dataset.meta["tokenizer"],
            "nanogpt_version": __version__,
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resumed_from": self.step if plan.resume is not None else None,
            "time_budget": self.budget,
            "init_from": plan.init.description if plan.init else (plan.resume or {}).get("init_from"),
        }

    def elapsed(self) -> float:
        """Seconds this run has trained, over all its sessions."""
        return self.elapsed_before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def fraction(self) -> float | None:
        """The share of a timed run's budget used so far (None for a run measured in iterations)."""
        return min(1.0, self.elapsed() / self.budget) if self.budget else None

    def finished(self) -> bool:
        if self.budget is None:
            return self.step >= self.cfg.max_iters
        return distributed.any_rank(self.elapsed() >= self.budget, self.device)  # all processes stop together

    def eval_due(self) -> bool:
        if self.budget is None:
            return self.step % self.cfg.eval_interval == 0
        # At each tenth of the budget, but never more often than every eval_interval steps: a short
        # budget would otherwise spend most of its time evaluating. Every process must evaluate (and so
        # checkpoint) at the same step, though their clocks differ.
        due = self.fraction() >= self.next_eval / self.evals_per_budget and (
            self.last_eval_step is None or self.step - self.last_eval_step >= self.cfg.eval_interval)
        if distributed.any_rank(due, self.device):
            self.next_eval = int(self.fraction() * self.evals_per_budget) + 1
            return True
        return False

    def autocast(self):
        return autocast(self.device, self.dtype)

    def _compile(self):
        """torch.compile the model and run one warm-up step, where compile failures show. A failure
        there falls back to eager mode with one warning; errors after the warm-up are real errors.
        The warm-up draws an eval batch and forks the RNG, so the run's randomness is unchanged."""
        compiled = torch.compile(self.model)
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                x, y = self.eval_batches["train"].next()
                with self.autocast():
                    _, loss = compiled(x, y)
                loss.backward()
            self.model.zero_grad(set_to_none=True)
            return compiled
        except Exception as exc:  # the compiler fails in many ways: missing C++ toolchain, unsupported op...
            self.model.zero_grad(set_to_none=True)
            self.emit("warning", {"message": f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                             "continuing without it (--no-compile skips it)"})
            return None

    def _wrap_ddp(self):
        """The model wrapped in DistributedDataParallel when several processes train together."""
        if not self.group.active:
            return None
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.runnable, device_ids=ids)

    @property
    def runnable(self) -> torch.nn.Module:
        """The compiled model when there is one, else the model. Not `self.compiled or self.model`: a
        compiled module's truth value asks for its len(), which torch.compile's wrapper refuses
        (TypeError) for a model that is not a container."""
        return self.model if self.compiled is None else self.compiled

    def forward(self, x: torch.Tensor, y: torch.Tensor, parallel: bool = False):
        """The model's forward pass: through DDP for training steps when distributed, compiled when asked."""
        if parallel and self.parallel is not None:
            return self.parallel(x, y)
        return self.runnable(x, y)

    # -- checkpoints

    def _restore(self, ckpt: dict[str, Any]) -> None:
        state = ckpt["train_state"]
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = state["iteration"]
        self.elapsed_before = state.get("elapsed", 0.0)  # checkpoints before 0.2 lack it
        self.best_val_loss = state["best_val_loss"]
        self.loss_sum.fill_(state["loss_sum"])
        self.loss_count = state["loss_count"]
        rng = state["rng"]
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
            "task": self.dataset.meta.get("task"),
            "train_state": {"iteration": self.step, "best_val_loss": self.best_val_loss, "elapsed": self.elapsed()},
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
        if self.metrics is not None:  # `info` reads the last saved iteration from here
            self.metrics.write({"kind": "checkpoint", "iter": self.step, "elapsed": round(self.elapsed(), 3)})
        if self.cfg.keep > 1:
            self._keep_history()

    def _keep_history(self) -> None:
        """Keep the last `keep` periodic checkpoints as ckpt-<iteration>.pt (hard links: no extra disk)."""
        snapshot = self.run_dir / f"ckpt-{self.step:08d}.pt"
        snapshot.unlink(missing_ok=True)
        try:
            os.link(self.run_dir / "ckpt.pt", snapshot)
        except OSError:
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
        self.last_eval_step = self.step
        train_loss = estimate_loss(self.model, self.eval_batches["train"], cfg.eval_iters, self.autocast, cfg.seed + 1,
                                   self.forward)
        val_loss = estimate_loss(self.model, self.eval_batches["val"], cfg.eval_iters, self.autocast, cfg.seed + 2,
                                 self.forward)
        self._check_finite(val_loss, "validation loss")
        improved = val_loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val_loss)
        row = {"kind": "eval", "iter": self.step, "train_loss": train_loss, "val_loss": val_loss,
               "lr": lr_at(self.step, cfg, self.fraction()), "elapsed": round(self.elapsed(), 3)}
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
        self.optimizer.set_lr(lr_at(self.step, cfg, self.fraction()))
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
            self.optimizer.unscale_(self.scaler)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step(self.scaler)
        self.optimizer.zero_grad()
        self.step += 1
        return x, y, total

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        resumed = self.info["resumed_from"] is not None
        main = self.group.is_main
        if main:
            write_config(self.run_dir, self.info, self.model_config, cfg, self.preset)
        self.emit("start", self.info)

        timer, timed_steps = time.perf_counter(), 0
        total_steps, total_seconds = 0, 0.0  # training time only, for the summary's throughput
        self.started = time.perf_counter()
        self.next_eval = int((self.fraction() or 0.0) * self.evals_per_budget) + (1 if resumed else 0)
        self.last_eval_step = self.step if resumed else None  # a resumed run's checkpoint came with an eval
        x, y = self.train_batches.next()
        self.model.train()
        loggers = open_loggers(cfg.loggers, self.run_dir, self.info, cfg.wandb_project) if main else []
        with MetricsLog(self.run_dir, self.step if resumed else None, enabled=main, loggers=loggers) as self.metrics, \
                _StopRequests() as stop:
            log = self.metrics.write
            skip_eval = resumed  # a checkpoint at an eval step was written after that eval
            while True:
                done = self.finished()
                if (self.eval_due() or done) and not skip_eval:
                    self.evaluate(log)
                    timer, timed_steps = time.perf_counter(), 0  # tokens/s counts training time only
                skip_eval = False
                if done:
                    break
                if distributed.any_rank(stop.requested, self.device):
                    self.save()
                    raise TrainingInterrupted(self.run_dir.name, self.step, self.run_dir / "ckpt.pt", main)

                x, y, loss = self.train_step(x, y)
                self.loss_sum += loss
                self.loss_count += 1
                timed_steps += 1
                if self.step % cfg.log_interval == 0 or (self.budget is None and self.step == cfg.max_iters):
                    mean = distributed.mean(self.loss_sum).item() / self.loss_count  # one sync per log line
                    self._check_finite(mean, "training loss")
                    seconds = time.perf_counter() - timer
                    total_steps, total_seconds = total_steps + timed_steps, total_seconds + seconds
                    row = {"kind": "train", "iter": self.step, "loss": mean, "lr": self.optimizer.param_groups[0]["lr"],
                           "elapsed": round(self.elapsed(), 3), **self.throughput(timed_steps, seconds)}
                    log(row)
                    # The progress bar shows the rate averaged over the session, as the summary does.
                    average = {f"average_{k}": v for k, v in self.throughput(total_steps, total_seconds).items()}
                    self.emit("step", {**row, **average, "max_iters": cfg.max_iters, "elapsed": self.elapsed(),
                                       "time_budget": self.budget, "val_loss": self.last_eval.get("val_loss")})
                    self.loss_sum.zero_()
                    self.loss_count = 0
                    timer, timed_steps = time.perf_counter(), 0

        self.metrics = None
        summary = {
            "run": self.run_dir.name,
            "run_dir": str(self.run_dir),
            "iterations": self.step,
            "session_iterations": self.step - (self.info["resumed_from"] or 0),
            "resumed_from": self.info["resumed_from"],
            "best_val_loss": self.best_val_loss,
            "final_train_loss": self.last_eval.get("train_loss"),
            "final_val_loss": self.last_eval.get("val_loss"),
            "elapsed": time.perf_counter() - self.started,  # this session
            "total_elapsed": self.elapsed(),
            "parameters": self.info["parameters"],
            "dataset": self.dataset.name,
            "seed": cfg.seed,
            "checkpoint": str(self.run_dir / "best.pt"),
            **self.throughput(total_steps, total_seconds),
        }
        self.emit("done", summary)
        return summary


def train(plan: RunPlan, overwrite: bool = False, on_event: EventHandler | None = None) -> dict[str, Any]:
    """Train the planned run (a new one, or one continued from its checkpoint); return a summary of it."""
    emit = on_event or (lambda kind, info: None)
    run_dir = paths.run_dir(distributed.broadcast(plan.run or new_run_name(plan.train_config.dataset)))
    with contextlib.ExitStack() as stack:
        distributed.on_main(lambda: stack.enter_context(open_run(run_dir, plan.resume is not None, overwrite)))
        trainer = Trainer(attach_dataset(plan, run_dir.name), run_dir, emit)
        return trainer.run()
