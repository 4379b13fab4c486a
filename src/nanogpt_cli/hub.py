"""Datasets on the Hugging Face Hub as a source for `nanogpt prepare hf:OWNER/NAME[@REVISION]` (the `[hub]`
extra: huggingface_hub, which honours HF_ENDPOINT, HF_HOME and HF_TOKEN itself).

Which files: the dataset card's `configs` (the YAML at the top of its README.md, as the `datasets` library
reads it) name each subset's files per split, as glob patterns; `--subset` picks one, else the card's
default. Without such a card, a file belongs to a split when its path names it (`data/train-0000.parquet`,
`train/00.jsonl`), and to the subset when a folder of its path is named so. The JSON Lines and Parquet
files found become documents of records (sources.py), fetched into the Hub's cache one by one as prepare
reaches them, so `--max-tokens` downloads only the files it reads. The validation split is the corpus's
own where it has one (validation, valid or val), else prepare holds out the end of the text as usual.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from nanogpt_cli import paths
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.sources import RECORD_FILES, Document, Source

VAL_SPLITS = ("validation", "valid", "val")


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise NanoGPTError('hf: datasets need huggingface_hub: pip install "nanogpt-cli[hub]"') from None
    from huggingface_hub.utils import disable_progress_bars, logging

    logging.set_verbosity_error()  # its retry warnings would make one error many lines
    disable_progress_bars()  # prepare draws its own
    return huggingface_hub


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _download(repo: str, path: str, revision: str | None) -> Path:
    """A file of the dataset from the Hub's cache (HF_HUB_CACHE, or HF_HOME/hub), downloaded if missing.
    The endpoint and cache are read now: huggingface_hub reads them once, when it is imported."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    cache = os.environ.get("HF_HUB_CACHE", str(home / "hub"))
    return Path(_hub().hf_hub_download(repo, path, repo_type="dataset", revision=revision, endpoint=_endpoint(),
                                       cache_dir=cache))


def _hub_error(exc: Exception, repo: str, revision: str | None) -> NanoGPTError:
    """One line for what the Hub answered (or that it could not be reached)."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return NanoGPTError(f"dataset {repo} is gated: accept its conditions at {_endpoint()}/datasets/{repo} and "
                            "set HF_TOKEN to an access token of that account")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return NanoGPTError(f"no dataset {repo} on the Hub ({_endpoint()}), or it is private (set HF_TOKEN); check "
                            "the name, e.g. hf:HuggingFaceFW/fineweb-edu")
    if isinstance(exc, errors.RevisionNotFoundError):
        return NanoGPTError(f"dataset {repo} has no revision {revision!r}")
    return NanoGPTError(f"cannot reach the Hugging Face Hub at {_endpoint()} ({type(exc).__name__}); check the "
                        "network, or set HF_ENDPOINT to a mirror")


def _configs(repo: str, revision: str | None, names: set[str]) -> list[dict[str, Any]]:
    """The dataset card's `configs`, or [] without a card or a readable one."""
    if "README.md" not in names:
        return []
    import yaml

    card = _download(repo, "README.md", revision).read_text(encoding="utf-8", errors="replace")
    found = re.match(r"---\s*\n(.*?)\n---", card, re.S)
    try:
        meta = yaml.safe_load(found.group(1)) if found else None
    except yaml.YAMLError:
        return []
    configs = meta.get("configs") if isinstance(meta, dict) else None
    return [c for c in configs if isinstance(c, dict) and "config_name" in c] if isinstance(configs, list) else []


def _split_patterns(config: dict[str, Any]) -> dict[str, list[str]]:
    """split -> glob patterns of a card config's data_files (a pattern, a list of them, or per split)."""
    files = config.get("data_files")
    if isinstance(files, str):
        return {"train": [files]}
    patterns: dict[str, list[str]] = {}
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, str):
            patterns.setdefault("train", []).append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("split"), str):
            path = entry.get("path")
            patterns.setdefault(entry["split"], []).extend([path] if isinstance(path, str) else list(path or []))
    return patterns


def _by_name(files: list[str], subset: str | None, split: str) -> list[str]:
    """Files whose path names the split (and has a folder named like the subset)."""
    word = re.compile(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)")
    return [f for f in files if word.search(f) and (subset is None or subset in PurePosixPath(f).parts[:-1])]


def hub_source(spec: str, subset: str | None = None, split: str = "train", text_field: str = "text"
               ) -> tuple[Source, Source | None]:
    """The train source (and the corpus's own validation source, if any) of `hf:OWNER/NAME[@REVISION]`."""
    repo, _, revision = spec.removeprefix("hf:").partition("@")
    revision = revision or None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise NanoGPTError(f"{spec!r}: name a Hub dataset as hf:OWNER/NAME, optionally @REVISION "
                           "(e.g. hf:HuggingFaceFW/fineweb-edu)")
    hub = _hub()
    try:
        api = hub.HfApi(endpoint=_endpoint())
        tree = list(api.list_repo_tree(repo, repo_type="dataset", revision=revision, recursive=True))
        sizes = {f.path: getattr(f, "size", None) for f in tree if type(f).__name__ == "RepoFile"}
        configs = _configs(repo, revision, set(sizes))
    except Exception as exc:  # the Hub's errors, httpx's network errors, OSError
        raise _hub_error(exc, repo, revision) from None
    data = sorted(p for p in sizes if PurePosixPath(p).suffix.lower() in RECORD_FILES)
    if configs:
        names = [c["config_name"] for c in configs]
        if subset is not None and subset not in names:
            raise NanoGPTError(f"dataset {repo} has no subset {subset!r}{paths.closest(subset, names)}; its subsets: "
                               f"{', '.join(names[:20])}")
        config = next((c for c in configs if c["config_name"] == subset or (subset is None and c.get("default"))),
                      next((c for c in configs if c["config_name"] == "default"), configs[0]))
        patterns = _split_patterns(config)

        def files_of(name: str) -> list[str]:
            return [p for p in data if any(fnmatch.fnmatchcase(p, g) for g in patterns.get(name, []))]
        splits, where = sorted(patterns), f"subset {config['config_name']!r}"
    else:
        def files_of(name: str) -> list[str]:
            return _by_name(data, subset, name)
        splits = sorted({s for s in ("train", "test", *VAL_SPLITS) if _by_name(data, subset, s)})
        where = f"subset {subset!r}" if subset else "its files"
    train = files_of(split)
    if not train and not configs and not splits and split == "train":
        train = [p for p in data if subset is None or subset in PurePosixPath(p).parts[:-1]]  # one split: all of it
    if not train:
        kinds = "" if data else " (it holds no .jsonl or .parquet files)"
        raise NanoGPTError(f"dataset {repo}{kinds}: no {split!r} split in {where}"
                           + (f"; its splits: {', '.join(splits)}" if splits else "") + "; pick one with --split")
    val_name = next((v for v in VAL_SPLITS if v != split and files_of(v)), None)

    def source(files: list[str], what: str) -> Source:
        def fetcher(path: str):
            def fetch() -> Path:
                try:
                    return _download(repo, path, revision)
                except Exception as exc:
                    raise _hub_error(exc, repo, revision) from None
            return fetch

        documents = [Document(f"{repo}/{p}", text_field=text_field, fetch=fetcher(p), known_size=sizes[p] or 0)
                     for p in files]
        name = paths.safe_name(repo.split("/")[1] + (f"-{subset}" if subset else ""))
        return Source(f"hf:{repo}{'@' + revision if revision else ''} ({what})", name, documents)

    return source(train, split), source(files_of(val_name), val_name) if val_name else None
