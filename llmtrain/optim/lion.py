"""DecoupledLionW: LION with weight decay decoupled from the learning rate.

    p ← p · (1 − (lr / initial_lr) · wd)            decay follows the schedule, not lr itself
    p ← p − lr · sign(β1·m + (1 − β1)·g)
    m ← β2·m + (1 − β2)·g

lion-pytorch's `Lion(decoupled_weight_decay=True)` has exactly these semantics, its constructor and
its state layout (`exp_avg`), so we subclass it. Its `step` updates one parameter at a time (a handful
of kernel launches each, hundreds of parameters), and its Triton kernel crashes on FSDP2 DTensor
parameters; so `step` here runs the same update as multi-tensor `torch._foreach_*` calls, a few
launches per group. The update is elementwise, so on FSDP2 DTensors it runs on each rank's local
shards (`to_local()`, which shares storage): exact, and free of DTensor dispatch (which also lacks
some foreach ops, e.g. `_foreach_sign_` in torch 2.7).
On CUDA the default is lion-pytorch's fused Triton kernel, one launch per (local) tensor that reads
p, g, m once and writes p, m once — the foreach path makes ~6 passes over memory and, at the 1B scale
on an H100, is no faster than the per-parameter path (docs/performance.md). Handing that kernel the
local shards, not DTensors, is what keeps it from crashing under FSDP2.
`foreach=False` keeps lion-pytorch's own per-parameter update, as a reference and for benchmarks.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional

import torch
from lion_pytorch import Lion
from torch.distributed.tensor import DTensor


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


class DecoupledLionW(Lion):
    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, foreach: bool = True, fused: bool = True):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                         use_triton=False, decoupled_weight_decay=True)
        self.foreach = foreach
        self.fused = fused  # applies to CUDA tensors only

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        if not self.foreach:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # foreach kernels need one device and dtype per call
            buckets: dict[tuple, tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                local = _local(p)
                params, grads, exp_avgs = buckets[(local.device, local.dtype)]
                params.append(local)
                grads.append(_local(p.grad))
                exp_avgs.append(_local(state["exp_avg"]))
            for (device, _), (params, grads, exp_avgs) in buckets.items():
                if self.fused and device.type == "cuda":
                    self._update_fused(params, grads, exp_avgs, group)
                else:
                    self._update(params, grads, exp_avgs, group)
        return loss

    def _update_fused(self, params, grads, exp_avgs, group) -> None:
        from lion_pytorch.triton import update_fn  # imports triton: only where a GPU step needs it

        beta1, beta2 = group["betas"]
        wd = group["weight_decay"] / self._init_lr  # its kernel decays by lr * wd: this makes it lr/initial_lr * wd
        for p, g, m in zip(params, grads, exp_avgs):
            if p.is_contiguous() and g.is_contiguous() and m.is_contiguous():
                update_fn(p, g, m, group["lr"], wd, beta1, beta2)
            else:  # the kernel indexes flat memory
                self._update([p], [g], [m], group)

    def _update(self, params, grads, exp_avgs, group) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr / self._init_lr * wd)
        update = torch._foreach_mul(exp_avgs, beta1)
        torch._foreach_add_(update, grads, alpha=1.0 - beta1)
        torch._foreach_sign_(update)
        torch._foreach_add_(params, update, alpha=-lr)
        torch._foreach_mul_(exp_avgs, beta2)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta2)
