"""Sending a run's metrics to the tools people already use: TensorBoard and Weights & Biases.

`open_loggers(names, run_dir, info)` gives one logger per name in `--log`; each takes the same rows
as metrics.jsonl (training loss, learning rate, tokens/s and MFU every log interval; train and val
loss at every evaluation) and records the run's config once. Both tools are optional extras: a
missing one is one error line naming the extra, before training starts. Only the main process logs.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.runinfo import RunInfo

# metrics.jsonl fields -> the scalar names the tools show, by kind of row
SCALARS = {
    "train": {
        "loss": "train/loss",
        "lr": "train/lr",
        "tokens_per_second": "train/tokens_per_second",
        "mfu": "train/mfu",
    },
    "eval": {"train_loss": "eval/train_loss", "val_loss": "eval/val_loss"},
}


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The scalars of one metrics row, under the tools' names."""
    names = SCALARS.get(row.get("kind"), {})
    return {names[k]: float(v) for k, v in row.items() if k in names and v is not None}


def _config(info: RunInfo) -> dict[str, Any]:
    return {"run": info.run, "dataset": info.dataset, "preset": info.preset, "parameters": info.parameters,
            "device": info.device, **{f"model.{k}": v for k, v in info.model_config.items()},
            **{f"train.{k}": v for k, v in info.train_config.items()}}


EXTRAS = {"tensorboard": ("torch.utils.tensorboard", "TensorBoard", "tensorboard"),
          "wandb": ("wandb", "Weights & Biases", "wandb")}


def check_loggers(names: list[str]) -> None:
    """Raise the one-line error for a --log tool whose extra is not installed."""
    import importlib

    for name in names:
        module, tool, extra = EXTRAS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise NanoGPTError(f'--log {name} needs {tool}: pip install "nanogpt-cli[{extra}]"') from None


class TensorBoardLogger:
    """Event files in <run>/tensorboard: `tensorboard --logdir <runs folder>` shows every run."""

    def __init__(self, run_dir: Path, info: RunInfo):
        check_loggers(["tensorboard"])
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        text = json.dumps(_config(info), indent=2, default=str)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)  # indented: shown as code

    def write(self, row: dict[str, Any]) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, row["iter"])
        if row.get("kind") == "eval":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run named after the run; a resumed run continues the same W&B run."""

    def __init__(self, run_dir: Path, info: RunInfo, project: str | None):
        check_loggers(["wandb"])
        import wandb

        id_file = run_dir / "wandb-id"  # one W&B run per run, across resumes
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(project=project or "nanogpt", name=info.run, id=run_id, resume="allow",
                                  dir=str(run_dir), config=_config(info))
        except Exception as exc:  # no login, no network, a bad project name: wandb raises many kinds
            raise NanoGPTError(
                f"--log wandb could not start a W&B run ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "run `wandb login`, or set WANDB_MODE=offline to log locally"
            ) from None

    def write(self, row: dict[str, Any]) -> None:
        values = scalars(row)
        if values:
            self.run.log(values, step=row["iter"])

    def close(self) -> None:
        self.run.finish()


def open_loggers(names: list[str], run_dir: Path, info: RunInfo, wandb_project: str | None = None) -> list[Any]:
    loggers = []
    try:
        for name in names:
            loggers.append(
                TensorBoardLogger(run_dir, info) if name == "tensorboard" else WandbLogger(run_dir, info, wandb_project)
            )
    except BaseException:
        for logger in loggers:
            logger.close()
        raise
    return loggers
