"""`nanogpt export`: each architecture a run can go out as, read back by transformers (logits, greedy text,
tokenizer) and by the gguf package (names, shapes, metadata, values), and the refusals."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

SMALL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "24", "--batch-size", "8",
         "--max-iters", "30", "--eval-interval", "30", "--eval-iters", "2", "--sample-tokens", "0", "--quiet"]
ROPE = ["--pos", "rope", "--norm", "rmsnorm"]
LAYOUTS = {  # run flags -> transformers class, llama.cpp architecture
    "gpt2": (["--preset", "nanogpt-cpu", "--bias"], "GPT2LMHeadModel", "gpt2"),
    "gpt2-tanh": (["--preset", "nanogpt-cpu", "--mlp", "gelu-tanh"], "GPT2LMHeadModel", "gpt2"),
    "llama": (["--preset", "nanogpt-cpu", *ROPE, "--mlp", "swiglu", "--no-tie"], "LlamaForCausalLM", "llama"),
    "qwen3": (["--preset", "cpu", "--mlp", "swiglu", "--qk-norm"], "Qwen3ForCausalLM", "qwen3"),
    "arcee": (["--preset", "cpu", "--mlp", "relu2", "--no-qk-norm"], "ArceeForCausalLM", "arcee"),
}


def load(home, run: str):
    from nanogpt_cli.checkpoint import load_model
    from nanogpt_cli.tokenizer import tokenizer_from_spec

    loaded = load_model(home / "runs" / run / "best.pt", torch.device("cpu"))
    return loaded.model.eval(), tokenizer_from_spec(loaded.checkpoint["tokenizer"])


@pytest.fixture
def poems(cli, small_text):
    assert cli("prepare", small_text).exit_code == 0
    return "poems"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_transformers_computes_what_we_compute(cli, home, poems, tmp_path, layout):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nanogpt_cli.generate import generate_tokens

    flags, hf_class, _ = LAYOUTS[layout]
    assert cli("train", "--dataset", poems, "--run", layout, *flags, *SMALL).exit_code == 0
    result = cli("export", layout, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    name = {"GPT2LMHeadModel": "GPT-2", "LlamaForCausalLM": "Llama", "Qwen3ForCausalLM": "Qwen3"}.get(hf_class, "Arcee")
    assert f"as {name} to" in result.stdout
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [hf_class]

    ours, tokenizer = load(home, layout)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == hf_class
    text = "to be or not to be, that"
    ids = tokenizer.encode(text)[:24]
    x = torch.tensor([ids])
    with torch.no_grad():
        difference = (ours(x, x)[0] - theirs(x).logits).abs().max().item()
    assert difference < 1e-4

    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tokenizer.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    prompt = tokenizer.encode("the ")
    with torch.no_grad():
        generated = theirs.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0].tolist()
    mine = list(generate_tokens(ours, prompt, 20, temperature=0))
    assert generated[len(prompt):] == mine
    assert hf_tokenizer.decode(generated) == tokenizer.decode(prompt + mine)


def gguf_fields(reader) -> dict:
    return {name: field.contents() for name, field in reader.fields.items()}


@pytest.mark.parametrize("layout", ["gpt2", "llama", "qwen3", "arcee"])
def test_gguf_holds_what_llama_cpp_reads(cli, home, poems, tmp_path, layout):
    import gguf

    from nanogpt_cli.gguf_export import interleave_rotary

    flags, _, arch = LAYOUTS[layout]
    assert cli("train", "--dataset", poems, "--run", layout, *flags, *SMALL).exit_code == 0
    result = cli("export", layout, tmp_path / "out", "--format", "gguf")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "Modelfile").read_text().startswith("FROM ./model.gguf\n")
    reader = gguf.GGUFReader(tmp_path / "out" / "model.gguf")
    fields = gguf_fields(reader)
    model, tokenizer = load(home, layout)
    config = model.config
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.block_count"] == 2 and fields[f"{arch}.embedding_length"] == 32
    assert fields[f"{arch}.context_length"] == 24 and fields[f"{arch}.attention.head_count"] == 2
    # the char vocabulary, each character as byte-level BPE writes it, and one end-of-text token more
    assert fields["tokenizer.ggml.model"] == "gpt2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == config.vocab_size + 1
    for char, written in (("t", "t"), (" ", "Ġ"), ("\n", "Ċ"), (",", ",")):  # bytes as GPT-2's BPE writes them
        assert tokens[tokenizer.encode(char)[0]] == written
    assert tokens[-1] == "<|endoftext|>" and fields["tokenizer.ggml.eos_token_id"] == config.vocab_size

    tensors = {t.name: t for t in reader.tensors}
    state = {k: v.detach() for k, v in model.state_dict().items()}
    expected = {"token_embd.weight", "output_norm.weight"} | {f"blk.{i}.{part}.weight" for i in range(2) for part in
                ("attn_norm", "attn_output", "ffn_norm", "ffn_up", "ffn_down")}
    if layout == "gpt2":
        expected |= {"position_embd.weight", "output_norm.bias", "blk.0.attn_qkv.weight", "blk.1.attn_qkv.weight"}
        expected |= {f"blk.{i}.{part}.bias" for i in range(2) for part in
                     ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down")}
    else:
        expected |= {f"blk.{i}.attn_{p}.weight" for i in range(2) for p in "qkv"}
    if layout == "qwen3":
        expected |= {f"blk.{i}.attn_{p}_norm.weight" for i in range(2) for p in "qk"}
    if layout in ("llama",):
        expected |= {"output.weight"} | {f"blk.{i}.ffn_gate.weight" for i in range(2)}
    if layout == "qwen3":
        expected |= {f"blk.{i}.ffn_gate.weight" for i in range(2)}
    assert set(tensors) == expected

    def value(name):
        return torch.from_numpy(np.array(tensors[name].data))

    embedding = value("token_embd.weight")
    assert embedding.shape == (config.vocab_size + 1, 32)  # numpy's order; GGUF lists it as [32, vocab]
    assert list(tensors["token_embd.weight"].shape) == [32, config.vocab_size + 1]
    assert torch.equal(embedding[:-1], state["transformer.wte.weight"]) and not embedding[-1].any()
    assert torch.equal(value("blk.1.ffn_down.weight"), state["transformer.h.1.mlp.c_proj.weight"])
    if layout == "gpt2":
        assert torch.equal(value("blk.0.attn_qkv.weight"), state["transformer.h.0.attn.c_attn.weight"])
        assert torch.equal(value("blk.0.attn_qkv.bias"), state["transformer.h.0.attn.c_attn.bias"])  # --bias
    else:
        q = state["transformer.h.0.attn.c_attn.weight"][:32]
        rotated = interleave_rotary(q, 2) if arch in ("llama", "arcee") else q
        assert torch.equal(value("blk.0.attn_q.weight"), rotated)
    if layout == "llama":  # our rotation pairs channel i with i + 8 in each 16-wide head; llama.cpp's, 2i with 2i+1
        row = torch.arange(32.0)[:, None].expand(32, 4)
        assert interleave_rotary(row, 2)[:4, 0].tolist() == [0.0, 8.0, 1.0, 9.0]


def test_gguf_weights_in_half_precision_and_q8_0(cli, home, poems, tmp_path):
    import gguf

    flags = LAYOUTS["qwen3"][0]
    assert cli("train", "--dataset", poems, "--run", "q", *flags, *SMALL).exit_code == 0
    assert cli("export", "q", tmp_path / "f16", "--format", "gguf", "--dtype", "float16").exit_code == 0
    assert cli("export", "q", tmp_path / "q8", "--format", "gguf", "--quantize", "q8_0").exit_code == 0
    model, _ = load(home, "q")
    down = model.state_dict()["transformer.h.0.mlp.c_proj.weight"]  # (32, 88): rows of 88 are not 32-blocks
    up = model.state_dict()["transformer.h.0.mlp.c_fc.weight"]  # (176, 32)
    f16 = {t.name: t for t in gguf.GGUFReader(tmp_path / "f16" / "model.gguf").tensors}
    assert f16["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert f16["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32  # norms stay float32
    assert torch.equal(torch.from_numpy(np.array(f16["blk.0.ffn_up.weight"].data)), up[88:].half())
    q8 = {t.name: t for t in gguf.GGUFReader(tmp_path / "q8" / "model.gguf").tensors}
    assert q8["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    back = gguf.quants.dequantize(np.array(q8["blk.0.ffn_up.weight"].data), gguf.GGMLQuantizationType.Q8_0)
    assert np.abs(back.reshape(88, 32) - up[88:].numpy()).max() <= up.abs().max().item() / 127 + 1e-6
    assert q8["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F32  # 88 is not a multiple of 32
    assert torch.equal(torch.from_numpy(np.array(q8["blk.0.ffn_down.weight"].data)), down)


def test_the_default_preset_exports_to_both_formats(cli, home, poems, tmp_path):
    from nanogpt_cli.config import get_preset

    values = get_preset("cpu").values
    assert cli("train", "--dataset", poems, "--run", "default", *SMALL).exit_code == 0
    hf = cli("export", "default", tmp_path / "hf")
    gg = cli("export", "default", tmp_path / "gguf", "--format", "gguf")
    assert hf.exit_code == 0 and gg.exit_code == 0, hf.output + gg.output
    expected = "Qwen3" if values["qk_norm"] else "Llama"
    assert f"as {expected} to" in hf.stdout and f"as {expected} to" in gg.stdout
    assert (tmp_path / "gguf" / "model.gguf").stat().st_size > 0


@pytest.mark.parametrize("tokenizer", ["gpt2", "bpe:300", "char-unknown"])
def test_tokenizers_travel_with_the_model(cli, home, tmp_path, small_text, gpt2_cache, tokenizer):
    import gguf
    from transformers import AutoTokenizer

    prepare = ["--max-vocab", "20"] if tokenizer == "char-unknown" else ["--tokenizer", tokenizer]
    assert cli("prepare", small_text, "--name", "t", *prepare).exit_code == 0
    flags = LAYOUTS["llama"][0]
    assert cli("train", "--dataset", "t", "--run", "r", *flags, *SMALL).exit_code == 0
    assert cli("export", "r", tmp_path / "hf").exit_code == 0
    assert cli("export", "r", tmp_path / "gguf", "--format", "gguf").exit_code == 0
    _, ours = load(home, "r")
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "All the world's a stage: é, ünïcode — and\n\n  spaces"
    ids = ours.encode(text)
    assert theirs.encode(text, add_special_tokens=False) == ids
    assert theirs.decode(ids) == ours.decode(ids)
    if tokenizer != "char-unknown":
        assert ours.decode(ids) == text  # byte-level BPEs round-trip any text
    else:
        assert ids.count(ours.unknown_id) > 5  # rare characters are the unknown token in both
    fields = gguf_fields(gguf.GGUFReader(tmp_path / "gguf" / "model.gguf"))
    if tokenizer == "gpt2":
        assert len(fields["tokenizer.ggml.tokens"]) == 50304  # GPT-2's 50,257 padded as nanoGPT pads them
        assert fields["tokenizer.ggml.tokens"][50256] == "<|endoftext|>"
        assert fields["tokenizer.ggml.eos_token_id"] == 50256
        assert len(fields["tokenizer.ggml.merges"]) == 50000  # tiktoken keeps ranks; the merges are rebuilt
        assert fields["tokenizer.ggml.merges"][:2] == ["Ġ t", "Ġ a"]
    if tokenizer == "char-unknown":
        assert fields["tokenizer.ggml.unknown_token_id"] == ours.unknown_id


def test_a_char_vocabulary_round_trips_exactly(cli, home, tmp_path):
    from transformers import AutoTokenizer

    text = "Ünïcode, tabs\tand\nnewlines; 日本語 and 🙂 too.\n" * 40
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    assert cli("prepare", tmp_path / "u.txt", "--name", "u").exit_code == 0
    assert cli("train", "--dataset", "u", "--run", "u", *LAYOUTS["qwen3"][0], *SMALL).exit_code == 0
    assert cli("export", "u", tmp_path / "hf").exit_code == 0
    _, ours = load(home, "u")
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
    assert theirs.decode(ours.encode(text)) == text


@pytest.mark.parametrize(("flags", "message"), [
    (["--preset", "cpu", "--mlp", "relu2", "--qk-norm"], "computes this model's --mlp relu2 with --qk-norm;"),
    (["--preset", "cpu", "--mlp", "swiglu", "--softcap", "15"], "computes this model's --softcap 15.0;"),
    (["--preset", "nanogpt-cpu", "--norm", "rmsnorm"], "the GPT-2 layout (learned positions) cannot express this "
                                                        "model's --norm rmsnorm;"),
    (["--preset", "cpu", "--mlp", "swiglu", "--norm", "layernorm"], "computes this model's --norm layernorm;"),
])
def test_what_no_architecture_expresses_is_one_line_and_writes_nothing(cli, home, poems, tmp_path, flags, message):
    assert cli("train", "--dataset", poems, "--run", "x", *flags, *SMALL).exit_code == 0
    for format in ("hf", "gguf"):
        result = cli("export", "x", tmp_path / "out", "--format", format)
        assert result.exit_code == 1 and message in result.stderr
        assert "exportable: nanoGPT's network (GPT-2)" in result.stderr and len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "out").exists()


def test_export_refusals(cli, home, trained_run, tmp_path, monkeypatch):
    result = cli("export", trained_run, tmp_path / "o", "--format", "onnx")
    assert result.exit_code == 1 and "unknown export format 'onnx': use hf (transformers) or gguf" in result.stderr
    result = cli("export", trained_run, tmp_path / "o", "--quantize", "q8_0")
    assert result.exit_code == 1 and "--quantize q8_0 is for --format gguf" in result.stderr
    result = cli("export", trained_run, tmp_path / "o", "--format", "gguf", "--quantize", "q4")
    assert result.exit_code == 1 and "unknown --quantize 'q4'" in result.stderr
    result = cli("export", trained_run, tmp_path / "o", "--dtype", "int8")
    assert result.exit_code == 1 and "unknown --dtype 'int8'" in result.stderr
    monkeypatch.setitem(sys.modules, "gguf", None)  # the [gguf] extra not installed
    result = cli("export", trained_run, tmp_path / "o", "--format", "gguf")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: --format gguf needs the gguf package: pip install "nanogpt-cli[gguf]"'
    assert not (tmp_path / "o").exists()
    (home / "runs" / trained_run / "best.pt").unlink()
    (home / "runs" / trained_run / "ckpt.pt").unlink()
    result = cli("export", trained_run, tmp_path / "o")
    assert result.exit_code == 1 and "checkpoint" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("layout", ["llama", "qwen3", "arcee"])
def test_export_then_import_is_the_same_model(cli, home, poems, tmp_path, layout):
    from nanogpt_cli.model import count_parameters

    assert cli("train", "--dataset", poems, "--run", "a", *LAYOUTS[layout][0], *SMALL).exit_code == 0
    assert cli("export", "a", tmp_path / "hf").exit_code == 0
    result = cli("import", tmp_path / "hf", "--run", "b")
    assert result.exit_code == 0, result.output
    a, _ = load(home, "a")
    b, _ = load(home, "b")
    assert a.config == b.config and count_parameters(a) == count_parameters(b)
    for (name, x), (other, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert name == other and torch.equal(x, y)
    flags = ["--prompt", "the", "--max-new-tokens", "20", "--seed", "1"]
    sample = cli("sample", "--run", "b", *flags)
    assert sample.exit_code == 0 and sample.stdout == cli("sample", "--run", "a", *flags).stdout


def test_import_refuses_a_llama_model_nanogpt_does_not_compute(cli, home, poems, tmp_path):
    assert cli("train", "--dataset", poems, "--run", "a", *LAYOUTS["llama"][0], *SMALL).exit_code == 0
    assert cli("export", "a", tmp_path / "hf").exit_code == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config | {"num_key_value_heads": 1, "rms_norm_eps": 1e-6}))
    result = cli("import", tmp_path / "hf", "--run", "b")
    assert result.exit_code == 1
    assert ("nanogpt's GPT does not compute this llama model's num_key_value_heads 1, rms_norm_eps 1e-06"
            in result.stderr)
    del config["nanogpt"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    result = cli("import", tmp_path / "hf", "--run", "b")
    assert result.exit_code == 1 and "only folders written by `nanogpt export` can be imported" in result.stderr
    assert not (home / "runs" / "b").exists()
