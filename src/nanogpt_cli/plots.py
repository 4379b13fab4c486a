"""Loss curves of runs, from their metrics.jsonl: the data `nanogpt plot` draws, and the picture file.

`loss_curves(runs, x)` reads each run's logged training loss (every log interval) and validation
loss (every evaluation) against iterations, tokens seen or training time. `save_figure` draws them
with matplotlib (the optional `[plot]` extra) into a PNG or SVG of a given size in pixels. The
terminal picture is drawn by the command layer. This module never trains and never prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt_cli.catalog import read_metrics, read_run_config, resolve_run
from nanogpt_cli.errors import NanoGPTError

X_AXES = {"iter": "iteration", "tokens": "tokens seen", "time": "training time (s)"}


@dataclass
class Curve:
    run: str
    kind: str  # "train" or "val"
    x: list[float]
    y: list[float]

    @property
    def label(self) -> str:
        return f"{self.run} {self.kind}"


def _tokens_per_iteration(config: dict[str, Any]) -> int:
    train, model = config.get("train_config", {}), config.get("model_config", {})
    return int(train.get("batch_size", 0)) * int(model.get("block_size", 0)) * int(train.get("grad_accum", 1))


def _x_values(
    rows: list[dict[str, Any]], x: str, config: dict[str, Any], clock: tuple[list[int], list[float]]
) -> list[float]:
    iters = [float(r["iter"]) for r in rows]
    if x == "iter":
        return iters
    if x == "tokens":
        return [i * _tokens_per_iteration(config) for i in iters]
    # time: rows that carry "elapsed" say it; others (train rows of older runs) are placed between the
    # iterations whose time is known
    known_iters, known_times = clock
    return [
        float(r["elapsed"]) if "elapsed" in r else float(np.interp(r["iter"], known_iters, known_times)) for r in rows
    ]


@dataclass
class RunLosses:
    """One run's curves, and its evaluations as (x, train loss, val loss) rows for a table."""

    run: str
    curves: list[Curve]
    evals: list[tuple[float, float, float]]


def run_losses(name: str | None, x: str = "iter") -> RunLosses:
    """The train and val loss curves of one run (the latest run when `name` is None)."""
    if x not in X_AXES:
        raise NanoGPTError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    run_dir = resolve_run(name)
    config = read_run_config(run_dir / "config.json") or {}
    rows = read_metrics(run_dir)
    train = [r for r in rows if r.get("kind") == "train" and "loss" in r]
    val = [r for r in rows if r.get("kind") == "eval" and "val_loss" in r]
    if not train and not val:
        raise NanoGPTError(f"run {run_dir.name!r} has no logged losses yet: nothing to plot until it has trained "
                           "for a log interval (see `nanogpt info`)")
    timed = sorted({r["iter"]: r["elapsed"] for r in rows if "elapsed" in r}.items())
    clock = ([i for i, _ in timed] or [0], [t for _, t in timed] or [0.0])
    curves = []
    for kind, points, key in (("train", train, "loss"), ("val", val, "val_loss")):
        if points:
            curves.append(
                Curve(run_dir.name, kind, _x_values(points, x, config, clock), [float(r[key]) for r in points])
            )
    evals = [(position, float(r["train_loss"]), float(r["val_loss"]))
             for position, r in zip(_x_values(val, x, config, clock), val, strict=True)]
    return RunLosses(run_dir.name, curves, evals)


def loss_curves(names: list[str] | None, x: str = "iter") -> list[RunLosses]:
    """The losses of the named runs (the latest run when none are named), in the order given."""
    return [run_losses(name, x) for name in names or [None]]


def save_figure(losses: list[RunLosses], path: Path, x: str = "iter", width: int = 1000, height: int = 600) -> Path:
    """Draw the runs' curves into a PNG or SVG file `width` x `height` pixels large."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise NanoGPTError(f"--out {path}: give a file name ending in .png or .svg")
    if width < 100 or height < 100:
        raise NanoGPTError(f"--width and --height must be at least 100 pixels, got {width} x {height}")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, no display needed
        from matplotlib import pyplot
    except ImportError:
        raise NanoGPTError('writing a picture needs matplotlib: pip install "nanogpt-cli[plot]"') from None
    dpi = 100
    figure, axes = pyplot.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        colors = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
        runs = [run.run for run in losses]
        for curve in (curve for run in losses for curve in run.curves):
            color = colors[runs.index(curve.run) % len(colors)]  # one color per run; val dashed with markers
            style = (
                dict(linewidth=1.0, alpha=0.7)
                if curve.kind == "train"
                else dict(linewidth=2.0, linestyle="--", marker="o", markersize=3)
            )
            axes.plot(curve.x, curve.y, color=color, label=curve.label if len(runs) > 1 else curve.kind, **style)
        axes.set_xlabel(X_AXES[x])
        axes.set_ylabel("loss (nats per token)")
        axes.set_title("loss: " + ", ".join(runs))
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        try:
            figure.savefig(path, dpi=dpi, format=path.suffix.lower().lstrip("."))
        except OSError as exc:
            raise NanoGPTError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        pyplot.close(figure)
    return path
