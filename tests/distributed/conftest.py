"""The uninterrupted runs the distributed tests compare with (8 steps, checkpoints every 2, an epoch
boundary after step 6), each trained once per session."""
from pathlib import Path

import pytest

from tests.data.corpus import write_stream_shards
from tests.distributed.launch import NCN2, SEQ, STEPS, Launch, records, require_private_shm


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return write_stream_shards(tmp_path_factory.mktemp("dist_shards"), ["python_stdlib", "licenses"], SEQ, 80)


def _trained(run: Path, shards: Path, extra: list[str], **layout) -> Path:
    Launch(run, shards, extra, **layout)
    assert [r["step"] for r in records(run)] == list(range(1, STEPS + 1))
    return run


@pytest.fixture(scope="session")
def one_node(tmp_path_factory, shards) -> Path:
    """1 node x 2 ranks, FSDP2 FULL_SHARD, sharded checkpoints."""
    return _trained(tmp_path_factory.mktemp("one_node"), shards, ["fsdp_config={}", NCN2], nproc=2)


@pytest.fixture(scope="session")
def two_nodes(tmp_path_factory, shards) -> Path:
    """2 loopback nodes x 1 rank, FSDP2 FULL_SHARD, sharded checkpoints."""
    require_private_shm()
    return _trained(tmp_path_factory.mktemp("two_nodes"), shards, ["fsdp_config={}", NCN2], nodes=2)


@pytest.fixture(scope="session")
def one_rank(tmp_path_factory, shards) -> Path:
    """1 process, unsharded, full (.pt) checkpoints; the same global batch and sample order."""
    return _trained(tmp_path_factory.mktemp("one_rank"), shards, [NCN2])
