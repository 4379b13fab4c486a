"""`nanogpt prepare` of JSON Lines and Parquet files: one document per record (the --text-field), the
same tokens as encoding each document alone with the separator between them, and one clear line for
each mistake."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

TEXTS = ["The first story. It ends here.", "A second one,\nover two lines.", "", "Third: é and 日本.\n",
         "the last"]


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({"id": i, field: t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def write_parquet(path, texts, field="text"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(texts))), field: texts}), path, row_group_size=2)
    return path


def tokens(home, name, split="train"):
    meta = json.loads((home / "datasets" / name / "meta.json").read_text())
    return np.fromfile(home / "datasets" / name / f"{split}.bin", dtype=meta["dtype"]).tolist()


def test_jsonl_records_are_documents_with_gpt2s_end_of_text_between(cli, home, tmp_path, gpt2_cache):
    from nanogpt_cli.tokenizer import get_tokenizer

    write_jsonl(tmp_path / "stories.jsonl", TEXTS, field="story")
    write_jsonl(tmp_path / "val.jsonl", ["held out text"], field="story")
    result = cli("prepare", tmp_path / "stories.jsonl", "--tokenizer", "gpt2", "--text-field", "story",
                 "--val-file", tmp_path / "val.jsonl")
    assert result.exit_code == 0, result.output
    encoding = get_tokenizer("gpt2")
    expected = []
    for text in [t for t in TEXTS if t]:  # the empty record is left out
        expected += ([encoding.eot_token] if expected else []) + encoding.encode(text)
    assert tokens(home, "stories-gpt2") == expected
    assert tokens(home, "stories-gpt2", "val") == encoding.encode("held out text")
    meta = json.loads((home / "datasets" / "stories-gpt2" / "meta.json").read_text())
    assert meta["source"]["characters"] == sum(map(len, TEXTS))


def test_parquet_gives_the_tokens_jsonl_gives_and_char_records_get_a_blank_line(cli, home, tmp_path):
    write_jsonl(tmp_path / "s.jsonl", TEXTS)
    write_parquet(tmp_path / "s.parquet", TEXTS)
    write_jsonl(tmp_path / "v.jsonl", ["the first story"])
    for file, name in (("s.jsonl", "j"), ("s.parquet", "p")):
        result = cli("prepare", tmp_path / file, "--name", name, "--val-file", tmp_path / "v.jsonl")
        assert result.exit_code == 0, result.output
    assert tokens(home, "j") == tokens(home, "p")
    from nanogpt_cli.dataset import load_dataset

    meta = json.loads((home / "datasets" / "j" / "meta.json").read_text())
    chars = meta["tokenizer"]["chars"]
    assert "".join(chars[i] for i in tokens(home, "j")) == \
        "The first story. It ends here.\n\nA second one,\nover two lines.\n\nThird: é and 日本.\n\nthe last"
    assert load_dataset("p").meta["tokenizer"] == meta["tokenizer"]


def test_a_folder_mixes_text_files_and_records(cli, home, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("plain text file\n" * 50)
    write_jsonl(folder / "b.jsonl", TEXTS * 10)
    result = cli("prepare", folder, "--name", "mixed")
    assert result.exit_code == 0, result.output
    meta = json.loads((home / "datasets" / "mixed" / "meta.json").read_text())
    assert meta["source"]["documents"] == 2  # files; the records of b.jsonl are documents inside it
    assert meta["train_tokens"] + meta["val_tokens"] > len("plain text file\n") * 50 + sum(map(len, TEXTS)) * 10


def test_records_mistakes_are_one_line(cli, home, tmp_path, monkeypatch):
    write_jsonl(tmp_path / "s.jsonl", TEXTS, field="body")
    result = cli("prepare", tmp_path / "s.jsonl")
    assert result.exit_code == 1
    assert f"{tmp_path / 's.jsonl'}: line 1 has no text field 'text' (its text fields: body); pass --text-field NAME" \
        in result.stderr
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    result = cli("prepare", tmp_path / "bad.jsonl")
    assert result.exit_code == 1 and "bad.jsonl: line 2 is not JSON" in result.stderr
    write_parquet(tmp_path / "s.parquet", TEXTS, field="body")
    result = cli("prepare", tmp_path / "s.parquet")
    assert result.exit_code == 1
    assert "s.parquet has no text column 'text' (its text columns: body); pass --text-field NAME" in result.stderr
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    result = cli("prepare", tmp_path / "broken.parquet")
    assert result.exit_code == 1 and "broken.parquet is not a readable Parquet file" in result.stderr
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # the [parquet] extra not installed
    result = cli("prepare", tmp_path / "s.parquet", "--text-field", "body")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: reading Parquet files needs pyarrow: pip install "nanogpt-cli[parquet]"'
    for bad in ("s", "bad", "broken"):
        assert not (home / "datasets" / bad).exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_records_train_and_sample(cli, home, tmp_path, suffix, tiny):
    texts = ["to be or not to be, that is the question."] * 200
    (write_jsonl if suffix == ".jsonl" else write_parquet)(tmp_path / f"q{suffix}", texts)
    assert cli("prepare", tmp_path / f"q{suffix}", "--name", "q").exit_code == 0
    result = cli("train", "--dataset", "q", "--run", "q", *tiny)
    assert result.exit_code == 0, result.output


def test_max_tokens_prepares_the_first_tokens_and_reads_no_further(cli, home, tmp_path, gpt2_cache):
    from nanogpt_cli.tokenizer import get_tokenizer

    texts = [f"story number {i}: the quick brown fox jumps over the lazy dog." for i in range(5000)]
    write_jsonl(tmp_path / "big.jsonl", texts)
    result = cli("prepare", tmp_path / "big.jsonl", "--tokenizer", "gpt2", "--max-tokens", "1000", "--name", "slice")
    assert result.exit_code == 0, result.output
    encoding = get_tokenizer("gpt2")
    expected = []
    for text in texts[:200]:
        expected += ([encoding.eot_token] if expected else []) + encoding.encode(text)
    train, val = tokens(home, "slice"), tokens(home, "slice", "val")
    assert (len(train), len(val)) == (900, 100) and train + val == expected[:1000]
    meta = json.loads((home / "datasets" / "slice" / "meta.json").read_text())
    assert meta["max_tokens"] == 1000 and meta["source"]["characters"] < 16 * 1000 + 100  # the rest was not read

    (tmp_path / "c.txt").write_text("abcdefghij" * 100 + "XYZ")
    assert cli("prepare", tmp_path / "c.txt", "--max-tokens", "500", "--name", "c").exit_code == 0
    meta = json.loads((home / "datasets" / "c" / "meta.json").read_text())
    assert (meta["train_tokens"], meta["val_tokens"]) == (450, 50)
    assert "".join(meta["tokenizer"]["chars"][i] for i in tokens(home, "c") + tokens(home, "c", "val")) == \
        ("abcdefghij" * 50)
    assert cli("train", "--dataset", "c", "--run", "c", "--preset", "nanogpt-cpu", "--n-layer", "1", "--n-embd", "16",
               "--n-head", "2", "--block-size", "16", "--max-iters", "5", "--eval-interval", "5", "--eval-iters", "1",
               "--sample-tokens", "0", "-q").exit_code == 0

    small = cli("prepare", tmp_path / "c.txt", "--max-tokens", "100000", "--name", "all")  # more than there is
    assert small.exit_code == 0
    meta = json.loads((home / "datasets" / "all" / "meta.json").read_text())
    assert meta["train_tokens"] + meta["val_tokens"] == 1003
    for args, message in ((["--max-tokens", "1"], "--max-tokens must be at least 2"),
                          (["--max-tokens", "10", "--val-file", tmp_path / "c.txt"], "leave out --val-file")):
        result = cli("prepare", tmp_path / "c.txt", "--name", "x", *args)
        assert result.exit_code == 1 and message in result.stderr
