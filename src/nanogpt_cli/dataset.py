"""Reading a prepared dataset: its meta.json, tokenizer and memory-mapped token files, and what
`info` and `train` show of one. Writing one is prepare.py's (text) and tasks.py's (problems) work."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.catalog import read_metrics, read_run_config, run_summary
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.publish import META_VERSION, TOKEN_DTYPES
from nanogpt_cli.readers import Corrupt, read_json_object, require
from nanogpt_cli.tasks import task_of, task_problem
from nanogpt_cli.tokenizer import Tokenizer, spec_name, spec_problem, tokenizer_from_spec


class Dataset:
    """A prepared dataset: its metadata, tokenizer and memory-mapped token streams."""

    def __init__(self, name: str):
        self.name = name
        self.path = paths.dataset_dir(name)
        self.remedy = (f"prepare the dataset {name!r} again (`nanogpt prepare "
                       f"{'shakespeare' if name == 'shakespeare' else '...'}`)")
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            hint = "nanogpt prepare shakespeare" if name == "shakespeare" else "nanogpt prepare FILE --name " + name
            close = paths.did_you_mean(name, paths.datasets_dir())
            raise NanoGPTError(f"dataset {name!r} is not prepared{close or f'; run `{hint}` first'} "
                               "(`nanogpt info` lists datasets)")
        self.meta: dict[str, Any] = read_meta(meta_path, self.remedy)
        self.dtype = np.dtype(self.meta["dtype"])
        self.task = task_of(self.meta)
        self._tokenizer: Tokenizer | None = None
        self._tokens: dict[str, np.ndarray] = {}  # each split opened (and scanned) once

    def unscanned_vocab(self, split: str) -> int | None:
        """The vocabulary size, for a split too big to scan on open (its batches check their ids against
        it, see batches.BatchSampler); None once the whole split was checked."""
        self.tokens(split)
        return self.vocab_size if len(self._tokens[split]) * self.dtype.itemsize > SCAN_ON_OPEN_BYTES else None

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @functools.cached_property
    def fingerprint(self) -> str:
        """What identifies these tokens without reading them: the tokenizer, the token counts and the
        sources' hashes (a task's spec and counts). A run records it at each checkpoint; a changed one
        refuses --resume."""
        keys = ("tokenizer", "task", "train_tokens", "val_tokens", "dtype")
        sources = [source.get("sha256") if isinstance(source := self.meta.get(k), dict) else None
                   for k in ("source", "val_source")]
        text = json.dumps([{k: self.meta.get(k) for k in keys}, sources], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            tokenizer = tokenizer_from_spec(self.meta["tokenizer"])
            if tokenizer.vocab_size != self.vocab_size:
                raise Corrupt(self.path / "meta.json", f"vocab_size {self.vocab_size} is not its tokenizer's "
                                                       f"{tokenizer.vocab_size}", self.remedy)
            self._tokenizer = tokenizer
        return self._tokenizer

    def tokens(self, split: str) -> np.ndarray:
        """A split's tokens, memory-mapped. The file must hold as many tokens as meta.json says and, when
        it is small enough to scan in a blink, only ids below the vocabulary size (a bigger one is checked
        batch by batch, see batches.BatchSampler)."""
        if split in self._tokens:
            return self._tokens[split]
        path = self.path / f"{split}.bin"
        try:
            size = path.stat().st_size
            expected = self.meta[f"{split}_tokens"]  # an integer: read_meta checked it
            if size != expected * self.dtype.itemsize:
                raise Corrupt(path, f"{size:,} bytes, where meta.json says {expected} {self.dtype.name} tokens",
                              self.remedy)
            tokens = np.memmap(path, dtype=self.dtype, mode="r") if size else np.zeros(0, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise NanoGPTError(f"cannot read {path} ({exc}); prepare the dataset {self.name!r} again") from None
        if size <= SCAN_ON_OPEN_BYTES:
            check_token_ids(tokens, self.vocab_size, path, self.remedy)
        self._tokens[split] = tokens
        return tokens


SCAN_ON_OPEN_BYTES = 256 * 2**20  # about a tenth of a second to scan


def check_token_ids(tokens: np.ndarray, vocab_size: int, where: object, remedy: str) -> None:
    """Refuse token ids at or above the vocabulary size (a flipped byte), which no model can embed."""
    top = int(tokens.max()) if len(tokens) else 0
    if top >= vocab_size:
        position = int(np.argmax(np.asarray(tokens) >= vocab_size))  # the first bad one
        raise Corrupt(where, f"token {position:,} is id {int(tokens[position])}, beyond the vocabulary of "
                             f"{vocab_size}", remedy)


COVERAGE_KEYS = ("distinct_characters", "kept_characters", "unknown_characters", "mapped_characters", "mapped_share")


def read_meta(path, remedy: str) -> dict[str, Any]:
    """A dataset's meta.json, every field the readers use checked: the token dtype (from a fixed list:
    a name numpy would take for anything else could crash the reader), the vocabulary (which that dtype
    must hold), the tokenizer and task specs and the token counts."""
    meta = read_json_object(path, "dataset metadata", remedy)
    version = require(meta, "format_version", int, path, remedy, optional=True, default=0)
    if version > META_VERSION:
        raise NanoGPTError(f"{path} was written by a newer nanogpt-cli (format {version}); upgrade to read it")
    dtype = meta.get("dtype")
    if dtype not in TOKEN_DTYPES:
        raise Corrupt(path, f"dtype {str(dtype)[:40]!r} is not one of {', '.join(TOKEN_DTYPES)}", remedy)
    vocab = require(meta, "vocab_size", int, path, remedy)
    if not 1 <= vocab <= np.iinfo(dtype).max + 1:
        raise Corrupt(path, f"vocab_size {vocab} does not fit its {dtype} tokens", remedy)
    for split in ("train", "val"):
        if require(meta, f"{split}_tokens", int, path, remedy) < 0:
            raise Corrupt(path, f"{split}_tokens is negative", remedy)
    for name, kind in (("name", str), ("source", dict), ("char_coverage", dict), ("task", dict)):
        require(meta, name, kind, path, remedy, optional=name != "name")
    for name, kind in (("description", str), ("sha256", str)):
        require(meta.get("source") or {}, name, kind, path, remedy, optional=True)
    coverage = meta.get("char_coverage")
    if coverage is not None and not all(type(coverage.get(k)) in (int, float) for k in COVERAGE_KEYS):
        raise Corrupt(path, "char_coverage lacks a count or holds one that is not a number", remedy)
    spec = meta.get("tokenizer")
    problem = spec_problem(spec)
    if problem is None and spec["kind"] == "char" and len(spec["chars"]) + ("unknown" in spec) != vocab:
        problem = f"vocab_size {vocab} is not the char tokenizer's {len(spec['chars']) + ('unknown' in spec)}"
    problem = problem or task_problem(meta.get("task"))
    if problem:
        raise Corrupt(path, problem, remedy)
    return meta


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
            "config": (config := read_run_config(run_dir / "config.json")),
            "tokenizer_name": spec_name(config.get("tokenizer", {})),
            "evals": [m for m in metrics if m.get("kind") == "eval"],
        }
    if not (paths.dataset_dir(name) / "meta.json").is_file():
        close = paths.did_you_mean(name, paths.runs_dir()) or paths.did_you_mean(name, paths.datasets_dir())
        raise NanoGPTError(f"no run or dataset named {name!r}{close} (`nanogpt info` lists them)")
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
