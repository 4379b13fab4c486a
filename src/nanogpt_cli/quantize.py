"""int8 weights for sampling and evaluating on a CPU (`--quantize int8`).

A sampling step on a CPU is mostly matrix-vector products that stream every weight once per token;
with float32 weights larger than the CPU's cache, memory bandwidth sets the speed. Here each Linear
weight of the transformer blocks becomes int8 with one scale per output row (symmetric: the largest
magnitude of a row maps to 127), a quarter of the bytes. At run time the input is quantized on the
fly (for sampling, each token with its own scale) and multiplied with PyTorch's int8 kernels
(`quantized::linear_dynamic`, fbgemm on x86), which hand back float32. The token embedding and the
head stay float32: a small share of the weights, and the head sets the output distribution.

These are the same ops that `torch.ao.quantization.quantize_dynamic` builds its layers from, without
its module: that module spent about as long in Python per call as the kernel spends multiplying
(docs/performance.md). The `torchao` package, torch.ao's successor, was measured too and sampled at
a fraction of this speed on a 2-core CPU. This module knows models and devices; it never reads files.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

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
        raise NanoGPTError("--quantize int8 starts from float32 weights; leave out --dtype "
                           f"{str(dtype).removeprefix('torch.')}")
    if torch.backends.quantized.engine == "none" or not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise NanoGPTError(f"this PyTorch build ({torch.__version__}) has no int8 CPU kernels; leave --quantize out")


class Int8Linear(nn.Module):
    """y = x W^T + b with W held as int8 (one float scale per output row) and x quantized on the fly.

    The kernel quantizes its whole input with one scale. With `per_token` (sampling), each row of x
    (one token) goes through the kernel alone, so it gets its own scale and its result never depends on
    which other tokens were fed with it: a prompt fed at once gives what feeding it token by token
    gives, and cached sampling what `--no-kv-cache` gives. Without it (eval), a batch of thousands of
    tokens is one call; the scale is then set by the batch's largest value, a little coarser."""

    def __init__(self, linear: nn.Linear, per_token: bool = True):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        zero = torch.zeros(weight.size(0), dtype=torch.long)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors announce their move to torchao
            qweight = torch.quantize_per_channel(weight, scale, zero, axis=0, dtype=torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()  # the packed layer keeps it
        # Packed once into the kernel's own layout (the float weight is not kept).
        self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kernel = torch.ops.quantized.linear_dynamic.default  # fastpath.py swaps in a faster handle
        self.per_token = per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range: 7-bit inputs, so the kernel's 16-bit sums of u8 x s8 pairs never saturate.
        if not self.per_token or x.numel() == x.size(-1):  # one call: the whole input, or a single token
            return self.kernel(x, self.packed, True)
        rows = x.reshape(-1, x.size(-1)).split(1)
        return torch.cat([self.kernel(row, self.packed, True) for row in rows]).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        scales = "per token" if self.per_token else "per call"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, inputs quantized {scales}"


def quantize_int8(model: nn.Module, per_token: bool = True, done: Callable[[torch.Tensor], None] | None = None
                  ) -> nn.Module:
    """Replace the Linear layers of a GPT's blocks by Int8Linear ones, in place; returns the model.
    `done`, if given, is called with each float weight once its int8 layer no longer needs it."""
    blocks = getattr(getattr(model, "transformer", None), "h", None)
    if blocks is None:
        raise NanoGPTError("this model has no transformer blocks to quantize (the bigram model is one table); "
                           "leave --quantize out")
    for parent in list(blocks.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child, per_token))  # the float weight goes with the old layer
                if done is not None:
                    done(child.weight)
    return model
