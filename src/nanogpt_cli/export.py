"""Writing a run for the tools people run models in: Hugging Face transformers (`--format hf`) and
llama.cpp / Ollama / LM Studio (`--format gguf`).

Each run goes out as the most widely supported architecture that computes exactly what our GPT does,
or is refused with the options no such architecture expresses:

    GPT-2  learned positions, LayerNorm, GELU (exact or tanh), tied head   (nanoGPT's network)
    Llama  rotary positions, RMSNorm, SwiGLU
    Qwen3  Llama's parts plus QK-norm (an RMSNorm on each head's queries and keys)
    Arcee  Llama's parts with an ungated squared-ReLU MLP

The tensors are ours, renamed and cut: c_attn's rows are the queries, keys and values one after the
other; SwiGLU's c_fc is the gate on top of the value ("up"). Our rotary embedding pairs channel i of a
head with channel i + head_size/2, as transformers does; llama.cpp's Llama and Arcee pair neighbouring
channels, so their query and key rows are reordered for GGUF (Qwen3's rotation is the halves kind there
too). The tokenizer travels with the model (exporttokens.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nanogpt_cli import paths
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.exporttokens import gguf_vocab, hf_tokenizer_files
from nanogpt_cli.model import NORM_EPS, ROPE_BASE, mlp_width
from nanogpt_cli.pretrained import ACTIVATIONS, CONV1D
from nanogpt_cli.tokenizer import tokenizer_from_spec

FORMATS = ("hf", "gguf")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Layout:
    name: str  # as users read it
    model_type: str  # transformers' model_type
    hf_class: str  # transformers' class
    gguf_arch: str  # llama.cpp's architecture name
    interleaved_rope: bool = False  # llama.cpp rotates neighbouring channels for this architecture


GPT2 = Layout("GPT-2", "gpt2", "GPT2LMHeadModel", "gpt2")
LLAMA = Layout("Llama", "llama", "LlamaForCausalLM", "llama", interleaved_rope=True)
QWEN3 = Layout("Qwen3", "qwen3", "Qwen3ForCausalLM", "qwen3")
ARCEE = Layout("Arcee", "arcee", "ArceeForCausalLM", "arcee", interleaved_rope=True)

EXPORTABLE = ("exportable: nanoGPT's network (GPT-2), or --pos rope --norm rmsnorm with --mlp swiglu (Llama; "
              "Qwen3 with --qk-norm) or --mlp relu2 without --qk-norm (Arcee)")


def choose_layout(config: ModelConfig) -> Layout:
    """The architecture a run is exported as, or one line naming what none of them can express."""
    if config.model != "gpt":
        raise NanoGPTError("only GPT models can be exported (not the bigram baseline): no other tool runs it")
    never = [flag for flag, differs in (
        (f"--softcap {config.softcap}", config.softcap != 0), ("--no-residual", not config.residual),
        (f"--norm {config.norm}", config.norm == "none"), (f"--pos {config.pos}", config.pos in ("none", "sinusoidal")),
    ) if differs]
    if never:  # Gemma 2 caps logits, but its MLP, norms and embedding scale differ from ours
        raise NanoGPTError(f"no architecture that transformers and llama.cpp run computes this model's "
                           f"{', '.join(never)}; {EXPORTABLE}")
    if config.pos == "learned":
        beyond = [flag for flag, differs in (
            (f"--norm {config.norm}", config.norm != "layernorm"),
            (f"--mlp {config.mlp}", config.mlp not in ACTIVATIONS.values()), ("--qk-norm", config.qk_norm),
            ("--no-tie", not config.tie)) if differs]
        if not beyond:
            return GPT2
        raise NanoGPTError(f"the GPT-2 layout (learned positions) cannot express this model's {', '.join(beyond)}; "
                           f"{EXPORTABLE}")
    beyond = [flag for flag, differs in (
        (f"--norm {config.norm}", config.norm != "rmsnorm"), ("--bias", config.bias),
        (f"--mlp {config.mlp}", config.mlp not in ("swiglu", "relu2")),
        ("--mlp relu2 with --qk-norm", config.mlp == "relu2" and config.qk_norm)) if differs]
    if beyond:
        raise NanoGPTError(f"no architecture with rotary positions that transformers and llama.cpp run computes "
                           f"this model's {', '.join(beyond)}; {EXPORTABLE}")
    if config.mlp == "relu2":
        return ARCEE
    return QWEN3 if config.qk_norm else LLAMA


def _gpt2_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face's GPT-2 names and Conv1D orientation; zero biases where the model has none (the GPT-2
    layout always has them, and a zero bias computes the same)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue
        short = name.removeprefix("transformer.")
        tensors[short] = tensor.t() if short.endswith(CONV1D) else tensor
        if short.endswith(".weight") and not short.startswith(("wte", "wpe")):
            bias = short.removesuffix(".weight") + ".bias"
            if f"transformer.{bias}" not in state:
                tensors[bias] = torch.zeros(tensor.shape[0], dtype=tensor.dtype)  # out features / LayerNorm width
    return tensors


def _llama_tensors(state: dict[str, torch.Tensor], config: ModelConfig, layout: Layout) -> dict[str, torch.Tensor]:
    """transformers' names for the Llama family (Llama, Qwen3, Arcee)."""
    C, head_size = config.n_embd, config.n_embd // config.n_head
    tensors = {"model.embed_tokens.weight": state["transformer.wte.weight"],
               "model.norm.weight": state["transformer.ln_f.weight"]}
    if not config.tie:
        tensors["lm_head.weight"] = state["lm_head.weight"]
    for i in range(config.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        q, k, v = state[ours + "attn.c_attn.weight"].split(C)
        fc = state[ours + "mlp.c_fc.weight"]
        tensors |= {theirs + "input_layernorm.weight": state[ours + "ln_1.weight"],
                    theirs + "self_attn.q_proj.weight": q, theirs + "self_attn.k_proj.weight": k,
                    theirs + "self_attn.v_proj.weight": v,
                    theirs + "self_attn.o_proj.weight": state[ours + "attn.c_proj.weight"],
                    theirs + "post_attention_layernorm.weight": state[ours + "ln_2.weight"],
                    theirs + "mlp.down_proj.weight": state[ours + "mlp.c_proj.weight"]}
        if layout is QWEN3:  # our QK-norm has no weight: theirs is ones
            ones = torch.ones(head_size, dtype=q.dtype)
            tensors |= {theirs + "self_attn.q_norm.weight": ones, theirs + "self_attn.k_norm.weight": ones.clone()}
        if config.mlp == "swiglu":
            gate, up = fc.chunk(2)
            tensors |= {theirs + "mlp.gate_proj.weight": gate, theirs + "mlp.up_proj.weight": up}
        else:
            tensors[theirs + "mlp.up_proj.weight"] = fc
    return tensors


def hf_tensors(model: torch.nn.Module, config: ModelConfig, layout: Layout) -> dict[str, torch.Tensor]:
    state = {name: t.detach() for name, t in model.state_dict().items()}
    return _gpt2_tensors(state) if layout is GPT2 else _llama_tensors(state, config, layout)


def hf_config(config: ModelConfig, layout: Layout, tokenizer: dict[str, Any], dtype: str) -> dict[str, Any]:
    """config.json for transformers. Our own model config and tokenizer go along under "nanogpt", so
    `nanogpt import` reads the folder back exactly."""
    eot = tokenizer_from_spec(tokenizer).eot_token  # null where there is none (a char vocabulary)
    common = {"architectures": [layout.hf_class], "model_type": layout.model_type, "vocab_size": config.vocab_size,
              "tie_word_embeddings": config.tie, "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": dtype}
    if layout is GPT2:
        fields = {"n_positions": config.block_size, "n_ctx": config.block_size, "n_embd": config.n_embd,
                  "n_layer": config.n_layer, "n_head": config.n_head, "layer_norm_epsilon": 1e-5,
                  "activation_function": "gelu_new" if config.mlp == "gelu-tanh" else "gelu"}
    else:
        fields = {"hidden_size": config.n_embd, "intermediate_size": mlp_width(config),
                  "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
                  "num_key_value_heads": config.n_head, "head_dim": config.n_embd // config.n_head,
                  "max_position_embeddings": config.block_size, "rms_norm_eps": NORM_EPS,
                  "hidden_act": "relu2" if layout is ARCEE else "silu", "attention_bias": False,
                  "attention_dropout": 0.0, "mlp_bias": False, "rope_theta": ROPE_BASE,
                  "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_BASE}, "rope_scaling": None}
        if layout is QWEN3:
            fields |= {"use_sliding_window": False, "sliding_window": None, "max_window_layers": config.n_layer}
    return {**common, **fields, "nanogpt": {"tokenizer": tokenizer, "model_config": asdict(config)}}


def check_target(folder: Path, overwrite: bool) -> None:
    """Refuse to export into nanogpt's own folders (a run's config.json would be replaced by the Hugging
    Face one) or, without `overwrite`, into a folder that holds anything."""
    target = folder.expanduser().resolve()
    for own in (paths.data_dir(), paths.cache_dir()):
        own = own.expanduser().resolve()
        if target == own or own in target.parents:
            raise NanoGPTError(f"{folder} is inside nanogpt's own folder {own}, where its runs and datasets live; "
                               "export to a folder outside it")
    if folder.exists() and not folder.is_dir():
        raise NanoGPTError(f"{folder} is a file; give the path of a folder to export into (it is created if needed)")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise NanoGPTError(f"{folder} is not empty; choose a new or empty folder, or pass --overwrite to replace "
                           "the exported files in it (nothing else is touched)")


def _usual_file_mode(path: Path) -> None:
    """Give a file the mode a new file of this user normally gets (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _writing(folder: Path):
    """Create the folder; map OSErrors while writing into it to one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NanoGPTError(f"cannot create folder {folder}: {exc.strerror or exc}") from None


def export(model: torch.nn.Module, config: ModelConfig, tokenizer: dict[str, Any], folder: Path, format: str = "hf",
           dtype: str = "float32", quantize: str | None = None, name: str = "nanogpt") -> tuple[Layout, list[Path]]:
    """Write the run into `folder` in `format`; returns the architecture and the files written. Everything
    is checked and made (layout, tokenizer, the gguf extra) before the first file is written."""
    layout = choose_layout(config)
    if format == "gguf":
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise NanoGPTError('--format gguf needs the gguf package: pip install "nanogpt-cli[gguf]"') from None
        vocab = gguf_vocab(tokenizer)
    elif quantize:
        raise NanoGPTError("--quantize q8_0 is for --format gguf; transformers folders hold float weights")
    else:
        texts = {"config.json": json.dumps(hf_config(config, layout, tokenizer, dtype), indent=2) + "\n",
                 **hf_tokenizer_files(tokenizer, config.block_size)}
    tensors = {key: t.to(DTYPES[dtype]).contiguous().clone() for key, t in hf_tensors(model, config, layout).items()}
    _writing(folder)
    try:
        if format == "gguf":
            from nanogpt_cli.gguf_export import write_gguf

            return layout, write_gguf(folder, tensors, config, layout, vocab, quantize, name)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        _usual_file_mode(folder / "model.safetensors")  # safetensors writes 0600; others may read it
        for filename, text in texts.items():
            (folder / filename).write_text(text, encoding="utf-8")
        return layout, [folder / "model.safetensors", *(folder / filename for filename in texts)]
    except OSError as exc:
        raise NanoGPTError(f"cannot write to {folder}: {exc.strerror or exc}") from None
