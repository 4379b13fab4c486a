"""A run folder loses nothing. `train --run X --overwrite` is a transaction: the old run stays whole
until the new one has written its first checkpoint. A new run that fails before that, in any of the
ways a user can make it fail, or a process killed before that, leaves the old run as it was. And no
file of a run is written through a symbolic link that leads out of its folder."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nanogpt_cli import paths


def _snapshot(run: str) -> dict[str, str]:
    folder = paths.run_dir(run)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
            and p.name != ".lock"}


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--dataset", "nope"], "dataset 'nope' is not prepared"),
        (["--dataset", "poems", "--block-size", "100000"], "needs more than 100000 tokens"),
        (["--dataset", "broken"], "meta.json is corrupt: it is not valid JSON"),
        (["--dataset", "poems", "--init-from", "other-tokens"], "tokenizer"),
    ],
)
def test_a_failed_overwrite_leaves_the_old_run_as_it_was(
    cli, home, trained_run, small_text, tmp_path, flags, error, tiny
):
    before = _snapshot(trained_run)
    assert {"ckpt.pt", "best.pt", "config.json", "metrics.jsonl"} <= set(before)
    (home / "datasets" / "broken").mkdir(parents=True)
    (home / "datasets" / "broken" / "meta.json").write_text("{not json")
    if "other-tokens" in flags:  # a run trained with another vocabulary
        (tmp_path / "digits.txt").write_text("0123456789\n" * 300)
        assert cli("prepare", tmp_path / "digits.txt").exit_code == 0
        assert cli("train", "--dataset", "digits", "--run", "other-tokens", *tiny).exit_code == 0
    args = [a for a in tiny if a not in ("--quiet",)]
    result = cli("train", "--run", trained_run, "--overwrite", *args, *flags)
    assert result.exit_code == 1 and error in result.output and "Traceback" not in result.output
    assert _snapshot(trained_run) == before
    assert not (paths.run_dir(trained_run) / ".replaced").exists()
    assert cli("sample", "--run", trained_run, "--max-new-tokens", "5").exit_code == 0


def test_a_successful_overwrite_replaces_the_run(cli, home, trained_run, tiny):
    before = _snapshot(trained_run)
    result = cli("train", "--dataset", "poems", "--run", trained_run, "--overwrite", *tiny, "--seed", "7")
    assert result.exit_code == 0, result.output
    after = _snapshot(trained_run)
    assert after["ckpt.pt"] != before["ckpt.pt"] and not (paths.run_dir(trained_run) / ".replaced").exists()
    assert json.loads((paths.run_dir(trained_run) / "config.json").read_text())["train_config"]["seed"] == 7


def test_an_overwrite_killed_before_its_first_checkpoint_gives_the_old_run_back(cli, home, trained_run):
    """kill -9 during the new run's first steps: the old run's files wait in .replaced/, and the next
    command that opens the run puts them back."""
    old_metrics = (paths.run_dir(trained_run) / "metrics.jsonl").read_text()
    old_best = _snapshot(trained_run)["best.pt"]
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    # a first checkpoint far away: the process is killed while training towards it
    command = [sys.executable, "-m", "nanogpt_cli", "train", "--dataset", "poems", "--run", trained_run, "--overwrite",
               "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--max-iters", "100000",
               "--eval-interval", "50000", "--eval-iters", "1", "--log-interval", "1", "--quiet"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = paths.run_dir(trained_run) / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:  # until the new run has taken a few steps
            if metrics.exists() and metrics.read_text().count('"kind": "train"') >= 3:
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (paths.run_dir(trained_run) / ".replaced" / "best.pt").exists()  # the old run, set aside, whole
    assert not (paths.run_dir(trained_run) / "ckpt.pt").exists()
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "21", "--quiet", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output  # the old run, given back and resumed from its iteration 20
    assert not (paths.run_dir(trained_run) / ".replaced").exists()
    lines = metrics.read_text()
    assert lines.startswith(old_metrics) and '"iter": 21' in lines and '"iter": 100' not in lines
    assert old_best in _snapshot(trained_run).values() or "best.pt" in _snapshot(trained_run)


@pytest.mark.parametrize("name", ["config.json", "config.toml", "metrics.jsonl", ".lock"])
def test_a_run_file_that_is_a_link_out_of_the_folder_is_never_written_through(cli, home, trained_run, tmp_path, name):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not nanogpt's\n")
    link = paths.run_dir(trained_run) / name
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "30", "--quiet", "--sample-tokens", "0")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == (f"error: {link} is a symbolic link; nanogpt writes only files of its own in run "
                                     "and dataset folders: remove the link (its target is left alone)")
    assert outside.read_text() == "not nanogpt's\n"


def test_mv_and_rm_of_a_linked_run_act_on_the_link_only(cli, home, trained_run, tmp_path):
    elsewhere = tmp_path / "kept-elsewhere"
    paths.run_dir(trained_run).rename(elsewhere)
    paths.run_dir("linked").symlink_to(elsewhere, target_is_directory=True)
    config = (elsewhere / "config.json").read_text()
    assert cli("mv", "linked", "renamed").exit_code == 0
    assert paths.run_dir("renamed").is_symlink() and (elsewhere / "config.json").read_text() == config
    assert cli("rm", "renamed", "--yes").exit_code == 0
    assert not paths.run_dir("renamed").exists() and (elsewhere / "config.json").read_text() == config



@pytest.mark.parametrize(("change", "message"), [
    ("dtype", "meta.json is corrupt: dtype 'object' is not one of uint16, uint32; prepare the dataset 'poems' again"),
    ("truncate", "val.bin is corrupt: 0 bytes, where meta.json says"),
    ("odd", "val.bin is corrupt: 3 bytes"),
])
def test_a_corrupt_dataset_is_one_line_not_a_crash(cli, home, trained_run, change, message):
    folder = home / "datasets" / "poems"
    if change == "dtype":
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "dtype": "object"}))
    else:
        (folder / "val.bin").write_bytes(b"" if change == "truncate" else b"abc")
    result = cli("eval", "--run", trained_run, "--iters", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
