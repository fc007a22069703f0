"""Optimizer step time on MPT-1B-shaped parameters: our foreach DecoupledLionW vs lion-pytorch's
per-parameter update (and its Triton kernel), with fused AdamW as the familiar reference.

    python benchmarks/bench_optim.py [--d-model 2048 --n-layers 24 --vocab 50432 --steps 50]

Prints one row per optimizer: median ms per step and the ratio to lion-pytorch's per-parameter path.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from lion_pytorch import Lion

from llmtrain.optim import DecoupledLionW


def mpt_param_shapes(d_model: int, n_layers: int, vocab: int, expansion: int = 4) -> list[tuple[int, ...]]:
    """The parameter shapes of an MPT with no biases and tied embeddings."""
    block = [(d_model,), (3 * d_model, d_model), (d_model, d_model), (d_model,),
             (expansion * d_model, d_model), (d_model, expansion * d_model)]
    return [(vocab, d_model)] + block * n_layers + [(d_model,)]


def time_steps(make_opt, shapes, device, steps: int) -> float:
    params = [torch.nn.Parameter(0.02 * torch.randn(s, device=device)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make_opt(params)
    times = []
    for i in range(steps + 5):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 5:  # warm-up: state allocation, kernel compilation
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=2048)
    parser.add_argument("--n-layers", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=50432)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = mpt_param_shapes(args.d_model, args.n_layers, args.vocab)
    n_params = sum(torch.Size(s).numel() for s in shapes)
    kw = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)
    candidates = {
        "lion-pytorch per-parameter (baseline)": lambda p: Lion(p, decoupled_weight_decay=True, **kw),
        "llmtrain DecoupledLionW foreach": lambda p: DecoupledLionW(p, **kw),
    }
    if device == "cuda":
        candidates["lion-pytorch triton"] = lambda p: Lion(p, decoupled_weight_decay=True, use_triton=True, **kw)
        candidates["torch AdamW fused (reference)"] = lambda p: torch.optim.AdamW(p, fused=True, **kw)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"{len(shapes)} tensors, {n_params / 1e9:.3f} B parameters, fp32, on {name}")
    results = {label: time_steps(make, shapes, device, args.steps) for label, make in candidates.items()}
    base = results["lion-pytorch per-parameter (baseline)"]
    print(f"{'optimizer':42s} {'ms/step':>9s} {'vs baseline':>12s}")
    for label, ms in results.items():
        print(f"{label:42s} {ms:9.2f} {base / ms:11.2f}x")


if __name__ == "__main__":
    main()
