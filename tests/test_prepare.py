"""`nanogpt prepare`: token streams identical to nanoGPT's, metadata, and atomic writes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest


def test_shakespeare_char_matches_nanogpt_exactly(cli, home, shakespeare_text, shared_data):
    result = cli("prepare", "shakespeare")
    assert result.exit_code == 0, result.output
    assert "1,003,854" in result.output and "111,540" in result.output

    folder = home / "datasets" / "shakespeare"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["vocab_size"] == 65
    assert (meta["train_tokens"], meta["val_tokens"], meta["dtype"]) == (1_003_854, 111_540, "uint16")

    # nanoGPT's data/shakespeare_char/prepare.py, restated: sorted character set, 90/10 split of the text.
    chars = sorted(set(shakespeare_text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(shakespeare_text)
    expected_train = np.array([stoi[c] for c in shakespeare_text[: int(n * 0.9)]], dtype=np.uint16)
    expected_val = np.array([stoi[c] for c in shakespeare_text[int(n * 0.9) :]], dtype=np.uint16)
    assert (folder / "train.bin").read_bytes() == expected_train.tobytes()
    assert (folder / "val.bin").read_bytes() == expected_val.tobytes()
    assert meta["source"]["sha256"] == (shared_data / "SHA256SUMS").read_text().split("tinyshakespeare")[0].split()[-1]


def test_shakespeare_gpt2_matches_nanogpt_token_counts(
    cli, home, gpt2_cache, fresh_tiktoken, shakespeare_text, shared_data
):
    result = cli("prepare", "shakespeare", "--tokenizer", "gpt2")
    assert result.exit_code == 0, result.output
    folder = home / "datasets" / "shakespeare-gpt2"
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["train_tokens"], meta["val_tokens"], meta["dtype"]) == (301_966, 36_059, "uint16")
    assert meta["vocab_size"] == 50257

    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    enc = tiktoken.Encoding(
        "r50k",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=load_tiktoken_bpe(str(shared_data / "r50k_base.tiktoken")),
        special_tokens={"<|endoftext|>": 50256},
    )
    n = len(shakespeare_text)
    train = np.fromfile(folder / "train.bin", dtype=np.uint16)
    assert train.tolist() == enc.encode_ordinary(shakespeare_text[: int(n * 0.9)])


def test_gpt2_offline_without_rank_file_says_where_to_put_it(cli, fresh_tiktoken, monkeypatch):
    import tiktoken.load

    def offline(url):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    result = cli("prepare", "shakespeare", "--tokenizer", "gpt2")
    assert result.exit_code == 1
    assert "offline" in result.stderr and "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4" in result.stderr
    assert "Traceback" not in result.output


def test_own_text_file_with_name_and_val_fraction(cli, home, small_text):
    result = cli("prepare", small_text, "--name", "mine", "--val-fraction", "0.25")
    assert result.exit_code == 0, result.output
    meta = json.loads((home / "datasets" / "mine" / "meta.json").read_text())
    text = small_text.read_text()
    assert meta["train_tokens"] == int(len(text) * 0.75)
    assert meta["train_tokens"] + meta["val_tokens"] == len(text)
    assert meta["source"]["description"] == str(small_text.resolve())
    assert "written to" in result.output


def test_default_name_comes_from_file_and_tokenizer(cli, home, small_text, gpt2_cache, fresh_tiktoken):
    assert cli("prepare", small_text).exit_code == 0
    assert cli("prepare", small_text, "--tokenizer", "gpt2").exit_code == 0
    assert (home / "datasets" / "poems" / "meta.json").is_file()
    assert (home / "datasets" / "poems-gpt2" / "meta.json").is_file()


def test_failed_prepare_leaves_existing_dataset_untouched(cli, home, small_text, monkeypatch):
    assert cli("prepare", small_text, "--name", "keep").exit_code == 0
    before = (home / "datasets" / "keep" / "train.bin").read_bytes()

    import nanogpt_cli.tokenwriter as tokenwriter

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tokenwriter.TokenWriter, "_write", disk_full)
    result = cli("prepare", small_text, "--name", "keep", "--val-fraction", "0.5", "--overwrite")
    assert result.exit_code == 1 and "No space left" in result.stderr
    assert (home / "datasets" / "keep" / "train.bin").read_bytes() == before
    assert [p.name for p in (home / "datasets").iterdir()] == ["keep"]  # no temporary folder left behind


@pytest.mark.parametrize("vocab, dtype", [(65, "uint16"), (65536, "uint16"), (65537, "uint32"), (100277, "uint32")])
def test_token_dtype_fits_vocabulary(vocab, dtype):
    from nanogpt_cli.publish import token_dtype

    assert token_dtype(vocab).name == dtype


def test_an_existing_dataset_is_replaced_only_with_overwrite(cli, home, small_text, tmp_path):
    assert cli("prepare", small_text, "--name", "mine").exit_code == 0
    before = (home / "datasets" / "mine" / "train.bin").read_bytes()
    other = tmp_path / "other.txt"
    other.write_text("something else entirely, " * 100, encoding="utf-8")

    result = cli("prepare", other, "--name", "mine")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: dataset 'mine' already exists; pass --overwrite to replace it, "
                                     "or --name to prepare it under another name")
    assert (home / "datasets" / "mine" / "train.bin").read_bytes() == before

    assert cli("prepare", other, "--name", "mine", "--overwrite").exit_code == 0  # no run uses it: replaced
    assert (home / "datasets" / "mine" / "train.bin").read_bytes() != before


def test_a_dataset_that_runs_trained_on_keeps_its_tokens(cli, home, trained_run, small_text, tmp_path):
    before = (home / "datasets" / "poems" / "train.bin").read_bytes()
    other = tmp_path / "other.txt"
    other.write_text("completely different letters: XYZ QRS " * 200, encoding="utf-8")
    result = cli("prepare", other, "--name", "poems", "--overwrite")
    assert result.exit_code == 1
    assert "dataset 'poems' is what run(s) 'tiny' trained on, and the new tokens differ" in result.stderr
    assert "Prepare it under another --name" in result.stderr
    assert (home / "datasets" / "poems" / "train.bin").read_bytes() == before
    assert not [p for p in (home / "datasets").iterdir() if p.name.startswith(".")]
    # The same text again gives the same tokens: replacing is harmless, and the run still resumes.
    assert cli("prepare", small_text, "--overwrite").exit_code == 0
    assert (
        cli("train", "--run", trained_run, "--resume", "--max-iters", "25", "-q", "--sample-tokens", "0").exit_code == 0
    )


def test_a_limited_char_vocabulary_maps_rare_characters_to_unknown(cli, home, tmp_path):
    text = ("abcab cab " * 300) + "x" * 5 + "yz\n"  # common letters, one rare character, two singletons and a newline
    path = tmp_path / "rare.txt"
    path.write_text(text, encoding="utf-8")
    result = cli("prepare", path, "--min-count", "2", "--name", "rare")
    assert result.exit_code == 0, result.output
    assert "5 of 8 distinct characters kept; 3 rarer ones map to the unknown token, 3 characters" in result.stdout
    meta = json.loads((home / "datasets" / "rare" / "meta.json").read_text())
    assert meta["tokenizer"] == {"kind": "char", "chars": " abcx", "unknown": "\ufffd"} and meta["vocab_size"] == 6
    assert meta["char_coverage"]["mapped_characters"] == 3  # y, z, \n
    tokens = np.fromfile(home / "datasets" / "rare" / "val.bin", dtype=np.uint16)
    assert tokens[-3:].tolist() == [5, 5, 5]  # "yz\n": the unknown token, id 5
    info = cli("info", "rare")
    assert "5 of 8 distinct characters kept" in info.stdout
    result = cli("prepare", path, "--max-vocab", "3", "--name", "top2", "--tokenizer", "char")
    assert result.exit_code == 0, result.output
    top = json.loads((home / "datasets" / "top2" / "meta.json").read_text())["tokenizer"]
    assert top["chars"] == "ab" and top["unknown"] == "\ufffd"  # the two most frequent, plus unknown

    from nanogpt_cli.tokenizer import tokenizer_from_spec

    tok = tokenizer_from_spec(top)
    assert tok.decode(tok.encode("abz")) == "ab\ufffd"  # shown as such when decoding; never an error


def test_vocabulary_flags_are_for_char_tokenizers(cli, small_text):
    result = cli("prepare", small_text, "--tokenizer", "gpt2", "--max-vocab", "10")
    assert result.exit_code == 1 and "--max-vocab and --min-count choose a char vocabulary" in result.stderr


def test_prepare_reports_empty_files_it_left_out(cli, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("some text here\n" * 50)
    (folder / "empty1.txt").write_text("")
    (folder / "empty2.txt").write_text("")
    result = cli("prepare", folder)
    assert result.exit_code == 0, result.output
    assert "left out 2 empty file(s): empty1.txt, empty2.txt" in result.stdout


def test_the_prepare_bars_are_erased_once_it_is_done(monkeypatch):
    """`nanogpt train` on a fresh home prepares Tiny Shakespeare first: its finished bars must not stay
    drawn under the training bar for the whole run (they did: the display kept redrawing them)."""
    import io
    import time

    from rich.console import Console

    from nanogpt_cli.commands import console

    screen = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=screen, force_terminal=True, width=100))
    with console.byte_progress(quiet=False) as progress:
        progress("scan", 500, 1000)
        progress("scan", 1000, 1000)
        time.sleep(0.3)
        assert "reading" in screen.getvalue()  # drawn while it runs
        progress.finish()
        erased_at = len(screen.getvalue())
        time.sleep(0.5)  # training runs meanwhile; the display refreshes about ten times a second
        assert "reading" not in screen.getvalue()[erased_at:]


def test_two_prepares_of_one_name_at_once_never_lose_one_silently(home, small_text):
    """Both used to exit 0 while one result was lost; now whichever comes second is refused."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NANOGPT_HOME": str(home)}
    command = [sys.executable, "-m", "nanogpt_cli", "prepare", str(small_text), "--name", "twin", "-q"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "Traceback" not in refused and ("prepared by another command meanwhile" in refused
                                           or "already exists" in refused)
    assert json.loads((home / "datasets" / "twin" / "meta.json").read_text())["train_tokens"] > 0
    assert not [p for p in (home / "datasets").iterdir() if p.name.startswith(".twin")]  # nothing left behind


def test_a_dataset_a_run_is_training_on_is_not_replaced_before_its_first_checkpoint(home, small_text, tmp_path):
    """A real training process, long before its first checkpoint: `prepare --overwrite` with other
    text is refused (it used to exit 0, and the run's --resume then went on with the new tokens)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "NANOGPT_HOME": str(home)}
    nanogpt = [sys.executable, "-m", "nanogpt_cli"]
    assert subprocess.run([*nanogpt, "prepare", str(small_text), "-q"], env=env).returncode == 0
    trainer = subprocess.Popen([*nanogpt, "train", "--dataset", "poems", "--run", "busy", "--preset", "nanogpt-cpu",
                                "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16",
                                "--max-iters", "1000000", "--eval-interval", "500000", "--eval-iters", "1", "-q"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (home / "runs" / "busy" / "config.json").is_file() and time.time() < deadline:
            time.sleep(0.05)
        other = tmp_path / "other.txt"
        other.write_text("something else entirely, with other letters: XYZ.\n" * 400)
        result = subprocess.run([*nanogpt, "prepare", str(other), "--name", "poems", "--overwrite"], env=env,
                                capture_output=True, text=True)
        assert result.returncode == 1 and "'busy'" in result.stderr and "new tokens differ" in result.stderr
        assert not (home / "runs" / "busy" / "ckpt.pt").exists()  # it really had no checkpoint yet
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()


def test_resume_refuses_a_dataset_prepared_again_from_other_text(cli, home, trained_run, tmp_path, write_text):
    other = tmp_path / "other.txt"
    lines = write_text(tmp_path / "base.txt").read_text().splitlines()
    other.write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")  # the same characters, in another order
    assert cli("prepare", other, "--name", "poems2").exit_code == 0
    # As if it had replaced 'poems' while nothing guarded it (an older nanogpt, or by hand).
    shutil.rmtree(home / "datasets" / "poems")
    (home / "datasets" / "poems2").rename(home / "datasets" / "poems")
    result = cli("train", "--run", trained_run, "--resume", "--max-iters", "30")
    assert result.exit_code == 1
    assert "dataset 'poems' has been prepared again from other text since run 'tiny' started" in result.stderr


def test_a_run_that_only_holds_its_lock_already_keeps_its_dataset(cli, home, small_text, tmp_path):
    """The first moment of a training, before config.json: its lock file names the dataset."""
    from nanogpt_cli import paths
    from nanogpt_cli.runlock import run_lock, training_on, training_pid

    assert cli("prepare", small_text).exit_code == 0
    starting = paths.ensure_dir(paths.run_dir("starting"))
    other = tmp_path / "other.txt"
    other.write_text("something else entirely, with other letters: XYZ.\n" * 400)
    with run_lock(starting, "poems"):
        assert training_on(starting) == "poems" and training_pid(starting) == str(os.getpid())
        result = cli("prepare", other, "--name", "poems", "--overwrite")
        assert result.exit_code == 1 and "'starting'" in result.stderr and "new tokens differ" in result.stderr
    assert training_on(starting) is None
    assert cli("prepare", other, "--name", "poems", "--overwrite").exit_code == 0  # nobody trains on it now
