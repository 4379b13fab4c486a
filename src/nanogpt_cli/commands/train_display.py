"""What `nanogpt train` (and the ladder) show: the run's header, a live progress bar, a line per
evaluation, the summary, and the presets table. It renders the events the trainer reports; it
computes nothing."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from nanogpt_cli.commands.console import duration, err, fmt, out
from nanogpt_cli.runinfo import RunInfo, RunSummary


class TrainDisplay:
    """Shows training events: a live progress bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool, preparing=None):
        self.quiet = quiet
        self.preparing = preparing  # the automatic prepare's progress bars, cleared once it is done
        self.timed = False
        self.live = err.is_terminal and not quiet
        self.progress = None
        self.task = None

    def __enter__(self) -> TrainDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if self.quiet and kind != "launch":  # starting other processes is said even with --quiet
            return
        getattr(self, f"on_{kind}")(info)

    def on_start(self, info: RunInfo) -> None:
        m, t = info.model_config, info.train_config
        shape = (
            "bigram" if m["model"] == "bigram"
            else f"{m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide"
        )
        if info.resumed_from is not None:
            err.print(f"resuming run [bold]{info.run}[/] from iteration {info.resumed_from:,}", markup=True)
        if info.init_from:
            err.print(f"starting from the weights of {info.init_from}")
        err.print(
            f"run [bold]{info.run}[/]: {info.parameters / 1e6:.2f}M parameters ({shape}, block "
            f"{m['block_size']}), dataset {info.dataset}, preset {info.preset or 'none'}",
            markup=True,
        )
        length = f"{t['time']} of training (its results depend on this machine's speed)" if t.get("time") \
            else f"{t['max_iters']:,} iterations"
        err.print(
            f"device {info.device}, {info.dtype}{', compiled' if info.compile else ''}; {length} of "
            f"{t['batch_size']} x {m['block_size']} tokens"
            + (f" x {t['grad_accum']} accumulated" if t["grad_accum"] > 1 else "")
        )
        if info.muon_orthogonalize:
            err.print(f"Muon orthogonalises in {info.muon_orthogonalize}")
        self.timed = bool(t.get("time"))
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            # A timed run's bar fills with time, and shows the iteration and the time left.
            self.progress = Progress(
                TextColumn("[bold blue]training"),
                BarColumn(),
                TextColumn("iter {task.fields[iter]}") if self.timed else MofNCompleteColumn(),
                TextColumn("loss [bold]{task.fields[loss]}[/] val {task.fields[val]}"),
                TextColumn("{task.fields[speed]} tok/s{task.fields[mfu]}"),
                TimeElapsedColumn(),
                TextColumn("left" if self.timed else "ETA"),
                TextColumn("{task.fields[left]}") if self.timed else TimeRemainingColumn(),
                console=err,
            )
            budget = info.time_budget
            self.task = self.progress.add_task(
                "train", total=budget or t["max_iters"], completed=0 if self.timed else info.resumed_from or 0,
                loss="-", val="-", speed="-", mfu="", iter=info.resumed_from or 0, left=duration(budget or 0),
            )
            self.progress.start()

    def on_step(self, info: dict[str, Any]) -> None:
        if self.progress is not None:
            left = max(0.0, (info["time_budget"] or 0) - info["elapsed"])
            self.progress.update(
                self.task,
                completed=info["elapsed"] if self.timed else info["iter"],
                iter=f"{info['iter']:,}",
                left=duration(left),
                loss=f"{info['loss']:.4f}",
                val=fmt(info["val_loss"]),
                speed=f"{info['average_tokens_per_second']:,.0f}",
                mfu=f" MFU {info['average_mfu']:.0%}" if "average_mfu" in info else "",
            )

    def on_warning(self, info: dict[str, Any]) -> None:
        (self.progress.console if self.progress else err).print(f"[yellow]warning:[/] {info['message']}", markup=True)

    def on_eval(self, info: dict[str, Any]) -> None:
        mark = " [green](best, saved)[/]" if info["improved"] and info["iter"] > 0 else ""
        line = f"iter {info['iter']:>6,}: train loss {info['train_loss']:.4f}, val loss {info['val_loss']:.4f}{mark}"
        (self.progress.console if self.progress else err).print(line, markup=True)
        if self.progress is not None:
            self.progress.update(self.task, val=f"{info['val_loss']:.4f}")

    def on_launch(self, info: dict[str, Any]) -> None:
        err.print(f"starting {info['nproc']} processes: {info['command']}")

    def on_prepare(self, info: dict[str, Any]) -> None:
        err.print(f"dataset {info['dataset']!r} is not prepared yet; preparing the bundled Tiny Shakespeare first")

    def on_prepared(self, meta: dict[str, Any]) -> None:
        if self.preparing is not None:
            self.preparing.finish()
        err.print(f"  {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens in {meta['path']}")

    def on_done(self, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def train_summary(summary: RunSummary) -> None:
    mfu = f", MFU {summary.mfu:.1%}" if summary.mfu is not None else ""
    work = f"{summary.iterations:,} iterations in {duration(summary.elapsed)}"
    if summary.resumed_from is not None:
        work = (f"{summary.session_iterations:,} iterations in {duration(summary.elapsed)} this session "
                f"({summary.iterations:,} in {duration(summary.total_elapsed)} in all)")
    out.print(
        f"done: {work}, best val loss "
        f"[bold]{summary.best_val_loss:.4f}[/] (train {summary.final_train_loss:.4f}), "
        f"{summary.tokens_per_second:,.0f} tokens/s{mfu}",
        markup=True,
    )
    out.print(f"checkpoint: {summary.checkpoint}")
    out.print(f"loss curves: nanogpt plot {summary.run}")


def presets_table() -> None:
    from nanogpt_cli.config import DEFAULT_PRESET_FOR_DEVICE, PRESETS

    table = Table(title="presets (explicit flags override their values)")
    table.add_column("name", style="bold")
    table.add_column("default on")
    table.add_column("what it is")
    table.add_column("values")
    defaults = {preset: device for device, preset in DEFAULT_PRESET_FOR_DEVICE.items()}
    for name, preset in PRESETS.items():
        values = ", ".join(f"{k}={v}" for k, v in preset.values.items())
        table.add_row(
            name, defaults.get(name, "--model bigram" if name == "bigram" else ""), preset.description, values
        )
    out.print(table)
