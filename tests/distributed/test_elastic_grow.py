"""Elastic resume onto more ranks than wrote a sharded checkpoint: 1 rank writes one (FSDP2 on a 1-rank
mesh: the 2-rank run's step-4 checkpoint resumed on 1 rank goes on saving sharded checkpoints of one
rank), 2 ranks resume it. Each rank's RNG state, the data-mix counts and the loader position are single
checkpoint items (not one key per rank that wrote it), so the 2 ranks find every key they ask for.

The losses continue the uninterrupted 2-rank run within float32 rounding, as in test_elastic.py (the same
global batches; the reductions of the 1-rank steps differ in order): allowed 1e-5 relative."""
import pytest

from tests.distributed.launch import NCN2, Launch, records, resume_from
from tests.distributed.test_elastic import assert_continues

pytestmark = pytest.mark.slow


def test_sharded_checkpoint_of_1_rank_resumes_on_2_ranks(tmp_path, shards, one_node):
    one = resume_from(one_node, "ep0-ba4", tmp_path / "one_rank")
    assert_continues(Launch(one, shards, ["fsdp_config={}", NCN2, "autoresume=true"]).new_records(), one_node, 5)
    written = one / "checkpoints" / "ep0-ba6"
    assert sorted(p.name for p in written.iterdir()) == [".metadata", "__0_0.distcp"]  # by 1 rank

    two = resume_from(one, "ep0-ba6", tmp_path / "two_ranks")
    new = Launch(two, shards, ["fsdp_config={}", NCN2, "autoresume=true"], nproc=2).new_records()
    assert_continues(new, one_node, 7)
    assert new[-1]["data/licenses/samples"] == records(one_node)[-1]["data/licenses/samples"]  # counts continued
    assert sorted(p.name for p in (two / "checkpoints" / "ep1-ba8").iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]
