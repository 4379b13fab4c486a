"""The `nanogpt` command: the Typer app, its global options, and the commands it is made of.

Each command lives in its own module under `nanogpt_cli.commands` and is registered here with the
one error policy every command shares: a mistake the user can fix is one red line and exit 1, Ctrl-C
exits 130, and --debug (or NANOGPT_DEBUG=1) shows the traceback instead. Heavy modules (torch and
everything that imports it) are imported inside the commands, so `nanogpt --help` and `--version`
start instantly.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from nanogpt_cli import __version__
from nanogpt_cli.commands import evaluate, export, import_, info, prepare, sample, train
from nanogpt_cli.commands.render import err, out
from nanogpt_cli.errors import NanoGPTError

app = typer.Typer(
    name="nanogpt",
    help="Build, train and sample small GPT language models (nanoGPT as one command).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
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
                err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if _debug():
                raise
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `nanogpt sample | head`: the reader has all it wanted
            _silence_stdout()
            raise typer.Exit(0) from None

    return wrapper


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe says nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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


for name, command in [("prepare", prepare.prepare), ("train", train.train), ("sample", sample.sample),
                      ("eval", evaluate.eval_), ("import", import_.import_), ("export", export.export),
                      ("info", info.info)]:
    app.command(name=name)(friendly_errors(command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
