"""int8 weights for sampling and evaluating on a CPU (`--quantize int8`).

A sampling step on a CPU is mostly matrix-vector products that stream every weight once per token;
with float32 weights larger than the CPU's cache, memory bandwidth sets the speed. PyTorch's dynamic
quantization stores each Linear weight of the transformer blocks as int8 with one scale per output
row (a quarter of the bytes), and at run time quantizes the activations of each call and multiplies
with its int8 kernels (fbgemm / oneDNN). The token embedding and the head stay float32: they are a
small share of the weights, and the head sets the output distribution.

This uses `torch.ao.quantization.quantize_dynamic`. Its successor, the `torchao` package, was measured
too: on this project's 2-core CPU its int8 weight-only path sampled at about 60% and its int8
dynamic path at about 20% of this one's speed (docs/performance.md), and torch.compile, which
torchao relies on for speed, costs more start-up than a whole sample. This module knows models and
devices; it never reads files.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from nanogpt_cli.errors import NanoGPTError

CHOICES = ("int8",)


def check_quantize(how: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """Raise a clear error unless `--quantize how` can run here (None: no quantization)."""
    if how is None:
        return
    if how not in CHOICES:
        raise NanoGPTError(f"unknown --quantize {how!r}: use int8 (or leave it out for float weights)")
    if device.type != "cpu":
        raise NanoGPTError(f"--quantize int8 runs on the CPU only (PyTorch's int8 kernels are CPU kernels), not on "
                           f"{device.type}; add --device cpu, or leave --quantize out")
    if dtype != torch.float32:
        raise NanoGPTError(f"--quantize int8 starts from float32 weights; leave out --dtype {str(dtype).removeprefix('torch.')}")
    if torch.backends.quantized.engine == "none":
        raise NanoGPTError("this PyTorch build has no int8 CPU kernels (no quantized engine); leave --quantize out")


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace the Linear layers of a GPT's blocks by int8 ones, in place; returns the model."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    blocks = getattr(getattr(model, "transformer", None), "h", None)
    if blocks is None:
        raise NanoGPTError("this model has no transformer blocks to quantize (the bigram model is one table); "
                           "leave --quantize out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        quantize_dynamic(blocks, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return model
