"""Helpers shared by the benchmark scripts (run them as `python benchmarks/NAME.py`)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

# An AVX2-only CPU without native bfloat16 (most laptops), reproduced on an AVX-512 one: PyTorch's own
# kernels, oneDNN (matrix products, bfloat16 included) and fbgemm (int8 products) are each capped at
# AVX2. docs/performance.md shows the check that this reproduces the slow bfloat16 product.
AVX2_EMULATION = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
CPU_KINDS = {"native": {}, "avx2": AVX2_EMULATION}


def cpu_kind_env(kind: str) -> dict[str, str]:
    """The environment for a child process on this CPU kind ("native", or "avx2" emulated)."""
    env = {k: v for k, v in os.environ.items() if k not in AVX2_EMULATION}
    return {**env, **CPU_KINDS[kind]}


def machine(env: dict[str, str] | None = None) -> str:
    """lscpu's model and the flags that matter here, and what torch sees under `env` (a child process
    reports it, so the emulation's variables take effect): its CPU capability and whether bfloat16
    products are native."""
    try:
        fields = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                      .stdout.splitlines() if ":" in line)
    except OSError:
        fields = {}
    flags = fields.get("Flags", "").split()
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    probe = ("import torch; from nanogpt_cli.device import cpu_native_bfloat16; "
             "print(torch.backends.cpu.get_cpu_capability(), cpu_native_bfloat16())")
    seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout.split()
    capability, native = seen if len(seen) == 2 else ("?", "?")
    emulated = " (AVX2 emulated: " + " ".join(f"{k}={v}" for k, v in AVX2_EMULATION.items()) + ")" \
        if env and all(env.get(k) == v for k, v in AVX2_EMULATION.items()) else ""
    return (f"{fields.get('Model name', '?').strip()} (family {fields.get('CPU family', '?').strip()}, model "
            f"{fields.get('Model', '?').strip()}), {os.cpu_count()} cores, flags {' '.join(wanted) or 'none'}; "
            f"torch CPU capability {capability}, native bfloat16 {native}{emulated}")


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss would also
    count the parent's peak, which a child inherits."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
