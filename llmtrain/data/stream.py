"""`CheckedStream`: a streaming `Stream` whose faults are one line naming the stream and the file.

mosaicml-streaming on its own: gives up on a read after `download_retry` quick attempts, so a store that
restarts ends the run; checks shard files against their hashes only when `validate_hash` is set, and not at
all in a `local`-only stream; reads a truncated or wrongly indexed shard as whatever bytes are there (garbage
tokens, or an IndexError deep in a worker). Here:

  * reads retry through outages (llmtrain/retry.py, up to object_store_retry_timeout);
  * every shard file present or fetched must have the size index.json gives it;
  * a shard whose index entry carries hashes is checked against one when it is fetched, unless
    `validate_hash` says which;
  * an unreadable index.json, a shard that fails any check or cannot be decompressed is a UserError naming
    the stream's YAML key and the file, and a bad copy in the cache is removed (it is fetched again).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from streaming import Stream
from streaming.base.format import Reader
from streaming.base.format.base.reader import FileInfo
from streaming.base.hashing import get_hash
from streaming.base.world import World

from llmtrain.retry import DEFAULT_RETRY_TIMEOUT, retry_through_outage
from llmtrain.errors import UserError

# Fastest first: what a fetched shard is checked with when its index entry has hashes and validate_hash is unset.
_PREFERRED_HASHES = ("xxh3_64", "xxh64", "xxh128", "xxh3_128", "xxh32", "sha1", "md5", "sha256", "sha512")


class CheckedStream(Stream):
    """A Stream for YAML key `key` (e.g. train_loader.dataset.streams.web); its reads wait out an outage of
    the store for up to `retry_timeout` seconds (the run's object_store_retry_timeout)."""

    def __init__(self, *, key: str, retry_timeout: float = DEFAULT_RETRY_TIMEOUT, **kwargs: Any):
        super().__init__(**kwargs)
        self.key = key
        self.retry_timeout = retry_timeout

    @property
    def source(self) -> str:
        where = self.remote or self.local
        return f"{where.rstrip('/')}/{self.split}" if self.split else where

    def _local_path(self, basename: str) -> str:
        return os.path.join(self.local, self.split, basename)

    def _download_file(self, from_basename: str, to_basename: Optional[str] = None) -> str:
        if self.remote is None:  # nothing to fetch: streaming says the local file is missing
            return super()._download_file(from_basename, to_basename)
        remote = os.path.join(self.remote, self.split, from_basename)
        local = self._local_path(to_basename or from_basename)
        retry_through_outage(lambda: self._downloader.download(remote, local, self.download_timeout),
                             f"{self.key}: reading {remote}", remote, retries=self.download_retry,
                             limit=self.retry_timeout,
                             clean_up=self._downloader.clean_up,
                             first_contact=from_basename == "index.json")  # read once, as the dataset is built
        return local

    def get_shards(self, world: World, allow_unsafe_types: bool) -> list[Reader]:
        index = self._local_path("index.json")
        fix = (f"; delete this cached copy of {self.source}/index.json if that one is good, else re-run "
               "scripts/data_prep.py for this stream" if self.remote else
               "; re-run scripts/data_prep.py for this stream")
        try:
            return super().get_shards(world, allow_unsafe_types)
        except json.JSONDecodeError as err:
            raise UserError(f"{self.key}: {index} is not valid JSON ({err.msg} at line {err.lineno}){fix}") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise UserError(f"{self.key}: {index} is not an MDS index ({type(err).__name__}: {err}){fix}") from None

    def set_up_local(self, shards: list[Reader], cache_usage_per_shard) -> None:
        super().set_up_local(shards, cache_usage_per_shard)
        for shard in shards:
            self._check_sizes(shard)

    def prepare_shard(self, shard: Reader) -> int:
        try:
            delta = super().prepare_shard(shard)  # checks `validate_hash` when it is set
            self._check_sizes(shard)
            if not self.validate_hash:
                self._check_default_hash(shard)
        except UserError:
            raise
        except Exception as err:  # a failed hash check, a corrupt compressed file
            self._check_sizes(shard)  # a cut-short file explains a failed decompression better
            self._drop_cached(shard)
            names = ", ".join(info.basename for info in _files(shard))
            raise UserError(f"{self.key}: shard {names} of {self.source} is corrupt ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}); re-run scripts/data_prep.py for "
                            "this stream or restore the file") from None
        return delta

    def _check_default_hash(self, shard: Reader) -> None:
        """Check the shard's raw files against the fastest hash their index entries carry, if any."""
        for raw_info, _ in shard.file_pairs:
            algo = next((h for h in _PREFERRED_HASHES if h in raw_info.hashes), None)
            if algo is None:
                continue
            with open(self._local_path(raw_info.basename), "rb") as f:
                if get_hash(algo, f.read()) != raw_info.hashes[algo]:
                    raise ValueError(f"{raw_info.basename} does not match its {algo} hash in index.json")

    def _check_sizes(self, shard: Reader) -> None:
        for info in _files(shard):
            try:
                size = os.stat(self._local_path(info.basename)).st_size
            except FileNotFoundError:
                continue
            if size != info.bytes:
                self._drop_cached(shard)
                raise UserError(f"{self.key}: shard {info.basename} of {self.source} has {size} bytes but its "
                                f"index.json says {info.bytes} (cut short, or the index is not the one written "
                                "with it); re-run scripts/data_prep.py for this stream or restore the file")

    def _drop_cached(self, shard: Reader) -> None:
        """Remove this shard's files from the cache, so they are fetched again; never a stream's only copy."""
        if self.remote is None or os.path.realpath(self.remote) == os.path.realpath(self.local):
            return
        for info in _files(shard):
            try:
                os.remove(self._local_path(info.basename))
            except FileNotFoundError:
                pass


def _files(shard: Reader) -> list[FileInfo]:
    return [info for pair in shard.file_pairs for info in pair if info is not None]
