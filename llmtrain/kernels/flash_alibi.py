"""Causal attention with ALiBi and packed-document masking: FlashAttention-2 in Triton, forward and backward.

    out = flash_alibi_attention(q, k, v, slopes=slopes, sequence_id=sequence_id)

q is (B, H, S, D), k and v are (B, Hkv, S, D) with Hkv dividing H (grouped-query attention). Query i
attends key j when j <= i and, given `sequence_id` (B, S), both tokens lie in the same document. Ids
must be nondecreasing along a row, as sequence packing produces them: a document is then a contiguous
run of positions [doc_start[i], doc_end[i]), and that is what the kernels use. ALiBi adds
-slopes[h] * (i - j) to each score (the token distance, as in MPT).

How it computes:
- Scores are kept in the log2 domain (softmax scale times log2(e) folded in) so the kernels use exp2.
- ALiBi's -slope * (i - j) equals slope * (j - c) - slope * (i - c) for any c. The second term is
  constant along a row and cancels in the softmax, so a program adds only the column term, with c its
  own block start (small magnitudes: no fp32 cancellation for long rows), and the logsumexp saved for
  the backward is shifted back to the true scores.
- Key blocks a query block cannot see (in the future, or before its first document starts) are never
  visited; blocks every query of the block fully sees run without mask arithmetic; only blocks on the
  diagonal or a document boundary are masked.
- Backward as in FlashAttention-2: delta = rowsum(dO * O); one program per key block accumulates dK,
  dV over query blocks (and over every query head sharing its KV head), one per query block
  accumulates dQ. No atomics: gradients are deterministic.

bf16 and fp16 run on CUDA; fp32 is only accepted under Triton's CPU interpreter (TRITON_INTERPRET=1,
read when this module is imported), which the CPU tests use.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# TRITON_INTERPRET is read by @triton.jit when this module is imported; the interpreter emulates every
# program on the CPU, where timing configs would be meaningless, so it gets one small config that
# still spreads a short sequence over many blocks.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_KEY = ["S", "HEAD_DIM", "HAS_ALIBI", "HAS_DOC"]


def _configs(candidates, interpreted):
    """Autotuning candidates (BLOCK_M, BLOCK_N, num_warps, num_stages): those that won or came close on
    an H200 at S=2048, D=128 (with and without ALiBi and documents), plus a smaller one for D=64 and
    short sequences."""
    chosen = [interpreted] if _INTERPRET else candidates
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in chosen]


def _bench(fn, quantiles):
    # Passed explicitly so that decorating does not look for a GPU driver (CPU machines import this).
    return triton.testing.do_bench(fn, quantiles=quantiles)


@triton.jit
def _key_range(DOC_START, m0, S, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DOC: tl.constexpr):
    """Key blocks for the queries [m0, m0 + BLOCK_M): [lo, full) cross the start of some query's
    document (masked), [full, m0) are fully visible, [m0, hi) hold the diagonal (masked)."""
    hi = tl.minimum(m0 + BLOCK_M, S)
    if HAS_DOC:
        # Document starts are nondecreasing: the first query has the earliest, the last the latest.
        lo = tl.load(DOC_START + m0) // BLOCK_N * BLOCK_N
        full = tl.minimum(tl.cdiv(tl.load(DOC_START + hi - 1), BLOCK_N) * BLOCK_N, m0)
    else:
        lo = 0
        full = 0
    return lo, full, hi


@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, start, end, S, slope,
                qk_scale, MASK: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr,
                BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    offs_d = tl.arange(0, HEAD_DIM)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if MASK:  # only masked blocks can reach past the sequence end
            kT = tl.load(K + offs_n[None, :] * stride_ks + offs_d[:, None], mask=offs_n[None, :] < S, other=0.0)
            v = tl.load(V + offs_n[:, None] * stride_vs + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
        else:
            kT = tl.load(K + offs_n[None, :] * stride_ks + offs_d[:, None])
            v = tl.load(V + offs_n[:, None] * stride_vs + offs_d[None, :])
        s = tl.dot(q, kT) * qk_scale
        if HAS_ALIBI:
            s += (slope * (offs_n - m0).to(tl.float32))[None, :]
        if MASK:
            # Keys past the end fail `j <= i` for every real query.
            ok = offs_n[None, :] <= offs_m[:, None]
            if HAS_DOC:
                ok &= offs_n[None, :] >= doc_start[:, None]
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_configs([(128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 4)],
                                  (32, 16, 4, 1)), key=_KEY, do_bench=_bench)
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, SLOPES, DOC_START,
                stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                H, GROUP, S, qk_scale,
                HEAD_DIM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    m0 = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M  # the longest rows first: a shorter tail
    bh = tl.program_id(1).to(tl.int64)  # int64: B*H*S*D may pass 2**31
    b, h = bh // H, bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + (h // GROUP) * stride_kh
    V += b * stride_vb + (h // GROUP) * stride_vh
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + offs_m[:, None] * stride_qs + offs_d[None, :], mask=offs_m[:, None] < S, other=0.0)
    slope = 0.0
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h) * 1.4426950408889634
    doc_start = offs_m  # unused without documents
    if HAS_DOC:
        DOC_START += b * S
        doc_start = tl.load(DOC_START + offs_m, mask=offs_m < S, other=0)
    lo, full, hi = _key_range(DOC_START, m0, S, BLOCK_M, BLOCK_N, HAS_DOC)

    # A finite start for the running max: a row whose first keys are all masked then gets exp2(-inf) = 0
    # instead of exp2(-inf - -inf) = NaN.
    m_i = tl.full([BLOCK_M], -1e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, lo, full, S,
                                slope, qk_scale, True, HAS_ALIBI, HAS_DOC, BLOCK_N, HEAD_DIM)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, full, m0, S,
                                slope, qk_scale, False, HAS_ALIBI, HAS_DOC, BLOCK_N, HEAD_DIM)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, m0, hi, S,
                                slope, qk_scale, True, HAS_ALIBI, HAS_DOC, BLOCK_N, HEAD_DIM)

    lse = m_i + tl.log2(l_i)
    if HAS_ALIBI:  # back to true scores: put the row term -slope * (i - m0) back in
        lse -= slope * (offs_m - m0).to(tl.float32)
    tl.store(LSE + bh * S + offs_m, lse, mask=offs_m < S)
    O += b * stride_ob + h * stride_oh
    out = acc / l_i[:, None]
    tl.store(O + offs_m[:, None] * stride_os + offs_d[None, :], out.to(O.dtype.element_ty), mask=offs_m[:, None] < S)


@triton.jit
def _delta_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_os, stride_dob, stride_doh, stride_dos, H, S,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    m0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < S
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :], mask=rows, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dos + offs_d[None, :], mask=rows,
                 other=0.0)
    tl.store(DELTA + bh * S + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=offs_m < S)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, Q, DO, LSE, DELTA, DOC_START, stride_qs, stride_dos, offs_n, n0, start, end, S,
                 slope, qk_scale, MASK: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr,
                 BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Accumulate one key block's dK, dV over the query blocks [start, end); scores are transposed
    (keys down, queries across) so the products land in dK, dV's layout."""
    offs_d = tl.arange(0, HEAD_DIM)
    for m0 in range(start, end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        in_q = offs_m < S
        if MASK:
            qT = tl.load(Q + offs_m[None, :] * stride_qs + offs_d[:, None], mask=in_q[None, :], other=0.0)
            do = tl.load(DO + offs_m[:, None] * stride_dos + offs_d[None, :], mask=in_q[:, None], other=0.0)
            lse = tl.load(LSE + offs_m, mask=in_q, other=0.0)
            delta = tl.load(DELTA + offs_m, mask=in_q, other=0.0)
        else:
            qT = tl.load(Q + offs_m[None, :] * stride_qs + offs_d[:, None])
            do = tl.load(DO + offs_m[:, None] * stride_dos + offs_d[None, :])
            lse = tl.load(LSE + offs_m)
            delta = tl.load(DELTA + offs_m)
        sT = tl.dot(k, qT) * qk_scale
        if HAS_ALIBI:
            # slope * (j - i) split as column term slope * (j - n0) and row term slope * (i - n0).
            sT += (slope * (offs_n - n0).to(tl.float32))[:, None]
            lse += slope * (offs_m - n0).to(tl.float32)
        pT = tl.exp2(sT - lse[None, :])
        if MASK:
            ok = (offs_m[None, :] >= offs_n[:, None]) & in_q[None, :]
            if HAS_DOC:
                doc_start = tl.load(DOC_START + offs_m, mask=in_q, other=0)
                ok &= offs_n[:, None] >= doc_start[None, :]
            pT = tl.where(ok, pT, 0.0)  # a select, so masked entries that overflowed to inf leave no NaN
        dv = tl.dot(pT.to(do.dtype), do, dv)
        dpT = tl.dot(v, tl.trans(do))
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk)
    return dk, dv


@triton.autotune(configs=_configs([(64, 128, 8, 3), (32, 128, 8, 3), (32, 128, 8, 4), (64, 64, 4, 3)],
                                  (16, 32, 4, 1)), key=_KEY, do_bench=_bench)
@triton.jit
def _dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, SLOPES, DOC_START, DOC_END,
                 stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                 stride_vb, stride_vh, stride_vs, stride_dob, stride_doh, stride_dos,
                 stride_dkb, stride_dkh, stride_dks, stride_dvb, stride_dvh, stride_dvs,
                 H, HKV, S, qk_scale, sm_scale,
                 HEAD_DIM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    n0 = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    b, hkv = bh // HKV, bh % HKV
    group = H // HKV
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    in_k = offs_n[:, None] < S
    k = tl.load(K + b * stride_kb + hkv * stride_kh + offs_n[:, None] * stride_ks + offs_d[None, :], mask=in_k,
                other=0.0)
    v = tl.load(V + b * stride_vb + hkv * stride_vh + offs_n[:, None] * stride_vs + offs_d[None, :], mask=in_k,
                other=0.0)

    # Query blocks, from the diagonal on: [n0, diag_hi) masked, [n0 + BLOCK_N, full_hi) fully see this
    # key block, [full_hi, q_hi) masked (a later document starts inside, or the sequence ends).
    if HAS_DOC:
        DOC_START += b * S
        DOC_END += b * S
        q_hi = tl.load(DOC_END + tl.minimum(n0 + BLOCK_N, S) - 1)  # no later query sees the block
        full_hi = tl.load(DOC_END + n0) // BLOCK_M * BLOCK_M  # queries before it share n0's document
    else:
        q_hi = S
        full_hi = S // BLOCK_M * BLOCK_M
    diag_hi = tl.minimum(n0 + BLOCK_N, q_hi)
    full_hi = tl.maximum(full_hi, n0 + BLOCK_N)

    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for g in range(group):  # every query head reading this KV head adds to its gradient
        h = hkv * group + g
        slope = 0.0
        if HAS_ALIBI:
            slope = tl.load(SLOPES + h) * 1.4426950408889634
        Qh = Q + b * stride_qb + h * stride_qh
        DOh = DO + b * stride_dob + h * stride_doh
        LSEh = LSE + (b * H + h) * S
        DELTAh = DELTA + (b * H + h) * S
        dk, dv = _dkdv_blocks(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, DOC_START, stride_qs, stride_dos, offs_n, n0,
                              n0, diag_hi, S, slope, qk_scale, True, HAS_ALIBI, HAS_DOC, BLOCK_M, HEAD_DIM)
        dk, dv = _dkdv_blocks(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, DOC_START, stride_qs, stride_dos, offs_n, n0,
                              n0 + BLOCK_N, full_hi, S, slope, qk_scale, False, HAS_ALIBI, HAS_DOC, BLOCK_M,
                              HEAD_DIM)
        dk, dv = _dkdv_blocks(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, DOC_START, stride_qs, stride_dos, offs_n, n0,
                              full_hi, q_hi, S, slope, qk_scale, True, HAS_ALIBI, HAS_DOC, BLOCK_M, HEAD_DIM)

    dk *= sm_scale
    tl.store(DK + b * stride_dkb + hkv * stride_dkh + offs_n[:, None] * stride_dks + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=in_k)
    tl.store(DV + b * stride_dvb + hkv * stride_dvh + offs_n[:, None] * stride_dvs + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=in_k)


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, start, end, S, slope,
               qk_scale, MASK: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr,
               BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
    offs_d = tl.arange(0, HEAD_DIM)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if MASK:
            kT = tl.load(K + offs_n[None, :] * stride_ks + offs_d[:, None], mask=offs_n[None, :] < S, other=0.0)
            vT = tl.load(V + offs_n[None, :] * stride_vs + offs_d[:, None], mask=offs_n[None, :] < S, other=0.0)
        else:
            kT = tl.load(K + offs_n[None, :] * stride_ks + offs_d[:, None])
            vT = tl.load(V + offs_n[None, :] * stride_vs + offs_d[:, None])
        s = tl.dot(q, kT) * qk_scale
        if HAS_ALIBI:
            s += (slope * (offs_n - m0).to(tl.float32))[None, :]
        p = tl.exp2(s - lse[:, None])
        if MASK:
            ok = offs_n[None, :] <= offs_m[:, None]
            if HAS_DOC:
                ok &= offs_n[None, :] >= doc_start[:, None]
            p = tl.where(ok, p, 0.0)
        dp = tl.dot(do, vT)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq)
    return dq


@triton.autotune(configs=_configs([(128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 3)],
                                  (32, 16, 4, 1)), key=_KEY, do_bench=_bench)
@triton.jit
def _dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, SLOPES, DOC_START,
               stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
               stride_vb, stride_vh, stride_vs, stride_dob, stride_doh, stride_dos,
               stride_dqb, stride_dqh, stride_dqs,
               H, GROUP, S, qk_scale, sm_scale,
               HEAD_DIM: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DOC: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    m0 = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M  # the longest rows first: a shorter tail
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    K += b * stride_kb + (h // GROUP) * stride_kh
    V += b * stride_vb + (h // GROUP) * stride_vh
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < S
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :], mask=rows,
                other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dos + offs_d[None, :], mask=rows,
                 other=0.0)
    lse = tl.load(LSE + bh * S + offs_m, mask=offs_m < S, other=0.0)
    delta = tl.load(DELTA + bh * S + offs_m, mask=offs_m < S, other=0.0)
    slope = 0.0
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h) * 1.4426950408889634
        lse += slope * (offs_m - m0).to(tl.float32)  # the row term, as in the forward
    doc_start = offs_m  # unused without documents
    if HAS_DOC:
        DOC_START += b * S
        doc_start = tl.load(DOC_START + offs_m, mask=offs_m < S, other=0)
    lo, full, hi = _key_range(DOC_START, m0, S, BLOCK_M, BLOCK_N, HAS_DOC)

    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    dq = _dq_blocks(dq, q, do, lse, delta, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, lo, full, S, slope,
                    qk_scale, True, HAS_ALIBI, HAS_DOC, BLOCK_N, HEAD_DIM)
    dq = _dq_blocks(dq, q, do, lse, delta, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, full, m0, S, slope,
                    qk_scale, False, HAS_ALIBI, HAS_DOC, BLOCK_N, HEAD_DIM)
    dq = _dq_blocks(dq, q, do, lse, delta, K, V, stride_ks, stride_vs, doc_start, offs_m, m0, m0, hi, S, slope,
                    qk_scale, True, HAS_ALIBI, HAS_DOC, BLOCK_N, HEAD_DIM)
    dq *= sm_scale
    tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqs + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=rows)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


class _FlashAlibi(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, slopes, doc_start, doc_end, scale):
        B, H, S, D = q.shape
        # Laid out (B, S, H, D) so that merging heads afterwards (transpose + reshape) is free.
        o = torch.empty(B, S, H, D, dtype=q.dtype, device=q.device).transpose(1, 2)
        lse = torch.empty(B, H, S, dtype=torch.float32, device=q.device)
        grid = lambda meta: (triton.cdiv(S, meta["BLOCK_M"]), B * H)
        _fwd_kernel[grid](q, k, v, o, lse, q if slopes is None else slopes, q if doc_start is None else doc_start,
                          *_strides(q), *_strides(k), *_strides(v), *_strides(o),
                          H, H // k.shape[1], S, scale * LOG2E,
                          HEAD_DIM=D, HAS_ALIBI=slopes is not None, HAS_DOC=doc_start is not None)
        ctx.save_for_backward(q, k, v, o, lse, slopes, doc_start, doc_end)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, slopes, doc_start, doc_end = ctx.saved_tensors
        B, H, S, D = q.shape
        Hkv = k.shape[1]
        if do.stride(-1) != 1:
            do = do.contiguous()
        delta = torch.empty_like(lse)
        block = 32 if _INTERPRET else 128
        _delta_kernel[(triton.cdiv(S, block), B * H)](o, do, delta, *_strides(o), *_strides(do), H, S,
                                                      HEAD_DIM=D, BLOCK_M=block)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        flags = dict(HEAD_DIM=D, HAS_ALIBI=slopes is not None, HAS_DOC=doc_start is not None)
        slopes_arg = q if slopes is None else slopes
        start_arg = q if doc_start is None else doc_start
        _dkdv_kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_N"]), B * Hkv)](
            q, k, v, do, lse, delta, dk, dv, slopes_arg, start_arg, q if doc_end is None else doc_end,
            *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dk), *_strides(dv),
            H, Hkv, S, ctx.scale * LOG2E, ctx.scale, **flags)
        _dq_kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_M"]), B * H)](
            q, k, v, do, lse, delta, dq, slopes_arg, start_arg,
            *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dq),
            H, H // Hkv, S, ctx.scale * LOG2E, ctx.scale, **flags)
        return dq, dk, dv, None, None, None, None


def document_bounds(sequence_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(doc_start, doc_end), int32 (B, S): the run of positions [start, end) holding each token's
    document. Needs ids nondecreasing along each row."""
    ids = sequence_id.contiguous()
    return (torch.searchsorted(ids, ids, side="left", out_int32=True),
            torch.searchsorted(ids, ids, side="right", out_int32=True))


def flash_alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                          slopes: Optional[torch.Tensor] = None, sequence_id: Optional[torch.Tensor] = None,
                          softmax_scale: Optional[float] = None) -> torch.Tensor:
    """Causal softmax attention of q (B, H, S, D) over k, v (B, Hkv, S, D), Hkv dividing H; differentiable.

    slopes: (H,) ALiBi slopes, adding -slopes[h] * (i - j) to query i's score for key j; None for none.
    sequence_id: (B, S) document ids, nondecreasing along each row; tokens attend only their own document.
    softmax_scale: defaults to 1 / sqrt(D).
    D is 16, 32, 64 or 128; any strides with the last dim contiguous. The result is a (B, H, S, D) view
    of (B, S, H, D) memory, so `out.transpose(1, 2).reshape(B, S, H * D)` copies nothing.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, S, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, S, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[2:] != (S, D) or H % k.shape[1]:
        raise ValueError(f"k, v must be (B, Hkv, S, D) with Hkv dividing H; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if D not in (16, 32, 64, 128):
        raise ValueError(f"head dim must be 16, 32, 64 or 128; got {D}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if _INTERPRET:
        if q.dtype not in (torch.float16, torch.float32):  # the 3.3 interpreter's dot misreads bf16
            raise ValueError(f"the Triton interpreter runs float16 and float32; got {q.dtype}")
    elif not q.is_cuda:
        raise ValueError("flash_alibi_attention needs CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter)")
    elif q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"flash_alibi_attention runs bfloat16 and float16 on GPU; got {q.dtype}")
    if slopes is not None:
        if slopes.shape != (H,):
            raise ValueError(f"slopes must be ({H},); got {tuple(slopes.shape)}")
        slopes = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    doc_start = doc_end = None
    if sequence_id is not None:
        if sequence_id.shape != (B, S):
            raise ValueError(f"sequence_id must be ({B}, {S}); got {tuple(sequence_id.shape)}")
        doc_start, doc_end = document_bounds(sequence_id.to(q.device))
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(D)
    return _FlashAlibi.apply(q, k, v, slopes, doc_start, doc_end, scale)
