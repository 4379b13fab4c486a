"""The second pass of `nanogpt prepare`: text pieces in, token files out, tokenized on every core.

`TokenWriter` takes a split's text piece by piece, hands BPE pieces to a thread pool (tiktoken and
tokenizers release the GIL) while the next ones are read, and appends each piece's ids to the split's
.bin file in order. `safe_cut` finds where BPE text may be cut without changing its tokens.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nanogpt_cli.tokenizer import Tokenizer

PIECE_CHARS = 1 << 17  # BPE text handed to one encoder thread at a time (about)


def safe_cut(text: str) -> int:
    """The last index where the text may be cut without changing its BPE tokens: a single space with a
    non-space character on both sides (tiktoken's pre-tokenizer always starts a piece there). 0 if none."""
    i = len(text) - 1
    while (i := text.rfind(" ", 1, i)) > 0:
        if i + 1 < len(text) and not text[i - 1].isspace() and not text[i + 1].isspace():
            return i
    return 0


class TokenWriter:
    """Tokenizes text fed to it in order and appends the ids to train.bin, then (from the split point
    on) to val.bin. BPE pieces are encoded on all cores while the next ones are read; results are
    written in order, and only a few pieces are in flight at a time, so memory stays flat."""

    def __init__(self, folder: Path, tokenizer: Tokenizer, dtype: np.dtype, split_at: float):
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.split_at = split_at  # character position where val starts
        self.position = 0
        self.split = "train"
        self.files: dict[str, BinaryIO] = {s: open(folder / f"{s}.bin", "wb") for s in ("train", "val")}
        self.counts = {"train": 0, "val": 0}
        self.is_char = tokenizer.per_character  # char text is encoded in place; BPE on a thread pool
        # BPE: closed segments (text encoded alone) and separator tokens, sent as one task once they hold
        # about PIECE_CHARS: small documents (JSON Lines records) would cost one task and one write each
        self.segments: list[str | int] = []
        self.segment_chars = 0
        if not self.is_char:
            self.buffer = ""  # the open segment: text not yet cut off for encoding
            workers = os.cpu_count() or 1
            self.pool = ThreadPoolExecutor(max_workers=workers)
            self.pending: deque[tuple[str, Future | np.ndarray]] = deque()  # (split, ids to come), in order
            self.max_pending = 2 * workers + 2

    def _write(self, split: str, ids: np.ndarray) -> None:
        ids.astype(self.dtype, copy=False).tofile(self.files[split])
        self.counts[split] += len(ids)

    def feed(self, text: str) -> None:
        if self.split == "train" and self.position + len(text) >= self.split_at:
            cut = int(self.split_at - self.position)
            self._feed(text[:cut])
            self.start_val()
            self.position += cut
            text = text[cut:]
        self._feed(text)
        self.position += len(text)

    def _feed(self, text: str) -> None:
        if not text:
            return
        if self.is_char:
            self._write(self.split, self.tokenizer.encode_array(text))
            return
        self.buffer += text
        while len(self.buffer) >= PIECE_CHARS:
            # a piece of about PIECE_CHARS (a trained BPE's encoder holds ~40x its text while encoding)
            cut = safe_cut(self.buffer[:PIECE_CHARS]) or safe_cut(self.buffer)
            if cut == 0:
                return  # no safe point yet: keep reading
            self._send_segments()  # what came before goes first
            self._queue(self.pool.submit(self.tokenizer.encode_array, self.buffer[:cut]))
            self.buffer = self.buffer[cut:]

    def start_val(self) -> None:
        """What follows goes to val.bin (train and val are encoded separately, as nanoGPT does)."""
        self.boundary()
        self._send_segments()
        self.split = "val"

    def boundary(self) -> None:
        """A point the tokenizer must not merge across (a document end, the train/val split)."""
        if not self.is_char and self.buffer:
            self.segments.append(self.buffer)
            self.segment_chars += len(self.buffer)
            self.buffer = ""
            if self.segment_chars >= PIECE_CHARS:
                self._send_segments()

    def separator(self, text: str, token: int | None) -> None:
        """Between documents: a token for BPE, text for char."""
        if self.is_char:
            self.feed(text)
        else:
            self.boundary()
            self.segments.append(token)

    def _send_segments(self) -> None:
        if self.segments:
            self._queue(self.pool.submit(self._encode_segments, self.segments))
            self.segments, self.segment_chars = [], 0

    def _encode_segments(self, segments: list[str | int]) -> np.ndarray:
        """Each text encoded alone, the separator tokens between them, as one array (in a worker thread)."""
        return np.concatenate([self.tokenizer.encode_array(s) if isinstance(s, str) else np.array([s], np.uint32)
                               for s in segments])

    def _queue(self, ids: Future | np.ndarray) -> None:
        self.pending.append((self.split, ids))
        while len(self.pending) > self.max_pending:
            self._write_oldest()

    def _write_oldest(self) -> None:
        split, ids = self.pending.popleft()
        self._write(split, ids.result() if isinstance(ids, Future) else ids)

    def finish(self) -> dict[str, int]:
        if not self.is_char:
            self.boundary()
            self._send_segments()
            while self.pending:
                self._write_oldest()
            self.pool.shutdown()
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        return self.counts

    def abort(self) -> None:
        if not self.is_char:
            self.pool.shutdown(cancel_futures=True)
        for f in self.files.values():
            f.close()
