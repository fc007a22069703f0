import torch

from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.modeling import MPTForCausalLM

TINY = dict(d_model=32, n_heads=4, n_layers=2, vocab_size=64, max_seq_len=32)


def tiny_config(**overrides) -> MPTConfig:
    """A tiny MPTConfig; attn_config overrides merge into {attn_impl: torch}."""
    attn = {"attn_impl": "torch", **overrides.pop("attn_config", {})}
    return MPTConfig(**{**TINY, "attn_config": attn, **overrides})


def tiny_model(seed: int = 0, **overrides) -> MPTForCausalLM:
    torch.manual_seed(seed)
    return MPTForCausalLM(tiny_config(**overrides))


def token_batch(batch: int = 2, seq: int = 16, vocab: int = 64, seed: int = 1) -> dict:
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}

