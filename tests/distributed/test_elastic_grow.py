"""Elastic resume onto more ranks than wrote a sharded checkpoint: 1 rank writes one (FSDP2 on a 1-rank
mesh: the 2-rank run's step-4 checkpoint resumed on 1 rank goes on saving sharded checkpoints of one
rank), 2 ranks resume it. Each rank's RNG state and the data-mix counts are single checkpoint items
(not one key per rank that wrote them), so the 2 ranks find every key they ask for.

The losses continue the uninterrupted 2-rank run within float32 rounding, as in test_elastic.py (the same
global batches; the reductions of the 1-rank steps differ in order): allowed 1e-5 relative. The step-4
checkpoint is made to look saved before data_mix_monitor kept its counts: it still loads, the counts
start again from 0 there, and from then on they are checkpointed."""
import pickle

import pytest

from llmtrain.callbacks.data_mix import COUNTS_KEY
from tests.distributed.launch import NCN2, Launch, records, resume_from
from tests.distributed.test_elastic import assert_continues

pytestmark = pytest.mark.slow


def saved_without(checkpoint, key: str) -> None:
    """Drop `key` from a sharded checkpoint's DCP index, as if the run that saved it had no such state."""
    index = checkpoint / ".metadata"
    metadata = pickle.loads(index.read_bytes())
    del metadata.state_dict_metadata[key], metadata.planner_data[key]
    metadata.storage_data = {i: info for i, info in metadata.storage_data.items() if i.fqn != key}
    index.write_bytes(pickle.dumps(metadata))


def counts(record: dict) -> dict:
    return {k: v for k, v in record.items() if k.startswith("data/")}


def test_sharded_checkpoint_of_1_rank_resumes_on_2_ranks(tmp_path, shards, one_node):
    ref = {r["step"]: r for r in records(one_node) if "loss" in r}
    one = resume_from(one_node, "ep0-ba4", tmp_path / "one_rank")
    saved_without(one / "checkpoints" / "ep0-ba4", COUNTS_KEY)
    on_one = Launch(one, shards, ["fsdp_config={}", NCN2, "autoresume=true"]).new_records()
    assert_continues(on_one, one_node, 5)
    assert [counts(r) for r in on_one] == [{k: ref[r["step"]][k] - ref[4][k] for k in counts(r)} for r in on_one]
    assert sorted(p.name for p in (one / "checkpoints" / "ep0-ba6").iterdir()) == [".metadata", "__0_0.distcp"]

    two = resume_from(one, "ep0-ba6", tmp_path / "two_ranks")
    on_two = Launch(two, shards, ["fsdp_config={}", NCN2, "autoresume=true"], nproc=2).new_records()
    assert_continues(on_two, one_node, 7)
    assert [counts(r) for r in on_two] == [counts(r) for r in on_one[2:]] and len(counts(on_two[0])) == 4
    assert sorted(p.name for p in (two / "checkpoints" / "ep1-ba8").iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]
