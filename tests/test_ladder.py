"""`nanogpt ladder`: the lecture's seven steps as ordinary runs, each one option more than the last, with
the table of what each reached beside the lecture's figures."""

from __future__ import annotations

import json

from nanogpt_cli import paths
from nanogpt_cli.ladder import STAGES, stage_flags


def _model_config(run: str) -> dict:
    return json.loads((paths.run_dir(run) / "config.json").read_text())["model_config"]


def test_each_step_adds_one_idea():
    shapes = [stage_flags(i, "cpu") for i in range(len(STAGES))]
    assert shapes[0]["model"] == "bigram"
    assert (shapes[1]["n_head"], shapes[1]["mlp"], shapes[1]["norm"], shapes[1]["residual"]) == (
        1,
        "none",
        "none",
        False,
    )
    assert shapes[2]["n_head"] == 4 and shapes[2]["n_embd"] == 32
    assert shapes[3]["mlp"] == "relu" and shapes[3]["n_layer"] == 1
    assert shapes[4]["residual"] is True and shapes[4]["n_layer"] == 3 and shapes[4]["norm"] == "none"
    assert shapes[5]["norm"] == "layernorm"
    assert shapes[6]["n_layer"] == 4 and shapes[6]["n_embd"] == 64  # smaller than the lecture's 6x384 on a CPU
    assert shapes[6]["dropout"] == 0.0  # a regulariser for long runs; the lecture's 0.2 is for its GPU shape
    assert [s.lecture_val_loss for s in STAGES] == sorted((s.lecture_val_loss for s in STAGES), reverse=True)


def test_ladder_trains_every_step_as_a_run(cli, trained_run):
    result = cli("ladder", "--iters", "5", "--dataset", "poems", "--prefix", "t", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["run"] for r in rows] == [f"t-{i + 1}-{s.slug}" for i, s in enumerate(STAGES)]
    assert all(r["iterations"] == 5 and r["val_loss"] > 0 for r in rows)
    assert [r["lecture_val_loss"] for r in rows] == [2.49, 2.40, 2.28, 2.24, 2.08, 2.06, 1.48]
    one_head, residual = _model_config("t-2-one-head"), _model_config("t-5-residual")
    assert (one_head["n_head"], one_head["mlp"], one_head["residual"]) == (1, "none", False)
    assert (residual["n_layer"], residual["residual"], residual["mlp"]) == (3, True, "relu")
    assert rows[0]["parameters"] < rows[1]["parameters"] < rows[3]["parameters"] < rows[6]["parameters"]
    # each step is an ordinary run
    assert cli("sample", "--run", "t-2-one-head", "--max-new-tokens", "10").exit_code == 0
    assert cli("eval", "--run", "t-4-feed-forward", "--iters", "2").exit_code == 0
    again = cli("ladder", "--iters", "5", "--dataset", "poems", "--prefix", "t", "--stage", "1")
    assert again.exit_code == 1 and "run 't-1-bigram' already exists" in again.stderr


def test_ladder_table_and_its_errors(cli, trained_run, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("ladder", "--iters", "3", "--dataset", "poems", "--prefix", "v", "--stage", "1", "--stage", "3")
    assert result.exit_code == 0, result.output
    assert "1. bigram" in result.stdout and "3. multi-head" in result.stdout and "2.49" in result.stdout
    assert "2. one-head" not in result.stdout
    assert "3. multi-head" in result.stderr and "(lecture 2.28)" in result.stderr  # each step as it finishes
    both = cli("ladder", "--iters", "3", "--time", "10s")
    assert both.exit_code == 1 and "--iters N or --time DURATION" in both.stderr
    bad = cli("ladder", "--iters", "3", "--stage", "9", "--dataset", "poems")
    assert bad.exit_code == 1 and "--stage takes 1 to 7, got 9" in bad.stderr


def test_the_ladder_says_what_it_will_take_and_when_this_machine_is_slower(cli, trained_run, monkeypatch):
    from nanogpt_cli import ladder

    result = cli("ladder", "--iters", "40", "--dataset", "poems", "--prefix", "w", "--stage", "1", "--stage", "2")
    assert result.exit_code == 0
    expected = ladder.expected_seconds(40, [1, 2])
    minutes, seconds = divmod(int(expected), 60)
    assert f"about {minutes}m{seconds:02d}s on the reference machine" in result.stderr
    assert "40 iterations in" in result.stderr
    # A machine 100 times slower than the reference (simulated): said once, with --quick.
    monkeypatch.setattr(ladder, "REFERENCE_SECONDS", tuple(s / 100 for s in ladder.REFERENCE_SECONDS))
    monkeypatch.setattr(ladder, "REFERENCE_STEP_SECONDS", 0.0001)
    result = cli("ladder", "--iters", "40", "--dataset", "poems", "--prefix", "s", "--stage", "1", "--stage", "2",
                 "--stage", "3")
    assert result.exit_code == 0
    assert result.stderr.count("slower than the reference one") == 1 and "nanogpt ladder --quick" in result.stderr
    both = cli("ladder", "--quick", "--iters", "10")
    assert both.exit_code == 1 and "--quick sets the iterations" in both.stderr

