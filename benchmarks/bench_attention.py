"""Causal attention forward+backward on CUDA: our Triton ALiBi kernel vs SDPA and FlexAttention.

    PYTHONPATH=$PWD python3 benchmarks/bench_attention.py [--shapes 8x16x2048x128 4x32x2048x128] [--docs 4]

Per shape (B x H x S x D, bf16), median ms by triton.testing.do_bench of the forward alone and of
forward + backward (torch.autograd.grad of all of q, k, v), for:
  SDPA flash, causal, no bias          the bar to reach (no ALiBi, no documents)
  SDPA cuDNN, causal, no bias          PyTorch's other fused causal kernel, for reference
  SDPA + ALiBi bias tensor             explicit (1, H, S, S) additive bias, causal as -inf
  flex ALiBi causal / + docs           compiled flex_attention, ALiBi score_mod, causal (+ document) BlockMask
  flex FA4 ALiBi causal / + docs       the same through FlashAttention-4 (BACKEND=FLASH, `pip install '.[hopper]'`),
                                       with MPT's score mod (slopes from the head index, as the model runs it)
  ours causal / ALiBi / ALiBi + docs   llmtrain.kernels.flash_alibi_attention
Documents: --docs per row, random lengths (fixed seed). TFLOP/s counts causal work whatever the
masks skip: forward 2 matmuls * 2 flops * B*H*S*S*D / 2, forward+backward 3.5 times that (the backward
does 5 matmuls to the forward's 2).

Ours is also checked against SDPA with an explicit bias (ALiBi, and ALiBi + documents): relative
errors (norm, and max |difference| / max |reference|) of out, dq, dk, dv are printed. The autotuner's
timings and choices for our kernels are printed too.
"""
from __future__ import annotations

import argparse
import datetime

import torch
import torch.nn.functional as F
import triton
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import llmtrain.kernels.flash_alibi as fa
from llmtrain.models.mpt.attention import AttentionPlan, alibi_slopes


def random_documents(batch: int, seq: int, docs: int, seed: int = 0) -> torch.Tensor:
    """(B, S) nondecreasing ids: each row cut at docs - 1 random distinct points."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, seq, dtype=torch.long)
    for b in range(batch):
        cuts = torch.randperm(seq - 1, generator=gen)[:docs - 1] + 1
        ids[b, cuts] = 1
    return ids.cumsum(1)


def bias_tensor(slopes, seq_id, S, dtype, device) -> torch.Tensor:
    """Additive ALiBi bias with causal (and document) masking as -inf: (1 or B, H, S, S)."""
    pos = torch.arange(S, device=device)
    bias = (-slopes.to(device)[:, None, None] * (pos[:, None] - pos[None, :])).unsqueeze(0)
    ok = (pos[:, None] >= pos[None, :])[None, None]
    if seq_id is not None:
        ok = ok & (seq_id[:, None, :, None] == seq_id[:, None, None, :])
    return bias.masked_fill(~ok, float("-inf")).to(dtype)


def rel_errors(fn, ref_fn, q, k, v, do) -> str:
    out = fn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), do)
    ref = ref_fn(q, k, v)
    ref_grads = torch.autograd.grad(ref, (q, k, v), do)
    parts = []
    for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads)):
        diff, b = a.float() - b.float(), b.float()
        norm, worst = (diff.norm() / b.norm()).item(), (diff.abs().max() / b.abs().max()).item()
        parts.append(f"{name} {norm:.2e} (max {worst:.2e})")
    return ", ".join(parts)


def brief(config: triton.Config) -> str:
    return (f"{config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']} "
            f"warps {config.num_warps} stages {config.num_stages}")


def bench_shape(B, H, S, D, docs, device="cuda", dtype=torch.bfloat16):
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device=device, dtype=dtype, generator=gen).requires_grad_() for _ in range(3))
    do = torch.randn(B, H, S, D, device=device, dtype=dtype, generator=gen)
    slopes = alibi_slopes(H, device=device)
    seq_id = random_documents(B, S, docs).to(device)
    scale = D ** -0.5

    alibi_bias = bias_tensor(slopes, None, S, dtype, device)
    doc_bias = bias_tensor(slopes, seq_id, S, dtype, device)

    def alibi_mod(score, b, h, qi, kv):
        return score + slopes[h] * (kv - qi)

    causal = create_block_mask(lambda b, h, qi, kv: qi >= kv, None, None, S, S, device=device)
    same_doc = create_block_mask(lambda b, h, qi, kv: (qi >= kv) & (seq_id[b, qi] == seq_id[b, kv]),
                                 B, None, S, S, device=device)
    flex = torch.compile(flex_attention, dynamic=False)
    mpt_alibi = AttentionPlan(backend="flex", batch_size=B, seq_len=S, device=torch.device(device), slopes=slopes).score_mod()
    fa4 = {"BACKEND": "FLASH"}

    def sdpa(backend):
        def run(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return run

    variants = {
        "SDPA flash causal, no bias": sdpa(SDPBackend.FLASH_ATTENTION),
        "SDPA cuDNN causal, no bias": sdpa(SDPBackend.CUDNN_ATTENTION),
        "SDPA + ALiBi bias tensor": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=alibi_bias,
                                                                                   scale=scale),
        "flex ALiBi causal": lambda q, k, v: flex(q, k, v, score_mod=alibi_mod, block_mask=causal, scale=scale),
        f"flex ALiBi + {docs} docs": lambda q, k, v: flex(q, k, v, score_mod=alibi_mod, block_mask=same_doc,
                                                          scale=scale),
        "flex FA4 ALiBi causal": lambda q, k, v: flex(q, k, v, score_mod=mpt_alibi, block_mask=causal, scale=scale,
                                                      kernel_options=fa4),
        f"flex FA4 ALiBi + {docs} docs": lambda q, k, v: flex(q, k, v, score_mod=mpt_alibi, block_mask=same_doc,
                                                              scale=scale, kernel_options=fa4),
        "ours causal, no bias": lambda q, k, v: fa.flash_alibi_attention(q, k, v),
        "ours ALiBi": lambda q, k, v: fa.flash_alibi_attention(q, k, v, slopes=slopes),
        f"ours ALiBi + {docs} docs": lambda q, k, v: fa.flash_alibi_attention(q, k, v, slopes=slopes,
                                                                              sequence_id=seq_id),
    }

    print(f"\n## B{B} H{H} S{S} D{D} {str(dtype).removeprefix('torch.')}, {docs} docs/row for the doc variants")
    fwd_flops = 4 * B * H * S * S * D / 2
    rows, base = [], None
    kernels = {"forward": fa._fwd_kernel, "dk dv": fa._dkdv_kernel, "dq": fa._dq_kernel}
    for name, fn in variants.items():
        tuned = {label: len(kernel.cache) for label, kernel in kernels.items()}
        try:
            torch.autograd.grad(fn(q, k, v), (q, k, v), do)  # compiles, autotunes
        except Exception as e:  # e.g. a backend this build or card lacks (inductor raises its own types)
            print(f"{name}: skipped ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]})")
            continue
        for label, kernel in kernels.items():
            if len(kernel.cache) > tuned[label]:  # this call tuned it: show how the candidates did
                timings = sorted(getattr(kernel, "configs_timings", {}).items(), key=lambda x: x[1][0])
                print(f"{name}, {label} autotuning, median ms: "
                      + "; ".join(f"{brief(c)}: {t[0]:.3f}" for c, t in timings))
        with torch.no_grad():
            fwd = triton.testing.do_bench(lambda: fn(q, k, v), return_mode="median")
        both = triton.testing.do_bench(lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do),
                                       return_mode="median")
        base = base or both
        rows.append((name, fwd, both, both / base, 3.5 * fwd_flops / both * 1e-9))
    print(f"| {'variant':32} | fwd ms | fwd+bwd ms | vs SDPA flash no bias | fwd+bwd TFLOP/s |")
    print(f"|{'-' * 34}|-------:|-----------:|----------------------:|----------------:|")
    for name, fwd, both, ratio, tflops in rows:
        print(f"| {name:32} | {fwd:6.3f} | {both:10.3f} | {ratio:21.2f} | {tflops:15.0f} |")
    for label, kernel in kernels.items():
        for key, config in kernel.cache.items():  # the autotuner's choice per key (S, D, ALiBi, documents)
            print(f"  {label} {key[:4]}: {brief(config)}")

    print("ours ALiBi vs SDPA + ALiBi bias:       ",
          rel_errors(variants["ours ALiBi"], variants["SDPA + ALiBi bias tensor"], q, k, v, do))
    print("ours ALiBi + docs vs SDPA + doc bias:  ",
          rel_errors(variants[f"ours ALiBi + {docs} docs"],
                     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=doc_bias, scale=scale),
                     q, k, v, do))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["8x16x2048x128", "4x32x2048x128"], help="BxHxSxD")
    parser.add_argument("--docs", type=int, default=4, help="documents per row for the document variants")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
          f"{datetime.date.today()}")
    for shape in args.shapes:
        bench_shape(*map(int, shape.split("x")), docs=args.docs)


if __name__ == "__main__":
    main()
