"""Weights from elsewhere: OpenAI's GPT-2 (Hugging Face's safetensors layout), nanoGPT checkpoints,
other runs, and export.

`load_source(spec, meta, progress)` reads weights into a `Pretrained` (model config, weights in our GPT's
names, tokenizer spec, description) from: a GPT-2 size name (`gpt2`, `gpt2-medium`, `gpt2-large`,
`gpt2-xl`, downloaded once from the Hugging Face Hub, or from $HF_ENDPOINT), a local folder with
config.json + model.safetensors (the GPT-2 layout, or the Llama / Qwen3 / Arcee folders export.py
writes), a nanoGPT `ckpt.pt` (or the folder holding one), or the name of
another run (its best weights). `train --init-from` starts from one; `import_run` makes it a run of
its own. (export.py writes a run the other way.)

Nothing here runs pickled code: checkpoints are read with `weights_only=True` and nanoGPT's meta.pkl
with an unpickler that builds plain dicts, strings and ints and refuses everything else.

Facts of the GPT-2 layout that matter here: tensor names come with or without a `transformer.` prefix;
`lm_head.weight` is usually absent (it is tied to `wte`); `attn.bias` / `attn.masked_bias` are
attention-mask buffers, not weights; the four Conv1D weights (c_attn, attn.c_proj, c_fc, mlp.c_proj)
are stored as [in, out], the transpose of a Linear weight. This module never trains.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from nanogpt_cli import __version__, paths
from nanogpt_cli.checkpoint import FORMAT_VERSION, checkpoint_path, load_checkpoint, read_tensors_file, save_checkpoint
from nanogpt_cli.config import InvalidValue, ModelConfig, model_config_from_dict
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.model import GPT, NORM_EPS, ROPE_BASE, count_parameters, mlp_width
from nanogpt_cli.readers import Corrupt, read_json_object
from nanogpt_cli.runs import open_run
from nanogpt_cli.sources import download, no_progress
from nanogpt_cli.tokenizer import spec_problem

GPT2_SIZES = {  # name: (n_layer, n_head, n_embd)
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
GPT2_TOKENIZER = {"kind": "tiktoken", "name": "gpt2", "encoding": "r50k_base"}
# Hugging Face's GPT2Config defaults to "gelu_new" (the tanh approximation) when a config.json names none.
HF_DEFAULT_ACTIVATION = "gelu_new"
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


def _raw_hf_config(folder: Path) -> dict[str, Any]:
    try:
        return read_json_object(folder / "config.json", "model config", "export the model again, or download it again")
    except OSError as exc:
        raise NanoGPTError(f"{folder} has no readable config.json ({exc.strerror or exc})") from None


def _safetensors(folder: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(folder / "model.safetensors")
    except (OSError, SafetensorError) as exc:
        raise NanoGPTError(f"cannot read {folder / 'model.safetensors'}: {exc}") from None


def read_hf_config(folder: Path, raw: dict[str, Any] | None = None) -> tuple[ModelConfig, dict[str, Any]]:
    """The ModelConfig of a GPT-2-layout config.json (`raw`, when it was read already), every field it needs
    checked, and the raw dict."""
    path, remedy = folder / "config.json", "export the model again, or download it again"
    raw = _raw_hf_config(folder) if raw is None else raw
    activation = raw.get("activation_function", HF_DEFAULT_ACTIVATION)
    if not isinstance(activation, str) or ACTIVATIONS.get(activation, activation) not in ACTIVATIONS.values():
        raise NanoGPTError(f"{folder}: activation_function {str(activation)[:40]!r} is not one this GPT computes "
                           f"(use one of {', '.join(ACTIVATIONS)})")
    values = {"vocab_size": raw.get("vocab_size"), "block_size": raw.get("n_positions", raw.get("n_ctx")),
              "n_layer": raw.get("n_layer"), "n_head": raw.get("n_head"), "n_embd": raw.get("n_embd")}
    try:
        for name, value in values.items():
            if value is None:
                raise Corrupt(path, f"{name} is missing", remedy)
        config = model_config_from_dict({"model": "gpt", "dropout": 0.0, "bias": True, **values,
                                         "mlp": ACTIVATIONS.get(activation, activation)})
    except InvalidValue as exc:
        raise Corrupt(path, f"{exc.name} {exc.requirement}", remedy) from None
    ours = raw.get("nanogpt", {})
    problem = (spec_problem(ours.get("tokenizer", GPT2_TOKENIZER)) if isinstance(ours, dict)
               else "nanogpt is not an object")
    if problem:
        raise Corrupt(path, problem, remedy)
    return config, raw


# transformers' Llama-family model types that `nanogpt export` writes: (hidden_act, our --mlp, QK-norm)
LLAMA_FAMILY = {"llama": ("silu", "swiglu", False), "qwen3": ("silu", "swiglu", True),
                "arcee": ("relu2", "relu2", False)}


def read_llama_config(folder: Path, raw: dict[str, Any]) -> ModelConfig:
    """The ModelConfig of a Llama / Qwen3 / Arcee config.json that our GPT computes exactly (what `nanogpt
    export` writes), or one line naming what differs."""
    path, remedy = folder / "config.json", "export the model again"
    kind = raw["model_type"]
    act, mlp, qk_norm = LLAMA_FAMILY[kind]
    values = {"vocab_size": raw.get("vocab_size"), "block_size": raw.get("max_position_embeddings"),
              "n_layer": raw.get("num_hidden_layers"), "n_head": raw.get("num_attention_heads"),
              "n_embd": raw.get("hidden_size")}
    try:
        for name, value in values.items():
            if value is None:
                raise Corrupt(path, f"{name} is missing", remedy)
        config = model_config_from_dict({"model": "gpt", "dropout": 0.0, "bias": False, **values, "pos": "rope",
                                         "norm": "rmsnorm", "mlp": mlp, "qk_norm": qk_norm,
                                         "tie": raw.get("tie_word_embeddings") is True})
    except InvalidValue as exc:
        raise Corrupt(path, f"{exc.name} {exc.requirement}", remedy) from None
    rope = raw.get("rope_parameters") or {}
    differs = [f"{key} {raw.get(key)!r}" for key, ours in (
        ("hidden_act", act), ("num_key_value_heads", config.n_head), ("head_dim", config.n_embd // config.n_head),
        ("rms_norm_eps", NORM_EPS), ("rope_theta", rope.get("rope_theta", ROPE_BASE)),
        ("intermediate_size", mlp_width(config)), ("attention_bias", False), ("mlp_bias", False),
        ("rope_scaling", None)) if raw.get(key, ours) != ours]
    if rope.get("rope_type", "default") != "default" or rope.get("rope_theta", ROPE_BASE) != ROPE_BASE:
        differs.append(f"rope_parameters {rope!r}")
    if differs:
        raise NanoGPTError(f"{folder}: nanogpt's GPT does not compute this {kind} model's {', '.join(differs)[:300]}; "
                           "only models of the shapes `nanogpt export` writes can be imported")
    if not isinstance(raw.get("nanogpt"), dict):
        raise NanoGPTError(f"{folder}: a {kind} model without nanogpt's tokenizer record (config.json's \"nanogpt\"); "
                           "only folders written by `nanogpt export` can be imported in this layout")
    problem = spec_problem(raw["nanogpt"].get("tokenizer", GPT2_TOKENIZER))
    if problem:
        raise Corrupt(path, problem, remedy)
    return config


def _llama_weights(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our GPT's state dict from transformers' Llama-family names (the inverse of export.py's renaming)."""
    weights = {"transformer.wte.weight": tensors.pop("model.embed_tokens.weight"),
               "transformer.ln_f.weight": tensors.pop("model.norm.weight")}
    weights["lm_head.weight"] = weights["transformer.wte.weight"] if config.tie else tensors.pop("lm_head.weight")
    for i in range(config.n_layer):
        theirs, ours = f"model.layers.{i}.", f"transformer.h.{i}."
        attn = [tensors.pop(f"{theirs}self_attn.{p}_proj.weight") for p in "qkv"]
        parts = ("gate", "up") if config.mlp == "swiglu" else ("up",)
        fc = [tensors.pop(f"{theirs}mlp.{p}_proj.weight") for p in parts]
        if config.qk_norm:
            for p in "qk":
                if not torch.all(tensors.pop(f"{theirs}self_attn.{p}_norm.weight") == 1):
                    raise NanoGPTError(f"layer {i}'s {p}_norm has weights other than 1, which nanogpt's QK-norm "
                                       "does not have; only models `nanogpt export` wrote can be imported")
        weights |= {ours + "ln_1.weight": tensors.pop(theirs + "input_layernorm.weight"),
                    ours + "attn.c_attn.weight": torch.cat(attn),
                    ours + "attn.c_proj.weight": tensors.pop(theirs + "self_attn.o_proj.weight"),
                    ours + "ln_2.weight": tensors.pop(theirs + "post_attention_layernorm.weight"),
                    ours + "mlp.c_fc.weight": torch.cat(fc),
                    ours + "mlp.c_proj.weight": tensors.pop(theirs + "mlp.down_proj.weight")}
    if tensors:
        raise NanoGPTError(f"unexpected tensors {', '.join(sorted(tensors)[:3])} for this config.json")
    return weights


def load_hf_folder(folder: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, weights (in our GPT's names and shapes) and tokenizer spec of a GPT-2-layout folder, or of a
    Llama, Qwen3 or Arcee folder that `nanogpt export` wrote."""
    raw = _raw_hf_config(folder)
    if raw.get("model_type") in LLAMA_FAMILY:
        config = read_llama_config(folder, raw)
        tensors = _safetensors(folder)
        try:
            weights = _llama_weights(dict(tensors), config)
        except KeyError as exc:
            raise NanoGPTError(f"{folder / 'model.safetensors'} lacks {exc.args[0]}; export the model again") from None
        check_fits(config, weights, str(folder))
        return config, weights, raw["nanogpt"].get("tokenizer", GPT2_TOKENIZER)
    config, raw = read_hf_config(folder, raw)
    tensors = _safetensors(folder)
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
    ours = raw.get("nanogpt", {}).get("model_config")
    biases = [name for name, tensor in weights.items() if name.endswith(".bias") and tensor.dim() == 1]
    if isinstance(ours, dict) and ours.get("bias") is False and not any(weights[b].any() for b in biases):
        # Our own export of a model without biases: the layout made them zeros; they are not parameters.
        weights = {name: tensor for name, tensor in weights.items() if name not in biases}
        config = replace(config, bias=False)
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


@dataclass
class Pretrained:
    """Weights from somewhere, ready to build a GPT: its config, its state dict, the tokenizer spec."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: dict[str, Any]
    description: str  # for people: "OpenAI gpt2", a path, "run x"
    source: dict[str, Any] = field(default_factory=dict)  # for the record: kind, path, and so on


def load_source(spec: str, meta: Path | None = None, progress=None) -> Pretrained:
    """The weights `spec` names: a GPT-2 size, a GPT-2-layout folder, a nanoGPT checkpoint (file, or a
    folder holding ckpt.pt; `meta` is its meta.pkl), or a run name."""
    if spec in GPT2_SIZES:
        config, weights, tokenizer = load_hf_folder(_hub_folder(spec, progress))
        return Pretrained(config, weights, tokenizer, f"OpenAI {spec}", {"kind": "gpt2", "name": spec})
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        config, weights, tokenizer = load_hf_folder(path)
        return Pretrained(
            config, weights, tokenizer, str(path.resolve()), {"kind": "gpt2-layout", "path": str(path.resolve())}
        )
    if path.is_dir() and (path / "ckpt.pt").is_file():
        path = path / "ckpt.pt"
    if path.is_file():
        return load_nanogpt_checkpoint(path, meta)
    if _is_run(spec):
        run_dir = paths.run_dir(spec)
        ckpt = load_checkpoint(checkpoint_path(run_dir, "best", other=f"--init-from {run_dir / 'ckpt.pt'}"))
        return Pretrained(model_config_from_dict(ckpt["model_config"]), ckpt["model"], ckpt["tokenizer"], f"run {spec}",
                          {"kind": "run", "name": spec})
    close = paths.closest(spec, list(GPT2_SIZES)) or paths.did_you_mean(spec, paths.runs_dir())
    raise NanoGPTError(
        f"{spec!r} is neither a GPT-2 size ({', '.join(GPT2_SIZES)}), a folder with config.json and model.safetensors, "
        f"a nanoGPT ckpt.pt (or a folder holding one), nor a run name{close}"
    )


def _is_run(name: str) -> bool:
    try:
        return (paths.run_dir(name) / "config.json").is_file()
    except NanoGPTError:  # not a valid run name at all
        return False


# ------------------------------------------------------------------------------- nanoGPT checkpoints


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what pickle's own opcodes make (dicts, strings, numbers, lists...): any class or
    function the file names, the only way a pickle runs code, is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it refers to outside objects")


def _plain(value: Any, depth: int = 2, seen: set[int] | None = None) -> bool:
    """Whether `value` is what a nanoGPT meta.pkl holds: a dict of ints, strings and dicts of those,
    nested no deeper than that. Each dict is checked once, however often it is shared: a file whose
    dicts share references many levels deep would otherwise take forever to walk."""
    if not isinstance(value, dict):
        return isinstance(value, (str, int))
    seen = set() if seen is None else seen
    if id(value) in seen:
        return True
    seen.add(id(value))
    return depth > 0 and all(isinstance(k, (str, int)) and _plain(v, depth - 1, seen) for k, v in value.items())


def read_meta_pickle(path: Path) -> dict[str, Any]:
    """nanoGPT's meta.pkl (vocab_size, itos, stoi), read without running any code from the file."""
    try:
        data = _PlainUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except OSError as exc:
        raise NanoGPTError(f"cannot read {path}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        raise NanoGPTError(f"refusing to load {path}: {exc}, not only plain dicts, strings and ints; "
                           "a nanoGPT meta.pkl holds nothing else") from None
    except Exception:  # truncated or not a pickle at all
        raise NanoGPTError(f"{path} is not a readable meta.pkl (corrupt, or not a pickle)") from None
    if not isinstance(data, dict) or not _plain(data):
        raise NanoGPTError(f"refusing to use {path}: it holds values other than plain dicts, strings and ints")
    return data


def _char_tokenizer_from_meta(meta: dict[str, Any], path: Path, vocab_size: int) -> dict[str, Any]:
    itos = meta.get("itos")
    if not isinstance(itos, dict) or sorted(itos) != list(range(len(itos))) or \
            not all(isinstance(ch, str) and len(ch) == 1 for ch in itos.values()):
        raise NanoGPTError(f"{path} has no character vocabulary (an 'itos' dict of ids 0..N-1 to single characters)")
    if len(itos) > vocab_size:
        raise NanoGPTError(f"{path} has {len(itos)} characters but the checkpoint's model only {vocab_size} tokens; "
                           "is it the meta.pkl of another dataset?")
    return {"kind": "char", "chars": "".join(itos[i] for i in range(len(itos)))}


def _meta_candidates(ckpt_path: Path, nano_config: dict[str, Any]) -> list[Path]:
    """Where meta.pkl may be: beside the checkpoint, or where nanoGPT's sample.py looks, data/<dataset>/
    of the repository the out_dir is in."""
    candidates = [ckpt_path.parent / "meta.pkl"]
    if isinstance(nano_config.get("dataset"), str):
        candidates.append(ckpt_path.parent.parent / "data" / paths.safe_name(nano_config["dataset"]) / "meta.pkl")
    return candidates


def load_nanogpt_checkpoint(path: Path, meta: Path | None = None) -> Pretrained:
    """A checkpoint written by nanoGPT's train.py (model_args + model state dict, maybe with
    torch.compile's `_orig_mod.` prefix), or one of ours; the vocabulary from meta.pkl, else GPT-2 BPE."""
    ckpt = read_tensors_file(path, "checkpoint")
    if isinstance(ckpt, dict) and "format_version" in ckpt and "model_config" in ckpt:  # one of our own
        ours = load_checkpoint(path)
        return Pretrained(model_config_from_dict(ours["model_config"]), ours["model"], ours["tokenizer"],
                          str(Path(path).resolve()), {"kind": "nanogpt-cli", "path": str(Path(path).resolve())})
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model_args"), dict)
        or not isinstance(ckpt.get("model"), dict)
    ):
        raise NanoGPTError(f"{path} is not a nanoGPT checkpoint (it has no model_args and model state dict)")
    args = ckpt["model_args"]
    try:
        config = ModelConfig(
            model="gpt", vocab_size=int(args["vocab_size"]), block_size=int(args["block_size"]),
            n_layer=int(args["n_layer"]), n_head=int(args["n_head"]), n_embd=int(args["n_embd"]),
            dropout=float(args.get("dropout", 0.0)), bias=bool(args.get("bias", True)),
            mlp="gelu",  # nanoGPT's MLP uses nn.GELU(), the exact GELU
        )
        config.validate()
    except (KeyError, TypeError, ValueError) as exc:
        raise NanoGPTError(f"{path}: its model_args are incomplete or invalid ({type(exc).__name__}: {exc})") from None
    weights, as_float = {}, {}
    for name, tensor in ckpt["model"].items():
        name = name.removeprefix("_orig_mod.")  # what torch.compile's wrapper adds
        if name.endswith(".attn.bias") and tensor.dim() > 1:
            continue  # the causal-mask buffer nanoGPT keeps when it has no flash attention
        # float32 like every run; a tensor stored twice (the tied wte / lm_head) stays one tensor
        weights[name] = as_float.setdefault(id(tensor), tensor.float())
    check_fits(config, weights, str(path))
    nano_config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    candidates = _meta_candidates(Path(path), nano_config)
    meta = Path(meta).expanduser() if meta is not None else next((c for c in candidates if c.is_file()), None)
    if meta is not None:
        tokenizer = _char_tokenizer_from_meta(read_meta_pickle(meta), meta, config.vocab_size)
    elif config.vocab_size < 50257:
        raise NanoGPTError(f"{path} has a vocabulary of {config.vocab_size} tokens, so it needs its dataset's "
                           f"meta.pkl, which is not at {' or '.join(str(c) for c in candidates)}; pass --meta PATH")
    else:
        tokenizer = GPT2_TOKENIZER  # what nanoGPT's sample.py assumes without a meta.pkl
    source = {"kind": "nanogpt", "path": str(Path(path).resolve()), "meta": str(meta.resolve()) if meta else None,
              "iteration": ckpt.get("iter_num"), "dataset": nano_config.get("dataset")}
    return Pretrained(config, weights, tokenizer, f"nanoGPT checkpoint {Path(path).resolve()}", source)


# --------------------------------------------------------------------------------------- import


def default_run_name(spec: str) -> str:
    """A run name for an import: the GPT-2 size, or the folder the weights come from."""
    if spec in GPT2_SIZES:
        return spec
    path = Path(spec).expanduser().resolve()
    return paths.safe_name(path.parent.name if path.is_file() else path.name)


def import_run(found: Pretrained, name: str, overwrite: bool = False) -> dict[str, Any]:
    """Make run `name` from weights: best.pt (weights, config, tokenizer) and config.json, so sample,
    eval, info, export and `train --init-from` treat it like a trained run. Returns config.json."""
    run_dir = paths.run_dir(name)
    with torch.device("meta"):
        n_params = count_parameters(GPT(found.config))
    info = {
        "run": name, "run_dir": str(run_dir), "dataset": None, "preset": None, "parameters": n_params,
        "model_config": asdict(found.config), "tokenizer": found.tokenizer, "imported_from": found.source,
        "init_from": found.description, "nanogpt_version": __version__, "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    payload = {
        "format_version": FORMAT_VERSION, "nanogpt_version": __version__, "model_config": asdict(found.config),
        "model": {k: v.contiguous() for k, v in found.weights.items()}, "tokenizer": found.tokenizer,
        "dataset": None, "init_from": found.description,
        "train_state": {"iteration": 0, "best_val_loss": float("inf"), "elapsed": 0.0},
    }
    if (run_dir / "config.json").exists() and not overwrite:
        raise NanoGPTError(f"run {name!r} already exists; choose another name with --run, or pass --overwrite to "
                           "replace it")
    with open_run(run_dir, resuming=False, overwrite=True):
        save_checkpoint(run_dir / "best.pt", payload)
        (run_dir / "config.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
