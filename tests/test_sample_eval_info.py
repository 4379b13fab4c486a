"""`nanogpt sample`, `nanogpt eval` and `nanogpt info` on a trained run."""

from __future__ import annotations

import json
import math
import re
import shutil

import torch
from typer.testing import CliRunner

from nanogpt_cli.cli import app


def test_sample_continues_the_prompt(cli, trained_run):
    result = cli("sample", "--prompt", "to be", "--max-new-tokens", "40", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("to be")
    assert len(result.stdout.rstrip("\n")) == len("to be") + 40  # char model: one character per token


def test_sample_is_repeatable_with_a_seed_and_varies_without(cli, trained_run):
    a = cli("sample", "--run", trained_run, "--max-new-tokens", "60", "--seed", "5").stdout
    b = cli("sample", "--run", trained_run, "--max-new-tokens", "60", "--seed", "5").stdout
    c = cli("sample", "--run", trained_run, "--max-new-tokens", "60", "--seed", "6").stdout
    assert a == b and a != c


def test_greedy_sampling_is_deterministic(cli, trained_run):
    a = cli("sample", "--temperature", "0", "--max-new-tokens", "30", "--prompt", "the")
    b = cli("sample", "--temperature", "0", "--max-new-tokens", "30", "--prompt", "the", "--seed", "99")
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    assert a.stdout.startswith("the") and len(a.stdout) > 30 and a.stdout == b.stdout


def test_several_samples_are_separated(cli, trained_run):
    result = cli("sample", "--num-samples", "3", "--max-new-tokens", "10", "--prompt", "the")
    assert result.exit_code == 0
    assert result.stdout.count("\n---------------\n") == 2
    assert result.stdout.count("the") >= 3


def test_sample_json_and_prompt_file(cli, trained_run, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("all the", encoding="utf-8")
    result = cli("sample", "--prompt-file", prompt, "--num-samples", "2", "--max-new-tokens", "15", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all(r["run"] == trained_run for r in rows)
    assert all(r["prompt"] == "all the" and len(r["text"]) == 15 for r in rows)


def test_sample_last_checkpoint(cli, trained_run):
    result = cli("sample", "--checkpoint", "last", "--max-new-tokens", "5", "--json")
    assert json.loads(result.stdout)["checkpoint"] == "ckpt.pt"
    assert json.loads(cli("sample", "--max-new-tokens", "5", "--json").stdout)["checkpoint"] == "best.pt"


def test_sample_crops_context_beyond_block_size(cli, trained_run):
    long_prompt = "to be or not to be, that is the question. " * 3  # longer than block size 16
    result = cli("sample", "--prompt", long_prompt, "--max-new-tokens", "40", "--seed", "1")
    assert result.exit_code == 0 and result.stdout.startswith(long_prompt)


def test_eval_reports_loss_perplexity_and_bits_per_char(cli, trained_run):
    result = cli("eval", "--json", "--iters", "5", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert math.isclose(data["perplexity"], math.exp(data["loss"]), rel_tol=1e-9)
    assert math.isclose(data["bits_per_char"], data["loss"] / math.log(2), rel_tol=1e-9)
    assert data["tokens"] == 5 * 4 * 16 and data["source"] == "poems:val"
    assert 0.0 < data["loss"] < 5.0


def test_eval_full_split_and_text_file_count_every_token(cli, trained_run, small_text, tmp_path):
    val_tokens = json.loads(cli("info", "poems", "--json").stdout)["meta"]["val_tokens"]
    full = json.loads(cli("eval", "--full", "--json").stdout)
    assert full["tokens"] == val_tokens - 1
    train = json.loads(cli("eval", "--split", "train", "--full", "--json").stdout)
    assert train["source"] == "poems:train"

    text = tmp_path / "held-out.txt"
    text.write_text("the lazy dog is not a fox.\n", encoding="utf-8")
    data = json.loads(cli("eval", "--text-file", text, "--json").stdout)
    assert data["tokens"] == len(text.read_text()) - 1 and data["source"] == str(text)


def test_eval_reads_every_token_by_default_when_the_split_is_smaller_than_the_batches(cli, trained_run):
    val_tokens = json.loads(cli("info", "poems", "--json").stdout)["meta"]["val_tokens"]
    # 200 batches of 32 x 16 would read 102,400 tokens: more than the val split, so every token once.
    default = json.loads(cli("eval", "--json").stdout)
    assert default["every_token"] is True and default["tokens"] == val_tokens - 1
    assert default["loss"] == json.loads(cli("eval", "--full", "--json").stdout)["loss"]
    # Asked for random batches, random batches.
    batches = json.loads(cli("eval", "--iters", "3", "--json").stdout)
    assert batches["every_token"] is False and batches["tokens"] == 3 * 32 * 16 and batches["batches"] == 3
    assert "batches" not in default
    # A split bigger than 200 batches of 1 x 16 tokens: 200 random batches.
    train_tokens = json.loads(cli("info", "poems", "--json").stdout)["meta"]["train_tokens"]
    assert train_tokens > 200 * 16
    train = json.loads(cli("eval", "--split", "train", "--batch-size", "1", "--json").stdout)
    assert train["every_token"] is False and train["tokens"] == 200 * 16
    table = cli("eval").stdout
    assert "on poems:val, every token" in table
    assert "on poems:val, 3 random batches" in cli("eval", "--iters", "3").stdout


def test_eval_reports_its_progress_per_stage(trained_run):
    from nanogpt_cli.evaluate import evaluate

    calls = []
    result = evaluate(run="tiny", device="cpu", quantize="int8", progress=lambda *call: calls.append(call))
    stages = [stage for stage, _, _ in calls]
    assert stages == sorted(stages, key=["float32", "int8"].index) and set(stages) == {"float32", "int8"}
    for stage in ("float32", "int8"):
        done = [(d, total) for s, d, total in calls if s == stage]
        assert [d for d, _ in done] == sorted(d for d, _ in done)  # it only goes forward
        assert done[-1] == (result["tokens"], result["tokens"])  # and ends at all of it


def test_eval_table_for_people(cli, trained_run):
    result = cli("eval", "--iters", "2")
    assert result.exit_code == 0
    assert "perplexity" in result.stdout and "bits per char" in result.stdout


def test_info_lists_datasets_and_runs(cli, trained_run):
    result = cli("info")
    assert result.exit_code == 0
    assert "poems" in result.stdout and trained_run in result.stdout and "20/20" in result.stdout
    data = json.loads(cli("info", "--json").stdout)
    assert data["auto_device"] == "cpu" and "cpu" in data["available_devices"]
    assert [d["name"] for d in data["datasets"]] == ["poems"]
    run = data["runs"][0]
    assert run["name"] == trained_run and run["iterations"] == 20 and run["parameters"] > 0
    assert run["best_val_loss"] is not None


def test_info_on_a_run_shows_config_and_metrics(cli, trained_run):
    result = cli("info", trained_run)
    assert result.exit_code == 0
    assert "n_layer" in result.stdout and "evaluations" in result.stdout
    data = json.loads(cli("info", trained_run, "--json").stdout)
    assert data["type"] == "run" and [m["iter"] for m in data["evals"]] == [0, 10, 20]


def test_info_on_a_dataset_shows_a_decoded_sample(cli, trained_run):
    result = cli("info", "poems")
    assert result.exit_code == 0 and "the quick brown fox" in result.stdout


def test_info_on_an_empty_home(cli, home):
    result = cli("info")
    assert result.exit_code == 0
    assert "datasets: none yet" in result.stdout and str(home) in result.stdout


def test_version(cli):
    from nanogpt_cli import __version__

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"nanogpt-cli {__version__}"


def test_info_shows_the_last_saved_iteration_of_a_stopped_run(cli, home, small_text, monkeypatch, signal_at):
    import signal


    cli("prepare", small_text)
    with monkeypatch.context() as patch:
        signal_at(patch, 13, signal.SIGINT)
        result = cli("train", "--dataset", "poems", "--run", "stopped", "--n-layer", "1", "--n-head", "2", "--n-embd",
                     "16", "--block-size", "16", "--batch-size", "4", "--max-iters", "2000", "--log-interval", "1",
                     "--eval-interval", "500", "--eval-iters", "1", "-q")
    assert result.exit_code == 130
    stopped_at = torch.load(home / "runs" / "stopped" / "ckpt.pt", weights_only=True)["train_state"]["iteration"]
    assert stopped_at >= 13
    runs = {r["name"]: r for r in json.loads(cli("info", "--json").stdout)["runs"]}
    assert runs["stopped"]["iterations"] == stopped_at and runs["stopped"]["max_iters"] == 2000
    assert f"{stopped_at:,}/2,000" in cli("info").stdout


def test_a_resumed_run_reports_this_session_and_all_of_it(cli, home, trained_run):
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "30", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output
    assert re.search(r"done: 10 iterations in \dm\d\ds this session \(30 in \dm\d\ds in all\)", result.stdout)
    # The schedule follows --max-iters unless --lr-decay-iters is set: a resume that moves it says so.
    assert (
        "warning: the new settings change the learning-rate schedule of run 'tiny': it now decays until iteration 30 "
        "instead of 20 (pass --lr-decay-iters 20 to keep the old schedule)" in result.stderr
    )
    evals = [json.loads(line) for line in (home / "runs" / trained_run / "metrics.jsonl").read_text().splitlines()]
    elapsed = {row["iter"]: row["elapsed"] for row in evals if row["kind"] == "eval"}
    assert elapsed[30] > elapsed[20] > 0  # the clock goes on across sessions


def test_the_progress_rate_is_the_summarys_rate(home, small_text, cli):
    from nanogpt_cli.session import TrainOptions, run_training

    cli("prepare", small_text)
    events = []
    flags = {"dataset": "poems", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4,
             "max_iters": 30, "log_interval": 5, "eval_interval": 15, "eval_iters": 1}
    summary = run_training(TrainOptions(flags=flags, run="rate"), lambda kind, info: events.append((kind, info)))
    last_step = [info for kind, info in events if kind == "step"][-1]
    assert last_step["average_tokens_per_second"] == summary.tokens_per_second


def test_info_never_cuts_a_run_name(cli, home, trained_run):
    long_name = "shakespeare-char-experiment-with-a-rather-long-name-20261123"
    shutil.copytree(home / "runs" / trained_run, home / "runs" / long_name)
    for columns in ("80", "60"):
        result = CliRunner().invoke(app, ["info"], env={"COLUMNS": columns})
        assert result.exit_code == 0
        assert long_name in result.stdout and "20/20" in result.stdout, result.stdout



def test_the_collector_is_off_during_startup_and_on_for_the_work(trained_run, monkeypatch):
    """`nanogpt` (cli.main) imports torch and loads the model with Python's garbage collector off, then
    samples or trains with it on, everything made during start-up frozen out of its passes."""
    import gc
    import sys

    import nanogpt_cli.generate
    import nanogpt_cli.session
    from nanogpt_cli.cli import main

    seen = []

    def spy(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            seen.append((name, gc.isenabled()))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((nanogpt_cli.generate, "load_model"), (nanogpt_cli.generate, "generate_tokens"),
                         (nanogpt_cli.session, "run_training")):
        spy(module, name)
    commands = (["sample", "--run", trained_run, "--prompt", "the", "--max-new-tokens", "5", "--seed", "1"],
                ["train", "--dataset", "poems", "--run", "again", "--max-iters", "2", "--eval-interval", "2",
                 "--eval-iters", "1", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16",
                 "--batch-size", "2", "--sample-tokens", "0", "--quiet"])
    try:
        for argv in commands:
            gc.unfreeze()
            monkeypatch.setattr(sys, "argv", ["nanogpt", *argv])
            try:
                main()
            except SystemExit as end:
                assert end.code in (0, None)
            assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()
    assert seen == [("load_model", False), ("generate_tokens", True), ("run_training", True)]
