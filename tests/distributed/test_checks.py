"""The start-up checks and settings of llmtrain.distributed, in this process (no ranks launched): the
launched runs are tests/distributed/test_*.py; these cover the combinations too slow to launch each."""
import os

import pytest

from llmtrain.distributed import (ResumeSource, adopt_torchrun_env, build_parallelism_config,
                                  check_multinode_autoresume, check_resume_format, hybrid_shard_config,
                                  validate_fsdp_section)
from llmtrain.errors import UserError

SHARDED = ResumeSource("autoresume's /ckpt/ep0-ba4", True)
FULL = ResumeSource("autoresume's /ckpt/ep0-ba4-rank0.pt", False)


def test_checkpoint_format_against_state_dict_type():
    check_resume_format(validate_fsdp_section({}), SHARDED)
    check_resume_format(validate_fsdp_section({"state_dict_type": "full"}), FULL)
    check_resume_format(validate_fsdp_section({}), None)
    with pytest.raises(UserError, match=r"^fsdp_config\.state_dict_type: 'sharded' cannot load a full \(single-file\) "
                                        r"checkpoint \(autoresume's /ckpt/ep0-ba4-rank0\.pt\); set fsdp_config\."
                                        r"state_dict_type: full for this run"):
        check_resume_format(validate_fsdp_section({}), FULL)
    with pytest.raises(UserError, match=r"^fsdp_config\.state_dict_type: 'full' cannot load a sharded checkpoint "
                                        r"\(autoresume's /ckpt/ep0-ba4\); set fsdp_config\.state_dict_type: sharded"):
        check_resume_format(validate_fsdp_section({"state_dict_type": "full"}), SHARDED)


def test_one_rank_runs_fsdp_only_to_load_a_sharded_checkpoint():
    # No process group here: the world is 1 rank.
    assert build_parallelism_config({}, "cpu") is None
    assert build_parallelism_config({}, "cpu", FULL) is None  # a full checkpoint loads unsharded
    assert build_parallelism_config(None, "cpu", FULL) is None
    fsdp = build_parallelism_config({"activation_checkpointing": True}, "cpu", SHARDED)["fsdp"]
    assert fsdp.state_dict_type == "sharded" and fsdp.activation_checkpointing and fsdp.reshard_after_forward
    with pytest.raises(UserError, match=r"^fsdp_config: not set, but only FSDP loads a sharded checkpoint "
                                        r"\(autoresume's /ckpt/ep0-ba4\); add fsdp_config: \{\}"):
        build_parallelism_config(None, "cpu", SHARDED)


def test_hybrid_shard_config_makes_composer_build_a_2d_mesh():
    """Composer builds its mesh from these two degrees (-1: the rest of the world), ignoring device_mesh."""
    config = hybrid_shard_config(4, reshard_after_forward=True)
    assert (config.data_parallel_replicate_degree, config.data_parallel_shard_degree) == (4, -1)
    from composer.utils.parallelism import FSDP2Config
    assert isinstance(config, FSDP2Config) and FSDP2Config().data_parallel_replicate_degree is None


@pytest.mark.parametrize("autoresume, save_folder, sharded, world, local, fails", [
    (True, "/shared/ckpt", False, 16, 8, True),       # full checkpoints, 2 nodes: Composer's signal-file race
    (True, "/shared/ckpt", True, 16, 8, False),       # sharded: another code path
    (True, "/shared/ckpt", False, 8, 8, False),       # one node
    (False, "/shared/ckpt", False, 16, 8, False),     # no autoresume (load_path uses per-node temp folders)
    (True, "s3://bucket/ckpt", False, 16, 8, False),  # not a folder the nodes share
    (True, None, False, 16, 8, False),
])
def test_multinode_autoresume_of_full_checkpoints(autoresume, save_folder, sharded, world, local, fails):
    if not fails:
        check_multinode_autoresume(autoresume, save_folder, sharded, world, local)
        return
    with pytest.raises(UserError, match=r"^autoresume: Composer 0\.32\.1 cannot autoresume full checkpoints on 2 nodes "
                                        r"from a local save_folder \(/shared/ckpt\); use fsdp_config"):
        check_multinode_autoresume(autoresume, save_folder, sharded, world, local)


def test_torchrun_node_rank(monkeypatch):
    monkeypatch.setenv("NODE_RANK", "0")
    monkeypatch.delenv("NODE_RANK")  # recorded: the test's own os.environ writes are undone too
    monkeypatch.setenv("GROUP_RANK", "3")
    adopt_torchrun_env()
    assert os.environ["NODE_RANK"] == "3"
    monkeypatch.setenv("NODE_RANK", "1")  # set by Composer's launcher or the user: kept
    adopt_torchrun_env()
    assert os.environ["NODE_RANK"] == "1"
