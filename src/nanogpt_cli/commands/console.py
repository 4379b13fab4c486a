"""What every command shows with: the two consoles, number and size formats, JSON output and the
progress bars. Results (text, tables, JSON) go to stdout and progress and status to stderr, so
output pipes cleanly. train_display.py and info_display.py draw the bigger views.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

from rich.console import Console

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def show_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def size(n_bytes: int | None) -> str:
    """Bytes for people: 812 B, 4.1 MiB, 1.20 GiB."""
    if n_bytes is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n_bytes} B"


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ------------------------------------------------------------------------------------------ progress


def byte_progress(quiet: bool):
    """A progress callback (stage, done, total) drawing one bar per stage with bytes, speed and ETA on
    a terminal; a no-op otherwise (a context manager). Its `finish()` clears the bars before the
    context ends (e.g. once the automatic prepare is done, before the training bar appears)."""
    return _stage_progress(quiet, "bytes", {"download": "downloading", "scan": "reading", "scan val": "reading val",
                                            "tokenize": "tokenizing"})


def token_progress(quiet: bool, unit: str = "tokens"):
    """The same for work counted in tokens (eval), or in another `unit`: done of all, per second and ETA."""
    return _stage_progress(quiet, unit, {})


class _NoBars:
    def __call__(self, stage: str, done: int, total: int) -> None:
        pass

    def finish(self) -> None:
        pass


@contextlib.contextmanager
def _stage_progress(quiet: bool, unit: str, labels: dict[str, str]):
    if quiet or not err.is_terminal:
        yield _NoBars()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    class TokenSpeed(ProgressColumn):
        def render(self, task):
            return f"{task.speed:,.0f} {unit}/s" if task.speed else ""

    amount = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn(), TokenSpeed()]
    with Progress(TextColumn("[bold blue]{task.description:<12}"), BarColumn(), *amount, TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        class Bars(_NoBars):
            def __init__(self) -> None:
                self.tasks: dict[str, Any] = {}

            def __call__(self, stage: str, done: int, total: int) -> None:
                if stage not in self.tasks:
                    self.tasks[stage] = bar.add_task(labels.get(stage, stage), total=total or None)
                bar.update(self.tasks[stage], completed=done, total=total or None)

            def finish(self) -> None:
                bar.stop()  # transient: the finished bars are erased

        yield Bars()


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"
