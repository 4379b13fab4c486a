"""One `nanogpt train` from start to end, whatever it takes: the process group, torchrun, the data.

`run_training` joins the process group (or, for `--nproc N`, starts torchrun once every flag is
checked), plans the run, prepares the bundled dataset when it is missing, trains and leaves the
group. The `train` command calls it and renders what it reports; it never prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from nanogpt_cli import distributed
from nanogpt_cli.config import RunFile
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.plan import plan_resume, plan_run
from nanogpt_cli.prepare import prepare_dataset
from nanogpt_cli.runcontrol import TrainingInterrupted
from nanogpt_cli.runinfo import RunSummary
from nanogpt_cli.sources import no_progress
from nanogpt_cli.train import EventHandler, train


@dataclass(frozen=True)
class Relaunched:
    """What the command that started torchrun gets back: the processes' exit code."""

    exit_code: int


@dataclass
class TrainOptions:
    """What the `train` command asks for, before any of it is checked."""

    preset: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)  # config fields given on the command line
    config_file: RunFile | None = None
    run: str | None = None
    resume: bool = False
    overwrite: bool = False
    nproc: int = 1
    relaunch_args: list[str] = field(default_factory=list)  # the command's own arguments, for torchrun


def run_training(options: TrainOptions, on_event: EventHandler | None = None,
                 progress=None) -> RunSummary | Relaunched | None:
    """All of `nanogpt train`: join the process group (or start torchrun with options.nproc processes,
    once every flag is checked), plan, prepare the bundled dataset when it is missing, train, leave the
    group. Returns the run's summary, Relaunched(exit code) after torchrun, or None on a rank > 0."""
    emit = on_event or (lambda kind, info: None)
    if options.resume and options.overwrite:
        raise NanoGPTError("--resume continues a run and --overwrite replaces it; choose one")
    if options.resume and options.config_file is not None:
        raise NanoGPTError("--config cannot be combined with --resume: a resumed run keeps its own settings")
    launching = options.nproc > 1 and "WORLD_SIZE" not in os.environ
    group = distributed.Group() if launching else distributed.setup()
    world = options.nproc if launching else group.world
    if options.resume:
        plan = plan_resume(options.run, options.preset, options.flags, world)
    else:
        plan = plan_run(options.preset, options.flags, options.run, world, progress, options.config_file)
    if group.is_main and not launching:  # (the launched processes plan again and say it then)
        for note in plan.notes:
            emit("warning", {"message": note})
    if launching:
        command = "torchrun " + " ".join(distributed.torchrun_command(options.nproc, options.relaunch_args)[3:])
        emit("launch", {"nproc": options.nproc, "command": command})
        return Relaunched(distributed.launch(options.nproc, options.relaunch_args))
    finished = False  # whether every process reached the same end (then they leave the group together)
    try:
        if plan.bundled is not None:
            source, tokenizer = plan.bundled
            if group.is_main:
                emit("prepare", {"dataset": plan.train_config.dataset})
            meta = distributed.on_main(lambda: prepare_dataset(source, tokenizer, plan.train_config.dataset,
                                                               progress=progress or no_progress))
            if group.is_main:
                emit("prepared", meta)
        try:
            summary = train(plan, options.overwrite, emit)
        except TrainingInterrupted:  # every process stopped at the same step
            finished = True
            raise
        finished = True
        return summary if group.is_main else None
    finally:
        distributed.teardown(finished=finished)
