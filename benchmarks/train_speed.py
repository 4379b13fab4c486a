"""Training throughput of the default `nanogpt train` against the same preset with AdamW, on both kinds
of CPU: this one, and an AVX2 CPU without native bfloat16 emulated on it (_common.AVX2_EMULATION).

    python benchmarks/train_speed.py [--rounds 3] [--iters 150] [--compare-src OLD/src] [--kinds native avx2]

Each case is a whole `nanogpt train` process in a temporary NANOGPT_HOME; the cases alternate round by
round, so a machine that slows down mid-run slows them all. Reported: the median of the training
tokens/s that metrics.jsonl logs every 2 steps (evaluation time excluded). Two shapes: the `cpu`
preset (4 x 128, block 64) and a 6 x 384 block-256 model, each with Muon (the preset's optimizer) and
with `--optimizer adamw`. With --compare-src the Muon cases also run from another source tree (an
older checkout), in the same alternation.
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

from _common import cpu_kind_env, machine

SHAPES = {
    "cpu preset (4x128, block 64)": [],
    "6x384, block 256, batch 8": ["--n-layer", "6", "--n-head", "6", "--n-embd", "384", "--block-size", "256",
                                  "--batch-size", "8"],
}


def tokens_per_second(home: Path, env: dict[str, str], flags: list[str], src: str | None) -> float:
    env = {**env, "NANOGPT_HOME": str(home), **({"PYTHONPATH": src} if src else {})}
    command = [sys.executable, "-m", "nanogpt_cli", "train", "--run", "speed", "--overwrite", "--sample-tokens", "0",
               "--eval-interval", "100000", "--eval-iters", "1", "--log-interval", "2", "-q", *flags]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (home / "runs" / "speed" / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_second"] for r in rows if r["kind"] == "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=150, help="iterations of the cpu preset (6x384: a 25th)")
    parser.add_argument("--kinds", nargs="+", default=["native", "avx2"], choices=["native", "avx2"])
    parser.add_argument("--compare-src", help="also run the Muon cases from this src/ folder")
    args = parser.parse_args()
    for kind in args.kinds:
        print(machine(cpu_kind_env(kind)))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        subprocess.run([sys.executable, "-m", "nanogpt_cli", "prepare", "shakespeare", "-q"],
                       env={**os.environ, "NANOGPT_HOME": tmp}, check=True)
        cases = []
        for kind in args.kinds:
            for shape, flags in SHAPES.items():
                iters = ["--max-iters", str(args.iters if not flags else max(4, args.iters // 25))]
                cases.append((kind, shape, "muon", flags + iters, None))
                if args.compare_src:
                    cases.append((kind, shape, "muon (--compare-src)", flags + iters, args.compare_src))
                cases.append((kind, shape, "adamw", flags + iters + ["--optimizer", "adamw"], None))
        results: dict[tuple[str, str, str], list[float]] = {case[:3]: [] for case in cases}
        for _ in range(args.rounds):
            for kind, shape, name, flags, src in cases:
                results[(kind, shape, name)].append(tokens_per_second(home, cpu_kind_env(kind), flags, src))
    print(f"\n`nanogpt train` training tokens/s, median of {args.rounds} alternating rounds (each round's median)")
    print("| CPU | shape | optimizer | tokens/s (each round) | median | vs adamw |\n|---|---|---|---|---:|---:|")
    for (kind, shape, name), speeds in results.items():
        median = statistics.median(speeds)
        adamw = statistics.median(results[(kind, shape, "adamw")])
        print(f"| {kind} | {shape} | {name} | {', '.join(f'{s:,.0f}' for s in speeds)} | {median:,.0f} | "
              f"{median / adamw:.2f}x |")


if __name__ == "__main__":
    main()
