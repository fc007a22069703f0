"""llmtrain/data/mds.py writes the files streaming's MDSWriter writes, byte for byte, without importing streaming."""
import json
from pathlib import Path

import numpy as np
import pytest
from streaming import MDSWriter as StreamingMDSWriter
from streaming import StreamingDataset
from streaming.base.compression import is_compression as streaming_is_compression
from streaming.base.util import bytes_to_int

from llmtrain.data import mds


def rows(count: int, seq: int, dtype: str, seed: int) -> np.ndarray:
    high = 50277 if dtype == "uint16" else 2**31 - 1
    return np.random.default_rng(seed).integers(0, high, (count, seq)).astype(dtype)


def write_both(tmp_path: Path, data: np.ndarray, **options) -> tuple[dict, dict]:
    """{file name: bytes} of our writer's and streaming's output for the same rows and options."""
    seq, dtype = data.shape[1], data.dtype.name
    ours = mds.MDSWriter(mds.LocalSink(str(tmp_path / "ours")), "tokens", dtype, (seq,), **options)
    for row in data:
        ours.write(row)
    ours.finish()
    with StreamingMDSWriter(out=str(tmp_path / "theirs"), columns={"tokens": f"ndarray:{dtype}:{seq}"},
                            **options) as theirs:
        for row in data:
            theirs.write({"tokens": row})
    return ({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())} for name in ("ours", "theirs"))


@pytest.mark.parametrize("dtype,seq,count,options", [
    ("uint16", 32, 50, dict(hashes=["xxh64"], size_limit="2kb")),
    ("uint16", 32, 50, dict(hashes=["xxh64"], size_limit="2kb", compression="zstd")),
    ("uint16", 2048, 40, dict(hashes=["xxh64"], compression="zstd:7", size_limit="64kb")),
    ("int32", 48, 33, dict(hashes=["xxh64"], compression="gz", size_limit=3000)),
    ("uint16", 16, 70, dict(hashes=["sha1", "xxh64"], compression="gz:1", size_limit="1.5kb")),
    ("uint16", 16, 70, dict(hashes=["xxh64"], compression="bz2", size_limit="1kb")),
    ("uint16", 16, 70, dict(hashes=["xxh64"], compression="br:5", size_limit="1kb")),
    ("int32", 16, 70, dict(hashes=["xxh64"], compression="snappy", size_limit="1kb")),
    ("uint16", 64, 9, dict(hashes=["xxh64"])),  # the default size limit (64 MiB): one shard
    ("uint16", 64, 9, dict(hashes=["xxh64"], size_limit=None)),  # no limit at all
    ("uint16", 64, 5, dict(size_limit="100b")),  # a limit below one sample: MDSWriter's empty first shard
])
def test_same_files_as_streaming_mdswriter(tmp_path, dtype, seq, count, options):
    data = rows(count, seq, dtype, seed=count)
    ours, theirs = write_both(tmp_path, data, **options)
    assert ours.keys() == theirs.keys()
    assert json.loads(ours.pop("index.json")) == json.loads(theirs.pop("index.json"))
    assert ours == theirs
    shards = json.loads((tmp_path / "ours" / "index.json").read_text())["shards"]
    assert sum(s["samples"] for s in shards) == count
    dataset = StreamingDataset(local=str(tmp_path / "ours"), shuffle=False, batch_size=1)
    assert np.array_equal(np.stack([dataset[i]["tokens"] for i in range(len(dataset))]), data)


def test_many_shards_and_hashes_the_reader_checks(tmp_path):
    """Several shards of a real size, read back with hash validation on."""
    data = rows(300, 512, "uint16", seed=3)
    ours, theirs = write_both(tmp_path, data, hashes=["xxh64"], size_limit="64kb", compression="zstd")
    assert json.loads(ours.pop("index.json")) == json.loads(theirs.pop("index.json")) and ours == theirs
    assert len(ours) == 5
    dataset = StreamingDataset(local=str(tmp_path / "ours"), shuffle=False, batch_size=1, validate_hash="xxh64")
    assert np.array_equal(np.stack([dataset[i]["tokens"] for i in range(len(dataset))]), data)


NAMES = ["zstd", "zstd:1", "zstd:22", "zstd:23", "zstd:0", "zstd:07", "zst", "gz", "gz:0", "gz:9", "gz:10", "bz2",
         "bz2:0", "bz2:9", "br", "br:0", "br:11", "br:12", "snappy", "snappy:1", "lz4", "", "zstd:", "zstd:x", ":3"]


@pytest.mark.parametrize("name", NAMES)
def test_the_same_codec_names_as_streaming(name):
    assert mds.is_compression(name) == streaming_is_compression(name)


@pytest.mark.parametrize("size", ["64mb", "64MB", " 2kb ", "1.5mb", "100b", "100", "3gb", 4096])
def test_sizes_read_as_streaming_reads_them(size):
    assert mds.parse_size(size) == bytes_to_int(size)


@pytest.mark.parametrize("size", ["lots", "12xb", "kb", "1.5", "-"])
def test_bad_sizes_are_errors_as_in_streaming(size):
    with pytest.raises(ValueError, match="is not a size"):
        mds.parse_size(size)
    with pytest.raises(ValueError):
        bytes_to_int(size)


@pytest.mark.parametrize("kwargs,message", [
    (dict(size_limit="4gb"), r"less than 4gb"),
    (dict(size_limit="-1kb"), r"more than 0 bytes"),
    (dict(hashes=["xxh64", "sha1"]), r"sorted order"),
    (dict(hashes=["crc"]), r"'crc' is not a supported hash"),
    (dict(compression="lz4"), r"'lz4' is not a supported compression"),
])
def test_writer_option_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mds.MDSWriter(mds.LocalSink(str(tmp_path / "out")), "tokens", "uint16", (8,), **kwargs)


def test_rows_of_another_shape_or_dtype_are_refused(tmp_path):
    writer = mds.MDSWriter(mds.LocalSink(str(tmp_path / "out")), "tokens", "uint16", (8,))
    with pytest.raises(ValueError, match=r"expected a uint16 row of shape \(8,\), got int32 \(8,\)"):
        writer.write(np.zeros(8, np.int32))
    with pytest.raises(ValueError, match=r"got uint16 \(9,\)"):
        writer.write(np.zeros(9, np.uint16))
