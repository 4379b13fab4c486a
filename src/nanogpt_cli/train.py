"""The training loop.

`Trainer` builds a run's model, optimizer and data samplers (restoring them from a checkpoint when
resuming) and `Trainer.run` trains: the LR schedule, gradient accumulation, mixed precision where the
device has it, gradient clipping, train and val losses when the EvalSchedule says (runcontrol.py),
best.pt whenever val loss improves and ckpt.pt at each eval, and a metrics.jsonl line for every log
and eval. A resumed run continues exactly where its checkpoint left it (weights, optimizer, scaler,
counters and every random generator); on the CPU it is bit-for-bit the run that never stopped.
`train(plan)` claims the run folder (runs.py) and runs a Trainer. It reports progress through
`on_event(kind, info)` (a RunInfo at the start, a metrics row at each log and eval, a RunSummary at
the end) and never prints.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from nanogpt_cli import __version__, distributed, paths
from nanogpt_cli.batches import BatchSampler, estimate_loss
from nanogpt_cli.checkpoint import keep_history, restore_training, save_checkpoint, training_checkpoint
from nanogpt_cli.dataset import Dataset
from nanogpt_cli.device import (
    autocast,
    compile_with_fallback,
    default_compile,
    describe,
    peak_flops,
    resolve_device,
    resolve_dtype,
)
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.loggers import open_loggers
from nanogpt_cli.model import build_model, count_parameters, flops_per_token
from nanogpt_cli.optim import describe_orthogonalize, lr_at, make_optimizer
from nanogpt_cli.plan import RunPlan, attach_dataset
from nanogpt_cli.runcontrol import EvalSchedule, EvaluationInterrupted, StopRequests, TrainingInterrupted
from nanogpt_cli.runinfo import RunInfo, RunSummary, Throughput
from nanogpt_cli.runs import MetricsLog, new_run_name, open_run, write_config

EventHandler = Callable[[str, Any], None]


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
        self.train_batches, self.eval_batches = _samplers(dataset, cfg, model_config.block_size, self.device,
                                                          self.group)
        use_compile = cfg.compile if cfg.compile is not None else default_compile(self.device)
        self.compiled = _compiled(self) if use_compile else None
        self.parallel = _ddp(self)
        if self.group.active:  # different dropout masks on each rank
            torch.manual_seed(cfg.seed + 1000 * self.group.rank)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(self.dtype == torch.float16))
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.step = 0
        self.elapsed_before = 0.0  # training time of earlier sessions of this run (resumed runs)
        self.started: float | None = None  # when this session's training began
        self.metrics: MetricsLog | None = None  # open while `run` runs
        self.budget = cfg.time_budget  # seconds, for a run measured in time instead of iterations
        self.evals = EvalSchedule(cfg.eval_interval, timed=self.budget is not None)
        self.best_val_loss = math.inf
        # Training loss summed on the device since the last log line, and over how many steps.
        self.loss_sum, self.loss_count = torch.zeros((), device=self.device), 0
        self.last_eval: dict[str, Any] = {}
        self.eval_pending = False  # a checkpoint written while evaluating: the evaluation is still due
        self.stop: StopRequests | None = None  # open while `run` runs
        if plan.resume is not None:
            restore_training(self, plan.resume)
        self.info = _run_info(self, plan)
        self.speed = Throughput(cfg.batch_size * model_config.block_size * cfg.grad_accum,
                                flops_per_token(model_config, self.info.parameters), self.info.peak_flops,
                                self.group.world)

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

    def autocast(self):  # mixed precision where the device and dtype have it
        return autocast(self.device, self.dtype)

    @property
    def runnable(self) -> torch.nn.Module:
        """The compiled model when there is one, else the model (not `compiled or model`: a compiled
        module's truth value asks for its len(), which torch.compile's wrapper refuses)."""
        return self.model if self.compiled is None else self.compiled

    def forward(self, x: torch.Tensor, y: torch.Tensor, parallel: bool = False):
        """The forward pass: through DDP for training steps when distributed, compiled when asked."""
        if parallel and self.parallel is not None:
            return self.parallel(x, y)
        return self.runnable(x, y)

    def save(self, best: bool = False) -> None:
        """Write best.pt (weights) when asked, then ckpt.pt (full state). best.pt goes first: if the
        process dies in between, resuming from the older ckpt.pt redoes this eval and rewrites both.
        Every rank calls this (their RNG states are gathered); only rank 0 writes."""
        payload = training_checkpoint(self, full=True)
        if not self.group.is_main:
            return
        if best:
            save_checkpoint(self.run_dir / "best.pt", training_checkpoint(self, full=False))
        save_checkpoint(self.run_dir / "ckpt.pt", payload)
        if self.metrics is not None:  # `info` reads the last saved iteration from here
            self.metrics.write({"kind": "checkpoint", "iter": self.step, "elapsed": round(self.elapsed(), 3)})
        if self.cfg.keep > 1:
            keep_history(self.run_dir, self.step, self.cfg.keep)

    # -- the loop

    def evaluate(self) -> None:
        cfg = self.cfg
        self.evals.done(self.step, self.fraction())
        # A stop request ends the evaluation early (not under DDP, whose processes must evaluate alike).
        stop = None if self.group.active else (lambda: self.stop is not None and self.stop.requested)
        losses = [estimate_loss(self.model, self.eval_batches[split], cfg.eval_iters, self.autocast, cfg.seed + n,
                                self.forward, stop) for n, split in ((1, "train"), (2, "val"))]
        train_loss, val_loss = losses
        _check_finite(self, val_loss, "validation loss")
        # best.pt: the lowest val loss so far, and at the first evaluation after iteration 0 in any case
        # (iteration 0 saves nothing), so a finished run always has one to sample from.
        first = self.step > 0 and not (self.run_dir / "best.pt").exists()
        improved = val_loss < self.best_val_loss or first
        self.best_val_loss = val_loss if first else min(self.best_val_loss, val_loss)  # what best.pt holds
        row = {"kind": "eval", "iter": self.step, "train_loss": train_loss, "val_loss": val_loss,
               "lr": lr_at(self.step, cfg, self.fraction()), "elapsed": round(self.elapsed(), 3)}
        self.metrics.write(row)
        self.eval_pending = False
        if self.step > 0:
            self.save(best=improved)
        self.last_eval = row
        self.emit("eval", {**row, "best_val_loss": self.best_val_loss, "improved": improved})

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over grad_accum micro-batches; returns the next batch. The mean loss is
        added to the running sum on the device (read once per log line)."""
        self.optimizer.set_lr(lr_at(self.step, self.cfg, self.fraction()))
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
        if self.cfg.grad_clip > 0:
            self.optimizer.unscale_(self.scaler)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step(self.scaler)
        self.optimizer.zero_grad()
        self.step += 1
        self.loss_sum += total
        self.loss_count += 1
        return x, y

    def _stopped(self) -> None:
        self.save()
        raise TrainingInterrupted(self.run_dir.name, self.step, self.run_dir / "ckpt.pt", self.group.is_main)

    def log_step(self) -> None:
        """A train row: the mean loss since the last one, the rate, and the progress bar's event."""
        mean = distributed.mean(self.loss_sum).item() / self.loss_count  # one sync per log line
        _check_finite(self, mean, "training loss")
        lap, average = self.speed.lap()
        row = {"kind": "train", "iter": self.step, "loss": mean, "lr": self.optimizer.param_groups[0]["lr"],
               "elapsed": round(self.elapsed(), 3), **lap}
        self.metrics.write(row)
        # The progress bar shows the rate averaged over the session, as the summary does.
        self.emit("step", {**row, **{f"average_{k}": v for k, v in average.items()}, "max_iters": self.cfg.max_iters,
                           "elapsed": self.elapsed(), "time_budget": self.budget,
                           "val_loss": self.last_eval.get("val_loss")})
        self.loss_sum.zero_()
        self.loss_count = 0

    def run(self) -> RunSummary:
        cfg, main, resumed = self.cfg, self.group.is_main, self.info.resumed_from is not None
        if main:
            write_config(self.run_dir, self.info.as_json(), self.model_config, cfg, self.info.preset)
        self.emit("start", self.info)
        self.started = time.perf_counter()
        self.speed.restart()
        self.evals.start(self.step, self.fraction(), resumed)
        x, y = self.train_batches.next()
        self.model.train()
        loggers = open_loggers(cfg.loggers, self.run_dir, self.info, cfg.wandb_project) if main else []
        with MetricsLog(self.run_dir, self.step if resumed else None, enabled=main, loggers=loggers) as self.metrics, \
                StopRequests() as self.stop:
            skip_eval = resumed and not self.eval_pending  # a checkpoint at an eval step follows that eval
            while True:
                done = self.finished()
                due = self.evals.due(self.step, self.fraction())
                if (distributed.any_rank(due, self.device) or done) and not skip_eval:
                    try:
                        self.evaluate()
                    except EvaluationInterrupted:
                        self.eval_pending = True
                        self._stopped()
                    self.speed.restart()  # tokens/s counts training time only
                skip_eval = False
                if done:
                    break
                if distributed.any_rank(self.stop.requested, self.device):
                    self._stopped()
                x, y = self.train_step(x, y)
                self.speed.count()
                if self.step % cfg.log_interval == 0 or (self.budget is None and self.step == cfg.max_iters):
                    self.log_step()
        self.metrics, self.stop, summary = None, None, _summary(self)
        self.emit("done", summary)
        return summary


def _compiled(trainer: Trainer):
    """The compiled model, or None where torch.compile fails (said in one warning). Its warm-up step
    draws an eval batch and forks the RNG, so the run's randomness is unchanged."""

    def warm_up(compiled) -> None:
        with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
            x, y = trainer.eval_batches["train"].next()
            with trainer.autocast():
                _, loss = compiled(x, y)
            loss.backward()

    return compile_with_fallback(trainer.model, warm_up, lambda message: trainer.emit("warning", {"message": message}))


def _ddp(trainer: Trainer):
    """The model wrapped in DistributedDataParallel when several processes train together."""
    if not trainer.group.active:
        return None
    ids = [trainer.device.index] if trainer.device.type == "cuda" else None
    return DistributedDataParallel(trainer.runnable, device_ids=ids)


def _samplers(dataset: Dataset, cfg, block: int, device: torch.device, group) -> tuple[BatchSampler, dict]:
    """The training batches (this process's share) and the eval batches of each split."""
    train = BatchSampler(dataset.tokens("train"), cfg.batch_size, block, device, cfg.seed, group.rank, group.world,
                         dataset.task, dataset.unscanned_vocab("train"))
    evals = {split: BatchSampler(dataset.tokens(split), cfg.batch_size, block, device, cfg.seed, task=dataset.task,
                                 vocab_size=dataset.unscanned_vocab(split))
             for split in ("train", "val")}
    return train, evals


def _check_finite(trainer: Trainer, value: float, what: str) -> None:
    if not math.isfinite(value) and not trainer.cfg.allow_nan:
        kept = (f"its last good checkpoint is kept in {trainer.run_dir}" if (trainer.run_dir / "ckpt.pt").exists()
                else "no checkpoint had been written yet")
        raise NanoGPTError(
            f"the {what} became {value} at iteration {trainer.step}; the run stopped and {kept}. "
            "Lower --lr, use --dtype float32, or pass --allow-nan to go on"
        )


def _run_info(trainer: Trainer, plan: RunPlan) -> RunInfo:
    """config.json's record: the settings and what was measured (Muon orthogonalises in bfloat16 only
    where that is native)."""
    run_dir = trainer.run_dir
    return RunInfo(
        run=run_dir.name, run_dir=str(run_dir), dataset=trainer.dataset.name, preset=plan.preset,
        parameters=count_parameters(trainer.model), compile=trainer.compiled is not None,
        peak_flops=trainer.cfg.peak_flops or peak_flops(trainer.device, trainer.dtype),
        device=describe(trainer.device), dtype=str(trainer.dtype).removeprefix("torch."),
        muon_orthogonalize=describe_orthogonalize(trainer.device) if "muon" in trainer.optimizer.parts else None,
        model_config=asdict(trainer.model_config), train_config=asdict(trainer.cfg),
        tokenizer=trainer.dataset.meta["tokenizer"], nanogpt_version=__version__, torch_version=torch.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), resumed_from=trainer.step if plan.resume is not None else None,
        time_budget=trainer.budget,
        init_from=plan.init.description if plan.init else (plan.resume or {}).get("init_from"),
    )


def _summary(trainer: Trainer) -> RunSummary:
    info, last_eval = trainer.info, trainer.last_eval
    speed = trainer.speed.session()
    return RunSummary(
        run=info.run, run_dir=info.run_dir, dataset=info.dataset, seed=trainer.cfg.seed, parameters=info.parameters,
        iterations=trainer.step, resumed_from=info.resumed_from,
        session_iterations=trainer.step - (info.resumed_from or 0), best_val_loss=trainer.best_val_loss,
        final_train_loss=last_eval.get("train_loss"), final_val_loss=last_eval.get("val_loss"),
        elapsed=time.perf_counter() - trainer.started, total_elapsed=trainer.elapsed(),
        checkpoint=str(trainer.run_dir / "best.pt"), tokens_per_second=speed["tokens_per_second"],
        mfu=speed.get("mfu"),
    )


def train(plan: RunPlan, overwrite: bool = False, on_event: EventHandler | None = None) -> RunSummary:
    """Train the planned run (a new one, or one continued from its checkpoint); return a summary of it."""
    emit = on_event or (lambda kind, info: None)
    run_dir = paths.run_dir(distributed.broadcast(plan.run or new_run_name(plan.train_config.dataset)))
    with contextlib.ExitStack() as stack:
        distributed.on_main(lambda: stack.enter_context(open_run(run_dir, plan.resume is not None, overwrite,
                                                                 plan.train_config.dataset)))
        trainer = Trainer(attach_dataset(plan, run_dir.name), run_dir, emit)
        return trainer.run()
