"""`nanogpt eval`: loss, perplexity and bits per character of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from nanogpt_cli.commands import startup_done, use_threads
from nanogpt_cli.commands.complete import complete_dataset, complete_run
from nanogpt_cli.commands.console import byte_progress, fmt, out, show_json, token_progress
from nanogpt_cli.commands.options import DeviceOption, ThreadsOption, WeightsDtypeOption
from nanogpt_cli.config import range_help
from nanogpt_cli.errors import NanoGPTError


def eval_(
    run: Annotated[
        Optional[str], typer.Option(help="Run to evaluate (default: the latest).", autocompletion=complete_run)
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    split: Annotated[str, typer.Option(help="Dataset split: val or train.")] = "val",
    iters: Annotated[
        Optional[int],
        typer.Option(
            help="Random batches to average (default: every token of the split once, when that is fewer tokens than "
                 "200 batches hold; ignored with --full or --text-file)." + range_help("iters"),
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per batch." + range_help("batch_size"))] = 32,
    full: Annotated[bool, typer.Option("--full", help="Evaluate every token of the split once.")] = False,
    text_file: Annotated[
        Optional[Path], typer.Option(help="Evaluate on this UTF-8 text file instead (every token).")
    ] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option(
            help="Evaluate on this prepared dataset (default: the one the run trained on).",
            autocompletion=complete_dataset,
        ),
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    dtype: WeightsDtypeOption = "auto",
    quantize: Annotated[
        Optional[str],
        typer.Option(help="int8: int8 block weights on the CPU; shows the float32 loss beside, on the same tokens."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for choosing the random batches.")] = 1337,
    task: Annotated[
        Optional[str],
        typer.Option(help="hellaswag: accuracy on HellaSwag's validation set (downloaded once), scored as in "
                          "'Let's reproduce GPT-2'; instead of the loss."),
    ] = None,
    limit: Annotated[
        Optional[int], typer.Option(help="With --task: only the first N examples.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Loss, perplexity and bits per character (or token) of a trained run.

    [bold]Examples[/]

      nanogpt eval

      nanogpt eval --run gpt2 --text-file essay.txt

      nanogpt eval --quantize int8

      nanogpt eval --run gpt2 --task hellaswag --limit 500
    """
    from nanogpt_cli.evaluate import evaluate, evaluate_task

    use_threads(threads, adapt=True)
    startup_done()
    if task is not None or limit is not None:
        if task is None:
            raise NanoGPTError("--limit goes with --task (e.g. --task hellaswag --limit 500)")
        if text_file is not None or dataset is not None or full or quantize:
            raise NanoGPTError(f"--task {task} brings its own examples: leave out --text-file, --dataset, --full and "
                               "--quantize")
        with byte_progress(quiet) as downloading, token_progress(quiet, "examples") as progress:
            result = evaluate_task(task=task, run=run, checkpoint=checkpoint, limit=limit, device=device, dtype=dtype,
                                   download_progress=downloading, progress=progress)
        if as_json:
            show_json(result)
            return
        table = Table(title=f"{result['run']} ({result['checkpoint']}) on HellaSwag (validation, completion style)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_row("acc_norm (lowest mean loss)", f"{result['acc_norm']:.2%}")
        table.add_row("acc (lowest summed loss)", f"{result['acc']:.2%}")
        table.add_row("examples", fmt(result["examples"]))
        if result["skipped"]:
            table.add_row("skipped (characters outside the vocabulary)", fmt(result["skipped"]))
        out.print(table)
        return
    with token_progress(quiet) as progress:
        result = evaluate(run=run, checkpoint=checkpoint, split=split, iters=iters, batch_size=batch_size, full=full,
                          text_file=text_file, device=device, seed=seed, dataset=dataset, dtype=dtype,
                          quantize=quantize, progress=progress)
    if as_json:
        show_json(result)
        return
    every = result.get("every_token")  # absent for arithmetic tasks: every problem counts
    how = "" if every is None else ", every token" if every else f", {result['batches']} random batches"
    table = Table(title=f"{result['run']} ({result['checkpoint']}) on {result['source']}{how}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "problems", "loss", "float32_loss", "quantize_cost", "perplexity", "bits_per_char",
                "bits_per_token", "tokens"):
        if key in result:
            label = {
                "loss": f"loss ({result['quantize']})" if result.get("quantize") else "loss",
                "float32_loss": "loss (float32)",
                "quantize_cost": f"{result.get('quantize')} costs",
            }.get(key, key)
            value = f"{result[key]:.2%}" if key == "accuracy" else f"{result[key]:+.4f}" if key == "quantize_cost" \
                else fmt(result[key])
            table.add_row(label.replace("_", " ") + (" (exact answers)" if key == "accuracy" else ""), value)
    out.print(table)
