"""`nanogpt import SOURCE`: a run made from weights trained elsewhere (GPT-2, nanoGPT, a GPT-2-layout folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nanogpt_cli.commands import startup_done
from nanogpt_cli.commands.console import byte_progress, err, fmt, out


def import_(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="gpt2, gpt2-medium, gpt2-large or gpt2-xl (downloaded once); a folder "
            "with config.json + model.safetensors; or a nanoGPT ckpt.pt (or its folder).",
        ),
    ],
    run: Annotated[
        Optional[str], typer.Option(help="Name of the new run (default: the GPT-2 size, or the source's folder name).")
    ] = None,
    meta: Annotated[
        Optional[Path],
        typer.Option(
            help="nanoGPT's meta.pkl for a character-level checkpoint (default: "
            "beside ckpt.pt, or data/<dataset>/meta.pkl of its repository)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run of the same name.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No download progress bar.")] = False,
) -> None:
    """Make a run from weights trained elsewhere; sample, eval, info, export and train --init-from then use it.

    [bold]Examples[/]

      nanogpt import gpt2 && nanogpt sample --run gpt2 --prompt "The meaning of life is"

      nanogpt import ~/nanoGPT/out-shakespeare-char --run nano-char

      nanogpt import ./exported-folder --run copy
    """
    from nanogpt_cli.pretrained import default_run_name, import_run, load_source
    from nanogpt_cli.tokenizer import spec_name

    startup_done()
    name = run or default_run_name(source)
    with byte_progress(quiet) as progress:
        found = load_source(source, meta, progress)
    info = import_run(found, name, overwrite)
    config = found.config
    err.print(
        f"[dim]tokenizer {spec_name(found.tokenizer)}, {config.n_layer} layers, "
        f"{config.n_head} heads, {config.n_embd} wide, block {config.block_size}[/]",
        markup=True,
    )
    out.print(
        f"imported {found.description} as run [bold]{name}[/] ({fmt(info['parameters'])} parameters); "
        f"try: nanogpt sample --run {name}",
        markup=True,
    )
