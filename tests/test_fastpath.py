"""The CPU sampling form of a model (fastpath.py): the plain model's logits (up to the rounding of
column-major products) and texts, for every model option, cached and uncached, float32 and int8; frozen against
changes that would leave it
stale; and every private torch API with a fallback that works."""

from __future__ import annotations

import pytest
import torch

from nanogpt_cli import fastpath
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.fastpath import PreparedModelError, prepare_for_sampling
from nanogpt_cli.generate import generate_tokens
from nanogpt_cli.model import GPT, KVCache, build_model
from nanogpt_cli.quantize import quantize_int8

OPTIONS = [{}, {"bias": True}, {"pos": "rope", "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True},
           {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True},
           {"pos": "sinusoidal", "mlp": "swiglu", "tie": False, "softcap": 5.0}, {"pos": "none", "norm": "none"},
           {"mlp": "none", "residual": False}, {"mlp": "gelu-tanh"}]


@pytest.fixture
def pair(tiny_gpt):
    """pair(int8, **options): the same tiny model twice, one plain, one prepared for sampling."""

    def make(int8: bool = False, **options):
        plain = tiny_gpt(**options)
        fast = build_model(plain.config, {k: v.clone() for k, v in plain.state_dict().items()}).eval()
        if int8:
            quantize_int8(plain)
            quantize_int8(fast)
        return plain, prepare_for_sampling(fast)

    return make


def _texts(model, use_cache: bool) -> list[int]:
    return list(generate_tokens(model, [1, 2, 3], 40, 1.0, generator=torch.Generator().manual_seed(3),
                                use_cache=use_cache))


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
@pytest.mark.parametrize("options", OPTIONS, ids=[",".join(f"{k}={v}" for k, v in o.items()) or "nanogpt"
                                                  for o in OPTIONS])
def test_the_prepared_model_computes_what_the_plain_one_does(options, int8, pair):
    plain, fast = pair(int8, **options)
    idx = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    def same(a, b):  # column-major weights sum the products in another order: the last bits may differ
        return torch.allclose(a, b, rtol=1e-5, atol=1e-6)

    with torch.inference_mode():
        assert same(plain(idx)[0], fast(idx)[0])
        caches = plain.new_cache(2), fast.new_cache(2)
        for start, end in ((0, 5), (5, 6), (6, 9), (9, 10), (10, 11)):  # a prefill, single tokens, a few
            assert same(plain(idx[:, start:end], cache=caches[0])[0], fast(idx[:, start:end], cache=caches[1])[0])
    assert _texts(plain, True) == _texts(fast, True) and _texts(plain, False) == _texts(fast, False)


def test_the_prepared_form_is_what_makes_it_fast(pair):
    plain, fast = pair()
    block = fast.transformer.h[0]
    assert type(block).__call__ is type(block).forward  # called straight, no nn.Module machinery
    assert vars(block)["ln_1"] is block.ln_1 and vars(fast.lm_head)["weight"] is fast.lm_head.weight
    assert block.mlp.c_fc.weight.stride() == (1, 128)  # (128, 32), stored column-major
    assert fast.transformer.wte.weight is fast.lm_head.weight  # still tied
    assert not any(p.requires_grad for p in fast.parameters())
    cache = fast.new_cache()
    with torch.inference_mode():
        fast(torch.tensor([[1, 2, 3]]), cache=cache)
        fast(torch.tensor([[4]]), cache=cache)
    assert isinstance(cache, KVCache) and cache.length == 4
    # the views of the filled positions are made once per layer and length, and are views of the cache
    views = [t for layer in cache._filled for pair in layer.values() for t in pair]
    assert len(views) == 2 * 2 * 2 and all(any(t._base is b for b in cache.layers) for t in views)
    # the plain model keeps nanoGPT's plain modules
    assert type(plain.transformer.h[0]).__call__ is torch.nn.Module.__call__
    assert set(vars(plain.new_cache())) == {"layers", "length"}


@pytest.mark.parametrize("change", ["to", "float", "train", "load_state_dict", "cpu"])
def test_a_prepared_model_refuses_changes_that_would_leave_it_stale(change, pair):
    plain, fast = pair(pos="rope")
    calls = {"to": lambda m: m.to(torch.float64), "float": lambda m: m.float(), "train": lambda m: m.train(),
             "load_state_dict": lambda m: m.load_state_dict(plain.state_dict()), "cpu": lambda m: m.cpu()}
    with pytest.raises(PreparedModelError, match="prepared for sampling.*load a fresh model instead"):
        calls[change](fast)
    with pytest.raises(PreparedModelError):
        calls[change](fast.transformer.h[0])  # a submodule too
    assert fast.transformer.h[0].attn.rotary.cos.dtype == torch.float32
    assert fast.eval() is fast  # eval mode is what it is in already


def test_assigning_a_weight_or_layer_after_preparing_is_refused_too(pair):
    _, fast = pair()
    with pytest.raises(PreparedModelError):
        fast.lm_head.weight = torch.nn.Parameter(torch.zeros_like(fast.lm_head.weight))
    with pytest.raises(PreparedModelError):
        fast.transformer.h[0].mlp = torch.nn.Identity()
    assert fast.lm_head.weight.abs().sum() > 0


@pytest.mark.parametrize("name", ["_op", "DisableTorchFunctionSubclass", "_modules", "_is_avx512_bf16_supported"])
def test_each_private_torch_api_has_a_fallback_that_works(monkeypatch, name, pair):
    """Where a torch release drops a private name, its fallback runs: slower, never wrong."""
    real = fastpath.private
    monkeypatch.setattr(fastpath, "private", lambda owner, key, fallback=None:
                        fallback if key == name else real(owner, key, fallback))
    plain, fast = pair(int8=True, pos="rope", qk_norm=True)
    assert _texts(plain, True) == _texts(fast, True)
    if name == "_op":
        assert fast.transformer.h[0].attn.c_attn.kernel is torch.ops.quantized.linear_dynamic.default
    if name == "_modules":
        assert "ln_1" not in vars(fast.transformer.h[0])  # nothing cached, still correct
    if name == "_is_avx512_bf16_supported":
        monkeypatch.setattr(fastpath, "private", lambda owner, key, fallback=None: fallback)
        assert fastpath.cpu_has_bfloat16_instructions() is False


def test_building_a_model_to_load_skips_the_random_init_on_this_thread_only():
    config = ModelConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=32, norm="rmsnorm")
    weights = GPT(config).state_dict()
    before = torch.get_rng_state()
    model = build_model(config, weights)
    assert torch.equal(torch.get_rng_state(), before)  # no random numbers were drawn to fill the weights
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    # outside the build, torch.nn.init works as ever (nothing was patched)
    layer = torch.nn.Linear(4, 4)
    torch.nn.init.zeros_(layer.weight)
    assert torch.count_nonzero(layer.weight) == 0
