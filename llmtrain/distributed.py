"""`fsdp_config:` (llm-foundry's FSDP1 keys, or FSDP2's own) → Composer's FSDP2 parallelism config.

llm-foundry recipes speak FSDP1. Each key maps to its FSDP2 meaning: FULL_SHARD reshards parameters
after forward, SHARD_GRAD_OP keeps them gathered until backward, HYBRID_SHARD shards within a node and
replicates across nodes (a 2-D mesh). Knobs that FSDP2 does by construction (`use_orig_params`,
`limit_all_gathers`, prefetching, `sync_module_states`) are accepted and have no effect; knobs with no
FSDP2 counterpart in Composer are refused with the reason. The section's schema and its checks are
llmtrain/config.py's (`FSDPConfig`); the CPU/gloo workarounds are llmtrain/gloo.py's.
"""
from __future__ import annotations

import os
from typing import Optional

from composer.utils import dist, parse_uri
from composer.utils.parallelism import FSDP2Config

from llmtrain.checkpoint.resume import ResumePlan, ResumeSource
from llmtrain.config import FSDPConfig, validate_fsdp_section
from llmtrain.errors import UserError
from llmtrain.gloo import backend, gloo_hsdp_all_reduce


def adopt_torchrun_env() -> None:
    """torchrun names the node's rank GROUP_RANK and sets no NODE_RANK; Composer reads NODE_RANK and, once
    torch.distributed is up, raises when it is missing (autoresume and full-checkpoint loads ask for it).
    Call before anything asks Composer for the node rank."""
    if "NODE_RANK" not in os.environ and "GROUP_RANK" in os.environ:
        os.environ["NODE_RANK"] = os.environ["GROUP_RANK"]


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
    (see llmtrain/checkpoint/resume.py). FSDP2 runs when `fsdp_config` is set and there are 2+ ranks, or on 1 rank when
    the run resumes a sharded checkpoint (only FSDP can load one: a 1-rank mesh, DCP reshards it).
    Combinations Composer cannot load are a UserError here, before anything is built."""
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
        if backend() == "gloo":
            gloo_hsdp_all_reduce()
        return {"fsdp": hybrid_shard_config(world // local, **kwargs)}
    return {"fsdp": FSDP2Config(**kwargs)}


def check_multinode_autoresume(autoresume: bool, save_folder: Optional[str], sharded: bool, world: int,
                               local_world: int) -> None:
    """UserError for autoresume of full (unsharded) checkpoints over several nodes into a local save_folder.

    Composer 0.32.1 (Trainer._get_autoresume_checkpoint, full checkpoints only) has each node's first rank
    create and then delete `save_folder/._signal_file_node0_<random>`, one name for all nodes: on a folder
    the nodes share, the second delete fails (FileNotFoundError) and the run stops at start-up, with or
    without a checkpoint to resume; on node-local folders the other nodes never see rank 0's checkpoint.
    Sharded checkpoints take another path, and load_path a per-node temporary folder."""
    if not autoresume or not save_folder or sharded or world <= local_world or parse_uri(save_folder)[0]:
        return
    raise UserError(f"autoresume: Composer 0.32.1 cannot autoresume full checkpoints on {world // local_world} nodes "
                    f"from a local save_folder ({save_folder}); use fsdp_config (sharded checkpoints), or "
                    "autoresume: false with load_path naming the checkpoint")


def loads_sharded(parallelism: Optional[dict]) -> bool:
    """Whether a run with `parallelism` (Composer's parallelism_config) saves and loads DCP folders."""
    return parallelism is not None and parallelism["fsdp"].state_dict_type == "sharded"


def parallelism_for(cfg, device: str, plan: ResumePlan) -> Optional[dict]:
    """Composer's `parallelism_config` for `cfg` (a TrainConfig) and its resume `plan`, after the checks a
    resume needs (the plan's load_path checked against the format the run loads); call on every rank."""
    parallelism = build_parallelism_config(cfg.fsdp_config, device, plan.source)
    sharded = loads_sharded(parallelism)
    check_multinode_autoresume(cfg.autoresume, cfg.save_folder, sharded, dist.get_world_size(),
                               dist.get_local_world_size())
    plan.check_load(sharded)
    return parallelism


def hybrid_shard_config(replicas: int, **kwargs):
    """An FSDP2Config for HSDP: parameters sharded over the ranks of a node, replicated over `replicas` nodes.

    Composer 0.32.1 ignores `FSDP2Config.device_mesh`: State.__init__ overwrites it with a mesh it builds
    from the config's `data_parallel_replicate_degree` and `data_parallel_shard_degree`, which FSDP2Config
    fixes at (None, -1): a 1-D mesh over all ranks, i.e. FULL_SHARD whatever mesh is passed. This config
    reports the replicate degree, so Composer builds the 2-D mesh (data_parallel_replicate: nodes,
    data_parallel_shard: ranks per node) and fully_shard gets it."""
    config = HybridShardFSDP2Config(**kwargs)
    config.replicas = replicas
    return config


class HybridShardFSDP2Config(FSDP2Config):
    """FSDP2Config reporting `replicas` as its replicate degree (see `hybrid_shard_config`)."""
    replicas: int = 1

    @property
    def data_parallel_replicate_degree(self) -> int:
        return self.replicas
