"""`nanogpt export RUN PATH`: a run for transformers (`--format hf`) or llama.cpp / Ollama (`--format gguf`)."""

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
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Folder to write the exported files into.")],
    format: Annotated[
        str, typer.Option("--format", help="hf: a transformers folder (config.json, model.safetensors, "
                                           "tokenizer.json); gguf: model.gguf and an Ollama Modelfile.")
    ] = "hf",
    dtype: Annotated[str, typer.Option(help="Weights as float32, float16 or bfloat16.")] = "float32",
    quantize: Annotated[
        str | None, typer.Option(help="q8_0: GGUF weights in llama.cpp's 8-bit blocks (--format gguf).")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Export into a folder that is not empty: the exported files are replaced, "
                                         "nothing else in it is touched."),
    ] = False,
) -> None:
    """Write a run for the tools people run models in: transformers (GPT-2, Llama, Qwen3 or Arcee, whichever
    computes exactly this model) or one GGUF file for llama.cpp, Ollama and LM Studio.

    [bold]Examples[/]

      nanogpt export my-run ./my-model

      nanogpt export my-run ./my-gguf --format gguf && ollama create my-run -f ./my-gguf/Modelfile
    """
    import torch

    from nanogpt_cli.catalog import resolve_run
    from nanogpt_cli.checkpoint import checkpoint_path, load_model
    from nanogpt_cli.export import DTYPES, FORMATS, check_target
    from nanogpt_cli.export import export as write

    startup_done()
    if format not in FORMATS:
        raise NanoGPTError(f"unknown export format {format!r}: use hf (transformers) or gguf (llama.cpp, Ollama)")
    if dtype not in DTYPES:
        raise NanoGPTError(f"unknown --dtype {dtype!r}: use float32, float16 or bfloat16")
    if quantize not in (None, "q8_0"):
        raise NanoGPTError(f"unknown --quantize {quantize!r}: GGUF export writes q8_0")
    source = checkpoint_path(resolve_run(run), checkpoint)
    check_target(path, overwrite)
    loaded = load_model(source, torch.device("cpu"))
    tokenizer = loaded.checkpoint["tokenizer"]
    layout, written = write(loaded.model, loaded.config, tokenizer, path, format, dtype, quantize, run)
    out.print(f"exported {run} ({loaded.path.name}) as {layout.name} to {', '.join(str(p) for p in written)}")
    if format == "hf" and not any(p.name == "tokenizer.json" for p in written):
        out.print("no tokenizer.json: only the char, gpt2 and bpe:N tokenizers are exported; the tokenizer spec is "
                  "in config.json under nanogpt")
