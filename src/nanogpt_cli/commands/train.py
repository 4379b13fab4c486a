"""`nanogpt train`: its own options, plus one option per config field, generated from the fields."""

from __future__ import annotations

import functools
import inspect
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from nanogpt_cli.commands import startup_done, use_threads
from nanogpt_cli.commands.complete import complete_dataset, complete_run
from nanogpt_cli.commands.console import byte_progress, err, out
from nanogpt_cli.commands.options import TRAIN_THREADS_HELP
from nanogpt_cli.commands.train_display import TrainDisplay, presets_table, train_summary
from nanogpt_cli.config import KNOBS, RUN
from nanogpt_cli.runinfo import RunSummary

COMPLETIONS = {"dataset": complete_dataset, "init_from": complete_run}  # Tab completes these names


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` one option per config field, after its own parameters, and hand it their values
    as `flags` (None: not given). Typer builds a command's options from its signature, so the
    signature is built here from `config.KNOBS`: a new field becomes a new option by itself."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "flags"]
    generated = []
    for knob in KNOBS.values():
        names = [f"{knob.flag}/--no-{knob.flag[2:]}"] if knob.type is bool else [knob.flag]
        option = typer.Option(None, *names, help=escape(knob.help_with_range), rich_help_panel=knob.panel,
                              show_default=False, autocompletion=COMPLETIONS.get(knob.name))
        generated.append(inspect.Parameter(knob.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                           annotation=Optional[knob.type]))

    names = [p.name for p in generated]

    @functools.wraps(command)
    def with_flags(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in names}
        return command(flags=flags, **kwargs)

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
    with_flags.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_flags


def _relaunch_args() -> list[str]:
    """This command's own arguments without --nproc, for the processes torchrun starts."""
    args, skip = [], False
    for arg in sys.argv[sys.argv.index("train") + 1 :] if "train" in sys.argv else []:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    return args


@config_options
def train(
    flags: dict[str, Any],
    preset: Annotated[
        Optional[str],
        typer.Option(help="Named set of defaults; 'list' shows them. Default: by device.", rich_help_panel=RUN),
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            help="Read settings from this TOML run config (model and train tables; a run folder means its "
                 "config.toml). Flags override it.",
            rich_help_panel=RUN,
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print the resolved config as TOML and exit without training.", rich_help_panel=RUN
        ),
    ] = False,
    run: Annotated[
        Optional[str],
        typer.Option(
            help="Run name (default: <dataset>-<date>-<time>).", rich_help_panel=RUN, autocompletion=complete_run
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue --run (default: the latest run) from its last checkpoint, exactly.",
            rich_help_panel=RUN,
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run of the same name.", rich_help_panel=RUN)
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            min=1, help="Train with N data-parallel processes on this machine (runs torchrun for you).",
            rich_help_panel=RUN,
        ),
    ] = 1,
    sample_tokens: Annotated[
        int, typer.Option(min=0, help="Tokens to sample at the end of the run (0: none).", rich_help_panel=RUN)
    ] = 300,
    threads: Annotated[
        Optional[int],
        typer.Option(min=1, help=TRAIN_THREADS_HELP, show_default=False, rich_help_panel=RUN),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress output; only the summary.", rich_help_panel=RUN)
    ] = False,
) -> None:
    """Train a model; prepares the bundled Tiny Shakespeare first if nothing is prepared yet.

    Each model and training option shows the value this machine's preset gives it.

    [bold]Examples[/]

      nanogpt train

      nanogpt train --n-layer 6 --n-embd 192 --time 5m --run bigger

      nanogpt train --run bigger --resume

      nanogpt train --init-from gpt2 --dataset shakespeare-gpt2 --lr 3e-5 --log tensorboard
    """
    if preset == "list":
        presets_table()
        return
    from nanogpt_cli.config import read_run_file
    from nanogpt_cli.runcontrol import TrainingInterrupted
    from nanogpt_cli.session import Relaunched, TrainOptions, run_training

    use_threads(threads, adapt=False)
    startup_done()
    options = TrainOptions(
        preset, flags, read_run_file(config) if config else None, run, resume, overwrite, nproc, _relaunch_args()
    )
    if print_config:
        from nanogpt_cli.plan import resolved_toml

        sys.stdout.write(resolved_toml(options.preset, options.flags, options.config_file, options.resume, options.run))
        return
    quiet = quiet or os.environ.get("RANK", "0") != "0"  # under torchrun, the first process talks for all
    try:
        with byte_progress(quiet) as progress, TrainDisplay(quiet, preparing=progress) as display:
            summary = run_training(options, display, progress)
    except TrainingInterrupted as stop:
        if stop.main:
            err.print(
                f"[yellow]stopped at iteration {stop.iteration:,}[/]; checkpoint saved to {stop.checkpoint}",
                markup=True,
            )
            err.print(
                f"resume with: nanogpt train --run {stop.run} --resume" + (f" --nproc {nproc}" if nproc > 1 else "")
            )
        raise typer.Exit(130) from None
    if isinstance(summary, Relaunched):
        raise typer.Exit(summary.exit_code)
    if summary is None:  # a process other than the first of several: that one reports
        return
    train_summary(summary)
    if sample_tokens > 0 and _solved_examples(summary):
        return
    if sample_tokens > 0:
        from nanogpt_cli.generate import sample_from_run

        text = sample_from_run(summary.run, prompt=None, max_new_tokens=sample_tokens, seed=summary.seed)
        out.print(f"\n[dim]--- a sample from {summary.run} ---[/]", markup=True)
        sys.stdout.write(text.rstrip("\n") + "\n")
        from nanogpt_cli.dataset import example_prompt

        prompt = example_prompt(summary.dataset)
        more = f"nanogpt sample --run {summary.run}" + (f" --prompt {shlex.quote(prompt)}" if prompt else "")
        out.print("[dim]---[/]\nmore: " + escape(more), markup=True)


def _solved_examples(summary: RunSummary) -> bool:
    """For a run on a task dataset (arithmetic), a few val problems and its answers instead of a sample."""
    from nanogpt_cli.dataset import load_dataset
    from nanogpt_cli.generate import SampleSession
    from nanogpt_cli.tasks import val_examples

    dataset = load_dataset(summary.dataset)
    if dataset.task is None:
        return False
    session = SampleSession.open(summary.run)
    out.print(f"\n[dim]--- {summary.run} answers val problems (greedy) ---[/]", markup=True)
    for problem, expected in val_examples(dataset):
        answer = session.solve(problem)
        out.print(f"{problem}{answer}  " + ("[green]right[/]" if answer == expected else "[red]wrong[/] "
                                                                                         f"({expected})"), markup=True)
    out.print(f"[dim]---[/]\nmore: nanogpt sample --run {summary.run} --prompt {shlex.quote(problem)}; "
              f"accuracy: nanogpt eval --run {summary.run}", markup=True)
    return True
