"""`nanogpt info [NAME]`: the machine, folders, datasets and runs; or one run or dataset."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from nanogpt_cli.commands.render import dataset_info, run_info, show_json, system_info


def info(
    name: Annotated[Optional[str], typer.Argument(help="A run (or dataset) to show in detail.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Version, devices, folders, prepared datasets and runs; or one run's config and metrics."""
    from nanogpt_cli.catalog import describe_item, describe_system

    if name is not None:
        item = describe_item(name)
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
