"""Hugging Face model folders on disk (config.json + safetensors), below the model: what
`MPTForCausalLM.save_pretrained` / `from_pretrained` read and write, and hf_interop.py builds on.

A folder is ours (config.json holds every MPTConfig key) or stock transformers MPT's (architectures
MptForCausalLM), read as the model stock MPT runs, not as its config.json claims (see hf_interop.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from llmtrain.errors import UserError
from llmtrain.models.mpt.configuration import MPTConfig

STOCK_ARCHITECTURE = "MptForCausalLM"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def write_weights(model, folder: Path, dtype: Optional[torch.dtype]) -> torch.dtype:
    """`model`'s (an MPTForCausalLM) weights as folder/model.safetensors; the dtype they were saved in."""
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]  # the same tensor as transformer.wte.weight; re-tied on load
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    return state["transformer.wte.weight"].dtype


def save_native(model, out_dir) -> Path:
    """config.json with every MPTConfig key, and model.safetensors: read back by `read_folder`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_weights(model, out, None)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out)
    return out


def stock_to_config(raw: dict) -> MPTConfig:
    """Our config for what stock MPT runs from this config.json (see module docstring)."""
    attn = raw.get("attn_config") or {}
    return MPTConfig(
        d_model=raw["d_model"], n_heads=raw["n_heads"], n_layers=raw["n_layers"], expansion_ratio=4,
        max_seq_len=raw["max_seq_len"], vocab_size=raw["vocab_size"],
        layer_norm_epsilon=raw.get("layer_norm_epsilon", 1e-5), no_bias=True, norm_type="layernorm",
        learned_pos_emb=False, tie_word_embeddings=raw.get("tie_word_embeddings", True),
        attn_config={"alibi": True, "alibi_bias_max": 8, "clip_qkv": attn.get("clip_qkv"),
                     "softmax_scale": attn.get("softmax_scale")})


def read_weights(folder: Path) -> dict:
    if (folder / WEIGHTS).exists():
        return load_file(str(folder / WEIGHTS))
    if (folder / WEIGHTS_INDEX).exists():
        shards = sorted(set(json.loads((folder / WEIGHTS_INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(folder / shard)).items()}
    raise UserError(f"{folder}: no {WEIGHTS} or {WEIGHTS_INDEX}; point at a folder written by "
                    f"save_pretrained or export_hf")


def read_folder(path) -> tuple[MPTConfig, dict]:
    """(the config, the weights by name) of a Hugging Face folder: stock MPT or our own `save_native`."""
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.exists():
        raise UserError(f"{folder}: no config.json; point at a Hugging Face model folder")
    raw = json.loads(config_file.read_text())
    if raw.get("model_type") != "mpt":
        raise UserError(f"{config_file}: model_type is {raw.get('model_type')!r}, not 'mpt'")
    stock = STOCK_ARCHITECTURE in (raw.get("architectures") or [])
    config = stock_to_config(raw) if stock else MPTConfig(**{**raw, "init_device": "cpu"})
    state = read_weights(folder)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return config, state


def load_weights(model, state: dict, path) -> None:
    """Put `state` (from `read_folder`) into `model`, built from the folder's config; UserError on a mismatch."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise UserError(f"{Path(path)}: weights do not match the config (missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]})")
