"""`nanogpt prepare addition`: problems aligned to sequences, disjoint train and val sets, a loss masked to
the answers, exact-match accuracy in eval, answers the right way round in sample, and other operations."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from nanogpt_cli import paths
from nanogpt_cli.batches import BatchSampler
from nanogpt_cli.dataset import load_dataset
from nanogpt_cli.tasks import Task


def _problems(name: str, split: str) -> list[str]:
    data = load_dataset(name)
    text = data.tokenizer.decode(data.tokens(split).tolist())
    return text.splitlines()


def test_problems_are_fixed_width_correct_and_disjoint(cli):
    result = cli("prepare", "addition", "--digits", "2", "--train-problems", "4000", "--val-problems", "1000")
    assert result.exit_code == 0, result.output
    assert "4,000 train and 1,000 val problems (disjoint), 10 characters each" in result.stdout
    train, val = _problems("addition-2", "train"), _problems("addition-2", "val")
    assert len(train) == 4000 and len(val) == 1000 and not set(train) & set(val)
    for line in train[:200] + val[:200]:
        a, b, answer = re.fullmatch(r"(\d\d)\+(\d\d)=(\d\d\d)", line).groups()
        assert int(answer[::-1]) == int(a) + int(b)  # reversed: least significant digit first
    meta = load_dataset("addition-2").meta["task"]
    assert (meta["length"], meta["answer_start"], meta["reverse"]) == (10, 6, True)


def test_replacing_an_addition_dataset_that_runs_use_is_refused(cli):
    args = ["prepare", "addition", "--digits", "2", "--train-problems", "2000", "--val-problems", "1000"]
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.stderr
    assert cli("train", "--dataset", "addition-2", "--run", "uses-it", "--max-iters", "2", "--quiet").exit_code == 0
    before = (paths.dataset_dir("addition-2") / "train.bin").read_bytes()
    other = cli(*args, "--no-reverse", "--overwrite")  # other tokens under a run that can resume
    assert other.exit_code == 1 and "is what run(s) 'uses-it' trained on" in other.stderr
    assert (paths.dataset_dir("addition-2") / "train.bin").read_bytes() == before
    assert cli(*args, "--overwrite").exit_code == 0  # the same problems again are fine


def test_not_reversed_and_other_operations(cli):
    assert cli("prepare", "addition", "--digits", "2", "--no-reverse", "--ops", "+-*", "--name", "calc",
               "--train-problems", "3000", "--val-problems", "1000").exit_code == 0
    seen = set()
    for line in _problems("calc", "val"):
        a, op, b, answer = re.fullmatch(r"(\d\d)([-+*])(\d\d)=(\d{4})", line).groups()
        seen.add(op)
        assert int(answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    assert seen == {"+", "-", "*"}


def test_batches_start_at_problems_and_mask_everything_but_the_answer(cli):
    assert (
        cli("prepare", "addition", "--digits", "2", "--train-problems", "2000", "--val-problems", "1000").exit_code == 0
    )
    data = load_dataset("addition-2")
    task = data.task
    sampler = BatchSampler(data.tokens("train"), 16, task.length - 1, "cpu", seed=1, task=task)
    x, y = sampler.next()
    equals = data.tokenizer.encode("=")[0]
    assert (x[:, task.answer_start - 1] == equals).all()  # every row is one whole problem, from its start
    assert (y[:, : task.answer_start - 1] == -1).all() and (y[:, task.answer_start - 1 :] >= 0).all()
    newline = data.tokenizer.encode("\n")[0]
    assert (y[:, -1] == newline).all()  # the end of the answer is learned too


def test_train_eval_and_sample_learn_addition(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert (
        cli("prepare", "addition", "--digits", "2", "--train-problems", "5000", "--val-problems", "1000").exit_code == 0
    )
    result = cli("train", "--dataset", "addition-2", "--run", "add", "--max-iters", "400", "--eval-interval", "200")
    assert result.exit_code == 0, result.output
    config = json.loads((paths.run_dir("add") / "config.json").read_text())
    assert config["preset"] == "addition" and config["model_config"]["block_size"] == 9  # one problem, chosen for it
    assert "answers val problems" in result.stdout and "more: nanogpt sample --run add --prompt" in result.stdout
    evaluation = json.loads(cli("eval", "--run", "add", "--json").stdout)
    assert evaluation["problems"] == 1000 and evaluation["accuracy"] >= 0.6  # from 0: it learned to add
    assert "accuracy (exact answers)" in cli("eval", "--run", "add").stdout
    assert "1,000 val problems of 10 characters" in cli("info", "addition-2").stdout
    sample = cli("sample", "--run", "add", "--prompt", "12+7=")
    assert sample.exit_code == 0 and re.fullmatch(r"12\+7=\d+\n", sample.stdout)
    piped = cli("sample", "--run", "add", input="1+1\n40+2=\n")
    assert [line.split("=")[0] for line in piped.stdout.splitlines()] == ["1+1", "40+2"]
    too_long = cli("sample", "--run", "add", "--prompt", "123+4=")
    assert too_long.exit_code == 1 and "adds numbers of up to 2 digits" in too_long.stderr
    nonsense = cli("sample", "--run", "add", "--prompt", "two plus two")
    assert nonsense.exit_code == 1 and "is not a problem this model solves" in nonsense.stderr


def test_the_answer_is_read_the_right_way_round():
    task = Task("+", 3, True)
    assert task.text(123, "+", 456) == "123+456=9750\n"
    assert task.read_answer("9750\n") == "579" and task.prompt(" 5 + 7 ") == "005+007="
    assert Task("+", 3, False).read_answer("0579\n") == "579"
    assert Task("*", 2, False).text(12, "*", 34) == "12*34=0408\n"
    aligned = Task("+", 3, True, reverse_operands=True)  # digit k of a, b and c at the same distances
    assert aligned.text(123, "+", 456) == "321+654=9750\n" and aligned.prompt("123+456") == "321+654="


@pytest.mark.parametrize("args, message", [
    (["--ops", "/"], "--ops takes some of + - *"),
    (["--digits", "0"], "--digits must be from 1 to 18"),
    (["--val-problems", "10"], "--val-problems must be at least 1,000"),
    (["--digits", "1"], "1-digit problems are too few"),
])
def test_bad_addition_options(cli, args, message):
    result = cli("prepare", "addition", *args)
    assert result.exit_code == 1 and message in result.stderr
    assert not paths.datasets_dir().exists() or not [
        p for p in paths.datasets_dir().iterdir() if not p.name.startswith(".")
    ]


def test_masked_targets_do_not_count_in_the_loss():
    from nanogpt_cli.config import ModelConfig
    from nanogpt_cli.model import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8))
    x = torch.randint(0, 10, (2, 8))
    y = torch.randint(0, 10, (2, 8))
    masked = y.clone()
    masked[:, :5] = -1
    logits, loss = model(x, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 10), y[:, 5:].reshape(-1))
    assert torch.allclose(loss, expected)
    assert np.isfinite(loss.item())
