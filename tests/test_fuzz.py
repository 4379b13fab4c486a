"""A seeded fuzz run of a few hundred cases (benchmarks/fuzz.py, which runs thousands): malformed
datasets, run folders, checkpoints, run configs, flags and prompts end in exit 0 or one error line,
never a traceback, a hang, a lost file or gigabytes of memory."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fuzz import MAX_RSS_GB, fuzz  # noqa: E402


def test_a_seeded_fuzz_run_finds_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_HOME", str(tmp_path / "unused"))  # the harness points it at its homes
    result = fuzz(cases=120, seed=2026, root=tmp_path)
    assert result["failures"] == [], "\n".join(result["failures"][:20])
    assert result["tally"].get("refused", 0) > 50 and result["tally"].get("ok", 0) > 50  # both kinds were exercised
    assert result["peak_rss_gb"] < MAX_RSS_GB
