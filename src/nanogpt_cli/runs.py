"""The run folder: its name, its lock, its config files and its metrics log.

`open_run` claims <runs>/<name> for one training process: it refuses a name in use (unless told to
overwrite), holds an exclusive lock while training, and removes the folder again if the run failed
before writing anything into it. `write_config` records the run's resolved settings as config.json
(with what was measured: parameters, device, versions) and config.toml (a run config that repeats the
run). `MetricsLog` appends metrics.jsonl lines (and hands each to the --log tools). This module knows
files, not models.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanogpt_cli import paths
from nanogpt_cli.catalog import read_metrics
from nanogpt_cli.config import ModelConfig, TrainConfig, to_toml
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.runlock import REPLACED, finish_replacement, run_files, run_lock


def new_run_name(dataset: str) -> str:
    base = f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while paths.run_dir(name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


@contextlib.contextmanager
def open_run(run_dir: Path, resuming: bool, overwrite: bool, dataset: str | None = None) -> Iterator[Path]:
    """The run folder, created and locked for as long as training holds it. A new run may not reuse a
    name unless `overwrite`. Overwriting is a transaction: the old run's files wait in the folder's
    `.replaced/` until the new run has written its first checkpoint, and come back if it fails before
    that (or, after a kill, the next time the run is opened). A folder made here is removed again if
    the run fails before writing anything into it."""
    created = not run_dir.exists()
    replaced = run_dir / REPLACED
    try:
        with run_lock(paths.ensure_dir(run_dir), dataset):
            finish_replacement(run_dir)  # a replacement a killed process left half done
            if resuming and not (run_dir / "ckpt.pt").is_file():  # `mv` or `rm` took it while this one started
                raise NanoGPTError(f"run {run_dir.name!r} was moved or removed while this command was starting; "
                                   "`nanogpt info` lists the runs")
            if not resuming and any((run_dir / name).exists() for name in ("config.json", "ckpt.pt", "best.pt")):
                if not overwrite:
                    raise NanoGPTError(
                        f"run {run_dir.name!r} already exists; continue it with --resume, choose another --run "
                        "name, or pass --overwrite to replace it"
                    )
                replaced.mkdir()
                for old in run_files(run_dir):
                    old.rename(replaced / old.name)
            try:
                yield run_dir
            finally:
                finish_replacement(run_dir)
    except BaseException:
        if created:
            _remove_if_unused(run_dir)
        raise


def _remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but its lock file."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {".lock", REPLACED}:
            shutil.rmtree(run_dir)
    except OSError:
        pass


def write_config(run_dir: Path, info: dict[str, Any], model: ModelConfig, train: TrainConfig,
                 preset: str | None) -> None:
    """config.json (settings and what was measured) and config.toml (`nanogpt train --config` repeats
    the run from it)."""
    with paths.open_own(run_dir / "config.json", "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    header = f"# The resolved config of run {run_dir.name}.\n"
    with paths.open_own(run_dir / "config.toml", "w") as f:
        f.write(header + to_toml(model, train, preset))


class MetricsLog:
    """metrics.jsonl, one JSON object per line, flushed as written. A resumed run first drops the
    lines logged after the checkpoint it resumes from (they will be written again)."""

    def __init__(self, run_dir: Path, resume_from: int | None, enabled: bool = True, loggers: list[Any] | None = None):
        self.path = run_dir / "metrics.jsonl"
        self.loggers = loggers or []  # TensorBoard, W&B (loggers.py): each row goes to them too
        if enabled:
            if resume_from is None:
                self.path.unlink(missing_ok=True)
            else:
                self._trim(resume_from)
        self._file = paths.open_own(self.path, "a") if enabled else open(os.devnull, "a", encoding="utf-8")

    def _trim(self, iteration: int) -> None:
        if not self.path.is_file():
            return
        kept = [row for row in read_metrics(self.path.parent) if row["iter"] <= iteration]  # well-formed rows only
        with paths.open_own(self.path, "w") as f:
            f.write("".join(json.dumps(row) + "\n" for row in kept))

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for logger in self.loggers:
            logger.write(row)

    def close(self) -> None:
        self._file.close()
        for logger in self.loggers:
            logger.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
