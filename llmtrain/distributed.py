"""`fsdp_config:` (llm-foundry's FSDP1 keys, or FSDP2's own) → Composer's FSDP2 parallelism config.

llm-foundry recipes speak FSDP1. Each key maps to its FSDP2 meaning: FULL_SHARD reshards parameters
after forward, SHARD_GRAD_OP keeps them gathered until backward, HYBRID_SHARD shards within a node and
replicates across nodes (a 2-D mesh). Knobs that FSDP2 does by construction (`use_orig_params`,
`limit_all_gathers`, prefetching, `sync_module_states`) are accepted and have no effect; knobs with no
FSDP2 counterpart in Composer are refused with the reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
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


def adopt_torchrun_env() -> None:
    """torchrun names the node's rank GROUP_RANK and sets no NODE_RANK; Composer reads NODE_RANK and, once
    torch.distributed is up, raises when it is missing (autoresume and full-checkpoint loads ask for it).
    Call before anything asks Composer for the node rank."""
    if "NODE_RANK" not in os.environ and "GROUP_RANK" in os.environ:
        os.environ["NODE_RANK"] = os.environ["GROUP_RANK"]


@dataclass(frozen=True)
class ResumeSource:
    """The checkpoint a run starts from: `where` names it for messages, `sharded` is its format (a DCP
    folder, written with FSDP sharded state dicts, or one full .pt file)."""
    where: str
    sharded: bool


def _load_path_format(load_path: str, run_name: str) -> Optional[bool]:
    """True for a sharded checkpoint, False for a full file, None when it cannot be told (a missing path:
    checkpoint.check_load_path reports it)."""
    from composer.utils import format_name_with_dist, maybe_create_object_store_from_uri, parse_uri

    path = format_name_with_dist(load_path, run_name)
    backend, _, key = parse_uri(path)
    if not backend:
        return True if Path(path).is_dir() else False if Path(path).is_file() else None
    try:
        keys = maybe_create_object_store_from_uri(path).list_objects(key.rstrip("/"))
    except Exception:  # no such bucket, no credentials, a scheme without listing: reported when loading
        return None
    name = key.rstrip("/")
    if f"{name}/.metadata" in keys:
        return True
    return False if name in keys else None


def resume_source(cfg) -> Optional[ResumeSource]:
    """What this run (`cfg`: a TrainConfig) loads before training: the checkpoint autoresume finds in
    save_folder, else load_path; None for a fresh start. Rank 0 looks (repairing `latest` as
    checkpoint.prepare_load does), every rank gets the answer or the same UserError."""
    from composer.utils import dist, format_name_with_dist

    from llmtrain import checkpoint

    found: dict = {}
    if dist.get_global_rank() == 0:
        try:
            if cfg.autoresume and cfg.save_folder:
                folder = format_name_with_dist(cfg.save_folder, cfg.run_name).rstrip("/")
                name = checkpoint.repair_latest(folder)
                if name is not None:
                    found["source"] = ResumeSource(f"autoresume's {folder}/{name}", not name.endswith(".pt"))
            if "source" not in found and cfg.load_path:
                sharded = _load_path_format(cfg.load_path, cfg.run_name)
                if sharded is not None:
                    found["source"] = ResumeSource(f"load_path {cfg.load_path}", sharded)
        except UserError as err:
            found["error"] = str(err)
    found = dist.all_gather_object(found)[0]
    if "error" in found:
        raise UserError(found["error"])
    return found.get("source")


def check_resume_format(cfg: FSDPConfig, resume: Optional[ResumeSource]) -> None:
    if resume is None:
        return
    if resume.sharded and cfg.state_dict_type == "full":
        raise UserError(f"fsdp_config.state_dict_type: 'full' cannot load a sharded checkpoint ({resume.where}); "
                        "set fsdp_config.state_dict_type: sharded (the default)")
    if not resume.sharded and cfg.state_dict_type == "sharded":
        raise UserError(f"fsdp_config.state_dict_type: 'sharded' cannot load a full (single-file) checkpoint "
                        f"({resume.where}); set fsdp_config.state_dict_type: full for this run (its checkpoints "
                        "are then full too), or resume on 1 rank")


def build_parallelism_config(section: Optional[dict], device: str,
                             resume: Optional[ResumeSource] = None) -> Optional[dict]:
    """Composer's `parallelism_config`, or None to run unsharded. `resume`: the checkpoint the run loads
    (see `resume_source`). FSDP2 runs when `fsdp_config` is set and there are 2+ ranks, or on 1 rank when
    the run resumes a sharded checkpoint (only FSDP can load one: a 1-rank mesh, DCP reshards it).
    Combinations Composer cannot load are a UserError here, before anything is built."""
    from composer.utils import dist

    if section is None:
        if resume is not None and resume.sharded:
            raise UserError(f"fsdp_config: not set, but only FSDP loads a sharded checkpoint ({resume.where}); "
                            "add fsdp_config: {} (it runs on any number of ranks, 1 included)")
        return None
    cfg = validate_fsdp_section(section)
    world = dist.get_world_size()
    if world == 1 and not (resume is not None and resume.sharded):
        return None
    check_resume_format(cfg, resume)
    reshard = cfg.reshard_after_forward
    if reshard is None:
        reshard = cfg.sharding_strategy in ("FULL_SHARD", "HYBRID_SHARD")
    kwargs = dict(reshard_after_forward=reshard, activation_checkpointing=cfg.activation_checkpointing,
                  activation_cpu_offload=cfg.activation_cpu_offload, state_dict_type=cfg.state_dict_type,
                  load_monolith_rank0_only=cfg.load_monolith_rank0_only, mixed_precision=cfg.mixed_precision,
                  verbose=cfg.verbose)
    if cfg.sharding_strategy in ("HYBRID_SHARD", "_HYBRID_SHARD_ZERO2") and world > 1:
        local = dist.get_local_world_size()
        if world % local:
            raise UserError(f"fsdp_config.sharding_strategy: {cfg.sharding_strategy} needs the same number of ranks "
                            f"on every node, got {world} ranks with {local} on this node; use FULL_SHARD")
        if _backend() == "gloo":
            _gloo_hsdp_all_reduce()
        return {"fsdp": hybrid_shard_config(world // local, **kwargs)}
    from composer.utils.parallelism import FSDP2Config
    return {"fsdp": FSDP2Config(**kwargs)}


def check_multinode_autoresume(autoresume: bool, save_folder: Optional[str], sharded: bool, world: int,
                               local_world: int) -> None:
    """UserError for autoresume of full (unsharded) checkpoints over several nodes into a local save_folder.

    Composer 0.32.1 (Trainer._get_autoresume_checkpoint, full checkpoints only) has each node's first rank
    create and then delete `save_folder/._signal_file_node0_<random>`, one name for all nodes: on a folder
    the nodes share, the second delete fails (FileNotFoundError) and the run stops at start-up, with or
    without a checkpoint to resume; on node-local folders the other nodes never see rank 0's checkpoint.
    Sharded checkpoints take another path, and load_path a per-node temporary folder."""
    from composer.utils import parse_uri

    if not autoresume or not save_folder or sharded or world <= local_world or parse_uri(save_folder)[0]:
        return
    raise UserError(f"autoresume: Composer 0.32.1 cannot autoresume full checkpoints on {world // local_world} nodes "
                    f"from a local save_folder ({save_folder}); use fsdp_config (sharded checkpoints), or "
                    "autoresume: false with load_path naming the checkpoint")


def parallelism_for(cfg, device: str) -> Optional[dict]:
    """Composer's `parallelism_config` for `cfg` (a TrainConfig), after the checks a multi-rank resume
    needs; call on every rank after dist init, before checkpoint.prepare_load."""
    from composer.utils import dist

    parallelism = build_parallelism_config(cfg.fsdp_config, device, resume_source(cfg))
    sharded = parallelism is not None and parallelism["fsdp"].state_dict_type == "sharded"
    check_multinode_autoresume(cfg.autoresume, cfg.save_folder, sharded, dist.get_world_size(),
                               dist.get_local_world_size())
    return parallelism


def hybrid_shard_config(replicas: int, **kwargs):
    """An FSDP2Config for HSDP: parameters sharded over the ranks of a node, replicated over `replicas` nodes.

    Composer 0.32.1 ignores `FSDP2Config.device_mesh`: State.__init__ overwrites it with a mesh it builds
    from the config's `data_parallel_replicate_degree` and `data_parallel_shard_degree`, which FSDP2Config
    fixes at (None, -1): a 1-D mesh over all ranks, i.e. FULL_SHARD whatever mesh is passed. This config
    reports the replicate degree, so Composer builds the 2-D mesh (data_parallel_replicate: nodes,
    data_parallel_shard: ranks per node) and fully_shard gets it."""
    global HybridShardFSDP2Config
    if HybridShardFSDP2Config is None:
        from composer.utils.parallelism import FSDP2Config

        class HybridShardFSDP2Config(FSDP2Config):  # made on first use: composer is imported lazily here
            replicas: int = 1

            @property
            def data_parallel_replicate_degree(self) -> int:
                return self.replicas

    config = HybridShardFSDP2Config(**kwargs)
    config.replicas = replicas
    return config


HybridShardFSDP2Config = None  # the class, once hybrid_shard_config made it


def _backend() -> Optional[str]:
    import torch.distributed as tdist
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


def _gloo_hsdp_all_reduce() -> None:
    """Make FSDP2's HSDP runnable on CPU ranks over gloo (idempotent; nothing here runs on GPUs/NCCL):
    its collectives go through `_GlooHSDPDist`, and where torch.cpu.Stream.record_event returns None
    (torch 2.7), it returns a CPU event: FSDP2 asserts an HSDP all-reduce left an event to wait on, and
    waiting on a CPU event is a no-op, like the CPU stream itself."""
    import torch
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives as collectives

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
