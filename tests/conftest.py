"""Shared fixtures: every test gets its own NANOGPT_HOME; tiny models keep the suite fast."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanogpt_cli.cli import app

SHARED_DATA = Path(os.environ.get("NANOGPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"

# A model small enough to train in about a second on one CPU core: nanoGPT's network and recipe (the
# default `cpu` preset adds options that, for one, GPT-2's layout cannot express), at a tiny size.
TINY = [
    "--preset",
    "nanogpt-cpu",
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block-size",
    "16",
    "--batch-size",
    "4",
    "--max-iters",
    "20",
    "--eval-interval",
    "10",
    "--eval-iters",
    "2",
    "--sample-tokens",
    "20",
    "--quiet",
]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "nanogpt-home"
    monkeypatch.setenv("NANOGPT_HOME", str(home))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("NANOGPT_DEBUG", raising=False)
    return home


@pytest.fixture
def shakespeare_text() -> str:
    return (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture
def gpt2_cache(home) -> Path:
    """Seed the tiktoken cache with the GPT-2 ranks from shared/data, as a user would offline."""
    cache = home / "cache" / "tiktoken"
    cache.mkdir(parents=True)
    shutil.copy(SHARED_DATA / "r50k_base.tiktoken", cache / hashlib.sha1(R50K_URL.encode()).hexdigest())
    return cache


@pytest.fixture
def fresh_tiktoken(monkeypatch):
    """Forget encodings tiktoken already loaded in this process, so a test sees the disk as it is."""
    import tiktoken.registry

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


def write_small_text(path: Path) -> Path:
    """About 20 KB of text with a small alphabet, so tiny models learn something quickly."""
    lines = ["the quick brown fox jumps over the lazy dog.", "to be or not to be, that is the question.",
             "all the world's a stage, and all the men and women merely players."]
    path.write_text("\n".join(lines[i % 3] for i in range(450)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def small_text(tmp_path) -> Path:
    return write_small_text(tmp_path / "poems.txt")


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Path:
    """A home holding the 'poems' dataset and the tiny trained run 'tiny', built once per session."""
    template = tmp_path_factory.mktemp("trained") / "nanogpt-home"
    text = write_small_text(tmp_path_factory.mktemp("text") / "poems.txt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NANOGPT_HOME", str(template))
        runner = CliRunner()
        assert runner.invoke(app, ["prepare", str(text)]).exit_code == 0
        result = runner.invoke(app, ["train", "--dataset", "poems", "--run", "tiny", *TINY])
        assert result.exit_code == 0, result.output
    return template


@pytest.fixture
def trained_run(home, trained_home) -> str:
    """A tiny trained run named 'tiny' on the 'poems' dataset, copied into this test's own home."""
    shutil.copytree(trained_home, home, dirs_exist_ok=True)
    return "tiny"


def signal_at(monkeypatch, at_iter: int, *signals: int) -> None:
    """Send this process `signals` (real ones, to the handler training installs) once training has
    logged iteration `at_iter`: the in-process twin of signalling a `nanogpt train` subprocess."""
    from nanogpt_cli.runs import MetricsLog

    write = MetricsLog.write
    sent = []

    def write_then_signal(self, row):
        write(self, row)
        if row["iter"] >= at_iter and not sent:
            sent.append(row["iter"])
            for sig in signals:
                os.kill(os.getpid(), sig)

    monkeypatch.setattr(MetricsLog, "write", write_then_signal)
