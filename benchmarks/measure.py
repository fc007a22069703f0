"""What the GPU benchmarks share: MFU as llm-foundry counts it, peak memory, CUDA kernel time by group
from a profiler, and one JSON line per result. Imports only torch, so every benchmark can use it."""
from __future__ import annotations

import json
from pathlib import Path

import torch

RECIPES = Path(__file__).resolve().parents[1] / "yamls"
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops() -> float:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((v for k, v in PEAK_FLOPS.items() if k in name), float("nan"))


def mfu(tokens_per_sec: float, n_params: int, n_layers: int, d_model: int, seq: int) -> float:
    return tokens_per_sec * (6 * n_params + 12 * n_layers * d_model * seq) / peak_flops()


def peak_mem_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


KERNEL_GROUPS = [  # first match wins; names as CUDA kernels show them in the profiler
    ("attention", ("flex_attention", "attn_fwd", "attn_bwd", "_fwd_kernel", "_bwd_", "flash", "fmha", "sdpa")),
    ("optimizer", ("update_fn_kernel", "foreach", "multi_tensor", "clip", "norm_kernel")),
    ("matmul", ("gemm", "nvjet", "cutlass", "sm90_xmma", "matmul", "cublas")),
]


def kernel_group(name: str) -> str:
    lowered = name.lower()
    return next((group for group, keys in KERNEL_GROUPS if any(k in lowered for k in keys)), "other")


def kernel_times(profiler: torch.profiler.profile, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """CUDA kernel ms per step, by group and by kernel name, from a finished profiler."""
    groups: dict[str, float] = {}
    kernels: dict[str, float] = {}
    for event in profiler.events():  # kernels only: CPU ops would count their kernels again
        if event.device_type == torch.autograd.DeviceType.CUDA:
            ms = event.time_range.elapsed_us() / 1e3 / steps
            group = kernel_group(event.name)
            groups[group] = groups.get(group, 0.0) + ms
            kernels[event.name] = kernels.get(event.name, 0.0) + ms
    return groups, kernels


def top_kernels(kernels: dict[str, float], n: int = 25) -> list:
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:n]
    return [[kernel_group(name), name[:120], round(ms, 2)] for name, ms in top]


def print_profile(result: dict) -> None:
    groups = result["kernel_ms_per_step"]
    total = sum(groups.values())
    shares = ", ".join(f"{g} {ms:.1f} ms ({100 * ms / total:.0f}%)" for g, ms in sorted(groups.items(), key=lambda kv: -kv[1]))
    print(f"kernel time per step ({result['name']}): {total:.1f} ms of {1e3 * result['step_s_median']:.1f} ms wall: {shares}")
    for group, name, ms in result["top_kernels_ms_per_step"]:
        print(f"  {ms:7.2f} ms  {group:9s} {name}")


def append_json(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
