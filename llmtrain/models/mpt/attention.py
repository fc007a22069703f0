"""Attention math for MPT: ALiBi, RoPE, causal/document/padding masks, and two backends.

A token at position i may attend to position j when j <= i, j is not padding, and (with
`attn_uses_sequence_id`) both lie in the same document. ALiBi adds -slope_h * (i - j): the distance is
always the token distance, also across packed documents.

Backends compute the same thing:
- `torch`: `F.scaled_dot_product_attention` with an explicit additive bias (the reference; plain causal
  attention without ALiBi/masks goes through SDPA's own causal kernels).
- `flex`: `torch.nn.attention.flex_attention`, ALiBi as `score_mod`, masks as a `BlockMask`, so fully
  masked blocks are skipped. On CUDA it is compiled, to FlashAttention-4's kernels where installed and
  faster for the case, else to flex's Triton kernel (flex_backend.py); elsewhere it runs flex's eager
  reference.

Masks are built once per forward (`AttentionPlan`) and shared by every layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from llmtrain.kernels import flash_alibi_attention

FLASH, TRITON = "FLASH", "TRITON"  # compiled flex's kernels: FlashAttention-4, or flex's Triton (flex_backend.py)


def kernel_options(backend: str):
    """flex_attention's `kernel_options` for a chosen backend (None: flex's default, Triton)."""
    return {"BACKEND": FLASH} if backend == FLASH else None


def alibi_slopes(n_heads: int, alibi_bias_max: float = 8.0, device=None) -> torch.Tensor:
    """MPT's per-head ALiBi slopes (float32, shape (n_heads,)).

    For n = the next power of two >= n_heads, slope_k = 2^(-alibi_bias_max * k / n), k = 1..n.
    When n_heads is not a power of two, MPT takes the odd-k slopes then the even-k ones and keeps the
    first n_heads, so heads still cover the whole range of slopes.
    """
    n = 2 ** math.ceil(math.log2(n_heads))
    k = torch.arange(1, n + 1, dtype=torch.float32, device=device)
    slopes = torch.pow(2.0, -k * (alibi_bias_max / n))
    if n != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def rope_cos_sin(seq_len: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (seq_len, head_dim/2) for rotary embeddings, in float32."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = torch.arange(seq_len, dtype=torch.float32, device=device)[:, None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, S, D) by position: the halves (x1, x2) become (x1 cos - x2 sin, x2 cos + x1 sin)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def resolve_backend(attn_impl: str, device: torch.device, dropout_p: float, padded: bool = False,
                    needs_grad: bool = False) -> str:
    """'torch', 'flex' or 'triton' for a configured `attn_impl`.

    `flash` means "the fastest path that supports ALiBi and document masks": compiled flex on CUDA,
    which matches our own Triton kernel with ALiBi and beats it with documents (docs/performance.md).
    `triton` is that kernel (llmtrain/kernels/flash_alibi.py); it has no padding mask, so padded
    batches go through flex. On CPU flex only has a slow eager reference, with no backward since torch
    2.8, and Triton needs a GPU: so there `flash` and `triton` run torch, and `flex` runs torch whenever
    gradients are needed (the same attention). Attention dropout also means torch (neither has dropout).
    """
    if attn_impl == "torch":
        return "torch"
    if attn_impl == "flex":
        return "torch" if device.type != "cuda" and needs_grad else "flex"
    if device.type != "cuda" or dropout_p != 0:
        return "torch"
    return "triton" if attn_impl == "triton" and not padded else "flex"


@dataclass
class AttentionPlan:
    """What every layer of one forward needs to attend: backend, masks, position terms."""

    backend: str
    batch_size: int
    seq_len: int
    device: torch.device
    slopes: Optional[torch.Tensor] = None  # ALiBi, per query head
    alibi_bias_max: float = 8.0
    sequence_id: Optional[torch.Tensor] = None  # (B, S) document of each token
    key_keep: Optional[torch.Tensor] = None  # (B, S) bool, False for padding
    rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # cos, sin
    flex_backend: str = TRITON  # compiled flex's kernel: TRITON or FLASH (FlashAttention-4)
    _bias: dict = field(default_factory=dict)
    _block_mask: Optional[BlockMask] = None

    @property
    def only_causal(self) -> bool:
        return self.slopes is None and self.sequence_id is None and self.key_keep is None

    def allowed(self) -> torch.Tensor:
        """(B or 1, S, S) bool: may query i attend to key j."""
        pos = torch.arange(self.seq_len, device=self.device)
        ok = (pos[:, None] >= pos[None, :]).unsqueeze(0)
        if self.sequence_id is not None:
            ok = ok & (self.sequence_id[:, :, None] == self.sequence_id[:, None, :])
        if self.key_keep is not None:
            ok = ok & self.key_keep[:, None, :]
        return ok

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive bias (B or 1, H or 1, S, S) for SDPA, cached per dtype across layers."""
        if dtype not in self._bias:
            s = self.seq_len
            if self.slopes is not None:
                pos = torch.arange(s, device=self.device, dtype=torch.float32)
                bias = (-self.slopes[:, None, None] * (pos[:, None] - pos[None, :])).unsqueeze(0)
            else:
                bias = torch.zeros(1, 1, s, s, device=self.device)
            # The dtype's most negative number, not -inf: a query with every key masked (padding)
            # then gets a uniform average instead of NaN.
            allowed = self.allowed()[:, None]
            self._bias[dtype] = bias.to(dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        return self._bias[dtype]

    def block_mask(self) -> BlockMask:
        if self._block_mask is None:
            sequence_id, key_keep = self.sequence_id, self.key_keep

            def may_attend(b, h, q, kv):
                ok = q >= kv
                if sequence_id is not None:
                    ok = ok & (sequence_id[b, q] == sequence_id[b, kv])
                if key_keep is not None:
                    ok = ok & key_keep[b, kv]
                return ok

            per_batch = sequence_id is not None or key_keep is not None
            self._block_mask = create_block_mask(may_attend, self.batch_size if per_batch else None, None,
                                                 self.seq_len, self.seq_len, device=self.device)
        return self._block_mask

    def score_mod(self) -> Optional[Callable]:
        if self.slopes is None:
            return None
        # The slope is computed from the head index inside the kernel (alibi_slopes' formula), not read
        # from `slopes`: flex under autocast casts captured float tensors to bf16 in the forward but not
        # when activation checkpointing recomputes a block in the compiled backward, and the recompute
        # check then fails (7B on GPU, docs/performance.md).
        n_heads = self.slopes.numel()
        n = 2 ** math.ceil(math.log2(n_heads))
        exponent_per_k = -self.alibi_bias_max / n

        def alibi(score, b, h, q, kv):
            k = h + 1 if n == n_heads else torch.where(h < n // 2, 2 * h + 2, 2 * (h - n // 2) + 1)
            return score + torch.exp2(k * exponent_per_k) * (kv - q)

        return alibi


@torch.compiler.disable
def _triton_attention(q, k, v, plan: "AttentionPlan", scale: float) -> torch.Tensor:
    # Outside torch.compile: inductor re-compiles user Triton kernels and fails on this one
    # (a graph break per layer instead; docs/performance.md).
    return flash_alibi_attention(q, k, v, slopes=plan.slopes, sequence_id=plan.sequence_id, softmax_scale=scale)


# One compiled flex for the process (torch.compile compiles on the first call, not here). A module constant
# rather than a cached factory: a compiled model traces through it with no functools.cache warning.
_COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)


def _flex(q: torch.Tensor) -> Callable:
    """flex_attention, compiled on CUDA (eager flex materialises every score and is only a reference)."""
    return _COMPILED_FLEX if q.device.type == "cuda" else flex_attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, scale: float,
           dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention of q (B, H, S, D) over k, v (B, KV, S, D), KV dividing H; returns (B, H, S, D)."""
    gqa = k.shape[1] != q.shape[1]
    if plan.backend == "triton":
        return _triton_attention(q, k, v, plan, scale)
    if plan.backend == "flex":
        return _flex(q)(q, k, v, score_mod=plan.score_mod(), block_mask=plan.block_mask(), scale=scale,
                        enable_gqa=gqa, kernel_options=kernel_options(plan.flex_backend))
    if plan.only_causal:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, dropout_p=dropout_p,
                                              enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=plan.bias(q.dtype), scale=scale,
                                          dropout_p=dropout_p, enable_gqa=gqa)


def build_plan(*, attn_impl: str, batch_size: int, seq_len: int, device: torch.device, dropout_p: float,
               n_heads: int, alibi: bool, alibi_bias_max: float, rope_theta: Optional[float], head_dim: int,
               sequence_id: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor],
               flex_backend: str = TRITON) -> AttentionPlan:
    """The plan for one forward. `sequence_id` restricts attention to the token's own document;
    `attention_mask` (B, S), 1 = real token, 0 = padding, removes padding keys; `flex_backend` is the
    kernel compiled flex runs (flex_backend.choose), taken only without padding."""
    key_keep = None
    if attention_mask is not None and not bool(attention_mask.all()):
        key_keep = attention_mask.bool()
    return AttentionPlan(
        backend=resolve_backend(attn_impl, device, dropout_p, padded=key_keep is not None,
                                needs_grad=torch.is_grad_enabled()),
        batch_size=batch_size, seq_len=seq_len, device=device,
        slopes=alibi_slopes(n_heads, alibi_bias_max, device) if alibi else None,
        alibi_bias_max=alibi_bias_max,
        sequence_id=sequence_id, key_keep=key_keep, flex_backend=flex_backend if key_keep is None else TRITON,
        rope=rope_cos_sin(seq_len, head_dim, rope_theta, device) if rope_theta is not None else None)
