"""Composer's monitors under llm-foundry's callback names (`callbacks: {speed_monitor: {...}}`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from composer.callbacks import LRMonitor, MemoryMonitor, RuntimeEstimator, SpeedMonitor

from llmtrain.registry import callbacks

TimeUnit = Literal["seconds", "minutes", "hours", "days"]


@dataclass(frozen=True)
class SpeedMonitorConfig:
    window_size: int = 100
    gpu_flops_available: Optional[float] = None  # None: Composer looks the detected GPU up (H100 SXM bf16: 989e12)
    time_unit: TimeUnit = "hours"


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class MemoryMonitorConfig:
    memory_keys: Optional[dict] = None
    dist_aggregate_batch_interval: Optional[int] = None


@dataclass(frozen=True)
class RuntimeEstimatorConfig:
    skip_batches: int = 1
    time_unit: TimeUnit = "hours"


callbacks.register("speed_monitor", SpeedMonitorConfig, lambda cfg: SpeedMonitor(**vars(cfg)))
callbacks.register("lr_monitor", NoOptions, lambda cfg: LRMonitor())
callbacks.register("memory_monitor", MemoryMonitorConfig, lambda cfg: MemoryMonitor(**vars(cfg)))
callbacks.register("runtime_estimator", RuntimeEstimatorConfig, lambda cfg: RuntimeEstimator(**vars(cfg)))
