"""Sampling text from a trained model.

`generate_tokens` is the sampling loop over token ids: crop the context to block_size, take the last
position's logits, apply temperature / top-k, draw the next token, repeat. It yields tokens one at a
time so callers can stream. `SampleSession` wraps it with a run's model and tokenizer for prompt-in, text-out use.
This module knows token ids and a tokenizer; it never reads files or prints.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.nn import functional as F

from nanogpt_cli.errors import NanoGPTError


def check_sampling_args(temperature: float, top_k: int | None, max_new_tokens: int) -> None:
    if temperature < 0:
        raise NanoGPTError(f"--temperature must be 0 (greedy) or positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise NanoGPTError(f"--top-k must be at least 1, got {top_k}")
    if max_new_tokens < 0:
        raise NanoGPTError(f"--max-new-tokens must not be negative, got {max_new_tokens}")


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token per row from (B, vocab) logits. temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(logits.device)


@torch.no_grad()
def generate_tokens(
    model: torch.nn.Module,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yield `max_new_tokens` new token ids continuing `prompt` (which must not be empty)."""
    check_sampling_args(temperature, top_k, max_new_tokens)
    if not prompt:
        raise NanoGPTError("the prompt is empty; give at least one character or token")
    device = next(model.parameters()).device
    block_size = model.config.block_size
    idx = torch.tensor([prompt], dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        context = idx if idx.size(1) <= block_size else idx[:, -block_size:]
        logits, _ = model(context)
        token = next_token(logits[:, -1, :], temperature, top_k, generator)
        idx = torch.cat((idx, token), dim=1)
        yield int(token)


class SampleSession:
    """A model loaded from a run, ready to turn prompts into streamed text."""

    def __init__(self, loaded, run: str):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.run = run
        self.checkpoint = loaded.path.name
        self.last_prompt = ""

    @classmethod
    def open(cls, run: str | None = None, checkpoint: str = "best", device: str = "auto") -> SampleSession:
        from nanogpt_cli.catalog import resolve_run
        from nanogpt_cli.checkpoint import checkpoint_path, load_model
        from nanogpt_cli.device import resolve_device

        run_dir = resolve_run(run)
        return cls(load_model(checkpoint_path(run_dir, checkpoint), resolve_device(device)), run_dir.name)

    def default_prompt(self) -> list[int]:
        """Start from <|endoftext|> for BPE models, a newline (as nanoGPT does) for char models."""
        eot = getattr(self.tokenizer, "eot_token", None)
        if eot is not None:
            return [eot]
        chars = self.tokenizer.chars
        return [chars.index("\n") if "\n" in chars else 0]

    def stream(
        self,
        prompt: str | None,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = 200,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield the prompt, then the continuation piece by piece as it is generated."""
        from nanogpt_cli.tokenizer import StreamDecoder

        check_sampling_args(temperature, top_k, max_new_tokens)
        if prompt:
            ids = self.tokenizer.encode(prompt)
            self.last_prompt = prompt
        else:
            ids = self.default_prompt()
            self.last_prompt = ""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return self._pieces(ids, prompt or "", max_new_tokens, temperature, top_k, generator, StreamDecoder(self.tokenizer))

    def _pieces(self, ids, prompt_text, max_new_tokens, temperature, top_k, generator, decoder) -> Iterator[str]:
        if prompt_text:
            yield prompt_text
        for token in generate_tokens(self.model, ids, max_new_tokens, temperature, top_k, generator):
            piece = decoder.push(token)
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail


def sample_from_run(run: str | None, prompt: str | None, max_new_tokens: int, seed: int | None = None,
                    temperature: float = 0.8, top_k: int | None = 200, device: str = "auto") -> str:
    """The whole text of one sample from a run's best checkpoint."""
    session = SampleSession.open(run, "best", device)
    return "".join(session.stream(prompt, max_new_tokens, temperature, top_k, seed))
