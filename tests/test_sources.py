"""`nanogpt prepare` on any input: streaming equals one-shot encoding, folders, URLs, uint32 token
files, a separate validation file, and prepares that fail half-way."""

from __future__ import annotations

import hashlib
import http.server
import json
import random
import threading

import numpy as np
import pytest

import nanogpt_cli.prepare as prepare
import nanogpt_cli.tokenwriter as tokenwriter

UNICODE_TEXT = ("naïve café 🙂 déjà-vu  double  spaces\ttabs\n\n東京タワー, 123456 numbers; it's we'll "
                "ÆØÅ ß — «quotes» \r\n trailing   \n") * 40


def _gpt2(shared_data):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(
        "r50k",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=load_tiktoken_bpe(str(shared_data / "r50k_base.tiktoken")),
        special_tokens={"<|endoftext|>": 50256},
    )


def _tokens(home, name, split="train"):
    meta = json.loads((home / "datasets" / name / "meta.json").read_text())
    return np.fromfile(home / "datasets" / name / f"{split}.bin", dtype=meta["dtype"]).tolist(), meta


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Force chunk edges everywhere: inside words, inside multi-byte UTF-8 characters."""
    monkeypatch.setattr(prepare, "READ_BYTES", 7)
    monkeypatch.setattr(tokenwriter, "PIECE_CHARS", 23)


def test_safe_cut_points_never_change_bpe_tokens(gpt2_cache, shared_data):
    enc = _gpt2(shared_data)
    rng = random.Random(0)
    text = UNICODE_TEXT + (shared_data / "tinyshakespeare.txt").read_text()[:20000]
    whole = enc.encode_ordinary(text)
    cuts = [tokenwriter.safe_cut(text[: rng.randrange(2, len(text))]) for _ in range(300)]
    found = [cut for cut in cuts if cut]
    assert len(found) > 250  # most pieces of this text have a safe place to cut
    for cut in found:
        assert enc.encode_ordinary(text[:cut]) + enc.encode_ordinary(text[cut:]) == whole


def test_chunked_bpe_equals_one_shot(
    cli, home, tmp_path, gpt2_cache, fresh_tiktoken, tiny_chunks, shakespeare_text, shared_data
):
    text = UNICODE_TEXT + shakespeare_text[:30000]
    path = tmp_path / "mixed.txt"
    path.write_text(text, encoding="utf-8")
    assert cli("prepare", path, "--tokenizer", "gpt2").exit_code == 0
    enc = _gpt2(shared_data)
    split = int(len(text) * 0.9)
    assert _tokens(home, "mixed-gpt2")[0] == enc.encode_ordinary(text[:split])
    assert _tokens(home, "mixed-gpt2", "val")[0] == enc.encode_ordinary(text[split:])


def test_chunked_char_equals_one_shot(cli, home, tmp_path, tiny_chunks):
    path = tmp_path / "mixed.txt"
    path.write_text(UNICODE_TEXT, encoding="utf-8")
    assert cli("prepare", path).exit_code == 0
    train, meta = _tokens(home, "mixed")
    chars = sorted(set(UNICODE_TEXT))
    assert meta["tokenizer"]["chars"] == "".join(chars) and meta["vocab_size"] == len(chars)
    split = int(len(UNICODE_TEXT) * 0.9)
    assert train == [chars.index(c) for c in UNICODE_TEXT[:split]]


def test_folder_in_sorted_order_with_separators_and_skips(cli, home, tmp_path, gpt2_cache, fresh_tiktoken, shared_data):
    folder = tmp_path / "notes"
    (folder / "b").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / "b" / "two.md").write_text("second file", encoding="utf-8")
    (folder / "a.md").write_text("first file\n", encoding="utf-8")
    (folder / "c.txt").write_text("third file", encoding="utf-8")
    (folder / ".git" / "config.md").write_text("hidden", encoding="utf-8")
    (folder / "image.md").write_bytes(b"\x89PNG\x00\x00binary")
    (folder / "latin.md").write_bytes("caf\xe9".encode("latin-1") * 5000)  # invalid UTF-8 after the first bytes

    result = cli("prepare", folder, "--glob", "*.md", "--val-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert "skipped 2 binary or non-UTF-8 file(s): image.md, latin.md" in result.stdout
    meta = json.loads((home / "datasets" / "notes" / "meta.json").read_text())
    assert meta["source"]["documents"] == 2
    text = "first file\n\nsecond file"  # a.md, then b/two.md; a blank line between documents
    train, _ = _tokens(home, "notes")
    val, _ = _tokens(home, "notes", "val")
    chars = meta["tokenizer"]["chars"]
    assert "".join(chars[i] for i in train + val) == text
    assert "third" not in text and "hidden" not in text

    # BPE: <|endoftext|> between documents; the split point (30% from the end) falls inside b/two.md.
    (folder / "a.md").write_text("first file\n" * 5, encoding="utf-8")
    (folder / "b" / "two.md").write_text("second file " * 5, encoding="utf-8")
    assert cli("prepare", folder, "--glob", "*.md", "--tokenizer", "gpt2", "--val-fraction", "0.3").exit_code == 0
    enc, first, second = _gpt2(shared_data), "first file\n" * 5, "second file " * 5
    k = int((len(first) + len(second)) * 0.7) - len(first)
    train, _ = _tokens(home, "notes-gpt2")
    val, _ = _tokens(home, "notes-gpt2", "val")
    assert train == enc.encode_ordinary(first) + [50256] + enc.encode_ordinary(second[:k])
    assert val == enc.encode_ordinary(second[k:])


def test_uint32_tokens_round_trip_through_training_and_sampling(cli, home, tmp_path):
    # More than 65,536 distinct characters: the char vocabulary no longer fits uint16.
    alphabet = [chr(c) for c in range(0x4E00, 0x4E00 + 20992)] + [chr(c) for c in range(0xAC00, 0xAC00 + 11172)] + \
        [chr(c) for c in range(0x20000, 0x20000 + 34000)]
    rng = random.Random(1)
    text = "".join(alphabet) + "".join(rng.choice(alphabet) for _ in range(60000))
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    result = cli("prepare", path)
    assert result.exit_code == 0, result.output
    train, meta = _tokens(home, "wide")
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == len(alphabet) > 65536
    assert "".join(meta["tokenizer"]["chars"][i] for i in train[:50]) == text[:50]
    result = cli("train", "--dataset", "wide", "--run", "wide", "--n-layer", "1", "--n-head", "1", "--n-embd", "8",
                 "--block-size", "8", "--batch-size", "2", "--max-iters", "2", "--eval-interval", "1", "--eval-iters",
                 "1", "--sample-tokens", "5", "-q")
    assert result.exit_code == 0, result.output
    sample = cli("sample", "--run", "wide", "--prompt", text[:3], "--max-new-tokens", "4", "--seed", "1")
    assert sample.exit_code == 0 and sample.stdout.startswith(text[:3]) and len(sample.stdout.strip()) == 7


def test_val_file(cli, home, small_text, tmp_path):
    val = tmp_path / "held-out.txt"
    val.write_text("a quick fox.\n" * 10, encoding="utf-8")
    result = cli("prepare", small_text, "--val-file", val, "--name", "split")
    assert result.exit_code == 0, result.output
    meta = json.loads((home / "datasets" / "split" / "meta.json").read_text())
    assert meta["train_tokens"] == len(small_text.read_text()) and meta["val_tokens"] == len(val.read_text())
    assert meta["val_source"]["description"] == str(val.resolve())


def test_interrupted_prepare_leaves_nothing_half_written(cli, home, small_text, monkeypatch):
    assert cli("prepare", small_text, "--name", "keep").exit_code == 0
    before = (home / "datasets" / "keep" / "train.bin").read_bytes()
    original = tokenwriter.TokenWriter._write
    calls = []

    def interrupted(self, split, ids):
        calls.append(split)
        if len(calls) > 1:
            raise KeyboardInterrupt
        original(self, split, ids)

    monkeypatch.setattr(prepare, "READ_BYTES", 1000)
    monkeypatch.setattr(tokenwriter.TokenWriter, "_write", interrupted)
    assert cli("prepare", small_text, "--name", "keep", "--overwrite").exit_code == 130
    assert cli("prepare", small_text, "--name", "fresh").exit_code == 130
    assert sorted(p.name for p in (home / "datasets").iterdir()) == ["keep"]  # no 'fresh', no temporary folder
    assert (home / "datasets" / "keep" / "train.bin").read_bytes() == before


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files and honours 'Range: bytes=N-' (as real servers do), counting requests."""

    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            body = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        RangeHandler.requests.append(self.headers.get("Range", ""))
        start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture
def server(tmp_path, small_text):
    root = tmp_path / "www"
    root.mkdir()
    (root / "poems.txt").write_bytes(small_text.read_bytes())
    RangeHandler.requests = []
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_is_downloaded_cached_and_prepared(cli, home, server, small_text):
    url = f"{server}/poems.txt"
    result = cli("prepare", url, "--sha256", hashlib.sha256(small_text.read_bytes()).hexdigest())
    assert result.exit_code == 0, result.output
    assert cli("prepare", small_text, "--name", "local").exit_code == 0
    assert (home / "datasets" / "poems" / "train.bin").read_bytes() == (
        home / "datasets" / "local" / "train.bin"
    ).read_bytes()
    assert json.loads((home / "datasets" / "poems" / "meta.json").read_text())["source"]["description"] == url
    assert cli("prepare", url, "--name", "again").exit_code == 0
    assert len(RangeHandler.requests) == 1  # the second prepare used the cached copy


def test_interrupted_download_resumes_with_a_range_request(cli, home, server, small_text):
    from nanogpt_cli.sources import download

    url = f"{server}/poems.txt"
    path = download(url)
    complete = path.read_bytes()
    path.unlink()
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(complete[:1000])  # what a broken-off download leaves
    assert download(url).read_bytes() == complete
    assert RangeHandler.requests[-1] == "bytes=1000-"


def test_download_checksum_mismatch_and_offline(cli, home, server):
    result = cli("prepare", f"{server}/poems.txt", "--sha256", "0" * 64)
    assert result.exit_code == 1 and "does not match --sha256" in result.stderr and "was deleted" in result.stderr
    assert not list((home / "cache" / "downloads").glob("*poems*"))
    result = cli("prepare", f"{server}/missing.txt")
    assert result.exit_code == 1 and "HTTP 404" in result.stderr


def test_pipes_and_devices_never_hang_a_command(cli, trained_run, tmp_path, monkeypatch):
    """A FIFO with no writer used to block prepare, --val-file, --prompt-file and --text-file forever."""
    import os
    import threading

    from nanogpt_cli import sources

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for command in (["prepare", fifo, "--name", "p"], ["prepare", "shakespeare", "--name", "q", "--val-file", fifo]):
        result = cli(*command)
        assert result.exit_code == 1 and "is a pipe (FIFO), which nanogpt cannot read twice" in result.stderr
    result = cli("prepare", "/dev/zero", "--name", "z")
    assert result.exit_code == 1 and "/dev/zero is not a regular file" in result.stderr
    monkeypatch.setattr(sources, "PIPE_WAIT_SECONDS", 0.5)
    for command in (["sample", "--prompt-file", fifo, "--max-new-tokens", "3"], ["eval", "--text-file", fifo]):
        result = cli(*command)  # nobody writes: an error after the wait, not a hang
        assert result.exit_code == 1 and "is a pipe and nothing wrote to it within 0.5 s" in result.stderr

    def write() -> None:
        with open(fifo, "w") as f:
            f.write("to be")

    writer = threading.Thread(target=write)
    writer.start()
    result = cli("sample", "--prompt-file", fifo, "--max-new-tokens", "3", "--json")
    writer.join()
    assert result.exit_code == 0 and json.loads(result.stdout)["prompt"] == "to be"
