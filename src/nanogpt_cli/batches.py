"""Batches for training and for loss estimates: random windows of a token stream (or, for a task
dataset, whole problems with only their answers as targets), each sampler owning its random generator
so a run's data order depends only on its seed and can be saved and restored exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.runcontrol import EvaluationInterrupted


class BatchSampler:
    """Random windows of block_size + 1 tokens from one token stream, as (inputs, targets).

    Owns its random generator so a run's data order depends only on the seed (and can be saved)."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, device: Any, seed: int,
                 rank: int = 0, world: int = 1, task: Any = None, vocab_size: int | None = None):
        # A task dataset (tasks.py): each window is one whole problem, and only its answer is a target.
        self.task = task
        self.tokens = tokens
        self.vocab_size = vocab_size  # given for token files too big to scan on open: each batch is checked
        self.batch_size = batch_size
        # Data-parallel ranks share the seed: each draws the same world-sized batch and keeps its own
        # rows, so together they see exactly what one process with world x the accumulation would.
        self.rank, self.world = rank, world
        self.block_size = block_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(block_size + 1)
        self._pin = getattr(device, "type", str(device)) == "cuda"

    def position(self):
        """The generator state that reproduces the most recent batch (see `rewind`)."""
        return self._before_last

    def rewind(self, state) -> None:
        """Go back to a saved position: the next batch is the one drawn right after it was saved."""
        self.generator.set_state(state)

    def next(self):
        self._before_last = self.generator.get_state()
        if self.task is None:
            high = len(self.tokens) - self.block_size
            starts = torch.randint(high, (self.batch_size * self.world,), generator=self.generator).numpy()
        else:
            high = len(self.tokens) // self.task.length
            starts = (
                torch.randint(high, (self.batch_size * self.world,), generator=self.generator).numpy()
                * self.task.length
            )
        starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        if self.vocab_size is not None and int(windows.max()) >= self.vocab_size:
            raise NanoGPTError(f"the token file holds id {int(windows.max())}, beyond the vocabulary of "
                               f"{self.vocab_size}: it is corrupt; prepare the dataset again")
        x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
        if self.task is not None:
            self.task.mask_problem(y)
        if self._pin:
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, sampler: BatchSampler, iters: int, ctx_factory, seed: int,
                  forward=None, stop=None) -> float:
    """Mean loss over `iters` batches. The sampler is reseeded so every eval sees the same batches,
    which makes successive evals (and the best-checkpoint choice) comparable. `forward` (default: the
    model itself) is what computes the loss, e.g. a compiled version of the model. `stop()`, asked
    before each batch, ends it early with EvaluationInterrupted (a Ctrl-C or SIGTERM meanwhile)."""
    was_training = model.training
    model.eval()
    sampler.generator.manual_seed(seed)
    total = 0.0
    for _ in range(iters):
        if stop is not None and stop():
            model.train(was_training)
            raise EvaluationInterrupted
        x, y = sampler.next()
        with ctx_factory():
            _, loss = (forward or model)(x, y)
        total += loss.item()
    model.train(was_training)
    return total / iters
