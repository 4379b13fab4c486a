"""The `nanogpt` command: parse options, call one core function, show the result with rich.

No ML logic lives here. Heavy modules (torch and everything that imports it) are imported inside the
commands, so `nanogpt --help` and `nanogpt --version` start instantly. Progress and status go to
stderr; results (text, tables, JSON) go to stdout, so they pipe cleanly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from nanogpt_cli import __version__
from nanogpt_cli.errors import NanoGPTError

app = typer.Typer(
    name="nanogpt",
    help="Build, train and sample small GPT language models (nanoGPT as one command).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)
_state = {"debug": False}


def _debug() -> bool:
    return _state["debug"] or os.environ.get("NANOGPT_DEBUG", "") not in ("", "0")


def friendly_errors(command: Callable) -> Callable:
    """User mistakes become one red line and exit 1; Ctrl-C exits 130. --debug shows tracebacks."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NanoGPTError as exc:
            if _debug():
                raise
            if os.environ.get("RANK", "0") == "0":  # under torchrun, every process has the same error
                err.print(f"[bold red]error:[/] {exc}", markup=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if _debug():
                raise
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"nanogpt-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors (or set NANOGPT_DEBUG=1).")] = False,
) -> None:
    _state["debug"] = debug


def _show_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _unescape(text: str) -> str:
    """Read \\n and \\t typed on the command line as newline and tab (\\\\ is a backslash)."""
    return re.sub(r"\\(\\|n|t)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ---------------------------------------------------------------------------------------- prepare


@contextlib.contextmanager
def _byte_progress(quiet: bool):
    """A progress callback (stage, done, total) drawing one bar per stage with bytes, speed and ETA on
    a terminal; a no-op otherwise."""
    if quiet or not err.is_terminal:
        yield lambda stage, done, total: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    labels = {"download": "downloading", "scan": "reading", "scan val": "reading val", "tokenize": "tokenizing"}
    with Progress(TextColumn("[bold blue]{task.description:<12}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        yield progress


def _prepare(source: str, tokenizer: str, name: Optional[str], val_fraction: float, quiet: bool,
             **options: Any) -> dict[str, Any]:
    """Run prepare_dataset with a progress bar (bytes, speed, ETA) on a terminal."""
    from nanogpt_cli.data import prepare_dataset

    with _byte_progress(quiet) as progress:
        return prepare_dataset(source, tokenizer, name, val_fraction, progress=progress, **options)


@app.command()
@friendly_errors
def prepare(
    source: Annotated[str, typer.Argument(help="'shakespeare' (bundled Tiny Shakespeare), a UTF-8 text file, a folder of them, or an http(s) URL.")],
    tokenizer: Annotated[str, typer.Option(help="char, gpt2, or any tiktoken encoding (r50k_base, p50k_base, cl100k_base, o200k_base).")] = "char",
    name: Annotated[Optional[str], typer.Option(help="Dataset name (default: from the source, plus the tokenizer if not char).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Fraction of the text, at the end, kept for validation.")] = 0.1,
    val_file: Annotated[Optional[str], typer.Option(help="Use this text file (or folder, or URL) as the validation split instead.")] = None,
    glob: Annotated[str, typer.Option(help="For a folder: which files to read (recursively), e.g. '*.md'.")] = "*",
    sha256: Annotated[Optional[str], typer.Option(help="For a URL: the expected SHA-256 of the download.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset of the same name (refused if resumable runs trained on it and the tokens change).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Tokenize text into a dataset: train.bin, val.bin and meta.json (streamed: any size fits)."""
    meta = _prepare(source, tokenizer, name, val_fraction, quiet, glob=glob, val_file=val_file, sha256=sha256,
                    overwrite=overwrite)
    if quiet:
        return
    src = meta["source"]
    from nanogpt_cli.tokenizer import spec_name

    tokenizer_name = spec_name(meta["tokenizer"])
    documents = f"{src['documents']:,} files, " if src["documents"] > 1 else ""
    out.print(
        f"prepared [bold]{meta['name']}[/] from {src['description']}: {documents}{src['characters']:,} characters, "
        f"{tokenizer_name} tokenizer, vocab {meta['vocab_size']:,}",
        markup=True,
    )
    if src["skipped_files"]:
        shown = ", ".join(src["skipped_files"][:5]) + (" ..." if len(src["skipped_files"]) > 5 else "")
        out.print(f"  skipped {len(src['skipped_files']):,} binary or non-UTF-8 file(s): {shown}")
    out.print(f"  train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens ({meta['dtype']})")
    out.print(f"  written to {meta['path']}")


# ------------------------------------------------------------------------------------------ train


class TrainDisplay:
    """Shows training events: a live progress bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live = err.is_terminal and not quiet
        self.progress = None
        self.task = None

    def __enter__(self) -> TrainDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        getattr(self, f"on_{kind}")(info)

    def on_start(self, info: dict[str, Any]) -> None:
        m, t = info["model_config"], info["train_config"]
        shape = (
            "bigram" if m["model"] == "bigram"
            else f"{m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide"
        )
        if info["resumed_from"] is not None:
            err.print(f"resuming run [bold]{info['run']}[/] from iteration {info['resumed_from']:,}", markup=True)
        if info["init_from"]:
            err.print(f"starting from the weights of {info['init_from']}")
        err.print(
            f"run [bold]{info['run']}[/]: {info['parameters'] / 1e6:.2f}M parameters ({shape}, block {m['block_size']}), "
            f"dataset {info['dataset']}, preset {info['preset'] or 'none'}",
            markup=True,
        )
        err.print(
            f"device {info['device']}, {info['dtype']}{', compiled' if info['compile'] else ''}; {t['max_iters']:,} iterations of "
            f"{t['batch_size']} x {m['block_size']} tokens" + (f" x {t['grad_accum']} accumulated" if t["grad_accum"] > 1 else "")
        )
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold blue]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss [bold]{task.fields[loss]}[/] val {task.fields[val]}"),
                TextColumn("{task.fields[speed]} tok/s{task.fields[mfu]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err,
            )
            self.task = self.progress.add_task(
                "train", total=t["max_iters"], completed=info["resumed_from"] or 0, loss="-", val="-", speed="-", mfu=""
            )
            self.progress.start()

    def on_step(self, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=info["iter"],
                loss=f"{info['loss']:.4f}",
                val=_fmt(info["val_loss"]),
                speed=f"{info['tokens_per_second']:,.0f}",
                mfu=f" MFU {info['mfu']:.0%}" if "mfu" in info else "",
            )

    def on_warning(self, info: dict[str, Any]) -> None:
        (self.progress.console if self.progress else err).print(f"[yellow]warning:[/] {info['message']}", markup=True)

    def on_eval(self, info: dict[str, Any]) -> None:
        mark = " [green](best, saved)[/]" if info["improved"] and info["iter"] > 0 else ""
        line = f"iter {info['iter']:>6,}: train loss {info['train_loss']:.4f}, val loss {info['val_loss']:.4f}{mark}"
        (self.progress.console if self.progress else err).print(line, markup=True)
        if self.progress is not None:
            self.progress.update(self.task, val=f"{info['val_loss']:.4f}")

    def on_done(self, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _launch_torchrun(nproc: int) -> None:
    """Re-run this same `nanogpt train` command under torchrun with `nproc` processes, then exit."""
    import subprocess

    args, skip = [], False
    after_train = sys.argv[sys.argv.index("train") + 1 :] if "train" in sys.argv else []
    for arg in after_train:  # drop --nproc and its value
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    # "--" stops torchrun from reading our flags as its own (it would take --run for --run-path).
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "nanogpt_cli", "--", "train", *args]
    err.print(f"starting {nproc} processes: torchrun --standalone --nproc_per_node={nproc} -m nanogpt_cli -- train {' '.join(args)}")
    raise typer.Exit(subprocess.run(command).returncode)


def _list_presets() -> None:
    from nanogpt_cli.config import DEFAULT_PRESET_FOR_DEVICE, PRESETS

    table = Table(title="presets (explicit flags override their values)")
    table.add_column("name", style="bold")
    table.add_column("default on")
    table.add_column("what it is")
    table.add_column("values")
    defaults = {preset: device for device, preset in DEFAULT_PRESET_FOR_DEVICE.items()}
    for name, preset in PRESETS.items():
        values = ", ".join(f"{k}={v}" for k, v in preset.values.items())
        table.add_row(name, defaults.get(name, "--model bigram" if name == "bigram" else ""), preset.description, values)
    out.print(table)


MODEL = "Model"
TRAINING = "Training"
RUN = "Run"


@app.command()
@friendly_errors
def train(
    preset: Annotated[Optional[str], typer.Option(help="Named set of defaults; 'list' shows them. Default: by device.", rich_help_panel=RUN)] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Prepared dataset to train on.", rich_help_panel=RUN)] = None,
    run: Annotated[Optional[str], typer.Option(help="Run name (default: <dataset>-<date>-<time>).", rich_help_panel=RUN)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --run (default: the latest run) from its last checkpoint, exactly.", rich_help_panel=RUN)] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of the same name.", rich_help_panel=RUN)] = False,
    nproc: Annotated[int, typer.Option(help="Train with N data-parallel processes on this machine (runs torchrun for you).", rich_help_panel=RUN)] = 1,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model (default: on for CUDA, off on CPU and MPS).", rich_help_panel=RUN)] = None,
    peak_flops: Annotated[Optional[float], typer.Option(help="Your device's peak FLOP/s, to show MFU (known GPUs need none).", rich_help_panel=RUN)] = None,
    init_from: Annotated[Optional[str], typer.Option(help="Start from these weights: gpt2, gpt2-medium, gpt2-large, gpt2-xl, a folder with config.json + model.safetensors, or a run.", rich_help_panel=RUN)] = None,
    keep: Annotated[Optional[int], typer.Option(help="Periodic checkpoints to keep (as ckpt-<iter>.pt when above 1).", rich_help_panel=RUN)] = None,
    allow_nan: Annotated[Optional[bool], typer.Option("--allow-nan", help="Keep going if the loss becomes NaN or infinite.", rich_help_panel=RUN)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel=RUN)] = "auto",
    dtype: Annotated[Optional[str], typer.Option(help="auto, float32, bfloat16 or float16.", rich_help_panel=RUN)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; a CPU run with the same seed repeats exactly.", rich_help_panel=RUN)] = None,
    sample_tokens: Annotated[int, typer.Option(help="Tokens to sample at the end of the run (0: none).", rich_help_panel=RUN)] = 300,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; only the summary.", rich_help_panel=RUN)] = False,
    model: Annotated[Optional[str], typer.Option(help="gpt (transformer) or bigram (the lecture's baseline).", rich_help_panel=MODEL)] = None,
    n_layer: Annotated[Optional[int], typer.Option(help="Transformer blocks.", rich_help_panel=MODEL)] = None,
    n_head: Annotated[Optional[int], typer.Option(help="Attention heads per block.", rich_help_panel=MODEL)] = None,
    n_embd: Annotated[Optional[int], typer.Option(help="Embedding width (divisible by --n-head).", rich_help_panel=MODEL)] = None,
    block_size: Annotated[Optional[int], typer.Option(help="Context length in tokens.", rich_help_panel=MODEL)] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout probability.", rich_help_panel=MODEL)] = None,
    bias: Annotated[Optional[bool], typer.Option("--bias/--no-bias", help="Biases in Linear and LayerNorm layers.", rich_help_panel=MODEL)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per micro-step.", rich_help_panel=TRAINING)] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Micro-steps accumulated per optimizer step.", rich_help_panel=TRAINING)] = None,
    max_iters: Annotated[Optional[int], typer.Option(help="Optimizer steps.", rich_help_panel=TRAINING)] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.", rich_help_panel=TRAINING)] = None,
    min_lr: Annotated[Optional[float], typer.Option(help="Learning rate at the end of the cosine decay.", rich_help_panel=TRAINING)] = None,
    warmup_iters: Annotated[Optional[int], typer.Option(help="Steps of linear warmup.", rich_help_panel=TRAINING)] = None,
    lr_decay_iters: Annotated[Optional[int], typer.Option(help="Step where the decay reaches --min-lr (default: --max-iters).", rich_help_panel=TRAINING)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay (matrices only).", rich_help_panel=TRAINING)] = None,
    beta1: Annotated[Optional[float], typer.Option(help="AdamW beta1.", rich_help_panel=TRAINING)] = None,
    beta2: Annotated[Optional[float], typer.Option(help="AdamW beta2.", rich_help_panel=TRAINING)] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip gradient norm to this (0: off).", rich_help_panel=TRAINING)] = None,
    eval_interval: Annotated[Optional[int], typer.Option(help="Steps between loss estimates and checkpoints.", rich_help_panel=TRAINING)] = None,
    eval_iters: Annotated[Optional[int], typer.Option(help="Batches per loss estimate.", rich_help_panel=TRAINING)] = None,
    log_interval: Annotated[Optional[int], typer.Option(help="Steps between progress updates.", rich_help_panel=TRAINING)] = None,
) -> None:
    """Train a model; prepares the bundled Tiny Shakespeare first if nothing is prepared yet."""
    if preset == "list":
        _list_presets()
        return
    from nanogpt_cli import distributed
    from nanogpt_cli.train import TrainingInterrupted, plan_resume, plan_run
    from nanogpt_cli.train import train as run_training

    launching = nproc > 1 and "WORLD_SIZE" not in os.environ
    group = distributed.Group() if launching else distributed.setup()
    quiet = quiet or not group.is_main  # one process talks for all of them

    overrides = dict(
        model=model, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, dropout=dropout,
        bias=bias, dataset=dataset, batch_size=batch_size, grad_accum=grad_accum, max_iters=max_iters, lr=lr,
        min_lr=min_lr, warmup_iters=warmup_iters, lr_decay_iters=lr_decay_iters, weight_decay=weight_decay,
        beta1=beta1, beta2=beta2, grad_clip=grad_clip, eval_interval=eval_interval, eval_iters=eval_iters,
        log_interval=log_interval, device=None if device == "auto" and resume else device, dtype=dtype, seed=seed,
        keep=keep, allow_nan=allow_nan, init_from=init_from, compile=compile, peak_flops=peak_flops,
    )
    if resume and overwrite:
        raise NanoGPTError("--resume continues a run and --overwrite replaces it; choose one")
    world = nproc if launching else group.world
    if resume:
        plan = plan_resume(run, preset, overrides, world)
    else:
        with _byte_progress(quiet) as progress:  # --init-from gpt2 downloads the weights once
            plan = plan_run(preset, overrides, run, world, progress)
    if launching:  # every flag checked above: now start the processes
        _launch_torchrun(nproc)
    if plan.bundled_source is not None:
        if not quiet:
            err.print(f"dataset {plan.train_config.dataset!r} is not prepared yet; preparing the bundled Tiny Shakespeare first")
        meta = distributed.on_main(
            lambda: _prepare(plan.bundled_source, plan.bundled_tokenizer, plan.train_config.dataset, 0.1, quiet)
        )
        if not quiet:
            err.print(f"  {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens in {meta['path']}")
    together = False  # whether every process reached the same end (then they leave the group together)
    try:
        with TrainDisplay(quiet) as display:
            summary = run_training(plan.model_config, plan.train_config, run=plan.run, overwrite=overwrite,
                                   preset=plan.preset, on_event=display, resume_from=plan.resume_from,
                                   init=plan.init)
        together = True
    except TrainingInterrupted as stop:  # every process stops at the same step
        together = True
        if group.is_main:
            err.print(f"[yellow]stopped at iteration {stop.iteration:,}[/]; checkpoint saved to {stop.checkpoint}", markup=True)
            err.print(f"resume with: nanogpt train --run {stop.run} --resume" + (f" --nproc {nproc}" if nproc > 1 else ""))
        raise typer.Exit(130) from None
    finally:
        distributed.teardown(finished=together)
    if not group.is_main:
        return
    minutes, seconds = divmod(int(summary["elapsed"]), 60)
    mfu = f", MFU {summary['mfu']:.1%}" if "mfu" in summary else ""
    out.print(
        f"done: {summary['iterations']:,} iterations in {minutes}m{seconds:02d}s, best val loss "
        f"[bold]{summary['best_val_loss']:.4f}[/] (train {summary['final_train_loss']:.4f}), "
        f"{summary['tokens_per_second']:,.0f} tokens/s{mfu}",
        markup=True,
    )
    out.print(f"checkpoint: {summary['checkpoint']}")
    if sample_tokens > 0:
        from nanogpt_cli.generate import sample_from_run

        text = sample_from_run(summary["run"], prompt=None, max_new_tokens=sample_tokens, seed=plan.train_config.seed)
        out.print(f"\n[dim]--- a sample from {summary['run']} ---[/]", markup=True)
        sys.stdout.write(text.rstrip("\n") + "\n")
        out.print(f"[dim]---[/]\nmore: nanogpt sample --run {summary['run']} --prompt \"ROMEO:\"", markup=True)


# ----------------------------------------------------------------------------------------- sample


@app.command()
@friendly_errors
def sample(
    run: Annotated[Optional[str], typer.Option(help="Run to sample from (default: the latest).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    prompt: Annotated[Optional[str], typer.Option(help="Text to continue (\\n is a newline); '-' reads stdin (so does a pipe). Default: a newline, or <|endoftext|> for BPE.")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Read the prompt from this file.")] = None,
    num_samples: Annotated[int, typer.Option(help="How many samples.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per sample (may exceed the block size).")] = 500,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k most likely tokens.")] = 200,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling: only the most likely tokens whose probabilities add up to p.")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="End a sample where this text appears (repeatable; \\n is a newline); the stop text is not printed.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for repeatable samples.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Read a prompt per line from stdin and answer each, until EOF (Ctrl-D).")] = False,
    kv_cache: Annotated[bool, typer.Option("--kv-cache/--no-kv-cache", help="Reuse attention keys/values between steps (--no-kv-cache re-runs the whole context, for comparison).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per sample (prompt, text, tokens, tokens/s).")] = False,
) -> None:
    """Generate text from a trained run, streamed to stdout; samples are separated by a line of dashes."""
    from nanogpt_cli.generate import SampleSession

    if num_samples < 1:
        raise NanoGPTError(f"--num-samples must be at least 1, got {num_samples}")
    if prompt is not None and prompt_file is not None:
        raise NanoGPTError("give either --prompt or --prompt-file, not both")
    if interactive and (prompt is not None or prompt_file is not None):
        raise NanoGPTError("--interactive reads its prompts from stdin; drop --prompt / --prompt-file")
    if prompt_file is not None:
        from nanogpt_cli.sources import read_text_file

        prompt = read_text_file(prompt_file)
    elif prompt == "-" or (prompt is None and not interactive and not sys.stdin.isatty()):
        prompt = sys.stdin.read() or None
    elif prompt is not None:
        prompt = _unescape(prompt)
    stop = [_unescape(s) for s in stop or []]
    session = SampleSession.open(run, checkpoint, device)
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, stop=stop, use_cache=kv_cache)

    def answer(text: Optional[str], first_seed: Optional[int], echo: bool = True) -> None:
        for i in range(num_samples):
            generation = session.generate(text, max_new_tokens, seed=None if first_seed is None else first_seed + i, **settings)
            if as_json:
                for _ in generation:
                    pass
                sys.stdout.write(json.dumps({"run": session.run, "checkpoint": session.checkpoint, **generation.as_dict()}) + "\n")
                continue
            if i:
                sys.stdout.write("\n---------------\n")
            if echo:
                sys.stdout.write(text or "")
            for piece in generation:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        sys.stdout.flush()

    if not interactive:
        answer(prompt, seed)
        return
    turn = 0
    while True:
        if sys.stdin.isatty():
            err.print("[bold]>[/] ", end="", markup=True)
        line = sys.stdin.readline()
        if not line:
            if sys.stdin.isatty():
                err.print()
            return
        # The prompt is already on the screen (typed, or in the input file): print only the answer.
        answer(line.rstrip("\n"), None if seed is None else seed + turn * num_samples, echo=False)
        turn += 1


# ------------------------------------------------------------------------------------------- eval


@app.command(name="eval")
@friendly_errors
def eval_(
    run: Annotated[Optional[str], typer.Option(help="Run to evaluate (default: the latest).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    split: Annotated[str, typer.Option(help="Dataset split: val or train.")] = "val",
    iters: Annotated[int, typer.Option(help="Random batches to average (ignored with --full or --text-file).")] = 200,
    batch_size: Annotated[int, typer.Option(help="Sequences per batch.")] = 32,
    full: Annotated[bool, typer.Option("--full", help="Evaluate every token of the split once.")] = False,
    text_file: Annotated[Optional[Path], typer.Option(help="Evaluate on this UTF-8 text file instead (every token).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for choosing the random batches.")] = 1337,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Loss, perplexity and bits per character (or token) of a trained run."""
    from nanogpt_cli.evaluate import evaluate

    if as_json:
        result = evaluate(run, checkpoint, split, iters, batch_size, full, text_file, device, seed)
        _show_json(result)
        return
    with err.status("evaluating..."):
        result = evaluate(run, checkpoint, split, iters, batch_size, full, text_file, device, seed)
    table = Table(title=f"{result['run']} ({result['checkpoint']}) on {result['source']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("loss", "perplexity", "bits_per_char", "bits_per_token", "tokens"):
        if key in result:
            table.add_row(key.replace("_", " "), _fmt(result[key]))
    out.print(table)


# ----------------------------------------------------------------------------------------- export


@app.command()
@friendly_errors
def export(
    run: Annotated[str, typer.Argument(help="The run to export.")],
    path: Annotated[Path, typer.Argument(help="Folder to write config.json and model.safetensors into.")],
    format: Annotated[str, typer.Option("--format", help="Only 'hf': the Hugging Face GPT-2 layout.")] = "hf",
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
) -> None:
    """Write a run's weights in the GPT-2 layout (config.json + model.safetensors) for other tools."""
    import torch

    from nanogpt_cli.catalog import resolve_run
    from nanogpt_cli.checkpoint import checkpoint_path, load_model
    from nanogpt_cli.pretrained import export_hf

    if format != "hf":
        raise NanoGPTError(f"unknown export format {format!r}: use hf")
    loaded = load_model(checkpoint_path(resolve_run(run), checkpoint), torch.device("cpu"))
    written = export_hf(loaded.model, loaded.config, loaded.checkpoint["tokenizer"], path)
    out.print(f"exported {run} ({loaded.path.name}) to {', '.join(str(p) for p in written)}")


# ------------------------------------------------------------------------------------------- info


@app.command()
@friendly_errors
def info(
    name: Annotated[Optional[str], typer.Argument(help="A run (or dataset) to show in detail.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Version, devices, folders, prepared datasets and runs; or one run's config and metrics."""
    from nanogpt_cli.catalog import describe_item, describe_system

    if name is not None:
        item = describe_item(name)
        if as_json:
            _show_json(item)
        elif item["type"] == "run":
            _render_run(item)
        else:
            _render_dataset(item)
        return
    system = describe_system()
    if as_json:
        _show_json(system)
        return
    out.print(f"[bold]nanogpt-cli {system['version']}[/] (torch {system['torch_version']}, Python {system['python_version']})", markup=True)
    out.print(f"device: {system['auto_device']} would be used; available: {', '.join(system['available_devices'])}")
    out.print(f"data dir: {system['data_dir']}\ncache dir: {system['cache_dir']}\nruns dir: {system['runs_dir']}")
    datasets = Table(title="datasets")
    for column in ("name", "tokenizer", "vocab", "train tokens", "val tokens"):
        datasets.add_column(column, justify="right" if "tokens" in column or column == "vocab" else "left")
    for d in system["datasets"]:
        datasets.add_row(d["name"], d["tokenizer_name"], _fmt(d["vocab_size"]), _fmt(d["train_tokens"]), _fmt(d["val_tokens"]))
    out.print(datasets if system["datasets"] else "datasets: none yet (nanogpt prepare shakespeare)")
    runs = Table(title="runs")
    for column in ("name", "dataset", "parameters", "iterations", "best val loss", "last modified"):
        runs.add_column(column, justify="right" if column in ("parameters", "iterations", "best val loss") else "left")
    for r in system["runs"]:
        iters = f"{r['iterations']:,}/{r['max_iters']:,}" if r["max_iters"] else _fmt(r["iterations"])
        params = f"{r['parameters'] / 1e6:.2f}M" if r["parameters"] else "-"
        runs.add_row(r["name"], r["dataset"] or "-", params, iters, _fmt(r["best_val_loss"]), r["last_modified"])
    out.print(runs if system["runs"] else "runs: none yet (nanogpt train)")


def _render_run(item: dict[str, Any]) -> None:
    s = item["summary"]
    out.print(f"[bold]run {s['name']}[/] in {s['path']}", markup=True)
    out.print(f"dataset {s['dataset']}, {_fmt(s['parameters'])} parameters, {s['iterations']:,} iterations, "
              f"best val loss {_fmt(s['best_val_loss'])}, last modified {s['last_modified']}")
    config = Table(title="config")
    config.add_column("setting")
    config.add_column("value", justify="right")
    for section in ("model_config", "train_config"):
        for key, value in item["config"].get(section, {}).items():
            config.add_row(key, str(value))
    out.print(config)
    evals = Table(title="evaluations")
    for column in ("iter", "train loss", "val loss", "lr", "elapsed s"):
        evals.add_column(column, justify="right")
    for m in item["evals"]:
        evals.add_row(_fmt(m["iter"]), _fmt(m["train_loss"]), _fmt(m["val_loss"]), f"{m['lr']:.2e}", f"{m['elapsed']:.0f}")
    out.print(evals)


def _render_dataset(item: dict[str, Any]) -> None:
    meta = item["meta"]
    out.print(f"[bold]dataset {meta['name']}[/] in {meta['path']}", markup=True)
    out.print(f"tokenizer {item['tokenizer_name']}, vocab {meta['vocab_size']:,}, {meta['dtype']}; "
              f"train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens")
    out.print(f"source: {meta['source']['description']} (sha256 {meta['source']['sha256'][:16]}...)")
    out.print("[dim]--- the first train tokens, decoded ---[/]", markup=True)
    sys.stdout.write(item["sample"] + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
