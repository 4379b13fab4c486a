"""The `nanogpt` commands, one module per command: each parses its options, calls one core function
and renders the result (console.py, train_display.py, info_display.py). They hold no ML logic;
`nanogpt_cli.cli` registers them."""

import gc

from nanogpt_cli.commands.console import err


def use_threads(requested: int | None, adapt: bool) -> None:
    """Set torch's CPU threads (nanogpt_cli.threads: --threads, else one per core, fewer on a busy
    machine when `adapt`), and say so when other work made it fewer."""
    from nanogpt_cli.threads import use

    chosen = use(requested, adapt)
    if chosen.busy is not None:
        err.print(f"[dim]computing with {chosen.describe()}[/]", markup=True)


def startup_done() -> None:
    """Called by a command once its heavy imports (torch) and loading are done.

    `nanogpt_cli.cli.main` starts with Python's garbage collector off: importing torch makes about
    270,000 objects that live until the process ends, and the collector would scan them all in three
    full passes meanwhile, about 0.15-0.25 s of a `nanogpt sample` start (docs/performance.md). From
    here on it runs as usual, and ignores what exists now (`gc.freeze`), so each later pass is cheap
    too. Nothing happens if the collector was on (the CLI driven from Python, as the tests do)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
