"""Documents → scripts/data_prep.py → s3:// → the text loader (2 workers) → the same documents.

Also mid-epoch resumption over S3: the resumed loader continues at exactly the next sample.
"""
import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmtrain.data import remote as data_remote
from llmtrain.data.text import build_text_dataloader
from llmtrain.data.tokenizer import NEOX_NAME
from tests.data.corpus import make_documents, write_corpus
from tests.data.test_prep import expected_stream
from tests.data.test_text_loader import filled_to_multiple

REPO = Path(__file__).resolve().parents[2]
EOS = "<|endoftext|>"
SEQ, BATCH = 32, 4


def data_prep(inputs: Path, out: str) -> None:
    """The real CLI; S3 endpoint and credentials reach it only through the environment (s3_server's)."""
    done = subprocess.run([sys.executable, str(REPO / "scripts/data_prep.py"), str(inputs), "--out", out,
                           "--tokenizer", NEOX_NAME, "--max-seq-len", str(SEQ), "--compression", "zstd",
                           "--shard-size", "2kb"], cwd=REPO, env=os.environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def loader(neox, remote: str, local: Path, shuffle: bool = False):
    section = {"dataset": {"remote": remote, "local": str(local), "max_seq_len": SEQ, "shuffle": shuffle,
                           "shuffle_seed": 7},
               "num_workers": 2, "drop_last": False,
               "timeout": 60}  # a stuck worker fails the test instead of hanging it
    return build_text_dataloader(section, neox, BATCH).dataloader


def rows(batches) -> list[tuple[int, ...]]:
    return [tuple(ids.tolist()) for batch in batches for ids in batch["input_ids"]]


@pytest.fixture(scope="module")
def dataset(s3_server, neox, tmp_path_factory):
    """(remote URI, documents in the order data prep reads them): a zstd dataset of many shards on S3."""
    raw = tmp_path_factory.mktemp("raw")
    order = write_corpus(raw, filled_to_multiple(neox, make_documents(120, seed=21), SEQ))
    remote = f"s3://{s3_server.make_bucket()}/corpus/train"
    data_prep(raw, remote)
    bucket, prefix = remote[len("s3://"):].split("/", 1)
    assert len(s3_server.keys(bucket, prefix)) > 5  # index.json and several shards
    return remote, order


def test_text_loader_gives_workers_their_own_connection(dataset, neox, tmp_path):
    """Forked workers must not share the main process's S3 socket (llmtrain/data/remote.py)."""
    assert loader(neox, dataset[0], tmp_path / "cache").worker_init_fn is data_remote.worker_init_fn


def test_documents_round_trip_through_s3(dataset, neox, tmp_path):
    remote, order = dataset
    ids = torch.cat([batch["input_ids"] for batch in loader(neox, remote, tmp_path / "cache")])
    # Every document, in order, joined by EOS: token for token, and as text.
    assert ids.ravel().tolist() == expected_stream(neox, order)
    assert neox.decode(ids.ravel().tolist()) == EOS.join(order) + EOS


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [1, 6, 13])
def test_mid_epoch_resume_over_s3_continues_at_the_next_sample(dataset, neox, tmp_path, stop_after):
    remote, _ = dataset
    whole = rows(loader(neox, remote, tmp_path / "whole", shuffle=True))
    assert len(whole) > 13 * BATCH and len(set(whole)) == len(whole)

    interrupted = loader(neox, remote, tmp_path / "first", shuffle=True)
    batches = iter(interrupted)
    first = [next(batches) for _ in range(stop_after)]
    state = interrupted.dataset.state_dict(stop_after * BATCH, True)  # what Composer checkpoints
    del batches, interrupted
    gc.collect()

    resumed = loader(neox, remote, tmp_path / "resumed", shuffle=True)  # a new node: empty cache
    resumed.dataset.load_state_dict(state)
    assert rows(first) + rows(resumed) == whole
