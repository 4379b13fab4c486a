"""What decides, during a training run, when it evaluates and when it stops.

`EvalSchedule` says at which steps a run evaluates (and so checkpoints). `StopRequests` turns the first
SIGINT/SIGTERM into a flag the loop checks between steps and between evaluation batches (a second one
aborts at once), and the loop raises `TrainingInterrupted` once it has saved.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any


class TrainingInterrupted(Exception):
    """Raised after an interrupted run has saved its checkpoint."""

    def __init__(self, run: str, iteration: int, checkpoint: Path, main: bool = True):
        super().__init__(f"interrupted at iteration {iteration}")
        self.main = main  # whether this is the process that reports
        self.run = run
        self.iteration = iteration
        self.checkpoint = checkpoint


class EvaluationInterrupted(Exception):
    """Raised inside an evaluation when a stop was requested: the run saves and stops without it, and
    its checkpoint says the evaluation is still due, so a resumed run does it first."""


class StopRequests:
    """Turns the first SIGINT/SIGTERM into a flag checked between steps; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class EvalSchedule:
    """When a run evaluates (and checkpoints): every `interval` steps, or, for a run with a time budget,
    at each tenth of the budget but never more often than every `interval` steps (a short budget would
    otherwise spend most of its time evaluating). Under DDP every process must evaluate at the same
    step though their clocks differ, so the caller combines `due` across processes."""

    PER_BUDGET = 10

    def __init__(self, interval: int, timed: bool):
        self.interval, self.timed = interval, timed
        self.next_tenth = 0  # the next tenth of the budget to evaluate at (timed runs)
        self.last_step: int | None = None

    def start(self, step: int, fraction: float | None, resumed: bool) -> None:
        """A session starts; a resumed run's checkpoint came with an evaluation at `step`."""
        self.next_tenth = int((fraction or 0.0) * self.PER_BUDGET) + (1 if resumed else 0)
        self.last_step = step if resumed else None

    def due(self, step: int, fraction: float | None) -> bool:
        if not self.timed:
            return step % self.interval == 0
        return fraction >= self.next_tenth / self.PER_BUDGET and (
            self.last_step is None or step - self.last_step >= self.interval)

    def done(self, step: int, fraction: float | None) -> None:
        self.last_step = step
        if fraction is not None:
            self.next_tenth = int(fraction * self.PER_BUDGET) + 1
