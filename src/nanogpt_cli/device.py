"""Which device and numeric precision a run uses.

`resolve_device("auto")` picks cuda, then mps, then cpu. `resolve_dtype` turns --dtype into a torch
dtype: auto means bfloat16 autocast on CUDA GPUs that support it, float16 (with a gradient scaler) on
other CUDA GPUs, and float32 everywhere else. `autocast` returns the matching context manager.

`native_bfloat16` says whether the hardware multiplies bfloat16 matrices natively, and so faster than
float32: CUDA GPUs from Ampere (compute capability 8.0) on, and CPUs with AVX512-BF16 or AMX. Where it
does not (AVX2 and NEON CPUs, Apple GPUs, older NVIDIA GPUs) a bfloat16 product is emulated and runs
several times slower than float32, so Muon's orthogonalisation runs in float32 there.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.fastpath import cpu_has_bfloat16_instructions  # torch's feature probes are private APIs

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


def default_compile(device: torch.device) -> bool:
    """Whether a run compiles its model when --compile is not given: on CUDA only. On a CPU compiling
    costs more start-up than small models win back, and on Apple GPUs torch.compile is a prototype
    that users have seen produce NaN losses."""
    return device.type == "cuda"


def compile_with_fallback(model: torch.nn.Module, warm_up, warn) -> torch.nn.Module | None:
    """torch.compile `model` and run `warm_up(compiled)`, where compile failures show (a missing C++
    toolchain, an unsupported op...). A failure there falls back to eager mode: `warn(message)` and
    None. Errors after the warm-up are real errors."""
    compiled = torch.compile(model)
    try:
        warm_up(compiled)
        return compiled
    except Exception as exc:  # the compiler fails in many ways
        warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); continuing without it "
             "(--no-compile skips it)")
        return None
    finally:
        model.zero_grad(set_to_none=True)


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for forward passes; a no-op in float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) that include native bfloat16 dot products.
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
              "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL")


def cpu_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX) and torch may use it.

    The caps that emulate an older CPU count too: PyTorch's ATEN_CPU_CAPABILITY below AVX512 and
    oneDNN's ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) below AVX512_CORE_BF16 make bfloat16 products
    as slow as on a CPU without it (docs/performance.md shows how that was checked)."""
    isa_cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    if isa_cap not in _BF16_ISAS or not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    return cpu_has_bfloat16_instructions()


@dataclass(frozen=True)
class Bfloat16Support:
    """Whether a device multiplies bfloat16 matrices natively, and why (shown in a run's header)."""

    native: bool
    reason: str


def native_bfloat16(device: torch.device) -> Bfloat16Support:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return Bfloat16Support(True, f"a CUDA GPU of compute capability {major}.{minor}")
        return Bfloat16Support(False, f"a CUDA GPU of compute capability {major}.{minor} (before Ampere)")
    if device.type == "mps":
        return Bfloat16Support(False, "an Apple GPU")
    if cpu_native_bfloat16():
        return Bfloat16Support(True, "a CPU with AVX512-BF16/AMX")
    return Bfloat16Support(False, f"a CPU without native bfloat16 ({torch.backends.cpu.get_cpu_capability()})")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    from nanogpt_cli.threads import current

    return f"cpu ({current().describe()})"


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
