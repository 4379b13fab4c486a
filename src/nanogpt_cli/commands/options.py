"""Options that several commands take, declared once."""

from typing import Annotated

import typer

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
WeightsDtypeOption = Annotated[
    str,
    typer.Option(help="Weights' precision: auto (bfloat16 on CUDA GPUs that have it, else float32), float32, "
                      "bfloat16 or float16 (GPU)."),
]
