"""Optimizers and schedules: Muon on the block matrices with AdamW on the rest, warmup-stable-decay,
both checkpointed so that a resumed run is bit-for-bit the run that never stopped."""

from __future__ import annotations

import json

import pytest
import torch

from nanogpt_cli.config import ModelConfig, TrainConfig
from nanogpt_cli.model import GPT
from nanogpt_cli.optim import lr_at, make_optimizer

ARGS = ["--dataset", "poems", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--batch-size", "8", "--max-iters", "60", "--eval-interval", "20", "--eval-iters", "2", "--log-interval", "1",
        "--seed", "5", "--sample-tokens", "0", "--quiet", "--optimizer", "muon", "--schedule", "wsd", "--warmup-iters",
        "5"]


def test_wsd_warms_up_holds_then_decays_linearly():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=100, schedule="wsd", decay_frac=0.2)
    assert lr_at(0, cfg) < lr_at(9, cfg) < 1e-3
    assert lr_at(10, cfg) == lr_at(50, cfg) == lr_at(80, cfg) == 1e-3  # stable until the last 20%
    assert lr_at(90, cfg) == pytest.approx(5.5e-4)  # halfway down the line
    assert lr_at(100, cfg) == lr_at(150, cfg) == 1e-4


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = GPT(ModelConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True))
    optimizers = make_optimizer(model, TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02), torch.device("cpu"))
    muon = {id(p) for g in optimizers.parts["muon"].param_groups for p in g["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in muon}
    assert names == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                     for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    optimizers.set_lr(5e-4)  # half the peak: Muon's rate follows at its own scale
    assert optimizers.parts["muon"].param_groups[0]["lr"] == pytest.approx(0.01)
    assert all(g["lr"] == 5e-4 for g in optimizers.parts["adamw"].param_groups)
    adamw_only = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    assert list(adamw_only.parts) == ["adamw"]


def test_an_interrupted_muon_wsd_run_resumes_bit_for_bit(cli, home, small_text, monkeypatch, signal_at):
    assert cli("prepare", small_text).exit_code == 0
    assert cli("train", "--run", "whole", *ARGS).exit_code == 0
    with monkeypatch.context() as patch:
        signal_at(patch, 27, __import__("signal").SIGINT)
        assert cli("train", "--run", "cut", *ARGS).exit_code == 130
    assert cli("train", "--run", "cut", "--resume", "--quiet", "--sample-tokens", "0").exit_code == 0

    def rows(run):
        lines = (home / "runs" / run / "metrics.jsonl").read_text().splitlines()
        return [
            (r["iter"], r.get("loss"), r.get("val_loss")) for r in map(json.loads, lines) if r["kind"] != "checkpoint"
        ]

    assert rows("cut") == rows("whole")
    whole, cut = (torch.load(home / "runs" / r / "ckpt.pt", weights_only=True) for r in ("whole", "cut"))
    assert all(torch.equal(whole["model"][k], cut["model"][k]) for k in whole["model"])
    assert set(cut["optimizer"]) == {"adamw", "muon"}
    first, last = rows("whole")[0][2], rows("whole")[-1][2]
    assert last < first - 0.5  # and it learns


def test_a_checkpoint_with_one_adamw_state_still_resumes(cli, home, trained_run):
    path = home / "runs" / trained_run / "ckpt.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["optimizer"] = ckpt["optimizer"]["adamw"]  # as checkpoints were written before Muon
    torch.save(ckpt, path)
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "25", "-q", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("3m", 180), ("1h30m", 5400), ("1.5h", 5400),
                                           ("2m30s", 150)])
def test_durations(text, seconds):
    from nanogpt_cli.config import parse_duration

    assert parse_duration(text) == seconds


def test_a_bad_duration_is_one_line(cli):
    result = cli("train", "--time", "3 minutes")
    assert result.exit_code == 1 and result.stderr.strip() == \
        "error: --time must be a duration such as 90s, 3m or 1h30m, got '3 minutes'"


def test_a_timed_run_stops_on_time_and_resumes_with_the_budget_left(cli, home, small_text):
    cli("prepare", small_text)
    args = ["--dataset", "poems", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
            "--batch-size", "4", "--log-interval", "1", "--warmup-iters", "2", "--eval-interval", "1",
            "--sample-tokens", "0", "-q"]
    assert cli("train", "--run", "timed", "--time", "1.5s", *args).exit_code == 0
    rows = [json.loads(line) for line in (home / "runs" / "timed" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert 1.5 <= evals[-1]["elapsed"] < 5  # the last eval (and checkpoint) land at the end of the budget
    assert 8 <= len(evals) <= 12  # at every tenth of the budget, from the start
    assert evals[-1]["lr"] == pytest.approx(1e-4)  # the schedule ended at the preset's min_lr
    state = torch.load(home / "runs" / "timed" / "ckpt.pt", weights_only=True)["train_state"]
    assert state["iteration"] == evals[-1]["iter"] and state["elapsed"] >= 1.5

    assert f"{state['iteration']:,} (1.5s)" in cli("info").stdout  # a timed run has no iteration target
    again = cli("train", "--run", "timed", "--resume")
    assert again.exit_code == 1 and "already used its 1.5s of training" in again.stderr
    assert cli("train", "--run", "timed", "--resume", "--time", "2.5s", "-q", "--sample-tokens", "0").exit_code == 0
    later = [json.loads(line) for line in (home / "runs" / "timed" / "metrics.jsonl").read_text().splitlines()]
    assert later[-1]["elapsed"] >= 2.5 and max(r["iter"] for r in later) > state["iteration"]


def test_a_short_budget_is_not_spent_evaluating(cli, home, small_text):
    cli("prepare", small_text)
    args = ["--dataset", "poems", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
            "--batch-size", "4", "--eval-interval", "1000", "--sample-tokens", "0", "-q"]
    assert cli("train", "--run", "short", "--time", "1s", *args).exit_code == 0
    rows = [json.loads(line) for line in (home / "runs" / "short" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["iter"] for r in evals][0] == 0 and len(evals) == 2  # the start and the end, no more
    assert evals[-1]["iter"] > 20  # the second was spent training
