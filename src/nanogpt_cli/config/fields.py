"""Every model and training knob, declared once, as a dataclass field with its help text.

`ModelConfig` fixes the network's shape (it is saved in every checkpoint); `TrainConfig` says how a
run trains. Each field carries its help text and help panel in its metadata, and everything else is
derived from the fields: the `train` command's options, presets, TOML run configs, checkpoints and
`info RUN`. Adding a knob is one field. This module knows values and their checks, not where they
come from (presets.py merges them, runfile.py reads and writes files).
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.readers import check_type

MODEL_TYPES = ("gpt", "bigram")
POSITIONS = ("learned", "sinusoidal", "rope", "none")
NORMS = ("layernorm", "rmsnorm", "none")
MLPS = ("gelu", "gelu-tanh", "relu", "relu2", "swiglu", "none")
SCHEDULES = ("cosine", "wsd")
OPTIMIZERS = ("adamw", "muon")
LOGGERS = ("tensorboard", "wandb")
MODEL, TRAINING, RUN = "Model", "Training", "Run"  # help panels
MAX_EVAL_ITERS = 1_000_000  # batches per loss estimate: far beyond any useful estimate, still an end in sight


@dataclass(frozen=True)
class Range:
    """The values a number field takes: from `low` (or above it, when `open_low`) up to `high` (or
    below it, when `open_high`). Flags, TOML files and checkpoints are checked against it, and --help
    shows it."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    @property
    def text(self) -> str:
        """'at least 1', 'positive', 'in [0, 1)', ... (read after "must be")."""
        low, high = (_number(v) for v in (self.low, self.high))
        if self.high is None:
            if self.low == 0:
                return "positive" if self.open_low else "0 or more"
            return f"more than {low}" if self.open_low else f"at least {low}"
        if self.low is None:
            return f"below {high}" if self.open_high else f"at most {high}"
        return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"

    @property
    def help(self) -> str:
        """What --help and --print-config add to an option's text."""
        return f" Must be {self.text}."

    def check(self, name: str, value: float | None) -> None:
        """InvalidValue naming the field or option when `value` is outside (None: unset, allowed)."""
        if value is not None and value not in self:
            raise InvalidValue(name, f"must be {self.text}, got {value}")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"


AT_LEAST_1, POSITIVE, NOT_NEGATIVE, FRACTION = Range(1), Range(0, open_low=True), Range(0), Range(0, 1, open_high=True)


def knob(default: Any, help: str, panel: str, derived: bool = False, range: Range | None = None) -> Any:
    """A config field: its default, the help text shown by --help and --print-config, its panel, and
    for a number the `range` of values it takes. A `derived` field is set by nanogpt (e.g. the
    vocabulary from the dataset), never by the user."""
    return field(default=default, metadata={"help": help, "panel": panel, "derived": derived, "range": range})


class InvalidValue(NanoGPTError):
    """A config field holds a value it cannot take; `requirement` reads after the field's name."""

    def __init__(self, name: str, requirement: str, message: str | None = None):
        super().__init__(message or f"--{name.replace('_', '-')} {requirement}")
        self.name = name
        self.requirement = requirement


def _finite(config: Any) -> None:
    """Every number field holds a finite number (nan fails no `<` test and inf passes every `>` one, so
    they are refused before the range checks) and every text field encodable text."""
    for f in fields(config):
        value = getattr(config, f.name)
        problem = check_type(value, type(value), f.name) if isinstance(value, (float, str)) else None
        if problem:
            raise InvalidValue(f.name, problem.removeprefix(f"{f.name} "))


# The numbers commands take besides the config fields (sampling, eval), declared once: their checks
# and their --help read these.
OPTION_RANGES = {"temperature": Range(0), "top_k": AT_LEAST_1, "top_p": Range(0, 1, open_low=True),
                 "max_new_tokens": Range(0), "num_samples": AT_LEAST_1, "iters": AT_LEAST_1, "batch_size": AT_LEAST_1}


def check_option(name: str, value: float | None) -> None:
    """One line for a command's number outside its range (or not finite); None is 'not given'."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue(name, f"must be a finite number, got {value}")
    OPTION_RANGES[name].check(name, value)


def range_help(name: str) -> str:
    """" Must be ...." for a command option's --help."""
    return OPTION_RANGES[name].help


def check_seed(seed: int | None) -> None:
    """A seed torch's generators take (train's, sample's and eval's --seed): a 64-bit integer."""
    if seed is not None and not -(2**63) <= seed < 2**64:
        raise InvalidValue("seed", f"must be a 64-bit integer (from -2**63 to 2**64 - 1), got {seed}")


def _in_range(config: Any) -> None:
    """Every number field with a declared range holds a value in it (None: unset, where allowed)."""
    for f in fields(config):
        if f.metadata.get("range") is not None:
            f.metadata["range"].check(f.name, getattr(config, f.name))


@dataclass
class ModelConfig:
    model: str = knob("gpt", "gpt (nanoGPT's transformer) or bigram (the lecture's baseline).", MODEL)
    vocab_size: int = knob(65, "Vocabulary size (set from the dataset's tokenizer).", MODEL, derived=True,
                           range=AT_LEAST_1)
    block_size: int = knob(64, "Context length in tokens.", MODEL, range=AT_LEAST_1)
    n_layer: int = knob(4, "Transformer blocks.", MODEL, range=AT_LEAST_1)
    n_head: int = knob(4, "Attention heads per block.", MODEL, range=AT_LEAST_1)
    n_embd: int = knob(128, "Embedding width (divisible by n_head).", MODEL, range=AT_LEAST_1)
    dropout: float = knob(0.0, "Dropout probability.", MODEL, range=FRACTION)
    bias: bool = knob(False, "Biases in Linear and LayerNorm layers (GPT-2 has them).", MODEL)
    # Options beyond nanoGPT. The defaults are nanoGPT's network, so older checkpoints load unchanged.
    pos: str = knob("learned", "Positions: learned (GPT-2), sinusoidal (the fixed table of 'Attention Is All You "
                               "Need'), rope (rotary, applied to queries and keys) or none.", MODEL)
    norm: str = knob("layernorm", "Normalisation layers: layernorm (GPT-2), rmsnorm, or none (the lecture's "
                                  "ladder before its LayerNorm step).", MODEL)
    mlp: str = knob("gelu", "MLP activation: gelu (exact), gelu-tanh (the approximation GPT-2 was trained with), "
                            "relu (the lecture's), relu2 (squared ReLU), swiglu (gated; about the 4x MLP's "
                            "parameters), or none (attention only, as in the lecture's first steps).", MODEL)
    residual: bool = knob(True, "Residual connections around attention and MLP (--no-residual: the lecture's ladder "
                                "shows what they are for).", MODEL)
    qk_norm: bool = knob(False, "Normalise queries and keys per head (RMS) before attention.", MODEL)
    tie: bool = knob(True, "Share the token embedding matrix with the output head (GPT-2 does).", MODEL)
    softcap: float = knob(0.0, "Soft-cap the logits with tanh at this value, e.g. 15 (0: off).", MODEL,
                          range=NOT_NEGATIVE)

    def validate(self) -> None:
        if self.model not in MODEL_TYPES:
            choices = ", ".join(MODEL_TYPES)
            raise InvalidValue("model", f"must be one of {choices}, got {self.model!r}",
                               f"unknown model {self.model!r}: choose one of {choices}")
        _finite(self)
        _in_range(self)
        if self.n_embd % self.n_head:
            suggestion = self.n_head * max(1, round(self.n_embd / self.n_head))
            raise InvalidValue("n_embd", f"({self.n_embd}) must be divisible by --n-head ({self.n_head}); "
                                         f"for example --n-embd {suggestion}")
        for name, choices in (("pos", POSITIONS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in choices:
                raise InvalidValue(name, f"must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise InvalidValue("pos", f"rope needs an even head size; n_embd / n_head is {self.n_embd // self.n_head}")


@dataclass
class TrainConfig:
    dataset: str = knob("shakespeare", "Prepared dataset to train on.", RUN)
    batch_size: int = knob(12, "Sequences per micro-step.", TRAINING, range=AT_LEAST_1)
    grad_accum: int = knob(1, "Micro-steps accumulated per optimizer step.", TRAINING, range=AT_LEAST_1)
    max_iters: int = knob(2000, "Optimizer steps.", TRAINING, range=AT_LEAST_1)
    time: str | None = knob(None, "Train for this much wall-clock time instead of max_iters: 90s, 3m, 1h30m. The "
                                  "schedule and the evaluations follow the share of the time used, so such a run "
                                  "depends on the machine's speed and does not repeat exactly.", TRAINING)
    lr: float = knob(1e-3, "Peak learning rate (given alone, it also sets min_lr to a tenth of it).", TRAINING,
                     range=POSITIVE)
    min_lr: float = knob(1e-4, "Learning rate at the end of the decay.", TRAINING)
    warmup_iters: int = knob(100, "Steps of linear warmup.", TRAINING, range=NOT_NEGATIVE)
    lr_decay_iters: int | None = knob(None, "Step where the decay reaches min_lr (unset: max_iters).", TRAINING,
                                      range=AT_LEAST_1)
    schedule: str = knob(
        "cosine",
        "Learning-rate schedule after warmup: cosine (decay all the way) or wsd "
        "(warmup-stable-decay: constant, then linear decay over the last decay_frac).",
        TRAINING,
    )
    decay_frac: float = knob(0.2, "wsd: the fraction of training, at the end, that decays to min_lr.", TRAINING,
                              range=Range(0, 1, open_low=True))
    optimizer: str = knob("adamw", "adamw, or muon: Muon for the 2-D weight matrices inside the blocks and AdamW "
                                   "for embeddings, head, norms and biases.", TRAINING)
    muon_lr: float = knob(0.02, "Muon's peak learning rate (the schedule scales it like lr).", TRAINING, range=POSITIVE)
    muon_momentum: float = knob(0.95, "Muon's momentum.", TRAINING, range=FRACTION)
    weight_decay: float = knob(0.1, "AdamW weight decay (matrices only).", TRAINING, range=NOT_NEGATIVE)
    beta1: float = knob(0.9, "AdamW beta1.", TRAINING, range=FRACTION)
    beta2: float = knob(0.99, "AdamW beta2.", TRAINING, range=FRACTION)
    grad_clip: float = knob(1.0, "Clip the gradient norm to this (0: off).", TRAINING, range=NOT_NEGATIVE)
    eval_interval: int = knob(250, "Steps between loss estimates and checkpoints (a --time run evaluates at each "
                                   "tenth of its budget, but not more often than this).", TRAINING, range=AT_LEAST_1)
    eval_iters: int = knob(20, "Batches per loss estimate.", TRAINING, range=Range(1, MAX_EVAL_ITERS))
    log_interval: int = knob(10, "Steps between progress updates.", TRAINING, range=AT_LEAST_1)
    device: str = knob("auto", "auto, cpu, cuda, cuda:N or mps.", RUN)
    dtype: str = knob("auto", "auto, float32, bfloat16 or float16.", RUN)
    seed: int = knob(1337, "Random seed; a CPU run with the same seed repeats exactly.", RUN)
    init_from: str | None = knob(None, "Start from these weights: gpt2, gpt2-medium, gpt2-large, gpt2-xl, a folder "
                                       "with config.json + model.safetensors, or a run.", RUN)
    compile: bool | None = knob(None, "torch.compile the model (unset: on for CUDA, off on CPU and MPS).", RUN)
    peak_flops: float | None = knob(None, "Your device's peak FLOP/s, to show MFU (known GPUs need none).", RUN,
                                     range=POSITIVE)
    keep: int = knob(1, "Periodic checkpoints to keep (as ckpt-<iter>.pt when above 1).", RUN, range=AT_LEAST_1)
    allow_nan: bool = knob(False, "Keep going if the loss becomes NaN or infinite.", RUN)
    log: str | None = knob(None, "Also send the metrics to tensorboard (event files in the run folder; extra "
                                 "[tensorboard]) and/or wandb (Weights & Biases; extra [wandb]; WANDB_MODE=offline "
                                 "works without a network): tensorboard, wandb, or tensorboard,wandb.", RUN)
    wandb_project: str | None = knob(None, "The W&B project for --log wandb (default: nanogpt); the W&B run is "
                                           "named after the run.", RUN)

    @property
    def time_budget(self) -> float | None:
        """--time in seconds (None: the run is measured in iterations)."""
        return parse_duration(self.time) if self.time else None

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters

    def validate(self) -> None:
        _finite(self)
        _in_range(self)
        check_seed(self.seed)
        if not 0 <= self.min_lr <= self.lr:
            raise InvalidValue("min_lr", f"must be between 0 and lr ({self.lr}), got {self.min_lr}")
        for name, choices in (("schedule", SCHEDULES), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in choices:
                raise InvalidValue(name, f"must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.time is not None:
            self.time_budget  # noqa: B018  (raises InvalidValue on a malformed duration)
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise InvalidValue("log", f"takes {', '.join(LOGGERS)} (comma-separated), got {self.log!r}")

    @property
    def loggers(self) -> list[str]:
        """The tools --log names, in order, each once."""
        return list(dict.fromkeys(name.strip() for name in (self.log or "").split(",") if name.strip()))


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 90, 90s, 3m, 1h30m or 1.5h."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text.lower())
    if not text.strip() or match is None:
        raise InvalidValue("time", f"must be a duration such as 90s, 3m or 1h30m, got {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise InvalidValue("time", f"must be longer than 0 seconds, got {text!r}")
    return total


@dataclass(frozen=True)
class Knob:
    """One config field as the rest of the tool sees it."""

    name: str
    section: str  # "model" or "train"
    type: type  # int, float, str or bool (Optional stripped)
    optional: bool  # None is a meaningful value ("unset")
    default: Any
    help: str
    panel: str
    range: Range | None = None

    @property
    def help_with_range(self) -> str:
        return self.help + (self.range.help if self.range else "")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def knobs_of(sections: dict[str, type]) -> dict[str, Knob]:
    """The settable fields of these config classes, by name."""
    found = {}
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.metadata.get("derived"):
                continue
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            kind = args[0] if args else hints[f.name]
            found[f.name] = Knob(f.name, section, kind, bool(args), f.default if f.default is not MISSING else None,
                                 f.metadata["help"], f.metadata["panel"], f.metadata.get("range"))
    return found


KNOBS: dict[str, Knob] = knobs_of(SECTIONS)
DERIVED = {f.name for cls in SECTIONS.values() for f in fields(cls) if f.metadata.get("derived")}


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """A ModelConfig or TrainConfig from a stored dict (a checkpoint's, config.json's, a TOML file's),
    each value checked against its field's type first: InvalidValue names the first that is wrong.
    Fields the dict lacks (older files) keep their defaults; keys nanogpt does not know are ignored."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        problem = check_type(data[f.name], args[0] if args else hints[f.name], f.name, optional=bool(args))
        if problem:
            raise InvalidValue(f.name, problem.removeprefix(f"{f.name} "))
        value = data[f.name]
        values[f.name] = float(value) if float in args + [hints[f.name]] and type(value) is int else value
    return cls(**values)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A checked ModelConfig from a stored dict (see config_from_dict), validated."""
    config = config_from_dict(ModelConfig, data)
    config.validate()
    return config


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a stored dict, its values' types checked (validate() is the caller's: a resumed
    run may still change some of them)."""
    return config_from_dict(TrainConfig, data)
