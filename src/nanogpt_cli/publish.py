"""The dataset folder's format (its version, the token dtype) and publishing one: the one way a
prepared dataset (text or task) takes its name.

The caller builds the whole folder under a temporary name beside its final place (`staging_dir`);
`publish` then refuses to swap different tokens under runs that were trained on the old ones, moves the
old folder aside, renames the new one into place and removes the old one. An interrupted prepare
therefore never leaves a dataset that looks complete, and a failed one leaves the old dataset as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from nanogpt_cli import paths
from nanogpt_cli.catalog import check_replaceable
from nanogpt_cli.errors import NanoGPTError

META_VERSION = 1  # meta.json's format_version; a reader refuses a newer one
TOKEN_DTYPES = ("uint16", "uint32")  # the only ones a token file is written in


def token_dtype(vocab_size: int) -> np.dtype:
    """nanoGPT's token files: uint16 when the vocabulary fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def staging_dir(name: str) -> Path:
    """An empty folder beside the dataset's final place, to build it in."""
    tmp_dir = paths.ensure_dir(paths.datasets_dir()) / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    return tmp_dir


def publish(tmp_dir: Path, name: str, overwrite: bool = False) -> Path:
    """Put the finished folder `tmp_dir` in place as dataset `name`; returns its final path. Without
    `overwrite`, a dataset that another command published meanwhile (two prepares of one name at
    once) is kept and this one refused, never silently replaced."""
    final_dir = paths.dataset_dir(name)
    old_dir = final_dir.with_name(f".{name}.old-{os.getpid()}")
    meanwhile = NanoGPTError(f"dataset {name!r} was prepared by another command meanwhile; it is kept and this one "
                             "was not: pass --overwrite to replace it, or --name to prepare under another name")
    if final_dir.exists():
        if not overwrite and (final_dir / "meta.json").is_file():
            raise meanwhile
        check_replaceable(final_dir, tmp_dir)  # never swap other tokens under runs trained on these
        final_dir.rename(old_dir)
    try:
        tmp_dir.rename(final_dir)  # fails if another one took the name since the check above
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        raise meanwhile from None
    shutil.rmtree(old_dir, ignore_errors=True)
    return final_dir
