"""`nanogpt plot [RUN ...]`: loss curves in the terminal (plotext), or into a PNG/SVG file (matplotlib)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from nanogpt_cli.commands.complete import complete_run
from nanogpt_cli.commands.console import out

# Without colour the curves are told apart by their marker; the legend shows which is which.
MARKERS = ["braille", "dot", "x", "+", "o", "*", "$", "#"]


def plot(
    runs: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="RUN",
            help="Runs to draw together (default: the latest).",
            autocompletion=complete_run,
            show_default=False,
        ),
    ] = None,
    x: Annotated[
        str, typer.Option("--x", help="What the x axis counts: iter, tokens or time (seconds of training).")
    ] = "iter",
    out_file: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="Write the picture to this .png or .svg file (needs the \\[plot] extra: matplotlib)."
        ),
    ] = None,
    width: Annotated[int, typer.Option(help="Picture width in pixels (--out).")] = 1000,
    height: Annotated[int, typer.Option(help="Picture height in pixels (--out).")] = 600,
) -> None:
    """Draw train and val loss of one or more runs: in the terminal, or into a PNG/SVG with --out.

    In a pipe or file it prints the evaluations as a table instead. Colours follow NO_COLOR.

    [bold]Examples[/]

      nanogpt plot

      nanogpt plot small big --x time

      nanogpt plot small big --out docs/loss.png --width 1200 --height 600
    """
    from nanogpt_cli.plots import X_AXES, loss_curves, save_figure

    losses = loss_curves(runs, x)
    if out_file is not None:
        written = save_figure(losses, out_file, x, width, height)
        out.print(f"wrote {written} ({width} x {height} px)")
        return
    if not sys.stdout.isatty():
        _table(losses, x)
        return
    import plotext

    color = not os.environ.get("NO_COLOR")
    columns, lines = shutil.get_terminal_size((100, 30))
    plotext.clf()
    for i, curve in enumerate(curve for run in losses for curve in run.curves):
        plotext.plot(curve.x, curve.y, label=curve.label, marker="braille" if color else MARKERS[i % len(MARKERS)])
    plotext.plotsize(max(40, columns - 1), max(12, min(lines - 2, 30)))
    plotext.theme("clear")
    plotext.xlabel(X_AXES[x])
    plotext.ylabel("loss")
    picture = plotext.build()
    if not color:
        picture = re.sub(r"\x1b\[[0-9;]*m", "", picture)
    sys.stdout.write(picture.rstrip() + "\n")


def _table(losses, x: str) -> None:
    """Each run's evaluations (train and val loss estimated on the same batches), for pipes and files."""
    table = Table(box=None, show_header=True, pad_edge=False)
    for column in ("run", x, "train loss", "val loss"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for run in losses:
        for position, train_loss, val_loss in run.evals:
            table.add_row(run.run, f"{position:g}", f"{train_loss:.4f}", f"{val_loss:.4f}")
        if not run.evals:
            table.add_row(run.run, "-", "(no evaluation yet)", "-")
    out.print(table)
