"""Two nanogpt commands at once, repeated: nothing may be lost and nothing may end in a traceback.

    python benchmarks/races.py [--reps 20]

Each repetition uses a fresh NANOGPT_HOME and real processes, started a random 0-2.5 s apart:

- prepare-twice: two `prepare FILE --name twin` of one new name. Exactly one may succeed; the dataset
  must be whole (its meta.json readable, its token counts those of the file).
- prepare-under-train: `prepare OTHER --name poems --overwrite` while `train` on poems starts and runs
  (before its first checkpoint), then Ctrl-C to the training (it saves) and `train --resume`. Lost: a
  resume that goes on while the dataset's tokens are not the ones its checkpoint was trained on.
- mv-under-resume: `mv` of a run while its `train --resume` starts. Lost: a run folder without its
  checkpoint, or both names, or neither.

Prints, per race, how each repetition ended and the counts of lost updates and tracebacks (goal: 0
and 0). Prints the machine first.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine  # benchmarks/ is on sys.path when a script runs

TEXT = "\n".join(["the quick brown fox jumps over the lazy dog.", "to be or not to be, that is the question."] * 300)
SMALL = ["--preset", "nanogpt-cpu", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
         "--batch-size", "4", "--eval-iters", "1", "--sample-tokens", "0", "-q"]


class Home:
    def __init__(self, root: Path, n: int):
        self.path = root / f"home-{n}"
        self.env = {**os.environ, "NANOGPT_HOME": str(self.path)}

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "nanogpt_cli", *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        proc = self.start(*args)
        out, err = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def prepare_twice(home: Home, text: Path, rng: random.Random) -> tuple[str, bool, bool]:
    first = home.start("prepare", str(text), "--name", "twin", "-q")
    time.sleep(rng.uniform(0, 2.5))
    second = home.start("prepare", str(text), "--name", "twin", "-q")
    results = [_finish(first), _finish(second)]
    codes = sorted(r.returncode for r in results)
    meta = home.path / "datasets" / "twin" / "meta.json"
    lost = codes != [0, 1] or not meta.is_file()
    return f"exit codes {codes}", lost, any("Traceback" in r.stderr for r in results)


def prepare_under_train(home: Home, text: Path, other: Path, rng: random.Random) -> tuple[str, bool, bool]:
    home.run("prepare", str(text), "-q")
    train = home.start("train", "--dataset", "poems", "--run", "r", "--max-iters", "1000000", "--eval-interval",
                       "1000000", *SMALL)
    time.sleep(rng.uniform(0, 2.5))
    prepared = home.run("prepare", str(other), "--name", "poems", "--overwrite", "-q")
    time.sleep(0.5)
    train.send_signal(signal.SIGINT)  # it saves ckpt.pt and stops
    trained = _finish(train)
    ckpt = home.path / "runs" / "r" / "ckpt.pt"
    if not ckpt.is_file():  # stopped before training began: nothing to resume, nothing to lose
        tracebacks = any("Traceback" in r.stderr for r in (prepared, trained))
        return f"prepare {prepared.returncode}, no checkpoint", False, tracebacks
    import torch

    from nanogpt_cli.dataset import Dataset

    saved = torch.load(ckpt, weights_only=True)
    recorded, iteration = saved.get("dataset_fingerprint"), saved["train_state"]["iteration"]
    resumed = home.run("train", "--run", "r", "--resume", "--max-iters", str(iteration + 5), "-q",
                       "--sample-tokens", "0")
    tracebacks = any("Traceback" in r.stderr for r in (prepared, trained, resumed))
    os.environ["NANOGPT_HOME"] = str(home.path)
    now = Dataset("poems").fingerprint
    lost = resumed.returncode == 0 and recorded is not None and recorded != now  # went on with other tokens
    refused = " (refused: other tokens)" if "prepared again" in resumed.stderr else ""
    return f"prepare {prepared.returncode}, resume {resumed.returncode}{refused}", lost, tracebacks


def mv_under_resume(home: Home, text: Path, rng: random.Random) -> tuple[str, bool, bool]:
    home.run("prepare", str(text), "-q")
    home.run("train", "--dataset", "poems", "--run", "r", "--max-iters", "10", "--eval-interval", "5", *SMALL)
    train = home.start("train", "--run", "r", "--resume", "--max-iters", "20", "-q", "--sample-tokens", "0")
    time.sleep(rng.uniform(0, 2.5))
    moved = home.run("mv", "r", "r2")
    trained = _finish(train)
    runs = home.path / "runs"
    whole = [name for name in ("r", "r2") if (runs / name / "ckpt.pt").is_file()]
    lost = len(whole) != 1 or any((runs / name).exists() and name not in whole for name in ("r", "r2"))
    return (f"mv {moved.returncode}, resume {trained.returncode}", lost,
            any("Traceback" in r.stderr for r in (moved, trained)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(machine())
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="nanogpt-races-"))
    text, other = root / "poems.txt", root / "other.txt"
    text.write_text(TEXT + "\n", encoding="utf-8")
    other.write_text(TEXT.replace("fox", "cat") + "\n", encoding="utf-8")
    races = {"prepare-twice": lambda h: prepare_twice(h, text, rng),
             "prepare-under-train": lambda h: prepare_under_train(h, text, other, rng),
             "mv-under-resume": lambda h: mv_under_resume(h, text, rng)}
    try:
        n = 0
        for name, race in races.items():
            outcomes, lost, tracebacks = collections.Counter(), 0, 0
            for _ in range(args.reps):
                n += 1
                how, was_lost, had_traceback = race(Home(root, n))
                outcomes[how] += 1
                lost += was_lost
                tracebacks += had_traceback
                shutil.rmtree(root / f"home-{n}", ignore_errors=True)
            print(f"{name}: {args.reps} repetitions, {lost} lost, {tracebacks} with a traceback; "
                  + "; ".join(f"{how} x{count}" for how, count in outcomes.most_common()), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
