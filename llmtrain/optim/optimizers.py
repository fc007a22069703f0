"""`optimizer: {name: ..., lr, betas, ...}` → a torch optimizer over the model's parameters."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from composer.optim import DecoupledAdamW, DecoupledSGDW

from llmtrain.optim.lion import DecoupledLionW
from llmtrain.registry import optimizers


@dataclass(frozen=True)
class LionConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    foreach: bool = True


@dataclass(frozen=True)
class AdamConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class SGDConfig:
    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


optimizers.register("decoupled_lionw", LionConfig, lambda cfg, params: DecoupledLionW(params, **vars(cfg)))
# Composer's DecoupledAdamW scales weight decay by lr / initial_lr, as llm-foundry recipes expect.
optimizers.register("decoupled_adamw", AdamConfig, lambda cfg, params: DecoupledAdamW(params, **vars(cfg)))
optimizers.register("decoupled_sgdw", SGDConfig, lambda cfg, params: DecoupledSGDW(params, **vars(cfg)))
optimizers.register("adamw", AdamConfig, lambda cfg, params: torch.optim.AdamW(params, **vars(cfg)))
