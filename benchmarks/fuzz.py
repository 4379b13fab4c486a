"""Feed nanogpt malformed files and values, as a user (or a crash, or a bad disk) would, and check that
every case ends the way the project promises: exit 0, or one error line and exit 1 (2 for a usage
error), never a traceback, a crash, a hang, a changed file nanogpt did not mean to change, or a
refused input that first took gigabytes of memory.

    python benchmarks/fuzz.py [--cases 2000] [--seed 0] [--show 10]

Surfaces: a dataset's meta.json and token files, a run's config.json, metrics.jsonl and checkpoints,
TOML run configs, command-line values and sampling prompts, --overwrite onto a good run, and
`import` of an exported folder (config.json + model.safetensors). Each case
starts from a fresh copy of one trained home (a tiny run 'golden' on the 'poems' dataset), breaks one
thing and runs the commands that read it, in this process (typer's CliRunner), each under a 60 s
alarm. tests/test_fuzz.py runs a few hundred cases of the same harness.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from typer.testing import CliRunner

from nanogpt_cli.cli import app

TINY = ["--dataset", "poems", "--preset", "nanogpt-cpu", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
        "--block-size", "16", "--batch-size", "4", "--eval-interval", "2", "--eval-iters", "1",
        "--sample-tokens", "0", "--quiet"]
VALUES = [None, True, False, -1, 0, 1, 7, 2**31, 2**64, 10**30, -1e308, 1e308, 0.5, "", "x", "x" * 5000, "\x00\x1f",
          "object", "uint8", "float64", "char", "gpt2", "bpe", [], {}, [1, 2], {"kind": "char"}, "nan", "inf"]
NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e400", "1000000000000", "99999999999999999999999", "\u0661\u0662",
           "\uff11\uff12", "", "abc", "1.5", "-0", "0x10"]
TEXTS = ["", "\x00", "a\nb", "\u202e", "\ud800", "x" * 3000, "ROMEO:", "\U0001f600" * 5, "\\", "\"'", "Ω"]
TOML_VALUES = ["nan", "inf", "-1", "0", "1e308", "99999999999999999", "true", "[]", "{}", '"x"', "1.5", '"\\u0000"',
               "2e9", '"1h"', '"forever"']
HUGE = {"1000000000000", "99999999999999999999999"}
# Flags where a huge value only asks for a very long run (legitimate): the fuzzer gives them no huge values.
MORE_WORK = {"--max-iters", "--eval-iters", "--max-new-tokens", "--num-samples", "--grad-accum", "--time"}
MAX_RSS_GB = 3.0


def _write_small_text(path: Path) -> Path:
    lines = ["the quick brown fox jumps over the lazy dog.", "to be or not to be, that is the question."]
    path.write_text("\n".join(lines[i % 2] for i in range(300)) + "\n", encoding="utf-8")
    return path


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so no handler of nanogpt's takes it for an error of its own."""


class Harness:
    def __init__(self, root: Path):
        self.root = root
        self.golden = root / "golden-home"
        self.runner = CliRunner()
        os.environ["NANOGPT_HOME"] = str(self.golden)
        text = _write_small_text(root / "poems.txt")
        for args in (["prepare", str(text)], ["train", "--run", "golden", "--max-iters", "4", *TINY]):
            result = self.runner.invoke(app, args)
            assert result.exit_code == 0, result.output
        self.home = root / "home"

    def fresh(self) -> Path:
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.copytree(self.golden, self.home, symlinks=True)
        os.environ["NANOGPT_HOME"] = str(self.home)
        return self.home

    def invoke(self, args: list[str]) -> tuple[str, str]:
        """(verdict, output): 'ok', 'refused' or a failure: 'traceback', 'hang', 'bad-exit'."""

        def alarm(*_):
            raise CaseTimeout("case took over 60 s")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(60)
        try:
            result = self.runner.invoke(app, [str(a) for a in args])
        except CaseTimeout:
            return "hang", ""
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        output = result.output
        if isinstance(result.exception, CaseTimeout):
            return "hang", output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            return "traceback", f"{type(result.exception).__name__}: {result.exception}"
        if "Traceback" in output or "internal error" in output:
            return "traceback", output
        if result.exit_code == 0:
            return "ok", output
        if result.exit_code in (1, 2) and output.strip():
            return "refused", output
        return "bad-exit", f"exit {result.exit_code}: {output}"


def snapshot(folder: Path) -> dict[str, str]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and ".lock" not in path.name:
            stat = path.stat()  # a file the fuzzer blew up to hundreds of MB (sparse) is known by size and time
            big = stat.st_size > 2**24
            found[str(path.relative_to(folder))] = (f"{stat.st_size}:{stat.st_mtime_ns}" if big
                                                    else hashlib.sha1(path.read_bytes()).hexdigest())
    return found


# ---------------------------------------------------------------------------------------------- mutations


def mutate_value(value, rng: random.Random):
    """A value with one thing changed somewhere inside it (dicts and lists are walked into)."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        copy = dict(value)
        choice = rng.random()
        if choice < 0.2:
            del copy[key]
        else:
            copy[key] = mutate_value(value[key], rng)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.5:
        copy = list(value)
        i = rng.randrange(len(copy))
        copy[i] = mutate_value(copy[i], rng)
        return copy
    return rng.choice(VALUES)


def break_bytes(path: Path, rng: random.Random) -> str:
    data = path.read_bytes()
    how = rng.choice(["flip", "truncate", "empty", "append", "garbage", "not-utf8", "deep", "directory", "fifo",
                      "device", "huge"])
    if how == "flip" and data:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    elif how == "truncate":
        data = data[: rng.randrange(len(data) + 1)]
    elif how == "empty":
        data = b""
    elif how == "append":
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif how == "garbage":
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
    elif how == "not-utf8":
        data = b"\xff\xfe" + data
    elif how == "deep":
        data = b"[" * 100_000 + b"]" * 100_000
    if how == "directory":
        path.unlink()
        path.mkdir()
    elif how == "fifo" and hasattr(os, "mkfifo"):
        path.unlink()
        os.mkfifo(path)
    elif how == "device":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif how == "huge":
        with open(path, "ab") as f:
            f.truncate(200 * 2**20)  # sparse: no disk taken
    else:
        path.write_bytes(data)
    return how


def break_json(path: Path, rng: random.Random) -> str:
    if rng.random() < 0.3:
        return break_bytes(path, rng)
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(mutate_value(data, rng)), encoding="utf-8")
    return "value"


def break_checkpoint(path: Path, rng: random.Random) -> str:
    if rng.random() < 0.25:
        return break_bytes(path, rng)
    ckpt = torch.load(path, weights_only=True)
    part = rng.choice(["model_config", "train_config", "train_state", "tokenizer", "optimizer", "model", "top"])
    if part == "model":
        name = rng.choice(list(ckpt["model"]))
        ckpt["model"][name] = rng.choice([torch.zeros(3), torch.zeros(2, 2, dtype=torch.int64), "x",
                                          ckpt["model"][name].t().contiguous(), torch.zeros(0)])
    elif part == "top":
        ckpt = mutate_value(ckpt, rng) if rng.random() < 0.5 else {k: v for k, v in ckpt.items() if rng.random() < 0.8}
    elif part in ckpt:
        ckpt[part] = mutate_value(ckpt[part], rng)
    torch.save(ckpt, path)
    return part


def break_toml(path: Path, rng: random.Random) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    how = rng.choice(["value", "value", "value", "unknown", "deep", "bytes", "control"])
    settings = [i for i, line in enumerate(lines) if " = " in line and not line.startswith("#")]
    if how == "value":
        i = rng.choice(settings)
        key = lines[i].split(" = ")[0]
        lines[i] = f"{key} = {rng.choice(TOML_VALUES)}"
    elif how == "unknown":
        lines.insert(rng.choice(settings), f"{rng.choice(['lr2', 'n_layers', 'vocab_size', 'x'])} = 1")
    elif how == "deep":
        lines.append("deep = " + "[" * 50_000 + "]" * 50_000)
    elif how == "control":
        lines.append('[train]\nwandb_project = "a\\u0001b"')
    else:
        return break_bytes(path, rng)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return how


# ------------------------------------------------------------------------------------------------- cases


def case(h: Harness, rng: random.Random) -> tuple[str, str, list[str]]:
    """Break one thing in a fresh home, run what reads it; (surface, how, commands' verdicts)."""
    home = h.fresh()
    run, data = home / "runs" / "golden", home / "datasets" / "poems"
    surface = rng.choice(["meta", "tokens", "config.json", "metrics", "checkpoint", "toml", "flags", "sample",
                          "overwrite", "import"])
    commands: list[list[str]] = []
    if surface == "meta":
        how = break_json(data / "meta.json", rng)
        commands = [["eval", "--run", "golden", "--iters", "1"], ["info", "poems"], ["info"],
                    ["train", "--run", "new", "--max-iters", "2", *TINY]]
    elif surface == "tokens":
        how = break_bytes(data / rng.choice(["train.bin", "val.bin"]), rng)
        commands = [["eval", "--run", "golden", "--iters", "2"], ["eval", "--run", "golden", "--full"],
                    ["info", "poems"], ["train", "--run", "new", "--max-iters", "2", *TINY]]
    elif surface == "config.json":
        how = break_json(run / "config.json", rng)
        commands = [["info"], ["info", "golden"], ["train", "--resume", "--run", "golden", "--max-iters", "6"],
                    ["sample", "--run", "golden", "--max-new-tokens", "5"], ["mv", "golden", "moved"]]
    elif surface == "metrics":
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        i = rng.randrange(len(lines))
        lines[i] = json.dumps(mutate_value(json.loads(lines[i]), rng)) if rng.random() < 0.7 else "\udcff{"
        (run / "metrics.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
        how = "row"
        commands = [["info"], ["info", "golden"], ["info", "golden", "golden"],
                    ["train", "--resume", "--run", "golden", "--max-iters", "6"]]
    elif surface == "checkpoint":
        name = rng.choice(["ckpt.pt", "best.pt"])
        how = f"{name}:{break_checkpoint(run / name, rng)}"
        which = "last" if name == "ckpt.pt" else "best"
        commands = [["sample", "--run", "golden", "--checkpoint", which, "--max-new-tokens", "5"],
                    ["eval", "--run", "golden", "--checkpoint", which, "--iters", "1"],
                    ["export", "golden", str(home / "export"), "--checkpoint", which],
                    ["train", "--resume", "--run", "golden", "--max-iters", "6"], ["info", "golden"]]
        if name == "best.pt":
            commands.append(["train", "--init-from", "golden", "--run", "new", "--max-iters", "2", "--quiet",
                             "--sample-tokens", "0", "--eval-iters", "1"])
    elif surface == "toml":
        path = home / "run.toml"
        shutil.copy(run / "config.toml", path)
        how = break_toml(path, rng)
        commands = [["train", "--config", str(path), "--run", "new", "--max-iters", "2", "--eval-iters", "1"],
                    ["train", "--config", str(path), "--print-config"]]
    elif surface == "flags":
        flag = rng.choice(["--lr", "--min-lr", "--softcap", "--dropout", "--grad-clip", "--batch-size", "--n-embd",
                           "--block-size", "--max-iters", "--beta2", "--muon-lr", "--weight-decay", "--n-layer",
                           "--warmup-iters", "--eval-iters", "--grad-accum", "--decay-frac", "--time"])
        value = rng.choice(_numbers(flag))
        how = f"{flag} {value!r}"
        extra = _without(TINY, flag)
        commands = [["train", "--run", "new", "--max-iters", "2", *extra, flag, value]]
    elif surface == "sample":
        flag = rng.choice(["--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--num-samples",
                           "--prompt"])
        value = rng.choice(TEXTS if flag == "--prompt" else _numbers(flag))
        how = f"{flag} {value!r}"
        commands = [["sample", "--run", "golden", "--max-new-tokens", "5", flag, value]]
    elif surface == "import":  # a folder in the GPT-2 layout (what export writes), damaged
        folder = home.with_name(home.name + "-exported")  # outside the home: export refuses nanogpt's folders
        shutil.rmtree(folder, ignore_errors=True)
        assert h.invoke(["export", "golden", str(folder)])[0] == "ok"
        name = rng.choice(["config.json", "config.json", "model.safetensors"])
        how = f"{name}:{break_json(folder / name, rng) if name.endswith('json') else break_bytes(folder / name, rng)}"
        commands = [["import", str(folder), "--run", "imported"], ["import", str(folder), "--run", "golden",
                                                                   "--overwrite"]]
    else:  # --overwrite onto a good run with something that must fail: the old run must survive whole
        bad = rng.choice([["--dataset", "missing"], ["--block-size", "100000"], ["--n-embd", "1000000000000"],
                          ["--lr", "nan"], ["--log", "nonsense"], ["--init-from", "missing-run"]])
        how = " ".join(bad)
        commands = [["train", "--run", "golden", "--overwrite", "--max-iters", "2", *_without(TINY, bad[0]), *bad]]
    verdicts = []
    for command in commands:
        before = snapshot(home)
        verdict, output = h.invoke(command)
        if verdict == "refused" and command[0] in ("train", "mv", "export", "import"):
            after = snapshot(home)
            lost = [p for p in before if after.get(p) != before[p] and not p.startswith("runs/new")]
            if lost:
                verdict, output = "data-loss", f"changed or removed: {lost[:5]}"
        verdicts.append((" ".join(command[:2]), verdict, output.strip().splitlines()[-1:] if output else []))
    return surface, how, verdicts


def _numbers(flag: str) -> list[str]:
    """Odd values for `flag`, less those that only ask for a very long run (a legitimate request)."""
    return [n for n in NUMBERS if flag not in MORE_WORK or n not in HUGE]


def _without(args: list[str], flag: str) -> list[str]:
    """`args` without `flag` and its value."""
    if flag not in args:
        return list(args)
    i = args.index(flag)
    return args[:i] + args[i + 2 :]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def fuzz(cases: int, seed: int, root: Path) -> dict:
    """Run `cases` cases; the tally of verdicts and the failures."""
    rng = random.Random(seed)
    h = Harness(root)
    tally: Counter = Counter()
    failures = []
    slowest = []
    for number in range(cases):
        start = time.perf_counter()
        surface, how, verdicts = case(h, rng)
        slowest = sorted(slowest + [(time.perf_counter() - start, f"{surface}: {how[:50]}")], reverse=True)[:5]
        for command, verdict, last in verdicts:
            tally[verdict] += 1
            if verdict not in ("ok", "refused"):
                failures.append(f"case {number} [{surface}: {how[:60]}] {command}: {verdict}: {last}")
    return {"cases": cases, "commands": sum(tally.values()), "tally": dict(tally), "failures": failures,
            "peak_rss_gb": peak_rss_gb(), "slowest": slowest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=20, help="failures to print")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nanogpt-fuzz-") as root, contextlib.redirect_stderr(sys.stderr):
        result = fuzz(args.cases, args.seed, Path(root))
    print(f"{result['cases']} cases, {result['commands']} commands in {time.perf_counter() - start:.0f} s "
          f"(seed {args.seed}): {result['tally']}; peak RSS {result['peak_rss_gb']:.2f} GB")
    print("slowest cases:", ", ".join(f"{how} {seconds:.1f} s" for seconds, how in result["slowest"]))
    for line in result["failures"][: args.show]:
        print(" ", line)
    bad = len(result["failures"]) + (result["peak_rss_gb"] > MAX_RSS_GB)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
