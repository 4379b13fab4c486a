"""Sampling and evaluating an imported GPT-2 (124M) on this machine, as a user would, process by process.

    python benchmarks/gpt2_sample.py [--tokens 200 1000] [--dtype float32 bfloat16]

This machine has no network, so the weights are random tensors in GPT-2 124M's exact layout and shapes
(a Hugging Face folder: config.json + model.safetensors, 12 layers, 768 wide, 50257 tokens, block 1024);
speed and memory do not depend on the values. The tokenizer is the real GPT-2 BPE, from ../shared/data.
Measured, each in its own `nanogpt` process: `import` (reading 500 MB and writing the run), `sample`
from a one-line prompt (whole process, time to first token, tokens/s in the loop, peak RSS) for each
--tokens count (memory stays flat with the count: the KV cache is allocated once), and `eval` on a text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine
from safetensors.torch import save_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
LAYERS, WIDTH, VOCAB, POSITIONS = 12, 768, 50257, 1024


def write_gpt2_folder(folder: Path) -> None:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    t = {"wte.weight": r(VOCAB, WIDTH), "wpe.weight": r(POSITIONS, WIDTH),
         "ln_f.weight": torch.ones(WIDTH), "ln_f.bias": torch.zeros(WIDTH)}
    for i in range(LAYERS):
        p = f"h.{i}."
        t |= {p + "ln_1.weight": torch.ones(WIDTH), p + "ln_1.bias": torch.zeros(WIDTH),
              p + "attn.c_attn.weight": r(WIDTH, 3 * WIDTH), p + "attn.c_attn.bias": torch.zeros(3 * WIDTH),
              p + "attn.c_proj.weight": r(WIDTH, WIDTH), p + "attn.c_proj.bias": torch.zeros(WIDTH),
              p + "ln_2.weight": torch.ones(WIDTH), p + "ln_2.bias": torch.zeros(WIDTH),
              p + "mlp.c_fc.weight": r(WIDTH, 4 * WIDTH), p + "mlp.c_fc.bias": torch.zeros(4 * WIDTH),
              p + "mlp.c_proj.weight": r(4 * WIDTH, WIDTH), p + "mlp.c_proj.bias": torch.zeros(WIDTH)}
    folder.mkdir(parents=True)
    save_file(t, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "activation_function": "gelu_new", "vocab_size": VOCAB, "n_positions": POSITIONS,
        "n_ctx": POSITIONS, "n_embd": WIDTH, "n_layer": LAYERS, "n_head": 12}))


def nanogpt(*args: str, env: dict, src: str | None = None) -> tuple[float, float, str]:
    """Run `nanogpt ARGS`: (wall seconds, that process's own peak RSS in MiB, stdout)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        env = {**env, "PYTHONPATH": src} if src else env  # another source tree, for an A/B comparison
        child = subprocess.Popen([sys.executable, "-m", "nanogpt_cli", *args], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # the rusage of this child alone
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode:
            sys.exit(f"nanogpt {' '.join(args)} failed:\n{err.read()}")
        return seconds, usage.ru_maxrss / 1024, out.read()




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--compare-src", help="also sample (float32) with this src/ folder, alternating, e.g. an "
                                              "older checkout's: load time and memory before and after a change")
    parser.add_argument("--rounds", type=int, default=3, help="alternations for --compare-src")
    args = parser.parse_args()
    print(f"{machine()}; torch {torch.__version__}")
    work = Path(tempfile.mkdtemp(prefix="gpt2-bench-"))
    try:
        env = {**os.environ, "NANOGPT_HOME": str(work / "home")}
        cache = work / "home" / "cache" / "tiktoken"
        cache.mkdir(parents=True)
        shutil.copy(SHARED / "r50k_base.tiktoken", cache / hashlib.sha1(R50K_URL.encode()).hexdigest())
        write_gpt2_folder(work / "gpt2")
        seconds, rss, _ = nanogpt("import", str(work / "gpt2"), "--run", "gpt2", "--quiet", env=env)
        print(f"import (GPT-2 layout folder, 124M parameters): {seconds:.1f} s, peak RSS {rss:.0f} MiB")
        print("| dtype | new tokens | whole process s | time to first token s | tokens/s (loop) | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for dtype in args.dtype:
            for tokens in args.tokens:
                seconds, rss, stdout = nanogpt("sample", "--run", "gpt2", "--prompt", "The meaning of life is",
                                               "--max-new-tokens", str(tokens), "--seed", "1", "--dtype", dtype,
                                               "--device", "cpu", "--json", env=env)
                row = json.loads(stdout)
                print(f"| {dtype} | {tokens} | {seconds:.2f} | {row['time_to_first_token']:.3f} | "
                      f"{row['tokens_per_second']:.1f} | {rss:.0f} |")
        if args.compare_src:
            print("| source | round | whole process s (50 tokens) | tokens/s | peak RSS MiB |")
            print("|---|---:|---:|---:|---:|")
            for round_ in range(args.rounds):
                for label, src in (("this tree", None), ("--compare-src", args.compare_src)):
                    seconds, rss, stdout = nanogpt("sample", "--run", "gpt2", "--prompt", "Hello", "--max-new-tokens",
                                                   "50", "--seed", "1", "--device", "cpu", "--json", env=env, src=src)
                    print(f"| {label} | {round_ + 1} | {seconds:.2f} | "
                          f"{json.loads(stdout)['tokens_per_second']:.1f} | {rss:.0f} |")
        text = work / "eval.txt"
        text.write_text((SHARED / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
        for dtype in args.dtype:
            seconds, rss, stdout = nanogpt("eval", "--run", "gpt2", "--text-file", str(text), "--batch-size", "4",
                                           "--dtype", dtype, "--device", "cpu", "--json", env=env)
            row = json.loads(stdout)
            print(f"eval {dtype}: {row['tokens']:,} tokens in {seconds:.1f} s ({row['tokens'] / seconds:,.0f} tokens/s "
                  f"whole process), peak RSS {rss:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
