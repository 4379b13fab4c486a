"""Reading a prepared dataset: its meta.json, tokenizer and memory-mapped token files, and what
`info` and `train` show of one. Writing one is prepare.py's (text) and tasks.py's (problems) work."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.catalog import read_json, read_metrics, run_summary
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.publish import META_VERSION, TOKEN_DTYPES
from nanogpt_cli.tasks import Task, task_of
from nanogpt_cli.tokenizer import Tokenizer, spec_name, tokenizer_from_spec


class Dataset:
    """A prepared dataset: its metadata, tokenizer and memory-mapped token streams."""

    def __init__(self, name: str):
        self.name = name
        self.path = paths.dataset_dir(name)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            hint = "nanogpt prepare shakespeare" if name == "shakespeare" else "nanogpt prepare FILE --name " + name
            raise NanoGPTError(f"dataset {name!r} is not prepared; run `{hint}` first (`nanogpt info` lists datasets)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
            dtype = self.meta["dtype"]
        except (ValueError, KeyError, TypeError) as exc:
            raise NanoGPTError(f"dataset {name!r} has an unreadable meta.json ({exc}); prepare it again") from None
        if dtype not in TOKEN_DTYPES:  # a name numpy would take for anything else could crash the reader
            raise NanoGPTError(f"{meta_path} is corrupt: dtype {dtype!r} is not one of {', '.join(TOKEN_DTYPES)}; "
                               f"prepare the dataset {name!r} again")
        self.dtype = np.dtype(dtype)
        if self.meta.get("format_version", 0) > META_VERSION:
            raise NanoGPTError(f"dataset {name!r} was written by a newer nanogpt-cli; upgrade to read it")
        self._tokenizer: Tokenizer | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_spec(self.meta["tokenizer"])
        return self._tokenizer

    @property
    def task(self) -> Task | None:
        """The task of a task dataset, else None."""
        return task_of(self.meta)

    def tokens(self, split: str) -> np.ndarray:
        path = self.path / f"{split}.bin"
        try:
            size = path.stat().st_size
            expected = self.meta.get(f"{split}_tokens")
            if size % self.dtype.itemsize or (isinstance(expected, int) and size != expected * self.dtype.itemsize):
                raise NanoGPTError(f"{path} is corrupt: {size:,} bytes, where meta.json says {expected} "
                                   f"{self.dtype.name} tokens; prepare the dataset {self.name!r} again")
            if size == 0:
                return np.zeros(0, dtype=self.dtype)
            return np.memmap(path, dtype=self.dtype, mode="r")
        except (OSError, ValueError) as exc:
            raise NanoGPTError(f"cannot read {path} ({exc}); prepare the dataset {self.name!r} again") from None


def load_dataset(name: str) -> Dataset:
    return Dataset(name)


def example_prompt(dataset: str, max_chars: int = 24) -> str | None:
    """A prompt in the style of a dataset's text: the start of its first non-blank line, cut at a
    word boundary (None if the dataset is gone or has no such line)."""
    try:
        data = load_dataset(dataset)
        text = data.tokenizer.decode(data.tokens("train")[:200].tolist())
    except NanoGPTError:
        return None
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) > max_chars:
        cut = line[:max_chars].rsplit(" ", 1)[0]
        line = cut if " " in line[:max_chars] else line[:max_chars]
    return line or None


def describe_item(name: str) -> dict[str, Any]:
    """One run (config, evaluations) or, if no run has that name, one dataset (meta, decoded sample)."""
    run_dir = paths.run_dir(name)
    summary = run_summary(run_dir) if run_dir.is_dir() else None
    if summary is not None:
        summary.pop("modified_ts")
        metrics = read_metrics(run_dir)
        return {
            "type": "run",
            "summary": summary,
            "config": (config := read_json(run_dir / "config.json")),
            "tokenizer_name": spec_name(config.get("tokenizer", {})),
            "evals": [m for m in metrics if m.get("kind") == "eval"],
        }
    if not (paths.dataset_dir(name) / "meta.json").is_file():
        raise NanoGPTError(f"no run or dataset named {name!r}; `nanogpt info` lists them")
    dataset = load_dataset(name)
    head = dataset.tokens("train")[:200].tolist()
    val = dataset.tokens("val")[:200_000].tolist()  # enough to measure, quick to decode
    meta = {k: v for k, v in dataset.meta.items() if not (k == "tokenizer" and "json" in v)}  # not a whole BPE
    return {
        "type": "dataset",
        "meta": {**meta, "path": str(dataset.path)},
        "tokenizer_name": spec_name(dataset.meta["tokenizer"]),
        "chars_per_token": len(dataset.tokenizer.decode(val)) / max(1, len(val)),
        "sample": dataset.tokenizer.decode(head),
    }
