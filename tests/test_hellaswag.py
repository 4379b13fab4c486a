"""`nanogpt eval --task hellaswag`: HellaSwag's examples from a local stand-in for GitHub (a small HTTP
server in the test), scored against a plain computation, cached, and the mistakes a user can make."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest
import torch
from torch.nn import functional as F

EXAMPLES = [  # only characters of the poems text, but for the last one ("Z")
    {"ctx": "the quick brown fox", "endings": ["jumps over the lazy dog.", "is a stage.", "or not to be,",
                                               "that is the question."], "label": 0},
    {"ctx": "to be or not to be,", "endings": ["the lazy dog.", "that is the question.", "and all the men",
                                               "brown fox jumps"], "label": 1},
    {"ctx": "all the world's a", "endings": ["question.", "fox.", "stage, and all the men and women", "dog."],
     "label": 2},
    {"ctx": "merely", "endings": ["quick.", "the fox.", "be or not.", "players."], "label": 3},
    {"ctx": "the lazy", "endings": ["dog.", "stage.", "women.", "to be."], "label": 0},
    {"ctx": "Zebras", "endings": ["run.", "sit.", "eat.", "sleep."], "label": 0},
]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local HTTP server holding hellaswag_val.jsonl; NANOGPT_HELLASWAG_URL points at it."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "hellaswag_val.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES), encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NANOGPT_HELLASWAG_URL", f"http://127.0.0.1:{server.server_port}/hellaswag_val.jsonl")
    yield server
    server.shutdown()


def plain_predictions(model, tokenizer, example) -> tuple[int, int]:
    """The lowest summed and mean loss of the endings, each row on its own (no padding, no batch), cut to
    the last block_size + 1 tokens (the tiny run's block is 16)."""
    context = tokenizer.encode(example["ctx"])
    sums, means = [], []
    for ending in example["endings"]:
        tokens = tokenizer.encode(" " + ending)
        row = torch.tensor([(context + tokens)[-(model.config.block_size + 1):]])
        scored = min(len(tokens), row.size(1) - 1)
        with torch.no_grad():
            logits, _ = model(row[:, :-1], row[:, 1:])
        loss = F.cross_entropy(logits[0, -scored:], row[0, -scored:], reduction="sum").item()
        sums.append(loss)
        means.append(loss / scored)
    return sums.index(min(sums)), means.index(min(means))


def test_hellaswag_scores_each_ending_and_is_downloaded_once(cli, home, trained_run, hub):
    from nanogpt_cli.checkpoint import load_model
    from nanogpt_cli.tokenizer import tokenizer_from_spec

    result = cli("eval", "--task", "hellaswag", "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    loaded = load_model(home / "runs" / trained_run / "best.pt", torch.device("cpu"))
    tokenizer = tokenizer_from_spec(loaded.checkpoint["tokenizer"])
    predicted = [plain_predictions(loaded.model.eval(), tokenizer, e) for e in EXAMPLES[:5]]
    assert got["examples"] == 5 and got["skipped"] == 1  # "Z" is not in the poems' vocabulary
    assert got["acc"] == sum(p[0] == e["label"] for p, e in zip(predicted, EXAMPLES, strict=False)) / 5
    assert got["acc_norm"] == sum(p[1] == e["label"] for p, e in zip(predicted, EXAMPLES, strict=False)) / 5
    assert {got["run"], got["checkpoint"], got["task"]} == {trained_run, "best.pt", "hellaswag"}

    hub.shutdown()  # the second time it reads the cached copy
    again = cli("eval", "--task", "hellaswag", "--limit", "2", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["examples"] == 2
    table = cli("eval", "--task", "hellaswag")
    assert table.exit_code == 0 and "acc_norm (lowest mean loss)" in table.stdout
    assert "skipped (characters outside the vocabulary)" in table.stdout


def test_hellaswag_from_a_file_url_and_the_mistakes(cli, home, trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_HELLASWAG_URL", "http://127.0.0.1:9/hellaswag_val.jsonl")  # nothing listens
    result = cli("eval", "--task", "hellaswag")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot download" in result.stderr and "NANOGPT_HELLASWAG_URL=file:///" in result.stderr

    local = tmp_path / "hs.jsonl"
    local.write_text(json.dumps(EXAMPLES[0]) + "\n" + json.dumps({"ctx": "x", "endings": ["a"], "label": 0}) + "\n")
    monkeypatch.setenv("NANOGPT_HELLASWAG_URL", local.as_uri())
    result = cli("eval", "--task", "hellaswag")
    assert result.exit_code == 1
    assert "is corrupt: line 2 is not a HellaSwag example (ctx, 4 endings, label 0-3); delete" in result.stderr
    assert cli("eval", "--task", "hellaswag", "--limit", "1", "--json").exit_code == 0  # line 1 alone is fine

    for args, message in ((["--task", "mmlu"], "unknown --task 'mmlu': the task nanogpt knows is hellaswag"),
                          (["--limit", "5"], "--limit goes with --task"),
                          (["--task", "hellaswag", "--limit", "0"], "--limit must be at least 1, got 0"),
                          (["--task", "hellaswag", "--full"], "--task hellaswag brings its own examples")):
        result = cli("eval", *args)
        assert result.exit_code == 1 and message in result.stderr, args
