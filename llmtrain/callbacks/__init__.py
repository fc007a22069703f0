"""Callbacks: Composer's monitors by llm-foundry's names, and ours (metrics.jsonl, data mix)."""
from llmtrain.callbacks import data_mix, monitors  # noqa: F401  (registration)
from llmtrain.callbacks.metrics_jsonl import MetricsJsonl

__all__ = ["MetricsJsonl"]
