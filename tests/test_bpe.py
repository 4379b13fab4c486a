"""`--tokenizer bpe:N`: a byte-level BPE trained on the dataset's train split (Hugging Face tokenizers),
stored with the dataset and in checkpoints; exact round trips, the same tokenizer twice, streaming UTF-8,
and train / sample / eval / info on it."""

from __future__ import annotations

import json

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.dataset import load_dataset
from nanogpt_cli.generate import StreamDecoder
from nanogpt_cli.tokenizer import BPETokenizer

TEXT = ("Über den Wolken muss die Freiheit wohl grenzenlos sein. 🌍 naïve café — "
        "the quick brown fox jumps over the lazy dog; <|endoftext|> is just text here.\n")


def _write(tmp_path, text: str, name: str = "poly.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bpe_dataset_round_trips_and_repeats(cli, tmp_path):
    text = TEXT * 60
    source = _write(tmp_path, text)
    result = cli("prepare", source, "--tokenizer", "bpe:320")
    assert result.exit_code == 0, result.output
    assert "bpe:320 tokenizer, vocab 320" in result.stdout
    folder = paths.dataset_dir("poly-bpe320")
    data = load_dataset("poly-bpe320")
    assert data.meta["tokenizer"]["kind"] == "bpe" and data.vocab_size == 320
    assert (folder / "tokenizer.json").is_file()
    split = int(len(text) * 0.9)  # the first 90% of the characters is train, as for every tokenizer
    assert data.tokenizer.decode(data.tokens("train").tolist()) == text[:split]
    assert data.tokenizer.decode(data.tokens("val").tolist()) == text[split:]
    assert len(data.tokens("train")) < 0.6 * split  # 63 merges learned: far fewer tokens than characters

    # the same input gives the same tokenizer and the same tokens
    assert cli("prepare", source, "--tokenizer", "bpe:320", "--name", "again").exit_code == 0
    again = paths.dataset_dir("again")
    assert (again / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert (again / "train.bin").read_bytes() == (folder / "train.bin").read_bytes()


def test_the_tokenizer_is_trained_on_train_text_only():
    train = "aaaa bbbb " * 200
    tok = BPETokenizer.train(iter([train]), 270)
    assert len(tok.encode("aaaa bbbb")) <= 3  # its own words are merged
    assert len(tok.encode("zzzz")) == 4  # never seen: one token per byte, still encodable
    assert tok.decode(tok.encode("héllo wörld ✓")) == "héllo wörld ✓"


def test_streamed_decoding_never_splits_a_character():
    tok = BPETokenizer.train(iter([TEXT * 20]), 300)
    ids = tok.encode("🌍 naïve café")
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == "🌍 naïve café" and "\ufffd" not in "".join(pieces)


def test_train_sample_eval_and_info_on_a_bpe_dataset(cli, tmp_path, tiny):
    source = _write(tmp_path, TEXT * 120)
    assert cli("prepare", source, "--tokenizer", "bpe:300", "--name", "poly").exit_code == 0
    result = cli("train", "--dataset", "poly", "--run", "bpe-run", *tiny)
    assert result.exit_code == 0, result.output
    sample = cli("sample", "--run", "bpe-run", "--prompt", "Über", "--max-new-tokens", "30", "--seed", "1", "--json")
    assert sample.exit_code == 0, sample.output
    assert json.loads(sample.stdout)["tokens"] == 30
    evaluation = json.loads(cli("eval", "--run", "bpe-run", "--full", "--json").stdout)
    assert evaluation["bits_per_char"] < evaluation["bits_per_token"]  # more than one character per token
    info = cli("info", "poly")
    assert info.exit_code == 0 and "tokenizer bpe:300" in info.stdout
    chars_per_token = float(info.stdout.split(" characters per token on val")[0].rsplit(" ", 1)[1])
    data = load_dataset("poly")
    val_text = data.tokenizer.decode(data.tokens("val").tolist())
    assert abs(chars_per_token - len(val_text) / len(data.tokens("val"))) < 0.01
    assert chars_per_token > 1.5
    assert cli("prepare", source, "--name", "poly-char").exit_code == 0
    assert "1.00 characters per token on val" in cli("info", "poly-char").stdout  # one per token, for char
    # Exported, the model names its own end-of-text id (a trained BPE's, not GPT-2's 50256).
    assert cli("export", "bpe-run", tmp_path / "hf").exit_code == 0
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["eos_token_id"] == hf_config["bos_token_id"] == data.tokenizer.eot_token < 300


def test_bpe_sizes_are_checked(cli, small_text):
    for bad in ("bpe:10", "bpe:lots", "bpe:"):
        result = cli("prepare", small_text, "--tokenizer", bad)
        assert result.exit_code == 1 and "give the vocabulary size as bpe:N with N from 257" in result.stderr, bad
    assert not paths.datasets_dir().exists() or not any(paths.datasets_dir().iterdir())


def test_bpe_on_a_folder_streams_every_document(cli, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(5):
        _write(folder, f"document {i}: " + TEXT * 10, f"{i}.txt")
    result = cli("prepare", folder, "--tokenizer", "bpe:300", "--name", "folder")
    assert result.exit_code == 0, result.output
    data = load_dataset("folder")
    tokens = np.concatenate([data.tokens("train"), data.tokens("val")])
    assert (tokens == data.tokenizer.eot_token).sum() == 4  # documents are separated by the end-of-text token
