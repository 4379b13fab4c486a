"""Task datasets: the lecture's exercise of teaching a GPT arithmetic (`nanogpt prepare addition`).

A problem is one fixed-width line, `123+456=975` then a newline: operands zero-padded to `digits`,
the answer zero-padded to the widest answer the operations can give and, by default, written
reversed (least significant digit first, the order in which carries are computed). Every problem has
the same length, so a training sequence is exactly one problem and starts at its beginning, and the
loss is masked to the answer and the newline (targets of the problem's own positions are -1,
cross-entropy's ignore_index). Train and val problems are disjoint sets. `accuracy` measures exact
answers with greedy decoding; `Task.solve` turns a model's answer back into the right order.
This module knows problems and token ids; it leaves training to the trainer.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.publish import META_VERSION, publish, staging_dir
from nanogpt_cli.tokenizer import CharTokenizer

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
CHARS = "\n*+-0123456789="


@dataclass(frozen=True)
class Task:
    ops: str
    digits: int
    reverse: bool
    reverse_operands: bool = False  # operands least significant digit first too: digit k of a, b and c sit
    # at the same distances from one another for every k, which relative positions (--pos rope) can use

    @property
    def answer_width(self) -> int:
        """Digits of the widest answer: a product has twice the digits, a sum one more."""
        return max({"+": self.digits + 1, "-": self.digits, "*": 2 * self.digits}[op] for op in self.ops)

    @property
    def answer_start(self) -> int:
        return 2 * self.digits + 2  # after "a", the operator, "b" and "="

    @property
    def length(self) -> int:
        return self.answer_start + self.answer_width + 1  # and the newline that ends it

    def _operand(self, n: int) -> str:
        text = f"{n:0{self.digits}d}"
        return text[::-1] if self.reverse_operands else text

    def text(self, a: int, op: str, b: int) -> str:
        answer = f"{OPS[op](a, b):0{self.answer_width}d}"
        return f"{self._operand(a)}{op}{self._operand(b)}={answer[::-1] if self.reverse else answer}\n"

    def prompt(self, text: str) -> str:
        """A problem as typed ("12+7=" or "12 + 7") in the padded form the model was trained on."""
        body = text.strip().rstrip("=").replace(" ", "")
        for op in self.ops:
            left, sep, right = body.partition(op)
            if sep and left.isdigit() and right.isdigit():
                if max(len(left.lstrip("0")), len(right.lstrip("0"))) > self.digits:
                    raise NanoGPTError(f"this model adds numbers of up to {self.digits} digits; {text.strip()!r} is "
                                       "longer")
                return f"{self._operand(int(left))}{op}{self._operand(int(right))}="
        raise NanoGPTError(f"{text.strip()!r} is not a problem this model solves: write it as A{self.ops[0]}B= with "
                           f"up to {self.digits} digits each (operations: {' '.join(self.ops)})")

    def mask_problem(self, targets):
        """Targets (rows of next tokens of whole problems) with the problem's own positions set to -1,
        cross-entropy's ignore_index: only the answer and its newline are learned and measured."""
        targets[:, : self.answer_start - 1] = -1
        return targets

    def read_answer(self, generated: str) -> str:
        """The answer as a person writes it: in the right order, without padding zeros."""
        digits = generated.split("\n")[0]
        value = digits[::-1] if self.reverse else digits
        return value.lstrip("0") or ("0" if value else "")


MAX_DIGITS = 18  # operands and answers stay exact in int64 and in a block a model can hold


def task_problem(spec: Any) -> str | None:
    """What makes a stored task spec (meta.json's, a checkpoint's `task`) unusable, or None; a missing
    one (None) is fine: not a task dataset."""
    ok = spec is None or (
        isinstance(spec, dict) and isinstance(spec.get("ops"), str) and spec["ops"]
        and set(spec["ops"]) <= OPS.keys() and type(spec.get("digits")) is int and 1 <= spec["digits"] <= MAX_DIGITS
        and isinstance(spec.get("reverse"), bool) and isinstance(spec.get("reverse_operands", False), bool))
    return None if ok else "the task spec (operations, digits, answer order) is malformed"


def task_of(meta: dict[str, Any] | None) -> Task | None:
    """The task a meta.json or checkpoint describes (None: not a task dataset), whose spec its reader
    has checked (task_problem)."""
    spec = (meta or {}).get("task")
    if spec is None:
        return None
    return Task(spec["ops"], spec["digits"], spec["reverse"], spec.get("reverse_operands", False))


def _problems(task: Task, count: int, rng: np.random.Generator, exclude: set[tuple] | None = None) -> list[tuple]:
    """`count` distinct random problems (a, op, b), none of them in `exclude`."""
    top = 10**task.digits
    space = top * top * len(task.ops)
    if count + len(exclude or ()) > space * 0.8:  # (drawing gets slow when nearly every problem is taken)
        raise NanoGPTError(f"{task.digits}-digit problems are too few for {count:,} distinct ones; use more --digits "
                           "or fewer --train-problems")
    chosen: set[tuple] = set()
    while len(chosen) < count:
        a, b = rng.integers(0, top, size=2 * count).reshape(2, -1)
        ops = rng.integers(0, len(task.ops), size=count)
        for x, o, y in zip(a.tolist(), ops.tolist(), b.tolist(), strict=True):
            op = task.ops[o]
            if op == "-" and x < y:
                x, y = y, x  # differences stay non-negative
            problem = (x, op, y)
            if problem not in (exclude or ()) and len(chosen) < count:
                chosen.add(problem)
    return sorted(chosen)


def prepare_task(name: str | None, ops: str = "+", digits: int = 3, reverse: bool = True, train_problems: int = 200_000,
                 val_problems: int = 2000, seed: int = 1337, overwrite: bool = False,
                 reverse_operands: bool = False) -> dict[str, Any]:
    """Write a task dataset (train.bin, val.bin, meta.json) of disjoint random problems."""
    if not ops or any(op not in OPS for op in ops) or len(set(ops)) != len(ops):
        raise NanoGPTError(f"--ops takes some of {' '.join(OPS)} (e.g. + or +-*), got {ops!r}")
    if not 1 <= digits <= MAX_DIGITS:
        raise NanoGPTError(f"--digits must be from 1 to {MAX_DIGITS}, got {digits}")
    if val_problems < 1000:
        raise NanoGPTError(f"--val-problems must be at least 1,000 (accuracy is measured on them), got {val_problems}")
    task = Task(ops, digits, reverse, reverse_operands)
    name = paths.check_name(
        name or ("addition" if ops == "+" else "arithmetic") + (f"-{digits}" if digits != 3 else ""), "dataset"
    )
    final = paths.dataset_dir(name)
    if (final / "meta.json").is_file() and not overwrite:
        raise NanoGPTError(f"dataset {name!r} already exists; pass --overwrite to replace it, or --name to prepare "
                           "it under another name")
    rng = np.random.default_rng(seed)
    val = _problems(task, val_problems, rng)
    train = _problems(task, train_problems, rng, exclude=set(val))
    tokenizer = CharTokenizer(CHARS)
    tmp = staging_dir(name)
    try:
        for split, problems in (("train", train), ("val", val)):
            text = "".join(task.text(*problems[i]) for i in rng.permutation(len(problems)))
            tokenizer.encode_array(text).astype(np.uint16).tofile(tmp / f"{split}.bin")
        meta = {
            "format_version": META_VERSION,
            "name": name,
            "tokenizer": tokenizer.spec(),
            "vocab_size": tokenizer.vocab_size,
            "dtype": "uint16",
            "train_tokens": len(train) * task.length,
            "val_tokens": len(val) * task.length,
            "task": {
                **asdict(task),
                "length": task.length,
                "answer_start": task.answer_start,
                "train_problems": len(train),
                "val_problems": len(val),
            },
            "source": {
                "description": f"{digits}-digit {' '.join(ops)} problems"
                + (", answers reversed" if reverse else "")
                + (", operands reversed" if reverse_operands else ""),
                "sha256": "-",
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        publish(tmp, name, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**meta, "path": str(final)}


def accuracy(model: Any, tokens: np.ndarray, task: Task, batch_size: int = 500) -> tuple[float, int]:
    """(share of exactly right answers, problems) on the problems in `tokens`, decoding greedily."""
    import torch  # here, so that `nanogpt prepare addition` starts without it

    device = next(model.parameters()).device
    problems = torch.from_numpy(np.asarray(tokens, dtype=np.int64).reshape(-1, task.length))
    right = 0
    with torch.no_grad():
        for first in range(0, len(problems), batch_size):
            batch = problems[first : first + batch_size].to(device)
            context = batch[:, : task.answer_start]
            for _ in range(task.length - task.answer_start):
                logits, _ = model(context)
                context = torch.cat([context, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            right += int((context == batch).all(dim=1).sum())
    return right / len(problems), len(problems)


def val_examples(dataset, count: int = 5) -> list[tuple[str, str]]:
    """The first `count` val problems of a task dataset as (problem as a person writes it, answer)."""
    task, tokens = dataset.task, dataset.tokens("val")
    examples = []
    for i in range(min(count, len(tokens) // task.length)):
        text = dataset.tokenizer.decode(tokens[i * task.length : (i + 1) * task.length].tolist())
        problem, _, answer = text.partition("=")
        a, op, b = next(problem.partition(o) for o in task.ops if o in problem)
        if task.reverse_operands:
            a, b = a[::-1], b[::-1]
        examples.append((f"{int(a)}{op}{int(b)}=", task.read_answer(answer)))
    return examples
