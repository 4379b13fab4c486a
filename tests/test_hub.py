"""`nanogpt prepare hf:OWNER/NAME`: a dataset on the Hugging Face Hub, here a local stand-in (tests/hubstandin.py)
reached through HF_ENDPOINT, with its cache in HF_HOME: the card's subsets and splits, the corpus's own
validation split, files fetched only as far as --max-tokens reads, and the mistakes."""

from __future__ import annotations

import io
import json
import sys
import time

import numpy as np
import pytest

from hubstandin import StandInHub

CARD = b"""---
license: mit
configs:
- config_name: small
  default: true
  data_files:
  - split: train
    path: small/train-*.jsonl
  - split: validation
    path: small/validation-*.jsonl
- config_name: big
  data_files: big/*.parquet
---
# A dataset
"""


def jsonl(texts: list[str]) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


def parquet(texts: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), out)
    return out.getvalue()


TRAIN = [f"story {i}: the quick brown fox jumps over the lazy dog." for i in range(40)]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    hub = StandInHub({
        "me/stories": {"README.md": CARD, "small/train-00000.jsonl": jsonl(TRAIN[:20]),
                       "small/train-00001.jsonl": jsonl(TRAIN[20:]), "small/validation-00000.jsonl": jsonl(TRAIN[:3]),
                       "big/part-0.parquet": parquet(TRAIN * 3)},
        "me/plain": {"data/train-0.parquet": parquet(TRAIN), "data/test-0.parquet": parquet(TRAIN[:5])},
        "me/secret": {"train.jsonl": jsonl(TRAIN)},
    }, gated=("me/secret",))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield hub
    hub.close()


def chars(home, name: str, split: str) -> str:
    meta = json.loads((home / "datasets" / name / "meta.json").read_text())
    ids = np.fromfile(home / "datasets" / name / f"{split}.bin", dtype=meta["dtype"])
    return "".join(meta["tokenizer"]["chars"][i] for i in ids)


def test_a_hub_dataset_with_a_card_uses_its_subset_and_its_own_validation_split(cli, home, hub, tmp_path):
    result = cli("prepare", "hf:me/stories")
    assert result.exit_code == 0, result.output
    assert chars(home, "stories", "train") == "\n\n".join(TRAIN)  # both train files, in order, a record each
    assert chars(home, "stories", "val") == "\n\n".join(TRAIN[:3])  # the corpus's validation split
    meta = json.loads((home / "datasets" / "stories" / "meta.json").read_text())
    assert meta["source"]["description"] == "hf:me/stories (train)" and meta["val_source"]["description"] == \
        "hf:me/stories (validation)"
    assert list((tmp_path / "hf-home" / "hub").glob("datasets--me--stories/snapshots/*/small/train-00001.jsonl"))

    result = cli("prepare", "hf:me/stories", "--subset", "big", "--name", "big")
    assert result.exit_code == 0, result.output
    meta = json.loads((home / "datasets" / "big" / "meta.json").read_text())
    assert meta["val_source"] is None if "val_source" in meta else True
    assert chars(home, "big", "train") + chars(home, "big", "val") == "\n\n".join(TRAIN * 3)


def test_without_a_card_the_paths_name_the_splits(cli, home, hub):
    result = cli("prepare", "hf:me/plain", "--name", "plain")
    assert result.exit_code == 0, result.output
    text = chars(home, "plain", "train") + chars(home, "plain", "val")
    assert text == "\n\n".join(TRAIN)  # train-0 only: test-0 is another split, and not validation
    result = cli("prepare", "hf:me/plain", "--split", "test", "--name", "plain-test")
    assert result.exit_code == 0
    assert chars(home, "plain-test", "train") + chars(home, "plain-test", "val") == "\n\n".join(TRAIN[:5])


def test_max_tokens_fetches_only_the_files_it_reads(cli, home, hub):
    result = cli("prepare", "hf:me/stories", "--max-tokens", "300", "--name", "slice")
    assert result.exit_code == 0, result.output
    fetched = hub.downloaded()
    assert any(p.endswith("small/train-00000.jsonl") for p in fetched)
    assert not any(p.endswith(("small/train-00001.jsonl", "validation-00000.jsonl")) for p in fetched)
    meta = json.loads((home / "datasets" / "slice" / "meta.json").read_text())
    assert (meta["train_tokens"], meta["val_tokens"]) == (270, 30)


def test_hub_mistakes_are_one_line(cli, home, hub, monkeypatch):
    cases = [(["hf:me/nothing"], "no dataset me/nothing on the Hub"),
             (["hf:me/secret"], "dataset me/secret is gated: accept its conditions at"),
             (["hf:me/stories", "--subset", "smal"],
              "has no subset 'smal'; did you mean 'small'?; its subsets: small, big"),
             (["hf:me/stories", "--split", "dev"], "no 'dev' split in subset 'small'; its splits: train, validation"),
             (["hf:not a name"], "name a Hub dataset as hf:OWNER/NAME"),
             (["shakespeare", "--subset", "x"], "--subset and --split choose the files of a Hub dataset")]
    for args, message in cases:
        result = cli("prepare", *args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # the gated dataset with a token
    before = len(hub.requests)
    result = cli("prepare", "hf:me/secret")
    assert result.exit_code == 0, result.output
    assert all(auth == "Bearer hf_test_token" for _, path, auth in hub.requests[before:] if "secret" in path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # huggingface_hub waits about 23 s between retries
    result = cli("prepare", "hf:me/other")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9 (" in result.stderr
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    result = cli("prepare", "hf:me/stories")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: hf: datasets need huggingface_hub: pip install "nanogpt-cli[hub]"'
