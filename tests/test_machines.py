"""The machines people have: Muon's orthogonalisation in bfloat16 only where the hardware multiplies
bfloat16 natively (our own Muon, step for step torch's), the device decision table (CPUs with and
without native bfloat16, Apple GPUs, CUDA before and after Ampere), and finetuning with AdamW at a
small constant rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nanogpt_cli import device as device_module
from nanogpt_cli.device import default_compile, native_bfloat16, resolve_dtype
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.optim import Muon, orthogonalize_dtype
from nanogpt_cli.quantize import check_quantize

AVX2_EMULATION = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
TRAIN = ["--dataset", "poems", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
         "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0", "--quiet"]


def _matrices(seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(24, 96), torch.randn(96, 24), torch.randn(32, 32)]


def _step_both(ours: Muon, theirs: torch.optim.Optimizer, a: list[torch.Tensor], b: list[torch.Tensor], steps: int):
    for _ in range(steps):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()


@pytest.mark.parametrize("nesterov", [True, False])
def test_our_muon_is_torchs_step_for_step_in_bfloat16(nesterov):
    a = [p.requires_grad_() for p in _matrices()]
    b = [p.detach().clone().requires_grad_() for p in a]
    ours = Muon(a, lr=0.04, weight_decay=0.01, nesterov=nesterov, orthogonalize_dtype=torch.bfloat16)
    theirs = torch.optim.Muon(b, lr=0.04, weight_decay=0.01, nesterov=nesterov)
    _step_both(ours, theirs, a, b, steps=4)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert all(torch.equal(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"])
               for p, q in zip(a, b, strict=True))


def test_a_torch_muon_state_resumes_in_ours_exactly():
    """Checkpoints written while nanogpt used torch.optim.Muon hold its state dict: ours loads it and
    continues as torch's would."""
    a = [p.requires_grad_() for p in _matrices(1)]
    b = [p.detach().clone().requires_grad_() for p in a]
    theirs = torch.optim.Muon(b, lr=0.02, weight_decay=0.0)
    warm = torch.optim.Muon(a, lr=0.02, weight_decay=0.0)
    _step_both(warm, theirs, a, b, steps=3)
    ours = Muon(a, orthogonalize_dtype=torch.bfloat16)
    ours.load_state_dict(warm.state_dict())
    assert ours.param_groups[0]["lr"] == 0.02 and ours.param_groups[0]["weight_decay"] == 0.0
    _step_both(ours, theirs, a, b, steps=3)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_float32_orthogonalisation_orthogonalises():
    update = _matrices(2)[0]
    p = torch.zeros(24, 96, requires_grad=True)
    optimizer = Muon([p], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False, orthogonalize_dtype=torch.float32)
    p.grad = update.clone()
    optimizer.step()
    singular = torch.linalg.svdvals(-p.detach())
    assert p.dtype == torch.float32 and 0.5 < singular.min() and singular.max() < 1.5  # all near 1, none 0


class _BF16Products(TorchDispatchMode):
    """Counts matrix products with a bfloat16 operand."""

    PRODUCTS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addbmm"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.PRODUCTS and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("native", [False, True])
def test_a_muon_step_multiplies_bfloat16_only_where_native(cli, home, small_text, monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_native_bfloat16", lambda: native)
    assert cli("prepare", small_text).exit_code == 0
    with _BF16Products() as products:
        result = cli("train", "--run", "r", "--optimizer", "muon", "--max-iters", "2", "--eval-interval", "2",
                     "--device", "cpu", *TRAIN)
    assert result.exit_code == 0, result.output
    # 2 steps x 8 block matrices (4 a layer) x 5 Newton-Schulz iterations x 3 products each
    assert products.count == (2 * 8 * 5 * 3 if native else 0)
    info = json.loads((home / "runs" / "r" / "config.json").read_text())
    assert info["muon_orthogonalize"].startswith("bfloat16" if native else "float32")


def test_the_run_header_and_info_say_how_muon_orthogonalises(cli, home, small_text, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_native_bfloat16", lambda: False)
    assert cli("prepare", small_text).exit_code == 0
    args = [a for a in TRAIN if a != "--quiet"]
    result = cli("train", "--run", "r", "--optimizer", "muon", "--max-iters", "2", "--eval-interval", "2", *args)
    assert result.exit_code == 0, result.output
    assert "Muon orthogonalises in float32 (a CPU without native bfloat16" in result.output
    shown = cli("info", "r")
    assert "Muon orthogonalised in float32 (a CPU without native bfloat16" in shown.output
    adamw = cli("train", "--run", "a", "--optimizer", "adamw", "--max-iters", "2", "--eval-interval", "2", *args)
    assert "Muon" not in adamw.output


def test_the_avx2_emulation_turns_native_bfloat16_off():
    """The emulation benchmarks and docs use: with PyTorch and oneDNN capped at AVX2, nanogpt sees a CPU
    without native bfloat16 (whatever this CPU has)."""
    probe = "from nanogpt_cli.device import cpu_native_bfloat16 as f; import torch; " \
            "print(f(), torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, **AVX2_EMULATION}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "AVX2"]
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}  # AVX-512 without its bfloat16 instructions
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "False"


# ------------------------------------------------------------------------------- the decision table


@pytest.fixture
def cuda_of(monkeypatch):
    def set_capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: major >= 8)
    return set_capability


@pytest.mark.parametrize(("where", "native", "orthogonalize"), [
    ("cpu with AVX512-BF16", True, torch.bfloat16),
    ("cpu without", False, torch.float32),
    ("mps", False, torch.float32),
    ("cuda 7.5 (Turing)", False, torch.float32),
    ("cuda 8.0 (Ampere)", True, torch.bfloat16),
    ("cuda 9.0 (Hopper)", True, torch.bfloat16),
])
def test_the_device_decision_table(monkeypatch, cuda_of, where, native, orthogonalize):
    kind = where.split()[0]
    if kind == "cpu":
        monkeypatch.setattr(device_module, "cpu_native_bfloat16", lambda: "without" not in where)
    if kind == "cuda":
        major, minor = where.split()[1].split(".")
        cuda_of(int(major), int(minor))
    device = torch.device(kind)
    assert native_bfloat16(device).native is native
    assert orthogonalize_dtype(device) == orthogonalize
    # the forward pass's precision: autocast only on CUDA (bfloat16 where native, else float16 + scaler)
    expected = {"cpu": torch.float32, "mps": torch.float32}.get(kind, torch.bfloat16 if native else torch.float16)
    assert resolve_dtype("auto", device) == expected
    assert default_compile(device) is (kind == "cuda")


def test_apple_gpus_get_float32_no_compile_and_no_int8():
    mps = torch.device("mps")
    assert resolve_dtype("auto", mps) == torch.float32
    assert default_compile(mps) is False
    with pytest.raises(NanoGPTError, match="runs on the CPU only.*not on mps; add --device cpu"):
        check_quantize("int8", mps, torch.float32)


# -------------------------------------------------------------------------------------- finetuning


def _evals(home, run):
    rows = [json.loads(line) for line in (home / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"]


@pytest.fixture
def pretrained(cli, home, small_text):
    """A model of the default preset's architecture, trained well on the poems in this test."""
    assert cli("prepare", small_text).exit_code == 0
    result = cli("train", "--run", "base", "--max-iters", "400", "--eval-interval", "400", "--lr", "3e-3", *TRAIN)
    assert result.exit_code == 0, result.output
    return "base"


def test_finetuning_uses_adamw_at_a_constant_small_rate_and_keeps_what_it_knew(cli, home, pretrained):
    base = json.loads((home / "runs" / pretrained / "config.json").read_text())
    assert base["train_config"]["optimizer"] == "muon"  # the default preset pretrained it with Muon
    base_loss = _evals(home, pretrained)[-1]["val_loss"]
    finetune = ["--init-from", pretrained, "--max-iters", "20", "--eval-interval", "1", "--dataset", "poems",
                "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0", "--quiet"]
    result = cli("train", "--run", "ft", *finetune)
    assert result.exit_code == 0, result.output
    train = json.loads((home / "runs" / "ft" / "config.json").read_text())["train_config"]
    assert (train["optimizer"], train["lr"], train["min_lr"], train["warmup_iters"]) == ("adamw", 3e-5, 3e-5, 0)
    evals = _evals(home, "ft")
    start = evals[0]["val_loss"]
    assert evals[0]["iter"] == 0 and start == pytest.approx(base_loss, abs=0.02)  # the pretrained model's loss
    assert len(evals) == 21 and max(e["val_loss"] for e in evals) <= start + 0.05
    assert {e["lr"] for e in evals} == {3e-5}  # constant: no warmup, no decay
    # The control: what the preset's own rates did to it before (Muon at the preset's peak, no warmup).
    result = cli("train", "--run", "muon", *finetune, "--optimizer", "muon", "--lr", "3e-3", "--warmup-iters", "0")
    assert result.exit_code == 0, result.output
    assert max(e["val_loss"] for e in _evals(home, "muon")) > start + 0.05


def test_finetuning_takes_the_rate_and_optimizer_it_is_given(cli, home, pretrained):
    result = cli(
        "train",
        "--run",
        "ft",
        "--init-from",
        pretrained,
        "--lr",
        "1e-4",
        "--optimizer",
        "muon",
        "--max-iters",
        "4",
        "--eval-interval",
        "2",
        "--dataset",
        "poems",
        "--batch-size",
        "4",
        "--eval-iters",
        "2",
        "--sample-tokens",
        "0",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    train = json.loads((home / "runs" / "ft" / "config.json").read_text())["train_config"]
    assert (train["optimizer"], train["lr"], train["min_lr"]) == ("muon", 1e-4, 1e-4)
    ckpt = torch.load(home / "runs" / "ft" / "ckpt.pt", weights_only=True)
    assert set(ckpt["optimizer"]) == {"adamw", "muon"}


def test_print_config_with_init_from_prints_what_the_weights_fix(cli, home, trained_run):
    """`trained_run` is nanoGPT's network (learned positions, LayerNorm, GELU, 1 x 16); the default
    preset's would be rope / rmsnorm / swiglu, 4 x 128."""
    result = cli("train", "--print-config", "--init-from", trained_run, "--dataset", "poems")
    assert result.exit_code == 0, result.output
    text = result.output
    for line in ('pos = "learned"', 'norm = "layernorm"', 'mlp = "gelu"', "n_layer = 1", "n_embd = 16",
                 'optimizer = "adamw"', "lr = 3e-05", "min_lr = 3e-05", "warmup_iters = 0",
                 f'init_from = "{trained_run}"'):
        assert f"\n{line}\n" in text, line
    # and the printed file trains as printed
    (home / "ft.toml").write_text(text)
    again = cli("train", "--config", home / "ft.toml", "--run", "ft", "--max-iters", "2", "--eval-interval", "2",
                "--sample-tokens", "0", "--quiet")
    assert again.exit_code == 0, again.output


@pytest.fixture
def apple_gpu(monkeypatch):
    """This machine as a Mac with an Apple GPU, as far as choosing settings goes."""
    monkeypatch.setattr(device_module, "mps_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_an_apple_gpu_gets_the_mps_preset_with_muon_in_float32(cli, apple_gpu, monkeypatch):
    result = cli("train", "--print-config")
    assert result.exit_code == 0, result.output
    for line in ('preset = "mps"', 'optimizer = "muon"', 'pos = "rope"', "n_embd = 192"):
        assert f"\n{line}\n" in result.output, line
    assert orthogonalize_dtype(torch.device("mps")) == torch.float32


def test_apple_gpu_settings_that_users_tripped_on_are_said_before_training(apple_gpu):
    from nanogpt_cli.plan import plan_run

    assert plan_run(None, {}).notes == []  # the defaults: float32, no compile
    notes = plan_run(None, {"compile": True, "dtype": "bfloat16"}).notes
    assert len(notes) == 2 and "prototype" in notes[0] and "--no-compile" in notes[0] and "slower" in notes[1]


def test_int8_on_an_apple_gpu_is_one_line(cli, trained_run, apple_gpu):
    result = cli("sample", "--device", "mps", "--quantize", "int8", "--max-new-tokens", "3")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: --quantize int8 runs on the CPU only (PyTorch's int8 kernels are CPU kernels), not on mps; "
        "add --device cpu, or leave --quantize out"]
