"""FlexAttention kernel options for the model's attention, measured one set at a time on this card.

    PYTHONPATH=$PWD python3 benchmarks/tune_flex.py [--shape 16x16x2048x128] [--docs 0] [--json out.jsonl]

The attention is the model's own (llmtrain.models.mpt.attention: ALiBi score mod, causal or
causal + document BlockMask), bf16, forward + backward (grad of q, k, v), median of
triton.testing.do_bench. Each candidate `kernel_options` set is compiled from scratch
(torch.compiler.reset) and checked against the default options' output and gradients.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import triton.testing
from torch.nn.attention.flex_attention import flex_attention

from llmtrain.models.mpt.attention import build_plan
from measure import append_json

SAFE = {"ROWS_GUARANTEED_SAFE": True, "BLOCKS_ARE_CONTIGUOUS": True}  # causal (+ documents), no padding
CANDIDATES = [
    {},
    SAFE,
    {**SAFE, "USE_TMA": True},
    {**SAFE, "PRESCALE_QK": True},
    {**SAFE, "fwd_BLOCK_M": 128, "fwd_BLOCK_N": 64, "fwd_num_warps": 8, "fwd_num_stages": 3},
    {**SAFE, "fwd_BLOCK_M": 128, "fwd_BLOCK_N": 128, "fwd_num_warps": 8, "fwd_num_stages": 2},
    {**SAFE, "bwd_BLOCK_M1": 64, "bwd_BLOCK_N1": 128, "bwd_BLOCK_M2": 128, "bwd_BLOCK_N2": 64,
     "bwd_num_warps": 8, "bwd_num_stages": 3},
    {**SAFE, "bwd_BLOCK_M1": 32, "bwd_BLOCK_N1": 128, "bwd_BLOCK_M2": 128, "bwd_BLOCK_N2": 32,
     "bwd_num_warps": 4, "bwd_num_stages": 3},
    {**SAFE, "bwd_BLOCK_M1": 64, "bwd_BLOCK_N1": 64, "bwd_BLOCK_M2": 64, "bwd_BLOCK_N2": 64,
     "bwd_num_warps": 4, "bwd_num_stages": 3},
    {**SAFE, "bwd_BLOCK_M1": 64, "bwd_BLOCK_N1": 128, "bwd_BLOCK_M2": 128, "bwd_BLOCK_N2": 64,
     "bwd_num_warps": 8, "bwd_num_stages": 2},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="16x16x2048x128", help="B x H x S x D")
    parser.add_argument("--docs", type=int, default=0, help="documents per row (0: causal only)")
    parser.add_argument("--json", help="append one JSON line per candidate")
    args = parser.parse_args()
    B, H, S, D = map(int, args.shape.split("x"))
    device = "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device=device, dtype=torch.bfloat16, generator=gen).requires_grad_()
               for _ in range(3))
    do = torch.randn(B, H, S, D, device=device, dtype=torch.bfloat16, generator=gen)
    sequence_id = None
    if args.docs:
        sequence_id = (torch.arange(S, device=device) * args.docs // S).expand(B, S)
    plan = build_plan(attn_impl="flex", batch_size=B, seq_len=S, device=torch.device(device), dropout_p=0.0,
                      n_heads=H, alibi=True, alibi_bias_max=8.0, rope_theta=None, head_dim=D,
                      sequence_id=sequence_id, attention_mask=None)
    score_mod, block_mask = plan.score_mod(), plan.block_mask()
    fwd_flops = 4 * B * H * S * S * D / 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; B{B} H{H} S{S} D{D}, docs {args.docs}")
    reference = None
    for options in CANDIDATES:
        torch.compiler.reset()
        flex = torch.compile(flex_attention, dynamic=False)

        def forward():
            return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=D ** -0.5,
                        kernel_options=options or None)

        def step():
            out = forward()
            return out, torch.autograd.grad(out, (q, k, v), do)

        start = time.perf_counter()
        try:
            results = step()
        except Exception as e:  # noqa: BLE001 - a set this card/compiler rejects: report and go on
            print(f"{json.dumps(options)}: failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})", flush=True)
            continue
        compile_s = time.perf_counter() - start
        if reference is None:
            reference = [t.float() for t in results[:1] + results[1]]
        got = [t.float() for t in results[:1] + results[1]]
        err = max(((a - b).norm() / b.norm()).item() for a, b in zip(got, reference))
        with torch.no_grad():
            fwd = triton.testing.do_bench(forward, return_mode="median")
        both = triton.testing.do_bench(step, return_mode="median")
        row = {"options": options, "fwd_ms": fwd, "fwd_bwd_ms": both, "bwd_ms": both - fwd,
               "tflops": 3.5 * fwd_flops / both * 1e-9, "max_rel_err_vs_default": err, "compile_s": compile_s}
        print(f"fwd {fwd:6.3f} ms  fwd+bwd {both:6.3f} ms  {row['tflops']:4.0f} TFLOP/s  err {err:.1e}  "
              f"compile {compile_s:4.0f} s  {json.dumps(options)}", flush=True)
        if args.json:
            append_json(args.json, {"shape": args.shape, "docs": args.docs, **row})


if __name__ == "__main__":
    main()
