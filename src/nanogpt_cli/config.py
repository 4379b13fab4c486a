"""Configuration as plain dataclasses, plus the named presets.

`ModelConfig` fixes the network's shape (it is saved in every checkpoint); `TrainConfig` says how a
run trains. A preset is a named set of values for fields of either. Values are merged in one order:
dataclass defaults, then the preset, then the flags the user typed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nanogpt_cli.errors import NanoGPTError

MODEL_TYPES = ("gpt", "bigram")


@dataclass
class ModelConfig:
    model: str = "gpt"  # "gpt" (nanoGPT's transformer) or "bigram" (the lecture's baseline)
    vocab_size: int = 65
    block_size: int = 64  # context length in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers (GPT-2 has them)

    def validate(self) -> None:
        if self.model not in MODEL_TYPES:
            raise NanoGPTError(f"unknown model {self.model!r}: choose one of {', '.join(MODEL_TYPES)}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise NanoGPTError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise NanoGPTError(
                f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head}); "
                f"for example --n-embd {self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise NanoGPTError(f"--dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    dataset: str = "shakespeare"
    batch_size: int = 12  # sequences per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: decay over the whole run (max_iters)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 1337
    init_from: str | None = None  # start from these weights: a GPT-2 size, a folder, or a run
    compile: bool | None = None  # torch.compile the model; None: on for CUDA, off elsewhere
    peak_flops: float | None = None  # the device's peak FLOP/s, for MFU (known GPUs need none)
    keep: int = 1  # periodic checkpoints kept (ckpt.pt, plus ckpt-<iter>.pt files when > 1)
    allow_nan: bool = False  # go on when the loss becomes NaN or infinite

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "log_interval", "keep"):
            if getattr(self, name) < 1:
                raise NanoGPTError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise NanoGPTError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise NanoGPTError(f"--min-lr must be between 0 and --lr ({self.lr}), got {self.min_lr}")
        if self.warmup_iters < 0 or self.decay_iters < 1:
            raise NanoGPTError("--warmup-iters must be >= 0 and --lr-decay-iters >= 1")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise NanoGPTError("--weight-decay and --grad-clip must not be negative")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise NanoGPTError(f"--{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class Preset:
    description: str
    values: dict[str, Any]


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "small and quick: learns Tiny Shakespeare to val loss < 2.0 in a few minutes on a laptop CPU",
        dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=16,
             max_iters=2500, lr=2e-3, min_lr=2e-4, warmup_iters=100, eval_interval=250, eval_iters=20),
    ),
    "mps": Preset(
        "a middle size for Apple-silicon GPUs (about 15 minutes on an M1)",
        dict(n_layer=6, n_head=6, n_embd=256, block_size=128, dropout=0.1, batch_size=32,
             max_iters=3000, lr=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=250, eval_iters=50),
    ),
    "shakespeare-char": Preset(
        "nanoGPT's GPU recipe for Tiny Shakespeare (6 layers, 384 wide, block 256; val ~1.47)",
        dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
             max_iters=5000, lr=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=250, eval_iters=200),
    ),
    "bigram": Preset(
        "the lecture's bigram baseline: one embedding table of next-token logits (val ~2.5)",
        dict(model="bigram", block_size=8, batch_size=32, max_iters=3000, lr=1e-2, min_lr=1e-3,
             warmup_iters=0, weight_decay=0.0, eval_interval=300, eval_iters=50),
    ),
}

DEFAULT_PRESET_FOR_DEVICE = {"cpu": "cpu", "mps": "mps", "cuda": "shakespeare-char"}

_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise NanoGPTError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)} (see `nanogpt train --preset list`)")
    return PRESETS[name]


def build_configs(preset: str | None, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Merge defaults <- preset <- overrides (None values in overrides mean 'not given')."""
    values: dict[str, Any] = dict(get_preset(preset).values) if preset else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "lr" in given and "min_lr" not in given:
        values["min_lr"] = given["lr"] / 10  # keep the decay's floor below a newly chosen peak
    values.update(given)
    unknown = set(values) - _MODEL_FIELDS - _TRAIN_FIELDS
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    model = ModelConfig(**{k: v for k, v in values.items() if k in _MODEL_FIELDS})
    train = TrainConfig(**{k: v for k, v in values.items() if k in _TRAIN_FIELDS})
    return model, train


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    return ModelConfig(**{k: v for k, v in data.items() if k in _MODEL_FIELDS})


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in data.items() if k in _TRAIN_FIELDS})


__all__ = ["ModelConfig", "TrainConfig", "PRESETS", "Preset", "asdict", "build_configs", "get_preset"]
