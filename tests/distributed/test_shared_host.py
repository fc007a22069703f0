"""Two node ranks of one job on one host, without namespaces: two Composer launchers
(`--world_size 2 --node_rank 0|1 -n 1`) sharing /dev/shm, TMPDIR and the recipe's streaming cache root.
Each node's local leader takes its own shared-memory prefix (llmtrain/data/shm_prefix.py) and caches in
its own `<local>/<run_name>/node<N>` (llmtrain/data/run_cache.py); before, the second node failed with
"Reused local directory" or FileExistsError: '/000000_locals'."""
import pytest

from tests.distributed.launch import NCN2, STEPS, Launch, records

pytestmark = pytest.mark.slow


def test_two_node_ranks_on_one_host_train_like_two_nodes(tmp_path, shards, two_nodes):
    Launch(tmp_path, shards, ["fsdp_config={}", NCN2], nodes=2, own_host=False)
    shared, separate = records(tmp_path), records(two_nodes)
    assert [r["step"] for r in shared] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in shared] == [r["loss"] for r in separate]  # bit-identical
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "ep1-ba8").iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]
    for stream in ("python_stdlib", "licenses"):
        assert sorted(p.name for p in (tmp_path / "cache" / stream / "tiny").iterdir()) == ["node0", "node1"]
