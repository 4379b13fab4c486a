"""The network and its checkpoints: shapes, init, causality, and safe exact round trips."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from nanogpt_cli.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.model import GPT, BigramLanguageModel, count_parameters


def tiny_config(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16), **kw})


def test_gpt_has_tied_head_and_expected_size():
    model = GPT(tiny_config())
    assert model.lm_head.weight is model.transformer.wte.weight
    c = model.config
    per_block = 2 * c.n_embd + 4 * c.n_embd**2 + 8 * c.n_embd**2  # 2 LayerNorm gains, attention, MLP
    assert (
        count_parameters(model) == c.vocab_size * c.n_embd + c.block_size * c.n_embd + c.n_layer * per_block + c.n_embd
    )


def test_initial_loss_is_near_uniform():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx, targets = torch.randint(0, 50, (2, 16, 8))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(50)) < 0.05


def test_residual_projections_get_smaller_init():
    torch.manual_seed(0)
    model = GPT(tiny_config(n_embd=64, n_layer=8))
    assert abs(model.transformer.h[0].attn.c_proj.weight.std().item() - 0.02 / math.sqrt(16)) < 1e-3
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    a = torch.randint(0, 50, (1, 8))
    b = a.clone()
    b[0, 5:] = (b[0, 5:] + 1) % 50  # change only the future
    logits_a, _ = model(a, a)
    logits_b, _ = model(b, b)
    assert torch.allclose(logits_a[0, :5], logits_b[0, :5], atol=1e-6)
    assert not torch.allclose(logits_a[0, 5:], logits_b[0, 5:])


def test_inference_returns_only_last_position():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 50, (2, 6))
    logits, loss = model(idx)
    full, _ = model(idx, idx)
    assert logits.shape == (2, 1, 50) and loss is None
    assert torch.allclose(logits[:, 0], full[:, -1], atol=1e-6)


def test_bias_option_adds_biases():
    assert count_parameters(GPT(tiny_config(bias=True))) > count_parameters(GPT(tiny_config(bias=False)))


def test_bigram_is_a_table_of_logits():
    model = BigramLanguageModel(tiny_config(model="bigram"))
    idx = torch.tensor([[3, 7]])
    logits, _ = model(idx, idx)
    assert torch.equal(logits[0, 1], model.token_embedding_table.weight[7])


def _payload(model, config):
    from dataclasses import asdict

    return {"format_version": FORMAT_VERSION, "model_config": asdict(config), "model": model.state_dict(),
            "tokenizer": {"kind": "char", "chars": "".join(chr(65 + i) for i in range(50))}, "dataset": "x",
            "train_state": {"iteration": 3, "best_val_loss": 1.5}}


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(dropout=0.1)
    model = GPT(config).eval()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _payload(model, config))
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["train_state"]["iteration"] == 3

    loaded = load_model(path, torch.device("cpu"))
    idx = torch.randint(0, 50, (3, 8))
    assert torch.equal(model(idx, idx)[0], loaded.model(idx, idx)[0])
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight  # tying survives loading
    assert loaded.tokenizer.decode([0, 1]) == "AB"


def test_atomic_save_keeps_previous_checkpoint_when_write_fails(tmp_path, monkeypatch):
    config = tiny_config()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _payload(GPT(config), config))
    before = path.read_bytes()

    def fail(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(NanoGPTError, match="No space left on device.*previous checkpoint is kept"):
        save_checkpoint(path, {"format_version": 1})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"this is a text file, not a checkpoint\n", "corrupt"),
        (pickle.dumps({"a": Exploit()}), "corrupt|refusing"),
    ],
)
def test_bad_checkpoint_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(NanoGPTError, match=message):
        load_checkpoint(path)


def test_pickled_code_in_a_torch_file_is_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "payload": Exploit()}, path)
    with pytest.raises(NanoGPTError, match="refusing to load"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_truncated_and_foreign_checkpoints(tmp_path):
    config = tiny_config()
    good = tmp_path / "good.pt"
    save_checkpoint(good, _payload(GPT(config), config))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(NanoGPTError, match="corrupt, truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(NanoGPTError, match="not a nanogpt checkpoint"):
        load_checkpoint(foreign)


def test_newer_format_is_refused(tmp_path):
    config = tiny_config()
    path = tmp_path / "future.pt"
    save_checkpoint(path, {**_payload(GPT(config), config), "format_version": FORMAT_VERSION + 1})
    with pytest.raises(NanoGPTError, match="newer than this nanogpt-cli"):
        load_checkpoint(path)
