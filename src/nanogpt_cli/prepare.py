"""Preparing a dataset: turning text into token files.

`prepare_dataset` streams a source (see sources.py) into <data dir>/datasets/<name>/{train.bin,
val.bin, meta.json} in nanoGPT's format: raw token ids, uint16 when the vocabulary fits, else uint32.
It reads the text twice, in chunks, so memory stays flat however big the input is: a first pass counts
characters (and, for char tokenizers, finds the vocabulary) and hashes the bytes; a second pass
tokenizes and writes. The first (1 - val_fraction) of the text is train and the rest val, exactly as
nanoGPT's prepare scripts split it (or a separate --val-file is val). BPE text is cut only at points
where tiktoken's pre-tokenizer would split anyway (a single space between two non-space characters), so
the token stream equals encoding everything at once; pieces are encoded on all cores (tiktoken releases the GIL)
while the next ones are read. Documents of a folder are separated by <|endoftext|> (BPE)
or a blank line (char). The dataset folder is built under a temporary name and renamed into place, so
an interrupted prepare never leaves a dataset that looks complete (publish.py). dataset.py reads it back.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.publish import META_VERSION, publish, staging_dir, token_dtype
from nanogpt_cli.sources import Document, Progress, Source, no_progress, record_texts, resolve_source
from nanogpt_cli.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    bpe_size,
    codepoints,
    get_tokenizer,
)
from nanogpt_cli.tokenwriter import TokenWriter

READ_BYTES = 1 << 22  # bytes read at a time
TRAIN_PIECE_CHARS = 1 << 16  # text handed to the BPE trainer at a time
UNICODE_SIZE = 0x110000


def _pieces(doc: Document, on_bytes) -> Iterator[str | None]:
    """A document's text in pieces; for a file of records, each record's text with None between records
    (where a folder's documents get their separator). Empty records are left out."""
    if doc.text_field is None:
        yield from _chunks(doc, on_bytes)
        return
    first = True
    for text in record_texts(doc, on_bytes):
        if text:
            if not first:
                yield None
            first = False
            yield text


def char_separator(ends_with_newline: bool) -> str:
    """The text between two documents in a char dataset: enough newlines to leave one blank line."""
    return "\n" if ends_with_newline else "\n\n"


def _chunks(doc: Document, on_bytes) -> Iterator[str]:
    """A document's text in decoded chunks; raises UnicodeDecodeError (with an absolute offset)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with doc.open() as f:
        while block := f.read(READ_BYTES):
            try:
                text = decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise UnicodeDecodeError(
                    exc.encoding, exc.object, offset + exc.start, offset + exc.end, exc.reason
                ) from None
            offset += len(block)
            on_bytes(block)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


class _Scan:
    """What the first pass learns: usable documents, their sizes, the character set, the hash."""

    def __init__(self, source: Source, want_chars: bool, progress: Progress, stage: str = "scan",
                 max_chars: float = float("inf")):
        self.documents: list[Document] = []
        self.characters: list[int] = []
        self.ends_with_newline: list[bool] = []
        self.skipped = list(source.skipped)
        self.char_counts = np.zeros(UNICODE_SIZE, dtype=np.int64) if want_chars else None
        digest = hashlib.sha256()
        total, done = source.size, 0

        def on_bytes(block: bytes) -> None:
            nonlocal done
            digest.update(block)
            done += len(block)
            progress(stage, done, total)

        single = len(source.documents) == 1
        self.cut_short = False  # --max-tokens: reading stopped once max_chars were read
        for doc in source.documents:
            if self.cut_short:
                break
            count, last, binary = 0, "", False
            try:
                for text in _pieces(doc, on_bytes):
                    if text is None:  # between two records: the separator's newlines, in char datasets
                        if self.char_counts is not None:
                            text = char_separator(last == "\n")
                            self.char_counts[10] += len(text)
                            count += len(text)
                            last = "\n"
                        continue
                    if "\x00" in text and doc.text_field is None:
                        binary = True
                        break
                    count += len(text)
                    last = text[-1]
                    if self.char_counts is not None:
                        points = codepoints(text)
                        if points.dtype == np.uint8:
                            self.char_counts[:256] += np.bincount(points, minlength=256)
                        else:
                            found, counts = np.unique(points, return_counts=True)
                            self.char_counts[found] += counts
                    if sum(self.characters) + count >= max_chars:
                        self.cut_short = True
                        break
            except UnicodeDecodeError as exc:
                problem = f"is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8 first"
            else:
                problem = "looks like a binary file (it contains NUL bytes); pass a text file" if binary else None
            if problem:
                if not single:  # a folder: leave the file out and say so
                    self.skipped.append(doc.name)
                    continue
                raise NanoGPTError(f"{doc.path} {problem}")
            if count:
                self.documents.append(doc)
                self.characters.append(count)
                self.ends_with_newline.append(last == "\n")
        self.sha256 = digest.hexdigest()
        if source.expected_sha256 and self.sha256 != source.expected_sha256 and not self.cut_short:
            raise NanoGPTError(f"the bundled data is corrupt (sha256 {self.sha256[:12]}...); reinstall nanogpt-cli")
        if not self.documents:
            raise NanoGPTError(f"{source.description} holds no text; a dataset needs text to learn from")

    @property
    def size(self) -> int:
        """Bytes of the documents kept."""
        return sum(d.size for d in self.documents)

    def char_separator(self, i: int) -> str:
        """The text between document i and the next one in a char dataset."""
        return char_separator(self.ends_with_newline[i])


def _feed_documents(writer: TokenWriter, scan: _Scan, eot: int | None, on_bytes,
                    enough: Callable[[], bool] = lambda: False) -> None:
    """Tokenize the scanned documents in order; with `enough`, stop once it says so (checked after each
    piece, the same pieces the scan read, so nothing unscanned is ever fed)."""
    for i, doc in enumerate(scan.documents):
        if i:
            writer.separator(scan.char_separator(i - 1), eot)
        last = ""
        for text in _pieces(doc, on_bytes):
            if text is None:  # the next record of a JSON Lines or Parquet file
                writer.separator(char_separator(last.endswith("\n")), eot)
                last = "\n"
            else:
                writer.feed(text)
                last = text
            if enough():
                writer.boundary()
                return
        writer.boundary()


def _train_text(scan: _Scan, val_scan: _Scan | None, val_fraction: float, progress: Progress) -> Iterator[str]:
    """The train split's text, read again chunk by chunk, for training a tokenizer on it."""
    left = sum(scan.characters) if val_scan is not None else int(sum(scan.characters) * (1.0 - val_fraction))
    done = 0

    def on_bytes(block: bytes) -> None:
        nonlocal done
        done += len(block)
        progress("train tokenizer", done, scan.size)

    for doc in scan.documents:
        for text in _pieces(doc, on_bytes):
            if text is None:
                continue
            text = text[: max(0, left)]
            left -= len(text)
            # Small pieces: the trainer splits each piece into words at once (a 4 MiB piece took 0.9 GB).
            yield from (text[i : i + TRAIN_PIECE_CHARS] for i in range(0, len(text), TRAIN_PIECE_CHARS))
            if left <= 0:
                return


def _write_dataset(folder: Path, scan: _Scan, val_scan: _Scan | None, tokenizer: Tokenizer, dtype: np.dtype,
                   val_fraction: float, progress: Progress, max_tokens: int | None = None) -> dict[str, int]:
    """The second pass: tokenize every document into folder/{train,val}.bin (with `max_tokens`, the
    first that many tokens, the last val_fraction of them val)."""
    if max_tokens is not None:
        return _write_first_tokens(folder, scan, tokenizer, dtype, val_fraction, progress, max_tokens)
    total = sum(scan.characters)
    if tokenizer.per_character:
        total += sum(len(scan.char_separator(i)) for i in range(len(scan.documents) - 1))
    split_at = float("inf") if val_scan is not None else int(total * (1.0 - val_fraction))
    writer = TokenWriter(folder, tokenizer, dtype, split_at)
    eot = tokenizer.eot_token
    size = scan.size + (val_scan.size if val_scan else 0)
    done = 0

    def on_bytes(block: bytes) -> None:
        nonlocal done
        done += len(block)
        progress("tokenize", done, size)

    try:
        _feed_documents(writer, scan, eot, on_bytes)
        if val_scan is not None:
            writer.start_val()
            _feed_documents(writer, val_scan, eot, on_bytes)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def _write_first_tokens(folder: Path, scan: _Scan, tokenizer: Tokenizer, dtype: np.dtype, val_fraction: float,
                        progress: Progress, max_tokens: int) -> dict[str, int]:
    """The first `max_tokens` tokens of the scanned text: all written to train.bin, cut to max_tokens, and
    the last val_fraction of them moved to val.bin (split by tokens: the text's length is not known)."""
    writer = TokenWriter(folder, tokenizer, np.dtype(np.uint32), float("inf"))
    size, done = scan.size, 0

    def on_bytes(block: bytes) -> None:
        nonlocal done
        done += len(block)
        progress("tokenize", min(done, size), size)

    try:
        _feed_documents(writer, scan, tokenizer.eot_token, on_bytes,
                        lambda: writer.counts["train"] >= max_tokens or writer.position >= sum(scan.characters))
        total = writer.finish()["train"]
    except BaseException:
        writer.abort()
        raise
    keep = min(total, max_tokens)
    val = max(1, int(keep * val_fraction)) if keep >= 2 else 0
    ids = np.fromfile(folder / "train.bin", dtype=np.uint32, count=keep)  # at most max_tokens, 4 bytes each
    ids[: keep - val].astype(dtype).tofile(folder / "train.bin")
    ids[keep - val :].astype(dtype).tofile(folder / "val.bin")
    return {"train": keep - val, "val": val}


def prepare_dataset(
    source: str,
    tokenizer: str = "char",
    name: str | None = None,
    val_fraction: float = 0.1,
    progress: Progress = no_progress,
    glob: str = "*",
    val_file: str | None = None,
    sha256: str | None = None,
    overwrite: bool = False,
    max_vocab: int | None = None,
    min_count: int = 1,
    text_field: str = "text",
    max_tokens: int | None = None,
    subset: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Tokenize `source` into a dataset folder and return its metadata (also written as meta.json).
    An existing dataset of the same name is replaced only with `overwrite`, and even then not when a
    run that can still be resumed was trained on it and the new tokens differ."""
    if not 0.0 < val_fraction < 1.0:
        raise NanoGPTError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if max_tokens is not None and max_tokens < 2:
        raise NanoGPTError(f"--max-tokens must be at least 2 (a train and a val token), got {max_tokens}")
    if max_tokens is not None and val_file:
        raise NanoGPTError("--max-tokens takes its val split from its own first tokens; leave out --val-file")
    if (max_vocab is not None and max_vocab < 2) or min_count < 1:
        raise NanoGPTError("--max-vocab must be at least 2 and --min-count at least 1")
    val_src = resolve_source(val_file, progress=progress, text_field=text_field) if val_file else None
    if source.startswith("hf:"):  # a dataset on the Hugging Face Hub, with its own validation split if it has one
        from nanogpt_cli.hub import hub_source

        src, hub_val = hub_source(source, subset, split or "train", text_field)
        val_src = val_src or (hub_val if max_tokens is None else None)
    elif subset is not None or split is not None:
        raise NanoGPTError("--subset and --split choose the files of a Hub dataset (hf:OWNER/NAME); leave them out")
    else:
        src = resolve_source(source, glob, sha256, progress, text_field)
    bpe = bpe_size(tokenizer)  # bpe:N: a tokenizer trained here, on the train split
    if name is None:
        name = src.default_name if tokenizer == "char" else f"{src.default_name}-{tokenizer.replace(':', '')}"
    final_dir = paths.dataset_dir(name)
    replacing = (final_dir / "meta.json").is_file()
    if replacing and not overwrite:
        raise NanoGPTError(
            f"dataset {name!r} already exists; pass --overwrite to replace it, or --name to prepare it under "
            "another name"
        )
    if tokenizer != "char" and (max_vocab is not None or min_count > 1):
        raise NanoGPTError("--max-vocab and --min-count choose a char vocabulary; leave them out for BPE tokenizers")
    tok = None if tokenizer == "char" or bpe else get_tokenizer(tokenizer)  # fail fast on a bad name

    # --max-tokens: read no more than the tokens need (a char token is a character; a BPE token is rarely
    # more than 16 characters on average)
    max_chars = float("inf") if max_tokens is None else max_tokens * (1 if tokenizer == "char" else 16)
    scan = _Scan(src, tokenizer == "char", progress, max_chars=max_chars)
    val_scan = _Scan(val_src, tokenizer == "char", progress, "scan val") if val_src else None
    coverage = None
    if bpe:
        tok = BPETokenizer.train(_train_text(scan, val_scan, val_fraction, progress), bpe)
    elif tok is None:
        counts = scan.char_counts + (val_scan.char_counts if val_scan else 0)
        tok, coverage = CharTokenizer.from_counts(counts, max_vocab, min_count)
    dtype = token_dtype(tok.vocab_size)

    # Build the dataset beside its final place, then swap it in with renames.
    tmp_dir = None
    try:
        tmp_dir = staging_dir(name)
        counts = _write_dataset(tmp_dir, scan, val_scan, tok, dtype, val_fraction, progress, max_tokens)
        for split, n in counts.items():
            if n < 2:
                raise NanoGPTError(
                    f"the {split} split would hold {n} token(s); use more text or change --val-fraction"
                )
        meta = {
            "format_version": META_VERSION,
            "name": name,
            "tokenizer": tok.spec(),
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "val_fraction": None if val_scan else val_fraction,
            "max_tokens": max_tokens,
            "source": {
                "description": src.description,
                "sha256": scan.sha256,
                "characters": sum(scan.characters),
                "bytes": scan.size,
                "documents": len(scan.documents),
                "skipped_files": scan.skipped,
                "empty_files": src.empty,
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if coverage is not None:
            meta["char_coverage"] = coverage
        if val_scan is not None:
            meta["val_source"] = {"description": val_src.description, "sha256": val_scan.sha256,
                                  "characters": sum(val_scan.characters)}
        if bpe:  # also as a file of its own, which other tools open with tokenizers.Tokenizer.from_file
            (tmp_dir / "tokenizer.json").write_text(tok.json, encoding="utf-8")
        (tmp_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        publish(tmp_dir, name, overwrite)
    except OSError as exc:
        raise NanoGPTError(f"cannot write dataset to {final_dir}: {exc.strerror or exc}") from None
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    meta["path"] = str(final_dir)
    return meta
