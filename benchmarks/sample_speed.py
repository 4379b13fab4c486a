"""Sampling speed: KV cache vs re-running the context every step (the nanoGPT way), and cold start.

    python benchmarks/sample_speed.py [--tokens 1000] [--repeats 3]

Model: 6 layers, 6 heads, 384 wide, block 256, 65-token char vocabulary (the shakespeare-char
shape; random weights, since speed does not depend on them). One sample of --tokens new tokens from a
one-token prompt, on the CPU. Each mode runs in its own process so its peak RSS is its own. A round
runs kv-cache, nanogpt, kv-cache, plain-window, int8 (`--quantize int8`): the kv-cache runs either side of the
minute-long
nanogpt run cancel most of a shared machine's drift in speed, and the round's speed-up is their mean
over nanogpt's. The table shows each mode's median run and the median of the rounds' speed-ups.
Then `nanogpt sample --max-new-tokens 20` is timed from a cold start on a saved run of that model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from _common import machine, peak_rss_mib  # benchmarks/ is on sys.path when a script runs

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.fastpath import prepare_for_sampling
from nanogpt_cli.model import GPT

CONFIG = ModelConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
MODES = ("nanogpt", "plain-window", "kv-cache", "int8")


@torch.no_grad()
def nanogpt_way(model: GPT, idx: torch.Tensor, new_tokens: int, generator: torch.Generator):
    """nanoGPT's sample loop: crop to the last block_size tokens and run all of them, every step."""
    for _ in range(new_tokens):
        logits, _ = model(idx[:, -model.config.block_size :])
        probs = torch.softmax(logits[:, -1, :] / 0.8, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        yield int(idx[0, -1])


def run_mode(mode: str, new_tokens: int) -> dict:
    from nanogpt_cli.generate import generate_tokens

    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    generator = torch.Generator().manual_seed(1)
    if mode == "nanogpt":
        tokens = nanogpt_way(model, torch.zeros((1, 1), dtype=torch.long), new_tokens, generator)
    else:
        if mode == "int8":  # `nanogpt sample --quantize int8`
            from nanogpt_cli.quantize import quantize_int8

            quantize_int8(model)
        prepare_for_sampling(model)  # as `nanogpt sample` does
        tokens = generate_tokens(model, [0], new_tokens, 0.8, None, None, generator, use_cache=(mode != "plain-window"))
    start = time.perf_counter()
    first = None
    for count, _ in enumerate(tokens, 1):
        if count == 1:
            first = time.perf_counter() - start
    seconds = time.perf_counter() - start
    return {"mode": mode, "tokens": new_tokens, "seconds": seconds, "tokens_per_second": new_tokens / seconds,
            "time_to_first_token": first, "peak_rss_mib": peak_rss_mib()}


def cold_start(runs: int = 5) -> tuple[float, float]:
    """Median wall time of `nanogpt --version` and of `nanogpt sample --max-new-tokens 20`."""
    from nanogpt_cli.checkpoint import FORMAT_VERSION, save_checkpoint

    with tempfile.TemporaryDirectory() as home:
        run_dir = Path(home) / "runs" / "bench"
        run_dir.mkdir(parents=True)
        torch.manual_seed(0)
        chars = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        save_checkpoint(run_dir / "best.pt", {
            "format_version": FORMAT_VERSION, "model_config": asdict(CONFIG), "model": GPT(CONFIG).state_dict(),
            "tokenizer": {"kind": "char", "chars": chars}, "dataset": "shakespeare", "train_state": {"iteration": 0},
        })
        (run_dir / "config.json").write_text(json.dumps({"model_config": asdict(CONFIG)}))
        env = {**os.environ, "NANOGPT_HOME": home}
        timings = {}
        for name, args in (("version", ["--version"]), ("sample", ["sample", "--max-new-tokens", "20", "--seed", "1"])):
            walls = []
            for _ in range(runs):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "nanogpt_cli", *args], env=env, check=True, capture_output=True)
                walls.append(time.perf_counter() - start)
            timings[name] = statistics.median(walls)
    return timings["version"], timings["sample"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.tokens)))
        return

    print(machine(os.environ))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {CONFIG.n_layer}x{CONFIG.n_embd}, "
          f"block {CONFIG.block_size}; {args.tokens} new tokens\n")
    rounds = []
    for _ in range(args.repeats):
        runs = []
        for mode in ("kv-cache", "nanogpt", "kv-cache", "plain-window", "int8"):
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--tokens", str(args.tokens)],
                                 check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out))
        rounds.append(runs)

    def tokens_per_second(runs: list[dict], mode: str) -> float:  # a mode's mean in one round
        return statistics.mean(r["tokens_per_second"] for r in runs if r["mode"] == mode)

    def speedup(runs: list[dict], mode: str) -> float:
        return tokens_per_second(runs, mode) / tokens_per_second(runs, "nanogpt")

    print("| mode | tokens/s | speed-up | time to first token | total | peak RSS |\n|---|---:|---:|---:|---:|---:|")
    for mode in MODES:
        runs = sorted((run for r in rounds for run in r if run["mode"] == mode), key=lambda run: run["seconds"])
        r = runs[len(runs) // 2]
        print(
            f"| {mode} | {r['tokens_per_second']:,.0f} | {statistics.median(speedup(x, mode) for x in rounds):.1f}x | "
            f"{r['time_to_first_token'] * 1000:.1f} ms | {r['seconds']:.2f} s | {r['peak_rss_mib']:.0f} MiB |"
        )
    each = ", ".join(f"{speedup(x, 'kv-cache'):.1f}x" for x in rounds)
    print(f"\nkv-cache speed-up in each round: {each}")
    version, sample = cold_start()
    print(f"\ncold start (median of 5): `nanogpt --version` {version:.2f} s; "
          f"`nanogpt sample --max-new-tokens 20` {sample:.2f} s")


if __name__ == "__main__":
    main()
