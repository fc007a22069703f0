"""`fsdp_config:` (llm-foundry's FSDP1 keys, or FSDP2's own) → Composer's FSDP2 parallelism config.

llm-foundry recipes speak FSDP1. Each key maps to its FSDP2 meaning: FULL_SHARD reshards parameters
after forward, SHARD_GRAD_OP keeps them gathered until backward, HYBRID_SHARD shards within a node and
replicates across nodes (a 2-D mesh). Knobs that FSDP2 does by construction (`use_orig_params`,
`limit_all_gathers`, prefetching, `sync_module_states`) are accepted and have no effect; knobs with no
FSDP2 counterpart in Composer are refused with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from llmtrain.errors import UserError
from llmtrain.schema import parse_section

_REFUSED = {
    "cpu_offload": "parameter CPU offload is not supported by Composer's FSDP2 path; remove it "
                   "(activation_cpu_offload: true offloads activations instead)",
    "sharded_ckpt_prefix_dir": "FSDP2 checkpoints are always torch distributed checkpoints; remove it",
}


@dataclass(frozen=True)
class FSDPConfig:
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"] = "FULL_SHARD"
    reshard_after_forward: Optional[bool] = None  # FSDP2's own knob; overrides sharding_strategy
    mixed_precision: Literal["DEFAULT", "PURE", "FULL"] = "DEFAULT"
    activation_checkpointing: bool = False
    activation_checkpointing_reentrant: bool = False  # FSDP2 checkpointing is always non-reentrant
    activation_cpu_offload: bool = False
    state_dict_type: Literal["sharded", "full"] = "sharded"
    load_monolith_rank0_only: bool = False
    verbose: bool = False
    # FSDP1 knobs that FSDP2 does by construction:
    use_orig_params: bool = True
    limit_all_gathers: bool = True
    forward_prefetch: bool = False
    backward_prefetch: Optional[str] = None
    sync_module_states: bool = False


def validate_fsdp_section(section: dict, key: str = "fsdp_config") -> FSDPConfig:
    for name, why in _REFUSED.items():
        if name in section:
            raise UserError(f"{key}.{name}: {why}")
    return parse_section(FSDPConfig, section, key)


def build_parallelism_config(section: Optional[dict], device: str) -> Optional[dict]:
    """Composer's `parallelism_config` for a multi-rank run, or None to run unsharded."""
    from composer.utils import dist
    from composer.utils.parallelism import FSDP2Config

    if section is None or dist.get_world_size() == 1:
        return None
    cfg = validate_fsdp_section(section)
    reshard = cfg.reshard_after_forward
    if reshard is None:
        reshard = cfg.sharding_strategy in ("FULL_SHARD", "HYBRID_SHARD")
    mesh = None
    if cfg.sharding_strategy in ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"):
        from torch.distributed.device_mesh import init_device_mesh
        local, world = dist.get_local_world_size(), dist.get_world_size()
        mesh = init_device_mesh("cuda" if device == "gpu" else "cpu", (world // local, local), mesh_dim_names=("replicate", "shard"))
    return {"fsdp": FSDP2Config(
        device_mesh=mesh, reshard_after_forward=reshard, activation_checkpointing=cfg.activation_checkpointing,
        activation_cpu_offload=cfg.activation_cpu_offload, state_dict_type=cfg.state_dict_type,
        load_monolith_rank0_only=cfg.load_monolith_rank0_only, mixed_precision=cfg.mixed_precision,
        verbose=cfg.verbose)}


def gloo_reduce_scatter_avg_factor() -> float:
    """What a ReduceOp.AVG reduce-scatter really returns over the mean: 1 where it works (NCCL);
    the world size on gloo in torch 2.7, which sums instead (pytorch/pytorch#162338)."""
    import torch
    import torch.distributed as tdist

    if not tdist.is_initialized() or tdist.get_backend() != "gloo" or tdist.get_world_size() == 1:
        return 1.0
    out = torch.empty(1)
    tdist.reduce_scatter_tensor(out, torch.ones(tdist.get_world_size()), op=tdist.ReduceOp.AVG)
    return out.item()


def gradient_average_fix(factor: float):
    """An algorithm dividing every gradient by `factor` once per batch, after all micro-batches and
    before anything reads the gradients. FSDP2 reduces fp32/bf16 gradients with ReduceOp.AVG, which
    gloo sums; without this a CPU run on N ranks trains with N-times gradients."""
    from composer.core import Algorithm, Event

    class GlooGradientAverage(Algorithm):
        def match(self, event, state) -> bool:
            return event == Event.AFTER_TRAIN_BATCH

        def apply(self, event, state, logger) -> None:
            for p in state.model.parameters():
                if p.grad is not None:
                    p.grad.div_(factor)

    return GlooGradientAverage()
