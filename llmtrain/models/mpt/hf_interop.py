"""Interchange with stock `transformers.MptForCausalLM` (no trust_remote_code).

Stock MPT (transformers' models/mpt/modeling_mpt.py) runs a fixed architecture whatever its config
says: ALiBi with alibi_bias_max 8 on every layer, no learned positions, no biases, plain LayerNorm,
an MLP of 4 * d_model, multi-head attention, unscaled logits. It honours `clip_qkv`, `softmax_scale`,
`layer_norm_epsilon` and `tie_word_embeddings`. So:

- `export_hf` refuses (UserError naming the key) any model stock MPT would run differently.
- `load_hf` reads a stock folder as the model stock MPT runs, not as its config.json claims (hf_files.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from transformers import MptConfig

from llmtrain.errors import UserError
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.hf_files import STOCK_ARCHITECTURE, save_native, write_weights
from llmtrain.models.mpt.modeling import MPTForCausalLM

__all__ = ["export_hf", "load_hf", "save_native"]


def _refusals(cfg: MPTConfig) -> list[tuple[str, str]]:
    """(dotted key, why) for every setting stock MptForCausalLM cannot run."""
    attn = cfg.attn_config
    checks = [
        (not attn["alibi"], "attn_config.alibi", "stock MPT always uses ALiBi; train with alibi: true"),
        (attn["alibi_bias_max"] != 8, "attn_config.alibi_bias_max", "stock MPT's ALiBi is fixed at alibi_bias_max 8"),
        (attn["rope"], "attn_config.rope", "stock MPT has no rotary embeddings"),
        (attn["attn_type"] != "multihead_attention", "attn_config.attn_type",
         "stock MPT runs multi-head attention only (no grouped/multi-query k/v heads)"),
        (attn["qk_ln"], "attn_config.qk_ln", "stock MPT has no q/k LayerNorm"),
        (not cfg.no_bias, "no_bias", "stock MPT has no bias terms; train with no_bias: true"),
        (cfg.expansion_ratio != 4, "expansion_ratio", "stock MPT's MLP is fixed at 4 * d_model"),
        ("rmsnorm" in cfg.norm_type, "norm_type", "stock MPT uses LayerNorm"),
        (cfg.logit_scale is not None, "logit_scale", "stock MPT does not scale logits"),
    ]
    return [(key, why) for refused, key, why in checks if refused]


def export_hf(model: MPTForCausalLM, out_dir, tokenizer=None, dtype: Optional[torch.dtype] = None) -> Path:
    """Write `model` as a folder that stock `transformers.MptForCausalLM.from_pretrained` loads:
    config.json (model_type mpt), model.safetensors, and the tokenizer's files when given."""
    cfg = model.config
    refusals = _refusals(cfg)
    if refusals:
        key, why = refusals[0]
        raise UserError(f"model.{key}: cannot export to Hugging Face MPT format: {why}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved_dtype = write_weights(model, out, dtype)
    attn = cfg.attn_config
    stock = MptConfig(
        d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, expansion_ratio=4,
        max_seq_len=cfg.max_seq_len, vocab_size=cfg.vocab_size, layer_norm_epsilon=cfg.layer_norm_epsilon,
        learned_pos_emb=False, no_bias=True, tie_word_embeddings=cfg.tie_word_embeddings,
        attn_config={"alibi": True, "alibi_bias_max": 8, "clip_qkv": attn["clip_qkv"],
                     "softmax_scale": attn["softmax_scale"], "attn_impl": "torch"},
        architectures=[STOCK_ARCHITECTURE], dtype=saved_dtype)
    stock.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def load_hf(path) -> MPTForCausalLM:
    """`MPTForCausalLM` from a Hugging Face folder: stock MPT (architectures MptForCausalLM) or our
    own `save_pretrained` output, whose config.json holds every key of MPTConfig."""
    return MPTForCausalLM.from_pretrained(path)
