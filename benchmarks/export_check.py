"""Exported runs against the tools that run them: transformers (`--format hf`) and llama.cpp itself, through
llama-cpp-python (`--format gguf`). Too slow to build for CI (about 10 minutes on 2 cores), so it is here:

    pip install llama-cpp-python      # builds llama.cpp from source with cmake and a C++ compiler
    python benchmarks/export_check.py [--iters 300] [--dtypes float32 float16 q8_0]

For each architecture nanogpt exports (the default `cpu` preset, and runs made with the flags of each
other layout) it trains a char-level run on Tiny Shakespeare in a temporary NANOGPT_HOME, exports it, and
prints for each reader: whether its tokenizer gives our ids, the largest logit difference over a 64-token
text, and whether its greedy continuation of "ROMEO:" (40 tokens) is ours, token for token.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine

RUNS = {  # name: train flags (the default preset, then one run per other architecture)
    "default (cpu preset)": [],
    "gpt2 (nanogpt-cpu)": ["--preset", "nanogpt-cpu"],
    "llama": ["--mlp", "swiglu", "--no-qk-norm", "--no-tie"],
    "arcee": ["--mlp", "relu2", "--no-qk-norm"],
}
TEXT = "ROMEO:\nWhat light through yonder window breaks? It is the east, and Juliet"


def nanogpt(home: Path, *args: str) -> str:
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "nanogpt_cli", *args], env=env, check=True, capture_output=True,
                          text=True).stdout


def ours(home: Path, run: str):
    import torch

    from nanogpt_cli.checkpoint import load_model
    from nanogpt_cli.tokenizer import tokenizer_from_spec

    os.environ["NANOGPT_HOME"] = str(home)
    loaded = load_model(home / "runs" / run / "best.pt", torch.device("cpu"))
    return loaded.model.eval(), tokenizer_from_spec(loaded.checkpoint["tokenizer"])


def check_transformers(folder: Path, model, tokenizer) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nanogpt_cli.generate import generate_tokens

    theirs, their_tokens = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.encode(TEXT)[: model.config.block_size]
    x = torch.tensor([ids])
    with torch.no_grad():
        difference = (model(x, x)[0] - theirs(x).logits).abs().max().item()
        prompt = tokenizer.encode("ROMEO:")
        greedy = theirs.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)[0, len(prompt):]
    same_ids = their_tokens.encode(TEXT, add_special_tokens=False) == tokenizer.encode(TEXT)
    same_text = greedy.tolist() == list(generate_tokens(model, prompt, 40, temperature=0))
    return f"{type(theirs).__name__}: tokenizer {same_ids}, max |logit difference| {difference:.2e}, greedy {same_text}"


def check_llama_cpp(path: Path, model, tokenizer) -> str:
    import numpy as np
    import torch
    from llama_cpp import Llama

    from nanogpt_cli.generate import generate_tokens

    llm = Llama(model_path=str(path), n_ctx=model.config.block_size, logits_all=True, verbose=False)
    ids = tokenizer.encode(TEXT)[: model.config.block_size]
    same_ids = llm.tokenize(TEXT.encode(), add_bos=False, special=False) == tokenizer.encode(TEXT)
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids), : model.config.vocab_size])
    with torch.no_grad():
        difference = np.abs(theirs - model(torch.tensor([ids]), torch.tensor([ids]))[0][0].numpy()).max()
    prompt = tokenizer.encode("ROMEO:")
    llm.reset()
    greedy = []
    for token in llm.generate(prompt, temp=0.0, top_k=1):
        greedy.append(token)
        if len(greedy) == 40:
            break
    same_text = greedy == list(generate_tokens(model, prompt, 40, temperature=0))
    return f"llama.cpp: tokenizer {same_ids}, max |logit difference| {difference:.2e}, greedy {same_text}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "q8_0"])
    args = parser.parse_args()
    import llama_cpp
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    print(f"{machine(os.environ)}; transformers {transformers.__version__}, llama-cpp-python {llama_cpp.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        home, out = Path(tmp) / "home", Path(tmp) / "exported"  # export refuses nanogpt's own folders
        nanogpt(home, "prepare", "shakespeare", "-q")
        for name, flags in RUNS.items():
            run = name.split()[0]
            nanogpt(home, "train", "--run", run, "--max-iters", str(args.iters), "--eval-interval", str(args.iters),
                    "--sample-tokens", "0", "-q", *flags)
            model, tokenizer = ours(home, run)
            line = nanogpt(home, "export", run, str(out / f"{run}-hf")).strip()
            print(f"\n{name}: {line.split(' to ')[0]}")
            print("  " + check_transformers(out / f"{run}-hf", model, tokenizer))
            for dtype in args.dtypes:
                extra = ["--quantize", "q8_0"] if dtype == "q8_0" else ["--dtype", dtype]
                nanogpt(home, "export", run, str(out / f"{run}-{dtype}"), "--format", "gguf", *extra)
                print(f"  {dtype:8} " + check_llama_cpp(out / f"{run}-{dtype}" / "model.gguf", model, tokenizer))


if __name__ == "__main__":
    main()
