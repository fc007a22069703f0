"""Does FlashAttention-4 (flash-attn-4's CuTe kernels) compile and run here, how long does the first call
take, and how fast is it? One stage per process, so that a hang in one stage is cut off by its timeout
with the stacks printed (faulthandler), and the next stage still runs.

    python3 benchmarks/probe_fa4.py [--shape 16x16x2048x128] [--timeout 150] [--stages direct,alibi,flex,flexdocs]

Stages, each forward + backward in bf16 on (B, H, S, D), against a reference on a small problem:
  direct     flash_attn.cute.flash_attn_func, causal, no score mod (FA4's own causal kernel)
  alibi      the same with MPT's ALiBi as a CuTe score mod (alibi_score_mods below)
  flex       compiled flex_attention with kernel_options BACKEND=FLASH, MPT's score mod, causal block mask
  flexdocs   the same with 4 documents per row
  fp8model   a compiled 2-layer MPT of the shape's heads under amp bf16 with torchao float8 Linears and FA4
             attention, forward + backward (FP8 models keep Triton attention: this compile did not finish in
             190 s for MPT-1B on 2026-12-04; its timeout's stack dump says where it stalls)
Prints, per stage, the first forward and backward times (compile included), the error against the
reference, and the median fwd+bwd ms by triton.testing.do_bench.
"""
from __future__ import annotations

import argparse
import faulthandler
import math
import os
import subprocess
import sys
import time

STAGES = ("direct", "alibi", "flex", "flexdocs", "fp8model")


def alibi_score_mods(n_heads: int, alibi_bias_max: float = 8.0):
    """(forward, backward) score mods for flash_attn_func: FA4 passes vectors of scaled scores (float32) and of
    batch, head, query and key indices (int32); the forward adds slope_h * (kv - q) with slope_h =
    2^(-alibi_bias_max * (h + 1) / n_heads), as alibi_slopes() for a power-of-two head count; the bias does not
    depend on the score, so the backward passes the gradient through."""
    if 2 ** round(math.log2(n_heads)) != n_heads:
        raise ValueError(f"FA4 ALiBi score mod: n_heads must be a power of two, got {n_heads}")
    import cutlass
    import cutlass.cute as cute

    exponent_per_head = -alibi_bias_max / n_heads

    @cute.jit
    def alibi(score, batch_idx, head_idx, q_idx, kv_idx, seqlen_info, aux_tensors):
        slope = cute.math.exp2((head_idx + 1).to(cutlass.Float32) * exponent_per_head)
        return score + slope * (kv_idx - q_idx).to(cutlass.Float32)

    @cute.jit
    def alibi_backward(grad, score, batch_idx, head_idx, q_idx, kv_idx, seqlen_info, aux_tensors):
        return grad

    return alibi, alibi_backward


def run_stage(stage: str, shape: tuple[int, int, int, int]) -> None:
    import torch
    import triton.testing

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_attention import random_documents
    from llmtrain.models.mpt.attention import FLASH, TRITON, AttentionPlan, alibi_slopes, attend

    B, H, S, D = shape
    device = torch.device("cuda")
    if stage == "fp8model":
        fp8_model_stage(B, H, S, D)
        return

    def inputs(b, s):
        gen = torch.Generator(device=device).manual_seed(0)
        return [torch.randn(b, H, s, D, device=device, dtype=torch.bfloat16, generator=gen).requires_grad_()
                for _ in range(3)]

    def plan(b, s, backend, docs):
        seq_id = random_documents(b, s, docs).to(device) if docs > 1 else None
        return AttentionPlan(backend="flex", batch_size=b, seq_len=s, device=device,
                             slopes=alibi_slopes(H, 8.0, device), sequence_id=seq_id, flex_backend=backend)

    def flex(q, k, v, p):  # compiled flex with the plan's backend
        return attend(q, k, v, p, scale=D ** -0.5)

    if stage in ("direct", "alibi"):
        from flash_attn.cute import flash_attn_func
        mods = alibi_score_mods(H, 8.0) if stage == "alibi" else (None, None)

        def fn(q, k, v, p=None):  # FA4 takes (B, S, H, D)
            out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=D ** -0.5,
                                  causal=True, score_mod=mods[0], score_mod_bwd=mods[1])
            out = out[0] if isinstance(out, tuple) else out
            return out.transpose(1, 2)

        def sdpa(q, k, v, p):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=D ** -0.5)

        ref = sdpa if stage == "direct" else flex  # flex with the Triton plan
        docs = 1
    else:
        fn = ref = flex  # the FLASH plan against the Triton plan
        docs = 4 if stage == "flexdocs" else 1

    # correctness on a small problem, against the reference
    small_b, small_s = 2, 512
    q, k, v = inputs(small_b, small_s)
    p_flash = plan(small_b, small_s, FLASH, docs)
    plan_triton = plan(small_b, small_s, TRITON, docs)
    t0 = time.time()
    out = fn(q, k, v, p_flash)
    torch.cuda.synchronize()
    t_fwd = time.time() - t0
    do = torch.randn_like(out)
    t0 = time.time()
    grads = torch.autograd.grad(out, (q, k, v), do)
    torch.cuda.synchronize()
    t_bwd = time.time() - t0
    ref_out = ref(q, k, v, plan_triton)
    ref_grads = torch.autograd.grad(ref_out, (q, k, v), do)
    errs = [((a.float() - b.float()).norm() / b.float().norm()).item()
            for a, b in zip([out, *grads], [ref_out, *ref_grads])]
    print(f"[{stage}] first forward {t_fwd:.1f} s, first backward {t_bwd:.1f} s (compile included); "
          f"rel. error out/dq/dk/dv vs reference: " + " ".join(f"{e:.1e}" for e in errs), flush=True)

    q, k, v = inputs(B, S)
    p_full = plan(B, S, FLASH, docs)
    out = fn(q, k, v, p_full)
    do = torch.randn_like(out)
    torch.autograd.grad(out, (q, k, v), do)
    torch.cuda.synchronize()
    ms = triton.testing.do_bench(lambda: torch.autograd.grad(fn(q, k, v, p_full), (q, k, v), do),
                                 warmup=50, rep=300, return_mode="median")
    print(f"[{stage}] {B}x{H}x{S}x{D} fwd+bwd median {ms:.3f} ms", flush=True)


def fp8_model_stage(B: int, H: int, S: int, D: int) -> None:
    import torch

    from llmtrain.config import Fp8Config
    from llmtrain.models.fp8 import convert
    from llmtrain.models.mpt.attention import FLASH
    from llmtrain.models.mpt.configuration import MPTConfig
    from llmtrain.models.mpt.modeling import MPTForCausalLM

    config = MPTConfig(d_model=H * D, n_heads=H, n_layers=2, vocab_size=50432, max_seq_len=S, no_bias=True,
                       norm_type="low_precision_layernorm", attn_config={"attn_impl": "flash", "alibi": True})
    model = MPTForCausalLM(config).cuda()
    convert(model, Fp8Config(), fsdp=False)
    model.transformer.flex_backend = FLASH  # what convert() turns back to Triton
    compiled = torch.compile(model)
    ids = torch.randint(0, 50277, (B, S), device="cuda")
    for step in range(3):
        start = time.time()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compiled(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.cuda.synchronize()
        print(f"[fp8model] step {step}: {time.time() - start:.1f} s, loss {loss.item():.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="16x16x2048x128")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per stage")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # one stage, in this process
    args = parser.parse_args()
    shape = tuple(int(x) for x in args.shape.split("x"))
    if args.stage:
        faulthandler.dump_traceback_later(args.timeout - 15, exit=False)  # stacks before the parent kills us
        run_stage(args.stage, shape)
        return
    try:
        import cutlass
        import flash_attn.cute  # noqa: F401
        from importlib.metadata import version
        print(f"flash-attn-4 {version('flash-attn-4')}, nvidia-cutlass-dsl {version('nvidia-cutlass-dsl')}, "
              f"cutlass {getattr(cutlass, '__version__', '?')}", flush=True)
    except Exception as err:  # noqa: BLE001 — report and stop: nothing to probe
        print(f"flash_attn.cute does not import: {type(err).__name__}: {err}")
        return
    for stage in args.stages.split(","):
        start = time.time()
        try:
            rc = subprocess.run([sys.executable, __file__, "--stage", stage, "--shape", args.shape,
                                 "--timeout", str(args.timeout)], timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        print(f"[{stage}] exit {rc} after {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
