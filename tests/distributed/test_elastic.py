"""Elastic resume: a checkpoint written by 2 ranks resumed on 1, and one written by 1 resumed on 2, with
the global batch kept; what Composer 0.32.1 cannot load is one UserError line before training.

Across world sizes the per-step losses match the uninterrupted run's to float32 rounding, not bitwise:
the same samples make each global batch (streaming's elastic determinism, num_canonical_nodes and the
global batch fixed), but 1 rank sums the gradient of its 2 micro-batches and 2 ranks sum theirs in a
reduce-scatter, so the last bits of the update differ. Measured: <= 1e-7 relative over 4 steps; allowed:
1e-5 (as tests/test_train.py does for 2 ranks against 1)."""
import pytest

from tests.distributed.launch import NCN2, STEPS, Launch, records, resume_from

pytestmark = pytest.mark.slow
TOL = dict(rel=1e-5, abs=1e-5)


def assert_continues(new: list[dict], reference, first: int) -> None:
    ref = {r["step"]: r for r in records(reference)}
    assert [r["step"] for r in new] == list(range(first, STEPS + 1))
    for r in new:
        assert r["tokens"] == ref[r["step"]]["tokens"]
        assert r["loss"] == pytest.approx(ref[r["step"]]["loss"], **TOL), (r["step"], r["loss"], ref[r["step"]]["loss"])
    print("max relative loss difference:", max(abs(r["loss"] / ref[r["step"]]["loss"] - 1) for r in new))


def test_one_rank_matches_two_ranks(one_rank, one_node):
    """The references agree: 1 process with the whole global batch trains like 2 ranks."""
    assert_continues(records(one_rank), one_node, 1)


def test_sharded_checkpoint_of_2_ranks_resumes_on_1_rank(tmp_path, shards, one_node):
    """Only FSDP loads a sharded checkpoint: with fsdp_config, a 1-rank run that resumes one runs FSDP2 on
    a 1-rank mesh (a fresh 1-rank run stays unsharded) and DCP reshards the 2 ranks' state onto it."""
    run = resume_from(one_node, "ep0-ba4", tmp_path)
    new = Launch(run, shards, ["fsdp_config={}", NCN2, "autoresume=true"]).new_records()
    assert_continues(new, one_node, 5)
    # It goes on writing sharded checkpoints, now of one rank.
    for name in ("ep0-ba6", "ep1-ba8"):
        assert sorted(p.name for p in (run / "checkpoints" / name).iterdir()) == [".metadata", "__0_0.distcp"]


def test_full_checkpoint_of_1_rank_resumes_on_2_ranks(tmp_path, shards, one_rank):
    """A full .pt loads on 2 FSDP2 ranks with state_dict_type: full (each rank reads it and keeps its
    shards); that run's checkpoints are full files too. (With the default, sharded, it is a UserError:
    tests/distributed/test_checks.py.)"""
    run = resume_from(one_rank, "ep0-ba4-rank0.pt", tmp_path)
    new = Launch(run, shards, ["fsdp_config={state_dict_type: full}", NCN2, "autoresume=true"], nproc=2).new_records()
    assert_continues(new, one_rank, 5)
    assert (run / "checkpoints" / "ep1-ba8-rank0.pt").is_file()


@pytest.mark.parametrize("nproc, extra, message", [
    (1, [], "fsdp_config: not set, but only FSDP loads a sharded checkpoint (autoresume's {ckpt}); add "
            "fsdp_config: {{}} (it runs on any number of ranks, 1 included)"),
    (3, ["fsdp_config={}"], "global_train_batch_size: 4 does not split evenly over 3 ranks; make it a multiple of 3"),
], ids=["sharded-on-unsharded", "batch-over-3-ranks"])
def test_unloadable_resume_is_one_line_before_training(tmp_path, shards, one_node, nproc, extra, message):
    """The 2-rank run's sharded checkpoint on 1 rank without fsdp_config, and on 3 ranks (the global batch
    of 4 cannot keep its sample order there). The other format mismatches: tests/distributed/test_checks.py."""
    name = "ep0-ba4"
    run = resume_from(one_node, name, tmp_path)
    launch = Launch(run, shards, [*extra, NCN2, "autoresume=true"], nproc=nproc, ok=False)
    assert launch.errors() == ["error: " + message.format(ckpt=run / "checkpoints" / name)], launch.log
    assert not records(run)  # no step trained
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [name, "latest-rank0.pt"]
