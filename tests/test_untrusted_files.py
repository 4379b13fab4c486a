"""Files nanogpt reads may be damaged, edited or foreign: each kind of damage is one line naming the file
(and the field), exit 1, no traceback, and nothing already written is lost."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from nanogpt_cli.config.runfile import read_run_file


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _edit_checkpoint(path: Path, change) -> None:
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


def test_a_token_id_beyond_the_vocabulary_names_the_dataset(cli, home, trained_run):
    val = home / "datasets" / "poems" / "val.bin"
    data = bytearray(val.read_bytes())
    data[11] = 0xFF  # a high byte of one uint16 token: an id in the tens of thousands
    val.write_bytes(bytes(data))
    line = _one_line_error(cli("eval", "--run", trained_run, "--iters", "1"), "val.bin is corrupt",
                           "beyond the vocabulary", "prepare the dataset 'poems' again")
    assert "token 5 " in line


def test_a_token_file_emptied_or_truncated_is_refused(cli, home, trained_run):
    val = home / "datasets" / "poems" / "val.bin"
    val.write_bytes(b"")
    _one_line_error(cli("eval", "--run", trained_run, "--full"), "val.bin is corrupt", "meta.json says")


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda m: m.update(dtype="object"), ["dtype 'object' is not one of uint16, uint32"]),
        (lambda m: m.update(vocab_size="65"), ["vocab_size must be an integer"]),
        (lambda m: m.update(vocab_size=10**6), ["does not fit its uint16 tokens"]),
        (lambda m: m.update(tokenizer=[1, 2]), ["tokenizer spec is not an object"]),
        (lambda m: m.update(tokenizer={"kind": "char", "chars": "aab"}), ["characters are missing, repeated"]),
        (lambda m: m.pop("train_tokens"), ["train_tokens is missing"]),
        (lambda m: m.update(task={"ops": "/", "digits": 3, "reverse": True}), ["task spec"]),
    ],
)
def test_a_corrupt_meta_json_is_one_line(cli, home, trained_run, change, needles):
    path = home / "datasets" / "poems" / "meta.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    for command in (["eval", "--run", trained_run, "--iters", "1"], ["info", "poems"]):
        _one_line_error(cli(*command), "meta.json is corrupt", *needles)
    assert cli("info").exit_code == 0  # the listing leaves the dataset out and goes on


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "\udcff", "[1, 2]", "{"])
def test_unreadable_json_is_one_line(cli, home, trained_run, text):
    path = home / "runs" / trained_run / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    _one_line_error(cli("info", trained_run), "config.json is corrupt", f"nanogpt rm {trained_run}")
    listing = cli("info")
    assert listing.exit_code == 0 and trained_run in listing.stdout  # still listed, so it can be removed


def test_a_config_json_field_of_the_wrong_type(cli, home, trained_run):
    path = home / "runs" / trained_run / "config.json"
    config = json.loads(path.read_text())
    config["model_config"]["n_layer"] = "two"
    path.write_text(json.dumps(config))
    _one_line_error(cli("info", trained_run), "model_config.n_layer must be an integer, got 'two'")


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda c: c["model_config"].update(n_head=0), ["model_config.n_head must be at least 1"]),
        (lambda c: c["model_config"].update(n_embd="16"), ["model_config.n_embd must be an integer"]),
        (lambda c: c["model_config"].update(n_layer=3), ["n_layer is 3, but the weights hold 1 blocks"]),
        (lambda c: c["model_config"].update(pos="rope", block_size=200_000_000), ["position tables far larger"]),
        (lambda c: c.update(tokenizer={"kind": "tiktoken"}), ["tiktoken tokenizer has no name"]),
        (lambda c: c["model"].update({"lm_head.weight": "x"}), ["not a table of named tensors"]),
        (lambda c: c.pop("model_config"), ["model_config is missing"]),
        (lambda c: c["model_config"].update(softcap=float("inf")), ["softcap must be a finite number"]),
    ],
)
def test_a_corrupt_checkpoint_is_one_line_naming_the_field(cli, home, trained_run, change, needles):
    _edit_checkpoint(home / "runs" / trained_run / "best.pt", change)
    line = _one_line_error(cli("sample", "--run", trained_run, "--max-new-tokens", "5"), "best.pt is corrupt",
                           *needles)
    assert "--checkpoint last" in line  # the way back
    assert cli("sample", "--run", trained_run, "--max-new-tokens", "5", "--checkpoint", "last").exit_code == 0


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda c: c["train_state"].pop("loss_count"), "holds weights only"),
        (lambda c: c["train_state"].update(iteration=-5), "train_state.iteration is negative"),
        (lambda c: c.update(optimizer={"adamw": {"state": {}, "param_groups": "x"}}), "optimizer state is malformed"),
        (lambda c: c["optimizer"]["adamw"]["param_groups"].clear(), "does not fit its own model or optimizer"),
    ],
)
def test_a_corrupt_resume_checkpoint_is_one_line_and_changes_nothing(cli, home, trained_run, change, needle):
    run = home / "runs" / trained_run
    _edit_checkpoint(run / "ckpt.pt", change)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    _one_line_error(cli("train", "--resume", "--run", trained_run, "--max-iters", "30"), needle)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_damaged_metrics_log_still_lists_and_resumes(cli, home, trained_run):
    path = home / "runs" / trained_run / "metrics.jsonl"
    rows = path.read_bytes().splitlines()
    damaged = [rows[0], b"\xff\xfe not utf-8", b'{"kind": [1], "iter": 3}', b'{"kind": "eval", "iter": "x"}',
               b"[" * 50_000, *rows[1:]]
    path.write_bytes(b"\n".join(damaged) + b"\n")
    for command in (["info"], ["info", trained_run], ["info", trained_run, "--csv"]):
        result = cli(*command)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert cli("train", "--resume", "--run", trained_run, "--max-iters", "25", "--quiet").exit_code == 0
    kept = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # well-formed rows only
    assert kept and all(isinstance(r["kind"], str) and isinstance(r["iter"], int) for r in kept)


def test_run_configs_that_are_not_small_regular_files_are_refused(cli, tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    _one_line_error(cli("train", "--config", deep, "--print-config"), "nested too deeply")
    if os.path.exists("/dev/zero"):
        _one_line_error(cli("train", "--config", "/dev/zero", "--print-config"), "not a regular file")
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as f:
        f.truncate(50 * 2**20)  # sparse: no disk used, and never read
    _one_line_error(cli("train", "--config", huge, "--print-config"), "more than the")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ("[train]\nbatch_size = 1000000000\n", "lower --batch-size"),
        ("[model]\nn_embd = 1000000000000\nn_head = 4\n", "lower --n-embd"),
        ("[model]\nsoftcap = inf\n", "softcap must be a finite number"),
        ("[train]\nlr = nan\n", "lr must be a finite number"),
        ("[train]\nseed = 99999999999999999999\n", "seed must be at most"),
    ],
)
def test_sizes_and_numbers_are_checked_before_anything_is_allocated(cli, tmp_path, small_text, values, needle, tiny):
    assert cli("prepare", small_text).exit_code == 0
    path = tmp_path / "run.toml"
    path.write_text(values)
    _one_line_error(cli("train", "--config", path, "--dataset", "poems", "--run", "big"), needle)


@pytest.mark.parametrize(("flag", "value"), [("--softcap", "inf"), ("--lr", "nan"), ("--grad-clip", "nan"),
                                             ("--batch-size", "1000000"), ("--seed", "99999999999999999999999")])
def test_flags_are_finite_and_fit(cli, small_text, tiny, flag, value):
    assert cli("prepare", small_text).exit_code == 0
    args = tiny[: tiny.index(flag)] + tiny[tiny.index(flag) + 2 :] if flag in tiny else tiny
    line = _one_line_error(cli("train", "--dataset", "poems", "--run", "x", *args, flag, value))
    assert flag in line or "--batch-size" in line


def test_print_config_writes_toml_that_reads_back_equal_for_any_text(cli, tmp_path):
    odd = "a\nb\t\"c\"\\ \x01\x7f é \U0001f600"
    result = cli("train", "--print-config", "--wandb-project", odd)
    assert result.exit_code == 0, result.output
    path = tmp_path / "run.toml"
    path.write_text(result.stdout, encoding="utf-8")
    assert read_run_file(path).values["wandb_project"] == odd
    assert cli("train", "--config", path, "--print-config").stdout == result.stdout


def test_malformed_options_and_commands_are_one_line(cli, trained_run):
    for args in (["sample", "--run", trained_run, "--max-new-tokens", "\u0661\u0662"], ["train", "--n-layer", "x"],
                 ["sample", "--max-new-tokens", "1e400"], ["--bogus"], ["trian"]):
        result = cli(*args)
        assert result.exit_code == 2 and result.stdout == "", result.output
        line = result.stderr.strip()
        assert "\n" not in line and line.startswith("error: ") and "--help`)" in line, line


def test_a_file_name_too_long_is_one_line(cli, tmp_path):
    result = cli("prepare", tmp_path / ("x" * 300 + ".txt"))
    _one_line_error(result)


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs")
def test_a_checkpoint_that_is_not_a_file_stops_resume_before_it_writes(cli, home, trained_run):
    run = home / "runs" / trained_run
    (run / "best.pt").unlink()
    (run / "best.pt").mkdir()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = cli("train", "--resume", "--run", trained_run, "--max-iters", "30")
    _one_line_error(result, "best.pt is not a regular file")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_token_file_too_big_to_scan_is_checked_batch_by_batch(cli, home, trained_run, monkeypatch, tiny):
    import nanogpt_cli.dataset

    monkeypatch.setattr(nanogpt_cli.dataset, "SCAN_ON_OPEN_BYTES", 0)  # every file counts as big
    path = home / "datasets" / "poems" / "train.bin"
    path.write_bytes(b"\xff\xff" * (path.stat().st_size // 2))  # every id out of range: the first batch meets one
    _one_line_error(cli("train", "--dataset", "poems", "--run", "other", *tiny), "beyond the vocabulary")
    _one_line_error(cli("eval", "--run", trained_run, "--split", "train", "--iters", "1"), "beyond the vocabulary")
