"""`nanogpt info [NAME ...]`: the machine, folders, datasets and runs; one run or dataset; or runs side by side."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from nanogpt_cli.commands.complete import complete_name
from nanogpt_cli.commands.console import show_json
from nanogpt_cli.commands.info_display import compare_table, dataset_info, run_info, system_info
from nanogpt_cli.errors import NanoGPTError


def info(
    names: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="NAME",
            autocompletion=complete_name,
            show_default=False,
            help="A run or dataset to show in detail; two or more runs to compare.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print one run's metrics (every logged line) as CSV.")] = False,
) -> None:
    """Version, devices, folders, datasets and runs (with their size on disk); one run or dataset in
    detail; or several runs side by side.

    [bold]Examples[/]

      nanogpt info

      nanogpt info my-run

      nanogpt info small big --json

      nanogpt info my-run --csv > my-run.csv
    """
    from nanogpt_cli.catalog import compare_runs, describe_system, metrics_csv
    from nanogpt_cli.dataset import describe_item

    names = names or []
    if as_csv:
        if len(names) != 1:
            raise NanoGPTError("--csv prints one run's metrics: give exactly one run name")
        sys.stdout.write(metrics_csv(names[0]))
        return
    if len(names) > 1:
        comparison = compare_runs(names)
        show_json(comparison) if as_json else compare_table(comparison)
        return
    if names:
        item = describe_item(names[0])
        if as_json:
            show_json(item)
        elif item["type"] == "run":
            run_info(item)
        else:
            dataset_info(item)
        return
    system = describe_system()
    if as_json:
        show_json(system)
        return
    system_info(system)
