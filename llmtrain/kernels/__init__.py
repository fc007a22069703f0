"""Triton kernels (importable without a GPU; they launch on CUDA tensors)."""
from llmtrain.kernels.flash_alibi import document_bounds, flash_alibi_attention

__all__ = ["document_bounds", "flash_alibi_attention"]
