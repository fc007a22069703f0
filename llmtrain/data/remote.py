"""Give every DataLoader worker its own object-store connection.

Why: each streaming `Stream` keeps one downloader, and the S3 downloader makes its boto3 client on
its first download. The first download is `index.json`, done by the main process while the
StreamingDataset is built, so that client then holds a pooled keep-alive TCP socket. DataLoader
workers are forked after that and inherit the client and the socket. Two workers then send requests
down one connection and read each other's responses: a worker stores shard B's bytes as shard A
(zstd "Src size is incorrect", "Relative sample index ... not present in shard"), or waits forever
for a response the other worker read (a hang). streaming drops the client when a downloader is
pickled (spawn), but fork copies it as it is.

Use: `DataLoader(..., worker_init_fn=worker_init_fn)` for any loader over a StreamingDataset.

Outages: what a read does while the store is down is llmtrain/retry.py's policy, the one checkpoint uploads
follow too.
"""
from __future__ import annotations

import torch
from streaming.base.storage import CloudDownloader


def fresh_downloaders(dataset) -> None:
    """Replace each stream's downloader with an unconnected one, in the process that will download.

    A new downloader rather than `clean_up()`: some downloaders' clean_up closes the connection
    (SFTP sends a disconnect), which would end it for the parent too; dropping our copy does not.
    """
    for stream in getattr(dataset, "streams", ()):
        if not hasattr(stream, "_downloader"):  # streaming's internals moved: fail loudly, not silently
            raise RuntimeError("streaming.Stream has no _downloader; update llmtrain/data/remote.py "
                               "for this mosaicml-streaming version")
        stream._downloader = CloudDownloader.get(stream.remote)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: this worker downloads over its own connection."""
    fresh_downloaders(torch.utils.data.get_worker_info().dataset)
