"""How many CPU threads torch computes with.

torch starts one thread per core, and its threads spin while they wait for each other. On a machine
that is also doing other work (a browser, a second training) that spinning costs far more than the
threads gain: with a second `nanogpt train` on the same 2 cores, `nanogpt eval` took 1.9x as long
and sampling ran at 28% of the speed of one thread (benchmarks/threads.py, docs/performance.md).

So `eval` and `sample` look before they choose. `mark_start()` (the CLI's first step) notes the
CPU time of the whole machine and of this process; when the command is ready to compute (about
1.5 s later: torch imported, before the model loads) `choose` measures how many cores other processes kept
busy meanwhile, from /proc/stat, and leaves them out. An idle machine keeps torch's own count.
`--threads N` (or NANOGPT_THREADS, or OMP_NUM_THREADS, which torch reads itself) decides instead.
Training keeps torch's count unless told: a run's numbers can depend on its thread count, and a
resumed run must compute what the run that never stopped would have.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# Below this many cores' worth of other work the machine counts as idle (background noise).
BUSY = 0.5

_start: tuple[float, float, float] | None = None  # wall clock, busy CPU seconds of the machine, of this process


@dataclass(frozen=True)
class Threads:
    count: int
    source: str  # what decided it: "--threads", "NANOGPT_THREADS", "OMP_NUM_THREADS" or "" (the default)
    busy: float | None = None  # cores other work kept busy, where that made the count lower
    cores: int | None = None

    def describe(self) -> str:
        text = f"{self.count} thread{'s' if self.count != 1 else ''}"
        if self.busy is not None:
            text += f"; {self.busy:.1f} of {self.cores} cores were busy with other work (--threads to choose)"
        return text


def _machine_busy_seconds() -> float | None:
    """CPU seconds spent busy so far on the cores this process may run on (None without /proc/stat)."""
    try:
        allowed = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        with open("/proc/stat", encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and not line.startswith("cpu ")]
    except (OSError, AttributeError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = 0
    for fields in lines:
        if fields[0] in allowed and len(fields) >= 9:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            busy += user + nice + system + irq + softirq + steal
    return busy / ticks


def mark_start() -> None:
    """Note the machine's and this process's CPU time now, to measure the other work later."""
    global _start
    busy = _machine_busy_seconds()
    _start = None if busy is None else (time.monotonic(), busy, time.process_time())


def others_busy() -> float | None:
    """Cores that other processes kept busy since mark_start (None where it cannot be measured, or
    over too short a time to say)."""
    busy = _machine_busy_seconds()
    if _start is None or busy is None:
        return None
    seconds = time.monotonic() - _start[0]
    if seconds < 0.3:
        return None
    return max(0.0, (busy - _start[1]) - (time.process_time() - _start[2])) / seconds


def choose(requested: int | None, adapt: bool, cores: int) -> Threads:
    """The thread count: `requested` (--threads), else NANOGPT_THREADS, else OMP_NUM_THREADS's (torch's
    `cores` then), else torch's `cores` less the cores other work keeps busy (when `adapt`)."""
    if requested is not None:
        return Threads(requested, "--threads")
    from_env = os.environ.get("NANOGPT_THREADS", "").strip()
    if from_env:
        if not from_env.isdigit() or int(from_env) < 1:
            from nanogpt_cli.errors import NanoGPTError

            raise NanoGPTError(f"NANOGPT_THREADS must be a whole number of at least 1, got {from_env[:20]!r}")
        return Threads(int(from_env), "NANOGPT_THREADS")
    if os.environ.get("OMP_NUM_THREADS"):
        return Threads(cores, "OMP_NUM_THREADS")
    busy = others_busy() if adapt else None
    if busy is None or busy < BUSY or cores <= 1:
        return Threads(cores, "")
    return Threads(max(1, cores - round(busy)), "", busy, cores)


_chosen: Threads | None = None
_torch_default: int | None = None  # torch's own count, before any command changed it


def use(requested: int | None, adapt: bool) -> Threads:
    """Choose (see `choose`) and set torch's thread count; remembered for `current()`."""
    global _chosen, _torch_default
    import torch

    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    _chosen = choose(requested, adapt, _torch_default)
    if _chosen.count != torch.get_num_threads():
        torch.set_num_threads(_chosen.count)
    return _chosen


def current() -> Threads:
    """The count torch uses now, with why, for the run's header."""
    import torch

    count = torch.get_num_threads()
    if _chosen is not None and _chosen.count == count:
        return _chosen
    return Threads(count, "")
