"""Sampling text from a trained model.

`generate_tokens` is the sampling loop over token ids. The prompt is fed through the model once
(prefill, filling the KV cache); after that each step feeds only the newest token. The context is at
most block_size tokens: when it would grow past that, the window slides, keeping the last half of a
block (WINDOW_KEEP), and the cache is refilled from those tokens in one pass. With `use_cache=False` the same
windows are fed whole at every step (the slow, simple path; outputs are the same).

`SampleSession` holds a run's model and tokenizer and turns prompts into streamed text, with stop
strings and timing. This module knows token ids and a tokenizer; it never reads files or prints.
"""

from __future__ import annotations

import codecs
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from nanogpt_cli.catalog import resolve_run
from nanogpt_cli.checkpoint import checkpoint_path, load_model
from nanogpt_cli.config import check_option, check_seed
from nanogpt_cli.device import resolve_device, resolve_dtype
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.fastpath import prepare_for_sampling, sampling_step
from nanogpt_cli.tasks import task_of
from nanogpt_cli.tokenizer import Tokenizer

WINDOW_KEEP = 0.5  # fraction of block_size kept when the context window slides


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int,
                        seed: int | None = None) -> None:
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                        ("max_new_tokens", max_new_tokens)):
        check_option(name, value)  # the ranges --help shows (config.OPTION_RANGES)
    check_seed(seed)


def next_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row of (B, vocab) logits, as a (B, 1) tensor: greedy at temperature 0,
    else sample after temperature scaling, top-k and then top-p (nucleus) filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    raw, logits = logits, logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # Keep the most likely tokens until their probability adds up to top_p (at least one).
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass of the tokens ranked above each one
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1).cpu()  # the generator is a CPU one; the result stays on the CPU
    if not math.isfinite(probs.sum()):  # NaN or inf anywhere makes every probability NaN
        if torch.isfinite(raw).all():  # a temperature so small that the scaled logits overflow: its limit is greedy
            return raw.argmax(dim=-1, keepdim=True)
        raise NanoGPTError("the model's outputs are not finite numbers (NaN or inf): its weights are broken; "
                           "sample from an earlier checkpoint or retrain")
    # torch.multinomial's own method for one sample, without its checks (above, in one op): dividing
    # each probability by Exp(1) noise and taking the largest picks token i with probability p_i.
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1, keepdim=True)


@torch.inference_mode()
def generate_tokens(
    model: torch.nn.Module,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    vocab_size: int | None = None,
) -> Iterator[int]:
    """Yield `max_new_tokens` new token ids continuing `prompt` (which must not be empty). With
    `vocab_size`, only ids below it are chosen (a model's vocabulary may be padded past its tokenizer's)."""
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if not prompt:
        raise NanoGPTError("the prompt is empty; give at least one character or token")
    weight = next(model.parameters())
    device, dtype = weight.device, weight.dtype
    block_size = model.config.block_size
    keep = max(1, int(block_size * WINDOW_KEEP))
    window = list(prompt[-block_size:])
    cache = model.new_cache() if use_cache else None
    picked = None  # the last token, as the (1, 1) tensor next_token returned
    for _ in range(max_new_tokens):
        # Without a cache, the whole window every step; with one, the window once to fill it (first
        # step, or after the window slid), then only the newest token: the tensor it was picked as.
        if cache is None or cache.length == 0:
            fed = torch.tensor([window], device=device)
        else:
            fed = picked.to(device)
        with sampling_step(onednn=dtype != torch.float32):
            logits, _ = model(fed, cache=cache)
            picked = next_token(logits[:, -1, :vocab_size], temperature, top_k, top_p, generator)
        token = int(picked)
        yield token
        window.append(token)
        if len(window) > block_size:
            window = window[-keep:]
            if cache is not None:
                cache.reset()


class StreamDecoder:
    """Turns token ids into text one token at a time. A BPE token can end in the middle of a UTF-8
    character; those bytes are held back until the character is complete."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._bytes = hasattr(tokenizer, "decode_bytes")  # BPE: a token may end inside a character
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        if not self._bytes:
            return self._tokenizer.decode([token])
        return self._utf8.decode(self._tokenizer.decode_bytes([token]))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True) if self._bytes else ""


@dataclass
class Generation:
    """One sample being generated: iterate it for text pieces; afterwards it holds the statistics."""

    pieces: Iterator[str]
    prompt: str
    text: str = ""  # the continuation produced so far (without the prompt)
    tokens: int = 0
    seconds: float = 0.0
    time_to_first_token: float | None = None
    stopped: bool = False  # ended by a stop string rather than the token limit
    _parts: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            self._parts.append(piece)
            yield piece
        self.text = "".join(self._parts)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "tokens": self.tokens,
            "tokens_per_second": round(self.tokens_per_second, 2),
            "time_to_first_token": None if self.time_to_first_token is None else round(self.time_to_first_token, 4),
            "stopped": self.stopped,
        }


class SampleSession:
    """A model loaded from a run, ready to turn prompts into streamed text."""

    def __init__(self, loaded, run: str):
        self.model = prepare_for_sampling(loaded.model)
        self.tokenizer = loaded.tokenizer
        self.run = run
        self.checkpoint = loaded.path.name
        self.task = task_of(loaded.checkpoint)  # a model trained on arithmetic answers problems

    def solve(self, problem: str) -> str:
        """A task model's answer to `problem` ("123+456="), greedy, written the right way round."""
        ids = self.tokenizer.encode(self.task.prompt(problem))
        steps = self.task.length - self.task.answer_start
        generated = self.tokenizer.decode(list(generate_tokens(self.model, ids, steps, temperature=0.0)))
        return self.task.read_answer(generated)

    @classmethod
    def open(cls, run: str | None = None, checkpoint: str = "best", device: str = "auto", dtype: str = "auto",
             quantize: str | None = None) -> SampleSession:
        run_dir = resolve_run(run)
        where = resolve_device(device)
        loaded = load_model(checkpoint_path(run_dir, checkpoint), where, resolve_dtype(dtype, where), quantize)
        return cls(loaded, run_dir.name)

    def generate(
        self,
        prompt: str | None,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = 200,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
        use_cache: bool = True,
    ) -> Generation:
        """A Generation that yields the continuation of `prompt` piece by piece as it is sampled
        (not the prompt itself). Generation ends after max_new_tokens or just before a stop string."""
        check_sampling_args(temperature, top_k, top_p, max_new_tokens, seed)
        stops = [s for s in (stop or []) if s]
        ids = self.tokenizer.encode(prompt) if prompt else self.tokenizer.default_prompt()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        tokens = generate_tokens(self.model, ids, max_new_tokens, temperature, top_k, top_p, generator, use_cache,
                                 self.tokenizer.vocab_size)
        result = Generation(iter(()), prompt or "")
        result.pieces = self._stream(result, tokens, stops)
        return result

    def _stream(self, result: Generation, tokens: Iterator[int], stops: list[str]) -> Iterator[str]:
        decoder = StreamDecoder(self.tokenizer)
        # Text that could be the start of a stop string is held back until it is known not to be.
        hold = max((len(s) for s in stops), default=1) - 1
        pending = ""
        start = time.perf_counter()
        for token in tokens:
            if result.tokens == 0:
                result.time_to_first_token = time.perf_counter() - start
            result.tokens += 1
            pending += decoder.push(token)
            cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                result.stopped = True
                pending = pending[:cut]
                break
            if len(pending) > hold:
                ready, pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
                result.seconds = time.perf_counter() - start
                yield ready
        if not result.stopped:
            pending += decoder.flush()
        result.seconds = time.perf_counter() - start
        if pending:
            yield pending


def sample_from_run(run: str | None, prompt: str | None, max_new_tokens: int, seed: int | None = None,
                    temperature: float = 0.8, top_k: int | None = 200, device: str = "auto") -> str:
    """The prompt and one sampled continuation from a run's best checkpoint, as text."""
    session = SampleSession.open(run, "best", device)
    generation = session.generate(prompt, max_new_tokens, temperature, top_k, seed=seed)
    return (prompt or "") + "".join(generation)
