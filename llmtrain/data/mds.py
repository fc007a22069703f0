"""MDS shards for data prep, written without mosaicml-streaming (whose import pulls in torch: ~1 GB RSS).

The files are the ones `streaming.MDSWriter` (0.13) writes for one fixed-shape ndarray column, byte for
byte (tests/data/test_mds.py writes the same rows with both and compares them):

    shard.NNNNN.mds[.EXT]   uint32 sample count n, uint32 offsets[n + 1] (from the start of the file),
                            the shard's config as JSON (sort_keys), then the samples' bytes. A fixed-size
                            column needs no per-sample size header, so a sample is the row's bytes.
    index.json              {"version": 2, "shards": [per shard: samples, raw_data / zip_data
                            (basename, bytes, hashes), and the config]}, sort_keys.

A shard is closed before the sample that would take it over `size_limit`, counting 4 bytes per sample
and 8 + len(config) per shard, as MDSWriter does (also its quirk: a limit below one sample gives an
empty first shard). Compression, NAME or NAME:LEVEL, uses the same libraries and default levels as
streaming (python-zstd, gzip, bz2, brotli, python-snappy), so the compressed bytes are the same too.

Where the files go is a `sink` with `put(name, data)`: a local directory or an S3 prefix
(`S3Sink`, boto3 alone). index.json is put last, after every shard: a reader never sees an index whose
shards are not all there.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Union
from urllib.parse import urlparse

import numpy as np

INDEX_NAME = "index.json"

# family -> (default level, allowed levels); snappy has no levels. As streaming.base.compression.
_CODECS: dict[str, tuple[Optional[int], tuple[int, ...]]] = {
    "br": (11, tuple(range(12))),
    "bz2": (9, tuple(range(1, 10))),
    "gz": (9, tuple(range(10))),
    "snappy": (None, ()),
    "zstd": (3, tuple(range(1, 23))),
}
COMPRESSIONS = tuple(sorted(_CODECS))
_DTYPES = ("uint8", "int8", "uint16", "int16", "float16", "uint32", "int32", "float32", "uint64", "int64",
           "float64")
_UNITS = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50, "eb": 1 << 60,
          "zb": 1 << 70, "yb": 1 << 80}


def is_compression(name: Optional[str]) -> bool:
    """Whether `name` is a codec this writer (and streaming's reader) knows: NAME or NAME:LEVEL."""
    if not name:
        return False
    family, colon, level = name.partition(":")
    if family not in _CODECS:
        return False
    if not colon:
        return True
    return level.isdigit() and str(int(level)) == level and int(level) in _CODECS[family][1]


def compressor(name: str) -> Callable[[bytes], bytes]:
    """The function compressing a shard with `name` (checked with is_compression first)."""
    if not is_compression(name):
        raise ValueError(f"'{name}' is not a supported compression; use one of {', '.join(COMPRESSIONS)}")
    family, _, level_text = name.partition(":")
    level = int(level_text) if level_text else _CODECS[family][0]
    if family == "zstd":
        import zstd  # python-zstd, as streaming: its one-shot frames are what the reader was tested with

        return lambda data: zstd.compress(data, level)
    if family == "gz":
        import gzip

        return lambda data: gzip.compress(data, level)
    if family == "bz2":
        import bz2

        return lambda data: bz2.compress(data, level)
    if family == "br":
        import brotli

        return lambda data: brotli.compress(data, quality=level)
    import snappy

    return snappy.compress


def extension(name: str) -> str:
    return name.partition(":")[0]


def parse_size(size: Union[int, str]) -> int:
    """Bytes from 123, '123', '123b', '64kb', '1.5mb' ... (1 kb = 1024 bytes), as streaming reads a size_limit."""
    if isinstance(size, (int, float)):
        return int(size)
    text = size.lower().strip()
    for suffix, unit in _UNITS.items():
        if text.endswith(suffix):
            try:
                return int(float(text[: -len(suffix)]) * unit)
            except ValueError:
                break
    else:
        if text.endswith("b") and text[:-1].isdigit():
            return int(text[:-1])
        if text.isdigit():
            return int(text)
    raise ValueError(f"'{size}' is not a size; give bytes or a number with kb, mb or gb, e.g. 64mb")


def _hasher(algo: str) -> Callable[[bytes], str]:
    if algo.startswith("xxh"):
        import xxhash

        if algo in xxhash.algorithms_available:
            function = getattr(xxhash, algo)
            return lambda data: function(data).hexdigest()
    elif algo in hashlib.algorithms_available and hasattr(hashlib, algo) and not algo.startswith("shake_"):
        function = getattr(hashlib, algo)
        return lambda data: function(data).hexdigest()
    raise ValueError(f"'{algo}' is not a supported hash")


class LocalSink:
    """Files into a local directory (created; with `replace`, emptied first)."""

    def __init__(self, directory: str, replace: bool = False):
        self.directory = Path(directory).expanduser()
        if replace and self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, data: bytes) -> None:
        with open(self.directory / name, "wb") as f:
            f.write(data)

    def abort(self) -> None:
        """Remove what was written: a half-written dataset must not look like a dataset."""
        shutil.rmtree(self.directory, ignore_errors=True)


class S3Sink:
    """Objects under an s3://bucket/prefix, with boto3 configured from the environment as streaming's
    uploader is (AWS_* credentials, S3_ENDPOINT_URL, S3_CANNED_ACL). Checks the bucket on creation."""

    def __init__(self, uri: str):
        import boto3
        from botocore.config import Config

        parsed = urlparse(uri)
        self.uri = uri
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        # botocore's standard retry mode retries throttling, 5xx and dropped connections with backoff.
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL"),
            config=Config(retries={"mode": "standard", "max_attempts": 5}))
        self.client.head_bucket(Bucket=self.bucket)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def exists(self, name: str) -> bool:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(name), MaxKeys=1)
        return listed.get("KeyCount", len(listed.get("Contents", []))) > 0

    def put(self, name: str, data: bytes) -> None:
        import io

        extra = {"ACL": os.environ["S3_CANNED_ACL"]} if os.environ.get("S3_CANNED_ACL") else {}
        # upload_fileobj: multipart for large shards, retried part by part.
        self.client.upload_fileobj(io.BytesIO(data), self.bucket, self.key(name), ExtraArgs=extra or None)

    def abort(self) -> None:
        """Nothing to remove: without index.json the shards already uploaded are never read."""


class MDSWriter:
    """Rows of one fixed-shape ndarray column into MDS shards and index.json (see the module docstring)."""

    def __init__(self, sink, column: str, dtype: Union[str, np.dtype], shape: tuple[int, ...],
                 compression: Optional[str] = None, hashes: Optional[list[str]] = None,
                 size_limit: Optional[Union[int, str]] = 1 << 26):
        dtype = np.dtype(dtype)
        if dtype.name not in _DTYPES:
            raise ValueError(f"dtype {dtype.name} cannot be stored in an MDS ndarray column")
        if not shape or min(shape) < 1:
            raise ValueError(f"shape {shape}: every dimension must be at least 1")
        compression = compression or None
        self.compress = compressor(compression) if compression else None
        self.hashes = list(hashes or [])
        if self.hashes != sorted(set(self.hashes)):
            raise ValueError("hashes must be unique and in sorted order")
        self.hash_functions = [(algo, _hasher(algo)) for algo in self.hashes]
        limit = parse_size(size_limit) if size_limit else None
        if limit is not None and not 0 < limit < 2**32:
            raise ValueError(f"'{size_limit}' must be more than 0 bytes and less than 4gb "
                             f"(sample offsets in a shard are 32-bit)")
        self.sink = sink
        self.dtype = dtype
        self.shape = tuple(shape)
        self.sample_bytes = int(np.prod(shape)) * dtype.itemsize
        self.config = {
            "version": 2, "format": "mds", "compression": compression, "hashes": self.hashes,
            "size_limit": limit, "column_names": [column],
            "column_encodings": [f"ndarray:{dtype.name}:{','.join(map(str, shape))}"],
            "column_sizes": [self.sample_bytes],
        }
        self.config_data = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self.shards: list[dict] = []
        self._samples: list[bytes] = []

    def _shard_bytes(self, samples: int) -> int:
        """What MDSWriter counts against size_limit: 8 + config per shard, 4 + the sample per sample."""
        return 8 + len(self.config_data) + samples * (self.sample_bytes + 4)

    def write(self, row: np.ndarray) -> None:
        if row.dtype != self.dtype or row.shape != self.shape:
            raise ValueError(f"expected a {self.dtype.name} row of shape {self.shape}, got {row.dtype.name} "
                             f"{row.shape}")
        limit = self.config["size_limit"]
        if limit and limit < self._shard_bytes(len(self._samples) + 1):
            self._flush()
        self._samples.append(row.tobytes())

    def _info(self, data: bytes, basename: str) -> dict:
        return {"basename": basename, "bytes": len(data), "hashes": {a: f(data) for a, f in self.hash_functions}}

    def _flush(self) -> None:
        count = len(self._samples)
        header = 4 + 4 * (count + 1) + len(self.config_data)
        offsets = header + np.arange(count + 1, dtype=np.int64) * self.sample_bytes
        if offsets[-1] >= 2**32:
            raise ValueError("shard over 4 GiB: lower the size limit")
        samples, self._samples = self._samples, []
        raw = b"".join([np.uint32(count).tobytes(), offsets.astype(np.uint32).tobytes(), self.config_data,
                        *samples])
        del samples
        basename = f"shard.{len(self.shards):05}.mds"
        raw_info, zip_info = self._info(raw, basename), None
        if self.compress is not None:
            data = self.compress(raw)
            basename = f"{basename}.{extension(self.config['compression'])}"
            zip_info = self._info(data, basename)
            del raw
        else:
            data = raw
        self.sink.put(basename, data)
        self.shards.append({"samples": count, "raw_data": raw_info, "zip_data": zip_info, **self.config})

    def finish(self) -> None:
        """The last shard, then index.json."""
        if self._samples:
            self._flush()
        index = {"version": 2, "shards": self.shards}
        self.sink.put(INDEX_NAME, json.dumps(index, sort_keys=True).encode("utf-8"))
