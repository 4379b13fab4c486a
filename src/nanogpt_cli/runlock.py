"""A run folder's lock, and settling an --overwrite that a killed process left half done.

Below everything else that touches runs (catalog.py reads through `settle`), so any command that opens
a run first puts back an old run whose replacement never wrote a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from nanogpt_cli import paths
from nanogpt_cli.errors import NanoGPTError

RUN_FILES = ("config.json", "config.toml", "metrics.jsonl")


@contextlib.contextmanager
def run_lock(run_dir: Path, dataset: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the run folder; a second `train` of the same run is refused. The
    operating system drops the lock when the process ends, however it ends. The lock file says who
    holds it (pid) and, for a training, on which dataset (`training_on`), from the first moment."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run without one
        yield
        return
    path = run_dir / ".lock"
    try:
        handle = paths.open_own(path, "a+")
    except OSError as exc:
        raise NanoGPTError(
            f"cannot write to run folder {run_dir}: {exc.strerror or exc}; set NANOGPT_HOME to a writable folder"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner, _ = _holder(handle.read())
            raise NanoGPTError(
                f"run {run_dir.name!r} is being trained by another process (pid {owner}); "
                "wait for it to finish or choose another --run name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()) + (f"\n{dataset}" if dataset else ""))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def training_pid(run_dir: Path) -> str | None:
    """The pid of the process training this run now (its lock is held), or None."""
    text = _lock_holder(run_dir)
    return None if text is None else _holder(text)[0]


def training_on(run_dir: Path) -> str | None:
    """The dataset the process holding this run's lock trains on (None: not training now, or unsaid)."""
    text = _lock_holder(run_dir)
    return None if text is None else _holder(text)[1]


def _holder(text: str) -> tuple[str, str | None]:
    """The pid and the dataset (None if unsaid) a lock file holds: "PID" or "PID\nDATASET"."""
    pid, _, dataset = text.strip().partition("\n")
    return pid.strip() or "?", dataset.strip() or None


def _lock_holder(run_dir: Path) -> str | None:
    """What the lock file of a run held by a process says (its pid, then its dataset), or None."""
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


REPLACED = ".replaced"  # inside a run folder: the files of the run that --overwrite is replacing


def run_files(run_dir: Path) -> list[Path]:
    return [path for path in [*run_dir.glob("*.pt"), *(run_dir / name for name in RUN_FILES)] if path.exists()]


def finish_replacement(run_dir: Path) -> None:
    """Settle an --overwrite: once the new run has a checkpoint the old files go; until then the new
    run's files go and the old ones come back."""
    replaced = run_dir / REPLACED
    if not replaced.is_dir():
        return
    if not (run_dir / "ckpt.pt").exists():
        for new in run_files(run_dir):
            new.unlink()
        for old in replaced.iterdir():
            old.rename(run_dir / old.name)
    shutil.rmtree(replaced)


def settle(run_dir: Path) -> None:
    """Finish a replacement whose process is gone (nobody holds the run's lock); one in progress is
    left alone."""
    if (run_dir / REPLACED).is_dir() and training_pid(run_dir) is None:
        with contextlib.suppress(OSError, NanoGPTError), run_lock(run_dir):
            finish_replacement(run_dir)
