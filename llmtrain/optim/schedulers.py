"""`scheduler: {name: ..., t_warmup, ...}` → Composer's scheduler of that shape (llm-foundry's names)."""
from __future__ import annotations

from dataclasses import dataclass

from composer.optim import (ConstantWithWarmupScheduler, CosineAnnealingWithWarmupScheduler,
                            LinearWithWarmupScheduler)

from llmtrain.registry import schedulers
from llmtrain.schema import Duration


@dataclass(frozen=True)
class CosineWithWarmup:
    t_warmup: Duration
    t_max: Duration = "1dur"
    alpha_f: float = 0.0
    scale_warmup: bool = False


@dataclass(frozen=True)
class LinearDecayWithWarmup:
    t_warmup: Duration
    t_max: Duration = "1dur"
    alpha_i: float = 1.0
    alpha_f: float = 0.0
    scale_warmup: bool = False


@dataclass(frozen=True)
class ConstantWithWarmup:
    t_warmup: Duration
    t_max: Duration = "1dur"
    alpha: float = 1.0
    scale_warmup: bool = False


def _composer_kwargs(cfg) -> dict:
    # An int duration means batches, as it does in max_duration.
    return {k: f"{v}ba" if k.startswith("t_") and isinstance(v, int) else v for k, v in vars(cfg).items()}


schedulers.register("cosine_with_warmup", CosineWithWarmup,
                          lambda cfg: CosineAnnealingWithWarmupScheduler(**_composer_kwargs(cfg)))
schedulers.register("linear_decay_with_warmup", LinearDecayWithWarmup,
                          lambda cfg: LinearWithWarmupScheduler(**_composer_kwargs(cfg)))
schedulers.register("constant_with_warmup", ConstantWithWarmup,
                          lambda cfg: ConstantWithWarmupScheduler(**_composer_kwargs(cfg)))
