"""Data-parallel training on the CPU with gloo: two processes equal one with twice the accumulation,
their checkpoint loads in a single process, and a distributed run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ARGS = ["--preset", "nanogpt-cpu", "--dataset", "poems", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
        "--block-size", "32", "--batch-size", "4", "--grad-accum", "2", "--eval-interval", "5", "--eval-iters", "2",
        "--log-interval", "1", "--seed", "3", "--sample-tokens", "0", "--quiet"]


def _curve(home, run):
    rows = [json.loads(line) for line in (home / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    return ([r["loss"] for r in rows if r["kind"] == "train"],
            [r["val_loss"] for r in rows if r["kind"] == "eval"])


def _nanogpt(home, *args, torchrun: int = 0):
    """`nanogpt ARGS` in a subprocess; with torchrun=N, `torchrun --nproc_per_node=N -m nanogpt_cli -- ARGS`."""
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}", "-m", "nanogpt_cli",
                "--"]
    return subprocess.run([sys.executable, *(launcher if torchrun else ["-m", "nanogpt_cli"]), *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_match_one_with_twice_the_accumulation(cli, home, small_text):
    assert cli("prepare", small_text).exit_code == 0
    single = cli("train", "--run", "single", "--max-iters", "10", *ARGS)
    assert single.exit_code == 0, single.output

    ddp = _nanogpt(home, "train", "--nproc", "2", "--run", "ddp", "--max-iters", "10", *ARGS)
    assert ddp.returncode == 0, ddp.stderr
    assert "starting 2 processes: torchrun --standalone --nproc_per_node=2 -m nanogpt_cli -- train" in ddp.stderr
    (train_1, val_1), (train_2, val_2) = _curve(home, "single"), _curve(home, "ddp")
    assert len(train_2) == 10 and len(val_2) == 3  # one process wrote the metrics, once
    assert torch.allclose(torch.tensor(train_2), torch.tensor(train_1), rtol=1e-4)
    assert torch.allclose(torch.tensor(val_2), torch.tensor(val_1), rtol=1e-4)

    # The checkpoint of the distributed run loads in a single process.
    sample = cli("sample", "--run", "ddp", "--max-new-tokens", "10", "--prompt", "the")
    assert sample.exit_code == 0 and sample.stdout.startswith("the")

    # And the distributed run resumes (distributed again), continuing the same curve.
    longer = cli("train", "--run", "single20", "--max-iters", "20", *ARGS)
    assert longer.exit_code == 0
    # (torchrun started directly this time, as a multi-node user would)
    resumed = _nanogpt(home, "train", "--run", "ddp", "--resume", "--max-iters", "20", torchrun=2)
    assert resumed.returncode == 0, resumed.stderr
    (train_20, val_20), (train_r, val_r) = _curve(home, "single20"), _curve(home, "ddp")
    assert len(train_r) == 20
    assert torch.allclose(torch.tensor(train_r), torch.tensor(train_20), rtol=1e-4)
    assert torch.allclose(torch.tensor(val_r), torch.tensor(val_20), rtol=1e-4)


def test_grad_accum_must_split_evenly_across_processes(home, small_text, cli):
    assert cli("prepare", small_text).exit_code == 0
    odd = [a if i != ARGS.index("--grad-accum") + 1 else "3" for i, a in enumerate(ARGS)]
    result = cli("train", "--nproc", "2", "--run", "odd", "--max-iters", "2", *odd)
    assert result.exit_code == 1  # refused before any process starts
    assert "starting 2 processes" not in result.stderr
    assert result.stderr.strip() == "error: --grad-accum 3 must be divisible by the number of processes (2): " \
                                    "each process does its share of the micro-steps"


def test_a_presets_accumulation_is_shared_out():
    from nanogpt_cli.plan import plan_run

    assert plan_run("cpu", {}, world=2).train_config.grad_accum == 2  # the preset's 1, rounded up
    assert plan_run("cpu", {"grad_accum": 4}, world=2).train_config.grad_accum == 4
