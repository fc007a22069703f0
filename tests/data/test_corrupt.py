"""A truncated shard, flipped bytes, a wrong, broken or missing index.json: each is one line naming the
stream's YAML key and the file, raised within seconds — never samples silently skipped, never a hang."""
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streaming import MDSWriter

from llmtrain.data.prep import prepare
from llmtrain.data.text import build_text_dataloader
from llmtrain.data.tokenizer import NEOX_NAME
from llmtrain.errors import UserError

SEQ, SAMPLES, BATCH = 8, 96, 4
KEY = "train_loader.dataset.streams.web"


def write_shards(out: Path, compression=None, hashes=None) -> list[str]:
    """SAMPLES numbered samples in several shards; their file names, in order."""
    with MDSWriter(out=str(out), columns={"tokens": f"ndarray:uint16:{SEQ}"}, compression=compression,
                   hashes=hashes, size_limit=400) as writer:
        for i in range(SAMPLES):
            writer.write({"tokens": np.full(SEQ, i + 1, np.uint16)})
    shards = json.loads((out / "index.json").read_text())["shards"]
    assert len(shards) >= 5
    return [(s["zip_data"] or s["raw_data"])["basename"] for s in shards]


def read_all(tmp_path: Path, stream: dict, workers: int = 0, **dataset) -> int:
    """Build the loader for stream `web` and read every batch; the number of samples read."""
    section = {"dataset": {"streams": {"web": stream}, "max_seq_len": SEQ, "eos_token_id": 0, **dataset},
               "num_workers": workers, "persistent_workers": False, "drop_last": False,
               "timeout": 60 if workers else 0}  # a stuck worker fails the test instead of hanging it
    loader = build_text_dataloader(section, None, BATCH).dataloader
    return sum(len(batch["input_ids"]) for batch in loader)


def fails_with(tmp_path: Path, stream: dict, pattern: str, workers: int = 0, **dataset) -> str:
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        read_all(tmp_path, stream, workers, **dataset)
    message = str(caught.value)
    assert "\n" not in message and re.fullmatch(pattern, message), message
    assert time.monotonic() - started < 30
    return message


def flip_byte(path: Path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_intact_dataset_reads_every_sample(tmp_path):
    write_shards(tmp_path / "remote", hashes=["xxh64"])
    assert read_all(tmp_path, {"remote": str(tmp_path / "remote"), "local": str(tmp_path / "cache")}) == SAMPLES


@pytest.mark.parametrize("layout", ["local only", "remote", "remote, zstd, 2 workers"])
def test_truncated_shard_names_stream_and_file(tmp_path, layout):
    """The last shard is cut short: streaming's download-ahead thread meets it first, which used to end
    the epoch early without a word (and leave it "downloading" for any other worker to wait on)."""
    names = write_shards(tmp_path / "data", compression="zstd" if "zstd" in layout else None)
    truncate(tmp_path / "data" / names[-1])
    stream = {"local": str(tmp_path / "data")} if layout == "local only" else \
        {"remote": str(tmp_path / "data"), "local": str(tmp_path / "cache")}
    fails_with(tmp_path, stream, rf"{KEY}: shard {re.escape(names[-1])} of {re.escape(str(tmp_path / 'data'))} "
               r"has \d+ bytes but its index.json says \d+ \(cut short, or the index is not the one written "
               r"with it\); re-run scripts/data_prep.py for this stream or restore the file",
               workers=2 if "workers" in layout else 0)
    if layout != "local only":  # the bad copy is not kept in the cache, to be read again next time
        assert not (tmp_path / "cache" / names[-1]).exists()


@pytest.mark.parametrize("validate_hash", [None, "xxh64"])
def test_flipped_byte_fails_the_hash_check(tmp_path, validate_hash):
    """Shards written with hashes are checked when fetched: by default with the fastest hash their index
    lists, or with `validate_hash`."""
    names = write_shards(tmp_path / "remote", hashes=["sha1", "xxh64"])
    flip_byte(tmp_path / "remote" / names[2])
    stream = {"remote": str(tmp_path / "remote"), "local": str(tmp_path / "cache")}
    message = fails_with(tmp_path, stream, rf"{KEY}: shard {re.escape(names[2])} of .* is corrupt \(ValueError: "
                         r".*\); re-run scripts/data_prep.py for this stream or restore the file",
                         validate_hash=validate_hash)
    assert ("does not match its xxh64 hash" if validate_hash is None else "Checksum failure") in message


def flip_in_a_sample(shard: Path) -> None:
    """Flip one bit in the middle of the middle sample's token bytes of an uncompressed MDS shard (its header:
    the sample count, then count + 1 uint32 offsets)."""
    data = bytearray(shard.read_bytes())
    count = int(np.frombuffer(data, np.uint32, 1)[0])
    offsets = np.frombuffer(data, np.uint32, count + 1, offset=4)
    data[(int(offsets[count // 2]) + int(offsets[count // 2 + 1])) // 2] ^= 0x01
    shard.write_bytes(bytes(data))


def test_flipped_byte_in_a_data_prep_shard_is_caught(tmp_path, neox_dir):
    """scripts/data_prep.py writes xxh64 hashes: one flipped bit in a sample's tokens of the remote copy is one
    line when the shard is fetched. A dataset without hashes (llm-foundry's, or this one's index without them)
    still loads, and then the same flip goes unnoticed: it is just another token."""
    docs = tmp_path / "docs.txt"
    docs.write_text("\n\n".join(f"Document {i}: the quick brown fox jumps over the lazy dog." for i in range(40)))
    prepare([str(docs)], str(tmp_path / "remote"), NEOX_NAME, SEQ)
    index = json.loads((tmp_path / "remote" / "index.json").read_text())
    (shard,) = [s["raw_data"] for s in index["shards"]]
    assert list(shard["hashes"]) == ["xxh64"]
    flip_in_a_sample(tmp_path / "remote" / shard["basename"])
    stream = {"remote": str(tmp_path / "remote"), "local": str(tmp_path / "cache")}
    fails_with(tmp_path, stream, re.escape(
        f"{KEY}: shard {shard['basename']} of {tmp_path / 'remote'} is corrupt (ValueError: {shard['basename']} "
        "does not match its xxh64 hash in index.json); re-run scripts/data_prep.py for this stream or restore "
        "the file"))
    assert not (tmp_path / "cache" / shard["basename"]).exists()

    for entry in index["shards"]:
        entry["raw_data"]["hashes"] = {}
    (tmp_path / "remote" / "index.json").write_text(json.dumps(index))
    assert read_all(tmp_path, {**stream, "local": str(tmp_path / "cache2")}) == index["shards"][0]["samples"]


def test_flipped_byte_in_compressed_shard_without_hashes_is_an_error(tmp_path):
    """Without hashes, a zstd shard is only as safe as its decompression; here it fails: the error says which."""
    names = write_shards(tmp_path / "remote", compression="zstd")
    data = bytearray((tmp_path / "remote" / names[1]).read_bytes())
    data[4] ^= 0xFF  # the frame header: undecodable (a flip among the literals could pass unnoticed)
    (tmp_path / "remote" / names[1]).write_bytes(bytes(data))
    fails_with(tmp_path, {"remote": str(tmp_path / "remote"), "local": str(tmp_path / "cache")},
               rf"{KEY}: shard .*{re.escape(names[1])} of .* is corrupt \(.*\); re-run scripts/data_prep.py .*")


def test_index_with_wrong_sizes(tmp_path):
    names = write_shards(tmp_path / "data")
    index = json.loads((tmp_path / "data" / "index.json").read_text())
    index["shards"][3]["raw_data"]["bytes"] += 100
    (tmp_path / "data" / "index.json").write_text(json.dumps(index))
    fails_with(tmp_path, {"local": str(tmp_path / "data")},
               rf"{KEY}: shard {re.escape(names[3])} of .* has \d+ bytes but its index.json says \d+ .*")


def test_index_that_is_not_json(tmp_path):
    write_shards(tmp_path / "data")
    (tmp_path / "data" / "index.json").write_text('{"version": 2, "shards": [')
    fails_with(tmp_path, {"remote": str(tmp_path / "data"), "local": str(tmp_path / "cache")},
               rf"{KEY}: {re.escape(str(tmp_path / 'cache' / 'index.json'))} is not valid JSON \(Expecting value "
               r"at line 1\); delete this cached copy of .*/data/index.json if that one is good, else re-run "
               r"scripts/data_prep.py for this stream")


def test_index_that_is_not_an_mds_index(tmp_path):
    write_shards(tmp_path / "data")
    (tmp_path / "data" / "index.json").write_text('{"version": 2}')
    fails_with(tmp_path, {"local": str(tmp_path / "data")},
               rf"{KEY}: .*index.json is not an MDS index \(KeyError: 'shards'\); re-run scripts/data_prep.py "
               r"for this stream")


def test_missing_remote_index(tmp_path):
    write_shards(tmp_path / "data")
    (tmp_path / "data" / "index.json").unlink()
    fails_with(tmp_path, {"remote": str(tmp_path / "data"), "local": str(tmp_path / "cache")},
               rf"{KEY}: reading {re.escape(str(tmp_path / 'data' / 'index.json'))}: FileNotFoundError: .*",
               download_retry=0)


def test_remote_with_a_scheme_streaming_does_not_read(tmp_path):
    with pytest.raises(UserError) as caught:
        read_all(tmp_path, {"remote": "s4://bucket/web", "local": str(tmp_path / "cache")})
    assert str(caught.value) == (f"{KEY}.remote: 's4://bucket/web': scheme 's4://' is not one mosaicml-streaming "
                                 "reads; use s3://, gs://, oci://, hf://, ... or a local directory")
