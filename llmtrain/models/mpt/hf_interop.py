"""Interchange with stock `transformers.MptForCausalLM` (no trust_remote_code).

Stock MPT (transformers' models/mpt/modeling_mpt.py) runs a fixed architecture whatever its config
says: ALiBi with alibi_bias_max 8 on every layer, no learned positions, no biases, plain LayerNorm,
an MLP of 4 * d_model, multi-head attention, unscaled logits. It honours `clip_qkv`, `softmax_scale`,
`layer_norm_epsilon` and `tie_word_embeddings`. So:

- `export_hf` refuses (UserError naming the key) any model stock MPT would run differently.
- `load_hf` reads a stock folder as the model stock MPT runs, not as its config.json claims.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from llmtrain.errors import UserError
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.modeling import MPTForCausalLM

STOCK_ARCHITECTURE = "MptForCausalLM"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


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


def _write_weights(model: MPTForCausalLM, folder: Path, dtype: Optional[torch.dtype]) -> torch.dtype:
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]  # the same tensor as transformer.wte.weight; re-tied on load
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    return state["transformer.wte.weight"].dtype


def save_native(model: MPTForCausalLM, out_dir) -> Path:
    """config.json with every MPTConfig key, and model.safetensors: read back by `load_hf`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_weights(model, out, None)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out)
    return out


def export_hf(model: MPTForCausalLM, out_dir, tokenizer=None, dtype: Optional[torch.dtype] = None) -> Path:
    """Write `model` as a folder that stock `transformers.MptForCausalLM.from_pretrained` loads:
    config.json (model_type mpt), model.safetensors, and the tokenizer's files when given."""
    from transformers import MptConfig

    cfg = model.config
    refusals = _refusals(cfg)
    if refusals:
        key, why = refusals[0]
        raise UserError(f"model.{key}: cannot export to Hugging Face MPT format: {why}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved_dtype = _write_weights(model, out, dtype)
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


def _stock_to_config(raw: dict) -> MPTConfig:
    """Our config for what stock MPT runs from this config.json (see module docstring)."""
    attn = raw.get("attn_config") or {}
    return MPTConfig(
        d_model=raw["d_model"], n_heads=raw["n_heads"], n_layers=raw["n_layers"], expansion_ratio=4,
        max_seq_len=raw["max_seq_len"], vocab_size=raw["vocab_size"],
        layer_norm_epsilon=raw.get("layer_norm_epsilon", 1e-5), no_bias=True, norm_type="layernorm",
        learned_pos_emb=False, tie_word_embeddings=raw.get("tie_word_embeddings", True),
        attn_config={"alibi": True, "alibi_bias_max": 8, "clip_qkv": attn.get("clip_qkv"),
                     "softmax_scale": attn.get("softmax_scale")})


def _read_weights(folder: Path) -> dict:
    if (folder / WEIGHTS).exists():
        return load_file(str(folder / WEIGHTS))
    if (folder / WEIGHTS_INDEX).exists():
        shards = sorted(set(json.loads((folder / WEIGHTS_INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(folder / shard)).items()}
    raise UserError(f"{folder}: no {WEIGHTS} or {WEIGHTS_INDEX}; point at a folder written by "
                    f"save_pretrained or export_hf")


def load_hf(path) -> MPTForCausalLM:
    """`MPTForCausalLM` from a Hugging Face folder: stock MPT (architectures MptForCausalLM) or our
    own `save_pretrained` output, whose config.json holds every key of MPTConfig."""
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.exists():
        raise UserError(f"{folder}: no config.json; point at a Hugging Face model folder")
    raw = json.loads(config_file.read_text())
    if raw.get("model_type") != "mpt":
        raise UserError(f"{config_file}: model_type is {raw.get('model_type')!r}, not 'mpt'")
    stock = STOCK_ARCHITECTURE in (raw.get("architectures") or [])
    config = _stock_to_config(raw) if stock else MPTConfig(**{**raw, "init_device": "cpu"})
    state = _read_weights(folder)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model = MPTForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise UserError(f"{folder}: weights do not match the config (missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]})")
    return model
