"""Datasets: turning text into token files, and reading random training batches back out.

`prepare_dataset` reads a source (the bundled Tiny Shakespeare or a UTF-8 text file), tokenizes it and
writes <data dir>/datasets/<name>/{train.bin, val.bin, meta.json} in nanoGPT's format: raw token ids,
uint16 when the vocabulary fits, else uint32; the first (1 - val_fraction) of the text is train, the
rest val. The folder is built under a temporary name and renamed into place, so an interrupted prepare
never leaves a dataset that looks complete. `load_dataset` memory-maps the token files and
`BatchSampler` draws reproducible random (x, y) batches from them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.tokenizer import Tokenizer, get_tokenizer, tokenizer_from_spec

META_VERSION = 1
BUNDLED = {"shakespeare": ("tinyshakespeare.txt.gz", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")}

# progress(stage, done, total): called as work advances; total may be 0 when unknown.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class SourceText:
    text: str
    description: str
    default_name: str
    sha256: str


def read_bundled(name: str) -> SourceText:
    filename, expected = BUNDLED[name]
    raw = gzip.decompress((resources.files("nanogpt_cli") / "data" / filename).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected:
        raise NanoGPTError(f"the bundled {name} data is corrupt (sha256 {digest[:12]}...); reinstall nanogpt-cli")
    return SourceText(raw.decode("utf-8"), f"bundled {name}", name, digest)


def bundled_dataset(name: str) -> tuple[str, str] | None:
    """(source, tokenizer) when `name` is how `prepare` names a bundled source: 'shakespeare' is its
    char-level dataset and 'shakespeare-gpt2' (any tokenizer) the others."""
    for source in BUNDLED:
        if name == source:
            return source, "char"
        if name.startswith(source + "-"):
            return source, name[len(source) + 1 :]
    return None


def read_text_file(path: Path) -> SourceText:
    if path.is_dir():
        raise NanoGPTError(f"{path} is a folder; pass a UTF-8 text file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NanoGPTError(f"{path} does not exist; pass 'shakespeare' or the path of a UTF-8 text file") from None
    except OSError as exc:
        raise NanoGPTError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise NanoGPTError(f"{path} is empty; a dataset needs text to learn from")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NanoGPTError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8 first"
        ) from None
    if "\x00" in text:
        raise NanoGPTError(f"{path} looks like a binary file (it contains NUL bytes); pass a text file")
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in path.stem).strip("-._") or "data"
    return SourceText(text, str(path.resolve()), stem, hashlib.sha256(raw).hexdigest())


def resolve_source(source: str) -> SourceText:
    if source in BUNDLED:
        return read_bundled(source)
    if source.startswith(("http://", "https://")):
        raise NanoGPTError(
            "preparing straight from a URL is not supported yet; download the file and run `nanogpt prepare FILE`"
        )
    return read_text_file(Path(source).expanduser())


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _write_tokens(path: Path, ids: list[int], dtype: np.dtype) -> None:
    with open(path, "wb") as f:
        np.asarray(ids, dtype=dtype).tofile(f)
        f.flush()
        os.fsync(f.fileno())


def prepare_dataset(
    source: str,
    tokenizer: str = "char",
    name: str | None = None,
    val_fraction: float = 0.1,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Tokenize `source` into a dataset folder and return its metadata (also written as meta.json)."""
    if not 0.0 < val_fraction < 1.0:
        raise NanoGPTError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    progress("read", 0, 0)
    src = resolve_source(source)
    if name is None:
        name = src.default_name if tokenizer == "char" else f"{src.default_name}-{tokenizer}"
    final_dir = paths.dataset_dir(name)

    tok = get_tokenizer(tokenizer, src.text)
    split_at = int(len(src.text) * (1.0 - val_fraction))
    parts = {"train": src.text[:split_at], "val": src.text[split_at:]}
    encoded: dict[str, list[int]] = {}
    for i, (split, text) in enumerate(parts.items()):
        progress("tokenize", i, len(parts))
        encoded[split] = tok.encode(text)
    progress("tokenize", len(parts), len(parts))
    for split, ids in encoded.items():
        if len(ids) < 2:
            raise NanoGPTError(
                f"the {split} split would hold {len(ids)} token(s); use more text or change --val-fraction"
            )

    dtype = token_dtype(tok.vocab_size)
    meta = {
        "format_version": META_VERSION,
        "name": name,
        "tokenizer": tok.spec(),
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "train_tokens": len(encoded["train"]),
        "val_tokens": len(encoded["val"]),
        "val_fraction": val_fraction,
        "source": {"description": src.description, "sha256": src.sha256, "characters": len(src.text)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    # Build the dataset beside its final place, then swap it in with renames.
    datasets = paths.ensure_dir(paths.datasets_dir())
    tmp_dir = datasets / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        tmp_dir.mkdir()
        for split, ids in encoded.items():
            progress("write", 0, 0)
            _write_tokens(tmp_dir / f"{split}.bin", ids, dtype)
        (tmp_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        old_dir = datasets / f".{name}.old-{os.getpid()}"
        if final_dir.exists():
            final_dir.rename(old_dir)
        tmp_dir.rename(final_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    except OSError as exc:
        raise NanoGPTError(f"cannot write dataset to {final_dir}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    meta["path"] = str(final_dir)
    return meta


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
            self.dtype = np.dtype(self.meta["dtype"])
        except (ValueError, KeyError, TypeError) as exc:
            raise NanoGPTError(f"dataset {name!r} has an unreadable meta.json ({exc}); prepare it again") from None
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

    def tokens(self, split: str) -> np.ndarray:
        path = self.path / f"{split}.bin"
        try:
            if path.stat().st_size == 0:
                return np.zeros(0, dtype=self.dtype)
            return np.memmap(path, dtype=self.dtype, mode="r")
        except (OSError, ValueError) as exc:
            raise NanoGPTError(f"cannot read {path} ({exc}); prepare the dataset {self.name!r} again") from None


def load_dataset(name: str) -> Dataset:
    return Dataset(name)


class BatchSampler:
    """Random windows of block_size + 1 tokens from one token stream, as (inputs, targets).

    Owns its random generator so a run's data order depends only on the seed (and can be saved)."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, device: Any, seed: int):
        import torch

        self.tokens = tokens
        self.batch_size = batch_size
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
        import torch

        self._before_last = self.generator.get_state()
        high = len(self.tokens) - self.block_size
        starts = torch.randint(high, (self.batch_size,), generator=self.generator).numpy()
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
        if self._pin:
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)
