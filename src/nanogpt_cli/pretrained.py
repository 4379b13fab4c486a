"""Weights from elsewhere: OpenAI's GPT-2 (Hugging Face's safetensors layout), other runs, and export.

`load_init(spec, progress)` gives the model config, weights and tokenizer spec a new run starts from: a GPT-2
size name (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, downloaded once from the Hugging Face Hub,
or from $HF_ENDPOINT), a local folder with config.json + model.safetensors, or the name of another
run (its best weights). `export_hf` writes a run in the GPT-2 layout so other tools can open it.

Facts of the GPT-2 layout that matter here: tensor names come with or without a `transformer.` prefix;
`lm_head.weight` is usually absent (it is tied to `wte`); `attn.bias` / `attn.masked_bias` are
attention-mask buffers, not weights; the four Conv1D weights (c_attn, attn.c_proj, c_fc, mlp.c_proj)
are stored as [in, out], the transpose of a Linear weight. This module never trains.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nanogpt_cli import paths
from nanogpt_cli.checkpoint import checkpoint_path, load_checkpoint
from nanogpt_cli.config import ModelConfig, model_config_from_dict
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.model import GPT
from nanogpt_cli.sources import download, no_progress

GPT2_SIZES = {  # name: (n_layer, n_head, n_embd)
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
GPT2_TOKENIZER = {"kind": "tiktoken", "name": "gpt2", "encoding": "r50k_base"}
# Hugging Face's names for the MLP activations the GPT-2 layout can carry, and ours.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu-tanh", "gelu_pytorch_tanh": "gelu-tanh"}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _hub_folder(name: str, progress=None) -> Path:
    """Download config.json and model.safetensors of a GPT-2 size from the Hub (once) into one folder."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    folder = paths.ensure_dir(paths.cache_dir() / "hub" / name)
    for filename in ("config.json", "model.safetensors"):
        target = folder / filename
        if not target.is_file():
            url = f"{endpoint}/{name}/resolve/main/{filename}"
            hint = (f"put {name}'s config.json and model.safetensors (from the {name} repository on the Hugging "
                    f"Face Hub) into {folder}, or set HF_ENDPOINT to a mirror")
            os.replace(download(url, progress=progress or no_progress, offline_hint=hint), target)
    return folder


def read_hf_config(folder: Path) -> tuple[ModelConfig, dict[str, Any]]:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        activation = raw.get("activation_function", "gelu")
        config = ModelConfig(
            model="gpt", vocab_size=raw["vocab_size"], block_size=raw.get("n_positions", raw.get("n_ctx")),
            n_layer=raw["n_layer"], n_head=raw["n_head"], n_embd=raw["n_embd"], dropout=0.0, bias=True,
            mlp=ACTIVATIONS.get(activation, activation),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NanoGPTError(f"{folder} has no readable GPT-2 config.json ({type(exc).__name__}: {exc})") from None
    if config.mlp not in ACTIVATIONS.values():
        raise NanoGPTError(f"{folder}: activation_function {activation!r} is not one this GPT computes "
                           f"(use one of {', '.join(ACTIVATIONS)})")
    config.validate()
    return config, raw


def load_hf_folder(folder: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, weights (in our GPT's names and shapes) and tokenizer spec of a GPT-2-layout folder."""
    config, raw = read_hf_config(folder)
    try:
        tensors = load_file(folder / "model.safetensors")
    except (OSError, SafetensorError) as exc:
        raise NanoGPTError(f"cannot read {folder / 'model.safetensors'}: {exc}") from None
    weights = {}
    for name, tensor in tensors.items():
        name = name.removeprefix("transformer.")
        if name.endswith(("attn.bias", "attn.masked_bias")) and tensor.dim() > 1:
            continue  # causal-mask buffers, not weights
        if name == "lm_head.weight":
            continue  # tied to wte
        if name.endswith(CONV1D):
            tensor = tensor.t()
        weights[f"transformer.{name}"] = tensor.contiguous()
    weights["lm_head.weight"] = weights.get("transformer.wte.weight")
    check_fits(config, {k: v for k, v in weights.items() if v is not None}, str(folder))
    tokenizer = raw.get("nanogpt", {}).get("tokenizer", GPT2_TOKENIZER)
    return config, weights, tokenizer


def check_fits(config: ModelConfig, weights: dict[str, torch.Tensor], where: str) -> None:
    """Raise a clear error unless `weights` are exactly the tensors of a GPT with this config: loaded
    (strictly) into one built on the meta device, which allocates nothing."""
    with torch.device("meta"):
        model = GPT(config)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        missing = re.findall(r'"([^"]+)"', str(exc).split("Unexpected key(s)")[0].split("size mismatch")[0])[:3]
        wrong = re.findall(r"size mismatch for ([^:]+):", str(exc))[:3]
        raise NanoGPTError(
            f"{where} does not hold a GPT-2 model matching its config.json"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + (f" (wrong shape: {', '.join(wrong)})" if wrong else "")
        ) from None


def load_init(spec: str, progress=None) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any], str]:
    """(model config, weights, tokenizer spec, description) of what --init-from names."""
    if spec in GPT2_SIZES:
        config, weights, tokenizer = load_hf_folder(_hub_folder(spec, progress))
        return config, weights, tokenizer, f"OpenAI {spec}"
    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        config, weights, tokenizer = load_hf_folder(folder)
        return config, weights, tokenizer, str(folder.resolve())
    if (paths.runs_dir() / spec / "config.json").is_file():
        ckpt = load_checkpoint(checkpoint_path(paths.run_dir(spec), "best"))
        return model_config_from_dict(ckpt["model_config"]), ckpt["model"], ckpt["tokenizer"], f"run {spec}"
    raise NanoGPTError(
        f"--init-from {spec!r} is neither a GPT-2 size ({', '.join(GPT2_SIZES)}), a folder with config.json and "
        "model.safetensors, nor a run name"
    )


def _usual_file_mode(path: Path) -> None:
    """Give a file the mode a new file of this user normally gets (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def export_hf(model: torch.nn.Module, config: ModelConfig, tokenizer: dict[str, Any], folder: Path) -> list[Path]:
    """Write config.json + model.safetensors in the GPT-2 layout. Models without biases get zero
    biases (the same function), since the GPT-2 layout always has them."""
    if config.model != "gpt":
        raise NanoGPTError("only GPT models can be exported in the GPT-2 layout (not the bigram baseline)")
    beyond = [flag for flag, differs in (
        (f"--pos {config.pos}", config.pos != "learned"), (f"--norm {config.norm}", config.norm != "layernorm"),
        (f"--mlp {config.mlp}", config.mlp not in ACTIVATIONS.values()), ("--qk-norm", config.qk_norm),
        ("--no-tie", not config.tie), (f"--softcap {config.softcap}", config.softcap != 0)) if differs]
    if beyond:
        raise NanoGPTError(f"the GPT-2 layout cannot express this model's {', '.join(beyond)}; only runs with "
                           "GPT-2's architecture can be exported")
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue
        short = name.removeprefix("transformer.")
        tensors[short] = (tensor.t() if short.endswith(CONV1D) else tensor).contiguous().clone()
        if short.endswith(".weight") and not short.startswith(("wte", "wpe")):
            bias = short.removesuffix(".weight") + ".bias"
            if f"transformer.{bias}" not in state:
                tensors[bias] = torch.zeros(tensor.shape[0], dtype=tensor.dtype)  # out features / LayerNorm width
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "activation_function": "gelu_new" if config.mlp == "gelu-tanh" else "gelu",  # what this model computes
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        "nanogpt": {"tokenizer": tokenizer, "model_config": asdict(config)},
    }
    if tokenizer.get("kind") == "tiktoken":
        hf_config["bos_token_id"] = hf_config["eos_token_id"] = 50256
    if folder.exists() and not folder.is_dir():
        raise NanoGPTError(f"{folder} is a file; give the path of a folder to export into (it is created if needed)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NanoGPTError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
    try:
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        _usual_file_mode(folder / "model.safetensors")  # safetensors writes 0600; others may read it
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise NanoGPTError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    return [folder / "config.json", folder / "model.safetensors"]
