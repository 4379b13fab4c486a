"""`nanogpt import`: GPT-2-layout folders, the Hub path (a local stand-in), nanoGPT checkpoints with their
meta.pkl, exact numerics against computations written on the raw tensors, refusal of pickled code, and
what a user does next (sample, eval, info, export, init-from) on the imported run."""

from __future__ import annotations

import http.server
import json
import math
import pickle
import threading

import pytest
import torch
from torch.nn import functional as F

from nanogpt_cli import paths
from nanogpt_cli.checkpoint import load_model
from test_pretrained import (
    HEADS,
    LAYERS,
    POSITIONS,
    VOCAB,
    D,
    HubHandler,
    _gpt2_tensors,
    _reference_logits,
    _write_folder,
)

CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # Tiny Shakespeare's 65


def _attention(q, k, v, heads):
    B, T, C = q.shape
    q, k, v = (a.view(B, T, heads, C // heads).transpose(1, 2) for a in (q, k, v))
    att = (q @ k.transpose(-2, -1)) / math.sqrt(C // heads)
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
    return (att @ v).transpose(1, 2).reshape(B, T, C)


def _logits(run: str, idx: torch.Tensor) -> torch.Tensor:
    loaded = load_model(paths.run_dir(run) / "best.pt", torch.device("cpu"))
    with torch.no_grad():
        return loaded.model(idx, idx)[0]


def test_gpt2_folder_imports_as_gpt2_computes_it(cli, tmp_path, gpt2_cache):
    tensors = _gpt2_tensors()
    folder = _write_folder(tmp_path / "hf-gpt2", tensors, prefix="transformer.")  # config.json names no activation
    result = cli("import", folder, "--run", "hf")
    assert result.exit_code == 0, result.output
    assert "imported" in result.stdout and "run hf" in result.stdout and "nanogpt sample --run hf" in result.stdout
    idx = torch.randint(0, VOCAB, (1, POSITIONS), generator=torch.Generator().manual_seed(3))
    ours = _logits("hf", idx)
    assert (ours - _reference_logits(tensors, idx)).abs().max() < 1e-4
    # the test can tell the GELUs apart: GPT-2 with the exact GELU is another function
    assert (ours - _reference_logits(tensors, idx, gelu="none")).abs().max() > 1e-4
    assert json.loads((paths.run_dir("hf") / "config.json").read_text())["model_config"]["mlp"] == "gelu-tanh"

    # export, then import what was exported: the same function, bit for bit
    assert cli("export", "hf", tmp_path / "out").exit_code == 0
    assert cli("import", tmp_path / "out", "--run", "again").exit_code == 0
    assert torch.equal(_logits("again", idx), ours)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local stand-in for the Hugging Face Hub serving a tiny GPT-2 as 'gpt2'."""
    _write_folder(tmp_path / "hub" / "gpt2" / "resolve" / "main", _gpt2_tensors())
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: HubHandler(*a, directory=str(tmp_path / "hub"), **k)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()
    server.server_close()


def test_import_gpt2_then_sample_eval_info_and_finetune(cli, home, hub, gpt2_cache, fresh_tiktoken, tmp_path):
    result = cli("import", "gpt2")
    assert result.exit_code == 0, result.output
    assert "imported OpenAI gpt2 as run gpt2" in result.stdout
    assert (home / "cache" / "hub" / "gpt2" / "model.safetensors").is_file()

    sample = cli("sample", "--run", "gpt2", "--prompt", "Hello", "--max-new-tokens", "8", "--seed", "1", "--json")
    assert sample.exit_code == 0, sample.output
    row = json.loads(sample.stdout)
    assert row["tokens"] == 8 and row["text"]

    text = tmp_path / "eval.txt"
    text.write_text("It was the best of times, it was the worst of times.\n" * 4)
    result = cli("eval", "--run", "gpt2", "--text-file", text, "--json")
    assert result.exit_code == 0, result.output
    assert math.isfinite(json.loads(result.stdout)["loss"]) and json.loads(result.stdout)["dtype"] == "float32"
    result = cli("eval", "--run", "gpt2")
    assert result.exit_code == 1 and "was imported, not trained on a dataset here: pass --dataset NAME" in result.stderr

    info = cli("info", "gpt2")
    assert info.exit_code == 0 and "imported from OpenAI gpt2" in info.stdout and "tokenizer gpt2" in info.stdout
    assert "(imported)" in cli("info").stdout

    again = cli("import", "gpt2")
    assert again.exit_code == 1 and "run 'gpt2' already exists" in again.stderr and "--overwrite" in again.stderr
    assert cli("import", "gpt2", "--overwrite").exit_code == 0

    # train --init-from an imported run: fine-tuning starts from its weights
    assert cli("import", "gpt2", "--run", "mine").exit_code == 0
    result = cli("train", "--init-from", "mine", "--dataset", "shakespeare-gpt2", "--run", "ft", "--block-size", "8",
                 "--batch-size", "2", "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1", "--lr", "1e-4",
                 "--sample-tokens", "3")
    assert result.exit_code == 0, result.output
    assert "starting from the weights of run mine" in result.stderr


def test_import_offline_says_what_to_download_where(cli, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    result = cli("import", "gpt2-medium")
    assert result.exit_code == 1
    assert "cannot download" in result.stderr and "gpt2-medium's config.json and model.safetensors" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- nanoGPT checkpoints


def _nanogpt_state(vocab: int, bias: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict named and shaped as nanoGPT's model.py makes it (Linear weights [out, in], a tied head)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    s = {
        "transformer.wte.weight": r(vocab, D),
        "transformer.wpe.weight": r(POSITIONS, D),
        "transformer.ln_f.weight": 1 + r(D),
    }
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        s |= {p + "ln_1.weight": 1 + r(D), p + "attn.c_attn.weight": r(3 * D, D), p + "attn.c_proj.weight": r(D, D),
              p + "ln_2.weight": 1 + r(D), p + "mlp.c_fc.weight": r(4 * D, D), p + "mlp.c_proj.weight": r(D, 4 * D),
              p + "attn.bias": torch.tril(torch.ones(POSITIONS, POSITIONS)).view(1, 1, POSITIONS, POSITIONS)}
        if bias:
            s |= {p + "ln_1.bias": r(D), p + "attn.c_attn.bias": r(3 * D), p + "attn.c_proj.bias": r(D),
                  p + "ln_2.bias": r(D), p + "mlp.c_fc.bias": r(4 * D), p + "mlp.c_proj.bias": r(D)}
    if bias:
        s["transformer.ln_f.bias"] = r(D)
    s["lm_head.weight"] = s["transformer.wte.weight"]
    return s


def nanogpt_reference(s: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
    """nanoGPT's GPT.forward on its raw tensors: LayerNorm with an optional bias, nn.GELU() (exact)."""
    def ln(x, name):
        return F.layer_norm(x, (D,), s[name + ".weight"], s.get(name + ".bias"), 1e-5)

    def linear(x, name):
        return F.linear(x, s[name + ".weight"], s.get(name + ".bias"))

    x = s["transformer.wte.weight"][idx] + s["transformer.wpe.weight"][: idx.size(1)]
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        q, k, v = linear(ln(x, p + "ln_1"), p + "attn.c_attn").split(D, dim=-1)
        x = x + linear(_attention(q, k, v, HEADS), p + "attn.c_proj")
        x = x + linear(F.gelu(linear(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ s["lm_head.weight"].T


def _write_nanogpt(
    folder, state, vocab, bias, compiled=True, meta_chars: str | None = CHARS, dataset="shakespeare_char"
):
    """What nanoGPT's train.py writes: ckpt.pt with model_args, the state dict (with torch.compile's
    prefix), optimizer state, iter_num, a tensor best_val_loss and its config; meta.pkl from prepare.py."""
    folder.mkdir(parents=True, exist_ok=True)
    model = {("_orig_mod." if compiled else "") + k: v for k, v in state.items()}
    model_args = dict(
        n_layer=LAYERS, n_head=HEADS, n_embd=D, block_size=POSITIONS, bias=bias, vocab_size=vocab, dropout=0.0
    )
    optimizer = {
        "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
        "param_groups": [{"lr": 1e-3, "params": [0]}],
    }
    torch.save(
        {
            "model": model,
            "optimizer": optimizer,
            "model_args": model_args,
            "iter_num": 5000,
            "best_val_loss": torch.tensor(1.47),
            "config": {"dataset": dataset, "batch_size": 64, "compile": compiled},
        },
        folder / "ckpt.pt",
    )
    if meta_chars is not None:
        meta = {
            "vocab_size": len(meta_chars),
            "itos": dict(enumerate(meta_chars)),
            "stoi": {c: i for i, c in enumerate(meta_chars)},
        }
        (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    return folder / "ckpt.pt"


@pytest.mark.parametrize("bias", [False, True])
def test_nanogpt_char_checkpoint_imports_exactly(cli, tmp_path, bias):
    state = _nanogpt_state(len(CHARS), bias)
    ckpt = _write_nanogpt(tmp_path / "out-shakespeare-char", state, len(CHARS), bias)
    result = cli("import", ckpt.parent)  # the folder is enough; the run is named after it
    assert result.exit_code == 0, result.output
    assert "run out-shakespeare-char" in result.stdout and "tokenizer char" in result.stderr
    idx = torch.randint(0, len(CHARS), (2, POSITIONS), generator=torch.Generator().manual_seed(5))
    assert (_logits("out-shakespeare-char", idx) - nanogpt_reference(state, idx)).abs().max() < 1e-5

    sample = cli(
        "sample", "--run", "out-shakespeare-char", "--prompt", "ROMEO:", "--max-new-tokens", "30", "--seed", "2"
    )
    assert sample.exit_code == 0, sample.output
    assert sample.stdout.startswith("ROMEO:") and set(sample.stdout) <= set(CHARS)
    info = cli("info", "out-shakespeare-char", "--json")
    source = json.loads(info.stdout)["config"]["imported_from"]
    assert source["kind"] == "nanogpt" and source["iteration"] == 5000 and source["meta"].endswith("meta.pkl")


def test_nanogpt_meta_from_its_data_folder_or_meta_flag(cli, tmp_path):
    """nanoGPT keeps meta.pkl in data/<dataset>/ of its repository, not beside ckpt.pt: found there too."""
    state = _nanogpt_state(len(CHARS), False)
    repo = tmp_path / "nanoGPT"
    ckpt = _write_nanogpt(repo / "out-x", state, len(CHARS), False, meta_chars=None)
    missing = cli("import", ckpt, "--run", "x")
    assert missing.exit_code == 1
    assert (
        "vocabulary of 65 tokens, so it needs its dataset's meta.pkl" in missing.stderr and "--meta" in missing.stderr
    )
    meta = {"vocab_size": len(CHARS), "itos": dict(enumerate(CHARS)), "stoi": {c: i for i, c in enumerate(CHARS)}}
    (repo / "data" / "shakespeare_char").mkdir(parents=True)
    (repo / "data" / "shakespeare_char" / "meta.pkl").write_bytes(pickle.dumps(meta))
    assert cli("import", ckpt, "--run", "x").exit_code == 0
    elsewhere = tmp_path / "vocab.pkl"
    elsewhere.write_bytes(pickle.dumps(meta))
    assert cli("import", ckpt, "--run", "y", "--meta", elsewhere).exit_code == 0
    assert json.loads((paths.run_dir("y") / "config.json").read_text())["imported_from"]["meta"] == str(elsewhere)


def test_nanogpt_bpe_checkpoint_never_samples_padding_ids(cli, tmp_path, gpt2_cache, fresh_tiktoken):
    """nanoGPT pads GPT-2's 50257 tokens to 50304; without a meta.pkl the vocabulary is GPT-2's. Ids past
    the tokenizer's (made by far the most likely here) are never sampled: they have no text."""
    state = _nanogpt_state(50304, True)
    state["transformer.ln_f.weight"][:] = 0
    state["transformer.ln_f.bias"][:] = 1  # every final hidden state is all ones...
    state["lm_head.weight"][50257:] = 10.0  # ...so the padding rows' logits (80) beat every real token's
    ckpt = _write_nanogpt(tmp_path / "out-owt", state, 50304, True, compiled=False, meta_chars=None)
    result = cli("import", ckpt)
    assert result.exit_code == 0, result.output
    assert "tokenizer gpt2" in result.stderr
    result = cli(
        "sample", "--run", "out-owt", "--prompt", "Hi", "--max-new-tokens", "5", "--temperature", "0", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokens"] == 5


class Exploit:
    """Unpickling this runs a shell command: what a malicious file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_pickled_code_in_meta_or_checkpoint_is_refused_without_running(cli, tmp_path):
    state = _nanogpt_state(len(CHARS), False)
    ckpt = _write_nanogpt(tmp_path / "evil", state, len(CHARS), False)
    marker = tmp_path / "pwned"
    (tmp_path / "evil" / "meta.pkl").write_bytes(pickle.dumps({"itos": Exploit(marker)}))
    result = cli("import", ckpt, "--run", "evil")
    assert result.exit_code == 1 and "refusing to load" in result.stderr and "posix.system" in result.stderr
    assert not marker.exists() and not paths.run_dir("evil").exists()

    (tmp_path / "evil" / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: b"bytes"}}))  # plain but not str / int
    result = cli("import", ckpt, "--run", "evil")
    assert result.exit_code == 1 and "other than plain dicts, strings and ints" in result.stderr

    torch.save({"model": {}, "model_args": Exploit(marker)}, ckpt)
    result = cli("import", ckpt, "--run", "evil")
    assert result.exit_code == 1 and "pickled Python objects that could run code" in result.stderr
    assert not marker.exists()


def test_sources_that_are_not_weights_are_clear_errors(cli, tmp_path):
    not_ckpt = tmp_path / "notes.pt"
    torch.save({"weights": torch.zeros(2)}, not_ckpt)
    result = cli("import", not_ckpt)
    assert result.exit_code == 1 and "is not a nanoGPT checkpoint (it has no model_args" in result.stderr
    result = cli("import", "gpt3")
    assert result.exit_code == 1 and "'gpt3' is neither a GPT-2 size" in result.stderr


def test_dtype_for_sample_and_eval(cli, trained_run):
    f32 = json.loads(cli("eval", "--run", trained_run, "--iters", "4", "--json").stdout)
    result = cli("eval", "--run", trained_run, "--iters", "4", "--dtype", "bfloat16", "--json")
    assert result.exit_code == 0, result.output
    bf16 = json.loads(result.stdout)
    assert bf16["dtype"] == "bfloat16" and f32["dtype"] == "float32"
    assert abs(bf16["loss"] - f32["loss"]) < 0.05
    sample = cli("sample", "--run", trained_run, "--dtype", "bfloat16", "--max-new-tokens", "20", "--seed", "1")
    assert sample.exit_code == 0 and len(sample.stdout) > 10
    bad = cli("sample", "--run", trained_run, "--dtype", "float16", "--device", "cpu")
    assert bad.exit_code == 1 and "float16 is not supported on the CPU" in bad.stderr


def test_a_meta_pkl_of_deeply_shared_dicts_is_refused_at_once(tmp_path):
    """60 levels of dicts that each hold the next one twice: walking it naively is 2**60 steps."""
    import pickle
    import time

    from nanogpt_cli.errors import NanoGPTError
    from nanogpt_cli.pretrained import read_meta_pickle

    inner: dict = {"x": 1}
    for _ in range(60):
        inner = {"a": inner, "b": inner}
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": 65, "itos": inner}))
    start = time.perf_counter()
    try:
        read_meta_pickle(path)
        raise AssertionError("a meta.pkl nested 60 deep was accepted")
    except NanoGPTError as exc:
        assert "holds values other than plain dicts, strings and ints" in str(exc)
    assert time.perf_counter() - start < 5
    flat = tmp_path / "flat.pkl"  # what nanoGPT's prepare.py writes still reads
    meta = {"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"}, "stoi": {"a": 0, "b": 1, "c": 2}}
    flat.write_bytes(pickle.dumps(meta))
    assert read_meta_pickle(flat)["itos"] == {0: "a", 1: "b", 2: "c"}
