"""Runs survive interruption: exact resume after SIGINT or SIGKILL, atomic checkpoint writes, run
locks, checkpoint history, NaN guards and the rules for what a resume may change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# Small but slow enough (a few ms per step) that a test can interrupt it mid-run; dropout on, so the
# dropout RNG must be restored too.
RECIPE = ["--preset", "nanogpt-cpu"]  # nanoGPT's network and AdamW: Muon's exact resume is in test_optim.py
RUN_ARGS = ["--dataset", "poems", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
            "--batch-size", "8", "--dropout", "0.1", "--max-iters", "240", "--eval-interval", "40", "--eval-iters", "2",
            "--log-interval", "1", "--seed", "5", "--sample-tokens", "0", "--quiet"]


def _rows(home: Path, run: str) -> tuple[list, list]:
    rows = [json.loads(line) for line in (home / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    train = [(r["iter"], r["loss"]) for r in rows if r["kind"] == "train"]
    evals = [(r["iter"], r["train_loss"], r["val_loss"]) for r in rows if r["kind"] == "eval"]
    return train, evals


def _weights(home: Path, run: str, name: str = "ckpt.pt") -> dict:
    return torch.load(home / "runs" / run / name, weights_only=True)["model"]


def _last_iter(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
        return json.loads(lines[-1])["iter"] if lines else -1
    except (OSError, ValueError, KeyError):
        return -1


def _start_and_stop(home: Path, run: str, extra: list[str], at_iter: int, sig: int) -> subprocess.CompletedProcess:
    """Start `nanogpt train` in a subprocess and send `sig` once it has logged iteration `at_iter`."""
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "nanogpt_cli", "train", "--run", run, *RECIPE, *RUN_ARGS, *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = home / "runs" / run / "metrics.jsonl"
    deadline = time.time() + 120
    while _last_iter(metrics) < at_iter and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, write_text):
    """The same run, never interrupted (trained once for the module, in a home of its own)."""
    from typer.testing import CliRunner

    from nanogpt_cli.cli import app

    home = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NANOGPT_HOME", str(home))
        runner = CliRunner()
        assert runner.invoke(app, ["prepare", str(write_text(home / "poems.txt"))]).exit_code == 0
        result = runner.invoke(app, ["train", "--run", "reference", *RECIPE, *RUN_ARGS])
        assert result.exit_code == 0, result.output
    return _rows(home, "reference"), _weights(home, "reference")


@pytest.fixture
def poems(cli, small_text) -> str:
    assert cli("prepare", small_text).exit_code == 0
    return "poems"


def _assert_same_as_reference(home, run, reference):
    (train_ref, evals_ref), weights_ref = reference
    train, evals = _rows(home, run)
    assert train == train_ref  # every per-iteration loss, bit for bit
    assert evals == evals_ref
    weights = _weights(home, run)
    assert all(torch.equal(weights[k], weights_ref[k]) for k in weights_ref)


def _train_until_signalled(cli, monkeypatch, signal_at, run: str, extra: list[str], at_iter: int, *signals: int):
    with monkeypatch.context() as patch:
        signal_at(patch, at_iter, *signals)
        recipe = [] if "--resume" in extra else RECIPE  # a resumed run keeps its own (no --preset then)
        result = cli("train", "--run", run, *recipe, *RUN_ARGS, *extra)
    return subprocess.CompletedProcess([], result.exit_code, result.stdout, result.stderr)


def test_sigint_twice_then_resume_equals_the_uninterrupted_run(cli, home, poems, reference, monkeypatch, signal_at):
    first = _train_until_signalled(cli, monkeypatch, signal_at, "stopped", [], 30, signal.SIGINT)
    assert first.returncode == 130, first.stderr
    assert "resume with: nanogpt train --run stopped --resume" in first.stderr
    assert "Traceback" not in first.stderr
    stopped_at = torch.load(home / "runs" / "stopped" / "ckpt.pt", weights_only=True)["train_state"]["iteration"]
    assert 30 <= stopped_at < 240

    second = _train_until_signalled(
        cli, monkeypatch, signal_at, "stopped", ["--resume"], stopped_at + 50, signal.SIGINT
    )
    assert second.returncode == 130, second.stderr
    again = torch.load(home / "runs" / "stopped" / "ckpt.pt", weights_only=True)["train_state"]["iteration"]
    assert again > stopped_at

    result = cli("train", "--run", "stopped", "--resume", "--quiet", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output
    _assert_same_as_reference(home, "stopped", reference)


def test_sigkill_then_resume_equals_the_uninterrupted_run(cli, home, poems, reference):
    killed = _start_and_stop(home, "killed", [], at_iter=100, sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(home / "runs" / "killed" / "ckpt.pt", weights_only=True)["train_state"]["iteration"]
    assert saved % 40 == 0 and saved >= 80  # the last periodic checkpoint

    result = cli("train", "--resume", "--run", "killed", "--quiet", "--sample-tokens", "0")  # the lock died with it
    assert result.exit_code == 0, result.output
    _assert_same_as_reference(home, "killed", reference)


def test_sigterm_saves_like_ctrl_c(home, small_text, cli, monkeypatch, signal_at):
    assert cli("prepare", small_text).exit_code == 0
    stopped = _train_until_signalled(cli, monkeypatch, signal_at, "termed", [], 20, signal.SIGTERM)
    assert stopped.returncode == 130 and "resume with: nanogpt train --run termed --resume" in stopped.stderr
    state = torch.load(home / "runs" / "termed" / "ckpt.pt", weights_only=True)["train_state"]
    assert state["iteration"] >= 20


def test_a_second_ctrl_c_stops_at_once_and_leaves_checkpoints_whole(home, small_text, cli, monkeypatch, signal_at):
    from nanogpt_cli.checkpoint import load_checkpoint

    assert cli("prepare", small_text).exit_code == 0
    # Past the first periodic checkpoint, two Ctrl-Cs in a row.
    stopped = _train_until_signalled(cli, monkeypatch, signal_at, "twice", [], 45, signal.SIGINT, signal.SIGINT)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr
    run_dir = home / "runs" / "twice"
    assert load_checkpoint(run_dir / "ckpt.pt")["train_state"]["iteration"] >= 40  # whole, whichever it is
    assert not list(run_dir.glob(".*.tmp-*"))  # no half-written file left behind


def test_resume_may_extend_the_schedule_but_not_change_the_model(cli, home, trained_run):
    result = cli("train", "--run", trained_run, "--resume")
    assert result.exit_code == 1 and "already finished 20 of 20 iterations" in result.stderr

    result = cli("train", "--run", trained_run, "--resume", "--n-embd", "32")
    assert result.exit_code == 1 and "--n-embd 32 would change run 'tiny' (it has 16)" in result.stderr

    result = cli("train", "--resume", "--max-iters", "30", "--quiet", "--sample-tokens", "0")  # the latest run
    assert result.exit_code == 0, result.output
    train, evals = _rows(home, trained_run)
    assert [e[0] for e in evals] == [0, 10, 20, 30]
    assert torch.load(home / "runs" / trained_run / "ckpt.pt", weights_only=True)["train_state"]["iteration"] == 30


def test_keep_n_checkpoints(cli, home, small_text):
    cli("prepare", small_text)
    args = ["--dataset", "poems", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
            "--batch-size", "4", "--max-iters", "50", "--eval-interval", "10", "--eval-iters", "1", "--keep", "3",
            "--sample-tokens", "0", "-q"]
    assert cli("train", "--run", "kept", *args).exit_code == 0
    run_dir = home / "runs" / "kept"
    assert sorted(p.name for p in run_dir.glob("ckpt-*.pt")) == [
        "ckpt-00000030.pt",
        "ckpt-00000040.pt",
        "ckpt-00000050.pt",
    ]
    old = torch.load(run_dir / "ckpt-00000030.pt", weights_only=True)
    assert old["train_state"]["iteration"] == 30 and (run_dir / "ckpt.pt").is_file() and (run_dir / "best.pt").is_file()


def test_a_second_train_of_the_same_run_is_refused(cli, home, trained_run):
    from nanogpt_cli.runlock import run_lock

    with run_lock(home / "runs" / trained_run):
        result = cli("train", "--run", trained_run, "--resume", "--max-iters", "40")
    assert result.exit_code == 1
    assert f"is being trained by another process (pid {os.getpid()})" in result.stderr


def test_nan_loss_stops_the_run_unless_allowed(cli, home, small_text):
    cli("prepare", small_text)
    # An absurd learning rate without clipping blows the weights up within a few steps.
    args = ["--dataset", "poems", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
            "--batch-size", "4", "--max-iters", "30", "--eval-interval", "10", "--eval-iters", "1", "--log-interval",
            "1", "--warmup-iters", "0", "--lr", "1e30", "--min-lr", "1e30", "--grad-clip", "0", "--sample-tokens", "0",
            "-q"]
    result = cli("train", "--run", "boom", *args)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "became nan at iteration" in line or "became inf at iteration" in line
    assert "--allow-nan" in line and "Traceback" not in result.output
    assert not (home / "runs" / "boom" / "ckpt.pt").exists()  # nothing broken was saved

    result = cli("train", "--run", "boom2", *args, "--allow-nan")
    assert result.exit_code == 0, result.output
    sample = cli("sample", "--run", "boom2", "--max-new-tokens", "5")
    assert sample.exit_code == 1 and "not finite" in sample.stderr


WRITER = """
import sys, torch
from pathlib import Path
from nanogpt_cli.checkpoint import save_checkpoint
path = Path(sys.argv[1])
save_checkpoint(path, {"format_version": 1, "model": {"w": torch.ones(4)}, "tag": "first"})
print("ready", flush=True)
big = {"format_version": 1, "model": {"w": torch.zeros(64 * 1024 * 1024)}, "tag": "second"}
while True:
    save_checkpoint(path, big)
"""


def test_killing_a_writer_mid_write_keeps_a_complete_checkpoint(tmp_path):
    from nanogpt_cli.checkpoint import read_tensors_file

    path = tmp_path / "ckpt.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    tmp = tmp_path / f".ckpt.pt.tmp-{proc.pid}"
    while not (tmp.exists() and tmp.stat().st_size > 1_000_000) and time.time() < deadline:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    ckpt = read_tensors_file(path)  # still a whole checkpoint: the first, or a completed second
    assert ckpt["tag"] in ("first", "second")
    if ckpt["tag"] == "first":
        assert torch.equal(ckpt["model"]["w"], torch.ones(4))


def test_a_stop_during_an_evaluation_saves_it_as_due_and_resume_equals_the_run(cli, home, poems, reference,
                                                                                  monkeypatch, signal_at):
    # The signal arrives with the train row of iteration 120, just before its evaluation starts.
    first = _train_until_signalled(cli, monkeypatch, signal_at, "mid-eval", [], 120, signal.SIGTERM)
    assert first.returncode == 130 and "Traceback" not in first.stderr
    state = torch.load(home / "runs" / "mid-eval" / "ckpt.pt", weights_only=True)["train_state"]
    assert state["iteration"] == 120 and state["eval_pending"] is True
    assert [e[0] for e in _rows(home, "mid-eval")[1]] == [0, 40, 80]  # 120's evaluation did not finish
    result = cli("train", "--run", "mid-eval", "--resume", "--quiet", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output
    _assert_same_as_reference(home, "mid-eval", reference)  # its evaluation at 120 included


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_stops_a_long_evaluation_promptly(home, small_text, cli, signals):
    """An evaluation of a million batches used to ignore SIGTERM until it ended (hours): the signal
    only set a flag that the loop read between steps. One signal saves (the evaluation marked due);
    a second one right after stops at once, and whatever checkpoint is there is whole."""
    from nanogpt_cli.checkpoint import load_checkpoint

    assert cli("prepare", small_text).exit_code == 0
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    args = [*RECIPE, *RUN_ARGS, "--eval-iters", "1000000"]
    proc = subprocess.Popen([sys.executable, "-m", "nanogpt_cli", "train", "--run", "long-eval", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    config = home / "runs" / "long-eval" / "config.json"  # written as training starts, with iteration 0's evaluation
    deadline = time.time() + 120
    while not config.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(1.5)  # well inside that evaluation
    sent = time.time()
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    # A second signal after the first one's save has ended may meet the default handler: killed by it.
    assert proc.returncode in ((130,) if signals == 1 else (130, -signal.SIGTERM))
    assert time.time() - sent < 20 and "Traceback" not in err
    ckpt = home / "runs" / "long-eval" / "ckpt.pt"
    if signals == 1 or ckpt.exists():
        state = load_checkpoint(ckpt)["train_state"]
        assert state["iteration"] == 0 and state["eval_pending"] is True


def test_a_run_moved_while_its_resume_starts_is_one_line_and_nothing_is_lost(cli, home, trained_run, monkeypatch):
    """`mv` between planning the resume and taking the run's lock (a real race: mv two seconds into a
    starting `train --resume`) was a FileNotFoundError; now the run lock settles it in one line."""
    import nanogpt_cli.session as session

    plan_resume = session.plan_resume

    def planned_then_moved(*args, **kwargs):
        plan = plan_resume(*args, **kwargs)
        assert cli("mv", trained_run, "moved").exit_code == 0
        return plan

    monkeypatch.setattr(session, "plan_resume", planned_then_moved)
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "30")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"run '{trained_run}' was moved or removed while this command was starting" in result.stderr
    assert (home / "runs" / "moved" / "ckpt.pt").is_file() and not (home / "runs" / trained_run).exists()
