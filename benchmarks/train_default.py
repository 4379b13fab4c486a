"""Time the default `nanogpt train` from a fresh home and print its loss curve as a markdown table.

    python benchmarks/train_default.py [extra train flags...]

Runs the real command in a temporary NANOGPT_HOME (so it also prepares Tiny Shakespeare), and
reports wall time, peak memory of the process, median training tokens/s and the eval curve.
Not part of the test suite: it takes minutes.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine


def main() -> None:
    print(machine(os.environ))
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "NANOGPT_HOME": home}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nanogpt_cli", "train", "--run", "bench", *sys.argv[1:]],
                       env=env, check=True)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows = [json.loads(line) for line in (Path(home) / "runs" / "bench" / "metrics.jsonl").read_text().splitlines()]

    evals = [r for r in rows if r["kind"] == "eval"]
    speed = statistics.median(r["tokens_per_second"] for r in rows if r["kind"] == "train")
    first_below_2 = next((r for r in evals if r["val_loss"] < 2.0), None)
    print(f"\nwall time (prepare + train + sample): {wall:.1f} s; peak RSS {peak_mib:.0f} MiB; "
          f"median {speed:,.0f} training tokens/s")
    if first_below_2:
        print(f"val loss first below 2.0 at iteration {first_below_2['iter']:,}, {first_below_2['elapsed']:.0f} s "
              "into training")
    print("\n| iteration | train loss | val loss | seconds |\n|---:|---:|---:|---:|")
    for r in evals:
        print(f"| {r['iter']:,} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | {r['elapsed']:.0f} |")


if __name__ == "__main__":
    main()
