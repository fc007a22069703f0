"""Workarounds that make FSDP2 train right on CPU ranks over gloo (tests and the CPU recipes); none of this
runs on GPUs (NCCL). Each is applied by llmtrain/distributed.py or llmtrain/train.py only where gloo needs it.

- gloo's ReduceOp.AVG reduce-scatter sums in torch 2.7 (pytorch/pytorch#162338): `gradient_average_fix`
  divides the gradients by what `gloo_reduce_scatter_avg_factor` measures.
- gloo rejects ReduceOp.AVG all-reduces, which HSDP's replicate dimension uses: `gloo_hsdp_all_reduce`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as tdist
from composer.core import Algorithm, Event

from llmtrain.errors import UserError


def backend() -> Optional[str]:
    return tdist.get_backend() if tdist.is_initialized() else None


class _GlooHSDPDist:
    """torch.distributed as FSDP2's collectives module sees it, where an HSDP all-reduce with ReduceOp.AVG
    works on gloo. FSDP2 all-reduces fp32/bf16 gradients over the replicate dimension with ReduceOp.AVG,
    which gloo rejects ("Cannot use ReduceOp.AVG with Gloo"). Here it is a SUM: the same excess as gloo's
    AVG reduce-scatter over the shard dimension (a sum too), so the gradient is off by ranks-per-node x
    nodes = the world size, the factor `gradient_average_fix` divides by. Where gloo's reduce-scatter
    averages (factor 1), the all-reduce averages as well (the input divided by the group size first)."""

    def __init__(self, dist, reduce_scatter_sums: bool):
        self._dist = dist
        self._sums = reduce_scatter_sums

    def __getattr__(self, name):
        return getattr(self._dist, name)

    def all_reduce(self, tensor, op=None, group=None, async_op=False):
        op = self._dist.ReduceOp.SUM if op is None else op
        if op == self._dist.ReduceOp.AVG and self._dist.get_backend(group) == "gloo":
            if not self._sums:
                tensor.div_(self._dist.get_world_size(group))
            op = self._dist.ReduceOp.SUM
        return self._dist.all_reduce(tensor, op=op, group=group, async_op=async_op)


def gloo_hsdp_all_reduce() -> None:
    """Make FSDP2's HSDP runnable on CPU ranks over gloo (idempotent; nothing here runs on GPUs/NCCL):
    its collectives go through `_GlooHSDPDist`, and where torch.cpu.Stream.record_event returns None
    (torch 2.7), it returns a CPU event: FSDP2 asserts an HSDP all-reduce left an event to wait on, and
    waiting on a CPU event is a no-op, like the CPU stream itself."""
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives as collectives  # private: imported here only

    if not hasattr(collectives, "dist") or not hasattr(torch.cpu, "Event"):
        raise UserError("fsdp_config.sharding_strategy: HYBRID_SHARD on CPU (gloo) is not supported with torch "
                        f"{torch.__version__}; use FULL_SHARD, or GPUs (NCCL)")
    if not isinstance(collectives.dist, _GlooHSDPDist):
        collectives.dist = _GlooHSDPDist(collectives.dist, gloo_reduce_scatter_avg_factor() != 1.0)
    if torch.cpu.Stream().record_event() is None:
        torch.cpu.Stream.record_event = lambda self: torch.cpu.Event()


def gloo_reduce_scatter_avg_factor() -> float:
    """What a ReduceOp.AVG reduce-scatter really returns over the mean: 1 where it works (NCCL);
    the world size on gloo in torch 2.7, which sums instead (pytorch/pytorch#162338)."""
    if not tdist.is_initialized() or tdist.get_backend() != "gloo" or tdist.get_world_size() == 1:
        return 1.0
    out = torch.empty(1)
    tdist.reduce_scatter_tensor(out, torch.ones(tdist.get_world_size()), op=tdist.ReduceOp.AVG)
    return out.item()


def gradient_average_fix(factor: float):
    """An algorithm dividing every gradient by `factor` once per batch, after all micro-batches and
    before anything reads the gradients. FSDP2 reduces fp32/bf16 gradients with ReduceOp.AVG, which
    gloo sums; without this a CPU run on N ranks trains with N-times gradients."""
    class GlooGradientAverage(Algorithm):
        def match(self, event, state) -> bool:
            return event == Event.AFTER_TRAIN_BATCH

        def apply(self, event, state, logger) -> None:
            for p in state.model.parameters():
                if p.grad is not None:
                    p.grad.div_(factor)

    return GlooGradientAverage()
