"""What a training run reports about itself, as typed records.

`RunInfo` is written at the top of a run (config.json, the `start` event that draws the run's header,
the TensorBoard/W&B config); `RunSummary` when it ends (the `done` event, `nanogpt train`'s summary
lines, the ladder's table). The training loop fills them; render code and loggers only read them.
`as_json()` gives the plain dict that config.json holds, with the same keys as the fields.
`Throughput` measures the tokens/s (and MFU) that the log lines and the summary report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    run: str
    run_dir: str
    dataset: str
    preset: str | None
    parameters: int
    compile: bool  # whether torch.compile is in use (it may have fallen back to eager)
    peak_flops: float | None  # the device's peak, for MFU; None where unknown
    device: str  # in words, e.g. "cpu (2 threads)"
    dtype: str
    muon_orthogonalize: str | None  # Muon's Newton-Schulz dtype and why; None without Muon
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    tokenizer: dict[str, Any]
    nanogpt_version: str
    torch_version: str
    created: str
    resumed_from: int | None  # the iteration this session started from; None for a new run
    time_budget: float | None  # seconds, for a run measured in time
    init_from: str | None  # the weights it started from (pretrained model, folder or run)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunSummary:
    run: str
    run_dir: str
    dataset: str
    seed: int
    parameters: int
    iterations: int  # where the run stands, all sessions together
    resumed_from: int | None
    session_iterations: int
    best_val_loss: float
    final_train_loss: float | None
    final_val_loss: float | None
    elapsed: float  # seconds of this session
    total_elapsed: float  # seconds of training over all sessions
    checkpoint: str
    tokens_per_second: float
    mfu: float | None = None  # model FLOPs utilisation, where the device's peak is known

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Throughput:
    """Tokens per second (and model FLOPs utilisation, where the device's peak is known) of the steps
    since the last lap, and averaged over the session, counting training time only."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak: float | None, world: int):
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.peak, self.world = peak, world
        self.timer, self.steps = time.perf_counter(), 0
        self.total_steps, self.total_seconds = 0, 0.0

    def restart(self) -> None:
        """Start a new lap (after an evaluation, which is not training time)."""
        self.timer, self.steps = time.perf_counter(), 0

    def count(self) -> None:
        self.steps += 1

    def rate(self, steps: int, seconds: float) -> dict[str, float]:
        seconds = max(seconds, 1e-9)
        tokens = self.tokens_per_step * steps
        result = {"tokens_per_second": round(tokens / seconds, 1)}
        if self.peak:  # every process has its own device
            result["mfu"] = round(self.flops_per_token * tokens / seconds / (self.peak * self.world), 4)
        return result

    def lap(self) -> tuple[dict[str, float], dict[str, float]]:
        """The rate of this lap and of the session so far; a new lap starts."""
        seconds = time.perf_counter() - self.timer
        self.total_steps, self.total_seconds = self.total_steps + self.steps, self.total_seconds + seconds
        lap = self.rate(self.steps, seconds)
        self.restart()
        return lap, self.session()

    def session(self) -> dict[str, float]:
        return self.rate(self.total_steps, self.total_seconds)
