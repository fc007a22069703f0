"""Callbacks: Composer's monitors by llm-foundry's names, and ours (metrics.jsonl, data mix, loss guard)."""
from llmtrain.callbacks import data_mix, loss_guard, monitors  # noqa: F401  (registration)
from llmtrain.callbacks.metrics_jsonl import MetricsJsonl

__all__ = ["MetricsJsonl"]
