"""Where nanogpt keeps its files on disk.

Per-user data (datasets, runs) and cache (tiktoken rank files) directories come from platformdirs.
Setting NANOGPT_HOME puts everything under one folder instead: data in $NANOGPT_HOME and cache in
$NANOGPT_HOME/cache. Nothing here creates directories except `ensure_dir`.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
from pathlib import Path

import platformdirs

from nanogpt_cli.errors import NanoGPTError

APP_NAME = "nanogpt-cli"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _home() -> Path | None:
    home = os.environ.get("NANOGPT_HOME")
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    home = _home()
    return home if home else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def datasets_dir() -> Path:
    return data_dir() / "datasets"


def runs_dir() -> Path:
    return data_dir() / "runs"


def tiktoken_cache_dir() -> Path:
    """Where tiktoken rank files live, unless the user set TIKTOKEN_CACHE_DIR themselves."""
    return Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir() / "tiktoken")


def safe_name(text: str) -> str:
    """`text` made into a valid name: other characters become '-' (how prepare names a dataset)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:100].rstrip("-._")
    return name or "data"


def check_name(name: str, what: str) -> str:
    """Dataset and run names become folder names: keep them to safe characters."""
    if not _NAME_RE.match(name):
        raise NanoGPTError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' and '-' "
            f"(starting with a letter or digit, at most 100 characters); did you mean {safe_name(name)!r}?"
        )
    return name


def dataset_dir(name: str) -> Path:
    return datasets_dir() / check_name(name, "dataset")


def run_dir(name: str) -> Path:
    return runs_dir() / check_name(name, "run")


def closest(name: str, names: list[str] | tuple[str, ...]) -> str:
    """"; did you mean 'X'?" for the one of `names` closest to a name that was not found, ignoring
    case; "" when none is close."""
    by_lower = {n.lower(): n for n in sorted(names)}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def did_you_mean(name: str, folder: Path) -> str:
    """`closest` among the entries of `folder` (the runs or the datasets)."""
    try:
        return closest(name, [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")])
    except OSError:
        return ""


def missing(kind: str, name: str) -> NanoGPTError:
    """The error for a run or dataset (`kind`) that does not exist, with the closest name there is."""
    folder = runs_dir() if kind == "run" else datasets_dir()
    return NanoGPTError(f"{kind} {name!r} does not exist{did_you_mean(name, folder)} (`nanogpt info` lists the "
                        f"{kind}s)")


def ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NanoGPTError(
            f"cannot create directory {path}: {exc.strerror or exc}; "
            "set NANOGPT_HOME to a writable folder"
        ) from exc
    return path


def check_own(path: Path) -> Path:
    """`path`, a file nanogpt writes inside a run or dataset folder, unless it is a symbolic link (a link
    there could point anywhere, and writing through it would change a file outside the folder) or
    something else that is not a regular file (a folder, a FIFO)."""
    if os.path.islink(path):
        raise _link_error(path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise NanoGPTError(f"{path} is not a regular file; nanogpt keeps its own files there: move it away")
    return path


def _link_error(path: Path) -> NanoGPTError:
    return NanoGPTError(f"{path} is a symbolic link; nanogpt writes only files of its own in run and dataset "
                        "folders: remove the link (its target is left alone)")


def open_own(path: Path, mode: str):
    """Open such a file for writing ("w", "a" or "a+"), never through a symbolic link (O_NOFOLLOW, where
    the OS has it, also catches a link made after the check)."""
    flags = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode]
    try:
        fd = os.open(check_own(path), flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link made since the check
            raise _link_error(path) from None
        raise
    return os.fdopen(fd, mode, encoding="utf-8")
