"""`nanogpt prepare SOURCE`: text into a dataset."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from nanogpt_cli.commands import startup_done
from nanogpt_cli.commands.console import byte_progress, out
from nanogpt_cli.commands.info_display import char_coverage


def prepare(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="'shakespeare' (bundled Tiny Shakespeare), a UTF-8 text file, a .jsonl or .parquet file of records "
                 "(one document each), a folder of them, an http(s) URL, hf:OWNER/NAME[@REVISION] (a dataset on the "
                 "Hugging Face Hub), or 'addition' (arithmetic problems).",
        ),
    ],
    tokenizer: Annotated[
        str, typer.Option(help="char, gpt2, or any tiktoken encoding (r50k_base, p50k_base, cl100k_base, o200k_base).")
    ] = "char",
    name: Annotated[
        Optional[str], typer.Option(help="Dataset name (default: from the source, plus the tokenizer if not char).")
    ] = None,
    val_fraction: Annotated[float, typer.Option(help="Fraction of the text, at the end, kept for validation.")] = 0.1,
    val_file: Annotated[
        Optional[str], typer.Option(help="Use this text file (or folder, or URL) as the validation split instead.")
    ] = None,
    glob: Annotated[str, typer.Option(help="For a folder: which files to read (recursively), e.g. '*.md'.")] = "*",
    subset: Annotated[
        Optional[str], typer.Option(help="For hf:OWNER/NAME: the subset (config) to read, e.g. sample-10BT.")
    ] = None,
    split: Annotated[
        Optional[str], typer.Option(help="For hf:OWNER/NAME: the split to train on (default train).",
                                    show_default=False)
    ] = None,
    max_tokens: Annotated[
        Optional[int],
        typer.Option(help="Only the first N tokens of the source (the last --val-fraction of them val); the rest "
                          "is not read.", show_default=False),
    ] = None,
    text_field: Annotated[
        str, typer.Option(help="For .jsonl and .parquet files: the field (column) holding each record's text.")
    ] = "text",
    sha256: Annotated[Optional[str], typer.Option(help="For a URL: the expected SHA-256 of the download.")] = None,
    max_vocab: Annotated[
        Optional[int],
        typer.Option(
            help="Char tokenizer: keep at most N tokens, the most frequent characters plus one unknown token for "
                 "all the others."
        ),
    ] = None,
    min_count: Annotated[
        int, typer.Option(help="Char tokenizer: characters seen fewer than K times become the unknown token.")
    ] = 1,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing dataset of the same name (refused if resumable runs trained on it and the "
                 "tokens change).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    digits: Annotated[int, typer.Option(help="addition: digits of each operand.", rich_help_panel="Addition")] = 3,
    ops: Annotated[
        str, typer.Option(help="addition: the operations, some of + - * (e.g. +-*).", rich_help_panel="Addition")
    ] = "+",
    reverse: Annotated[
        bool,
        typer.Option(
            "--reverse/--no-reverse",
            help="addition: write answers least significant digit first (as carries are computed).",
            rich_help_panel="Addition",
        ),
    ] = True,
    reverse_operands: Annotated[
        bool,
        typer.Option(
            "--reverse-operands",
            help="addition: write the operands least significant digit first too, so the digits of a, b and the "
                 "answer line up (try with --pos rope).",
            rich_help_panel="Addition",
        ),
    ] = False,
    train_problems: Annotated[
        int, typer.Option(help="addition: problems in the train split.", rich_help_panel="Addition")
    ] = 200_000,
    val_problems: Annotated[
        int, typer.Option(help="addition: problems in the val split (never in train).", rich_help_panel="Addition")
    ] = 2000,
) -> None:
    """Tokenize text into a dataset: train.bin, val.bin and meta.json (streamed: any size fits).

    [bold]Examples[/]

      nanogpt prepare shakespeare

      nanogpt prepare shakespeare --tokenizer gpt2

      nanogpt prepare ~/notes --glob "*.md" --name notes

      nanogpt prepare stories.jsonl --text-field story --tokenizer gpt2

    """
    from nanogpt_cli.prepare import prepare_dataset
    from nanogpt_cli.tokenizer import spec_name

    startup_done()
    if source == "addition":
        from nanogpt_cli.tasks import prepare_task

        meta = prepare_task(
            name,
            ops,
            digits,
            reverse,
            train_problems,
            val_problems,
            overwrite=overwrite,
            reverse_operands=reverse_operands,
        )
        if not quiet:
            task = meta["task"]
            out.print(
                f"prepared [bold]{meta['name']}[/]: {meta['source']['description']}; "
                f"{task['train_problems']:,} train and {task['val_problems']:,} val problems (disjoint), "
                f"{task['length']} characters each, e.g. {_example(meta)!r}",
                markup=True,
            )
            out.print(f"  train it: nanogpt train --dataset {meta['name']}")
        return
    with byte_progress(quiet) as progress:
        meta = prepare_dataset(
            source,
            tokenizer,
            name,
            val_fraction,
            progress=progress,
            glob=glob,
            val_file=val_file,
            sha256=sha256,
            overwrite=overwrite,
            max_vocab=max_vocab,
            min_count=min_count,
            text_field=text_field,
            max_tokens=max_tokens,
            subset=subset,
            split=split,
        )
    if quiet:
        return
    src = meta["source"]
    documents = f"{src['documents']:,} files, " if src["documents"] > 1 else ""
    out.print(
        f"prepared [bold]{meta['name']}[/] from {src['description']}: {documents}{src['characters']:,} characters, "
        f"{spec_name(meta['tokenizer'])} tokenizer, vocab {meta['vocab_size']:,}",
        markup=True,
    )
    if src["skipped_files"]:
        shown = ", ".join(src["skipped_files"][:5]) + (" ..." if len(src["skipped_files"]) > 5 else "")
        out.print(f"  skipped {len(src['skipped_files']):,} binary or non-UTF-8 file(s): {shown}")
    if src.get("empty_files"):
        shown = ", ".join(src["empty_files"][:5]) + (" ..." if len(src["empty_files"]) > 5 else "")
        out.print(f"  left out {len(src['empty_files']):,} empty file(s): {shown}")
    if meta.get("char_coverage"):
        out.print(f"  {char_coverage(meta['char_coverage'])}")
    out.print(f"  train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens ({meta['dtype']})")
    out.print(f"  written to {meta['path']}")


def _example(meta) -> str:
    from nanogpt_cli.dataset import load_dataset

    data = load_dataset(meta["name"])
    return data.tokenizer.decode(data.tokens("val")[: meta["task"]["length"]].tolist())
