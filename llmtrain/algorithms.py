"""`algorithms: {gradient_clipping: {...}}` → Composer algorithms."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from composer.algorithms import GradientClipping

from llmtrain.registry import algorithms


@dataclass(frozen=True)
class GradientClippingConfig:
    clipping_type: Literal["norm", "value", "adaptive"] = "norm"
    clipping_threshold: float = 1.0


algorithms.register("gradient_clipping", GradientClippingConfig, lambda cfg: GradientClipping(**vars(cfg)))
