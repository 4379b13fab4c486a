"""Reading nanogpt's small files without trusting them: JSON and TOML are read only from regular files
of bounded size, decoded as UTF-8 and parsed to bounded depth, and a value found to be wrong becomes one
line that names the file, the field and the way back (`Corrupt`), never a traceback further in.

Each format has one reader: meta.json (dataset.py), config.json and metrics.jsonl (catalog.py),
config.toml and --config (config/runfile.py), a checkpoint's contents (checkpoint.py), tokenizer
specs (tokenizer.py). They all start here.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from nanogpt_cli.errors import NanoGPTError

MAX_JSON_BYTES = 64 * 2**20  # meta.json and config.json carry a trained BPE tokenizer: a few MB
MAX_TOML_BYTES = 2**20  # a run config is a page of settings
MAX_INT = 2**62  # any count nanogpt keeps fits well below this


class Corrupt(NanoGPTError):
    """A file nanogpt reads holds something it cannot use: what is wrong, and how to get back."""

    def __init__(self, path: Path | str, problem: str, remedy: str):
        super().__init__(f"{path} is corrupt: {problem}; {remedy}")


def read_text(path: Path, what: str, limit: int, remedy: str) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes (a FIFO, a device or a huge file
    is refused before anything is read from it). FileNotFoundError passes through to the caller."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise NanoGPTError(f"{what} {path} is not a regular file; give the path of a file")
    if info.st_size > limit:
        raise NanoGPTError(f"{what} {path} is {info.st_size:,} bytes, more than the {limit:,} such a file can be; "
                           f"{remedy}")
    with open(path, "rb") as f:
        data = f.read(limit + 1)  # the file may have grown since stat
    if len(data) > limit:
        raise NanoGPTError(f"{what} {path} is larger than the {limit:,} bytes such a file can be; {remedy}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Corrupt(path, f"byte {exc.start} is not UTF-8 text", remedy) from None


def parse_json(text: str, path: Path | str, remedy: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise Corrupt(path, "its JSON is nested too deeply", remedy) from None
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise Corrupt(path, f"it is not valid JSON{where}", remedy) from None


def read_json_object(path: Path, what: str, remedy: str, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON file that must hold an object, as a dict."""
    value = parse_json(read_text(path, what, limit, remedy), path, remedy)
    if not isinstance(value, dict):
        raise Corrupt(path, f"it holds a JSON {type(value).__name__}, not an object", remedy)
    return value


def check_type(value: Any, kind: type, name: str, optional: bool = False) -> str | None:
    """Why `value` cannot be a `kind` field called `name` (None when it can). Integers must be true
    integers (not bools) of sane size; floats finite numbers; None only where `optional`."""
    if value is None:
        return None if optional else f"{name} is missing (null)"
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and abs(value) > MAX_INT:
            return f"{name} must be at most {MAX_INT:.3g}, got {value:.3g}"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return f"{name} must be a finite number, got {value}"
    elif kind is str:
        ok = isinstance(value, str)
        if ok and not value.isprintable() and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            return f"{name} must be text, got a string with unpaired surrogates"
    else:
        ok = isinstance(value, kind)
    if not ok:
        shown = repr(value)
        return f"{name} must be {_kind_name(kind)}, got {shown if len(shown) <= 40 else shown[:37] + '...'}"
    return None


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object",
            list: "a list"}.get(kind, kind.__name__)


def require(data: dict[str, Any], name: str, kind: type, path: Path | str, remedy: str, optional: bool = False,
            default: Any = None) -> Any:
    """`data[name]`, checked to be a `kind` (absent or null: `default` if `optional`, else Corrupt)."""
    if data.get(name) is None:
        if optional:
            return default
        raise Corrupt(path, f"{name} is missing", remedy)
    problem = check_type(data[name], kind, name, optional)
    if problem:
        raise Corrupt(path, problem, remedy)
    return data[name]
