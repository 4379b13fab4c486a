"""The optimizers and the learning-rate schedule.

`make_optimizer` builds AdamW over every parameter (weight decay on matrices only), or, with
`optimizer = "muon"`, Muon for the 2-D weight matrices inside the transformer blocks plus AdamW for
the rest (embeddings, head, norms, biases), which Muon is not meant for. Both are stepped,
checkpointed and restored together as one `Optimizers`.

`Muon` is torch.optim.Muon's algorithm, step for step, with one difference: its Newton-Schulz
orthogonalisation runs in the dtype it is given. torch's always runs it in bfloat16, which is the
fast choice only where bfloat16 products are native (device.native_bfloat16); on an AVX2 CPU it made
a whole training step about ten times slower than float32. Its state (a momentum buffer per matrix)
and hyperparameters have torch's names, so checkpoints written with torch's Muon resume with it.

`lr_at` is the schedule: linear warmup, then cosine decay or warmup-stable-decay (WSD) to min_lr.
Muon's rate follows the same schedule, scaled to its own peak.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nanogpt_cli.config import TrainConfig
from nanogpt_cli.device import native_bfloat16


def lr_at(step: int, cfg: TrainConfig, fraction: float | None = None) -> float:
    """Linear warmup to cfg.lr, then cosine decay (or, for wsd, a constant rate and a linear decay
    over the last decay_frac) to cfg.min_lr at decay_iters, then flat. A run with a time budget passes
    the `fraction` of it used so far: after the warmup steps, the schedule follows that instead."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if fraction is not None:
        return _lr_by_fraction(min(fraction, 1.0), cfg)
    if step >= cfg.decay_iters:
        return cfg.min_lr
    if cfg.schedule == "wsd":
        decay_start = max(cfg.warmup_iters, cfg.decay_iters - round(cfg.decay_frac * cfg.decay_iters))
        if step < decay_start:
            return cfg.lr
        return cfg.lr + (cfg.min_lr - cfg.lr) * (step - decay_start) / max(1, cfg.decay_iters - decay_start)
    ratio = (step - cfg.warmup_iters) / max(1, cfg.decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def _lr_by_fraction(fraction: float, cfg: TrainConfig) -> float:
    if cfg.schedule == "wsd":
        decay_start = 1.0 - cfg.decay_frac
        if fraction < decay_start:
            return cfg.lr
        return cfg.lr + (cfg.min_lr - cfg.lr) * (fraction - decay_start) / cfg.decay_frac
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * fraction)) * (cfg.lr - cfg.min_lr)


# The quintic's coefficients (Keller Jordan's, as torch.optim.Muon has them).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: torch.Tensor, dtype: torch.dtype, steps: int = 5, eps: float = 1e-7,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS) -> torch.Tensor:
    """The quintic Newton-Schulz iteration: a matrix with the update's singular vectors and singular
    values near 1 (coefficients chosen for a steep slope at zero rather than exact convergence). It
    works on the wide orientation, where the Gram matrix is the smaller one."""
    a, b, c = coefficients
    x = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # a spectral norm of at most 1, where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b*G + c*G^2
        x = torch.addmm(x, poly, x, beta=a)  # a*X + (b*G + c*G^2) X
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Momentum (Nesterov by default) whose update is orthogonalised before it is applied, with a rate
    scaled by sqrt(max(1, rows / cols)) so tall and wide matrices move alike. `orthogonalize_dtype`
    is not a hyperparameter: it depends on the machine, so it is neither saved nor restored."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None,
                 orthogonalize_dtype: torch.dtype = torch.bfloat16):
        if adjust_lr_fn not in (None, "original"):
            raise ValueError(f"unsupported adjust_lr_fn {adjust_lr_fn!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)
        self.orthogonalize_dtype = orthogonalize_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalize(update, self.orthogonalize_dtype, group["ns_steps"], group["eps"],
                                       group["ns_coefficients"])
                p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))
        return loss


def orthogonalize_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the hardware multiplies it natively (faster, and accurate enough for an
    iteration that only approximates), float32 everywhere else."""
    return torch.bfloat16 if native_bfloat16(device).native else torch.float32


def describe_orthogonalize(device: torch.device) -> str:
    """The choice above in words, for the run's header and `info RUN`."""
    support = native_bfloat16(device)
    return f"{'bfloat16' if support.native else 'float32'} ({support.reason})"


class Optimizers:
    """Optimizers stepped as one: their parameter groups, state and zeroing. Each group carries an
    `lr_scale`, its peak rate over cfg.lr, so one schedule drives them all."""

    def __init__(self, parts: dict[str, torch.optim.Optimizer]):
        self.parts = parts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.parts.values() for group in optimizer.param_groups]

    def set_lr(self, lr: float) -> None:
        for group in self.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def unscale_(self, scaler: torch.amp.GradScaler) -> None:
        """Undo the fp16 loss scaling on every gradient (before clipping them)."""
        for optimizer in self.parts.values():
            scaler.unscale_(optimizer)

    def step(self, scaler: torch.amp.GradScaler) -> None:
        """Step every optimizer through the grad scaler (a plain step when it is disabled)."""
        for optimizer in self.parts.values():
            scaler.step(optimizer)
        scaler.update()

    def zero_grad(self) -> None:
        for optimizer in self.parts.values():
            optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {name: optimizer.state_dict() for name, optimizer in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "param_groups" in state:  # a checkpoint from before there could be two: one AdamW
            state = {"adamw": state}
        for name, optimizer in self.parts.items():
            optimizer.load_state_dict(state[name])
            for param, kept in optimizer.state.items():  # torch loads any values; the next step would fail
                moments = ["momentum_buffer"] if isinstance(optimizer, Muon) else ["exp_avg", "exp_avg_sq"]
                ok = all(isinstance(kept.get(k), torch.Tensor) and kept[k].shape == param.shape
                         and kept[k].dtype == param.dtype for k in moments)
                if not ok or not (isinstance(optimizer, Muon) or isinstance(kept.get("step"), torch.Tensor)):
                    raise ValueError(f"{name}'s state for a {tuple(param.shape)} parameter is incomplete")
            for group in optimizer.param_groups:
                numbers = [group.get(k, 0.0) for k in ("lr", "eps", "weight_decay", "momentum")]
                betas = group.get("betas", (0.0, 0.0) if isinstance(optimizer, Muon) else None)
                numbers += list(betas) if isinstance(betas, (tuple, list)) and len(betas) == 2 else [None]
                if not all(type(n) in (int, float) and math.isfinite(n) for n in numbers):
                    raise ValueError(f"{name}'s settings are not numbers")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Optimizers:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    muon = [p for name, p in named if cfg.optimizer == "muon" and p.dim() == 2 and name.startswith("transformer.h.")]
    taken = {id(p) for p in muon}
    rest = [p for _, p in named if id(p) not in taken]
    # AdamW decays only the matrices (linear and embedding weights); biases and norm gains stay free.
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    # The fused kernel: on a CPU it made a step of the cpu preset's shape about 5% faster (performance.md).
    extra = {"fused": True} if device.type in ("cuda", "cpu") else {}
    parts: dict[str, torch.optim.Optimizer] = {
        "adamw": torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)
    }
    if muon:
        parts["muon"] = Muon([{"params": muon, "lr_scale": cfg.muon_lr / cfg.lr}], lr=cfg.muon_lr,
                             momentum=cfg.muon_momentum, weight_decay=0.0,
                             orthogonalize_dtype=orthogonalize_dtype(device))
    return Optimizers(parts)
