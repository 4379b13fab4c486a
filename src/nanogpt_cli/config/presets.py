"""Presets: named starting points for a run's values (the `train` command's --preset, and the preset
chosen by device when none is given)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nanogpt_cli.errors import NanoGPTError


@dataclass(frozen=True)
class Preset:
    description: str
    values: dict[str, Any]


# The `cpu` preset's recipe; `mps` is the same at a larger size.
_CPU_RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=16, max_iters=1500,
                   lr=3e-3, min_lr=1e-4, warmup_iters=50, schedule="wsd", decay_frac=0.3, optimizer="muon",
                   muon_lr=0.04, pos="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, eval_interval=250,
                   eval_iters=20)

PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "learns the most on a laptop CPU in under 3 minutes: nanoGPT's 4x128 shape with rotary positions, "
        "RMSNorm, SwiGLU, QK-norm, Muon and a warmup-stable-decay schedule (exports as Qwen3)",
        _CPU_RECIPE,
    ),
    "mps": Preset(
        "the cpu preset's recipe at the size a laptop GPU trains in minutes: 6 layers, 192 wide, block 128 "
        "(Muon orthogonalises in float32 there; not yet timed on Apple hardware)",
        {**_CPU_RECIPE, "n_layer": 6, "n_head": 6, "n_embd": 192, "block_size": 128, "batch_size": 32,
         "max_iters": 2000},
    ),
    "shakespeare-char": Preset(
        "nanoGPT's GPU recipe for Tiny Shakespeare (6 layers, 384 wide, block 256; val ~1.47)",
        dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
             max_iters=5000, lr=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=250, eval_iters=200),
    ),
    "nanogpt-cpu": Preset(
        "nanoGPT's documented CPU recipe for Tiny Shakespeare, exactly, for comparisons (about 2 minutes on 2 cores)",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False, batch_size=12, grad_accum=1,
             max_iters=2000, lr=1e-3, min_lr=1e-4, warmup_iters=100, beta1=0.9, beta2=0.99,
             weight_decay=0.1, grad_clip=1.0, eval_interval=250, eval_iters=20, schedule="cosine", optimizer="adamw"),
    ),
    "lecture": Preset(
        "the final gpt.py of the 'Let's build GPT' lecture (6x384, block 256; constant lr 3e-4), for GPU users",
        dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=True, batch_size=64, max_iters=5000,
             lr=3e-4, min_lr=3e-4, warmup_iters=0, beta2=0.999, weight_decay=0.01, grad_clip=0.0, eval_interval=500,
             eval_iters=200),
    ),
    "addition": Preset(
        "task datasets (nanogpt prepare addition): a 2x128 GPT learning the answers; block = one problem",
        dict(n_layer=2, n_head=4, n_embd=128, dropout=0.0, batch_size=64, max_iters=2000, lr=2e-3, min_lr=2e-4,
             warmup_iters=100, eval_interval=500, eval_iters=20, pos="learned", norm="layernorm", mlp="gelu"),
    ),
    "bigram": Preset(
        "the lecture's bigram baseline: one embedding table of next-token logits (val ~2.5)",
        dict(model="bigram", block_size=8, batch_size=32, max_iters=3000, lr=1e-2, min_lr=1e-3,
             warmup_iters=0, weight_decay=0.0, eval_interval=300, eval_iters=50),
    ),
}

DEFAULT_PRESET_FOR_DEVICE = {"cpu": "cpu", "mps": "mps", "cuda": "shakespeare-char"}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise NanoGPTError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)} (see `nanogpt train "
                           "--preset list`)")
    return PRESETS[name]
