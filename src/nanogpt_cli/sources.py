"""Where training text comes from: the bundled Tiny Shakespeare, a file, a folder, or a URL.

`resolve_source` turns what the user typed into a `Source`: an ordered list of documents, each of
which can be opened as a binary stream, plus a description and a default dataset name. Folders are
walked recursively in sorted order; hidden entries are ignored and binary files are skipped (and
counted). URLs are downloaded once into the cache dir with a progress callback, resumed with an HTTP
Range request after an interruption, and checked against --sha256 when given. This module reads bytes;
it never tokenizes.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import select
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from nanogpt_cli import paths
from nanogpt_cli.errors import NanoGPTError

BUNDLED = {
    "shakespeare": ("tinyshakespeare.txt.gz", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
}
SNIFF_BYTES = 8192

# progress(stage, done, total): called as work advances; total is 0 when unknown.
Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    pass


RECORD_FILES = (".jsonl", ".parquet")  # files of records, one document each, the text in a field
FIX_FIELD = "pass --text-field NAME"


@dataclass
class Document:
    """One text document: a file on disk, or bytes in memory (the bundled dataset); or a file of records
    (JSON Lines or Parquet) whose `text_field` holds one document per record."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    text_field: str | None = None
    fetch: Callable[[], Path] | None = None  # a file not yet on this machine (the Hub): how to get it
    known_size: int | None = None  # its size before it is fetched

    @property
    def size(self) -> int:
        if self.known_size is not None:
            return self.known_size
        return len(self.data) if self.data is not None else self.path.stat().st_size

    def local_path(self) -> Path:
        """The file on this machine, fetched the first time it is needed (so --max-tokens fetches no more)."""
        if self.path is None and self.fetch is not None:
            self.path = self.fetch()
        return self.path

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else open(self.local_path(), "rb")


@dataclass
class Source:
    description: str
    default_name: str
    documents: list[Document]
    skipped: list[str] = field(default_factory=list)  # binary or unreadable files left out of a folder
    empty: list[str] = field(default_factory=list)  # empty (or blank) files left out of a folder
    expected_sha256: str | None = None  # for the bundled data: checked while reading

    @property
    def size(self) -> int:
        return sum(d.size for d in self.documents)


def bundled_dataset(name: str) -> tuple[str, str] | None:
    """(source, tokenizer) when `name` is how `prepare` names a bundled source: 'shakespeare' is its
    char-level dataset and 'shakespeare-gpt2' (any tokenizer) the others."""
    for source in BUNDLED:
        if name == source:
            return source, "char"
        if name.startswith(source + "-"):
            return source, name[len(source) + 1 :]
    return None


def looks_binary(head: bytes) -> bool:
    """NUL bytes or invalid UTF-8 in the first bytes of a file mark it as binary."""
    if b"\x00" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return True
    return False


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)


def _bundled(name: str) -> Source:
    filename, expected = BUNDLED[name]
    data = gzip.decompress((resources.files("nanogpt_cli") / "data" / filename).read_bytes())
    return Source(f"bundled {name}", name, [Document(name, data=data)], expected_sha256=expected)


def _file(path: Path, text_field: str | None = None,
          what: str = "pass 'shakespeare', a text file, a .jsonl or .parquet file, a folder or a URL") -> Source:
    try:
        status = path.stat()
        if stat.S_ISFIFO(status.st_mode):  # reading it would wait for a writer, and prepare reads its source twice
            raise NanoGPTError(f"{path} is a pipe (FIFO), which nanogpt cannot read twice; save what goes into it "
                               "to a file first and pass that")
        if not stat.S_ISREG(status.st_mode):
            raise NanoGPTError(f"{path} is not a regular file (a device or socket); {what}")
        size = status.st_size
        head = _read_head(path)
    except FileNotFoundError:
        raise NanoGPTError(f"{path} does not exist; {what}") from None
    except OSError as exc:
        raise NanoGPTError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0 or not head.strip():
        raise NanoGPTError(f"{path} is empty; a dataset needs text to learn from")
    if text_field is not None and path.suffix.lower() in RECORD_FILES:
        records = Document(path.name, path, text_field=text_field)
        return Source(str(path.resolve()), paths.safe_name(path.stem), [records])
    if b"\x00" in head:
        raise NanoGPTError(f"{path} looks like a binary file (it contains NUL bytes); pass a text file")
    return Source(str(path.resolve()), paths.safe_name(path.stem), [Document(path.name, path=path)])


def _folder(path: Path, glob: str, text_field: str = "text") -> Source:
    documents, skipped, empty = [], [], []
    for file in sorted(path.rglob(glob), key=lambda p: p.relative_to(path).as_posix()):
        relative = file.relative_to(path)
        if not file.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        try:
            head = _read_head(file)
        except OSError:
            skipped.append(relative.as_posix())
            continue
        if file.suffix.lower() in RECORD_FILES and head.strip():
            documents.append(Document(relative.as_posix(), path=file, text_field=text_field))
        elif looks_binary(head):
            skipped.append(relative.as_posix())
        elif head.strip():
            documents.append(Document(relative.as_posix(), path=file))
        else:
            empty.append(relative.as_posix())
    if not documents:
        raise NanoGPTError(
            f"no text files matching {glob!r} in {path}"
            + (f" ({len(skipped)} binary file(s) skipped)" if skipped else "")
            + "; check the folder or --glob"
        )
    return Source(str(path.resolve()), paths.safe_name(path.resolve().name), documents, skipped, empty=empty)


def resolve_source(source: str, glob: str = "*", sha256: str | None = None, progress: Progress = no_progress,
                   text_field: str = "text") -> Source:
    if source in BUNDLED:
        return _bundled(source)
    if source.startswith(("http://", "https://")):
        path = download(source, sha256, progress)
        stem = Path(urllib.parse.urlparse(source).path).stem or "download"
        return Source(source, paths.safe_name(stem), [Document(path.name, path=path)])
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder(path, glob, text_field)
    return _file(path, text_field)


def record_texts(doc: Document, on_bytes: Callable[[bytes], None]) -> Iterator[str]:
    """The text of each record of a JSON Lines or Parquet document, in order; `on_bytes` sees what was
    read (a JSON line's bytes; a Parquet text's UTF-8, since its file is compressed)."""
    field = doc.text_field
    if Path(doc.name).suffix.lower() == ".parquet":
        yield from _parquet_texts(doc, on_bytes)
        return
    with doc.open() as f:
        for number, line in enumerate(f, 1):
            on_bytes(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                raise NanoGPTError(f"{doc.path}: line {number} is not JSON (JSON Lines hold one object a line)") \
                    from None
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                strings = [k for k, v in record.items() if isinstance(v, str)] if isinstance(record, dict) else []
                raise NanoGPTError(f"{doc.path}: line {number} has no text field {field!r}"
                                   + (f" (its text fields: {', '.join(strings[:8])})" if strings else "")
                                   + f"; {FIX_FIELD}")
            yield text


def _parquet_texts(doc: Document, on_bytes: Callable[[bytes], None]) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise NanoGPTError('reading Parquet files needs pyarrow: pip install "nanogpt-cli[parquet]"') from None
    try:
        table = pq.ParquetFile(doc.local_path())
        columns = table.schema_arrow
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError subclasses for a damaged file
        raise NanoGPTError(f"{doc.path} is not a readable Parquet file ({str(exc)[:120]})") from None
    if doc.text_field not in columns.names or str(columns.field(doc.text_field).type) not in ("string", "large_string"):
        texts = [f.name for f in columns if str(f.type) in ("string", "large_string")]
        raise NanoGPTError(f"{doc.path} has no text column {doc.text_field!r}"
                           + (f" (its text columns: {', '.join(texts[:8])})" if texts else "") + f"; {FIX_FIELD}")
    for batch in table.iter_batches(batch_size=1024, columns=[doc.text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                on_bytes(text.encode("utf-8"))
                yield text


# How long a prompt or evaluation text given as a pipe (FIFO) may keep nanogpt waiting for a writer.
PIPE_WAIT_SECONDS = 10.0


def _read_pipe(path: Path) -> bytes:
    """All a FIFO's writer sends; an error when no writer has written within PIPE_WAIT_SECONDS."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opens at once, writer or not
    try:
        ready, _, _ = select.select([fd], [], [], PIPE_WAIT_SECONDS)
        if not ready:
            raise NanoGPTError(f"{path} is a pipe and nothing wrote to it within {PIPE_WAIT_SECONDS:g} s; start "
                               "the writer first, or save the text to a file and pass that")
        os.set_blocking(fd, True)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str | None = None, progress: Progress = no_progress,
             offline_hint: str = "download it yourself and run `nanogpt prepare FILE`") -> Path:
    """The local copy of `url` in the cache dir, downloading (or finishing a download) if needed."""
    folder = paths.ensure_dir(paths.cache_dir() / "downloads")
    basename = paths.safe_name(Path(urllib.parse.urlparse(url).path).name or "download")
    final = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{basename}"
    if final.is_file() and (sha256 is None or sha256_of(final) == sha256.lower()):
        return final
    partial = final.with_name(final.name + ".part")
    start = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the partial file is already complete (or bigger): start over
            partial.unlink()
            return download(url, sha256, progress, offline_hint)
        raise NanoGPTError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NanoGPTError(f"cannot download {url} ({reason}); check the network, or {offline_hint}") from None
    with response:
        resumed = start > 0 and response.status == 206
        done = start if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length and length.isdigit() else 0
        try:
            with open(partial, "ab" if resumed else "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    progress("download", done, total)
        except OSError as exc:
            raise NanoGPTError(
                f"the download of {url} broke off after {done:,} bytes ({exc}); run the same command again to resume it"
            ) from None
    if total and done != total:
        raise NanoGPTError(f"the download of {url} stopped at {done:,} of {total:,} bytes; run the same command "
                           "again to resume it")
    if sha256 is not None:
        actual = sha256_of(partial)
        if actual != sha256.lower():
            partial.unlink()
            raise NanoGPTError(f"{url} does not match --sha256: expected {sha256.lower()}, got {actual}; the "
                               "download was deleted")
    os.replace(partial, final)
    return final


def read_text_file(path: Path) -> str:
    """A whole (small) UTF-8 text file, e.g. a prompt or an evaluation text, with the same checks. A
    pipe (FIFO) is read once something writes to it, within PIPE_WAIT_SECONDS."""
    path = Path(path)
    if path.is_dir():
        raise NanoGPTError(f"{path} is a folder; pass a UTF-8 text file")
    if path.exists() and stat.S_ISFIFO(path.stat().st_mode):
        raw = _read_pipe(path)
        if not raw.strip():
            raise NanoGPTError(f"{path} is empty: what was written to the pipe held no text")
    else:
        raw = _file(path, what="pass the path of a UTF-8 text file").documents[0].path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NanoGPTError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8 first"
        ) from None
