"""The lecture's ladder: the steps from a bigram table to a transformer, each trained as a run.

"Let's build GPT" grows the model one idea at a time and watches the validation loss fall: a bigram
table, one self-attention head, several heads, a feed-forward layer, residual connections (with a
stack of blocks), LayerNorm, then dropout and a larger shape. `STAGES` writes each step as the model
options it switches on, over the lecture's own training settings (the `lecture` preset: AdamW at a
constant rate, block 8 and width 32 for the small steps). `run_ladder` trains them in order on one
dataset with one budget each, as ordinary runs named `<prefix>-<n>-<step>`, and reports each result.
This module decides configurations; training is `session.run_training`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nanogpt_cli.device import resolve_device
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.session import TrainOptions, run_training


@dataclass(frozen=True)
class Stage:
    slug: str
    change: str  # what this step adds, in words
    flags: dict[str, Any]  # on top of the previous steps' flags
    lecture_val_loss: float  # what the lecture reports for this step (Tiny Shakespeare, char)


# The small steps share the lecture's early settings (context 8, width 32, batch 32) at a rate of 3e-3
# where the lecture had 1e-3: its layers started from PyTorch's default init, larger than GPT-2's 0.02
# that these start from, and learned faster. At 1e-3 one head ended at 2.62 after 4,000 iterations (the
# lecture: 2.40 after 5,000), worse than the bigram; at 3e-3 each step ends at or below the one before
# within the spread of two seeds (benchmarks/ladder.py).
SMALL = dict(model="gpt", block_size=8, n_embd=32, batch_size=32, lr=3e-3, min_lr=3e-3, warmup_iters=0,
             dropout=0.0, tie=False, pos="learned", n_layer=1, n_head=1, mlp="none", norm="none", residual=False)
STAGES = [
    Stage("bigram", "a table of next-token logits",
          dict(model="bigram", block_size=8, batch_size=32, lr=1e-2, min_lr=1e-2, warmup_iters=0), 2.49),
    Stage("one-head", "+ positions, one attention head (32)", SMALL, 2.40),
    Stage("multi-head", "+ 4 heads of 8 instead of one of 32", dict(n_head=4), 2.28),
    Stage("feed-forward", "+ feed-forward layer (ReLU, 4x)", dict(mlp="relu"), 2.24),
    Stage("residual", "+ 3 blocks, residual connections", dict(n_layer=3, residual=True), 2.08),
    Stage("layernorm", "+ LayerNorm before each part and at the end", dict(norm="layernorm"), 2.06),
    Stage("scaled", "+ larger shape (GPU: and dropout 0.2)", dict(dropout=0.2), 1.48),
]
# The last step's shape: the lecture's on a GPU; on a CPU or Apple GPU one that pays off within a short
# budget, without dropout (a regulariser for long runs: at 35 s on 2 CPU cores it cost 0.2 in val loss).
SCALED = {
    "cuda": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, lr=3e-4, min_lr=3e-4),
    "other": dict(n_layer=4, n_head=4, n_embd=64, block_size=32, batch_size=32, lr=2e-3, min_lr=2e-3, dropout=0.0),
}


# Every step trains the same number of iterations, as in the lecture (which gave each 5,000 on a GPU):
# a fair comparison, whatever the machine's speed. On a CPU, 4,000 take about 2.5 minutes for all
# seven on the reference machine below; --quick trains 1,000.
DEFAULT_ITERS = {"cuda": 5000, "other": 4000}
QUICK_ITERS = 1000
# Seconds per 1,000 iterations of each step (its evaluations included), and per step besides (building
# the model), on the reference machine: 2 idle cores of an AMD EPYC with AVX-512 (docs/performance.md).
REFERENCE_SECONDS = (0.52, 1.08, 1.28, 1.80, 3.71, 6.36, 22.2)
REFERENCE_STEP_SECONDS = 0.5


def expected_seconds(iters: int, stages: list[int]) -> float:
    """How long these steps (1-based) take on the reference machine at `iters` iterations each."""
    return sum(REFERENCE_SECONDS[n - 1] * iters / 1000 + REFERENCE_STEP_SECONDS for n in stages)


def estimate(iters: int | None, stages: list[int], device: str) -> float | None:
    """`expected_seconds` where the reference applies, a CPU run counted in iterations; else None."""
    if iters is None or resolve_device(device).type != "cpu":
        return None
    return expected_seconds(iters, [n for n in stages if 1 <= n <= len(STAGES)])


def default_iters(device: str, quick: bool) -> int:
    return QUICK_ITERS if quick else DEFAULT_ITERS["cuda" if resolve_device(device).type == "cuda" else "other"]


def stage_flags(index: int, device: str = "auto") -> dict[str, Any]:
    """The config flags of step `index` (0-based): every earlier step's changes, then its own."""
    flags: dict[str, Any] = {}
    for stage in STAGES[: index + 1]:
        flags = dict(stage.flags) if stage.slug in ("bigram", "one-head") else {**flags, **stage.flags}
    if STAGES[index].slug == "scaled":
        flags |= SCALED["cuda" if resolve_device(device).type == "cuda" else "other"]
    return flags


def run_ladder(dataset: str, prefix: str, iters: int | None, time: str | None, device: str = "auto",
               overwrite: bool = False, on_event: Callable | None = None, progress=None,
               stages: list[int] | None = None, seed: int | None = None) -> Iterator[dict[str, Any]]:
    """Train the steps in order (or only `stages`, 1-based); yield each one's result as it finishes."""
    if (iters is None) == (time is None):
        raise NanoGPTError("give the ladder one budget per step: --iters N or --time DURATION")
    chosen = stages or list(range(1, len(STAGES) + 1))
    bad = [n for n in chosen if not 1 <= n <= len(STAGES)]
    if bad:
        raise NanoGPTError(f"--stage takes 1 to {len(STAGES)}, got {bad[0]}")
    # Five evaluations a step (ten for a timed one), of 20 batches each: enough to compare steps.
    budget = {"max_iters": iters, "eval_interval": max(1, iters // 5)} if iters else {"time": time, "eval_interval": 50}
    budget["eval_iters"] = 20
    for number in chosen:
        stage = STAGES[number - 1]
        flags = {**stage_flags(number - 1, device), **budget, "dataset": dataset, "device": device}
        if seed is not None:
            flags["seed"] = seed
        options = TrainOptions("lecture", flags, run=f"{prefix}-{number}-{stage.slug}", overwrite=overwrite)
        summary = run_training(options, on_event, progress)
        yield {"stage": number, "slug": stage.slug, "change": stage.change, "run": summary.run,
               "parameters": summary.parameters, "iterations": summary.iterations,
               "val_loss": summary.best_val_loss, "seconds": summary.total_elapsed,
               "lecture_val_loss": stage.lecture_val_loss}
