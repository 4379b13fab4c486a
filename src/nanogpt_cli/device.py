"""Which device and numeric precision a run uses.

`resolve_device("auto")` picks cuda, then mps, then cpu. `resolve_dtype` turns --dtype into a torch
dtype: auto means bfloat16 autocast on CUDA GPUs that support it, float16 (with a gradient scaler) on
other CUDA GPUs, and float32 everywhere else. `autocast` returns the matching context manager.
"""

from __future__ import annotations

import contextlib

import torch

from nanogpt_cli.errors import NanoGPTError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if mps_available():
        found.append("mps")
    return found + ["cpu"]


def auto_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if mps_available() else "cpu"


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device(auto_device())
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NanoGPTError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NanoGPTError(f"--device {name}: no CUDA GPU is available here; use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NanoGPTError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps":
        if not mps_available():
            raise NanoGPTError(f"--device {name}: Apple's MPS backend is not available here; use --device auto or cpu")
    elif device.type != "cpu":
        raise NanoGPTError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    name = (name or "auto").strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise NanoGPTError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    dtype = DTYPES[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise NanoGPTError("--dtype float16 is not supported on the CPU; use bfloat16 or float32")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise NanoGPTError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16 support; use float16")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for forward passes; a no-op in float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


# Dense bf16/fp16 tensor-core peaks in FLOP/s, by a substring of torch.cuda.get_device_name().
# (float32 runs use TF32 on Ampere and newer; its peak is half of these.)
GPU_PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
    "L4": 121e12, "A10G": 125e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12,
    "T4": 65e12,
}


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's peak FLOP/s for this dtype, if known (for MFU); None on CPU, MPS or unknown GPUs."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in GPU_PEAK_FLOPS.items():
        if key in name:
            return flops if dtype != torch.float32 else flops / 2
    return None
