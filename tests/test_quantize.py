"""`--quantize int8`: int8 block weights for sampling and evaluating on the CPU. It samples with every model
option, the KV cache agrees with the plain path, eval shows the float32 loss beside the int8 one, and
what cannot work says so in one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.fastpath import prepare_for_sampling
from nanogpt_cli.generate import SampleSession, generate_tokens
from nanogpt_cli.quantize import Int8Linear, check_quantize, quantize_int8


def _linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def test_int8_works_with_every_option_and_the_cache(tiny_gpt, model_options):
    model = tiny_gpt(**model_options)
    idx = torch.randint(0, 40, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, _ = model(idx, idx)
    quantize_int8(model)
    # only the head (and the embedding, not a Linear) stay float
    assert _linears(model) == ["lm_head"]
    with torch.no_grad():
        logits, _ = model(idx, idx)
    assert (logits - reference).abs().max() < 0.1 * reference.abs().max() + 1e-5  # int8 is close, not equal
    # The cached steps compute what the whole window computes: each token's inputs are quantized with
    # its own scale, fed alone or with others, so only float rounding tells the two apart.
    cache = model.new_cache()
    with torch.no_grad():
        model(idx[:, :6], cache=cache)
        steps = torch.cat([model(idx[:, t : t + 1], cache=cache)[0][:, -1] for t in range(6, 16)])
    assert (steps - logits[0, 6:]).abs().max() < 1e-4 * logits.abs().max() + 1e-5
    prepare_for_sampling(model)  # what sampling on a CPU does next
    sampled = list(generate_tokens(model, [1, 2, 3], 40, 1.0, generator=torch.Generator().manual_seed(3)))
    assert len(sampled) == 40 and all(0 <= t < 40 for t in sampled)


def test_an_int8_layer_computes_the_linear_up_to_rounding_and_keeps_no_float_weight():
    torch.manual_seed(0)
    linear = nn.Linear(96, 200)
    layer = Int8Linear(linear)
    assert list(layer.parameters()) == [] and "int8" in repr(layer)
    x = torch.randn(3, 5, 96)
    exact, approx = linear(x), layer(x)
    assert approx.shape == exact.shape == (3, 5, 200) and approx.dtype == torch.float32
    error = (approx - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.02  # int8 weights and inputs: close, not equal
    # One scale per output row: a row of tiny weights keeps its precision beside a row of huge ones.
    wide = nn.Linear(96, 200, bias=False)
    with torch.no_grad():
        wide.weight[0] *= 1000
        wide.weight[1] *= 0.001
    small, small_exact = Int8Linear(wide)(x)[..., 1], wide(x)[..., 1]
    assert (small - small_exact).abs().max() < 0.02 * small_exact.abs().max()


def test_per_token_scales_make_a_tokens_result_independent_of_the_others():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(2, 7, 64)
    x[1, 3] *= 50  # one loud token
    per_token, per_call = Int8Linear(linear), Int8Linear(linear, per_token=False)
    together = per_token(x)
    alone = torch.stack([torch.cat([per_token(x[b : b + 1, t : t + 1]) for t in range(7)], dim=1)[0] for b in range(2)])
    assert torch.equal(together, alone)  # bit for bit
    # One scale per call instead: the loud token coarsens every other token's inputs.
    batched = per_call(x)
    assert not torch.equal(batched, alone)
    assert (batched - linear(x)).abs()[0].max() > 2 * (together - linear(x)).abs()[0].max()


def test_an_int8_session_holds_its_own_weights_not_the_checkpoint_file(trained_run, home):
    # The checkpoint is mapped to quantize it without a float copy in memory; afterwards nothing may
    # read from it: a training run may rewrite best.pt while a sampling session is open.
    session = SampleSession.open(trained_run, quantize="int8")
    before = "".join(session.generate("the ", 80, seed=3))
    path = home / "runs" / trained_run / "best.pt"
    size = path.stat().st_size
    with open(path, "r+b") as f:  # zeros over every byte, in place (the same file, the same size)
        f.write(bytes(size))
    assert "".join(session.generate("the ", 80, seed=3)) == before


def test_quantize_refuses_what_it_cannot_do():
    cpu = torch.device("cpu")
    check_quantize(None, torch.device("cuda"), torch.float16)  # nothing asked, nothing checked
    with pytest.raises(NanoGPTError, match="unknown --quantize 'int4': use int8"):
        check_quantize("int4", cpu, torch.float32)
    with pytest.raises(NanoGPTError, match="runs on the CPU only .* not on cuda; add --device cpu"):
        check_quantize("int8", torch.device("cuda"), torch.float32)
    with pytest.raises(NanoGPTError, match="runs on the CPU only .* not on mps"):
        check_quantize("int8", torch.device("mps"), torch.float32)
    with pytest.raises(NanoGPTError, match="starts from float32 weights; leave out --dtype bfloat16"):
        check_quantize("int8", cpu, torch.bfloat16)


def test_quantize_says_so_when_pytorch_has_no_int8_kernels(monkeypatch):
    monkeypatch.setattr(torch.backends, "quantized", SimpleNamespace(engine="none"))  # a build without them
    with pytest.raises(NanoGPTError, match=r"this PyTorch build \(.*\) has no int8 CPU kernels; leave --quantize out"):
        check_quantize("int8", torch.device("cpu"), torch.float32)


def test_sample_int8_from_the_cli(cli, trained_run):
    args = ["sample", "--run", trained_run, "--quantize", "int8", "--max-new-tokens", "300", "--seed", "4", "--json"]
    cached = cli(*args)
    assert cached.exit_code == 0, cached.output
    plain = cli(*args, "--no-kv-cache")  # the window (16 tokens) slides 35 times on the way
    assert json.loads(cached.stdout)["text"] == json.loads(plain.stdout)["text"]
    assert json.loads(cached.stdout)["tokens"] == 300
    streamed = cli("sample", "--run", trained_run, "--quantize", "int8", "--prompt", "the", "--max-new-tokens", "20",
                   "--stop", "\\n", "--top-p", "0.9", "--seed", "1")
    assert streamed.exit_code == 0 and streamed.stdout.startswith("the")


def test_eval_int8_shows_the_float32_loss_beside(cli, trained_run):
    result = cli("eval", "--run", trained_run, "--quantize", "int8", "--iters", "5", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    plain = json.loads(cli("eval", "--run", trained_run, "--iters", "5", "--json").stdout)
    assert row["quantize"] == "int8" and row["float32_loss"] == plain["loss"]  # the same batches
    assert row["quantize_cost"] == pytest.approx(row["loss"] - plain["loss"]) and abs(row["quantize_cost"]) < 0.05
    table = cli("eval", "--run", trained_run, "--quantize", "int8", "--iters", "5")
    assert "loss (int8)" in table.stdout and "loss (float32)" in table.stdout and "int8 costs" in table.stdout


def test_quantize_errors_from_the_cli(cli, trained_run):
    result = cli("sample", "--run", trained_run, "--quantize", "int4")
    assert result.exit_code == 1 and "unknown --quantize 'int4'" in result.stderr
    result = cli("eval", "--run", trained_run, "--quantize", "int8", "--dtype", "bfloat16")
    assert result.exit_code == 1 and "leave out --dtype bfloat16" in result.stderr
    dataset = json.loads(cli("info", trained_run, "--json").stdout)["summary"]["dataset"]
    assert (
        cli("train", "--model", "bigram", "--dataset", dataset, "--run", "bi", "--max-iters", "2", "--quiet").exit_code
        == 0
    )
    result = cli("sample", "--run", "bi", "--quantize", "int8", "--max-new-tokens", "5")
    assert result.exit_code == 1 and "no transformer blocks to quantize" in result.stderr
