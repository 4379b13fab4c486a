"""The networks: nanoGPT's GPT (a GPT-2 shaped decoder-only transformer) and the bigram baseline.

Read top to bottom: small helpers (dropout, normalisation, position tables, rotary embeddings), the
KV cache used for fast sampling, attention, MLP, block, then the GPT that stacks them. Training and
sampling run through the same layer code; sampling passes a cache. Each option beyond nanoGPT
(`ModelConfig.pos`, `norm`, `mlp`, `qk_norm`, `tie`, `softcap`, `residual`) is a small switch where it
acts; the defaults are nanoGPT's network. It knows token ids and tensors only, never text or files.
Its layers are plain torch modules; fastpath.py turns a loaded model into its fast CPU sampling form.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanogpt_cli.config import ModelConfig


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout while training; nothing at all otherwise (F.dropout's checks cost 9% of a sampling step)."""
    return F.dropout(x, p, training) if training and p > 0 else x


NORM_EPS = 1e-5  # every RMSNorm's epsilon, QK-norm's included (Llama's and Qwen3's, so exports compute the same)
ROPE_BASE = 10000.0  # the rotary embedding's base ("rope_theta")


def make_norm(config: ModelConfig) -> nn.Module:
    """The normalisation layer the config asks for: LayerNorm (GPT-2), RMSNorm, which only rescales
    (no mean subtraction, no bias) and is a little cheaper, or none (the lecture's early steps)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=NORM_EPS)
    if config.norm == "none":
        return nn.Identity()
    return nn.LayerNorm(config.n_embd, bias=config.bias)


def sinusoids(length: int, width: int) -> torch.Tensor:
    """The fixed position table of "Attention Is All You Need": sines and cosines of geometrically
    spaced frequencies, so a fixed offset between positions is a fixed rotation."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class Rotary(nn.Module):
    """Rotary position embeddings (RoPE): each pair of a head's query/key channels is rotated by an
    angle proportional to the position, so attention scores depend on relative positions only. Channel
    i of the first half pairs with channel i of the second: (x1, x2) becomes (x1 cos - x2 sin, x2 cos +
    x1 sin), that is x * [cos, cos] + swap(x) * [-sin, sin] with the halves swapped by a roll."""

    def __init__(self, head_size: int, block_size: int, base: float = ROPE_BASE):
        super().__init__()
        frequency = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), frequency)  # (block, head_size / 2)
        # derived from the shape alone: not saved in checkpoints
        self.register_buffer("cos", torch.cat((angles.cos(), angles.cos()), dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat((-angles.sin(), angles.sin()), dim=-1), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate (..., T, head_size) queries and/or keys at positions start .. start + T."""
        positions = x.size(-2)
        cos, sin = self.cos[start : start + positions], self.sin[start : start + positions]
        return (x * cos + x.roll(x.size(-1) // 2, dims=-1) * sin).type_as(x)


class KVCache:
    """Keys and values of the tokens a GPT has already processed, for block_size positions in every
    layer: tensors and a length, nothing else. Each new token then costs one position's work."""

    def __init__(self, config: ModelConfig, batch_size: int, device: torch.device, dtype: torch.dtype):
        # one tensor a layer, keys and values stacked as attention reads them: (2, B, n_head, block, head_size)
        shape = (2, batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.layers = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # positions filled so far

    def reset(self) -> None:  # the next tokens start a new context
        self.length = 0

    def append(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys and values, (2, B, n_head, T, head_size), after the cached ones
        and return every key and every value so far."""
        end = self.length + kv.size(3)
        self.layers[layer][:, :, :, self.length : end] = kv
        keys, values = self.layers[layer][:, :, :, :end]
        return keys, values


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
        self.qk_norm = config.qk_norm
        self.rotary = Rotary(config.n_embd // config.n_head, config.block_size) if config.pos == "rope" else None
        self.layer = layer  # this layer's slot in a KVCache

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """With `last_only`, every position's keys and values are made (and cached) but only the last
        position's output is returned: all that the last layer of a sampling step needs."""
        B, T, C = x.size()
        # Query, key and value of every position; heads become a batch dimension:
        # qkv is (3, B, n_head, T, head_size), views of one matmul's output.
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        past = 0 if cache is None else cache.length  # positions already cached
        if self.qk_norm or self.rotary is not None:  # queries and keys together: one op each, not two
            qk = qkv[:2]
            if self.qk_norm:  # unit-RMS queries and keys keep attention logits in range
                qk = F.rms_norm(qk, (qk.size(-1),), eps=NORM_EPS)
            if self.rotary is not None:  # positions enter here, as rotations of queries and keys
                qk = self.rotary(qk, past)
            q, k = qk.unbind(0)
        if cache is not None:  # sampling: this step's keys and values go after the cached ones
            new = torch.stack((k, v)) if self.qk_norm or self.rotary is not None else qkv[1:]
            k, v = cache.append(self.layer, new)  # every key and value so far
        if last_only:
            q = q[:, :, -1:]  # the last position sees every key: no mask
        # Each position sees the cached ones and, among the new ones, only itself and the past; a single
        # query needs no mask at all. PyTorch picks the fastest kernel it has (flash attention on GPUs).
        queries = q.size(2)
        mask = None
        if queries > 1 and past:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=queries > 1 and not past)
        y = y.transpose(1, 2).reshape(B, queries, C)  # re-join the heads
        return dropout(self.c_proj(y), self.dropout, self.training)


def mlp_width(config: ModelConfig) -> int:
    """The MLP's hidden width: 4x, or for SwiGLU 8/3x rounded up to a multiple of 8."""
    return -(-8 * config.n_embd // 3 // 8) * 8 if config.mlp == "swiglu" else 4 * config.n_embd


class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, a nonlinearity, project back. SwiGLU gates one
    half of a wider projection with the other and is 8/3x wide, so its three matrices hold about as many
    parameters as the 4x MLP's two."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind = config.mlp
        hidden = mlp_width(config)
        self.c_fc = nn.Linear(config.n_embd, hidden * (2 if config.mlp == "swiglu" else 1), bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.kind == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        elif self.kind == "relu2":
            h = F.relu(h).square()
        elif self.kind == "relu":
            h = F.relu(h)
        else:  # gelu, or gelu-tanh: the approximation GPT-2 was trained with
            h = F.gelu(h, approximate="tanh" if self.kind == "gelu-tanh" else "none")
        return dropout(self.c_proj(h), self.dropout, self.training)


class Block(nn.Module):
    """One transformer layer, pre-norm: communicate (attention), then compute (MLP)."""

    def __init__(self, config: ModelConfig, layer: int = 0):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config) if config.mlp != "none" else None
        self.residual = config.residual

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        # Residual connections give gradients a straight path from the loss to every layer.
        # (Without them, as in the lecture's ladder, each part replaces the stream instead.)
        # With `last_only`, only the last position goes on past attention (see CausalSelfAttention).
        attended = self.attn(self.ln_1(x), cache, last_only)
        if last_only:
            x = x[:, -1:]
        x = (x if self.residual else 0) + attended
        if self.mlp is not None:
            x = (x if self.residual else 0) + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """Token + position embeddings, a stack of blocks, a final norm and the language-model head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        layers = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos == "learned":
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        layers["h"] = nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)])
        layers["ln_f"] = make_norm(config)
        self.transformer = nn.ModuleDict(layers)
        if config.pos == "sinusoidal":  # fixed, so not a parameter and not saved
            self.register_buffer("position_table", sinusoids(config.block_size, config.n_embd), persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie:
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
        x = self.transformer.wte(idx)
        if self.config.pos == "learned":
            x = x + self.transformer.wpe.weight[past : past + T]
        elif self.config.pos == "sinusoidal":
            x = x + self.position_table[past : past + T]
        x = dropout(x, self.config.dropout, self.training)  # (rope acts inside attention; none: no positions)
        *blocks, last = self.transformer.h
        for block in blocks:
            x = block(x, cache)
        # Without targets only the last position's logits are wanted, so the last block computes only
        # that position once its attention has seen (and cached) all of them: a sampling step's refill
        # of 128 positions then skips an eighth of its work.
        x = last(x, cache, last_only=targets is None and T > 1)
        if cache is not None:
            cache.length += T
        logits = self.head(self.transformer.ln_f(x))
        if targets is None:
            return logits, None
        # A target of -1 is not learned: task datasets mask the problem, so only its answer counts.
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the final hidden states; with softcap, squashed smoothly into (-cap, cap)."""
        logits = self.lm_head(x)
        if self.config.softcap:
            logits = self.config.softcap * torch.tanh(logits / self.config.softcap)
        return logits

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


class _SkipInit(torch.overrides.TorchFunctionMode):
    """While building a model whose weights are about to be overwritten, torch.nn.init's fills leave their
    tensor as it is (1.5 s saved on GPT-2's 124M parameters). A torch function mode holds for this thread
    only; the meta device would do it too, but its first use imports torch._dynamo, a second of start-up."""

    FILLS = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FILLS or getattr(func, "__module__", None) == "torch.nn.init":  # nn.init, or a fill it makes
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def build_model(config: ModelConfig, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A new model, randomly initialised, or carrying `weights` (a state dict) when given."""
    kind = BigramLanguageModel if config.model == "bigram" else GPT
    if weights is None:
        return kind(config)
    with _SkipInit():
        model = kind(config)
    # strict: every parameter is replaced, or this fails; assign: by the given tensors, not copies
    model.load_state_dict(weights, assign=True)
    if isinstance(model, GPT) and config.tie:  # assigning gave the two ends of the tie a Parameter each
        model.transformer.wte.weight = model.lm_head.weight
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
