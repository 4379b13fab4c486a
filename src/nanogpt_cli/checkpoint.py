"""Saving and loading checkpoints, the one place that touches .pt files.

A checkpoint is a dict of tensors and plain containers only, so `torch.load(weights_only=True)` can
read it without running any pickled code: format version, model config and weights, optimizer state,
train state (iteration, best val loss, RNG states), tokenizer spec and dataset name. Writes go to a
temporary file in the same folder, are flushed and fsynced, then renamed over the old file, so a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import pickle
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nanogpt_cli import __version__, distributed
from nanogpt_cli.config import InvalidValue, ModelConfig, TrainConfig, config_from_dict, model_config_from_dict
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.memory import check_fits, fixed_tables, model_bytes
from nanogpt_cli.model import build_model
from nanogpt_cli.quantize import check_quantize, quantize_int8
from nanogpt_cli.readers import Corrupt, require
from nanogpt_cli.tasks import task_problem
from nanogpt_cli.tokenizer import spec_problem, tokenizer_from_spec

FORMAT_VERSION = 1
CHECKPOINT_FILES = {"last": "ckpt.pt", "best": "best.pt"}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        kept = ("the previous checkpoint is kept (the last good one)" if path.exists()
                else "no earlier checkpoint was written")
        raise NanoGPTError(f"cannot write checkpoint {path}: {_write_failure(exc, path.parent)}; {kept}") from None
    except BaseException:  # e.g. a second Ctrl-C mid-write: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise


def _write_failure(exc: Exception, folder: Path) -> str:
    """Why a write failed, in words: a full disk says so, with the space left."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    full = getattr(exc, "errno", None) == errno.ENOSPC or "unexpected pos" in str(exc) or free == 0
    if full:
        details = [d for d in (getattr(exc, "strerror", None),
                               f"{free / 2**20:,.0f} MiB free in {folder}" if free is not None else None) if d]
        return f"the disk is full ({'; '.join(details)}); free some space and resume the run"
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def random_state(group, device: torch.device, sampler) -> dict[str, Any]:
    """Every random generator a training run draws from, for an exact resume: torch's (each process's
    under DDP), CUDA's and the data sampler's position."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "sampler": sampler.position(),
        "torch_by_rank": distributed.gather(torch.get_rng_state()) if group.active else [],
    }


def restore_random_state(rng: dict[str, Any], group, sampler) -> None:
    by_rank = rng.get("torch_by_rank") or []
    torch.set_rng_state(by_rank[group.rank] if len(by_rank) == group.world else rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    sampler.rewind(rng["sampler"])


def restore_training(trainer, ckpt: dict[str, Any]) -> None:
    """Put a Trainer back where a full checkpoint left it: weights, optimizer and loss scaler, the
    iteration and best loss, the running loss and every random generator."""
    state = ckpt["train_state"]
    try:
        trainer.model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            trainer.scaler.load_state_dict(ckpt["scaler"])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise NanoGPTError(f"the checkpoint of run {trainer.run_dir.name!r} does not fit its own model or optimizer "
                           f"({type(exc).__name__}): it is corrupt; remove the run (`nanogpt rm`) and train it "
                           "again") from None
    trainer.step = state["iteration"]
    trainer.elapsed_before = state.get("elapsed", 0.0)  # checkpoints before 0.2 lack it
    trainer.best_val_loss = state["best_val_loss"]
    trainer.loss_sum.fill_(state["loss_sum"])
    trainer.loss_count = state["loss_count"]
    trainer.eval_pending = state.get("eval_pending", False)  # stopped during the evaluation at this iteration
    restore_random_state(state["rng"], trainer.group, trainer.train_batches)

def training_checkpoint(trainer, full: bool) -> dict[str, Any]:
    """What a Trainer saves: weights, configs, tokenizer and task for best.pt; with `full`, for ckpt.pt,
    also everything needed to continue exactly (optimizer, scaler, running loss, random generators)."""
    train_state = {"iteration": trainer.step, "best_val_loss": trainer.best_val_loss,
                   "elapsed": trainer.elapsed(), "eval_pending": trainer.eval_pending}
    payload = dict(format_version=FORMAT_VERSION, nanogpt_version=__version__, train_state=train_state,
                   model_config=asdict(trainer.model_config), train_config=asdict(trainer.cfg),
                   model=trainer.model.state_dict(),
                   tokenizer=trainer.dataset.meta["tokenizer"], dataset=trainer.dataset.name,
                   dataset_fingerprint=trainer.dataset.fingerprint,
                   task=trainer.dataset.meta.get("task"))
    if trainer.info.init_from:
        payload["init_from"] = trainer.info.init_from
    if full:  # everything needed to continue exactly
        payload["optimizer"] = trainer.optimizer.state_dict()
        payload["scaler"] = trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {}
        train_state.update(loss_sum=trainer.loss_sum.item(), loss_count=trainer.loss_count,
                           rng=random_state(trainer.group, trainer.device, trainer.train_batches))
    return payload


def keep_history(run_dir: Path, step: int, keep: int) -> None:
    """Keep the last `keep` periodic checkpoints as ckpt-<iteration>.pt (hard links: no extra disk)."""
    snapshot = run_dir / f"ckpt-{step:08d}.pt"
    snapshot.unlink(missing_ok=True)
    try:
        os.link(run_dir / "ckpt.pt", snapshot)
    except OSError:
        shutil.copyfile(run_dir / "ckpt.pt", snapshot)
    for old in sorted(run_dir.glob("ckpt-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def read_tensors_file(path: Path, what: str = "checkpoint", map_location: Any = "cpu", map_file: bool = False) -> Any:
    """The contents of a torch.save file, read with `weights_only=True`: tensors and plain containers
    only, so no pickled code can run. Anything else is refused with a NanoGPTError saying why. With
    `map_file`, tensors are views of the file mapped into memory: pages are read when first touched."""
    path = Path(path)
    if not path.is_file():
        raise NanoGPTError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise NanoGPTError(f"{what} {path} is empty (0 bytes); it cannot be used")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols; we refuse below
            return torch.load(path, map_location=map_location, weights_only=True, mmap=map_file)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise NanoGPTError(
                f"refusing to load {path}: it contains pickled Python objects that could run code; "
                "only files of tensors and plain values are read"
            ) from None
        raise NanoGPTError(f"{what} {path} is corrupt or not a PyTorch checkpoint") from None
    except Exception:  # torch.load fails on foreign or damaged files in many different ways
        raise NanoGPTError(f"{what} {path} is corrupt, truncated or not a PyTorch checkpoint") from None


def load_checkpoint(path: Path, map_location: Any = "cpu", map_file: bool = False) -> dict[str, Any]:
    """Read a nanogpt checkpoint safely and check everything in it that nanogpt reads (see
    `check_checkpoint`), or raise NanoGPTError saying why it cannot be used."""
    ckpt = read_tensors_file(path, "checkpoint", map_location, map_file)
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "model" not in ckpt:
        hint = "; bring it in with `nanogpt import`" if isinstance(ckpt, dict) and "model_args" in ckpt else ""
        raise NanoGPTError(f"{path} is not a nanogpt checkpoint (no format version or model weights){hint}")
    version = ckpt["format_version"]
    if type(version) is int and version > FORMAT_VERSION:
        raise NanoGPTError(
            f"checkpoint {path} has format version {version}, newer than this nanogpt-cli reads ({FORMAT_VERSION}); "
            "upgrade nanogpt-cli"
        )
    check_checkpoint(ckpt, path)
    return ckpt


def _remedy(path: Path) -> str:
    other = "best" if Path(path).name == CHECKPOINT_FILES["last"] else "last"
    return (f"use the run's other checkpoint (--checkpoint {other}) if it has one, or remove the run "
            "(`nanogpt rm RUN`) and train it again")


def check_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Every part of a checkpoint that nanogpt reads, checked for type and range, so code past here can
    trust it: the model config and weights (their shapes, before a model is built from them), the
    tokenizer and task specs, and for a full checkpoint the training state and the optimizer's."""
    remedy = _remedy(path)
    require(ckpt, "format_version", int, path, remedy)
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise Corrupt(path, "its model weights are not a table of named tensors", remedy)
    config = _section(ModelConfig, ckpt, "model_config", path, remedy)
    problem = weights_problem(config, weights) or spec_problem(ckpt.get("tokenizer")) or task_problem(ckpt.get("task"))
    if problem:
        raise Corrupt(path, problem, remedy)
    for name in ("dataset", "init_from", "dataset_fingerprint"):
        require(ckpt, name, str, path, remedy, optional=True)
    if "train_config" in ckpt:
        _section(TrainConfig, ckpt, "train_config", path, remedy)
    state = require(ckpt, "train_state", dict, path, remedy, optional=True, default={})
    for name, kind in (("iteration", int), ("elapsed", float), ("loss_count", int)):
        if (value := require(state, name, kind, path, remedy, optional=True)) is not None and value < 0:
            raise Corrupt(path, f"train_state.{name} is negative", remedy)
    require(state, "eval_pending", bool, path, remedy, optional=True)
    for name in ("best_val_loss", "loss_sum"):  # inf before the first eval, nan in a run that allows it
        if type(state.get(name, 0.0)) not in (int, float):
            raise Corrupt(path, f"train_state.{name} is not a number", remedy)
    if "optimizer" in ckpt and not _optimizer_ok(ckpt["optimizer"]):
        raise Corrupt(path, "its optimizer state is malformed", remedy)
    rng = require(state, "rng", dict, path, remedy, optional=True)
    if rng is not None and not (isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8
                                and isinstance(rng.get("sampler"), torch.Tensor)
                                and all(isinstance(rng.get(k, []), list) for k in ("cuda", "torch_by_rank"))):
        raise Corrupt(path, "its random generator states are malformed", remedy)


def _section(cls: type, ckpt: dict[str, Any], name: str, path: Path, remedy: str) -> Any:
    """The checkpoint's model_config or train_config, type-checked (and the model's validated)."""
    data = require(ckpt, name, dict, path, remedy)
    try:
        return model_config_from_dict(data) if cls is ModelConfig else config_from_dict(cls, data)
    except InvalidValue as exc:
        raise Corrupt(path, f"{name}.{exc.name} {exc.requirement}", remedy) from None


def weights_problem(config: ModelConfig, weights: dict[str, torch.Tensor]) -> str | None:
    """Whether the weights can be the model the config describes, checked before the model is built:
    the embedding's shape, the number of blocks and the size of the position tables. (The model's
    strict load_state_dict then checks every other shape.)"""
    if config.model == "bigram":
        table = weights.get("token_embedding_table.weight")
        expected = (config.vocab_size, config.vocab_size)
    else:
        table = weights.get("transformer.wte.weight")
        expected = (config.vocab_size, config.n_embd)
        blocks = {key.split(".")[2] for key in weights if key.startswith("transformer.h.")}
        if blocks != {str(i) for i in range(config.n_layer)}:
            return f"model_config.n_layer is {config.n_layer}, but the weights hold {len(blocks)} blocks"
    if table is None or tuple(table.shape) != expected:
        shape = "none" if table is None else "x".join(map(str, table.shape))
        return f"its model_config needs a {'x'.join(map(str, expected))} embedding, but the weights hold {shape}"
    stored = sum(t.numel() for t in weights.values())
    if fixed_tables(config) > 4 * stored + 2**24:  # position tables made from block_size alone
        return (f"model_config.block_size {config.block_size:,} would need position tables far larger than the "
                f"model ({fixed_tables(config):,} values)")
    return None


def _optimizer_ok(state: Any) -> bool:
    """A torch optimizer's state dict, or (since AdamW and Muon can share a run) a dict of them by name."""
    if isinstance(state, dict) and "param_groups" not in state:
        return bool(state) and all(isinstance(k, str) and _optimizer_ok(v) for k, v in state.items())
    return (isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list) and all(isinstance(g, dict) for g in state["param_groups"]))


def _drop_pages(tensor: torch.Tensor) -> None:
    """Hand back to the OS the memory pages under `tensor`, a view of a mapped checkpoint that was only
    ever read: they leave this process's resident memory, and would be read from the file again if
    touched. Only whole pages inside the tensor are handed back. Where madvise is missing, nothing."""
    page, start = mmap.PAGESIZE, tensor.data_ptr()
    first, last = -(-start // page) * page, (start + tensor.numel() * tensor.element_size()) // page * page
    if last <= first or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        ctypes.CDLL(None).madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_DONTNEED)
    except (OSError, AttributeError, TypeError):
        pass  # only memory is at stake, never correctness


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: ModelConfig
    tokenizer: Any
    checkpoint: dict[str, Any]
    path: Path


def checkpoint_path(run_dir: Path, which: str = "best", other: str = "--checkpoint last") -> Path:
    """best.pt or ckpt.pt of a run. A run stopped before its first evaluation has only ckpt.pt: asking
    for its best is an error that names `other`, the way to ask for the last one instead."""
    if which not in CHECKPOINT_FILES:
        raise NanoGPTError(f"unknown checkpoint {which!r}: use best or last")
    path = run_dir / CHECKPOINT_FILES[which]
    if not path.is_file() and which == "best" and (run_dir / CHECKPOINT_FILES["last"]).is_file():
        raise NanoGPTError(f"run {run_dir.name!r} has no best checkpoint yet (best.pt is written at its first "
                           f"evaluation after iteration 0); use {other} for its last one (ckpt.pt), or resume it")
    if not path.is_file():
        raise NanoGPTError(f"run {run_dir.name!r} has no {which} checkpoint ({path.name}); train it first")
    return path


def load_model(path: Path, device: torch.device, dtype: torch.dtype = torch.float32, quantize: str | None = None
               ) -> LoadedModel:
    """Rebuild the model and tokenizer stored in a checkpoint, in eval mode on `device`, its weights
    in `dtype` (float32, the reference; bfloat16 or float16 halve the memory), or with `quantize="int8"`
    int8 block weights on the CPU."""
    check_quantize(quantize, device, dtype)
    # To quantize, the file is mapped instead of read: each float weight is read from the page cache
    # into its int8 layer and its pages handed back, so the float32 blocks never sit in memory whole.
    ckpt = load_checkpoint(path, map_location="cpu", map_file=bool(quantize))
    mapped = (
        {t.data_ptr() for t in ckpt.get("model", {}).values() if isinstance(t, torch.Tensor)} if quantize else set()
    )
    config = model_config_from_dict(ckpt["model_config"])  # checked by load_checkpoint
    check_fits(model_bytes(config), device, f"the model in {path}", "it cannot be loaded on this machine")
    try:
        model = build_model(config, ckpt["model"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise NanoGPTError(f"checkpoint {path} does not match its model config ({type(exc).__name__}); it is "
                           "damaged") from None
    del ckpt["model"]  # the model holds the weights now; keep one copy in memory, not two
    model.to(device=device, dtype=dtype).eval()
    if quantize:
        quantize_int8(model, done=lambda weight: _drop_pages(weight) if weight.data_ptr() in mapped else None)
        with torch.no_grad():  # what stays float gets memory of its own, so the file's mapping closes
            for tensor in model.parameters():
                tensor.data = tensor.data.clone()
    return LoadedModel(model, config, tokenizer_from_spec(ckpt["tokenizer"]), ckpt, Path(path))
