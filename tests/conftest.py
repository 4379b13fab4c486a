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
_TINY = ["--preset", "nanogpt-cpu", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
         "--batch-size", "4", "--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--sample-tokens",
         "20", "--quiet"]


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


class _Result:
    """A CliRunner result that notes whether the test read its exit code."""

    def __init__(self, result):
        self._result, self.checked = result, False

    def __getattr__(self, name: str):
        if name == "exit_code":
            self.checked = True
        return getattr(self._result, name)


@pytest.fixture
def cli():
    """cli(*args): run `nanogpt args` in this process. A test that never reads a call's exit code
    expects 0: the fixture fails the test at its end if such a call exited otherwise."""
    runner = CliRunner()
    results: list[_Result] = []

    def invoke(*args: str, input: str | None = None):
        results.append(_Result(runner.invoke(app, [str(a) for a in args], input=input)))
        return results[-1]

    yield invoke
    for result in results:
        if not result.checked and result._result.exit_code != 0:
            pytest.fail(f"a `nanogpt` call exited {result._result.exit_code} and the test never checked: "
                        f"{result._result.output[-500:]}")


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
        result = runner.invoke(app, ["train", "--dataset", "poems", "--run", "tiny", *_TINY])
        assert result.exit_code == 0, result.output
    return template


@pytest.fixture
def trained_run(home, trained_home) -> str:
    """A tiny trained run named 'tiny' on the 'poems' dataset, copied into this test's own home."""
    shutil.copytree(trained_home, home, dirs_exist_ok=True)
    return "tiny"


def _signal_at(monkeypatch, at_iter: int, *signals: int) -> None:
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


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """`train` flags for a model small enough to train in about a second (see _TINY)."""
    return list(_TINY)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: Tiny Shakespeare and the GPT-2 BPE ranks."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def signal_at():
    """signal_at(monkeypatch, at_iter, *signals): see _signal_at."""
    return _signal_at


@pytest.fixture(scope="session")
def write_text():
    """write_text(path): about 20 KB of text with a small alphabet at `path` (see write_small_text)."""
    return write_small_text


# Every model option beyond nanoGPT, alone and in the combinations the presets and the ladder use.
MODEL_OPTIONS = [dict(pos="sinusoidal"), dict(pos="rope"), dict(pos="none"), dict(norm="rmsnorm"),
                 dict(mlp="gelu-tanh"), dict(mlp="relu2"), dict(mlp="swiglu"), dict(qk_norm=True), dict(tie=False),
                 dict(softcap=3.0),
                 dict(pos="rope", norm="rmsnorm", mlp="relu2", qk_norm=True, tie=False, softcap=15.0, bias=True),
                 dict(mlp="relu"), dict(mlp="none"), dict(norm="none"), dict(residual=False),
                 dict(mlp="none", norm="none", residual=False, tie=False)]  # the lecture ladder's first steps


def pytest_generate_tests(metafunc):
    """A test that takes `model_options` runs once for each of MODEL_OPTIONS."""
    if "model_options" in metafunc.fixturenames:
        ids = [",".join(f"{k}={v}" for k, v in options.items()) for options in MODEL_OPTIONS]
        metafunc.parametrize("model_options", MODEL_OPTIONS, ids=ids)


@pytest.fixture
def tiny_gpt():
    """tiny_gpt(**options): the same small random GPT every time (vocabulary 40, block 16, 2 layers of 2
    heads, 32 wide), in eval mode, its biases and gains moved off their initial values so they count."""
    import torch

    from nanogpt_cli.config import ModelConfig
    from nanogpt_cli.model import GPT

    def build(**options):
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, **options)).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("weight") or "ln" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        return model

    return build
