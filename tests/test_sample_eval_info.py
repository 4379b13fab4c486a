"""`nanogpt sample`, `nanogpt eval` and `nanogpt info` on a trained run."""

from __future__ import annotations

import json
import math


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
    a = cli("sample", "--temperature", "0", "--max-new-tokens", "30", "--prompt", "the").stdout
    b = cli("sample", "--temperature", "0", "--max-new-tokens", "30", "--prompt", "the", "--seed", "99").stdout
    assert a == b


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
