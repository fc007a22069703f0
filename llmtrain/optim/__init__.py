"""Optimizers and schedulers by llm-foundry's names."""
from llmtrain.optim.lion import DecoupledLionW
from llmtrain.optim import optimizers, schedulers  # noqa: F401  (registration)

__all__ = ["DecoupledLionW"]
