"""Writing a run in the GPT-2 layout (config.json + model.safetensors, Hugging Face's names and Conv1D
orientation) so other tools can open it; the names and facts it shares with reading one are pretrained.py's."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nanogpt_cli import paths
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.pretrained import ACTIVATIONS, CONV1D
from nanogpt_cli.tokenizer import tokenizer_from_spec


def _usual_file_mode(path: Path) -> None:
    """Give a file the mode a new file of this user normally gets (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def check_target(folder: Path, overwrite: bool) -> None:
    """Refuse to export into nanogpt's own folders (a run's config.json would be replaced by the Hugging
    Face one) or, without `overwrite`, into a folder that holds anything."""
    target = folder.expanduser().resolve()
    for own in (paths.data_dir(), paths.cache_dir()):
        own = own.expanduser().resolve()
        if target == own or own in target.parents:
            raise NanoGPTError(f"{folder} is inside nanogpt's own folder {own}, where its runs and datasets live; "
                               "export to a folder outside it")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise NanoGPTError(f"{folder} is not empty; choose a new or empty folder, or pass --overwrite to replace "
                           "config.json and model.safetensors in it (nothing else is touched)")


def export_hf(model: torch.nn.Module, config: ModelConfig, tokenizer: dict[str, Any], folder: Path) -> list[Path]:
    """Write config.json + model.safetensors in the GPT-2 layout. Models without biases get zero
    biases (the same function), since the GPT-2 layout always has them."""
    if config.model != "gpt":
        raise NanoGPTError("only GPT models can be exported in the GPT-2 layout (not the bigram baseline)")
    beyond = [flag for flag, differs in (
        (f"--pos {config.pos}", config.pos != "learned"), (f"--norm {config.norm}", config.norm != "layernorm"),
        (f"--mlp {config.mlp}", config.mlp not in ACTIVATIONS.values()), ("--qk-norm", config.qk_norm),
        ("--no-tie", not config.tie), (f"--softcap {config.softcap}", config.softcap != 0),
        ("--no-residual", not config.residual)) if differs]
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
    # The end-of-text id where the tokenizer has one (GPT-2's 50256, another encoding's or a trained BPE's);
    # written as null otherwise, since transformers would fill in GPT-2's 50256 outside a char vocabulary.
    hf_config["bos_token_id"] = hf_config["eos_token_id"] = tokenizer_from_spec(tokenizer).eot_token
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
