"""Learning speed on Tiny Shakespeare (char) on this machine: nanoGPT's CPU recipe against our `cpu`
preset, then an ablation of each option beyond nanoGPT at a fixed time budget.

    python benchmarks/speedrun.py [--budget 45] [--seeds 2] [--no-ablation] [--eval-interval 50]
                                  [--cpu-seeds 2 --variant 'swiglu=--mlp swiglu' ...]

Part 1 trains `--preset nanogpt-cpu` and then the default `--preset cpu`, one after the other in the
same run, each evaluating every --eval-interval steps (the same for both, so both pay the same for
evaluating), and reports from their metrics.jsonl: the training seconds until val loss <= 1.88, the
val loss at 60 s, and the `cpu` preset's val loss at the moment the `nanogpt-cpu` run finished
(interpolated linearly between the evaluations around it).

Part 2 (exercise 4 of the lecture: does one more feature improve your GPT?) trains nanoGPT's network
and recipe for a fixed wall-clock budget (`--preset nanogpt-cpu --time BUDGET`), and then the same
with each option switched on alone, for --seeds seeds each, interleaved seed by seed, and prints the
final val loss of each and its difference from the baseline.

Each training is a `nanogpt train` subprocess in a temporary NANOGPT_HOME. Print the CPU model with
the figures: these machines differ from day to day.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine

TARGET = 1.88
OPTIONS = {  # name: the flags that switch it on, alone, on top of nanoGPT's network and recipe
    "pos sinusoidal": ["--pos", "sinusoidal"],
    "pos rope": ["--pos", "rope"],
    "pos none": ["--pos", "none"],
    "norm rmsnorm": ["--norm", "rmsnorm"],
    "mlp gelu-tanh": ["--mlp", "gelu-tanh"],
    "mlp relu2": ["--mlp", "relu2"],
    "mlp swiglu": ["--mlp", "swiglu"],
    "qk-norm": ["--qk-norm"],
    "no-tie": ["--no-tie"],
    "softcap 15": ["--softcap", "15"],
    "schedule wsd": ["--schedule", "wsd"],
    "optimizer muon": ["--optimizer", "muon"],
}


def train(home: Path, run: str, args: list[str]) -> list[dict]:
    """`nanogpt train` in a subprocess; returns the run's eval rows (iter, val_loss, elapsed)."""
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    command = [sys.executable, "-m", "nanogpt_cli", "train", "--run", run, "--sample-tokens", "0", "-q", *args]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (home / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"]


def time_to(evals: list[dict], target: float) -> float | None:
    return next((r["elapsed"] for r in evals if r["val_loss"] <= target), None)


def loss_at(evals: list[dict], seconds: float) -> float | None:
    """Val loss at `seconds` of training, interpolated between the evaluations around it."""
    for before, after in zip(evals, evals[1:], strict=False):
        if before["elapsed"] <= seconds <= after["elapsed"]:
            share = (seconds - before["elapsed"]) / max(1e-9, after["elapsed"] - before["elapsed"])
            return before["val_loss"] + share * (after["val_loss"] - before["val_loss"])
    return evals[-1]["val_loss"] if evals and seconds >= evals[-1]["elapsed"] else None


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.3f}{unit}" if not unit else f"{value:.1f}{unit}"


def part1(home: Path, args, every: list[str], variants: dict[str, list[str]]) -> None:
    runs = {"nanogpt-cpu": train(home, "nanogpt-cpu", ["--preset", "nanogpt-cpu", *every])}
    for seed in range(1, args.cpu_seeds + 1):  # the variants interleaved, seed by seed
        for name, flags in variants.items():
            label = name if args.cpu_seeds == 1 else f"{name}, seed {seed}"
            seeded = ["--seed", str(seed)] if args.cpu_seeds > 1 else []
            runs[label] = train(home, f"{name}-{seed}", ["--preset", "cpu", *every, *seeded, *flags])
    finished = runs["nanogpt-cpu"][-1]["elapsed"]
    print(f"part 1: `nanogpt train --preset P --eval-interval {args.eval_interval}`; nanogpt-cpu finished "
          f"after {finished:.1f} s\n")
    print(f"| preset | s to val <= {TARGET} | val at 60 s | val when nanogpt-cpu finished | final val | s in all |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, evals in runs.items():
        print(f"| {name} | {fmt(time_to(evals, TARGET), ' s')} | {fmt(loss_at(evals, 60))} | "
              f"{fmt(loss_at(evals, finished))} | {evals[-1]['val_loss']:.3f} | {evals[-1]['elapsed']:.1f} |")
    ours, theirs = time_to(runs.get("cpu", []), TARGET), time_to(runs["nanogpt-cpu"], TARGET)
    if ours is not None:
        print(f"\ncpu reached {TARGET} after {ours:.1f} s: {ours / finished:.0%} of nanogpt-cpu's whole run"
              + (f" ({ours / theirs:.0%} of its time to {TARGET})" if theirs else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=45.0, help="seconds per ablation run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eval-interval", type=int, default=50)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="also train the cpu preset with these flags in part 1, e.g. 'relu2=--mlp relu2'")
    parser.add_argument("--cpu-seeds", type=int, default=1, help="seeds of the cpu preset (and variants) in part 1")
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS), help="part 2 with only these options")
    parser.add_argument("--no-part1", action="store_true")
    args = parser.parse_args()
    variants = {"cpu": []} | {v.split("=", 1)[0]: v.split("=", 1)[1].split() for v in args.variant}
    import torch

    print(f"{machine(os.environ)}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        subprocess.run([sys.executable, "-m", "nanogpt_cli", "prepare", "shakespeare", "-q"],
                       env={**os.environ, "NANOGPT_HOME": str(home)}, check=True)
        every = ["--eval-interval", str(args.eval_interval)]
        if not args.no_part1:
            part1(home, args, every, variants)
        if args.no_ablation:
            return
        options = {name: OPTIONS[name] for name in args.options or OPTIONS}
        print(f"\npart 2: `--preset nanogpt-cpu --time {args.budget:g}s` plus one option, seeds "
              f"{', '.join(str(s) for s in range(1, args.seeds + 1))}; final val loss\n")
        results: dict[str, list[float]] = {name: [] for name in ["baseline", *options]}
        for seed in range(1, args.seeds + 1):
            for name in results:
                flags = ["--preset", "nanogpt-cpu", "--time", f"{args.budget:g}s", "--seed", str(seed),
                         *options.get(name, [])]
                results[name].append(train(home, f"{name.replace(' ', '-')}-{seed}", flags)[-1]["val_loss"])
        base = statistics.mean(results["baseline"])
        print("| option | val loss (each seed) | mean | vs baseline |\n|---|---|---:|---:|")
        for name, losses in results.items():
            mean = statistics.mean(losses)
            print(f"| {name} | {', '.join(f'{x:.3f}' for x in losses)} | {mean:.3f} | {mean - base:+.3f} |")


if __name__ == "__main__":
    main()
