"""`nanogpt ladder`: the lecture's steps from a bigram table to a transformer, trained one after another."""

from __future__ import annotations

import contextlib
from time import perf_counter as wall_clock
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from nanogpt_cli.commands import startup_done, use_threads
from nanogpt_cli.commands.complete import complete_dataset
from nanogpt_cli.commands.console import byte_progress, duration, err, fmt, out, show_json
from nanogpt_cli.commands.options import DeviceOption, TrainThreadsOption
from nanogpt_cli.commands.train_display import TrainDisplay
from nanogpt_cli.errors import NanoGPTError


def ladder(
    iters: Annotated[Optional[int], typer.Option(min=1, help="Iterations per step.")] = None,
    time: Annotated[
        Optional[str],
        typer.Option(help="Wall-clock time per step instead (90s, 2m): later, bigger steps then get fewer iterations."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="1,000 iterations a step (default: 4,000 on a CPU, 5,000 on a GPU).")
    ] = False,
    dataset: Annotated[
        str,
        typer.Option(
            help="Dataset to train every step on (char Tiny Shakespeare is the lecture's; prepared when missing).",
            autocompletion=complete_dataset,
        ),
    ] = "shakespeare",
    prefix: Annotated[str, typer.Option(help="Runs are named PREFIX-<n>-<step>.")] = "ladder",
    stage: Annotated[Optional[list[int]], typer.Option(help="Train only this step (1-7; repeatable).")] = None,
    device: DeviceOption = "auto",
    threads: TrainThreadsOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace runs of an earlier ladder with the same prefix.")
    ] = False,
    seed: Annotated[
        Optional[int], typer.Option(help="Random seed of every step (default: the lecture preset's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (one object per step).")] = False,
) -> None:
    """Train the lecture's ladder: bigram, one head, multi-head, feed-forward, residual, LayerNorm, scaled.

    Each step is an ordinary run (sample, eval, info, plot work on it) with one option more than the
    one before; the table shows the val loss each reached beside the lecture's.

    [bold]Examples[/]

      nanogpt ladder

      nanogpt ladder --time 2m --prefix long

      nanogpt ladder --iters 5000 --device cuda

      nanogpt plot ladder-1-bigram ladder-4-feed-forward ladder-7-scaled
    """
    from nanogpt_cli.ladder import STAGES, default_iters, estimate, run_ladder
    from nanogpt_cli.runcontrol import TrainingInterrupted

    use_threads(threads, adapt=False)
    startup_done()
    if quick and (iters is not None or time is not None):
        raise NanoGPTError("--quick sets the iterations; leave out --iters and --time")
    if iters is None and time is None:
        iters = default_iters(device, quick)
    chosen = stage or list(range(1, len(STAGES) + 1))
    expected = estimate(iters, chosen, device)  # on the reference machine, a CPU
    results = []
    if not as_json:
        err.print(
            f"[bold]the lecture's ladder[/]: {len(chosen)} step(s) of {time or f'{iters:,} iterations'} each "
            f"on {dataset}" + (f"; about {duration(expected)} on the reference machine (2 idle AVX-512 cores)"
                               if expected else ""),
            markup=True,
        )
    started, warned = wall_clock(), False
    with byte_progress(True) as progress, TrainDisplay(quiet=True) as display:
        steps = run_ladder(dataset, prefix, iters, time, device, overwrite, display, progress, stage, seed)
        while True:
            try:
                with err.status(f"training step {len(results) + 1} ...") if not as_json else contextlib.nullcontext():
                    result = next(steps, None)
            except TrainingInterrupted as stop:  # Ctrl-C or SIGTERM: the step saved its checkpoint
                err.print(f"[yellow]stopped at iteration {stop.iteration:,} of run {stop.run}[/]; checkpoint saved to "
                          f"{stop.checkpoint}; {len(results)} step(s) finished before it", markup=True)
                err.print(f"continue that step with: nanogpt train --run {stop.run} --resume")
                raise typer.Exit(130) from None
            if result is None:
                break
            results.append(result)
            if not as_json:
                err.print(
                    f"{result['stage']}. {result['slug']:<13} {result['change']:<34} val {fmt(result['val_loss'])} "
                    f"(lecture {result['lecture_val_loss']:.2f}), {result['iterations']:,} iterations in "
                    f"{duration(result['seconds'])}"
                )
            if expected and not warned and not as_json and len(results) < len(chosen):
                warned = _slower_than_reference(results, chosen, iters, wall_clock() - started, quick)
    if as_json:
        show_json(results)
        return
    _table(results)


def _slower_than_reference(results: list[dict[str, Any]], chosen: list[int], iters: int, seconds: float,
                           quick: bool) -> bool:
    """Say once, after a step, when this machine runs the ladder much slower than the reference one,
    with the time the rest will take and the quicker ladder; True once said."""
    from nanogpt_cli.ladder import expected_seconds

    done = [r["stage"] for r in results]
    ratio = seconds / expected_seconds(iters, done)
    if ratio < 1.5:
        return False
    rest = ratio * expected_seconds(iters, [n for n in chosen if n not in done])
    hint = "" if quick else "; to compare the steps sooner, stop (Ctrl-C) and run `nanogpt ladder --quick`"
    err.print(f"[yellow]this machine runs the ladder about {ratio:.1f}x slower than the reference one[/] (busy, "
              f"or a slower CPU): the remaining steps take about {duration(rest)}{hint}", markup=True)
    return True


def _table(results: list[dict[str, Any]]) -> None:
    table = Table(title="the ladder (val loss: lower is better)")
    for column in ("step", "what changed", "parameters", "iterations", "val loss", "lecture", "time"):
        table.add_column(column, justify="left" if column in ("step", "what changed") else "right")
    for r in results:
        table.add_row(f"{r['stage']}. {r['slug']}", r["change"], fmt(r["parameters"]), fmt(r["iterations"]),
                      fmt(r["val_loss"]), f"{r['lecture_val_loss']:.2f}", duration(r["seconds"]))
    out.print(table)
    out.print("[dim]the lecture trained each step 5,000 iterations on a GPU (its last one 6x384, block 256); "
              f"see a step: nanogpt sample --run {results[-1]['run']}; compare: nanogpt plot "
              f"{' '.join(r['run'] for r in results[:: max(1, len(results) // 3)])}[/]", markup=True)
