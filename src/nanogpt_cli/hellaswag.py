"""HellaSwag (Zellers et al., 2019): pick the sensible ending of a sentence among four. `nanogpt eval
--task hellaswag` scores a run on its validation set the way "Let's reproduce GPT-2" (build-nanogpt)
does, so the figures compare with the ones published there.

Completion style: each ending (with a space before it) is appended to the context, and the model's
cross-entropy on the ending's tokens is read. The prediction is the ending with the lowest mean loss
per token (acc_norm, the headline figure) or the lowest summed loss (acc). A context with an ending
longer than the model's block size keeps its last block_size + 1 tokens. An example whose text a char
vocabulary cannot encode (a character it never saw, and no unknown token) is skipped and counted.

The file (10,042 examples, 11 MB) is downloaded once into the cache folder; NANOGPT_HELLASWAG_URL
points elsewhere (a mirror, or file:///path/to/hellaswag_val.jsonl on a machine without a network).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.readers import Corrupt
from nanogpt_cli.sources import Progress, download, no_progress
from nanogpt_cli.tokenizer import Tokenizer

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
EXAMPLES = 10_042
# Published with build-nanogpt's hellaswag.py (same scoring, all 10,042 examples), for checking a run:
REFERENCE = {"gpt2": {"acc": 0.2859, "acc_norm": 0.2955}, "gpt2-xl": {"acc": 0.3842, "acc_norm": 0.4893}}


@dataclass(frozen=True)
class Example:
    context: str
    endings: tuple[str, str, str, str]
    label: int


def read_examples(path: Path, limit: int | None = None) -> list[Example]:
    """The first `limit` examples of a HellaSwag JSON Lines file, each checked."""
    remedy = f"delete {path} so that it is downloaded again"
    examples: list[Example] = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if limit is not None and len(examples) == limit:
                    break
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    raise Corrupt(path, f"line {number} is not JSON", remedy) from None
                context, endings, label = (item.get(k) for k in ("ctx", "endings", "label")) if isinstance(
                    item, dict) else (None, None, None)
                if not (isinstance(context, str) and isinstance(endings, list) and len(endings) == 4
                        and all(isinstance(e, str) for e in endings) and type(label) is int and 0 <= label < 4):
                    raise Corrupt(path, f"line {number} is not a HellaSwag example (ctx, 4 endings, label 0-3)",
                                  remedy)
                examples.append(Example(context, tuple(endings), label))
    except UnicodeDecodeError:
        raise Corrupt(path, "it is not UTF-8 text", remedy) from None
    if not examples:
        raise Corrupt(path, "it holds no examples", remedy)
    return examples


def hellaswag_file(progress: Progress = no_progress) -> Path:
    url = os.environ.get("NANOGPT_HELLASWAG_URL", URL)
    return download(url, progress=progress, offline_hint="download hellaswag_val.jsonl (from rowanz/hellaswag on "
                    "GitHub) yourself and set NANOGPT_HELLASWAG_URL=file:///path/to/hellaswag_val.jsonl")


def _rows(tokenizer: Tokenizer, example: Example, block_size: int) -> list[tuple[list[int], int]] | None:
    """(tokens, how many of the last ones are the ending) for each ending; None if the text cannot be encoded."""
    try:
        context = tokenizer.encode(example.context)
        rows = []
        for ending in example.endings:
            tokens = tokenizer.encode(" " + ending)
            row = (context + tokens)[-(block_size + 1) :]
            rows.append((row, min(len(tokens), len(row) - 1)))
        return rows
    except NanoGPTError:  # a char vocabulary without this character
        return None


@torch.no_grad()
def ending_losses(model: torch.nn.Module, rows: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy of each row's ending, the four rows in one padded batch."""
    device = next(model.parameters()).device
    width = max(len(tokens) for tokens, _ in rows)
    idx = torch.zeros(len(rows), width - 1, dtype=torch.long)
    targets = torch.full((len(rows), width - 1), -1, dtype=torch.long)  # -1: not scored
    for i, (tokens, ending) in enumerate(rows):
        row = torch.tensor(tokens)
        idx[i, : len(tokens) - 1] = row[:-1]
        targets[i, len(tokens) - 1 - ending : len(tokens) - 1] = row[-ending:]
    logits, _ = model(idx.to(device), targets.to(device))
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(), ignore_index=-1,
                             reduction="none").view(len(rows), -1)
    summed = losses.sum(dim=1).cpu()
    return summed, summed / torch.tensor([ending for _, ending in rows])


def score(model: torch.nn.Module, tokenizer: Tokenizer, examples: list[Example],
          done: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """acc, acc_norm and counts over `examples`."""
    block_size = model.config.block_size
    right = right_norm = skipped = 0
    for example in examples:
        rows = _rows(tokenizer, example, block_size)
        if rows is None or any(ending < 1 for _, ending in rows):
            skipped += 1
        else:
            summed, mean = ending_losses(model, rows)
            right += int(summed.argmin()) == example.label
            right_norm += int(mean.argmin()) == example.label
        done(1)
    scored = len(examples) - skipped
    if not scored:
        raise NanoGPTError(f"none of the {len(examples)} HellaSwag examples can be written in this run's "
                           "vocabulary (a char model knows only its training text's characters)")
    return {"task": "hellaswag", "examples": scored, "skipped": skipped, "acc": right / scored,
            "acc_norm": right_norm / scored}
