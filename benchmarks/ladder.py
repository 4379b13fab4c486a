"""The lecture's ladder as a user runs it: its time, and whether each step ends at or below the one
before, over two seeds.

    python benchmarks/ladder.py [--seeds 1,2] [--quick]

Runs `nanogpt ladder --seed S --json` (the default: the same iterations for every step) once per seed,
each a whole process in a temporary NANOGPT_HOME with Tiny Shakespeare, and prints each step's val loss
per seed, their mean and spread, and whether the mean of every step is at most the mean of the step
before plus the larger of the two steps' seed spreads (the noise of two seeds). Also the wall time of
each ladder against the 5-minute goal. Prints the machine first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine  # benchmarks/ is on sys.path when a script runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(machine())
    home = Path(tempfile.mkdtemp(prefix="nanogpt-ladder-"))
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    try:
        subprocess.run([sys.executable, "-m", "nanogpt_cli", "prepare", "shakespeare", "-q"], env=env, check=True)
        by_seed: dict[str, list[dict]] = {}
        for seed in args.seeds.split(","):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "nanogpt_cli", "ladder", "--seed", seed, "--prefix", f"s{seed}",
                                  "--json", *(["--quick"] if args.quick else [])], env=env, check=True,
                                 capture_output=True, text=True).stdout
            by_seed[seed] = json.loads(out)
            print(f"seed {seed}: {time.perf_counter() - start:.1f} s for the whole ladder (goal: <= 300 s)", flush=True)
        rows = list(zip(*by_seed.values(), strict=True))
        print(f"\n{'step':<16} {'iterations':>10} " + " ".join(f"{'seed ' + s:>8}" for s in by_seed)
              + f" {'mean':>7} {'spread':>7} {'lecture':>8}  goes down?")
        previous = None
        for steps in rows:
            losses = [r["val_loss"] for r in steps]
            mean, spread = sum(losses) / len(losses), max(losses) - min(losses)
            verdict = "-"
            if previous is not None:
                verdict = "yes" if mean <= previous[0] + max(spread, previous[1]) else "NO"
            first = steps[0]
            print(f"{first['stage']}. {first['slug']:<13} {first['iterations']:>10,} "
                  + " ".join(f"{v:8.4f}" for v in losses)
                  + f" {mean:7.4f} {spread:7.4f} {first['lecture_val_loss']:8.2f}  {verdict}  "
              + f"({', '.join(format(r['seconds'], '.1f') for r in steps)} s of training)")
            previous = (mean, spread)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
