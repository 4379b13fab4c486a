"""What is on disk: prepared datasets and training runs, described from their small JSON files.

Listing never loads tensors, so `nanogpt info` stays fast however many runs there are.
"""

from __future__ import annotations

import filecmp
import json
import time
from pathlib import Path
from typing import Any

from nanogpt_cli import paths
from nanogpt_cli.config import InvalidValue, ModelConfig, TrainConfig, config_from_dict
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.readers import Corrupt, check_type, read_json_object, require
from nanogpt_cli.runlock import settle, training_on
from nanogpt_cli.tokenizer import spec_name


def read_json(path: Path) -> dict[str, Any] | None:
    """A run's config.json or a dataset's meta.json for listing: None if it is missing or unreadable
    (a listing shows what it can; commands that use the file read it with readers.read_json_object)."""
    try:
        return read_json_object(path, "file", "")
    except (OSError, NanoGPTError):
        return None


# config.json's fields that readers use, by type (absent or null is fine: older runs lack some)
RUN_CONFIG_FIELDS = {"run": str, "dataset": str, "preset": str, "parameters": int, "device": str, "dtype": str,
                     "muon_orthogonalize": str, "tokenizer": dict, "imported_from": dict, "init_from": str,
                     "created": str, "nanogpt_version": str, "resumed_from": int, "time_budget": float}


def read_run_config(path: Path) -> dict[str, Any] | None:
    """A run's config.json with every field the readers use checked (None if there is none); a
    malformed one is Corrupt, naming the field."""
    remedy = f"remove the run (`nanogpt rm {path.parent.name}`) or move the file away"
    try:
        config = read_json_object(path, "run config", remedy)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NanoGPTError(f"cannot read {path}: {exc.strerror or exc}") from None
    for name, kind in RUN_CONFIG_FIELDS.items():
        require(config, name, kind, path, remedy, optional=True)
    for name, cls in (("model_config", ModelConfig), ("train_config", TrainConfig)):
        try:
            config_from_dict(cls, require(config, name, dict, path, remedy, optional=True, default={}))
        except InvalidValue as exc:
            raise Corrupt(path, f"{name}.{exc.name} {exc.requirement}", remedy) from None
    return config


def disk_size(folder: Path) -> int:
    """Bytes the files under `folder` take, each hard-linked file counted once (--keep links checkpoints)."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        try:
            stat = path.lstat()
        except OSError:
            continue
        if path.is_file() and (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


def list_datasets() -> list[dict[str, Any]]:
    root = paths.datasets_dir()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        meta = read_json(folder / "meta.json") if not folder.name.startswith(".") else None
        if meta and _listable(meta):
            found.append({**meta, "path": str(folder), "size_bytes": disk_size(folder)})
    return found


def _listable(meta: dict[str, Any]) -> bool:
    """Whether the fields a dataset listing shows have their types (a corrupt meta.json is left out of
    the list; using the dataset says what is wrong with it)."""
    kinds = {"name": str, "vocab_size": int, "train_tokens": int, "val_tokens": int, "dtype": str, "tokenizer": dict}
    return all(check_type(meta.get(k), kind, k, optional=True) is None for k, kind in kinds.items())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(run_dir / "metrics.jsonl", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)  # bytes: decoded as UTF-8, and a line that is not UTF-8 is a ValueError
        except (ValueError, RecursionError):
            continue  # a line cut short by a crash, or damaged since
        if isinstance(row, dict) and _row_ok(row):
            rows.append(row)
    return rows


def _row_ok(row: dict[str, Any]) -> bool:
    """A metrics row whose fields the readers use have their types: the kind a string, the iteration
    an integer, the losses and times numbers (a row that is not is skipped, like a truncated one)."""
    if not isinstance(row.get("kind"), str):
        return False
    needed = {"eval": ("val_loss", "train_loss"), "train": ("loss",)}.get(row["kind"], ())
    return (type(row.get("iter")) is int and all(k in row for k in needed)
            and all(type(v) in (int, float, type(None)) for k, v in row.items() if k != "kind"))


def run_summary(run_dir: Path) -> dict[str, Any] | None:
    """What `info` lists of a run (None: not a run; a corrupt config.json is Corrupt)."""
    settle(run_dir)
    config = read_run_config(run_dir / "config.json")
    if config is None:
        return None
    metrics = read_metrics(run_dir)
    evals = [m for m in metrics if m.get("kind") == "eval"]
    # The last saved iteration: a checkpoint row (older runs: the last eval, which was saved too).
    saved = [m["iter"] for m in metrics if m.get("kind") == "checkpoint"] or [m["iter"] for m in evals]
    checkpoints = [run_dir / name for name in ("ckpt.pt", "best.pt") if (run_dir / name).is_file()]
    modified = max((p.stat().st_mtime for p in checkpoints), default=(run_dir / "config.json").stat().st_mtime)
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "dataset": config.get("dataset"),
        "model": config.get("model_config", {}).get("model"),
        "parameters": config.get("parameters"),
        "iterations": max(saved, default=0),
        "max_iters": config.get("train_config", {}).get("max_iters"),
        "time": config.get("train_config", {}).get("time"),  # a wall-clock budget instead of max_iters
        # The loss best.pt holds: none without best.pt (a run stopped before it evaluated past iteration 0).
        "best_val_loss": min((m["val_loss"] for m in evals if m["iter"] > 0), default=None)
        if (run_dir / "best.pt").is_file() else None,
        "last_modified": time.strftime("%Y-%m-%d %H:%M", time.localtime(modified)),
        "modified_ts": modified,
        "has_checkpoint": bool(checkpoints),
        "imported": bool(config.get("imported_from")),
        "size_bytes": disk_size(run_dir),
    }


def list_runs() -> list[dict[str, Any]]:
    root = paths.runs_dir()
    runs = [_listed(d) for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    return [r for r in runs if r is not None]


def _listed(run_dir: Path) -> dict[str, Any] | None:
    """A run's summary for a listing; a run whose config.json is corrupt is listed as such, by name."""
    try:
        return run_summary(run_dir)
    except NanoGPTError as exc:
        return {"name": run_dir.name, "path": str(run_dir), "dataset": None, "model": None, "parameters": None,
                "iterations": 0, "max_iters": None, "time": None, "best_val_loss": None, "last_modified": "corrupt",
                "modified_ts": 0.0, "has_checkpoint": False, "imported": False, "size_bytes": disk_size(run_dir),
                "problem": str(exc)}


def runs_using_dataset(dataset: str) -> list[str]:
    """Runs trained on `dataset` that still hold a checkpoint to resume or evaluate, and runs training
    on it now, from the moment they hold their lock (before config.json or a checkpoint exists)."""
    users = [r["name"] for r in list_runs() if r["dataset"] == dataset and (Path(r["path"]) / "ckpt.pt").is_file()]
    starting = [p.name for p in paths.runs_dir().glob("*") if p.is_dir() and training_on(p) == dataset]
    return list(dict.fromkeys(users + starting))


def _same_tokens(old_dir: Path, new_dir: Path) -> bool:
    """Whether two dataset folders hold the same tokenizer and the same token files, byte for byte."""
    try:
        old_meta = json.loads((old_dir / "meta.json").read_text(encoding="utf-8"))
        new_meta = json.loads((new_dir / "meta.json").read_text(encoding="utf-8"))
        return old_meta.get("tokenizer") == new_meta.get("tokenizer") and all(
            filecmp.cmp(old_dir / f"{split}.bin", new_dir / f"{split}.bin", shallow=False) for split in ("train", "val")
        )
    except (OSError, ValueError):
        return False


def check_replaceable(final_dir: Path, new_dir: Path) -> None:
    """Refuse to swap in different tokens under a dataset that resumable runs were trained on: their
    --resume and eval would read tokens they were not trained on."""
    users = runs_using_dataset(final_dir.name)
    if users and not _same_tokens(final_dir, new_dir):
        shown = ", ".join(repr(r) for r in users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise NanoGPTError(
            f"dataset {final_dir.name!r} is what run(s) {shown} trained on, and the new tokens differ: replacing it "
            "would break their --resume and eval. Prepare it under another --name, or delete those runs first"
        )


def resolve_run(name: str | None, need: str | None = None) -> Path:
    """A run's folder by name, or the most recently updated run that has a checkpoint (or, with
    `need`, that has that file)."""
    if name:
        run_dir = paths.run_dir(name)
        settle(run_dir)
        if not (run_dir / "config.json").is_file():
            raise paths.missing("run", name)
        if need and not (run_dir / need).is_file():
            raise NanoGPTError(f"run {name!r} has no {need} to continue from; start it again without --resume")
        return run_dir
    runs = [r for r in list_runs() if r["has_checkpoint"] and (not need or (Path(r["path"]) / need).is_file())]
    if not runs:
        raise NanoGPTError("no trained run found; train one first with `nanogpt train`")
    return Path(max(runs, key=lambda r: r["modified_ts"])["path"])


def describe_system() -> dict[str, Any]:
    """Everything `nanogpt info` shows without arguments."""
    import platform

    import torch

    from nanogpt_cli import __version__
    from nanogpt_cli.device import auto_device, available_devices

    datasets = [
        {k: d.get(k) for k in ("name", "vocab_size", "train_tokens", "val_tokens", "dtype", "path", "size_bytes")}
        | {"tokenizer_name": spec_name(d.get("tokenizer", {}))}
        for d in list_datasets()
    ]
    runs = [{k: v for k, v in r.items() if k != "modified_ts"} for r in list_runs()]
    return {
        "version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "auto_device": auto_device(),
        "available_devices": available_devices(),
        "data_dir": str(paths.data_dir()),
        "cache_dir": str(paths.cache_dir()),
        "runs_dir": str(paths.runs_dir()),
        "datasets": datasets,
        "runs": runs,
        "total_bytes": sum(d["size_bytes"] for d in datasets) + sum(r["size_bytes"] for r in runs),
    }


def compare_runs(names: list[str]) -> dict[str, Any]:
    """Several runs side by side: the settings that differ (the equal ones folded into a count and a
    list), and what each run reached: parameters, iterations, best val loss, time, tokens/s."""
    runs = []
    for name in names:
        run_dir = resolve_run(name)
        summary, metrics = run_summary(run_dir), read_metrics(run_dir)
        config = read_run_config(run_dir / "config.json") or {}
        speeds = sorted(
            m["tokens_per_second"] for m in metrics if m.get("kind") == "train" and "tokens_per_second" in m
        )
        runs.append({
            "name": run_dir.name,
            "settings": {**{f"model.{k}": v for k, v in config.get("model_config", {}).items()},
                         **{f"train.{k}": v for k, v in config.get("train_config", {}).items()},
                         "preset": config.get("preset")},
            "parameters": summary["parameters"],
            "iterations": summary["iterations"],
            "best_val_loss": summary["best_val_loss"],
            "seconds": max((m["elapsed"] for m in metrics if "elapsed" in m), default=None),
            "tokens_per_second": speeds[len(speeds) // 2] if speeds else None,  # the median log line
        })
    keys = list(dict.fromkeys(k for run in runs for k in run["settings"]))
    differ = [k for k in keys if len({repr(run["settings"].get(k)) for run in runs}) > 1]
    return {
        "runs": runs,
        "differ": {k: [run["settings"].get(k) for run in runs] for k in differ},
        "same": {k: runs[0]["settings"].get(k) for k in keys if k not in differ},
    }


def metrics_csv(name: str) -> str:
    """A run's metrics.jsonl as CSV: one row per line, a column per field (empty where a row has none)."""
    import csv
    import io

    rows = read_metrics(resolve_run(name))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
