"""Looking at and managing runs: `nanogpt plot` (terminal, table, PNG/SVG), `info RUN1 RUN2`, `info --csv`,
sizes on disk, `rm` / `mv` (and their safety), and TensorBoard / W&B logging read back."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from nanogpt_cli import paths


def _second_run(cli, tiny, *flags: str, name: str = "other") -> str:
    result = cli("train", "--dataset", "poems", "--run", name, *tiny, "--max-iters", "30", *flags)
    assert result.exit_code == 0, result.output
    return name


def test_plot_in_a_pipe_is_a_table_of_evaluations(cli, trained_run):
    result = cli("plot")  # the latest run; CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["run", "iter", "train", "loss", "val", "loss"]
    assert [line.split()[:2] for line in lines[1:]] == [[trained_run, "0"], [trained_run, "10"], [trained_run, "20"]]
    tokens = cli("plot", trained_run, "--x", "tokens").stdout.strip().splitlines()
    assert tokens[2].split()[1] == str(10 * 4 * 16)  # iterations x batch x block
    bad = cli("plot", "--x", "epochs")
    assert bad.exit_code == 1 and "--x must be one of iter, tokens, time" in bad.stderr


def _on_a_terminal(args: list[str], env: dict[str, str], columns: int = 90, lines: int = 30) -> str:
    """Run `nanogpt ARGS` with its stdout on a pseudo-terminal of the given size, as a user has it."""
    import fcntl
    import pty
    import struct
    import termios

    main, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    child = subprocess.Popen([sys.executable, "-m", "nanogpt_cli", *args], env=env, stdin=subprocess.DEVNULL,
                             stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert child.wait(timeout=120) == 0, child.stderr.read().decode()
    return b"".join(chunks).decode()


def test_plot_on_a_terminal_draws_every_run_with_a_legend(home, trained_run, cli, tiny):
    _second_run(cli, tiny)
    env = {**os.environ, "NANOGPT_HOME": str(home), "NO_COLOR": "1"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    picture = _on_a_terminal(["plot", "tiny", "other", "--x", "time"], env)
    for label in ("tiny train", "tiny val", "other train", "other val", "training time (s)"):
        assert label in picture
    assert "\x1b[" not in picture  # NO_COLOR: no colour codes; the curves differ by marker
    assert 80 <= max(len(line) for line in picture.splitlines()) <= 90  # sized to the terminal
    coloured = _on_a_terminal(["plot", "tiny"], {**env, "NO_COLOR": ""}, columns=60)
    assert "\x1b[" in coloured and max(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in coloured.splitlines()) <= 60


def test_plot_writes_png_and_svg_of_the_requested_size(cli, trained_run, tmp_path, tiny):
    from PIL import Image

    _second_run(cli, tiny, name="longer")
    png = tmp_path / "loss.png"
    result = cli("plot", trained_run, "longer", "--out", png, "--width", "800", "--height", "500")
    assert result.exit_code == 0, result.output
    with Image.open(png) as image:
        image.load()  # decodes the whole picture
        assert image.size == (800, 500)
    svg = tmp_path / "loss.svg"
    assert cli("plot", "--out", svg, "--x", "tokens").exit_code == 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and root.get("width").startswith("720")  # 1000 px at 72 points per inch 100 dpi
    bad = cli("plot", "--out", tmp_path / "loss.jpg")
    assert bad.exit_code == 1 and "ending in .png or .svg" in bad.stderr


def test_plot_without_matplotlib_names_the_extra(cli, trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plot] extra were not installed
    result = cli("plot", "--out", tmp_path / "x.png")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: writing a picture needs matplotlib: pip install "nanogpt-cli[plot]"'


def test_a_run_with_nothing_logged_yet_is_a_clear_message(cli, trained_run):
    fresh = paths.run_dir("fresh")
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps({"run": "fresh"}))
    (fresh / "best.pt").write_bytes(b"")
    result = cli("plot", "fresh")
    assert result.exit_code == 1 and "run 'fresh' has no logged losses yet" in result.stderr


def test_info_compares_runs_side_by_side(cli, trained_run, tiny):
    _second_run(cli, tiny, "--lr", "0.002")
    result = cli("info", trained_run, "other")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "train.lr" in out and "0.002" in out and "train.max_iters" in out  # what differs
    assert "best val loss" in out and "tokens/s" in out and "the same in all 2 runs" in out
    data = json.loads(cli("info", trained_run, "other", "--json").stdout)
    assert [r["name"] for r in data["runs"]] == [trained_run, "other"]
    assert data["differ"]["train.max_iters"] == [20, 30] and data["same"]["model.n_layer"] == 1
    assert all(r["best_val_loss"] and r["tokens_per_second"] for r in data["runs"])
    missing = cli("info", trained_run, "ghost")
    assert missing.exit_code == 1 and "run 'ghost' does not exist" in missing.stderr


def test_info_csv_and_sizes_on_disk(cli, trained_run):
    result = cli("info", trained_run, "--csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {"kind", "iter", "loss", "val_loss", "lr", "elapsed"} <= set(rows[0])
    assert [r["iter"] for r in rows if r["kind"] == "eval"] == ["0", "10", "20"]
    assert cli("info", "--csv").exit_code == 1
    system = json.loads(cli("info", "--json").stdout)
    run_size = system["runs"][0]["size_bytes"]
    on_disk = sum(p.stat().st_size for p in paths.run_dir(trained_run).rglob("*") if p.is_file())
    assert run_size == on_disk and system["total_bytes"] == run_size + system["datasets"][0]["size_bytes"]
    assert "on disk:" in cli("info").stdout


def test_rm_asks_removes_and_never_leaves_its_folder(cli, trained_run, home, tmp_path, tiny):
    _second_run(cli, tiny)
    result = cli("rm", "other", input="n\n")  # declining is the user's choice, not an error
    assert result.exit_code == 0 and "nothing removed" in result.stderr and paths.run_dir("other").is_dir()
    assert "error" not in result.stderr
    result = cli("rm", "other", input="")  # no answer at all: the question's line ends first
    assert result.exit_code == 1 and "[y/N]:\nerror: nothing removed" in result.stderr
    assert result.stderr.rstrip().endswith("pass --yes to remove without asking")
    result = cli("rm", "other", input="y\n")
    assert result.exit_code == 0 and "removed 1 run(s): other" in result.stdout and not paths.run_dir("other").exists()
    outside = tmp_path / "precious"
    outside.mkdir()
    for name in ("..", "../precious", str(outside), "runs/../..", "."):
        bad = cli("rm", name, "--yes")
        assert bad.exit_code == 1 and "invalid run name" in bad.stderr, name
    assert outside.is_dir() and paths.runs_dir().is_dir() and paths.run_dir(trained_run).is_dir()
    os.symlink(outside, paths.run_dir("link"))  # a run name that is a link: the link goes, not its target
    (outside / "config.json").write_text("{}")
    assert cli("rm", "link", "--yes").exit_code == 0
    assert outside.is_dir() and (outside / "config.json").is_file() and not paths.run_dir("link").exists()


def test_rm_and_mv_refuse_a_run_that_is_training(cli, trained_run):
    import fcntl

    with open(paths.run_dir(trained_run) / ".lock", "w") as lock:  # as training holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242")
        lock.flush()
        result = cli("rm", trained_run, "--yes")
        assert result.exit_code == 1 and "is being trained now (pid 4242)" in result.stderr
        result = cli("mv", trained_run, "renamed")
        assert result.exit_code == 1 and "is being trained now" in result.stderr
        result = cli("rm", "--dataset", "poems", "--yes")
        assert result.exit_code == 1 and f"is what run '{trained_run}' is training on now" in result.stderr
    assert paths.run_dir(trained_run).is_dir() and paths.dataset_dir("poems").is_dir()


def test_mv_renames_and_rm_dataset_removes(cli, trained_run, tiny):
    _second_run(cli, tiny)
    clash = cli("mv", trained_run, "other")
    assert clash.exit_code == 1 and "run 'other' already exists" in clash.stderr
    assert cli("mv", trained_run, "baseline").exit_code == 0
    assert json.loads((paths.run_dir("baseline") / "config.json").read_text())["run"] == "baseline"
    assert cli("sample", "--run", "baseline", "--max-new-tokens", "5").exit_code == 0
    assert cli("rm", "--dataset", "poems", "--yes").exit_code == 0
    assert not paths.dataset_dir("poems").exists()
    assert cli("rm", "--dataset", "poems", "--yes").exit_code == 1


def test_tensorboard_events_hold_the_metrics(cli, home, small_text, tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert cli("prepare", small_text).exit_code == 0
    result = cli("train", "--dataset", "poems", "--run", "tb", *tiny, "--log", "tensorboard")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(paths.run_dir("tb") / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tokens_per_second", "eval/val_loss", "eval/train_loss"} <= tags
    metrics = [json.loads(line) for line in (paths.run_dir("tb") / "metrics.jsonl").read_text().splitlines()]
    val = [(m["iter"], m["val_loss"]) for m in metrics if m["kind"] == "eval"]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars("eval/val_loss")] == val
    assert "model.n_layer" in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()


def test_wandb_offline_run_folder(cli, home, small_text, monkeypatch, tiny):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert cli("prepare", small_text).exit_code == 0
    result = cli("train", "--dataset", "poems", "--run", "wb", *tiny, "--log", "wandb", "--wandb-project", "tests")
    assert result.exit_code == 0, result.output
    folders = list((paths.run_dir("wb") / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    record = next(folders[0].glob("run-*.wandb")).read_bytes()
    run_id = (paths.run_dir("wb") / "wandb-id").read_text().strip()
    assert folders[0].name.endswith(run_id)
    for needle in (b"eval/val_loss", b"train/loss", b"train/lr", b"model.n_layer", b"tests"):
        assert needle in record


def test_a_missing_logging_extra_is_one_line(cli, home, small_text, monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert cli("prepare", small_text).exit_code == 0
    result = cli("train", "--dataset", "poems", "--run", "x", *tiny, "--log", "wandb")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: --log wandb needs Weights & Biases: pip install "nanogpt-cli[wandb]"'
    bad = cli("train", "--dataset", "poems", "--run", "x", *tiny, "--log", "mlflow")
    assert bad.exit_code == 1 and "--log takes tensorboard, wandb" in bad.stderr
    assert not paths.run_dir("x").exists()
