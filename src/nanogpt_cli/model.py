"""The networks: nanoGPT's GPT (a GPT-2 shaped decoder-only transformer) and the bigram baseline.

Read top to bottom: the KV cache used for fast sampling, attention, MLP, block, then the GPT that
stacks them. Training and sampling run through the same layer code; sampling passes a cache. This module knows token ids and tensors only; it never sees text, files or devices chosen
by the user.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanogpt_cli.config import ModelConfig


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout while training; nothing at all otherwise (a sampling step would call it 13 times)."""
    return F.dropout(x, p, training) if training and p > 0 else x


class KVCache:
    """Keys and values of the tokens a GPT has already processed, preallocated for block_size positions
    in every layer: tensors and a length, nothing else. With it, each new token costs one position's
    work instead of the whole context's. Training never uses it."""

    def __init__(self, config: ModelConfig, batch_size: int, device: torch.device, dtype: torch.dtype):
        # Stored as attention reads them, (B, n_head, block_size, head_size): each step reads a
        # contiguous slice instead of gathering strided heads.
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # positions filled so far

    def reset(self) -> None:
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new (B, n_head, T, head_size) keys and values after the cached ones and
        return every key and value so far."""
        end = self.length + k.size(2)
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and the past."""

    def __init__(self, config: ModelConfig, layer: int = 0):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # One matmul produces queries, keys and values for every head at once.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.layer = layer  # this layer's slot in a KVCache

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        # Query, key and value of every position; heads become a batch dimension: (B, n_head, T, head_size).
        qkv = self.c_attn(x).view(B, T, 3, C).unbind(2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in qkv)
        if cache is None:
            # PyTorch picks the fastest kernel it has (flash attention on recent GPUs).
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        else:
            # Sampling: the new tokens see every cached position and, among themselves, only the past.
            # A single new token needs no mask at all.
            past = cache.length
            k, v = cache.append(self.layer, k, v)  # every key and value so far
            mask = None if T == 1 else torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-join the heads
        return dropout(self.c_proj(y), self.dropout, self.training)


class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, GELU, project back."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(self.c_proj(F.gelu(self.c_fc(x))), self.dropout, self.training)


class Block(nn.Module):
    """One transformer layer, pre-norm: communicate (attention), then compute (MLP)."""

    def __init__(self, config: ModelConfig, layer: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        # Residual connections give gradients a straight path from the loss to every layer.
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """Token + position embeddings, a stack of blocks, a final LayerNorm and the language-model head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: reading a token in and writing it out use one matrix. It saves
        # vocab_size * n_embd parameters and, as GPT-2 found, trains at least as well.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # Every block adds two residual projections to the stream; scaling their init by
        # 1/sqrt(2 * n_layer) keeps the stream's variance from growing with depth (GPT-2 paper).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids. With targets, returns logits for every position and the mean
        cross-entropy; without, only the last position's logits (all that sampling needs). With a
        cache, idx holds only the tokens that follow the cached ones: sampling feeds the prompt once,
        then one token per step."""
        B, T = idx.size()
        past = cache.length if cache is not None else 0
        assert past + T <= self.config.block_size, f"{past + T} tokens exceed block_size {self.config.block_size}"
        x = self.transformer.wte(idx) + self.transformer.wpe.weight[past : past + T]  # token + position
        x = dropout(x, self.config.dropout, self.training)
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def store_weights_column_major(self) -> None:
        """Keep each Linear weight transposed in memory: the same values and shape, another layout.
        On a CPU, multiplying one vector by a column-major matrix reads memory about 10% faster, and
        a sampling step is mostly such products (docs/performance.md). For sampling only; training
        and export keep the usual row-major layout."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight = nn.Parameter(module.weight.t().contiguous().t(), requires_grad=False)
        self.transformer.wte.weight = self.lm_head.weight  # the tie survives the new storage

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty cache for this model: one per generation."""
        weight = self.lm_head.weight
        return KVCache(self.config, batch_size, weight.device, weight.dtype)


class BigramLanguageModel(nn.Module):
    """The lecture's baseline: each token looks up the logits of the next one in a table."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if targets is None:
            return self.token_embedding_table(idx[:, [-1]]), None
        logits = self.token_embedding_table(idx)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def new_cache(self, batch_size: int = 1) -> None:
        return None  # the next token depends on the last one only: there is nothing to cache


def build_model(config: ModelConfig, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A new model, randomly initialised, or carrying `weights` (a state dict) when given. The config
    was validated where it was made (plan.py, or the file it was read from)."""
    model = BigramLanguageModel(config) if config.model == "bigram" else GPT(config)
    if weights is not None:
        # Built on the CPU and then overwritten: building on the "meta" device would skip the random
        # init, but its first use imports torch._dynamo, which costs more than the init saves.
        model.load_state_dict(weights)
    return model


def count_parameters(model: nn.Module) -> int:
    """Parameters the model learns (a tied matrix counted once)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_token(config: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token (forward and backward), as in the PaLM paper's appendix B: 6 per
    parameter for the matmuls, plus the attention scores and their weighted sum over the context."""
    if config.model == "bigram":
        return 6.0 * n_params / config.vocab_size  # one table row per token
    head_size = config.n_embd // config.n_head
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_head * head_size * config.block_size
