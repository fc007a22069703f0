"""MPT configuration: llm-foundry's key names, one typed source of truth for defaults and checks.

The dataclasses below are the YAML `model:` section (minus `name`). `MPTConfig` (a Hugging Face
`PretrainedConfig`, so `save_pretrained`/`from_pretrained` work) is built from the same dataclasses,
so a YAML section, a Python call and a config.json are all checked by the same code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from transformers import PretrainedConfig

from llmtrain.errors import UserError
from llmtrain.schema import parse_section

AttnImpl = Literal["torch", "flex", "flash", "triton"]
NormType = Literal["low_precision_layernorm", "layernorm", "low_precision_rmsnorm", "rmsnorm"]
InitName = Literal["kaiming_normal_", "small_init_", "neox_init_", "baseline_"]


@dataclass
class AttnConfig:
    attn_type: Literal["multihead_attention", "multiquery_attention", "grouped_query_attention"] = "multihead_attention"
    kv_n_heads: Optional[int] = None  # grouped_query_attention only
    # flash: the fastest path here (flex on CUDA); triton: our kernel; torch on CPU. See attention.resolve_backend.
    attn_impl: AttnImpl = "flash"
    attn_pdrop: float = 0.0
    qk_ln: bool = False
    clip_qkv: Optional[float] = None
    softmax_scale: Optional[float] = None
    attn_uses_sequence_id: bool = False
    alibi: bool = False
    alibi_bias_max: int = 8
    rope: bool = False
    rope_theta: float = 10000.0
    # llm-foundry's two RoPE implementations compute the same (non-interleaved) rotation.
    rope_impl: Literal["dail", "hf"] = "dail"
    # Accepted so llm-foundry recipes load unchanged; only llm-foundry's default is allowed.
    prefix_lm: Literal[False] = False
    qk_gn: Literal[False] = False
    fused_qkv: Literal[True] = True
    sliding_window_size: Literal[-1] = -1


@dataclass
class InitConfig:
    name: InitName = "kaiming_normal_"
    init_std: Optional[float] = None  # baseline_ only
    init_gain: float = 0.0  # kaiming's negative slope `a`
    fan_mode: Literal["fan_in"] = "fan_in"
    init_nonlinearity: Literal["relu", "linear", "leaky_relu"] = "relu"
    # True divides residual-output weights by sqrt(2 * n_layers); a number divides by that number.
    init_div_is_residual: Union[bool, float] = True
    emb_init_std: Optional[float] = None
    emb_init_uniform_lim: Optional[Union[float, list[float]]] = None


@dataclass
class FFNConfig:
    ffn_type: Literal["mptmlp"] = "mptmlp"


@dataclass
class MPTSection:
    d_model: int = 2048
    n_heads: int = 16
    n_layers: int = 24
    expansion_ratio: float = 4.0
    max_seq_len: int = 2048
    vocab_size: int = 50368
    resid_pdrop: float = 0.0
    emb_pdrop: float = 0.0
    learned_pos_emb: bool = True
    no_bias: bool = False
    norm_type: NormType = "low_precision_layernorm"
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    logit_scale: Optional[Union[float, Literal["inv_sqrt_d_model"]]] = None
    embedding_fraction: float = 1.0
    # mixed: rank 0 builds real weights, other ranks meta; FSDP broadcasts rank 0's weights.
    init_device: Literal["cpu", "meta", "mixed"] = "cpu"
    attn_config: AttnConfig = field(default_factory=AttnConfig)
    init_config: InitConfig = field(default_factory=InitConfig)
    # Accepted so llm-foundry recipes load unchanged. Both loss_fn values are plain cross entropy here.
    loss_fn: Literal["fused_crossentropy", "torch_crossentropy"] = "fused_crossentropy"
    fc_type: Literal["torch"] = "torch"
    ffn_config: FFNConfig = field(default_factory=FFNConfig)
    use_cache: bool = False  # no KV cache in training; inference runs on the exported HF model


def _check_probability(value: float, key: str) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{key}: {value} is not a dropout probability; use a number in [0, 1)")


def _check_relations(s: MPTSection, key: str) -> None:
    """Checks that involve more than one key (types and choices are checked by parse_section)."""
    a = s.attn_config
    for name in ("d_model", "n_heads", "n_layers", "max_seq_len", "vocab_size"):
        if getattr(s, name) < 1:
            raise UserError(f"{key}.{name}: must be a positive integer, got {getattr(s, name)}")
    if s.d_model % s.n_heads:
        raise UserError(f"{key}.n_heads: d_model={s.d_model} is not divisible by n_heads={s.n_heads}; "
                        f"pick n_heads that divides d_model")
    if s.expansion_ratio <= 0 or (s.expansion_ratio * s.d_model) % 1:
        raise UserError(f"{key}.expansion_ratio: expansion_ratio * d_model must be a positive whole "
                        f"number, got {s.expansion_ratio} * {s.d_model}")
    _check_probability(s.resid_pdrop, f"{key}.resid_pdrop")
    _check_probability(s.emb_pdrop, f"{key}.emb_pdrop")
    _check_probability(a.attn_pdrop, f"{key}.attn_config.attn_pdrop")
    if not 0.0 < s.embedding_fraction <= 1.0:
        raise UserError(f"{key}.embedding_fraction: must be in (0, 1], got {s.embedding_fraction}")
    if a.attn_type == "grouped_query_attention":
        if a.kv_n_heads is None or a.kv_n_heads < 1 or s.n_heads % a.kv_n_heads:
            raise UserError(f"{key}.attn_config.kv_n_heads: grouped_query_attention needs kv_n_heads "
                            f"that divides n_heads={s.n_heads}, got {a.kv_n_heads}")
    elif a.kv_n_heads is not None:
        raise UserError(f"{key}.attn_config.kv_n_heads: only used with attn_type: grouped_query_attention; "
                        f"remove it or set attn_type: grouped_query_attention")
    if a.alibi and a.rope:
        raise UserError(f"{key}.attn_config.rope: alibi and rope are both position schemes; turn one off")
    if a.rope and (s.d_model // s.n_heads) % 2:
        raise UserError(f"{key}.attn_config.rope: rope needs an even head size, got "
                        f"d_model/n_heads={s.d_model // s.n_heads}")
    if a.attn_impl == "flex" and a.attn_pdrop > 0:
        raise UserError(f"{key}.attn_config.attn_pdrop: flex attention has no attention dropout; "
                        f"set attn_pdrop: 0 or attn_impl: torch")
    if a.clip_qkv is not None and a.clip_qkv <= 0:
        raise UserError(f"{key}.attn_config.clip_qkv: must be a positive number, got {a.clip_qkv}")
    init = s.init_config
    if init.name == "baseline_" and init.init_std is None:
        raise UserError(f"{key}.init_config.init_std: baseline_ init needs init_std (e.g. 0.02)")
    if init.emb_init_std is not None and init.emb_init_uniform_lim is not None:
        raise UserError(f"{key}.init_config.emb_init_uniform_lim: set either emb_init_std or "
                        f"emb_init_uniform_lim, not both")
    lim = init.emb_init_uniform_lim
    if isinstance(lim, list) and len(lim) != 2:
        raise UserError(f"{key}.init_config.emb_init_uniform_lim: give one number or [low, high], got {lim}")


def parse_mpt_section(data: dict, key: str = "model") -> MPTSection:
    """The validated, default-filled model section; raises UserError naming the dotted key."""
    section = parse_section(MPTSection, data, key)
    _check_relations(section, key)
    return section


class MPTConfig(PretrainedConfig):
    """Hugging Face config for `MPTForCausalLM`; keys and defaults are those of `MPTSection`.

    As in llm-foundry, ALiBi or RoPE turn learned position embeddings off (MPT-7B's config says
    `learned_pos_emb: true` next to `alibi: true`).
    """

    model_type = "mpt"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "n_heads",
                     "num_hidden_layers": "n_layers"}

    def __init__(self, **kwargs):
        names = {f.name for f in dataclasses.fields(MPTSection)}
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        section = parse_mpt_section(ours, "model")
        if section.attn_config.alibi or section.attn_config.rope:
            section.learned_pos_emb = False
        for name, value in dataclasses.asdict(section).items():
            setattr(self, name, value)
        super().__init__(tie_word_embeddings=section.tie_word_embeddings, **kwargs)
