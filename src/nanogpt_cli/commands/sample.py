"""`nanogpt sample`: stream text from a trained run, once, for each line of stdin, or interactively."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from nanogpt_cli.commands import startup_done, use_threads
from nanogpt_cli.commands.complete import complete_run
from nanogpt_cli.commands.console import err
from nanogpt_cli.commands.options import DeviceOption, ThreadsOption, WeightsDtypeOption
from nanogpt_cli.config import check_option, range_help
from nanogpt_cli.errors import NanoGPTError


def _unescape(text: str) -> str:
    """Read \\n and \\t typed on the command line as newline and tab (\\\\ is a backslash)."""
    return re.sub(r"\\(\\|n|t)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def sample(
    run: Annotated[
        Optional[str], typer.Option(help="Run to sample from (default: the latest).", autocompletion=complete_run)
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    prompt: Annotated[
        Optional[str],
        typer.Option(
            help="Text to continue (\\n is a newline); '-' reads stdin (so does a pipe). Default: a newline, or "
                 "<|endoftext|> for BPE."
        ),
    ] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Read the prompt from this file.")] = None,
    num_samples: Annotated[int, typer.Option(help="How many samples." + range_help("num_samples"))] = 1,
    max_new_tokens: Annotated[
        int, typer.Option(help="Tokens to generate per sample (may exceed the block size)."
                               + range_help("max_new_tokens"))
    ] = 500,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature; 0 is greedy." + range_help("temperature"))
    ] = 0.8,
    top_k: Annotated[
        Optional[int], typer.Option(help="Sample only from the k most likely tokens." + range_help("top_k"))
    ] = 200,
    top_p: Annotated[
        Optional[float],
        typer.Option(help="Nucleus sampling: only the most likely tokens whose probabilities add up to p."
                          + range_help("top_p")),
    ] = None,
    stop: Annotated[
        Optional[list[str]],
        typer.Option(
            help="End a sample where this text appears (repeatable; \\n is a newline); the stop text is not printed."
        ),
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for repeatable samples.")] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    dtype: WeightsDtypeOption = "auto",
    quantize: Annotated[
        Optional[str],
        typer.Option(
            help="int8: int8 block weights on the CPU, about 3x faster sampling (eval --quantize int8 shows what it "
                 "costs in loss)."
        ),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive", "-i", help="Read a prompt per line from stdin and answer each, until EOF (Ctrl-D)."
        ),
    ] = False,
    kv_cache: Annotated[
        bool,
        typer.Option(
            "--kv-cache/--no-kv-cache",
            help="Reuse attention keys/values between steps (--no-kv-cache re-runs the whole context, for comparison).",
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per sample (prompt, text, tokens, tokens/s).")
    ] = False,
) -> None:
    """Generate text from a trained run, streamed to stdout; samples are separated by a line of dashes.

    [bold]Examples[/]

      nanogpt sample --prompt "ROMEO:" --max-new-tokens 300

      nanogpt sample --run my-run --top-p 0.9 --stop "\\n\\n" --num-samples 3

      echo "JULIET:" | nanogpt sample --json

      nanogpt sample --quantize int8 --interactive
    """
    from nanogpt_cli.generate import SampleSession

    check_option("num_samples", num_samples)
    if prompt is not None and prompt_file is not None:
        raise NanoGPTError("give either --prompt or --prompt-file, not both")
    if interactive and (prompt is not None or prompt_file is not None):
        raise NanoGPTError("--interactive reads its prompts from stdin; drop --prompt / --prompt-file")
    if prompt_file is not None:
        from nanogpt_cli.sources import read_text_file

        prompt = read_text_file(prompt_file)
    elif prompt == "-" or (prompt is None and not interactive and _stdin_has_text()):
        prompt = sys.stdin.read() or None
    elif prompt is not None:
        prompt = _unescape(prompt)
    stop = [_unescape(s) for s in stop or []]
    use_threads(threads, adapt=True)  # before the model loads, so no thread beyond these ever starts
    session = SampleSession.open(run, checkpoint, device, dtype, quantize)
    # Everything made so far (modules, the model) lives to the end: the garbage collector comes back
    # on and never rescans those objects (that took about 3% of a CPU sampling step).
    startup_done()
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, stop=stop, use_cache=kv_cache)

    def answer(text: Optional[str], first_seed: Optional[int], echo: bool = True) -> None:
        if session.task is not None and text:  # an arithmetic model: one exact answer per problem, right way round
            for problem in text.splitlines():
                solved = session.solve(problem)
                shown = problem.strip().rstrip("=")
                sys.stdout.write(
                    json.dumps({"run": session.run, "problem": shown, "answer": solved}) + "\n"
                    if as_json
                    else f"{shown}={solved}\n"
                    if echo
                    else f"{solved}\n"
                )
            sys.stdout.flush()
            return
        for i in range(num_samples):
            generation = session.generate(
                text, max_new_tokens, seed=None if first_seed is None else first_seed + i, **settings
            )
            if as_json:
                for _ in generation:
                    pass
                sys.stdout.write(
                    json.dumps({"run": session.run, "checkpoint": session.checkpoint, **generation.as_dict()}) + "\n"
                )
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
    err.print(
        f"[dim]sampling from run {session.run} ({session.checkpoint}): one prompt per line; Ctrl-C stops a reply, "
        "Ctrl-D or Ctrl-C at an empty prompt quits[/]",
        markup=True,
    )
    read_line = _line_reader()
    turn = 0
    while True:
        try:
            line = read_line()
        except (EOFError, KeyboardInterrupt):
            line = None
        if line is None:
            if sys.stdin.isatty():
                err.print()
            return
        try:
            # The prompt is already on the screen (typed, or in the input file): print only the answer.
            answer(line, None if seed is None else seed + turn * num_samples, echo=False)
        except KeyboardInterrupt:  # stop this reply, keep the session
            sys.stdout.write("\n")
            sys.stdout.flush()
            err.print("[yellow](reply stopped)[/]", markup=True)
        except NanoGPTError as exc:  # e.g. characters the model never saw: say so, ask again
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
        turn += 1


def _stdin_has_text() -> bool:
    """Whether stdin is a prompt given without --prompt: a pipe, or a file with content. Not a
    terminal, /dev/null or an empty file (as under cron, nohup or a CI job): those sample as if no
    prompt was given, instead of waiting or continuing an empty string."""
    try:
        mode = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no descriptor: text given in-process
        return sys.stdin is not None and not sys.stdin.isatty()
    if stat.S_ISFIFO(mode.st_mode) or stat.S_ISSOCK(mode.st_mode):
        return True
    return stat.S_ISREG(mode.st_mode) and mode.st_size > 0


def _line_reader() -> Callable[[], Optional[str]]:
    """A function returning the next prompt line (None at the end). On a terminal it reads with the
    standard library's readline, where there is one: arrow keys edit the line and recall history."""
    if not sys.stdin.isatty():

        def from_pipe() -> Optional[str]:
            line = sys.stdin.readline()
            return line.removesuffix("\n") if line else None

        return from_pipe
    try:
        import readline  # noqa: F401  (importing it is what gives input() line editing and history)
    except ImportError:  # Windows without pyreadline: plain input()
        pass
    if sys.stdout.isatty():
        return lambda: input("> ")

    def prompt_on_stderr() -> str:  # the answers go to a file or pipe: keep the prompt out of them
        err.print("> ", end="")
        return input()

    return prompt_on_stderr
