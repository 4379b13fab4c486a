"""The tokenizer of an exported run, in the forms other tools read: tokenizer.json for transformers'
AutoTokenizer, and the token list, types and merges that a GGUF file carries for llama.cpp. Each maps
text to exactly our ids.

- GPT-2's BPE (tiktoken's ranks) and a BPE of your own (`bpe:N`, already a `tokenizers` JSON) are
  byte-level BPEs with GPT-2's word splitting. tiktoken stores ranks, not merges: the merge that makes
  a token is found by running BPE on its bytes with the ranks below its own, which leaves two parts.
- A char vocabulary becomes a word-level tokenizer over single characters (transformers; a character
  outside it is the unknown token where the vocabulary has one, an error otherwise, as with us) and,
  for GGUF, a byte-level BPE whose only merges join the bytes of each multi-byte character.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.tokenizer import EOT_TEXT, _byte_alphabet, spec_name, tokenizer_from_spec

NORMAL, UNKNOWN, CONTROL, UNUSED = 1, 2, 3, 5  # llama.cpp's token types


def _byte_chars() -> dict[int, str]:
    """Byte -> the printable character byte-level BPE writes it as."""
    return {b: c for c, b in _byte_alphabet().items()}


def _as_chars(data: bytes, table: dict[int, str]) -> str:
    return "".join(table[b] for b in data)


def _tiktoken_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge behind every multi-byte token, in rank order."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
            best, i = min(pairs)
            if best >= rank:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def _tiktoken_json(spec: dict[str, Any]) -> str | None:
    """tokenizer.json for a tiktoken encoding with GPT-2's word splitting (r50k_base); None for others."""
    if spec["encoding"] not in ("r50k_base", "gpt2"):
        return None
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    encoding = tokenizer_from_spec(spec)._enc
    ranks: dict[bytes, int] = encoding._mergeable_ranks
    table = _byte_chars()
    vocab = {_as_chars(token, table): rank for token, rank in ranks.items()}
    merges = [(_as_chars(a, table), _as_chars(b, table)) for a, b in _tiktoken_merges(ranks)]
    vocab |= encoding._special_tokens
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(text, special=True) for text in encoding._special_tokens])
    return tok.to_str()


def _char_json(chars: str, unknown: str | None) -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: i for i, ch in enumerate(chars)}
    if unknown is not None:
        vocab[unknown] = len(chars)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unknown if unknown is not None else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    tok.decoder = decoders.Fuse()  # joined with nothing between them
    return tok.to_str()


def _bpe_json(spec: dict[str, Any]) -> str | None:
    if spec["kind"] == "bpe":
        return spec["json"]
    if spec["kind"] == "tiktoken":
        return _tiktoken_json(spec)
    return None


def hf_tokenizer_files(spec: dict[str, Any], block_size: int) -> dict[str, str]:
    """tokenizer.json and tokenizer_config.json (empty for a tiktoken encoding other than GPT-2's)."""
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
                              "clean_up_tokenization_spaces": False}
    if spec["kind"] == "char":
        text = _char_json(spec["chars"], spec.get("unknown"))
        if spec.get("unknown") is not None:
            config["unk_token"] = spec["unknown"]
    else:
        text = _bpe_json(spec)
        if text is None:
            return {}
        config |= {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "add_prefix_space": False}
    return {"tokenizer.json": text, "tokenizer_config.json": json.dumps(config, indent=2) + "\n"}


@dataclass
class GGUFVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]  # "left right"
    eot: int | None  # end of text: llama.cpp's bos and eos
    unknown: int | None


def gguf_vocab(spec: dict[str, Any]) -> GGUFVocab:
    """What llama.cpp's byte-level BPE ("gpt2" tokenizer model) needs to give our ids."""
    if spec["kind"] == "char":
        table = _byte_chars()
        chars, unknown = spec["chars"], spec.get("unknown")
        everything = chars + (unknown or "")
        tokens = [_as_chars(ch.encode(), table) for ch in everything]
        merges = []  # join the bytes of each multi-byte character, left to right
        for ch in everything:
            data = ch.encode()
            for end in range(2, len(data) + 1):
                merge = f"{_as_chars(data[: end - 1], table)} {_as_chars(data[end - 1 : end], table)}"
                if merge not in merges:
                    merges.append(merge)
        types = [NORMAL] * len(chars) + ([UNKNOWN] if unknown is not None else [])
        return GGUFVocab(tokens, types, merges, None, len(chars) if unknown is not None else None)
    text = _bpe_json(spec)
    if text is None:
        raise NanoGPTError(f"GGUF export knows the char, gpt2 and bpe:N tokenizers, not {spec_name(spec)}; "
                           "export with --format hf instead")
    data = json.loads(text)
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    special = {added["content"]: added["id"] for added in data.get("added_tokens", [])}
    vocab |= special
    tokens = [""] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        tokens[i] = token
    types = [CONTROL if token in special else NORMAL for token in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return GGUFVocab(tokens, types, merges, special.get(EOT_TEXT), None)
