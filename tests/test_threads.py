"""CPU threads: --threads, NANOGPT_THREADS, and fewer threads while other work keeps the cores busy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from nanogpt_cli import threads


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    """Each test may change torch's count; the suite goes on with the one it had."""
    before = torch.get_num_threads()
    for name in ("_start", "_chosen", "_torch_default"):  # the module's memory, as the rest of the suite had it
        monkeypatch.setattr(threads, name, getattr(threads, name))
    monkeypatch.delenv("NANOGPT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("busy, cores, expected", [
    (None, 2, 2),  # not measurable (no /proc/stat, or no start mark): torch's own count
    (0.2, 2, 2),  # background noise: an idle machine
    (1.4, 2, 1),  # a second training on a 2-core laptop
    (3.0, 8, 5),
    (9.0, 8, 1),  # never fewer than one
])
def test_the_default_leaves_out_the_cores_other_work_keeps_busy(monkeypatch, busy, cores, expected):
    monkeypatch.setattr(threads, "others_busy", lambda: busy)
    chosen = threads.choose(None, adapt=True, cores=cores)
    assert chosen.count == expected
    said = chosen.describe()
    if expected < cores:
        assert said == (f"{expected} thread{'s' if expected != 1 else ''}; {busy:.1f} of {cores} cores were busy "
                        "with other work (--threads to choose)")
    else:
        assert said == f"{cores} threads"


def test_the_users_choice_wins_and_training_does_not_adapt(monkeypatch):
    monkeypatch.setattr(threads, "others_busy", lambda: 1.9)
    assert threads.choose(3, adapt=True, cores=2).count == 3
    assert threads.choose(None, adapt=False, cores=2) == threads.Threads(2, "")  # a run's numbers stay its own
    monkeypatch.setenv("NANOGPT_THREADS", "1")
    assert threads.choose(None, adapt=False, cores=2) == threads.Threads(1, "NANOGPT_THREADS")
    assert threads.choose(4, adapt=True, cores=2).count == 4  # the flag beats the variable
    monkeypatch.setenv("NANOGPT_THREADS", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torch read it at start: its count is what the user asked
    assert threads.choose(None, adapt=True, cores=1) == threads.Threads(1, "OMP_NUM_THREADS")


def test_other_work_is_measured_from_the_machines_cpu_time():
    if threads._machine_busy_seconds() is None:
        pytest.skip("no /proc/stat on this system")
    threads.mark_start()
    spin = "import time\nend = time.time() + 1.2\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(1.0)  # this process sleeps: what is busy is the spinner (and whatever else runs here)
    busy = threads.others_busy()
    spinner.wait()
    assert busy is not None and busy >= 0.5


def test_threads_flag_reaches_torch_and_the_run_header(cli, home, small_text, tiny):
    cli("prepare", small_text)
    loud = [flag for flag in tiny if flag not in ("-q", "--quiet")]  # the header is what this test reads
    result = cli("train", "--dataset", "poems", "--run", "one", "--threads", "1", *loud)
    assert result.exit_code == 0 and "device cpu (1 thread)," in result.stderr
    assert torch.get_num_threads() == 1
    result = cli("sample", "--run", "one", "--threads", "1", "--max-new-tokens", "5")
    assert result.exit_code == 0
    for command in (["sample", "--threads", "0"], ["eval", "--threads", "-1"], ["train", "--threads", "0"]):
        bad = cli(*command)
        assert bad.exit_code == 2 and "Invalid value for '--threads'" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_a_bad_threads_variable_is_one_line(cli, trained_run, monkeypatch):
    monkeypatch.setenv("NANOGPT_THREADS", "many")
    result = cli("sample", "--max-new-tokens", "5")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: NANOGPT_THREADS must be a whole number of at least 1, got 'many'"
