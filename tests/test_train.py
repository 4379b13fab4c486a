"""`nanogpt train`: run files, learning, presets, reproducibility, and the first-run experience."""

from __future__ import annotations

import json

import pytest
import torch


def _metrics(home, run):
    lines = (home / "runs" / run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_train_writes_checkpoints_config_and_metrics(cli, home, trained_run):
    run_dir = home / "runs" / trained_run
    assert {p.name for p in run_dir.iterdir()} >= {"ckpt.pt", "best.pt", "config.json", "metrics.jsonl"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_config"]["n_layer"] == 1 and config["train_config"]["max_iters"] == 20
    assert config["dataset"] == "poems"
    evals = [m for m in _metrics(home, trained_run) if m["kind"] == "eval"]
    assert [m["iter"] for m in evals] == [0, 10, 20]
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["train_state"]["iteration"] == 20


def test_training_lowers_the_loss(cli, home, small_text):
    cli("prepare", small_text)
    result = cli("train", "--dataset", "poems", "--run", "learn", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
                 "--block-size", "32", "--batch-size", "16", "--max-iters", "150", "--lr", "1e-2", "--eval-interval",
                 "50", "--eval-iters", "4", "--warmup-iters", "10", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output
    evals = [m for m in _metrics(home, "learn") if m["kind"] == "eval"]
    assert evals[0]["val_loss"] > 3.0  # about ln(vocab) at initialisation
    assert evals[-1]["val_loss"] < 1.5
    assert "best val loss" in result.output


def test_summary_and_sample_are_printed(cli, small_text, tiny):
    cli("prepare", small_text)
    result = cli("train", "--dataset", "poems", "--run", "talk", *tiny)
    assert result.exit_code == 0, result.output
    assert "done: 20 iterations" in result.stdout
    assert "a sample from talk" in result.stdout
    assert "nanogpt sample --run talk" in result.stdout


def test_progress_lines_when_not_a_terminal(cli, small_text, tiny):
    cli("prepare", small_text)
    args = [a for a in tiny if a != "--quiet"]
    result = cli("train", "--dataset", "poems", "--run", "loud", *args)
    assert result.exit_code == 0
    assert "iter     10: train loss" in result.stderr
    assert "parameters" in result.stderr and "device cpu" in result.stderr


def test_first_train_prepares_bundled_shakespeare(cli, home, tiny):
    result = cli("train", "--run", "first", *tiny)
    assert result.exit_code == 0, result.output
    assert "preparing the bundled Tiny Shakespeare" not in result.output  # --quiet says nothing ...
    assert (home / "datasets" / "shakespeare" / "meta.json").is_file()  # ... but still prepares it

    args = [a for a in tiny if a != "--quiet"]
    result = cli("train", "--dataset", "shakespeare-char2", "--run", "x", *args)
    assert result.exit_code == 1 and "unknown tokenizer 'char2'" in result.stderr


def test_first_train_says_it_prepares(cli, tiny):
    args = [a for a in tiny if a != "--quiet"]
    result = cli("train", "--run", "first", *args)
    assert result.exit_code == 0, result.output
    assert "preparing the bundled Tiny Shakespeare" in result.stderr
    assert "1,003,854 train" in result.stderr


def test_same_seed_same_run_bit_for_bit(cli, home, small_text, tiny):
    cli("prepare", small_text)
    for name in ("a", "b"):
        assert (
            cli("train", "--dataset", "poems", "--run", name, "--seed", "7", "--dropout", "0.1", *tiny).exit_code == 0
        )
    losses = [[m.get("loss", m.get("val_loss")) for m in _metrics(home, r)] for r in ("a", "b")]
    assert losses[0] == losses[1]
    wa = torch.load(home / "runs" / "a" / "ckpt.pt", weights_only=True)["model"]
    wb = torch.load(home / "runs" / "b" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    assert cli("train", "--dataset", "poems", "--run", "c", "--seed", "8", "--dropout", "0.1", *tiny).exit_code == 0
    wc = torch.load(home / "runs" / "c" / "ckpt.pt", weights_only=True)["model"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_preset_values_apply_and_flags_override_them(cli, home, small_text):
    cli("prepare", small_text)
    result = cli("train", "--preset", "cpu", "--dataset", "poems", "--run", "p", "--n-layer", "1", "--max-iters", "2",
                 "--eval-interval", "1", "--eval-iters", "1", "--batch-size", "2", "--sample-tokens", "0", "-q")
    assert result.exit_code == 0, result.output
    config = json.loads((home / "runs" / "p" / "config.json").read_text())
    assert config["preset"] == "cpu"
    assert config["model_config"]["n_layer"] == 1  # the flag
    assert config["model_config"]["n_embd"] == 128 and config["train_config"]["lr"] == 3e-3  # the preset
    assert config["train_config"]["optimizer"] == "muon" and config["model_config"]["pos"] == "rope"


def test_a_new_lr_brings_its_own_floor():
    from nanogpt_cli.config import build_configs

    assert build_configs("cpu", {"lr": 1e-4})[1].min_lr == 1e-5  # not the preset's 2e-4
    assert build_configs("cpu", {"lr": 1e-4, "min_lr": 0.0})[1].min_lr == 0.0


def test_preset_list_shows_every_preset(cli):
    result = cli("train", "--preset", "list")
    assert result.exit_code == 0
    for name in ("cpu", "mps", "shakespeare-char", "bigram"):
        assert name in result.stdout


def test_shakespeare_char_preset_is_nanogpts_recipe():
    from nanogpt_cli.config import build_configs

    model, train = build_configs("shakespeare-char", {})
    assert (model.n_layer, model.n_head, model.n_embd, model.block_size, model.dropout) == (6, 6, 384, 256, 0.2)
    assert (train.batch_size, train.lr, train.max_iters) == (64, 1e-3, 5000)


def test_bigram_baseline_trains_and_samples(cli, home, small_text):
    cli("prepare", small_text)
    result = cli("train", "--model", "bigram", "--dataset", "poems", "--run", "bi", "--max-iters", "200",
                 "--eval-interval", "100", "--sample-tokens", "0", "-q")
    assert result.exit_code == 0, result.output
    config = json.loads((home / "runs" / "bi" / "config.json").read_text())
    vocab = config["model_config"]["vocab_size"]
    assert config["preset"] == "bigram" and config["parameters"] == vocab * vocab
    evals = [m for m in _metrics(home, "bi") if m["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    sample = cli("sample", "--run", "bi", "--prompt", "the", "--max-new-tokens", "30", "--seed", "1")
    assert sample.exit_code == 0 and sample.stdout.startswith("the") and len(sample.stdout) >= 30


def test_lr_schedule_warms_up_then_decays_to_min():
    from nanogpt_cli.config import TrainConfig
    from nanogpt_cli.train import lr_at

    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    assert lr_at(0, cfg) < lr_at(5, cfg) < lr_at(10, cfg) == 1e-3
    assert abs(lr_at(60, cfg) - 5.5e-4) < 1e-12  # halfway down the cosine
    assert lr_at(110, cfg) == lr_at(500, cfg) == 1e-4


def test_weight_decay_only_on_matrices():
    from nanogpt_cli.config import ModelConfig, TrainConfig
    from nanogpt_cli.model import GPT
    from nanogpt_cli.train import make_optimizer

    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=8, block_size=4, bias=True))
    decay, no_decay = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu")).param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])


def test_compile_failure_falls_back_to_eager_with_one_warning(cli, home, small_text, monkeypatch, tiny):
    def broken_compile(model, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    cli("prepare", small_text)
    args = [a for a in tiny if a != "--quiet"]
    result = cli("train", "--dataset", "poems", "--run", "c", "--compile", *args)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: torch.compile failed (RuntimeError: no C++ compiler)") == 1
    # The failure shows in the warm-up step, before the run starts: it is recorded as not compiled.
    assert json.loads((home / "runs" / "c" / "config.json").read_text())["compile"] is False


def test_a_compiled_model_trains(cli, home, small_text, monkeypatch, tiny):
    # torch.compile's own wrapper (TorchDynamo), with its eager backend so no C++ compiler is needed: its
    # module has no truth value (bool() asks for len(), which it refuses), so the trainer must not ask.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: real_compile(model, backend="eager", **kwargs))
    cli("prepare", small_text)
    args = [a for a in tiny if a != "--quiet"]
    result = cli("train", "--dataset", "poems", "--run", "compiled", "--compile", *args)
    assert result.exit_code == 0, result.output
    assert "torch.compile failed" not in result.stderr
    assert json.loads((home / "runs" / "compiled" / "config.json").read_text())["compile"] is True
    assert (home / "runs" / "compiled" / "best.pt").exists()


def test_errors_after_the_compile_warm_up_are_real_errors(cli, home, small_text, monkeypatch):
    calls = []

    def flaky_compile(model, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            if len(calls) > 1:  # the warm-up works; a later step runs out of memory
                raise RuntimeError("CUDA out of memory (pretend)")
            return model(*args, **kw)
        return compiled

    monkeypatch.setattr(torch, "compile", flaky_compile)
    cli("prepare", small_text)
    with pytest.raises(RuntimeError, match="out of memory"):
        from nanogpt_cli.session import TrainOptions, run_training

        run_training(TrainOptions(flags={"dataset": "poems", "compile": True, "n_layer": 1, "n_head": 2, "n_embd": 16,
                                         "block_size": 16, "batch_size": 4, "max_iters": 5}, run="oom"))


def test_mfu_is_reported_against_a_stated_peak(cli, home, small_text, tiny):
    cli("prepare", small_text)
    result = cli("train", "--dataset", "poems", "--run", "m", "--peak-flops", "1e12", "--log-interval", "5", *tiny)
    assert result.exit_code == 0, result.output
    rows = [m for m in _metrics(home, "m") if m["kind"] == "train"]
    assert rows and all(0 < r["mfu"] < 1 for r in rows)
    assert "tokens/s, MFU " in result.stdout  # in the summary too
    assert "mfu" not in _metrics(home, "m")[0]  # eval rows carry no MFU


def test_flops_per_token_matches_nanogpts_formula():
    from nanogpt_cli.config import ModelConfig
    from nanogpt_cli.model import flops_per_token

    config = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304)
    assert flops_per_token(config, 124_000_000) == 6 * 124e6 + 12 * 12 * 12 * 64 * 1024


def test_the_closing_hint_prompts_in_the_runs_own_style(cli, home, tmp_path, tiny):
    source = tmp_path / "code.py"
    source.write_text("def add(a, b):\n    return a + b\n\n" * 300, encoding="utf-8")
    assert cli("prepare", source).exit_code == 0
    result = cli("train", "--dataset", "code", "--run", "py", *[a for a in tiny if a != "--quiet"])
    assert result.exit_code == 0, result.output
    assert "more: nanogpt sample --run py --prompt 'def add(a, b):'" in result.stdout
    assert "ROMEO" not in result.stdout
