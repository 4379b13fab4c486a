"""One .gguf file for llama.cpp, Ollama and LM Studio, written with the `gguf` package (the `[gguf]` extra).

The tensors arrive in transformers' names (export.py) and leave in llama.cpp's. Two changes of form,
none of function: llama.cpp's Llama and Arcee rotate neighbouring query/key channels where we (and
transformers) rotate channel i with i + head_size/2, so their query and key rows are reordered to match;
the GPT-2 layout's Conv1D weights go back to the (out, in) orientation. A char vocabulary gets one
more token, an end-of-text marker with a zero embedding (llama.cpp would otherwise treat token 11 as the
end of every text): its logit is always 0, the only number the file adds to ours.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.export import GPT2, Layout
from nanogpt_cli.exporttokens import CONTROL, UNUSED, GGUFVocab
from nanogpt_cli.model import NORM_EPS, ROPE_BASE, mlp_width
from nanogpt_cli.pretrained import CONV1D
from nanogpt_cli.tokenizer import EOT_TEXT

LLAMA_NAMES = {  # transformers' name in a layer -> llama.cpp's
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
GPT2_NAMES = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
              "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight", "wte.weight": "token_embd.weight",
             "wpe.weight": "position_embd.weight", "ln_f.weight": "output_norm.weight",
             "ln_f.bias": "output_norm.bias"}


def gguf_name(name: str) -> str:
    """llama.cpp's name for a tensor named as transformers names it (Llama family or GPT-2)."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    found = re.fullmatch(r"(?:model\.layers|h)\.(\d+)\.(.+)\.(weight|bias)", name)
    if found is None:
        raise ValueError(f"no GGUF name for {name}")
    layer, part, kind = found.groups()
    return f"blk.{layer}.{(LLAMA_NAMES | GPT2_NAMES)[part]}.{kind}"


def interleave_rotary(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder each head's query/key rows from the halves pairing (i, i + d/2) to neighbours (2i, 2i + 1)."""
    rows, cols = weight.shape
    return weight.reshape(n_head, 2, rows // n_head // 2, cols).transpose(1, 2).reshape(rows, cols)


def _metadata(writer, config: ModelConfig, layout: Layout, name: str) -> None:
    head_size = config.n_embd // config.n_head
    writer.add_name(name)
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(mlp_width(config))
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head)
    if layout is GPT2:
        writer.add_layer_norm_eps(1e-5)
        return
    writer.add_layer_norm_rms_eps(NORM_EPS)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_rope_dimension_count(head_size)
    writer.add_key_length(head_size)
    writer.add_value_length(head_size)


def _vocab_metadata(writer, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model("gpt2")  # llama.cpp's byte-level BPE
    writer.add_tokenizer_pre("gpt-2")  # GPT-2's word splitting
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    # llama.cpp refuses a BPE without merges (an ASCII char vocabulary has none), and the gguf package
    # does not write an empty list: a merge of two NUL bytes, which no token and no text of ours holds, stands in
    writer.add_token_merges(vocab.merges or ["\u0100 \u0100"])
    writer.add_bos_token_id(vocab.eot)
    writer.add_eos_token_id(vocab.eot)
    writer.add_add_bos_token(False)
    if vocab.unknown is not None:
        writer.add_unk_token_id(vocab.unknown)


def write_gguf(folder: Path, tensors: dict[str, torch.Tensor], config: ModelConfig, layout: Layout,
               vocab: GGUFVocab, quantize: str | None, name: str = "nanogpt") -> list[Path]:
    import gguf

    for i in range(len(vocab.tokens), config.vocab_size):  # rows past the tokenizer's (nanoGPT pads 50257 to 50304)
        vocab.tokens.append(f"[PAD{i}]")
        vocab.types.append(UNUSED)
    if vocab.eot is None:  # a char vocabulary: add the end-of-text token llama.cpp needs, never predicted by us
        vocab.eot = len(vocab.tokens)
        vocab.tokens.append(EOT_TEXT)
        vocab.types.append(CONTROL)
    dtype = next(iter(tensors.values())).dtype
    file_types = {torch.float32: gguf.LlamaFileType.ALL_F32, torch.float16: gguf.LlamaFileType.MOSTLY_F16,
                  torch.bfloat16: gguf.LlamaFileType.MOSTLY_BF16}
    path = folder / "model.gguf"
    writer = gguf.GGUFWriter(path, layout.gguf_arch)
    _metadata(writer, config, layout, name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else file_types[dtype])
    _vocab_metadata(writer, vocab)
    for hf_name, tensor in tensors.items():
        target = gguf_name(hf_name)
        if layout is GPT2 and hf_name.endswith(CONV1D):
            tensor = tensor.t()
        if layout.interleaved_rope and target.endswith(("attn_q.weight", "attn_k.weight")):
            tensor = interleave_rotary(tensor, config.n_head)
        if target in ("token_embd.weight", "output.weight") and tensor.shape[0] < len(vocab.tokens):
            tensor = torch.cat((tensor, tensor.new_zeros(len(vocab.tokens) - tensor.shape[0], tensor.shape[1])))
        if tensor.dim() == 1:  # norms and biases stay float32, as llama.cpp's own converter keeps them
            tensor = tensor.float()
        if quantize and tensor.dim() == 2 and tensor.shape[1] % 32 == 0:  # q8_0 blocks are 32 numbers of a row
            kind = gguf.GGMLQuantizationType.Q8_0
        elif tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: the gguf package rounds float32 for us
            kind = gguf.GGMLQuantizationType.BF16
        else:
            writer.add_tensor(target, tensor.contiguous().numpy())
            continue
        writer.add_tensor(target, gguf.quants.quantize(tensor.float().contiguous().numpy(), kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    modelfile = folder / "Modelfile"  # for `ollama create NAME -f Modelfile`: raw text in, no chat template
    modelfile.write_text(MODELFILE.format(block_size=config.block_size), encoding="utf-8")
    return [path, modelfile]


MODELFILE = '''FROM ./model.gguf
TEMPLATE """{{{{ .Prompt }}}}"""
PARAMETER num_ctx {block_size}
PARAMETER temperature 0.8
PARAMETER top_k 200
'''
