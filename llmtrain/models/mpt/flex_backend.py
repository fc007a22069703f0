"""Which kernel compiled FlexAttention runs: FlashAttention-4 (flex's BACKEND "FLASH") or flex's Triton kernel.

FA4's CuTe-DSL kernels (`pip install '.[hopper]'`: flash-attn-4 with the CUTLASS DSL) take flex's
`score_mod` and block masks on Hopper. With MPT's ALiBi on a causal mask they train faster than flex's
Triton kernel (MPT-1B on an H200: attention 61 against 91 ms of the training step, docs/performance.md);
with a document mask they are slower (FA4's block-sparse path: 1.62 against 1.12 ms forward + backward at
B8 H16 S2048 D128, 4 documents a row), so documents keep Triton. Whether a given torch, FA4 and mask combination
compiles is only known by trying, and a failure inside the whole-model compile would end the run; so
`choose` tries once, outside any compile, with MPT's own ALiBi score mod on a small problem of the model's
head shape, forward and backward, and takes FLASH only when it compiles and agrees with the Triton kernel.
LLMTRAIN_FLASH_ATTENTION_4=0 skips the try (Triton everywhere), to rule FA4 out when diagnosing a run.

The answer is remembered per (heads, kv heads, head size, documents, dtype, device) for the process and
logged once, so a user sees which kernel trains their model.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

from llmtrain.models.mpt.attention import FLASH, TRITON, AttentionPlan, alibi_slopes, attend, kernel_options

__all__ = ["FLASH", "OPT_OUT", "TRITON", "choose", "flash_installed", "kernel_options"]
log = logging.getLogger(__name__)
OPT_OUT = "LLMTRAIN_FLASH_ATTENTION_4"
_PROBE_SEQ, _PROBE_BATCH = 512, 2


def flash_installed() -> bool:
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:  # a `flash_attn` without the cute subpackage
        return False


@functools.lru_cache(maxsize=None)
def choose(n_heads: int, kv_heads: int, head_dim: int, alibi_bias_max: float, alibi: bool, documents: bool,
           dtype: torch.dtype = torch.bfloat16, device: str = "cuda") -> str:
    """FLASH where installed, on CUDA, without a document mask, and it trains this attention exactly as the
    Triton kernel does; else TRITON."""
    if os.environ.get(OPT_OUT) == "0" or not flash_installed() or not torch.cuda.is_available():
        return TRITON
    if documents:  # measured slower than Triton with document masks (module docstring)
        log.warning("attention: flex's Triton kernel for heads=%d head_dim=%d with document masks", n_heads, head_dim)
        return TRITON
    try:
        error = _max_error_against_triton(n_heads, kv_heads, head_dim, alibi_bias_max, alibi, dtype, device)
    except Exception as err:  # FA4 could not compile or run this case: Triton flex can
        log.warning("attention: FlashAttention-4 unavailable for heads=%d head_dim=%d (%s: %s); "
                    "using flex's Triton kernel", n_heads, head_dim, type(err).__name__,
                    str(err).splitlines()[0][:200] if str(err) else "")
        return TRITON
    if error > 2e-2:
        log.warning("attention: FlashAttention-4 differs from flex's Triton kernel by %.3g; using Triton", error)
        return TRITON
    log.warning("attention: flex with FlashAttention-4 (BACKEND=FLASH) for heads=%d head_dim=%d", n_heads, head_dim)
    return FLASH


def _max_error_against_triton(n_heads, kv_heads, head_dim, alibi_bias_max, alibi, dtype, device) -> float:
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (_PROBE_BATCH, n_heads, _PROBE_SEQ, head_dim)
    q = torch.randn(shape, device=device, dtype=dtype, generator=gen)
    k, v = (torch.randn((_PROBE_BATCH, kv_heads, _PROBE_SEQ, head_dim), device=device, dtype=dtype, generator=gen)
            for _ in range(2))
    results = []
    for backend in (TRITON, FLASH):
        plan = AttentionPlan(backend="flex", batch_size=_PROBE_BATCH, seq_len=_PROBE_SEQ, device=torch.device(device),
                             slopes=alibi_slopes(n_heads, alibi_bias_max, device) if alibi else None,
                             alibi_bias_max=alibi_bias_max, flex_backend=backend)
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out = attend(*leaves, plan, scale=head_dim ** -0.5)
        out.float().square().sum().backward()
        results.append([out.detach(), *(t.grad for t in leaves)])
        torch.cuda.synchronize()
    return max((a.float() - b.float()).abs().max().item() / max(a.float().abs().max().item(), 1e-6)
               for a, b in zip(*results))
