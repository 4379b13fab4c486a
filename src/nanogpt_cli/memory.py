"""Memory a model, a training batch or a KV cache will take, estimated from the config before anything
is allocated, so that a size no machine can hold (`--n-embd 1000000000000`, a checkpoint that claims a
block of 200 million positions) is one line naming the setting instead of an allocator crash or an
hour of swapping."""

from __future__ import annotations

import os
from typing import Any

from nanogpt_cli.errors import NanoGPTError

GIB = 2**30
FLOAT = 4  # bytes: estimates assume float32, the largest dtype nanogpt trains in


def parameters(config: Any) -> int:
    """Parameters of a model of this config (the transformer blocks, embeddings and head; the small
    norms and biases are left out, so this is a floor)."""
    C, V = config.n_embd, config.vocab_size
    if config.model == "bigram":
        return V * V
    tables = V * C * (1 if config.tie else 2) + (config.block_size * C if config.pos == "learned" else 0)
    return tables + config.n_layer * 12 * C * C


def fixed_tables(config: Any) -> int:
    """Values of the position tables made from the shape alone (rotary cos/sin, the sinusoid table)."""
    if config.model == "bigram":
        return 0
    if config.pos == "rope":
        return 2 * config.block_size * (config.n_embd // config.n_head)
    return config.block_size * config.n_embd if config.pos == "sinusoidal" else 0


def training_bytes(config: Any, batch_size: int) -> int:
    """Weights, gradients and two optimizer moments, plus what one micro-batch keeps for its backward
    pass, for every position: about 20 values per channel per layer (the norms, queries, keys and
    values, the 4x MLP and its activation, the residual stream), two attention rows per head, and 4
    per logit (the logits, their softmax, its gradient, a cast)."""
    if config.model == "bigram":
        activations = 4 * config.vocab_size
    else:
        per_layer = 20 * config.n_embd + 2 * config.n_head * config.block_size
        activations = config.n_layer * per_layer + 4 * config.vocab_size
    return FLOAT * (4 * parameters(config) + fixed_tables(config) + batch_size * config.block_size * activations)


def inference_bytes(config: Any, batch_size: int) -> int:
    """A forward pass without gradients over a batch of full blocks: the logits (and their softmax)
    and a few activations per channel."""
    per_position = 3 * config.vocab_size + (0 if config.model == "bigram" else 8 * config.n_embd)
    return model_bytes(config) + FLOAT * batch_size * config.block_size * per_position


def model_bytes(config: Any) -> int:
    """A model in float32, for evaluation or sampling, with its position tables."""
    return FLOAT * (parameters(config) + fixed_tables(config))


def device_memory(device: Any) -> int | None:
    """Bytes of memory on `device` (the machine's RAM for a CPU or an Apple GPU; None if unknown)."""
    if getattr(device, "type", device) == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this OS
        return None


def check_fits(need: int, device: Any, what: str, fix: str) -> None:
    """Refuse, before allocating, `what` needing `need` bytes when `device` has less memory in all."""
    total = device_memory(device)
    if total is not None and need > total:
        raise NanoGPTError(f"{what} needs about {_size(need)} of memory, more than the {_size(total)} of this "
                           f"{getattr(device, 'type', device)} device; {fix}")


def _size(count: int) -> str:
    return f"{count / GIB:,.1f} GiB" if count < 1e4 * GIB else f"{count / GIB:.2g} GiB"


def biggest_setting(config: Any, batch_size: int | None = None) -> str:
    """The setting to lower first: the one behind the largest part of the estimate."""
    positions = fixed_tables(config) + (config.block_size * config.n_embd if config.pos == "learned" else 0)
    terms = {"--n-embd or --n-layer": parameters(config) - positions, "--block-size": positions}
    if batch_size is not None:
        terms["--batch-size or --block-size"] = training_bytes(config, batch_size) // FLOAT - 4 * parameters(config)
    return max(terms, key=terms.__getitem__)
