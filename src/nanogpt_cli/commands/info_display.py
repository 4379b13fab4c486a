"""What `nanogpt info` shows: the system, the runs and datasets, one run or dataset in detail, and runs
side by side."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from nanogpt_cli.commands.console import duration, fmt, out, size


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
        lr, elapsed = m.get("lr"), m.get("elapsed")  # rows of older versions may lack them
        evals.add_row(fmt(m["iter"]), fmt(m["train_loss"]), fmt(m["val_loss"]), "-" if lr is None else f"{lr:.2e}",
                      "-" if elapsed is None else f"{elapsed:.0f}")
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
    source = meta.get("source") or {}
    if meta.get("task"):
        task = meta["task"]
        out.print(f"source: {source.get('description', '-')}; {fmt(task.get('train_problems'))} train and "
                  f"{fmt(task.get('val_problems'))} val problems of {fmt(task.get('length'))} characters, the loss on "
                  "the answers only")
    else:
        out.print(f"source: {source.get('description', '-')} (sha256 {source.get('sha256', '-')[:16]}...)")
    if meta.get("char_coverage"):
        out.print(char_coverage(meta["char_coverage"]))
    out.print("[dim]--- the first train tokens, decoded ---[/]", markup=True)
    sys.stdout.write(item["sample"] + "\n")
