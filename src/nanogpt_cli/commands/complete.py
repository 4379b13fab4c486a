"""Shell completion of run and dataset names (`nanogpt --install-completion` turns it on).

These run on every Tab press, so they only list folder names: no torch, no JSON beyond a stat.
"""

from __future__ import annotations

from nanogpt_cli import paths


def _names(root, marker: str, incomplete: str) -> list[str]:
    try:
        return sorted(d.name for d in root.iterdir() if d.name.startswith(incomplete) and (d / marker).is_file())
    except OSError:
        return []


def complete_run(incomplete: str) -> list[str]:
    return _names(paths.runs_dir(), "config.json", incomplete)


def complete_dataset(incomplete: str) -> list[str]:
    return _names(paths.datasets_dir(), "meta.json", incomplete)


def complete_name(incomplete: str) -> list[str]:
    """A run or a dataset (what `nanogpt info NAME` takes)."""
    return sorted(set(complete_run(incomplete)) | set(complete_dataset(incomplete)))
