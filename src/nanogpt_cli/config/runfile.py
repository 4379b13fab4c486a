"""TOML run configs (`--config`, `--print-config`, a run's `config.toml`): read with every mistake
named by file, key and line; written with every field and its help as a comment."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nanogpt_cli import paths
from nanogpt_cli.config.fields import DERIVED, KNOBS, SECTIONS, Knob, ModelConfig, TrainConfig
from nanogpt_cli.config.presets import get_preset
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.readers import MAX_TOML_BYTES, check_type, read_text

# ----------------------------------------------------------------------------------- run config files


@dataclass
class RunFile:
    """A TOML run config: `preset`, and [model] / [train] tables keyed by field name."""

    path: Path
    preset: str | None
    values: dict[str, Any]
    lines: dict[str, int]  # "table.key" (or a top-level "key", or "[table]") -> its line, where found

    def where(self, key: str, table: str | None = None) -> str:
        line = self.lines.get(f"{table}.{key}" if table else key)
        return f"{self.path}, line {line}" if line else str(self.path)


def _load_toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def read_run_file(path: str | Path) -> RunFile:
    """Read and type-check a run config file; every mistake is one error naming the file and key."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "config.toml").is_file():
        path = path / "config.toml"  # a run folder stands for its config
    remedy = "give a run config written by `nanogpt train --print-config`"
    try:
        text = read_text(path, "config file", MAX_TOML_BYTES, remedy)
    except FileNotFoundError:
        raise NanoGPTError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise NanoGPTError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = _load_toml(text)
    except RecursionError:
        raise NanoGPTError(f"{path} is not valid TOML: its tables or arrays are nested too deeply") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError says where: "(at line 3, column 9)"
        raise NanoGPTError(f"{path} is not valid TOML: {exc}") from None
    lines = _key_lines(text)
    where = RunFile(path, None, {}, lines).where
    preset = data.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise NanoGPTError(f"{where('preset')}: preset must be a string such as \"cpu\"")
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            at = where(f"[{section}]") if isinstance(table, dict) else where(section)
            raise NanoGPTError(f"{at}: unknown {'table' if isinstance(table, dict) else 'key'} "
                               f"{section!r}; a run config has `preset` and the tables [model] and [train]")
        for key, value in table.items():
            knob_ = KNOBS.get(key)
            at = where(key, section)
            if key in DERIVED:
                raise NanoGPTError(f"{at}: {key} is set from the dataset, not by a config; remove it")
            if knob_ is None or knob_.section != section:
                hint = f" (it belongs in [{knob_.section}])" if knob_ else paths.closest(key, list(KNOBS))
                raise NanoGPTError(f"{at}: unknown key {key!r} in [{section}]{hint}")
            values[key] = _check_type(knob_, value, at)
    if preset is not None:
        get_preset(preset)
    return RunFile(path, preset, values, lines)


def _key_lines(text: str) -> dict[str, int]:
    """The line of each `[table]` and `key = value` in a TOML text, keyed "[table]" and "table.key"
    (a key before any table: "key"), for error messages. Lines are counted as TOML does, at "\n" only
    (str.splitlines would also break at form feeds and Unicode separators), and the key `model` of
    [model] is told apart from the table's header."""
    found: dict[str, int] = {}
    table = None
    for number, line in enumerate(text.split("\n"), start=1):
        match = re.match(r"\s*(?:\[\s*([A-Za-z0-9_-]+)\s*\]|([A-Za-z0-9_-]+)\s*=)", line)
        if match and match.group(1):
            table = match.group(1)
            found.setdefault(f"[{table}]", number)
        elif match:
            found.setdefault(f"{table}.{match.group(2)}" if table else match.group(2), number)
    return found


def _check_type(knob_: Knob, value: Any, where: str) -> Any:
    problem = check_type(value, knob_.type, knob_.name)
    if problem:
        raise NanoGPTError(f"{where}: {problem}")
    return float(value) if knob_.type is float else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf")
    if isinstance(value, str):  # JSON's escapes are TOML's, but for DEL, which TOML wants escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return str(value)


def to_toml(model: ModelConfig, train: TrainConfig, preset: str | None = None) -> str:
    """The whole resolved config as a run config file: every field, its help text as a comment. Unset
    optional fields are written commented out (TOML has no null)."""
    lines = ["# A nanogpt run config: `nanogpt train --config FILE`.",
             "# Precedence: defaults < preset < this file < command-line flags.", ""]
    if preset:
        lines += [f"preset = {_toml_value(preset)}", ""]
    for section, config in (("model", asdict(model)), ("train", asdict(train))):
        lines.append(f"[{section}]")
        for name, value in config.items():
            if name in DERIVED:
                continue
            lines.append(f"# {KNOBS[name].help_with_range}")
            lines.append(f"# {name} =" if value is None else f"{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
