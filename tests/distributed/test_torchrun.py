"""scripts/train.py under torchrun across 2 loopback nodes (`--nnodes 2 --node_rank 0|1`).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and GROUP_RANK but no NODE_RANK, which
Composer reads once torch.distributed is up (loading a full checkpoint, autoresume): without
llmtrain.distributed.adopt_torchrun_env this run stops at start-up with MissingEnvironmentError."""
import pytest

from tests.distributed.launch import NCN2, Launch, records, require_private_shm

pytestmark = pytest.mark.slow


def test_torchrun_two_nodes_load_full_checkpoint(tmp_path, shards, one_rank):
    """DDP (no fsdp_config) on 2 nodes x 1 rank, from the 1-process run's full checkpoint at step 4: it
    continues that run. torchrun sets OMP_NUM_THREADS=1 (other float sums on CPU) and 2 ranks add
    gradients in another order: float32 rounding, as in test_elastic.py."""
    require_private_shm()
    ckpt = one_rank / "checkpoints" / "ep0-ba4-rank0.pt"
    Launch(tmp_path, shards, [f"load_path={ckpt}", NCN2], nodes=2, torchrun=True)
    ref = {r["step"]: r for r in records(one_rank)}
    new = records(tmp_path)
    assert [r["step"] for r in new] == [5, 6, 7, 8]
    for r in new:
        assert r["loss"] == pytest.approx(ref[r["step"]]["loss"], rel=1e-5), (r["step"], r["loss"], ref[r["step"]]["loss"])
    assert (tmp_path / "checkpoints" / "ep1-ba8-rank0.pt").is_file()
