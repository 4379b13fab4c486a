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
from nanogpt_cli.config import ModelConfig, TrainConfig, to_toml
from nanogpt_cli.errors import NanoGPTError

RUN_FILES = ("config.json", "config.toml", "metrics.jsonl")


def new_run_name(dataset: str) -> str:
    base = f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while paths.run_dir(name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder; a second `train` of the same run is refused. The
    operating system drops the lock when the process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run without one
        yield
        return
    path = run_dir / ".lock"
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise NanoGPTError(
            f"cannot write to run folder {run_dir}: {exc.strerror or exc}; set NANOGPT_HOME to a writable folder"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise NanoGPTError(
                f"run {run_dir.name!r} is being trained by another process (pid {owner}); "
                "wait for it to finish or choose another --run name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def training_pid(run_dir: Path) -> str | None:
    """The pid of the process training this run now (its lock is held), or None."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return None
    try:
        with open(run_dir / ".lock", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return handle.read().strip() or "?"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:  # no lock file: never trained here, or long finished
        return None
    return None


@contextlib.contextmanager
def open_run(run_dir: Path, resuming: bool, overwrite: bool) -> Iterator[Path]:
    """The run folder, created and locked for as long as training holds it. A new run may not reuse a
    name unless `overwrite` (then the old run's files go); a folder made here is removed again if the
    run fails before writing anything into it."""
    created = not run_dir.exists()
    try:
        with run_lock(paths.ensure_dir(run_dir)):
            if not resuming and any((run_dir / name).exists() for name in ("config.json", "ckpt.pt", "best.pt")):
                if not overwrite:
                    raise NanoGPTError(
                        f"run {run_dir.name!r} already exists; continue it with --resume, choose another --run "
                        "name, or pass --overwrite to replace it"
                    )
                for old in [*run_dir.glob("*.pt"), *(run_dir / name for name in RUN_FILES)]:
                    old.unlink(missing_ok=True)
            yield run_dir
    except BaseException:
        if created:
            _remove_if_unused(run_dir)
        raise


def _remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but its lock file."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {".lock"}:
            shutil.rmtree(run_dir)
    except OSError:
        pass


def write_config(run_dir: Path, info: dict[str, Any], model: ModelConfig, train: TrainConfig,
                 preset: str | None) -> None:
    """config.json (settings and what was measured) and config.toml (`nanogpt train --config` repeats
    the run from it)."""
    (run_dir / "config.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    header = f"# The resolved config of run {run_dir.name}.\n"
    (run_dir / "config.toml").write_text(header + to_toml(model, train, preset), encoding="utf-8")


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
        self._file = open(self.path if enabled else os.devnull, "a", encoding="utf-8")

    def _trim(self, iteration: int) -> None:
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["iter"] <= iteration:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

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
