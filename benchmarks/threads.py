"""CPU threads on an idle and on a busy machine: `nanogpt eval` and 1,000-token sampling.

    python benchmarks/threads.py [--rounds 3] [--tokens 1000] [--settings default,one,all]

Trains two runs in a temporary NANOGPT_HOME (Tiny Shakespeare; the `cpu` preset for 100 iterations,
to evaluate; a 6x384 block-256 model for 5 iterations, to sample from: its speed does not depend on
what it learned). Then, for each condition, the settings in turn, interleaved round by round:

- idle: nothing else runs;
- busy: a second `nanogpt train` (the default preset, in a home of its own) runs on the same cores the
  whole time, as a browser or another job would on a laptop.

Settings (any of them with --settings):
- default: nanogpt as installed, no flag and no variable (its own choice of threads);
- one: OMP_NUM_THREADS=1, the reference the issue gave;
- all: `--threads` = every core, what torch does by itself (nanogpt's behaviour before it chose);
- flag1: `--threads 1` (set once torch is loaded, where "one" sets it before);
- passive, spin1k: every core, with OpenMP's threads sleeping at once (OMP_WAIT_POLICY=PASSIVE) or
  after a short spin (GOMP_SPINCOUNT=1000) instead of spinning while they wait.

Each measurement is one whole process: `nanogpt eval -q --json` (wall seconds) and
`nanogpt sample --max-new-tokens N --json` (the sampling loop's tokens/s, and wall seconds).
Prints the machine (lscpu model and flags, torch's CPU capability) with the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine  # benchmarks/ is on sys.path when a script runs


def nanogpt(home: Path, args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    environment = {**os.environ, "NANOGPT_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nanogpt_cli", *args], env=environment, check=True,
                          capture_output=True, text=True, **kwargs)


def settings(names: list[str]) -> dict[str, tuple[dict[str, str], list[str]]]:
    cores = str(os.cpu_count() or 1)
    known = {
        "default": ({}, []),
        "one": ({"OMP_NUM_THREADS": "1"}, []),
        "all": ({}, ["--threads", cores]),
        "flag1": ({}, ["--threads", "1"]),
        "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", cores]),
        "spin1k": ({"GOMP_SPINCOUNT": "1000"}, ["--threads", cores]),
    }
    return {name: known[name] for name in names}


def measure(home: Path, env: dict[str, str], extra: list[str], tokens: int) -> dict[str, float]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    environment = {**clean, "NANOGPT_HOME": str(home), **env}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nanogpt_cli", "eval", "--run", "small", "-q", "--json", *extra],
                   env=environment, check=True, capture_output=True)
    eval_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "nanogpt_cli", "sample", "--run", "wide", "--max-new-tokens",
                          str(tokens), "--seed", "1", "--json", *extra], env=environment, check=True,
                         capture_output=True, text=True).stdout
    sample_seconds = time.perf_counter() - start
    return {"eval_s": eval_seconds, "sample_tok_s": json.loads(out.splitlines()[0])["tokens_per_second"],
            "sample_s": sample_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--settings", default="default,one,all")  # also: flag1, passive, spin1k
    parser.add_argument("--conditions", default="idle,busy")
    args = parser.parse_args()
    chosen = settings(args.settings.split(","))
    print(machine())
    home = Path(tempfile.mkdtemp(prefix="nanogpt-threads-"))
    load_home = Path(tempfile.mkdtemp(prefix="nanogpt-load-"))
    try:
        nanogpt(home, ["prepare", "shakespeare", "-q"])
        nanogpt(home, ["train", "--run", "small", "--max-iters", "100", "--sample-tokens", "0", "-q"])
        nanogpt(home, ["train", "--run", "wide", "--n-layer", "6", "--n-head", "6", "--n-embd", "384",
                       "--block-size", "256", "--batch-size", "4", "--max-iters", "5", "--eval-interval", "5",
                       "--eval-iters", "1", "--sample-tokens", "0", "-q"])
        shutil.copytree(home / "datasets", load_home / "datasets")
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for condition in args.conditions.split(","):
            load = None
            if condition == "busy":  # another training on the same cores, all along
                env = {**os.environ, "NANOGPT_HOME": str(load_home)}
                load = subprocess.Popen([sys.executable, "-m", "nanogpt_cli", "train", "--run", "load", "--time",
                                         "2h", "--sample-tokens", "0", "-q"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                time.sleep(15)  # past its start-up: training at full speed
            try:
                for _ in range(args.rounds):
                    for name, (env, extra) in chosen.items():
                        row = measure(home, env, extra, args.tokens)
                        results.setdefault((condition, name), []).append(row)
                        print(f"  {condition:<5} {name:<8} eval {row['eval_s']:6.2f} s   sample "
                              f"{row['sample_tok_s']:7.1f} tok/s ({row['sample_s']:.2f} s)", flush=True)
            finally:
                if load is not None:
                    load.terminate()
                    load.wait()
        print("\nmedians:")
        print(f"{'machine':<6} {'setting':<8} {'eval s':>8} {'sample tok/s':>13} {'sample s':>9}")
        for (condition, name), rows in results.items():
            print(f"{condition:<6} {name:<8} {statistics.median(r['eval_s'] for r in rows):8.2f} "
                  f"{statistics.median(r['sample_tok_s'] for r in rows):13.1f} "
                  f"{statistics.median(r['sample_s'] for r in rows):9.2f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(load_home, ignore_errors=True)


if __name__ == "__main__":
    main()
