"""The `nanogpt` command: the Typer app, its global options, and the commands it is made of.

Each command lives in its own module under `nanogpt_cli.commands` and is registered here with the
one error policy every command shares: a mistake the user can fix is one red line and exit 1, Ctrl-C
exits 130, and --debug (or NANOGPT_DEBUG=1) shows the traceback instead. Heavy modules (torch and
everything that imports it) are imported inside the commands, so `nanogpt --help` and `--version`
start instantly.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from nanogpt_cli import __version__, threads
from nanogpt_cli.commands import evaluate, export, import_, info, ladder, manage, plot, prepare, sample, train
from nanogpt_cli.commands.console import err, out
from nanogpt_cli.config import KNOBS
from nanogpt_cli.errors import NanoGPTError

QUICK_START = """[bold]nanogpt[/]: build, train and sample small GPT language models (nanoGPT as one command).

  nanogpt prepare shakespeare        the bundled Tiny Shakespeare as characters (train does this by itself)
  nanogpt train                      train with this machine's preset; Ctrl-C saves, --resume continues
  nanogpt sample --prompt "ROMEO:"   stream text from the latest run
  nanogpt eval                       loss, perplexity, bits per character
  nanogpt info                       device, folders, datasets, runs

More: nanogpt ladder, plot, import, export, rm, mv; every command has --help with examples."""


class Command(TyperCommand):
    """Help that reads like a manual: no type placeholder after a flag (`--resume <bool>` invites
    `--resume true`, which fails), plain argument names in the usage line (`SOURCE`, not `{SOURCE}`),
    and for `train` the value each model and training option takes in this machine's preset."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""  # shown as the type column: nothing
            elif getattr(param, "multiple", False) and param.metavar is None:
                param.metavar = "<str>"  # a repeatable option takes one text each time, not a "<list[str]>"
            elif param.param_type_name == "argument" and param.nargs != 1:
                param.display_type_rich = lambda ctx: None  # "RUN..." says it; not "<list[str]>"
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"\{([^}]*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if self.name == "train" and not getattr(self, "_preset_shown", False):
            self._preset_shown = True
            from nanogpt_cli.plan import resolve_config  # imports torch: only when train's help is asked for

            preset, model_config, train_config = resolve_config(None, {})
            for param in (p for p in self.params if p.name in KNOBS):
                config = model_config if KNOBS[param.name].section == "model" else train_config
                value = getattr(config, param.name)
                shown = "unset" if value is None else value
                param.help = f"{param.help} [dim]({preset} preset: {escape(str(shown))})[/]"
        super().format_help(ctx, formatter)


# click's usage and command-line exceptions, as the installed typer has them (it vendors click from 0.2x on)
UsageError = typer.BadParameter.__mro__[1]
ClickException = UsageError.__mro__[1]


class Group(TyperGroup):
    """The `nanogpt` command group: a malformed flag or an unknown command is one line too (typer would
    draw a box around it), exit 2."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # the group's own options
        with _usage_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:  # the command's name and options
        with _usage_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_errors():
    try:
        yield
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "nanogpt"
        err.print(f"[bold red]error:[/] {escape(_printable(exc.format_message()))} (see `{where} --help`)", markup=True)
        raise typer.Exit(2) from None


app = typer.Typer(
    name="nanogpt",
    cls=Group,
    help="Build, train and sample small GPT language models (nanoGPT as one command).",
    add_completion=True,
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
        except (ClickException, typer.Exit, typer.Abort, SystemExit):
            raise  # exits and usage errors: click reports them
        except KeyboardInterrupt:
            if _debug():
                raise
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `nanogpt sample | head`: the reader has all it wanted
            _silence_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:
            if _debug():
                raise
            _fail(_one_line(exc))

    return wrapper


def _one_line(exc: Exception) -> str:
    """What an error says in its one line: a user's mistake its own message; the file system's refusal
    (a path too long, no permission, a full disk) with the path; anything else as a bug of ours."""
    if isinstance(exc, NanoGPTError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}; check the path and its permissions (--debug shows where)"
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller model, batch or context"
    return (f"internal error ({type(exc).__name__}: {str(exc)[:200]}); this is a bug in nanogpt-cli: rerun with "
            "--debug and report the traceback")


def _fail(message: str) -> None:
    """One red line on stderr (from the first process only under torchrun), exit 1."""
    if os.environ.get("RANK", "0") == "0":  # under torchrun, every process has the same error
        err.print(f"[bold red]error:[/] {escape(_printable(message))}", markup=True)
    raise typer.Exit(1) from None


def _printable(message: str) -> str:
    """The message on one line: control characters (a newline or escape in a path or name the user
    gave) shown as escapes, so the error stays one line and cannot move the cursor."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in message)


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


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors (or set NANOGPT_DEBUG=1).")
    ] = False,
) -> None:
    _state["debug"] = debug
    if ctx.invoked_subcommand is None:  # a bare `nanogpt`: the five commands, not only a usage line
        out.print(QUICK_START, markup=True)
        raise typer.Exit()


for name, command in [("prepare", prepare.prepare), ("train", train.train), ("sample", sample.sample),
                      ("eval", evaluate.eval_), ("import", import_.import_), ("export", export.export),
                      ("info", info.info), ("plot", plot.plot), ("rm", manage.rm), ("mv", manage.mv),
                      ("ladder", ladder.ladder)]:
    app.command(name=name, cls=Command)(friendly_errors(command))


def main() -> None:
    # The collector stays off through start-up; each command turns it back on once torch is imported
    # (commands.startup_done). A short command that never does ends with it still off.
    gc.disable()
    threads.mark_start()  # eval and sample measure from here what else keeps the cores busy
    app(prog_name="nanogpt")  # also under `python -m nanogpt_cli`: usage lines and completion say nanogpt


if __name__ == "__main__":
    main()
