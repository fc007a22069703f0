"""llm-foundry's MPT initialisation schemes, one module at a time.

`init_module` touches only the module's own parameters (never its children's), which is what both
callers need: Hugging Face's `post_init` visits every module, and FSDP2 meta-init materialises and
initialises one module at a time (`to_empty(recurse=False)` then `param_init_fn(module)`).

Linear layers that write into the residual stream carry `_is_residual = True` and are divided by
`init_div_is_residual` (sqrt(2 * n_layers) when true), as in GPT-2 and llm-foundry.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn


def _residual_divisor(init: dict, n_layers: int) -> float:
    if init["name"] == "neox_init_":
        return n_layers / math.sqrt(10)  # GPT-NeoX: small-init std / Wang-init std
    div = init["init_div_is_residual"]
    if div is True:
        return math.sqrt(2 * n_layers)
    if div is False:
        return 1.0
    return float(div)


def _weight_init(init: dict, d_model: int):
    name = init["name"]
    if name == "kaiming_normal_":
        return partial(nn.init.kaiming_normal_, a=init["init_gain"], mode=init["fan_mode"],
                       nonlinearity=init["init_nonlinearity"])
    if name in ("small_init_", "neox_init_"):
        std = math.sqrt(2 / (5 * d_model))  # Nguyen & Salazar, "Transformers without Tears"
    else:  # baseline_
        std = init["init_std"]
    return partial(nn.init.normal_, mean=0.0, std=std)


def _embedding_init(init: dict, weight_init):
    if init["emb_init_std"] is not None:
        return partial(nn.init.normal_, mean=0.0, std=init["emb_init_std"])
    lim = init["emb_init_uniform_lim"]
    if lim is not None:
        low, high = (lim[0], lim[1]) if isinstance(lim, (list, tuple)) else (-lim, lim)
        return partial(nn.init.uniform_, a=low, b=high)
    return weight_init


@torch.no_grad()
def init_module(module: nn.Module, init: dict, n_layers: int, d_model: int) -> None:
    """Initialise `module`'s direct parameters according to an `init_config` dict."""
    weight_init = _weight_init(init, d_model)
    if isinstance(module, nn.Linear):
        weight_init(module.weight)
        if getattr(module, "_is_residual", False):
            module.weight.div_(_residual_divisor(init, n_layers))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        _embedding_init(init, weight_init)(module.weight)
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif any(True for _ in module.parameters(recurse=False)):
        raise TypeError(f"{type(module).__name__} has parameters that init_module does not know how to initialise")
