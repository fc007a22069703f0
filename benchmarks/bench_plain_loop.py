"""The issue's plain-PyTorch MPT step, and our model in the same loop: where does the trainer's step go?

    python benchmarks/bench_plain_loop.py --microbatch 16 --profile reference ours ours:lion,clip

Each run is `MODEL[:OPTIONS]`, timed one after the other in this process on synthetic tokens, with no
trainer around it: whole model under `torch.compile`, amp bf16, one optimizer step per micro-batch, one
host sync per step (`loss.item()`, as Composer logs it).
- `reference`: a minimal MPT of the preset's shape written below (LayerNorm without bias, fused qkv,
  FlexAttention with ALiBi, exact GELU, tied output, the loss in the compiled graph) — the issue's loop.
- `ours`: llmtrain's MPTForCausalLM built from yamls/mpt-<preset>.yaml's model section.
Options: `lion` (our DecoupledLionW instead of fused AdamW), `clip` (global-norm clipping at 1.0, as
the recipes do), `fp32norm` (ours with `norm_type: layernorm`), `bf16resid` (the reference with its
residual stream in bf16 instead of the fp32 that the embedding's output gives it under autocast).
Compared with `bench_train.py` on the same card, the difference between `ours:lion,clip` and the
trainer is the cost of the loop around it.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from llmtrain.models.mpt.attention import alibi_slopes
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.modeling import MPTForCausalLM
from llmtrain.optim.lion import DecoupledLionW
from measure import RECIPES, append_json, kernel_times, mfu, peak_mem_gib, print_profile, top_kernels


class ReferenceBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, expansion: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm_1 = nn.LayerNorm(d_model, bias=False)
        self.Wqkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.norm_2 = nn.LayerNorm(d_model, bias=False)
        self.up_proj = nn.Linear(d_model, expansion * d_model, bias=False)
        self.down_proj = nn.Linear(expansion * d_model, d_model, bias=False)

    def forward(self, x, block_mask, score_mod):
        B, S, D = x.shape
        q, k, v = self.Wqkv(self.norm_1(x)).view(B, S, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)
        x = x + self.out_proj(y.transpose(1, 2).reshape(B, S, D))
        return x + self.down_proj(F.gelu(self.up_proj(self.norm_2(x))))


class ReferenceMPT(nn.Module):
    def __init__(self, m: dict, seq: int, bf16_residual: bool = False):
        super().__init__()
        d = m["d_model"]
        self.bf16_residual = bf16_residual
        self.wte = nn.Embedding(m["vocab_size"], d)
        nn.init.normal_(self.wte.weight, std=0.02)  # tied to the output: N(0, 1) would give huge logits
        self.blocks = nn.ModuleList(ReferenceBlock(d, m["n_heads"], int(m["expansion_ratio"]))
                                    for _ in range(m["n_layers"]))
        self.norm_f = nn.LayerNorm(d, bias=False)
        self.register_buffer("slopes", alibi_slopes(m["n_heads"], m["attn_config"]["alibi_bias_max"]))
        self.block_mask = create_block_mask(lambda b, h, q, kv: q >= kv, None, None, seq, seq, device="cuda")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        slopes = self.slopes

        def alibi(score, b, h, q, kv):
            return score + slopes[h] * (kv - q)

        x = self.wte(tokens)
        if self.bf16_residual:
            x = x.to(torch.bfloat16)
        for block in self.blocks:
            x = block(x, self.block_mask, alibi)
        logits = F.linear(self.norm_f(x), self.wte.weight)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


def build(spec: str, model_section: dict, seq: int):
    name, _, opts = spec.partition(":")
    options = set(filter(None, opts.split(",")))
    if name == "reference":
        model = ReferenceMPT(model_section, seq, bf16_residual="bf16resid" in options).cuda()
        loss_of = model
    elif name == "ours":
        section = dict(model_section, init_device="cpu", norm_type="layernorm" if "fp32norm" in options
                       else model_section["norm_type"])
        model = MPTForCausalLM(MPTConfig(**section)).cuda()
        loss_of = lambda tokens: model(input_ids=tokens, labels=tokens).loss  # noqa: E731
    else:
        raise SystemExit(f"run {spec!r}: the model is 'reference' or 'ours'")
    params = list(model.parameters())
    opt = DecoupledLionW(params, lr=1e-5) if "lion" in options else torch.optim.AdamW(params, lr=1e-4, fused=True)
    return model, torch.compile(loss_of), opt, "clip" in options


def run(spec: str, args, model_section: dict) -> dict:
    model, loss_of, opt, clip = build(spec, model_section, args.seq)
    n_params = sum(p.numel() for p in model.parameters())
    steps = args.warmup + args.steps + (3 if args.profile else 0)
    tokens = torch.randint(1, 50277, (steps, args.microbatch, args.seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times, profiler = [], None
    for i in range(steps):
        if args.profile and i == args.warmup + args.steps:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_of(tokens[i])
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[args.warmup:args.warmup + args.steps])
    tok_s = args.microbatch * args.seq / step_s
    result = {"name": spec, "microbatch": args.microbatch, "tokens_per_sec_per_gpu": tok_s,
              "mfu": mfu(tok_s, n_params, model_section["n_layers"], model_section["d_model"], args.seq),
              "peak_mem_gib": peak_mem_gib(), "n_params": n_params, "step_s_median": step_s}
    if profiler is not None:
        torch.cuda.synchronize()
        profiler.__exit__(None, None, None)
        groups, kernels = kernel_times(profiler, 3)
        result.update(kernel_ms_per_step=groups, top_kernels_ms_per_step=top_kernels(kernels))
    del model, loss_of, opt
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="MODEL[:OPTIONS], e.g. reference ours ours:lion,clip")
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--microbatch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="kernel time by group over 3 more steps")
    parser.add_argument("--json", help="append the results as one JSON line to this file")
    args = parser.parse_args()
    model_section = yaml.safe_load((RECIPES / f"mpt-{args.preset}.yaml").read_text())["model"]
    model_section["max_seq_len"] = args.seq
    model_section.pop("name")
    results = []
    for spec in args.runs:
        results.append(run(spec, args, model_section))
        r = results[-1]
        print(f"{r['name']:24s} mb {r['microbatch']:3d} {r['tokens_per_sec_per_gpu']:8.0f} tok/s "
              f"{100 * r['mfu']:5.1f}% MFU {r['peak_mem_gib']:6.1f} GiB", flush=True)
    print(f"\npreset {args.preset}, seq {args.seq}, {torch.cuda.get_device_name()}")
    for r in results:
        print(f"{r['name']:24s} {r['tokens_per_sec_per_gpu']:8.0f} tok/s {100 * r['mfu']:5.1f}% "
              f"vs {results[0]['name']}: {r['tokens_per_sec_per_gpu'] / results[0]['tokens_per_sec_per_gpu']:.3f}")
    for r in filter(lambda r: "kernel_ms_per_step" in r, results):
        print_profile(r)
    if args.json:
        append_json(args.json, {"args": vars(args), "card": torch.cuda.get_device_name(), "results": results})


if __name__ == "__main__":
    main()
