"""Options that several commands take, declared once."""

from typing import Annotated, Optional

import typer

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
ThreadsOption = Annotated[
    Optional[int],
    typer.Option(min=1, help="CPU threads to compute with. Default: one per core, fewer while other programs keep "
                             "cores busy (NANOGPT_THREADS sets a default).", show_default=False),
]
TRAIN_THREADS_HELP = "CPU threads to compute with. Default: one per core (NANOGPT_THREADS sets a default)."
TrainThreadsOption = Annotated[Optional[int], typer.Option(min=1, help=TRAIN_THREADS_HELP, show_default=False)]
WeightsDtypeOption = Annotated[
    str,
    typer.Option(help="Weights' precision: auto (bfloat16 on CUDA GPUs that have it, else float32), float32, "
                      "bfloat16 or float16 (GPU)."),
]
