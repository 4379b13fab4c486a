"""A loaded model's CPU sampling form, and every private torch API the project uses.

A sampling step on a CPU feeds one token through the network: a few hundred small ops, where the
Python around each op costs as much as the op. `prepare_for_sampling` takes a model from model.py,
unchanged in what it computes, and removes that Python:

- the layers are called straight: each module's class becomes a subclass whose `__call__` is its
  `forward`, skipping nn.Module's call machinery (hooks, two more frames); the norms, Linear and
  Embedding go to their ops without the functional wrappers' argument handling;
- every Linear weight is stored column-major (the same values; a CPU reads it faster in a
  matrix-vector product);
- each module gets plain attributes for its submodules, parameters and buffers, so `self.ln_1` is an
  ordinary attribute read instead of a failed lookup caught by nn.Module.__getattr__;
- the KV cache hands attention views made once per layer and length;
- the int8 layers call their kernel without the op wrapper's tracing checks.

Those copies would go stale if the model changed afterwards, so a prepared model is frozen: `.to()`,
`.train()`, `load_state_dict()` and the like raise `PreparedModelError` instead of leaving a stale copy
behind. Its logits are the plain model's up to the last bits that the column-major products round
differently, and its seeded texts the same (tests/test_fastpath.py, every model option).

The private torch APIs (underscore names) each have a fallback, used when a torch release removes or
renames them and exercised by the tests: slower, never wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from nanogpt_cli.model import GPT, KVCache
from nanogpt_cli.quantize import Int8Linear

# ------------------------------------------------------------------------------ private torch APIs


def private(owner: object, name: str, fallback: object = None) -> object:
    """`owner.name`, a private torch attribute, or `fallback` where this torch has none. Every private
    name the project reads goes through here (the tests make each one fail to check its fallback)."""
    return getattr(owner, name, fallback)


def cpu_has_bfloat16_instructions() -> bool:
    """AVX512-BF16 or AMX on this CPU (torch.cpu's private feature probes; without them: False, so a
    caller picks float32, which is never the slow choice)."""
    probes = [private(torch.cpu, name) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if callable(probe))


def int8_linear_kernel() -> Callable[..., torch.Tensor]:
    """quantized::linear_dynamic without its OpOverload wrapper, which searches the arguments for the
    fake tensors of tracing on every call (a few us, 24 calls a token). Fallback: the public overload."""
    overload = torch.ops.quantized.linear_dynamic.default
    return private(overload, "_op", overload)


def _plain_tensors() -> contextlib.AbstractContextManager:
    """Ops skip asking each argument for a __torch_function__ override, a lookup that costs
    microseconds per op on objects such as the int8 layers' packed weights. Fallback: nothing."""
    disable = private(torch._C, "DisableTorchFunctionSubclass")
    return disable() if callable(disable) else contextlib.nullcontext()


def _registries(module: nn.Module) -> list[dict]:
    """nn.Module's own dicts of submodules, parameters and buffers (private attributes; without them
    no lookups are cached)."""
    found = (private(module, name) for name in ("_modules", "_parameters", "_buffers"))
    return [registry for registry in found if isinstance(registry, dict)]


@contextlib.contextmanager
def sampling_step(onednn: bool) -> Iterator[None]:
    """Settings for one sampling step: plain tensors (above), and oneDNN off unless `onednn`. On a
    CPU, PyTorch hands exact GELU to a oneDNN primitive when oneDNN is on, about 12 us for one token's
    values against 2 us in its own kernel; nothing else in a float32 step uses oneDNN, while bfloat16
    and float16 products do, so they keep it. The setting is restored after every step, so code that
    runs between tokens (training, say) keeps its own."""
    saved = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = saved and onednn
    try:
        with _plain_tensors():
            yield
    finally:
        torch.backends.mkldnn.enabled = saved


# --------------------------------------------------------------------------- call-straight classes


class _LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class _RMSNorm(nn.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class _Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)


class _Embedding(nn.Embedding):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.embedding(self.weight, idx)


# Layers whose forward goes to the op itself; every other module keeps its own forward.
_DIRECT = {nn.LayerNorm: _LayerNorm, nn.RMSNorm: _RMSNorm, nn.Linear: _Linear, nn.Embedding: _Embedding}
_STRAIGHT: dict[type, type] = {}


def _straight_class(cls: type) -> type:
    """A subclass of `cls` (or of its direct-op twin) whose instances are called straight."""
    if cls not in _STRAIGHT:
        base = _DIRECT.get(cls, cls)
        _STRAIGHT[cls] = type(f"Straight{cls.__name__}", (_Prepared, base), {"__call__": base.forward})
    return _STRAIGHT[cls]


class PreparedModelError(RuntimeError):
    """A prepared model was asked to change; see the module docstring."""


class _Prepared:
    """Mixed into every prepared module: what would leave the copied attributes stale is refused."""

    def _frozen(self, *args, **kwargs):
        raise PreparedModelError("this model is prepared for sampling (fastpath.prepare_for_sampling) and cannot "
                                 "be moved, retyped, put in training mode or loaded into; load a fresh model instead")

    to = cpu = cuda = float = double = half = bfloat16 = train = load_state_dict = _apply = _frozen
    register_buffer = register_parameter = add_module = register_module = _frozen

    def eval(self):
        return self  # already in eval mode

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, (torch.Tensor, nn.Module)):  # a new weight, buffer or layer
            self._frozen()
        super().__setattr__(name, value)


class _ViewCache(KVCache):
    """A KV cache that makes the views of each layer's first n positions once and hands them out
    again (two ops a layer fewer per step)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._filled: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in self.layers]

    def append(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + kv.size(3)
        self.layers[layer].narrow(3, self.length, kv.size(3)).copy_(kv)
        filled = self._filled[layer].get(end)
        if filled is None:
            filled = self._filled[layer][end] = tuple(self.layers[layer].narrow(3, 0, end).unbind(0))
        return filled


@torch.no_grad()
def prepare_for_sampling(model: nn.Module) -> nn.Module:
    """The model, in place, in its CPU sampling form (see the module docstring); returns it. Call it
    once the model is loaded, moved, in eval mode and (for --quantize int8) quantized."""
    model.eval()
    if isinstance(model, GPT) and next(model.parameters()).device.type == "cpu":
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight = nn.Parameter(module.weight.t().contiguous().t(), requires_grad=False)
        if model.config.tie:
            model.transformer.wte.weight = model.lm_head.weight  # the tie survives the new storage
        config = model.config
        model.new_cache = lambda batch_size=1: _ViewCache(config, batch_size, model.lm_head.weight.device,
                                                          model.lm_head.weight.dtype)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.kernel = int8_linear_kernel()
        for registry in _registries(module):
            vars(module).update(registry)
        module.__class__ = _straight_class(type(module))
    return model
