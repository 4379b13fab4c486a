"""`nanogpt export RUN PATH`: a run's weights in the GPT-2 layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nanogpt_cli.commands import startup_done
from nanogpt_cli.commands.complete import complete_run
from nanogpt_cli.commands.console import out
from nanogpt_cli.errors import NanoGPTError


def export(
    run: Annotated[str, typer.Argument(metavar="RUN", help="The run to export.", autocompletion=complete_run)],
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Folder to write config.json and model.safetensors into.")
    ],
    format: Annotated[str, typer.Option("--format", help="Only 'hf': the Hugging Face GPT-2 layout.")] = "hf",
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Export into a folder that is not empty: config.json and model.safetensors "
                                         "are replaced, nothing else in it is touched."),
    ] = False,
) -> None:
    """Write a run's weights in the GPT-2 layout (config.json + model.safetensors) for other tools.

    [bold]Examples[/]

      nanogpt export my-run ./my-model

      nanogpt export my-run ./my-model --checkpoint last
    """
    import torch

    from nanogpt_cli.catalog import resolve_run
    from nanogpt_cli.checkpoint import checkpoint_path, load_model
    from nanogpt_cli.export import check_target, export_hf

    startup_done()
    if format != "hf":
        raise NanoGPTError(f"unknown export format {format!r}: use hf")
    source = checkpoint_path(resolve_run(run), checkpoint)
    check_target(path, overwrite)
    loaded = load_model(source, torch.device("cpu"))
    written = export_hf(loaded.model, loaded.config, loaded.checkpoint["tokenizer"], path)
    out.print(f"exported {run} ({loaded.path.name}) to {', '.join(str(p) for p in written)}")
