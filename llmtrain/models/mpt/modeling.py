"""MPT: a decoder-only transformer with ALiBi (or learned/rotary positions), pre-norm blocks, no biases.

Submodule names follow `transformers.MptForCausalLM` (transformer.wte, transformer.blocks.N.norm_1 /
attn.Wqkv / attn.out_proj / norm_2 / ffn.up_proj / ffn.down_proj, transformer.norm_f, lm_head), so
state dicts interchange with stock Hugging Face MPT checkpoints (see hf_interop.py).
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from llmtrain.models.mpt import flex_backend, hf_files
from llmtrain.models.mpt.attention import apply_rope, attend, build_plan
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.param_init import init_module


# ----------------------------------------------------------------------------------------- norms

def _autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


class LPLayerNorm(nn.LayerNorm):
    """LayerNorm computed in the autocast dtype (bf16/fp16) instead of autocast's fp32, as llm-foundry
    does: less memory traffic, and MPT models were trained this way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x)
        if dtype is None:
            return super().forward(x)
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x.to(dtype), self.normalized_shape, weight, bias, self.eps)


class LPRMSNorm(nn.RMSNorm):
    """RMSNorm computed in the autocast dtype (see LPLayerNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x)
        if dtype is None:
            return super().forward(x)
        weight = None if self.weight is None else self.weight.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            return F.rms_norm(x.to(dtype), self.normalized_shape, weight, self.eps)


def build_norm(config: MPTConfig, size: int) -> nn.Module:
    eps, bias = config.layer_norm_epsilon, not config.no_bias
    return {
        "low_precision_layernorm": lambda: LPLayerNorm(size, eps=eps, bias=bias),
        "layernorm": lambda: nn.LayerNorm(size, eps=eps, bias=bias),
        "low_precision_rmsnorm": lambda: LPRMSNorm(size, eps=eps),
        "rmsnorm": lambda: nn.RMSNorm(size, eps=eps),
    }[config.norm_type]()


# ------------------------------------------------------------------------------------- attention

def kv_heads(config: MPTConfig) -> int:
    attn = config.attn_config
    if attn["attn_type"] == "multiquery_attention":
        return 1
    return attn["kv_n_heads"] if attn["attn_type"] == "grouped_query_attention" else config.n_heads


class MPTAttention(nn.Module):
    """Self-attention with one fused q/k/v projection (grouped-query when kv_n_heads < n_heads)."""

    def __init__(self, config: MPTConfig):
        super().__init__()
        attn = config.attn_config
        self.n_heads, self.kv_heads = config.n_heads, kv_heads(config)
        self.head_dim = config.d_model // config.n_heads
        self.q_size, self.kv_size = config.d_model, self.kv_heads * self.head_dim
        self.softmax_scale = attn["softmax_scale"] or 1 / math.sqrt(self.head_dim)
        self.clip_qkv = attn["clip_qkv"]
        self.attn_pdrop = attn["attn_pdrop"]
        bias = not config.no_bias
        self.Wqkv = nn.Linear(config.d_model, self.q_size + 2 * self.kv_size, bias=bias)
        if attn["qk_ln"]:  # normalises all heads of q (and of k) together, as llm-foundry does
            self.q_ln = build_norm(config, self.q_size)
            self.k_ln = build_norm(config, self.kv_size)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=bias)
        self.out_proj._is_residual = True

    def forward(self, x: torch.Tensor, plan) -> torch.Tensor:
        B, S, _ = x.shape
        qkv = self.Wqkv(x)
        if self.clip_qkv:
            qkv = qkv.clamp(-self.clip_qkv, self.clip_qkv)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if hasattr(self, "q_ln"):
            q, k = self.q_ln(q).to(v.dtype), self.k_ln(k).to(v.dtype)
        q = q.view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        if plan.rope is not None:
            q, k = apply_rope(q, *plan.rope), apply_rope(k, *plan.rope)
        dropout_p = self.attn_pdrop if self.training else 0.0
        y = attend(q, k, v, plan, self.softmax_scale, dropout_p)
        return self.out_proj(y.transpose(1, 2).reshape(B, S, self.q_size))


# ------------------------------------------------------------------------------------------ block

class MPTMLP(nn.Module):
    def __init__(self, config: MPTConfig):
        super().__init__()
        hidden, bias = int(config.expansion_ratio * config.d_model), not config.no_bias
        self.up_proj = nn.Linear(config.d_model, hidden, bias=bias)
        self.act = nn.GELU(approximate="none")
        self.down_proj = nn.Linear(hidden, config.d_model, bias=bias)
        self.down_proj._is_residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class MPTBlock(nn.Module):
    """Pre-norm transformer block; the unit of FSDP sharding and activation checkpointing."""

    def __init__(self, config: MPTConfig):
        super().__init__()
        self.norm_1 = build_norm(config, config.d_model)
        self.attn = MPTAttention(config)
        self.norm_2 = build_norm(config, config.d_model)
        self.ffn = MPTMLP(config)
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_ffn_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, plan) -> torch.Tensor:
        x = x + self.resid_attn_dropout(self.attn(self.norm_1(x), plan))
        return x + self.resid_ffn_dropout(self.ffn(self.norm_2(x)))


# ------------------------------------------------------------------------------------------ model

def _flex_backend(config: MPTConfig) -> str:
    """The kernel compiled flex will run for this model on this machine's GPU (TRITON without one)."""
    attn = config.attn_config
    if attn["attn_impl"] not in ("flex", "flash"):
        return flex_backend.TRITON
    return flex_backend.choose(config.n_heads, kv_heads(config), config.d_model // config.n_heads,
                               float(attn["alibi_bias_max"]), bool(attn["alibi"]), bool(attn["attn_uses_sequence_id"]))


class MPTModel(nn.Module):
    """Embeddings, blocks, final norm: tokens (B, S) → hidden states (B, S, d_model)."""

    def __init__(self, config: MPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        if config.learned_pos_emb:
            self.wpe = nn.Embedding(config.max_seq_len, config.d_model)
        self.emb_drop = nn.Dropout(config.emb_pdrop)
        self.blocks = nn.ModuleList(MPTBlock(config) for _ in range(config.n_layers))
        self.norm_f = build_norm(config, config.d_model)
        self.flex_backend = _flex_backend(config)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                sequence_id: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg, attn = self.config, self.config.attn_config
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        B, S = x.shape[:2]
        if S > cfg.max_seq_len:
            raise ValueError(f"sequence length {S} exceeds max_seq_len={cfg.max_seq_len}")
        if cfg.learned_pos_emb:
            pos = torch.arange(S, device=x.device).expand(B, S)
            if attention_mask is not None:  # left padding: the first real token is position 0
                pos = (pos - (1 - attention_mask.long()).cumsum(dim=1)).clamp(min=0)
            x = x + self.wpe(pos)
        if cfg.embedding_fraction < 1:  # scales the embeddings' gradient only (GLM-130B)
            x = x * cfg.embedding_fraction + x.detach() * (1 - cfg.embedding_fraction)
        x = self.emb_drop(x)
        dtype = _autocast_dtype(x)
        if dtype is not None:
            # The residual stream in the compute dtype, as FSDP's bf16 parameters give it on several
            # GPUs: half the memory traffic of fp32 in every norm and residual add (docs/performance.md).
            x = x.to(dtype)

        plan = build_plan(
            attn_impl=attn["attn_impl"], batch_size=B, seq_len=S, device=x.device,
            dropout_p=attn["attn_pdrop"] if self.training else 0.0, n_heads=cfg.n_heads,
            alibi=attn["alibi"], alibi_bias_max=attn["alibi_bias_max"],
            rope_theta=attn["rope_theta"] if attn["rope"] else None, head_dim=cfg.d_model // cfg.n_heads,
            sequence_id=sequence_id if attn["attn_uses_sequence_id"] else None, attention_mask=attention_mask,
            flex_backend=self.flex_backend)
        for block in self.blocks:
            x = block(x, plan)
        return self.norm_f(x)


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Position t's target is token t+1 (labels are unshifted, -100 = ignore); the last has none.
    Shifting the labels, not the logits, keeps the (B, S, vocab) logits a view, not a copy."""
    return F.pad(labels[:, 1:], (0, 1), value=-100)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy over the positions whose target is not -100."""
    return F.cross_entropy(logits.flatten(0, 1), shifted_targets(labels).flatten(), ignore_index=-100)


def _resolve_init_device(init_device: str) -> str:
    # mixed: rank 0 holds real weights, the other ranks build on meta and receive rank 0's through
    # FSDP's module-state sync. RANK is set by every torch/Composer launcher.
    if init_device == "mixed":
        return "cpu" if int(os.environ.get("RANK", "0")) == 0 else "meta"
    return init_device


class MPTForCausalLM(PreTrainedModel):
    config_class = MPTConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["MPTBlock"]

    def __init__(self, config: MPTConfig):
        super().__init__(config)
        with torch.device(_resolve_init_device(config.init_device)):
            self.transformer = MPTModel(config)
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                sequence_id: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None) -> CausalLMOutputWithPast:
        hidden = self.transformer(input_ids, attention_mask, sequence_id, inputs_embeds)
        logits = self.lm_head(hidden)
        scale = self.config.logit_scale
        if scale is not None:
            logits = logits * (1 / math.sqrt(self.config.d_model) if scale == "inv_sqrt_d_model" else scale)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    # --- initialisation: Hugging Face's post_init and FSDP2 meta-init both land here, per module.
    def param_init_fn(self, module: nn.Module) -> None:
        if module is self.lm_head and self.config.tie_word_embeddings:
            return  # the embedding's weight; initialised as an embedding
        init_module(module, self.config.init_config, self.config.n_layers, self.config.d_model)

    def _init_weights(self, module: nn.Module) -> None:
        self.param_init_fn(module)

    # --- Composer FSDP2 reads these from the ComposerModel's direct child (this model).
    def fsdp_wrap_fn(self, module: nn.Module) -> bool:
        return isinstance(module, MPTBlock)

    def activation_checkpointing_fn(self, module: nn.Module) -> bool:
        return isinstance(module, MPTBlock)

    # --- Hugging Face folders, the same on transformers 4 and 5 (see hf_interop.py).
    def save_pretrained(self, path, *args, **kwargs) -> None:
        """Write config.json (every MPTConfig key) and model.safetensors; read back by from_pretrained.
        For a folder that stock transformers loads, use `hf_interop.export_hf`."""
        if args or kwargs:
            raise TypeError(f"MPTForCausalLM.save_pretrained takes only a folder path, got extra {args} {kwargs}")
        hf_files.save_native(self, path)

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs) -> "MPTForCausalLM":
        """Load a folder written by `save_pretrained`, by `hf_interop.export_hf`, or by stock
        `transformers.MptForCausalLM` (read as the model stock MPT runs; see hf_interop.load_hf)."""
        if args or kwargs:
            raise TypeError(f"MPTForCausalLM.from_pretrained takes only a folder path, got extra {args} {kwargs}")
        config, state = hf_files.read_folder(path)
        model = cls(config)
        hf_files.load_weights(model, state, path)
        return model
