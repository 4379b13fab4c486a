"""Options beyond nanoGPT: positions, norms, MLPs, QK-norm, untied head, logit soft-cap. Each one
samples the same with and without the KV cache, trains, resumes, evaluates and exports (or refuses to)."""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.fastpath import prepare_for_sampling
from nanogpt_cli.generate import generate_tokens
from nanogpt_cli.model import GPT


def test_each_option_samples_the_same_with_and_without_the_cache(tiny_gpt, model_options):
    model = tiny_gpt(**model_options)
    idx = torch.randint(0, 40, (2, 16))
    full, _ = model(idx, idx)
    cache = model.new_cache(batch_size=2)
    prefill, _ = model(idx[:, :6], cache=cache)
    assert torch.allclose(prefill[:, -1], full[:, 5], atol=1e-5)
    several, _ = model(idx[:, 6:10], cache=cache)  # several new tokens after cached ones
    assert torch.allclose(several[:, -1], full[:, 9], atol=1e-5)
    for t in range(10, 16):
        step, _ = model(idx[:, t : t + 1], cache=cache)
        assert torch.allclose(step[:, -1], full[:, t], atol=1e-5), t
    # Without targets or a cache (the plain sampling path) only the last position is computed past
    # the last attention, and it is the full forward's last position.
    last, _ = model(idx)
    assert last.shape == (2, 1, 40) and torch.allclose(last[:, -1], full[:, -1], atol=1e-5)
    prepare_for_sampling(model)  # what sampling on a CPU does next
    plain = list(
        generate_tokens(model, [1, 2, 3], 40, 1.0, generator=torch.Generator().manual_seed(3), use_cache=False)
    )
    cached = list(generate_tokens(model, [1, 2, 3], 40, 1.0, generator=torch.Generator().manual_seed(3)))
    assert plain == cached  # across two slides of the 16-token window


def test_each_option_changes_the_network(tiny_gpt, model_options):
    idx = torch.randint(0, 40, (1, 16))
    reference, _ = tiny_gpt()(idx, idx)
    logits, _ = tiny_gpt(**model_options)(idx, idx)
    assert not torch.equal(logits, reference)


def test_what_softcap_tie_and_rope_change(tiny_gpt):
    idx = torch.randint(0, 40, (1, 16))
    assert tiny_gpt(softcap=3.0)(idx, idx)[0].abs().max() < 3.0
    untied = tiny_gpt(tie=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert "transformer.wpe.weight" not in tiny_gpt(pos="rope").state_dict()


def test_swiglu_keeps_the_parameter_count_close():
    def count(mlp):
        return sum(p.numel() for p in GPT(ModelConfig(vocab_size=65, n_embd=128, mlp=mlp)).parameters())
    assert abs(count("swiglu") - count("gelu")) / count("gelu") < 0.01


def test_rope_needs_an_even_head_size(cli, trained_run):
    result = cli("train", "--dataset", "poems", "--pos", "rope", "--n-embd", "18", "--n-head", "2")
    assert result.exit_code == 1 and "--pos rope needs an even head size; n_embd / n_head is 9" in result.stderr
    result = cli("train", "--dataset", "poems", "--mlp", "tanh")
    assert (
        result.exit_code == 1
        and "--mlp must be one of gelu, gelu-tanh, relu, relu2, swiglu, none, got 'tanh'" in result.stderr
    )


def test_a_run_with_every_option_trains_samples_evaluates_and_resumes(cli, home, trained_run, tiny):
    options = ["--pos", "rope", "--norm", "rmsnorm", "--mlp", "swiglu", "--qk-norm", "--no-tie", "--softcap", "15"]
    result = cli("train", "--dataset", "poems", "--run", "modern", *tiny, *options)
    assert result.exit_code == 0, result.output
    config = json.loads((home / "runs" / "modern" / "config.json").read_text())["model_config"]
    assert {k: config[k] for k in ("pos", "norm", "mlp", "qk_norm", "tie", "softcap")} == \
        dict(pos="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, tie=False, softcap=15.0)
    cached = cli("sample", "--run", "modern", "--max-new-tokens", "40", "--seed", "4", "--prompt", "the")
    plain = cli(
        "sample", "--run", "modern", "--max-new-tokens", "40", "--seed", "4", "--prompt", "the", "--no-kv-cache"
    )
    assert cached.exit_code == 0 and cached.stdout == plain.stdout
    assert cli("eval", "--run", "modern", "--iters", "2").exit_code == 0
    info = cli("info", "modern").stdout
    assert "rmsnorm" in info and "swiglu" in info
    result = cli("train", "--run", "modern", "--resume", "--max-iters", "30", "--pos", "learned")
    assert result.exit_code == 1 and "--pos learned would change run 'modern' (it has rope)" in result.stderr
    result = cli("train", "--run", "modern", "--resume", "--max-iters", "30", "-q", "--sample-tokens", "0")
    assert result.exit_code == 0, result.output
    result = cli("export", "modern", home.parent / "out")
    assert result.exit_code == 1
    assert "no architecture that transformers and llama.cpp run computes this model's --softcap 15.0" in result.stderr


def test_gelu_tanh_exports_as_gpt2s_activation_and_imports_back(cli, home, trained_run, tmp_path, tiny):
    assert cli("train", "--dataset", "poems", "--run", "tanh", "--mlp", "gelu-tanh", *tiny).exit_code == 0
    assert cli("export", "tanh", tmp_path / "out").exit_code == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["activation_function"] == "gelu_new"

    from nanogpt_cli.checkpoint import load_model
    from nanogpt_cli.pretrained import load_source

    found = load_source(str(tmp_path / "out"))
    config, weights = found.config, found.weights
    assert config.mlp == "gelu-tanh"
    theirs = GPT(config).eval()
    theirs.load_state_dict(weights)
    ours = load_model(home / "runs" / "tanh" / "best.pt", torch.device("cpu")).model
    idx = torch.randint(0, config.vocab_size, (1, 16))
    assert torch.allclose(theirs(idx, idx)[0], ours(idx, idx)[0], atol=1e-5)


def test_checkpoints_from_before_the_options_load_unchanged(home, trained_run):
    from nanogpt_cli.checkpoint import load_model

    path = home / "runs" / trained_run / "best.pt"
    ckpt = torch.load(path, weights_only=True)
    new_fields = ("pos", "norm", "mlp", "qk_norm", "tie", "softcap")
    before = ModelConfig(**{k: v for k, v in ckpt["model_config"].items() if k not in new_fields})
    ckpt["model_config"] = {k: v for k, v in asdict(before).items() if k not in new_fields}  # as written then
    torch.save(ckpt, path)
    loaded = load_model(path, torch.device("cpu"))
    assert (loaded.config.pos, loaded.config.norm, loaded.config.mlp, loaded.config.tie) == (
        "learned",
        "layernorm",
        "gelu",
        True,
    )
    assert loaded.model.transformer.wte.weight is loaded.model.lm_head.weight
