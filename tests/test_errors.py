"""Every mistake a user can make: one clear line on stderr, exit 1, no traceback, nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

# (command line, words the error must contain). "{text}", "{empty}", "{binary}", "{folder}" are files
# made by the test; the 'poems' dataset and the 'tiny' run exist.
CASES = [
    (["train", "--dataset", "poems", "--n-embd", "30", "--n-head", "4"], "must be divisible by --n-head"),
    (["train", "--dataset", "nothing"], "dataset 'nothing' is not prepared; run `nanogpt prepare"),
    (["train", "--dataset", "poems", "--block-size", "100000"], "use a smaller --block-size"),
    (["train", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "--device", "cuda"], "no CUDA GPU is available"),
    (["train", "--device", "tpu"], "unknown device"),
    (["train", "--dataset", "poems", "--dtype", "float16"], "float16 is not supported on the CPU"),
    (["train", "--dataset", "poems", "--dtype", "float8"], "unknown dtype"),
    (["train", "--dataset", "poems", "--n-layer", "0"], "--n-layer must be at least 1"),
    (["train", "--dataset", "poems", "--batch-size", "-3"], "--batch-size must be at least 1"),
    (["train", "--dataset", "poems", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["train", "--dataset", "poems", "--lr", "0"], "--lr must be positive"),
    (["train", "--dataset", "poems", "--peak-flops", "-1"], "--peak-flops must be positive, got -1.0"),
    (["train", "--dataset", "poems", "--grad-clip", "nan"], "--grad-clip must be a finite number, got nan"),
    (["train", "--dataset", "poems", "--muon-lr", "nan"], "--muon-lr must be a finite number"),
    (["train", "--dataset", "poems", "--softcap", "-1"], "--softcap must be 0 or more, got -1.0"),
    (["train", "--dataset", "poems", "--eval-iters", "10000000"], "--eval-iters must be in [1, 1,000,000], got"),
    (["sample", "--prompt-file", "no\nsuch\x1b[2J.txt"], "no\\nsuch\\x1b[2J.txt"),  # one line, no escape sequence
    (["train", "--dataset", "poems", "--model", "lstm"], "unknown model 'lstm'"),
    (["train", "--dataset", "poems", "--run", "tiny"], "run 'tiny' already exists"),
    (["train", "--dataset", "poems", "--run", "../escape"], "invalid run name"),
    (["prepare", "{text}.missing"], "does not exist"),
    (["prepare", "{empty}"], "is empty"),
    (["prepare", "{binary}"], "looks like a binary file (it contains NUL bytes)"),
    (["prepare", "{latin1}"], "is not UTF-8 text (bad byte at offset 3)"),
    (["prepare", "{folder}"], "no text files matching '*' in"),
    (["prepare", "{text}", "--tokenizer", "klingon"], "unknown tokenizer 'klingon': use 'char', 'gpt2', 'bpe:N'"),
    (["prepare", "{text}", "--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    (["prepare", "{tiny}"], "split would hold 0 token(s); use more text"),
    (["prepare", "http://127.0.0.1:9/data.txt"], "cannot download http://127.0.0.1:9/data.txt"),
    (["sample", "--run", "ghost"], "run 'ghost' does not exist"),
    (["sample", "--prompt", "the {fox}"], "2 character(s) this model's vocabulary lacks: '{', '}'"),
    (["sample", "--temperature", "-1"], "--temperature must be 0 or more, got -1.0"),
    (["sample", "--temperature", "nan"], "--temperature must be a finite number, got nan"),
    (["sample", "--max-new-tokens", "-1"], "--max-new-tokens must be 0 or more, got -1"),
    (["eval", "--iters", "0"], "--iters must be at least 1, got 0"),
    (["eval", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["sample", "--top-k", "0"], "--top-k must be at least 1"),
    (["sample", "--num-samples", "0"], "--num-samples must be at least 1"),
    (["sample", "--prompt", "a", "--prompt-file", "{text}"], "either --prompt or --prompt-file"),
    (["sample", "--checkpoint", "middle"], "unknown checkpoint 'middle'"),
    (["eval", "--split", "test"], "--split must be train or val"),
    (["eval", "--text-file", "{latin1}"], "is not UTF-8 text"),
    (["eval", "--text-file", "{folder}"], "is a folder; pass a UTF-8 text file"),
    (["sample", "--prompt-file", "{folder}"], "is a folder; pass a UTF-8 text file"),
    (["info", "nobody"], "no run or dataset named 'nobody'"),
    (["train", "--resume", "--preset", "cpu"], "--preset cannot be combined with --resume"),
    (["train", "--resume", "--overwrite"], "--resume continues a run and --overwrite replaces it"),
    (["train", "--run", "tiny", "--resume", "--n-layer", "3"], "--n-layer 3 would change run 'tiny' (it has 1)"),
    (["train", "--run", "tiny", "--resume", "--block-size", "64"], "--block-size 64 would change run 'tiny'"),
    (["train", "--run", "ghost", "--resume"], "run 'ghost' does not exist"),
    (["train", "--run", "tiny", "--resume"], "already finished 20 of 20 iterations; pass a larger --max-iters"),
    (["train", "--dataset", "poems", "--keep", "0"], "--keep must be at least 1"),
    (["sample", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["sample", "--interactive", "--prompt", "the"], "--interactive reads its prompts from stdin"),
    (["sample", "--prompt-file", "{text}.missing"], "does not exist; pass the path of a UTF-8 text file"),
    (["eval", "--text-file", "{text}.missing"], "does not exist; pass the path of a UTF-8 text file"),
    (["export", "tiny", "{text}"], "is a file; give the path of a folder to export into"),
    (["train", "--dataset", "my play"], "invalid dataset name 'my play'"),
    (["train", "--dataset", "my play"], "did you mean 'my-play'?"),
]


@pytest.fixture
def files(tmp_path, small_text):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "tiny.txt").write_text("a")
    (tmp_path / "latin1.txt").write_bytes("café au lait, crème brûlée\n".encode("latin-1") * 20)
    (tmp_path / "folder").mkdir()
    return {"text": str(small_text), "empty": str(tmp_path / "empty.txt"), "binary": str(tmp_path / "binary.bin"),
            "folder": str(tmp_path / "folder"), "tiny": str(tmp_path / "tiny.txt"),
            "latin1": str(tmp_path / "latin1.txt")}


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_user_error_is_one_clear_line(cli, trained_run, files, args, message):
    args = [a.format(**files) if a.startswith("{") and "}" in a else a for a in args]
    result = cli(*args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_errors_before_any_run_exists(cli):
    result = cli("sample")
    assert result.exit_code == 1 and "no trained run found; train one first" in result.stderr
    result = cli("eval")
    assert result.exit_code == 1 and "no trained run found" in result.stderr


def test_corrupt_checkpoint_is_an_error_not_a_crash(cli, home, trained_run):
    (home / "runs" / trained_run / "best.pt").write_bytes(b"\x00garbage")
    result = cli("sample", "--max-new-tokens", "5")
    assert result.exit_code == 1 and "corrupt" in result.stderr and "Traceback" not in result.output


def test_malicious_checkpoint_is_refused_and_never_run(cli, home, trained_run, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"format_version": 1, "model": Exploit()}, home / "runs" / trained_run / "best.pt")
    result = cli("eval", "--iters", "1")
    assert result.exit_code == 1 and "refusing to load" in result.stderr
    assert not marker.exists()


def test_overwrite_replaces_a_run(cli, home, trained_run, tiny):
    result = cli("train", "--dataset", "poems", "--run", trained_run, "--overwrite", *tiny)
    assert result.exit_code == 0, result.output


def test_bad_flag_type_is_a_usage_error(cli):
    result = cli("train", "--n-layer", "many")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_debug_shows_the_traceback(cli):
    result = cli("--debug", "train", "--preset", "huge")
    assert result.exit_code == 1 and result.exception is not None
    assert "unknown preset" in str(result.exception)


def test_real_command_errors_have_no_traceback(home, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nanogpt_cli", "prepare", str(tmp_path / "nope.txt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_missing_checkpoint(cli, home, trained_run):
    for name in ("best.pt", "ckpt.pt"):
        (home / "runs" / trained_run / name).unlink()
    result = cli("sample", "--run", trained_run)
    assert result.exit_code == 1 and "run 'tiny' has no best checkpoint (best.pt); train it first" in result.stderr


def test_a_run_stopped_before_its_first_evaluation_has_no_best(cli, home, trained_run):
    """Only ckpt.pt, as a run interrupted before it evaluated past iteration 0 leaves: asking for the
    best is one line naming --checkpoint last (never a silent switch), and info shows no best val."""
    (home / "runs" / trained_run / "best.pt").unlink()
    for command in (["sample", "--run", trained_run], ["eval", "--run", trained_run],
                    ["export", trained_run, home / "out"]):
        result = cli(*command)
        assert result.exit_code == 1 and "run 'tiny' has no best checkpoint yet" in result.stderr
        assert "use --checkpoint last for its last one (ckpt.pt)" in result.stderr
    result = cli("sample", "--run", trained_run, "--checkpoint", "last", "--max-new-tokens", "5")
    assert result.exit_code == 0
    result = cli("train", "--init-from", trained_run, "--dataset", "poems", "--run", "ft")
    assert result.exit_code == 1 and f"use --init-from {home / 'runs' / trained_run / 'ckpt.pt'}" in result.stderr
    listing = json.loads(cli("info", "--json").stdout)["runs"][0]
    assert listing["name"] == trained_run and listing["best_val_loss"] is None


def test_unwritable_data_dir(cli, tmp_path, monkeypatch, small_text):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NANOGPT_HOME", str(blocker / "home"))
    result = cli("prepare", small_text)
    assert result.exit_code == 1
    assert "cannot create directory" in result.stderr and "set NANOGPT_HOME to a writable folder" in result.stderr


def test_dataset_prepared_again_with_another_tokenizer(cli, home, trained_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("completely different letters: XYZ QRS " * 200, encoding="utf-8")
    # prepare refuses to do this (tests/test_prepare.py); a dataset folder replaced by hand is caught too.
    assert cli("prepare", other, "--name", "elsewhere").exit_code == 0
    shutil.rmtree(home / "datasets" / "poems")
    shutil.copytree(home / "datasets" / "elsewhere", home / "datasets" / "poems")
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "30")
    assert result.exit_code == 1 and "prepared again with a different tokenizer" in result.stderr
    result = cli("eval", "--run", trained_run)
    assert result.exit_code == 1 and "different tokenizer" in result.stderr


@pytest.mark.parametrize("args", [["--dataset", "nothing", "--run", "bad2"], ["--dataset", "nothing"],
                                  ["--dataset", "poems", "--run", "bad3", "--block-size", "100000"]])
def test_a_train_that_fails_before_its_first_step_leaves_no_run_folder(cli, home, trained_run, args):
    before = sorted(p.name for p in (home / "runs").iterdir())
    result = cli("train", *args)
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert sorted(p.name for p in (home / "runs").iterdir()) == before == ["tiny"]


def test_disk_full_while_saving_a_checkpoint(cli, home, trained_run, monkeypatch):
    import nanogpt_cli.checkpoint as checkpoint

    before = (home / "runs" / trained_run / "ckpt.pt").read_bytes()

    def full_disk(payload, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4288 vs 4194")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "30", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"cannot write checkpoint {home / 'runs' / trained_run}" in line and "the disk is full" in line
    assert "the previous checkpoint is kept (the last good one)" in line
    assert (home / "runs" / trained_run / "ckpt.pt").read_bytes() == before
    assert not list((home / "runs" / trained_run).glob(".*.tmp-*"))


def test_resume_in_a_read_only_home_is_one_line(cli, home, trained_run, monkeypatch):
    import nanogpt_cli.paths as paths

    open_own = paths.open_own

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(30, "Read-only file system")
        return open_own(path, *args, **kwargs)

    monkeypatch.setattr(paths, "open_own", read_only)
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "30", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == (f"error: cannot write to run folder {home / 'runs' / trained_run}: Read-only file "
                                     "system; set NANOGPT_HOME to a writable folder")


def test_a_closed_pipe_is_a_normal_end(home, trained_run):
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "nanogpt_cli", "sample", "--max-new-tokens", "100000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(10)) == 10  # like `| head -c 10`: read a little, then close the pipe
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b""


def test_mistyped_run_and_dataset_names_get_a_suggestion(cli, home, trained_run, tmp_path):
    runs = "(`nanogpt info` lists the runs)"
    for command, line in [
        (["sample", "--run", "tiyn"], f"run 'tiyn' does not exist; did you mean 'tiny'? {runs}"),
        (["eval", "--run", "TINY"], f"run 'TINY' does not exist; did you mean 'tiny'? {runs}"),
        (["plot", "tny"], f"run 'tny' does not exist; did you mean 'tiny'? {runs}"),
        (["export", "tinny", tmp_path / "out"], f"run 'tinny' does not exist; did you mean 'tiny'? {runs}"),
        (["rm", "tinyy", "--yes"], f"run 'tinyy' does not exist; did you mean 'tiny'? {runs}"),
        (["mv", "tin", "other"], f"run 'tin' does not exist; did you mean 'tiny'? {runs}"),
        (["train", "--run", "tiy", "--resume"], f"run 'tiy' does not exist; did you mean 'tiny'? {runs}"),
        (["info", "poem"], "no run or dataset named 'poem'; did you mean 'poems'? (`nanogpt info` lists them)"),
        (["rm", "--dataset", "Poems", "--yes"], "dataset 'Poems' does not exist; did you mean 'poems'?"),
        (["train", "--dataset", "POEMS"], "dataset 'POEMS' is not prepared; did you mean 'poems'?"),
        (["train", "--init-from", "tiyn", "--dataset", "poems"], "nor a run name; did you mean 'tiny'?"),
        (["train", "--init-from", "gpt2-medum", "--dataset", "poems"], "did you mean 'gpt2-medium'?"),
        (["sample", "--run", "zzzzzzzz"], f"run 'zzzzzzzz' does not exist {runs}"),  # nothing close: no guess
    ]:
        result = cli(*command)
        assert result.exit_code == 1 and line in result.stderr, (command, result.stderr)


@pytest.mark.parametrize("args", [["train", "--nproc", "0"], ["train", "--nproc", "-1"],
                                  ["train", "--sample-tokens", "-1"], ["ladder", "--iters", "0"],
                                  ["sample", "--threads", "0"]])
def test_counts_below_their_range_are_usage_errors(cli, args):
    result = cli(*args)
    assert result.exit_code == 2 and "greater than or equal to" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ranges_are_in_the_help_and_the_printed_config(cli, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "250")
    help_text = re.sub(r"[\s│]+", " ", cli("train", "--help").stdout)
    assert "Must be in [1, 1,000,000]" in help_text and "Must be positive" in help_text
    printed = cli("train", "--print-config").stdout
    assert "# Batches per loss estimate. Must be in [1, 1,000,000]." in printed
    for command, shown in (("sample", "Nucleus sampling: only the most likely tokens whose probabilities add up to p. "
                                      "Must be in (0, 1]."),
                           ("sample", "Sampling temperature; 0 is greedy. Must be 0 or more."),
                           ("eval", "Sequences per batch. Must be at least 1.")):
        assert shown in re.sub(r"[\s│]+", " ", cli(command, "--help").stdout)


def test_a_vanishing_temperature_is_greedy_not_broken_weights(cli, trained_run):
    greedy = cli("sample", "--temperature", "0", "--max-new-tokens", "20", "--seed", "1")
    tiny = cli("sample", "--temperature", "5e-324", "--max-new-tokens", "20", "--seed", "1")
    assert greedy.exit_code == tiny.exit_code == 0, tiny.stderr
    assert tiny.stdout == greedy.stdout


def test_an_empty_val_split_is_an_error_not_a_loss_of_minus_zero(cli, home, trained_run):
    data = home / "datasets" / "poems"
    (data / "val.bin").write_bytes(b"")
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "val_tokens": 0}))
    result = cli("eval", "--run", trained_run, "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert "the val split of dataset 'poems' holds 0 token(s); there is nothing to evaluate" in result.stderr
