"""Prepare throughput and memory on a big text file, against tiktoken's own batch encoder.

    python benchmarks/prepare_speed.py [--size-mb 1000] [--baseline-mb 200] [--workdir /tmp/nanogpt-bench]
                                       [--record-chars 2000]

Makes a text file of --size-mb megabytes (Tiny Shakespeare, repeated, each copy numbered), then:
1. baseline: tiktoken's `encode_ordinary_batch` (GPT-2 ranks, all cores) on the first --baseline-mb
   of that text held in memory as 1 MB documents: the best tiktoken does with no I/O at all;
2. `nanogpt prepare FILE --tokenizer gpt2` on the whole file, in its own process: MB/s and peak RSS;
3. `nanogpt prepare FILE` (char-level) on the whole file, in its own process: MB/s and peak RSS;
4. with --record-chars N, the same text as a JSON Lines file of records of about N characters (cut at
   line ends), `nanogpt prepare FILE.jsonl --tokenizer gpt2`: MB/s of text and peak RSS.
Needs the GPT-2 rank file: from ../shared/data (or $NANOGPT_SHARED_DATA), else tiktoken's download.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, peak_rss_mib  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NANOGPT_SHARED_DATA", ROOT.parent / "shared" / "data"))
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"


def make_text(path: Path, size_mb: int) -> None:
    if path.is_file() and path.stat().st_size >= size_mb * 10**6:
        return
    from nanogpt_cli.sources import resolve_source

    base = resolve_source("shakespeare").documents[0].data
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        copy = 0
        while f.tell() < size_mb * 10**6:
            f.write(f"\n=== copy {copy} ===\n".encode() + base)
            copy += 1


def make_records(text: Path, path: Path, chars: int) -> int:
    """The text as JSON Lines records of about `chars` characters each; returns how many."""
    count = 0
    with open(text, encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        record = ""
        for line in f:
            record += line
            if len(record) >= chars:
                out.write(json.dumps({"text": record}) + "\n")
                record, count = "", count + 1
        if record:
            out.write(json.dumps({"text": record}) + "\n")
            count += 1
    return count


def baseline(path: Path, mb: int) -> float:
    """MB/s of tiktoken's encode_ordinary_batch on text already in memory."""
    from nanogpt_cli.tokenizer import TiktokenTokenizer

    enc = TiktokenTokenizer("gpt2")._enc
    raw = path.read_bytes()[: mb * 10**6]
    text = raw.decode("utf-8", errors="ignore")
    docs, start = [], 0
    while start < len(text):
        end = text.find("\n", start + 10**6)
        end = len(text) if end < 0 else end + 1
        docs.append(text[start:end])
        start = end
    begin = time.perf_counter()
    enc.encode_ordinary_batch(docs, num_threads=os.cpu_count())
    return len(raw) / 1e6 / (time.perf_counter() - begin)


def child(args: list[str]) -> None:
    """Run `nanogpt ARGS` in this process, then report wall time and this process's peak RSS."""
    from nanogpt_cli.cli import app

    begin = time.perf_counter()
    try:
        app(args, standalone_mode=False)
    finally:
        print(json.dumps({"seconds": time.perf_counter() - begin, "peak_rss_mib": peak_rss_mib()}))


def run_prepare(env: dict, args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--baseline-mb", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nanogpt-bench")
    parser.add_argument("--record-chars", type=int, help="also prepare the text as JSON Lines records this long")
    args = parser.parse_args()
    text = args.workdir / f"text-{args.size_mb}mb.txt"
    make_text(text, args.size_mb)
    size_mb = text.stat().st_size / 1e6

    home = Path(tempfile.mkdtemp(prefix="nanogpt-bench-home-"))
    cache = home / "cache" / "tiktoken"
    cache.mkdir(parents=True)
    if (SHARED / "r50k_base.tiktoken").is_file():
        shutil.copy(SHARED / "r50k_base.tiktoken", cache / hashlib.sha1(R50K_URL.encode()).hexdigest())
    env = {**os.environ, "NANOGPT_HOME": str(home)}
    os.environ["NANOGPT_HOME"] = str(home)
    try:
        print(machine(os.environ))
        print(f"{size_mb:,.0f} MB of text, {os.cpu_count()} CPU cores")
        base = baseline(text, args.baseline_mb)
        print(f"tiktoken encode_ordinary_batch, in memory ({args.baseline_mb} MB): {base:.2f} MB/s")
        bpe = run_prepare(env, ["prepare", str(text), "--tokenizer", "gpt2", "--name", "bench-gpt2", "-q"])
        meta = json.loads((home / "datasets" / "bench-gpt2" / "meta.json").read_text())
        print(f"nanogpt prepare --tokenizer gpt2: {size_mb / bpe['seconds']:.2f} MB/s "
              f"({size_mb / bpe['seconds'] / base:.0%} of tiktoken's batch encoder), {bpe['seconds']:.1f} s, "
              f"peak RSS {bpe['peak_rss_mib']:.0f} MiB, {meta['train_tokens'] + meta['val_tokens']:,} tokens")
        char = run_prepare(env, ["prepare", str(text), "--name", "bench-char", "-q"])
        print(f"nanogpt prepare (char): {size_mb / char['seconds']:.1f} MB/s, {char['seconds']:.1f} s, "
              f"peak RSS {char['peak_rss_mib']:.0f} MiB")
        if args.record_chars:
            records = args.workdir / f"text-{args.size_mb}mb-{args.record_chars}.jsonl"
            count = make_records(text, records, args.record_chars)
            run = run_prepare(env, ["prepare", str(records), "--tokenizer", "gpt2", "--name", "bench-jsonl", "-q"])
            print(f"nanogpt prepare FILE.jsonl --tokenizer gpt2 ({count:,} records of about {args.record_chars:,} "
                  f"characters): {size_mb / run['seconds']:.2f} MB/s of text, {run['seconds']:.1f} s, "
                  f"peak RSS {run['peak_rss_mib']:.0f} MiB")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
