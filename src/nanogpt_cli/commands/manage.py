"""`nanogpt rm` and `nanogpt mv`: remove or rename runs (and remove datasets)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from nanogpt_cli.commands.complete import complete_name, complete_run
from nanogpt_cli.commands.console import err, out, size
from nanogpt_cli.errors import NanoGPTError


def rm(
    names: Annotated[list[str], typer.Argument(metavar="NAME", autocompletion=complete_name, show_default=False,
                                               help="Runs to remove (datasets with --dataset).")],
    dataset: Annotated[bool, typer.Option("--dataset", help="The names are prepared datasets, not runs.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove runs (or, with --dataset, prepared datasets) from the data folder, after asking.

    A run that is training now, or a dataset a run is training on, is refused. Only folders inside the
    runs or datasets folder are ever removed.

    [bold]Examples[/]

      nanogpt rm old-run

      nanogpt rm try-1 try-2 --yes

      nanogpt rm --dataset notes
    """
    from nanogpt_cli.catalog import disk_size
    from nanogpt_cli.manage import dataset_folder, dataset_users, remove_datasets, remove_runs, run_folder

    what = "dataset" if dataset else "run"
    folders = [(dataset_folder if dataset else run_folder)(name) for name in names]
    if not yes:
        for folder in folders:
            users = dataset_users(folder.name) if dataset else []
            note = (
                f"; runs {', '.join(users)} were trained on it (their --resume and eval will need it)" if users else ""
            )
            err.print(f"{what} {folder.name}: {folder} ({size(disk_size(folder))}){note}")
        try:
            sure = typer.confirm(f"remove {len(folders)} {what}(s)?", default=False, err=True)
        except (typer.Abort, EOFError):  # no answer: stdin closed or not a terminal
            err.print()  # the question's line ends here, not in the middle of the error
            raise NanoGPTError(
                "nothing removed: no answer to the question; pass --yes to remove without asking"
            ) from None
        if not sure:  # the user's own choice: not an error
            err.print(("" if sys.stdin.isatty() else "\n") + "nothing removed")  # a piped answer is not echoed
            return
    freed = remove_datasets(names) if dataset else remove_runs(names)
    out.print(f"removed {len(folders)} {what}(s): {', '.join(f.name for f in folders)} ({size(freed)} freed)")


def mv(
    old: Annotated[
        str, typer.Argument(metavar="OLD", autocompletion=complete_run, show_default=False, help="The run's name now.")
    ],
    new: Annotated[str, typer.Argument(metavar="NEW", show_default=False, help="Its new name.")],
) -> None:
    """Rename a run (refused while it trains, or when NEW exists).

    [bold]Examples[/]

      nanogpt mv shakespeare-20261123-101500 baseline
    """
    from nanogpt_cli.manage import rename_run

    target = rename_run(old, new)
    out.print(f"renamed run {old} to {new} ({target})")

