"""Text <-> token ids.

Three tokenizers: `CharTokenizer` (one id per character, the lecture's choice), `TiktokenTokenizer`
(OpenAI's BPE encodings through tiktoken; "gpt2" is served by r50k_base, which has the same ranks)
and `BPETokenizer` (a byte-level BPE of the size you choose, trained on your dataset's train split
with Hugging Face `tokenizers`). Each describes itself as a JSON-able "spec" stored in meta.json and in
checkpoints (a trained BPE's spec holds the whole tokenizer), and `tokenizer_from_spec` rebuilds it.
Nothing here touches the network except tiktoken's own first download of a rank file (to our cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.errors import NanoGPTError

# Our names for tiktoken encodings; "gpt2" reads r50k_base's rank file (same ranks and regex),
# because tiktoken's own "gpt2" needs two other files and cannot work offline from the cache.
TIKTOKEN_ALIASES = {"gpt2": "r50k_base"}
_TIKTOKEN_URLS = {
    name: f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    for name in ("r50k_base", "p50k_base", "cl100k_base", "o200k_base")
}


class Tokenizer(Protocol):
    """What every tokenizer answers; callers never need to ask which kind they hold."""

    vocab_size: int
    name: str
    per_character: bool  # one token per character (the vocabulary is the training text's characters)
    eot_token: int | None  # the end-of-text token that separates documents, if the vocabulary has one

    def encode(self, text: str) -> list[int]: ...
    def encode_array(self, text: str) -> np.ndarray: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def default_prompt(self) -> list[int]: ...
    def spec(self) -> dict[str, Any]: ...


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of `text` as an array (one byte each for ASCII text, the common case)."""
    if text.isascii():  # O(1) in CPython
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


UNKNOWN = "\ufffd"  # how a char vocabulary's unknown token decodes (the Unicode replacement character)


class CharTokenizer:
    """Each distinct character of the training text is one token; ids follow sorted order. A limited
    vocabulary (`unknown` set) adds one last id that every other character maps to."""

    name = "char"
    per_character = True
    eot_token = None

    def __init__(self, chars: str, unknown: str | None = None):
        self.chars = chars
        self.unknown = unknown
        self.unknown_id = len(chars) if unknown is not None else None
        self.vocab_size = len(chars) + (unknown is not None)
        self._stoi = {ch: i for i, ch in enumerate(chars)}
        self._lookup: np.ndarray | None = None  # code point -> id, built on first use

    @classmethod
    def from_counts(cls, counts: np.ndarray, max_vocab: int | None = None, min_count: int = 1
                    ) -> tuple[CharTokenizer, dict[str, Any] | None]:
        """The vocabulary of a text from its character counts (indexed by code point): every character,
        or with `max_vocab` / `min_count` the most frequent ones plus an unknown token for the rest.
        Also returns what the limit cost (None without one)."""
        present = np.flatnonzero(counts)
        kept = present[counts[present] >= min_count]
        if max_vocab is not None and len(kept) > max_vocab - 1 + (len(kept) == len(present)):
            by_count = kept[np.argsort(-counts[kept], kind="stable")]
            kept = np.sort(by_count[: max_vocab - 1])  # one id is the unknown token
        chars = "".join(chr(c) for c in kept)
        if len(kept) == len(present):
            return cls(chars), None if max_vocab is None and min_count == 1 else _coverage(counts, present, kept)
        return cls(chars, UNKNOWN), _coverage(counts, present, kept)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def unknown_characters(self, text: str) -> list[str]:
        return sorted(set(text) - self._stoi.keys())

    def encode(self, text: str) -> list[int]:
        if self.unknown_id is not None:  # a limited vocabulary: rare characters become the unknown token
            return [self._stoi.get(ch, self.unknown_id) for ch in text]
        missing = self.unknown_characters(text)
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise NanoGPTError(
                f"text has {len(missing)} character(s) this model's vocabulary lacks: {shown}; "
                "use only characters from the training text"
            )
        stoi = self._stoi
        return [stoi[ch] for ch in text]

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` for large texts whose characters are all in the vocabulary (prepare's case),
        as an array, without checking: a character outside the vocabulary becomes id 0."""
        if self._lookup is None:
            self._lookup = np.full(0x110000, self.unknown_id or 0, dtype=np.uint32)
            self._lookup[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.uint32)
        return self._lookup[codepoints(text)]

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars + (self.unknown or "")
        return "".join(chars[i] for i in ids)

    def default_prompt(self) -> list[int]:
        """A newline, as nanoGPT starts char samples (or the first character if there is none)."""
        return [self._stoi.get("\n", 0)]

    def spec(self) -> dict[str, Any]:
        spec = {"kind": "char", "chars": self.chars}
        if self.unknown is not None:
            spec["unknown"] = self.unknown
        return spec


def _coverage(counts: np.ndarray, present: np.ndarray, kept: np.ndarray) -> dict[str, Any]:
    """What a limited char vocabulary keeps: distinct characters, and how much text maps to unknown."""
    total = int(counts[present].sum())
    mapped = total - int(counts[kept].sum())
    return {"distinct_characters": len(present), "kept_characters": len(kept),
            "unknown_characters": len(present) - len(kept), "mapped_characters": mapped,
            "mapped_share": mapped / total if total else 0.0}


def tiktoken_rank_file(encoding: str) -> str | None:
    """The cache file tiktoken reads for `encoding` (named by the sha1 of its download URL)."""
    url = _TIKTOKEN_URLS.get(TIKTOKEN_ALIASES.get(encoding, encoding))
    if url is None:
        return None
    return str(paths.tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest())


@contextlib.contextmanager
def _tiktoken_cache_env():
    """Point tiktoken at our cache dir while it loads, unless the user chose one themselves."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["TIKTOKEN_CACHE_DIR"] = str(paths.tiktoken_cache_dir())
    try:
        yield
    finally:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)


class TiktokenTokenizer:
    """A BPE encoding from tiktoken. Text is encoded as ordinary text: special tokens such as
    <|endoftext|> inside it are not treated as special."""

    per_character = False

    def __init__(self, name: str):
        import tiktoken

        self.name = name
        self.encoding_name = TIKTOKEN_ALIASES.get(name, name)
        if self.encoding_name not in tiktoken.list_encoding_names():
            raise NanoGPTError(
                f"unknown tokenizer {name!r}: use 'char', 'gpt2', 'bpe:N' (a BPE of N tokens trained on your "
                f"data) or a tiktoken encoding ({', '.join(sorted(tiktoken.list_encoding_names()))})"
            )
        try:
            with _tiktoken_cache_env():
                self._enc = tiktoken.get_encoding(self.encoding_name)
        except Exception as exc:  # tiktoken raises requests/urllib errors or ValueError offline
            where = tiktoken_rank_file(name)
            hint = f"put the rank file {self.encoding_name}.tiktoken at {where}" if where else "connect to the network"
            raise NanoGPTError(
                f"cannot load the {name} tokenizer ({type(exc).__name__}): it is downloaded once, "
                f"and this machine looks offline; {hint}"
            ) from exc
        self.vocab_size = self._enc.n_vocab
        self.eot_token = self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_array(self, text: str):
        """Like `encode`, as a numpy uint32 array (no Python list in between: much faster for big
        texts). With no special tokens allowed or disallowed, special-token text is ordinary text."""
        return self._enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._enc.decode_bytes(list(ids))

    def default_prompt(self) -> list[int]:
        return [self.eot_token]

    def spec(self) -> dict[str, Any]:
        return {"kind": "tiktoken", "name": self.name, "encoding": self.encoding_name}


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE writes each byte as one printable character (GPT-2's convention, which Hugging
    Face's ByteLevel follows): printable Latin-1 bytes stand for themselves, the other bytes take the
    characters from U+0100 on, in order. This maps those characters back to their bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


EOT_TEXT = "<|endoftext|>"


class BPETokenizer:
    """A byte-level BPE trained on a dataset's own text (Hugging Face `tokenizers`): like GPT-2's
    tokenizer, with a vocabulary of the size asked for, and the end-of-text token as its one special
    token. Every byte is in the vocabulary, so any text can be encoded. As with tiktoken, text that
    looks like a special token is encoded as ordinary text."""

    per_character = False

    def __init__(self, json_text: str):
        from tokenizers import Tokenizer as HFTokenizer

        self.json = json_text
        self._tok = HFTokenizer.from_str(json_text)
        self._tok.encode_special_tokens = True  # "<|endoftext|>" typed in a text is text
        self.vocab_size = self._tok.get_vocab_size()
        self.name = f"bpe:{self.vocab_size}"
        self.eot_token = self._tok.token_to_id(EOT_TEXT)
        self._bytes = _byte_alphabet()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn merges from `texts` (an iterator: the text is streamed) until `vocab_size` tokens."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's word splitting
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_TEXT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok.to_str())

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.uint32)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        out = bytearray()
        for i in ids:
            piece = self._tok.id_to_token(int(i))
            out += EOT_TEXT.encode() if i == self.eot_token else bytes(self._bytes[c] for c in piece)
        return bytes(out)

    def default_prompt(self) -> list[int]:
        return [self.eot_token]

    def spec(self) -> dict[str, Any]:
        return {"kind": "bpe", "name": self.name, "json": self.json}


def bpe_size(name: str) -> int | None:
    """N for a tokenizer name `bpe:N` (None for other names)."""
    if not name.startswith("bpe:"):
        return None
    try:
        size = int(name[4:])
    except ValueError:
        size = 0
    if not 257 <= size <= 1_000_000:
        raise NanoGPTError(f"--tokenizer {name}: give the vocabulary size as bpe:N with N from 257 (the 256 bytes and "
                           "the end-of-text token) upwards, e.g. bpe:4096")
    return size


def get_tokenizer(name: str, text: str | None = None) -> Tokenizer:
    """A tokenizer by its user-facing name; char tokenizers are built from `text`."""
    if name == "char":
        if text is None:
            raise ValueError("a char tokenizer is built from text")
        return CharTokenizer.from_text(text)
    return TiktokenTokenizer(name)


def spec_name(spec: dict[str, Any]) -> str:
    """The user-facing name of the tokenizer a spec describes ('char', 'gpt2', 'cl100k_base', ...)."""
    return "char" if spec.get("kind") == "char" else spec.get("name", "?")


def same_tokenizer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two tokenizer specs give the same ids ('gpt2' and 'r50k_base' do)."""
    if a.get("kind") == b.get("kind") == "tiktoken":
        return a.get("encoding") == b.get("encoding")
    return a == b


def spec_problem(spec: Any) -> str | None:
    """What makes a stored tokenizer spec (meta.json's, a checkpoint's) unusable, or None. The spec's
    shape is checked here; a BPE's JSON is checked when it is loaded."""
    if not isinstance(spec, dict):
        return "the tokenizer spec is not an object"
    kind, chars, unknown = spec.get("kind"), spec.get("chars"), spec.get("unknown")
    problems = {
        "char": (not isinstance(chars, str) or not chars or len(set(chars)) != len(chars)
                 or (unknown is not None and (not isinstance(unknown, str) or len(unknown) != 1)),
                 "the char tokenizer's characters are missing, repeated, or its unknown token is not one character"),
        "tiktoken": (not isinstance(spec.get("name"), str) or not spec["name"], "the tiktoken tokenizer has no name"),
        "bpe": (not isinstance(spec.get("json"), str), "the BPE tokenizer has no JSON"),
    }
    if kind not in problems:
        return f"unknown tokenizer kind {str(kind)[:40]!r} (written by a newer nanogpt-cli?)"
    failed, problem = problems[kind]
    return problem if failed else None


def tokenizer_from_spec(spec: dict[str, Any]) -> Tokenizer:
    """The tokenizer a spec describes, or NanoGPTError saying why it cannot be built."""
    problem = spec_problem(spec)
    if problem:
        raise NanoGPTError(f"{problem}; prepare the dataset again (or use another checkpoint)")
    kind = spec["kind"]
    if kind == "char":
        return CharTokenizer(spec["chars"], spec.get("unknown"))
    if kind == "tiktoken":
        return TiktokenTokenizer(spec["name"])
    try:
        return BPETokenizer(spec["json"])
    except Exception:  # the tokenizers library raises its own exception types for malformed JSON
        raise NanoGPTError("the BPE tokenizer's JSON is damaged; prepare the dataset again (or use another "
                           "checkpoint)") from None

