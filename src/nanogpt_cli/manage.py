"""Removing and renaming runs and datasets (`nanogpt rm`, `nanogpt mv`), safely.

Every name goes through the same check as everywhere else (letters, digits, '.', '_', '-'), so `..`,
`/tmp` or `a/b` can never reach a folder outside the runs or datasets folder; a run being trained
(its lock is held) is neither removed nor renamed, nor is a dataset a run is training on. A name that
is a symbolic link loses the link, never what it points to. This module only moves files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nanogpt_cli import paths
from nanogpt_cli.catalog import disk_size, list_runs, read_json
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.runlock import training_pid


def _inside(folder: Path, root: Path) -> Path:
    """`folder`, after checking it sits directly in `root` (names are checked already; this is the
    second lock on the door)."""
    if folder.parent.resolve() != root.resolve() or folder.name in ("", ".", ".."):
        raise NanoGPTError(f"{folder} is not inside {root}; nothing was removed")
    return folder


def run_folder(name: str) -> Path:
    folder = _inside(paths.run_dir(name), paths.runs_dir())
    if not folder.is_dir():
        raise paths.missing("run", name)
    return folder


def dataset_folder(name: str) -> Path:
    folder = _inside(paths.dataset_dir(name), paths.datasets_dir())
    if not folder.is_dir():
        raise paths.missing("dataset", name)
    return folder


def _check_idle(folder: Path) -> None:
    pid = training_pid(folder) if not folder.is_symlink() else None
    if pid is not None:
        raise NanoGPTError(f"run {folder.name!r} is being trained now (pid {pid}); stop it first (Ctrl-C), then try "
                           "again")


def _delete(folder: Path) -> int:
    size = disk_size(folder) if not folder.is_symlink() else 0
    if folder.is_symlink():
        folder.unlink()  # the link only, never where it points
    else:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise NanoGPTError(f"cannot remove {folder}: {exc.strerror or exc}") from None
    return size


def remove_runs(names: list[str]) -> int:
    """Remove runs (all checked before any is removed); returns the bytes freed."""
    folders = [run_folder(name) for name in names]
    for folder in folders:
        _check_idle(folder)
    return sum(_delete(folder) for folder in folders)


def dataset_users(name: str) -> list[str]:
    """Runs trained on dataset `name` (whose --resume and eval read it)."""
    return [run["name"] for run in list_runs() if run["dataset"] == name]


def remove_datasets(names: list[str]) -> int:
    folders = [dataset_folder(name) for name in names]
    for folder in folders:
        for run in dataset_users(folder.name):
            pid = training_pid(paths.run_dir(run))
            if pid is not None:
                raise NanoGPTError(f"dataset {folder.name!r} is what run {run!r} is training on now (pid {pid}); "
                                   "stop it first, then try again")
    return sum(_delete(folder) for folder in folders)


def rename_run(old: str, new: str) -> Path:
    """Rename a run; its config.json learns the new name and folder."""
    source = run_folder(old)
    target = _inside(paths.run_dir(new), paths.runs_dir())
    if target.exists() or target.is_symlink():
        raise NanoGPTError(f"run {new!r} already exists; choose another name, or remove it first with `nanogpt rm "
                           f"{new}`")
    _check_idle(source)
    try:
        os.rename(source, target)
    except OSError as exc:
        raise NanoGPTError(f"cannot rename {source} to {target}: {exc.strerror or exc}") from None
    # A run that is a link to a folder elsewhere: the link is renamed, and what it points to is left alone.
    config = None if target.is_symlink() else read_json(target / "config.json")
    if config is not None:
        config.update(run=new, run_dir=str(target))
        with paths.open_own(target / "config.json", "w") as f:
            f.write(json.dumps(config, indent=2) + "\n")
    return target
