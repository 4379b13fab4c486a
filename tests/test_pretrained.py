"""Starting from existing weights: GPT-2-layout folders (with or without the `transformer.` prefix,
mask buffers, no lm_head), the Hub download path, finetuning from another run, and export."""

from __future__ import annotations

import http.server
import json
import math
import threading

import pytest
import torch
from safetensors.torch import save_file

from nanogpt_cli import paths
from nanogpt_cli.model import build_model, count_parameters
from nanogpt_cli.pretrained import load_source

D, LAYERS, HEADS, POSITIONS, VOCAB = 8, 2, 2, 16, 50257


def _gpt2_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as in Hugging Face's GPT-2 files (Conv1D weights are [in, out])."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    t = {"wte.weight": r(VOCAB, D), "wpe.weight": r(POSITIONS, D), "ln_f.weight": 1 + r(D), "ln_f.bias": r(D)}
    for i in range(LAYERS):
        p = f"h.{i}."
        t |= {p + "ln_1.weight": 1 + r(D), p + "ln_1.bias": r(D), p + "attn.c_attn.weight": r(D, 3 * D),
              p + "attn.c_attn.bias": r(3 * D), p + "attn.c_proj.weight": r(D, D), p + "attn.c_proj.bias": r(D),
              p + "ln_2.weight": 1 + r(D), p + "ln_2.bias": r(D), p + "mlp.c_fc.weight": r(D, 4 * D),
              p + "mlp.c_fc.bias": r(4 * D), p + "mlp.c_proj.weight": r(4 * D, D), p + "mlp.c_proj.bias": r(D),
              p + "attn.bias": torch.tril(torch.ones(1, 1, POSITIONS, POSITIONS))}  # a mask buffer
    return t


def _write_folder(folder, tensors, prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": VOCAB, "n_positions": POSITIONS,
                                                    "n_embd": D, "n_layer": LAYERS, "n_head": HEADS}))
    return folder


def _reference_logits(t: dict[str, torch.Tensor], idx: torch.Tensor, gelu: str = "tanh") -> torch.Tensor:
    """GPT-2's forward pass written directly on the raw tensors (Conv1D weights [in, out]), with the tanh
    GELU GPT-2 was trained with ("gelu_new", what a config.json without activation_function means)."""
    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (D,), t[name + ".weight"], t[name + ".bias"], 1e-5)

    T = idx.size(1)
    x = t["wte.weight"][idx] + t["wpe.weight"][:T]
    for i in range(LAYERS):
        p = f"h.{i}."
        q, k, v = (ln(x, p + "ln_1") @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]).split(D, dim=-1)
        heads = [a.view(1, T, HEADS, D // HEADS).transpose(1, 2) for a in (q, k, v)]
        att = heads[0] @ heads[1].transpose(-2, -1) / math.sqrt(D // HEADS)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        y = (att @ heads[2]).transpose(1, 2).reshape(1, T, D)
        x = x + y @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]
        h = torch.nn.functional.gelu(
            ln(x, p + "ln_2") @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"], approximate=gelu
        )
        x = x + h @ t[p + "mlp.c_proj.weight"] + t[p + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ t["wte.weight"].T


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_gpt2_layout_imports_with_the_same_logits(tmp_path, prefix):
    tensors = _gpt2_tensors()
    folder = _write_folder(tmp_path / "gpt2-tiny", tensors, prefix)
    found = load_source(str(folder))
    config, weights, tokenizer = found.config, found.weights, found.tokenizer
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size, config.bias) == (LAYERS, HEADS, D,
                                                                                              POSITIONS, True)
    assert weights["transformer.h.0.attn.c_attn.weight"].shape == (3 * D, D)  # transposed into Linear's [out, in]
    assert tokenizer["encoding"] == "r50k_base"
    model = build_model(config, weights).eval()
    idx = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(1))
    ours, _ = model(idx, idx)
    assert torch.allclose(ours, _reference_logits(tensors, idx), atol=1e-4)


def test_broken_gpt2_folder_is_a_clear_error(cli, tmp_path, small_text):
    tensors = _gpt2_tensors()
    del tensors["h.1.mlp.c_fc.weight"]
    folder = _write_folder(tmp_path / "broken", tensors)
    cli("prepare", small_text)
    result = cli("train", "--init-from", folder, "--dataset", "poems")
    assert result.exit_code == 1 and "missing transformer.h.1.mlp.c_fc.weight" in result.stderr


def test_init_from_needs_the_same_tokenizer(cli, tmp_path, small_text):
    folder = _write_folder(tmp_path / "gpt2-tiny", _gpt2_tensors())
    cli("prepare", small_text)
    result = cli("train", "--init-from", folder, "--dataset", "poems", "--run", "x")
    assert result.exit_code == 1
    assert ("do not share a tokenizer: the model uses the gpt2 tokenizer, the dataset char; prepare the data with "
            "the model's tokenizer (`nanogpt prepare ... --tokenizer gpt2`)") in result.stderr
    result = cli("train", "--init-from", folder, "--dataset", "poems", "--n-layer", "4")
    assert result.exit_code == 1 and "--n-layer cannot change the shape" in result.stderr


class HubHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_init_from_gpt2_downloads_from_the_hub_then_finetunes(
    cli, home, tmp_path, gpt2_cache, fresh_tiktoken, monkeypatch
):
    _write_folder(tmp_path / "hub" / "gpt2" / "resolve" / "main", _gpt2_tensors())
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: HubHandler(*a, directory=str(tmp_path / "hub"), **k)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        result = cli("train", "--init-from", "gpt2", "--dataset", "shakespeare-gpt2", "--run", "ft", "--block-size",
                     "8", "--batch-size", "2", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--lr",
                     "1e-4", "--sample-tokens", "5")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert "starting from the weights of OpenAI gpt2" in result.stderr
    assert (home / "cache" / "hub" / "gpt2" / "model.safetensors").is_file()
    config = json.loads((home / "runs" / "ft" / "config.json").read_text())
    assert config["model_config"]["vocab_size"] == VOCAB and config["model_config"]["block_size"] == 8  # cropped
    assert config["init_from"] == "OpenAI gpt2"
    assert cli("sample", "--run", "ft", "--max-new-tokens", "5", "--prompt", "ROMEO:").exit_code == 0


def test_finetune_from_another_run_starts_from_its_weights(cli, home, trained_run, tiny):
    source_best = min(
        json.loads(line)["val_loss"]
        for line in (home / "runs" / trained_run / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "eval"
    )
    result = cli("train", "--init-from", trained_run, "--dataset", "poems", "--run", "ft", *tiny)
    assert result.exit_code == 0, result.output
    first = json.loads((home / "runs" / "ft" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["iter"] == 0 and math.isclose(first["val_loss"], source_best, rel_tol=1e-6)  # the same eval batches


def test_export_then_import_is_identical(cli, home, trained_run, tmp_path):
    result = cli("export", trained_run, tmp_path / "out")
    assert result.exit_code == 0, result.output
    hf_config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert hf_config["model_type"] == "gpt2" and hf_config["n_layer"] == 1
    # A char vocabulary has no end-of-text token: null, not GPT-2's 50256 (outside its 64 entries).
    assert hf_config["bos_token_id"] is None and hf_config["eos_token_id"] is None
    from safetensors.torch import load_file

    raw = load_file(tmp_path / "out" / "model.safetensors")
    assert raw["h.0.mlp.c_fc.weight"].shape == (16, 64)  # Conv1D layout: [in, out]
    assert "h.0.attn.c_attn.bias" in raw  # zero biases stand in for a bias-free model

    found = load_source(str(tmp_path / "out"))
    config, weights, tokenizer = found.config, found.weights, found.tokenizer
    assert tokenizer["kind"] == "char"
    from nanogpt_cli.checkpoint import load_model

    original = load_model(home / "runs" / trained_run / "best.pt", torch.device("cpu")).model
    imported = build_model(config, weights).eval()
    idx = torch.randint(0, config.vocab_size, (2, 16))
    assert torch.allclose(original(idx, idx)[0], imported(idx, idx)[0], atol=1e-6)
    # The zero biases of the layout are not read back as parameters: the same model, the same count.
    assert not config.bias and count_parameters(imported) == count_parameters(original)
    assert cli("import", tmp_path / "out", "--run", "back", "-q").exit_code == 0
    runs = {r["name"]: r for r in json.loads(cli("info", "--json").stdout)["runs"]}
    assert runs["back"]["parameters"] == runs[trained_run]["parameters"] == count_parameters(original)


def test_export_refuses_the_bigram_model_and_unknown_formats(cli, home, small_text, tmp_path):
    cli("prepare", small_text)
    cli("train", "--model", "bigram", "--dataset", "poems", "--run", "bi", "--max-iters", "2", "--eval-interval", "1",
        "--sample-tokens", "0", "-q")
    result = cli("export", "bi", tmp_path / "x")
    assert result.exit_code == 1 and "only GPT models can be exported" in result.stderr
    result = cli("export", "bi", tmp_path / "x", "--format", "onnx")
    assert result.exit_code == 1 and "unknown export format 'onnx'" in result.stderr


def test_init_from_gpt2_offline_says_which_files_to_put_where(cli, home, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    result = cli("train", "--init-from", "gpt2", "--dataset", "shakespeare-gpt2")
    assert result.exit_code == 1 and "Traceback" not in result.output
    folder = home / "cache" / "hub" / "gpt2"
    assert (
        f"put gpt2's config.json and model.safetensors (from the gpt2 repository on the Hugging Face Hub) into {folder}"
        in result.stderr
    )
    assert "set HF_ENDPOINT to a mirror" in result.stderr and "nanogpt prepare" not in result.stderr


def test_exported_weights_get_the_users_usual_file_mode(cli, home, trained_run, tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        assert cli("export", trained_run, tmp_path / "out").exit_code == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out" / "model.safetensors").stat().st_mode) == 0o644


def test_init_from_a_rope_run_with_a_smaller_block(cli, home, trained_run, tiny):
    """A model without a learned position table (rope) still takes a smaller --block-size."""
    assert cli("train", "--dataset", "poems", "--run", "rope", *tiny, "--pos", "rope").exit_code == 0
    result = cli("train", "--init-from", "rope", "--dataset", "poems", "--run", "ft", *tiny, "--block-size", "8")
    assert result.exit_code == 0, result.output
    config = json.loads((home / "runs" / "ft" / "config.json").read_text())["model_config"]
    assert (config["pos"], config["block_size"]) == ("rope", 8)


def test_a_char_vocabulary_mismatch_names_the_sizes_and_characters(cli, home, trained_run, tmp_path, write_text):
    other = tmp_path / "other.txt"
    other.write_text(write_text(tmp_path / "base.txt").read_text().replace("q", "Q") + "XYZ\n", encoding="utf-8")
    assert cli("prepare", other, "--name", "other").exit_code == 0
    result = cli("train", "--init-from", trained_run, "--dataset", "other", "--run", "ft")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "the model's character vocabulary has 31 entries, the dataset's 34" in line
    assert "only the model has 1 character: q; only the dataset has 4 characters: Q X Y Z" in line
    assert "\n" not in line and not paths.run_dir("ft").exists()


def test_export_never_writes_into_nanogpts_folders_or_over_other_files(cli, home, trained_run, tmp_path):
    own = home / "runs" / trained_run
    config_before = (own / "config.json").read_bytes()
    for inside in (own, home, home / "exports" / "x"):
        result = cli("export", trained_run, inside)
        assert result.exit_code == 1 and "is inside nanogpt's own folder" in result.stderr
    assert (own / "config.json").read_bytes() == config_before  # the run's own config, untouched
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = cli("export", trained_run, folder)
    assert result.exit_code == 1 and "is not empty" in result.stderr and "--overwrite" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert cli("export", trained_run, folder, "--overwrite").exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "notes.txt",
                                                        "tokenizer.json", "tokenizer_config.json"]
    assert (folder / "notes.txt").read_text() == "mine"
