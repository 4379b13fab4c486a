"""Everything the commands show: the consoles, tables, progress bars and the training display.

Results (text, tables, JSON) go to stdout and progress and status to stderr, so output pipes
cleanly. Nothing here computes anything; it renders what the core returns or reports.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def show_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def size(n_bytes: int | None) -> str:
    """Bytes for people: 812 B, 4.1 MiB, 1.20 GiB."""
    if n_bytes is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n_bytes} B"


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ------------------------------------------------------------------------------------------ progress


def byte_progress(quiet: bool):
    """A progress callback (stage, done, total) drawing one bar per stage with bytes, speed and ETA on
    a terminal; a no-op otherwise (a context manager)."""
    return _stage_progress(quiet, "bytes", {"download": "downloading", "scan": "reading", "scan val": "reading val",
                                            "tokenize": "tokenizing"})


def token_progress(quiet: bool):
    """The same for work counted in tokens (eval): tokens done of all, tokens/s and ETA."""
    return _stage_progress(quiet, "tokens", {})


@contextlib.contextmanager
def _stage_progress(quiet: bool, unit: str, labels: dict[str, str]):
    if quiet or not err.is_terminal:
        yield lambda stage, done, total: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    class TokenSpeed(ProgressColumn):
        def render(self, task):
            return f"{task.speed:,.0f} tokens/s" if task.speed else ""

    amount = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn(), TokenSpeed()]
    with Progress(TextColumn("[bold blue]{task.description:<12}"), BarColumn(), *amount, TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        yield progress


# ------------------------------------------------------------------------------------------ training


class TrainDisplay:
    """Shows training events: a live progress bar on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
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
            f"run [bold]{info['run']}[/]: {info['parameters'] / 1e6:.2f}M parameters ({shape}, block "
            f"{m['block_size']}), "
            f"dataset {info['dataset']}, preset {info['preset'] or 'none'}",
            markup=True,
        )
        length = f"{t['time']} of training (its results depend on this machine's speed)" if t.get("time") \
            else f"{t['max_iters']:,} iterations"
        err.print(
            f"device {info['device']}, {info['dtype']}{', compiled' if info['compile'] else ''}; {length} of "
            f"{t['batch_size']} x {m['block_size']} tokens"
            + (f" x {t['grad_accum']} accumulated" if t["grad_accum"] > 1 else "")
        )
        if info.get("muon_orthogonalize"):
            err.print(f"Muon orthogonalises in {info['muon_orthogonalize']}")
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
            budget = info["time_budget"]
            self.task = self.progress.add_task(
                "train", total=budget or t["max_iters"], completed=0 if self.timed else info["resumed_from"] or 0,
                loss="-", val="-", speed="-", mfu="", iter=info["resumed_from"] or 0, left=duration(budget or 0),
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
        err.print(f"  {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens in {meta['path']}")

    def on_done(self, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None



def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def train_summary(summary: dict[str, Any]) -> None:
    mfu = f", MFU {summary['mfu']:.1%}" if "mfu" in summary else ""
    work = f"{summary['iterations']:,} iterations in {duration(summary['elapsed'])}"
    if summary["resumed_from"] is not None:
        work = (f"{summary['session_iterations']:,} iterations in {duration(summary['elapsed'])} this session "
                f"({summary['iterations']:,} in {duration(summary['total_elapsed'])} in all)")
    out.print(
        f"done: {work}, best val loss "
        f"[bold]{summary['best_val_loss']:.4f}[/] (train {summary['final_train_loss']:.4f}), "
        f"{summary['tokens_per_second']:,.0f} tokens/s{mfu}",
        markup=True,
    )
    out.print(f"checkpoint: {summary['checkpoint']}")
    out.print(f"loss curves: nanogpt plot {summary['run']}")


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


# -------------------------------------------------------------------------------------------- info


def system_info(system: dict[str, Any]) -> None:
    out.print(f"[bold]nanogpt-cli {system['version']}[/] (torch {system['torch_version']}, Python "
              f"{system['python_version']})", markup=True)
    out.print(f"device: {system['auto_device']} would be used; available: {', '.join(system['available_devices'])}")
    out.print(f"data dir: {system['data_dir']}\ncache dir: {system['cache_dir']}\nruns dir: {system['runs_dir']}")
    datasets = Table(title="datasets")
    for column in ("name", "tokenizer", "vocab", "train tokens", "val tokens", "size"):
        datasets.add_column(column, justify="left" if column in ("name", "tokenizer") else "right")
    for d in system["datasets"]:
        datasets.add_row(
            d["name"],
            d["tokenizer_name"],
            fmt(d["vocab_size"]),
            fmt(d["train_tokens"]),
            fmt(d["val_tokens"]),
            size(d["size_bytes"]),
        )
    out.print(datasets if system["datasets"] else "datasets: none yet (nanogpt prepare shakespeare)")
    rows = []
    for r in system["runs"]:
        if r.get("time"):
            iters = f"{r['iterations']:,} ({r['time']})"
        else:
            iters = f"{r['iterations']:,}/{r['max_iters']:,}" if r["max_iters"] else fmt(r["iterations"])
        params = f"{r['parameters'] / 1e6:.2f}M" if r["parameters"] else "-"
        dataset = r["dataset"] or ("(imported)" if r.get("imported") else "-")
        rows.append(
            (r["name"], dataset, params, iters, fmt(r["best_val_loss"]), size(r["size_bytes"]), r["last_modified"])
        )
    if not rows:
        out.print("runs: none yet (nanogpt train)")
        out.print(f"on disk: {size(system['total_bytes'])}")
        return
    # A run's name is what --run needs, and its iterations are read as one number: neither is ever cut.
    # On a narrow terminal the least important columns go; in a pipe every column stays.
    headers = ["name", "dataset", "parameters", "iterations", "best val loss", "size", "last modified"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) + 3 for i, h in enumerate(headers)]
    shown = list(range(len(headers)))
    for optional in (6, 5, 2, 1, 4):  # last modified, size, parameters, dataset, best val loss
        if not out.is_terminal or sum(widths[i] for i in shown) + 1 <= out.width:
            break
        shown.remove(optional)
    runs = Table(title="runs")
    for i in shown:
        runs.add_column(headers[i], justify="right" if i in (2, 3, 4, 5) else "left", no_wrap=True)
    for row in rows:
        runs.add_row(*(row[i] for i in shown))
    needed = sum(widths[i] for i in shown) + 1
    # Wider than the screen even so (a very long name): let the terminal wrap the lines, cut nothing.
    (out if needed <= out.width else Console(width=needed, highlight=False)).print(runs)
    out.print(f"on disk: {size(system['total_bytes'])} in all; remove runs with `nanogpt rm RUN`, datasets with "
              "`nanogpt rm --dataset NAME`")


def compare_table(comparison: dict[str, Any]) -> None:
    """Runs side by side: a column per run, the settings that differ, then what each run reached."""
    runs = comparison["runs"]
    table = Table(title="runs compared")
    table.add_column("")
    for run in runs:
        table.add_column(run["name"], justify="right", no_wrap=True)
    for key, values in comparison["differ"].items():
        table.add_row(key, *("-" if v is None else str(v) for v in values))
    if comparison["differ"]:
        table.add_section()
    table.add_row("parameters", *(fmt(r["parameters"]) for r in runs))
    table.add_row("iterations", *(fmt(r["iterations"]) for r in runs))
    best = [r["best_val_loss"] for r in runs]
    lowest = min((b for b in best if b is not None), default=None)
    table.add_row("best val loss", *(f"[bold green]{fmt(b)}[/]" if b is not None and b == lowest and len(runs) > 1
                                     else fmt(b) for b in best))
    table.add_row("time", *("-" if r["seconds"] is None else duration(r["seconds"]) for r in runs))
    table.add_row("tokens/s", *(f"{r['tokens_per_second']:,.0f}" if r["tokens_per_second"] else "-" for r in runs))
    out.print(table)
    same = comparison["same"]
    if same:
        shown = ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in same.items() if v is not None)
        out.print(f"[dim]the same in all {len(runs)} runs ({len(same)} settings): {shown}[/]", markup=True)
    out.print(f"[dim]see them: nanogpt plot {' '.join(r['name'] for r in runs)}[/]", markup=True)



def run_info(item: dict[str, Any]) -> None:
    s = item["summary"]
    out.print(f"[bold]run {s['name']}[/] in {s['path']}", markup=True)
    config = item["config"]
    if config.get("imported_from"):
        out.print(f"imported from {config['init_from']}; {fmt(s['parameters'])} parameters, tokenizer "
                  f"{item['tokenizer_name']}, last modified {s['last_modified']}")
    else:
        out.print(f"dataset {s['dataset']}, {fmt(s['parameters'])} parameters, {s['iterations']:,} iterations, "
                  f"best val loss {fmt(s['best_val_loss'])}, last modified {s['last_modified']}")
        if config.get("init_from"):
            out.print(f"started from the weights of {config['init_from']}")
    if config.get("muon_orthogonalize"):
        out.print(f"Muon orthogonalised in {config['muon_orthogonalize']}")
    settings = Table(title="config")
    settings.add_column("setting")
    settings.add_column("value", justify="right")
    for section in ("model_config", "train_config"):
        for key, value in config.get(section, {}).items():
            settings.add_row(key, str(value))
    out.print(settings)
    if not item["evals"]:
        return
    out.print(
        f"[dim]loss curves: nanogpt plot {s['name']}; every logged line: nanogpt info {s['name']} --csv[/]", markup=True
    )
    evals = Table(title="evaluations")
    for column in ("iter", "train loss", "val loss", "lr", "elapsed s"):
        evals.add_column(column, justify="right")
    for m in item["evals"]:
        evals.add_row(fmt(m["iter"]), fmt(m["train_loss"]), fmt(m["val_loss"]), f"{m['lr']:.2e}", f"{m['elapsed']:.0f}")
    out.print(evals)


def char_coverage(coverage: dict[str, Any]) -> str:
    return (f"{coverage['kept_characters']:,} of {coverage['distinct_characters']:,} distinct characters kept; "
            f"{coverage['unknown_characters']:,} rarer ones map to the unknown token, "
            f"{coverage['mapped_characters']:,} characters ({coverage['mapped_share']:.2%} of the text)")


def dataset_info(item: dict[str, Any]) -> None:
    meta = item["meta"]
    out.print(f"[bold]dataset {meta['name']}[/] in {meta['path']}", markup=True)
    out.print(f"tokenizer {item['tokenizer_name']}, vocab {meta['vocab_size']:,}, {meta['dtype']}; "
              f"train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens; "
              f"{item['chars_per_token']:.2f} characters per token on val")
    if meta.get("task"):
        task = meta["task"]
        out.print(f"source: {meta['source']['description']}; {task['train_problems']:,} train and "
                  f"{task['val_problems']:,} val problems of {task['length']} characters, the loss on the answers only")
    else:
        out.print(f"source: {meta['source']['description']} (sha256 {meta['source']['sha256'][:16]}...)")
    if meta.get("char_coverage"):
        out.print(char_coverage(meta["char_coverage"]))
    out.print("[dim]--- the first train tokens, decoded ---[/]", markup=True)
    sys.stdout.write(item["sample"] + "\n")


