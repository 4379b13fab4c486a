"""Measuring a trained model: loss, perplexity and bits per character or token.

On a dataset split, either `iters` random batches (seeded, like the estimate during training) or, with
`full=True`, every token of the split once. By default (no `iters`), every token once when the split
holds no more tokens than DEFAULT_ITERS random batches would read: the exact figure, and cheaper (a
Tiny Shakespeare val split is 111,540 tokens; 200 batches of 32 x 256 read 1.6 million). On a text
file, always every token. This module reads checkpoints and datasets through their own modules and
never prints; `progress`, if given, is called with (stage, tokens done, tokens in all) as it goes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from nanogpt_cli import hellaswag
from nanogpt_cli.batches import BatchSampler
from nanogpt_cli.catalog import resolve_run
from nanogpt_cli.checkpoint import checkpoint_path, load_model
from nanogpt_cli.config import check_option, check_seed
from nanogpt_cli.dataset import load_dataset
from nanogpt_cli.device import resolve_device, resolve_dtype
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.memory import check_fits, inference_bytes
from nanogpt_cli.quantize import check_quantize, quantize_int8
from nanogpt_cli.sources import Progress, no_progress, read_text_file
from nanogpt_cli.tasks import accuracy
from nanogpt_cli.tokenizer import same_tokenizer, spec_name

DEFAULT_ITERS = 200  # random batches when the split is bigger than they would read
Done = Callable[[int], None]  # told how many more tokens were just measured


def _summed_loss(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """Total next-token loss over a (B, T + 1) batch of windows."""
    logits, _ = model(batch[:, :-1], batch[:, 1:])
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum"
    ).item()


@torch.no_grad()
def _loss_over_stream(model: torch.nn.Module, tokens: np.ndarray, block_size: int, batch_size: int,
                      done: Done) -> tuple[float, int]:
    """Summed loss over every token of `tokens` after the first, predicted once each, in windows of
    block_size tokens; returns (total loss, tokens predicted)."""
    device = next(model.parameters()).device
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    n_full = (len(data) - 1) // block_size
    total = 0.0
    for first in range(0, n_full, batch_size):
        rows = range(first, min(first + batch_size, n_full))
        batch = torch.stack([data[r * block_size : r * block_size + block_size + 1] for r in rows])
        total += _summed_loss(model, batch.to(device))
        done(len(rows) * block_size)
    tail = data[n_full * block_size :]
    if len(tail) >= 2:  # the short last window
        total += _summed_loss(model, tail.unsqueeze(0).to(device))
        done(len(tail) - 1)
    return total, len(data) - 1


def evaluate(
    *,
    run: str | None = None,
    checkpoint: str = "best",
    split: str = "val",
    iters: int | None = None,
    batch_size: int = 32,
    full: bool = False,
    text_file: Path | None = None,
    device: str = "auto",
    seed: int = 1337,
    dataset: str | None = None,
    dtype: str = "auto",
    quantize: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The loss of a run's model (see the module's docstring for what it is measured on). With
    `quantize="int8"` the int8 model's, and the float32 model's on the same tokens beside it."""
    if split not in ("train", "val"):
        raise NanoGPTError(f"--split must be train or val, got {split!r}")
    check_option("iters", iters)
    check_option("batch_size", batch_size)
    check_seed(seed)
    run_dir = resolve_run(run)
    path = checkpoint_path(run_dir, checkpoint)
    where = resolve_device(device)
    weights_dtype = resolve_dtype(dtype, where)
    check_quantize(quantize, where, weights_dtype)
    loaded = load_model(path, where, weights_dtype)  # quantized below, after the float32 loss
    model, tokenizer, block_size = loaded.model, loaded.tokenizer, loaded.config.block_size
    check_fits(inference_bytes(loaded.config, batch_size), where, f"evaluating batches of {batch_size}",
               "lower --batch-size")
    is_char = tokenizer.per_character
    characters = None
    task = None  # an arithmetic dataset's (tasks.py): measured on its answers

    if text_file is not None:
        text = read_text_file(Path(text_file))
        tokens = np.asarray(tokenizer.encode(text), dtype=np.int64)
        if len(tokens) < 2:
            raise NanoGPTError(f"{text_file} holds fewer than 2 tokens; nothing to evaluate")
        characters = len(text) - (len(tokenizer.decode(tokens[:1].tolist())))
        source, every_token = str(text_file), True
    else:
        name = dataset or loaded.checkpoint.get("dataset")
        if name is None:
            raise NanoGPTError(f"run {run_dir.name!r} was imported, not trained on a dataset here: pass --dataset NAME "
                               "(prepared with its tokenizer) or --text-file FILE")
        data = load_dataset(name)
        if not same_tokenizer(data.meta["tokenizer"], loaded.checkpoint["tokenizer"]):
            raise NanoGPTError(
                f"dataset {data.name!r} was prepared with a different tokenizer than run {run_dir.name!r} "
                f"uses ({spec_name(loaded.checkpoint['tokenizer'])}); prepare it with that tokenizer or use --text-file"
            )
        tokens, task = data.tokens(split), data.task
        if len(tokens) < 2:  # nothing to predict: no loss to report (it read as -0.0 over -1 tokens)
            raise NanoGPTError(f"the {split} split of dataset {data.name!r} holds {len(tokens)} token(s); there is "
                               f"nothing to evaluate: prepare it again with more text, or use --text-file")
        if iters is None:  # every token once, unless the split is bigger than the random batches
            full = full or len(tokens) - 1 <= DEFAULT_ITERS * batch_size * block_size
        if task is None and len(tokens) <= block_size and not full:
            raise NanoGPTError(f"the {split} split has {len(tokens)} tokens, too few for block size {block_size}; "
                               "use --full")
        source, every_token = f"{data.name}:{split}", full
        if full and not is_char:
            characters = len(tokenizer.decode(np.asarray(tokens[1:]).tolist()))

    iters = iters or DEFAULT_ITERS
    if task is not None:
        work = len(tokens) // task.length * (task.length - 1)  # every position of every problem
    else:
        work = len(tokens) - 1 if every_token else iters * batch_size * block_size

    def measure(stage: str) -> tuple[float, int, dict[str, Any]]:
        """(summed loss, tokens predicted, what else was measured): every token once, `iters` seeded
        random batches, or every problem's answer and how many answers are exactly right."""
        seen = 0

        def done(count: int) -> None:
            nonlocal seen
            seen += count
            if progress is not None:
                progress(stage, seen, work)

        if task is not None:
            return *_answers_loss(model, tokens, task, done), {"accuracy": accuracy(model, tokens, task)[0]}
        if every_token:
            return *_loss_over_stream(model, tokens, block_size, batch_size, done), {}
        sampler = BatchSampler(tokens, batch_size, block_size, next(model.parameters()).device, seed,
                               vocab_size=data.unscanned_vocab(split) if text_file is None else None)
        total = 0.0
        with torch.no_grad():
            for _ in range(iters):
                x, y = sampler.next()
                total += _summed_loss(model, torch.cat([x, y[:, -1:]], dim=1))
                done(batch_size * block_size)
        return total, iters * batch_size * block_size, {}

    total, count, measured = measure("float32" if quantize else "evaluating")
    result: dict[str, Any] = {"run": run_dir.name, "checkpoint": path.name, "source": source, "tokens": count}
    if task is not None:
        result["problems"] = len(tokens) // task.length
    else:
        result["every_token"] = every_token
        if not every_token:
            result["batches"] = iters
    if quantize:
        result["float32_loss"] = total / count
        result |= {f"float32_{key}": value for key, value in measured.items()}
        quantize_int8(model, per_token=False)  # one kernel call per batch: per-token calls would take minutes here
        total, count, measured = measure(quantize)  # the same tokens, the same batches
    loss = total / count
    result |= measured | {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_token": loss / math.log(2),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "quantize": quantize,
    }
    if quantize:
        result["quantize_cost"] = loss - result["float32_loss"]
    if is_char and task is None:
        result["bits_per_char"] = result["bits_per_token"]
    elif characters:
        result["bits_per_char"] = total / math.log(2) / characters
    return result


@torch.no_grad()
def _answers_loss(model: torch.nn.Module, tokens: np.ndarray, task, done: Done, batch_size: int = 500
                  ) -> tuple[float, int]:
    """Summed loss on the answers of every problem in `tokens` (as training counts it), and how many
    answer tokens that is."""
    device = next(model.parameters()).device
    problems = torch.from_numpy(np.asarray(tokens, dtype=np.int64).reshape(-1, task.length))
    total, count = 0.0, 0
    for first in range(0, len(problems), batch_size):
        batch = problems[first : first + batch_size].to(device)
        targets = task.mask_problem(batch[:, 1:].clone())
        logits, _ = model(batch[:, :-1], targets)
        total += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                                 ignore_index=-1, reduction="sum").item()
        count += int((targets >= 0).sum())
        done(targets.numel())
    return total, count


def evaluate_task(*, task: str, run: str | None = None, checkpoint: str = "best", limit: int | None = None,
                  device: str = "auto", dtype: str = "auto", download_progress: Progress = no_progress,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """A run's score on a benchmark task (`--task`): HellaSwag's validation set, or its first `limit` examples."""
    if task != "hellaswag":
        raise NanoGPTError(f"unknown --task {task!r}: the task nanogpt knows is hellaswag")
    if limit is not None and limit < 1:
        raise NanoGPTError(f"--limit must be at least 1, got {limit}")
    run_dir = resolve_run(run)
    path = checkpoint_path(run_dir, checkpoint)
    where = resolve_device(device)
    loaded = load_model(path, where, resolve_dtype(dtype, where))
    examples = hellaswag.read_examples(hellaswag.hellaswag_file(download_progress), limit)
    seen = 0

    def done(count: int) -> None:
        nonlocal seen
        seen += count
        if progress is not None:
            progress("hellaswag", seen, len(examples))

    return {"run": run_dir.name, "checkpoint": path.name, **hellaswag.score(loaded.model, loaded.tokenizer,
                                                                             examples, done)}

