"""Reading MDS shards from S3 with DataLoader workers: every read is complete and exact.

Regression for forked workers sharing the main process's boto3 keep-alive socket (see
llmtrain/data/remote.py): without `worker_init_fn`, about 1 read in 3 here hung or failed with
zstd / "Relative sample index" errors.
"""
import shutil
import tempfile
import time

import numpy as np
import pytest
import torch
from streaming import MDSWriter, StreamingDataLoader, StreamingDataset

from llmtrain.data.remote import worker_init_fn

SAMPLES, TOKENS = 2000, 64
READS = 20


def sample_tokens(i: int) -> np.ndarray:
    """Sample i's tokens: starts with i, the rest a function of i too, so any mix-up shows."""
    return ((np.arange(TOKENS) * 31 + i) % 65536).astype(np.uint16)


def write_numbered_shards(remote: str, samples: int = SAMPLES) -> None:
    """MDS zstd shards of about 125 samples each (many shards: many concurrent downloads)."""
    with MDSWriter(out=remote, columns={"tokens": "ndarray:uint16"}, compression="zstd",
                   size_limit=1 << 14) as writer:
        for i in range(samples):
            writer.write({"tokens": sample_tokens(i)})


def read_all(remote: str, workers: int = 2, init_fn=worker_init_fn, samples: int = SAMPLES) -> float:
    """Read every sample into a fresh local dir; raise unless each is there once, intact. Returns seconds."""
    start = time.monotonic()
    local = tempfile.mkdtemp(prefix="s3-read-")
    try:
        dataset = StreamingDataset(remote=remote, local=local, shuffle=False, batch_size=8)
        # timeout: a worker waiting on a response it will never get fails the read instead of hanging.
        loader = StreamingDataLoader(dataset, batch_size=8, num_workers=workers, worker_init_fn=init_fn,
                                     timeout=30 if workers else 0)
        got = torch.cat([batch["tokens"] for batch in loader]).numpy()
    finally:
        shutil.rmtree(local, ignore_errors=True)
    order = np.argsort(got[:, 0], kind="stable")
    expected = np.stack([sample_tokens(i) for i in range(samples)])
    if got.shape != expected.shape or not np.array_equal(got[order], expected):
        raise AssertionError(f"read {len(got)} samples, not the {samples} written, exactly once each")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def remote(s3_server):
    remote = f"s3://{s3_server.make_bucket()}/numbered"
    write_numbered_shards(remote)
    return remote


def test_each_worker_gets_its_own_connection(remote, tmp_path):
    """The hazard is real (the main process holds a client after reading index.json) and fixed in workers."""
    dataset = StreamingDataset(remote=remote, local=str(tmp_path / "cache"), shuffle=False, batch_size=8)
    assert dataset.streams[0]._downloader._s3_client is not None  # connected while building the dataset
    seen = tmp_path / "workers"
    seen.mkdir()

    def probe(worker_id):
        worker_init_fn(worker_id)
        downloader = torch.utils.data.get_worker_info().dataset.streams[0]._downloader
        (seen / str(worker_id)).write_text(str(downloader._s3_client is None))

    loader = StreamingDataLoader(dataset, batch_size=8, num_workers=2, worker_init_fn=probe, timeout=30)
    assert sum(len(batch["tokens"]) for batch in loader) == SAMPLES
    assert sorted((p.name, p.read_text()) for p in seen.iterdir()) == [("0", "True"), ("1", "True")]


@pytest.mark.slow
def test_repeated_reads_with_two_workers_are_exact(remote):
    failures = []
    for attempt in range(READS):  # a fresh StreamingDataset, local dir and pair of workers each time
        try:
            read_all(remote)
        except Exception as err:  # count every failure, then report them all
            failures.append(f"read {attempt}: {type(err).__name__}: {str(err).splitlines()[-1][:200]}")
    assert not failures, f"{len(failures)} of {READS} reads failed:\n" + "\n".join(failures)
