"""`--quantize int8` against float32 on a trained 6x384 char model, as whole `nanogpt` processes.

    python benchmarks/sample_int8.py [--run NAME] [--rounds 5] [--tokens 1000] [--compare-src OLD/src]

Uses run NAME from $NANOGPT_HOME (or the per-user folder); without --run it first trains one in a
temporary home: Tiny Shakespeare, the `shakespeare-char` preset (6 layers, 6 heads, 384 wide, block
256) with batch 8 for 250 iterations, enough for real weights (random weights say nothing about
what int8 costs in loss). Then, alternating float32 and int8 for --rounds rounds, each one process:
`nanogpt sample --max-new-tokens N` (whole process wall time, the loop's tokens/s from --json, the
process's own peak RSS), and once each `nanogpt eval --full` on the val split (the loss int8 costs).
With --compare-src, the same two commands run from another source tree too (e.g. a checkout of an
older commit), in the same alternation: an A/B in one sitting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import CPU_KINDS, cpu_kind_env, machine  # benchmarks/ is on sys.path when a script runs
from gpt2_sample import nanogpt


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--compare-src", help="also run with this src/ folder, alternating")
    parser.add_argument("--cpu", choices=list(CPU_KINDS), default="native",
                        help="this CPU, or an AVX2 CPU without native bfloat16 or VNNI emulated on it")
    args = parser.parse_args()
    print(machine(cpu_kind_env(args.cpu)))
    # A yardstick for the machine's speed today (these shared machines drift by a fifth or more): the
    # start-up every process pays, which the absolute targets include.
    imports = sorted(_seconds([sys.executable, "-c", "import torch"]) for _ in range(3))
    print(f"`import torch` in a fresh process: {imports[1]:.2f} s (median of 3)")
    env = cpu_kind_env(args.cpu)
    temporary = None
    run = args.run
    if run is None:
        temporary = tempfile.mkdtemp(prefix="int8-bench-")
        env["NANOGPT_HOME"] = temporary
        run = "int8-bench"
        seconds, _, _ = nanogpt("train", "--preset", "shakespeare-char", "--batch-size", "8", "--max-iters", "250",
                                "--eval-interval", "125", "--eval-iters", "10", "--run", run, "--sample-tokens", "0",
                                "--quiet", env=env)
        print(f"trained run {run} in {seconds:.0f} s")
    try:
        trees = [("", None)] + ([(" (--compare-src)", args.compare_src)] if args.compare_src else [])
        cases = [(mode, tree, src) for tree, src in trees for mode in ("float32", "int8")]
        rows = {f"{mode}{tree}": [] for mode, tree, _ in cases}
        for _ in range(args.rounds):
            for mode, tree, src in cases:
                extra = ["--quantize", "int8"] if mode == "int8" else []
                seconds, rss, stdout = nanogpt(
                    "sample",
                    "--run",
                    run,
                    "--max-new-tokens",
                    str(args.tokens),
                    "--seed",
                    "1",
                    "--device",
                    "cpu",
                    "--json",
                    *extra,
                    env=env,
                    src=src,
                )
                rows[f"{mode}{tree}"].append((seconds, json.loads(stdout)["tokens_per_second"], rss))
        print(f"\n`nanogpt sample --max-new-tokens {args.tokens}`, {args.rounds} rounds alternating (each a whole "
              "process)")
        print("| weights | whole process (each round) | median | loop tokens/s: median (range) | peak RSS (max) |")
        print("|---|---|---:|---:|---:|")
        for mode, runs in rows.items():
            each = ", ".join(f"{s:.2f}" for s, _, _ in runs)
            speeds = [t for _, t, _ in runs]
            rss = max(r for _, _, r in runs)
            print(f"| {mode} | {each} s | {statistics.median(s for s, _, _ in runs):.2f} s | "
                  f"{statistics.median(speeds):,.0f} ({min(speeds):,.0f}-{max(speeds):,.0f}) | "
                  f"{rss:.0f} MiB ({rss * 1.048576:.0f} MB) |")
        _, _, stdout = nanogpt(
            "eval", "--run", run, "--full", "--quantize", "int8", "--device", "cpu", "--json", env=env
        )
        result = json.loads(stdout)
        print(f"\n`nanogpt eval --full` ({result['source']}, {result['tokens']:,} tokens): float32 loss "
              f"{result['float32_loss']:.4f}, int8 {result['loss']:.4f} ({result['quantize_cost']:+.4f})")
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
