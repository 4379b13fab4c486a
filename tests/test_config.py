"""Run configs: every knob is a config field, an option, a TOML key; files round-trip and repeat runs."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner


def _print_config(cli, *args) -> str:
    result = cli("train", "--print-config", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_print_config_round_trips_through_a_file(cli, tmp_path):
    printed = _print_config(cli, "--n-layer", "3", "--lr", "5e-4", "--dataset", "poems", "--compile")
    assert "n_layer = 3\n" in printed and "lr = 0.0005\n" in printed and "min_lr = 5e-05\n" in printed
    assert "# Transformer blocks. Must be at least 1.\nn_layer = 3" in printed  # help and range as a comment
    assert "# lr_decay_iters =\n" in printed  # unset optional fields are written commented out
    assert "compile = true" in printed and "vocab_size" not in printed  # the vocabulary comes from the data
    path = tmp_path / "my.toml"
    path.write_text(printed)
    assert _print_config(cli, "--config", path) == printed


def test_precedence_defaults_preset_file_flags(cli, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "shakespeare-char"\n[model]\nn_layer = 3\n[train]\nbatch_size = 7\n')
    printed = _print_config(cli, "--config", path, "--batch-size", "5")
    assert 'preset = "shakespeare-char"' in printed
    assert "n_embd = 384" in printed  # from the file's preset
    assert "n_layer = 3" in printed  # the file beats its preset
    assert "batch_size = 5" in printed  # a flag beats the file
    assert "beta1 = 0.9" in printed  # a default nobody set
    printed = _print_config(cli, "--config", path, "--preset", "cpu")
    assert 'preset = "cpu"' in printed and "n_embd = 128" in printed and "n_layer = 3" in printed


BAD_FILES = [
    (
        "[model]\nn_layer = 3\nn_layers = 4\n",
        "bad.toml, line 3: unknown key 'n_layers' in [model]; did you mean 'n_layer'?",
    ),
    ("[train]\nn_layer = 3\n", "bad.toml, line 2: unknown key 'n_layer' in [train] (it belongs in [model])"),
    (
        "[optim]\nlr = 1\n",
        "bad.toml, line 1: unknown table 'optim'; a run config has `preset` and the tables [model] and [train]",
    ),
    ('[model]\n\nn_layer = "six"\n', "bad.toml, line 3: n_layer must be an integer, got 'six'"),
    ("[model]\nbias = 1\n", "bad.toml, line 2: bias must be true or false, got 1"),
    # The key `model` of [model] is not its header; a line separator in a comment is no line break in TOML.
    ("# a\u2028b\n[model]\nn_layer = 2\nmodel = 5\n", "bad.toml, line 4: model must be a string, got 5"),
    ("[train]\nlr = 0.001\nmax_iters = 0\n", "bad.toml, line 3: max_iters must be at least 1, got 0"),
    ("[model]\nvocab_size = 100\n", "bad.toml, line 2: vocab_size is set from the dataset, not by a config; remove it"),
    ("[model]\nn_layer = \n", "bad.toml is not valid TOML: Invalid value (at line 2, column 11)"),
    ('preset = "huge"\n', "unknown preset 'huge'"),
    ("max_iters = 10\n", "bad.toml, line 1: unknown key 'max_iters'"),
]


@pytest.mark.parametrize("text, message", BAD_FILES, ids=[m[:40] for _, m in BAD_FILES])
def test_a_bad_config_file_is_one_clear_line(cli, tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = cli("train", "--config", path, "--print-config")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert message in lines[0]
    if "line" in message:
        assert str(path) in lines[0]


def test_a_missing_config_file(cli, tmp_path):
    result = cli("train", "--config", tmp_path / "nope.toml")
    assert result.exit_code == 1 and f"config file {tmp_path / 'nope.toml'} does not exist" in result.stderr


def test_a_flag_fixes_a_bad_value_in_the_file(cli, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nmax_iters = 0\n")
    assert "max_iters = 4" in _print_config(cli, "--config", path, "--max-iters", "4")


def test_config_cannot_be_combined_with_resume(cli, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nmax_iters = 5\n")
    result = cli("train", "--config", path, "--resume")
    assert result.exit_code == 1 and "--config cannot be combined with --resume" in result.stderr


def test_a_run_folder_config_repeats_the_run_exactly(cli, home, trained_run):
    run_dir = home / "runs" / trained_run
    toml = (run_dir / "config.toml").read_text()
    assert toml.startswith(f"# The resolved config of run {trained_run}.") and "n_embd = 16" in toml
    result = cli("train", "--config", run_dir / "config.toml", "--run", "again", "-q", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output
    first, second = (json.loads((home / "runs" / r / "config.json").read_text()) for r in (trained_run, "again"))
    assert first["model_config"] == second["model_config"] and first["train_config"] == second["train_config"]
    metrics = [(home / "runs" / r / "metrics.jsonl").read_text().splitlines() for r in (trained_run, "again")]
    strip = [[{k: v for k, v in json.loads(line).items() if k in ("iter", "loss", "train_loss", "val_loss")}
              for line in lines] for lines in metrics]
    assert strip[0] == strip[1]  # the same losses, step for step
    # The run folder itself stands for its config.toml.
    assert _print_config(cli, "--config", run_dir).endswith(toml.split("\n", 1)[1])


def test_training_uses_the_files_values(cli, home, small_text, tmp_path):
    cli("prepare", small_text)
    path = tmp_path / "run.toml"
    path.write_text('[model]\nn_layer = 2\nn_head = 2\nn_embd = 16\nblock_size = 8\n[train]\ndataset = "poems"\n'
                    "max_iters = 6\neval_interval = 3\neval_iters = 1\nbatch_size = 2\n")
    result = cli("train", "--config", path, "--run", "fromfile", "--max-iters", "4", "-q", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output
    config = json.loads((home / "runs" / "fromfile" / "config.json").read_text())
    assert config["model_config"]["n_layer"] == 2 and config["model_config"]["block_size"] == 8
    assert config["train_config"]["max_iters"] == 4 and config["train_config"]["batch_size"] == 2


def test_a_new_field_becomes_an_option_by_itself(monkeypatch):
    """Adding a knob is one edit: a field declared in config appears in --help and reaches the command."""
    from dataclasses import dataclass

    from nanogpt_cli import config
    from nanogpt_cli.commands.train import config_options

    @dataclass
    class TestTrainConfig(config.TrainConfig):  # a knob that exists only in this test
        label_smoothing: float = config.knob(0.0, "Smooth the targets by this much.", config.TRAINING)

    knobs = config.knobs_of({"model": config.ModelConfig, "train": TestTrainConfig})
    assert knobs["label_smoothing"].type is float and knobs["label_smoothing"].panel == config.TRAINING
    monkeypatch.setattr("nanogpt_cli.commands.train.KNOBS", knobs)
    seen = {}

    def command(flags: dict, name: str = "x") -> None:
        seen.update(flags)

    app = typer.Typer()
    app.command()(config_options(command))
    app.command("other")(lambda: None)
    runner = CliRunner()
    help_text = runner.invoke(app, ["command", "--help"], env={"COLUMNS": "200"}).output
    assert "--label-smoothing" in help_text and "Smooth the targets by this much." in help_text
    assert "--n-layer" in help_text and "--bias" in help_text and "--no-bias" in help_text
    result = runner.invoke(app, ["command", "--label-smoothing", "0.1", "--n-layer", "3"])
    assert result.exit_code == 0, result.output
    assert seen["label_smoothing"] == 0.1 and seen["n_layer"] == 3 and seen["lr"] is None


def test_every_field_is_an_option_of_train(cli):
    from nanogpt_cli.config import KNOBS

    help_text = CliRunner().invoke(__import__("nanogpt_cli.cli").cli.app, ["train", "--help"],
                                   env={"COLUMNS": "250"}).output
    for knob in KNOBS.values():
        assert knob.flag in help_text, knob.flag


def test_tiny_is_still_the_shared_fixture_shape(tiny):
    assert tiny[:4] == ["--preset", "nanogpt-cpu", "--n-layer", "1"]


def test_the_comparison_presets(cli):
    nanogpt = _print_config(cli, "--preset", "nanogpt-cpu")
    for line in ("n_layer = 4", "n_head = 4", "n_embd = 128", "block_size = 64", "batch_size = 12", "lr = 0.001",
                 "min_lr = 0.0001", "warmup_iters = 100", "beta2 = 0.99", "max_iters = 2000", "dropout = 0.0",
                 "eval_interval = 250", "eval_iters = 20", 'optimizer = "adamw"', 'schedule = "cosine"'):
        assert f"\n{line}\n" in nanogpt, line
    lecture = _print_config(cli, "--preset", "lecture")
    for line in ("n_layer = 6", "n_embd = 384", "block_size = 256", "batch_size = 64", "lr = 0.0003",
                 "min_lr = 0.0003", "dropout = 0.2", "max_iters = 5000"):
        assert f"\n{line}\n" in lecture, line
    listing = CliRunner().invoke(__import__("nanogpt_cli.cli").cli.app, ["train", "--preset", "list"],
                                 env={"COLUMNS": "200"}).output
    assert "nanogpt-cpu" in listing and "lecture" in listing
