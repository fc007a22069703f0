import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard
from streaming import StreamingDataset

from llmtrain.data import prep
from llmtrain.data.prep import prepare
from llmtrain.data.tokenizer import NEOX_NAME
from llmtrain.errors import UserError
from tests.data.corpus import make_documents, write_corpus

REPO = Path(__file__).resolve().parents[2]


def read_tokens(out: Path) -> np.ndarray:
    """All samples of an MDS dataset, in order, as one (samples, seq_len) array."""
    dataset = StreamingDataset(local=str(out), shuffle=False, batch_size=1)
    return np.stack([dataset[i]["tokens"] for i in range(len(dataset))])


def expected_stream(neox, docs: list[str]) -> list[int]:
    """What prep must produce: each document's tokens (special-token text kept as text), then EOS."""
    backend = neox.backend_tokenizer
    backend.encode_special_tokens = True
    try:
        return [t for d in docs for t in backend.encode(d, add_special_tokens=False).ids + [neox.eos_token_id]]
    finally:
        backend.encode_special_tokens = False


def test_packs_documents_with_eos_into_exact_samples(tmp_path, neox):
    docs = write_corpus(tmp_path / "raw", make_documents(60, seed=1))
    summary = prepare([str(tmp_path / "raw")], str(tmp_path / "out"), NEOX_NAME, max_seq_len=32,
                      size_limit="2kb")
    stream = expected_stream(neox, docs)
    tokens = read_tokens(tmp_path / "out")
    assert tokens.dtype == np.uint16 and tokens.shape == (len(stream) // 32, 32)
    assert tokens.ravel().tolist() == stream[: tokens.size]
    assert summary.documents == len(docs) == 60 and summary.files == len(set(_files(tmp_path / "raw")))
    assert summary.tokens == len(stream) and summary.samples == len(tokens)
    assert summary.dropped_tail_tokens == len(stream) % 32
    assert summary.shards == len(json.loads((tmp_path / "out/index.json").read_text())["shards"]) > 1
    # Only the appended EOS tokens are id 0: the literal "<|endoftext|>" text in documents is not.
    assert stream.count(0) == len(docs) and any("<|endoftext|>" in d for d in docs)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_output_is_identical_for_one_or_two_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "_CHUNK_DOCS", 7)  # many chunks, so two workers really interleave
    write_corpus(tmp_path / "raw", make_documents(150, seed=2))
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        prepare([str(tmp_path / "raw")], str(out), NEOX_NAME, max_seq_len=48, workers=workers,
                size_limit="4kb", compression="zstd")
        outs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outs[0] == outs[1]
    assert len(outs[0]) > 3
    assert all(name.endswith(".zstd") for name in outs[0] if name not in ("index.json", "manifest.json"))


def test_empty_documents_are_counted_not_written(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one two three four"}\n{"text": ""}\n{"text": "five"}\n')
    summary = prepare([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), NEOX_NAME, max_seq_len=2)
    assert (summary.documents, summary.empty_documents) == (2, 1)
    assert summary.tokens == 4 + 1 + 1 + 1


def test_skip_bad_counts_and_lists_every_skipped_record(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text('{"text": "good one"}\n{"text": broken\n{"body": "x"}\n{"text": 5}\n'
                                 '{"text": "good two"}\n')
    (raw / "b.txt").write_bytes(b"caf\xe9 latin-1 text")
    (raw / "c.txt.gz").write_bytes(b"this is not gzip data")
    (raw / "d.txt").write_text("good three " * 5)
    summary = prepare([str(raw)], str(tmp_path / "out"), NEOX_NAME, max_seq_len=4, skip_bad=True)
    assert summary.documents == 3
    assert summary.skipped_total == 5
    assert summary.skipped["not valid JSON"] == 1 and summary.skipped["no 'text' field"] == 1
    assert summary.skipped["'text' must be a string, got int"] == 1
    assert summary.skipped["unreadable file (rest skipped)"] == 2
    err = capsys.readouterr().err
    assert f"skipped {raw / 'a.jsonl'}:2: not valid JSON" in err and f"skipped {raw / 'b.txt'}: not UTF-8" in err
    assert "skipped     5 bad records" in "\n".join(summary.lines())


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "raw" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


GOOD = b'{"text": "a perfectly good document with enough words"}\n'


@pytest.mark.parametrize("name,data,message", [
    ("x.jsonl", GOOD + b"{'text': 'single quotes'}\n", r"x.jsonl:2: not valid JSON \(Expecting property name enclosed in double quotes at column 2\)"),
    ("x.jsonl", GOOD + b'{"text": "cut\n', r"x.jsonl:2: not valid JSON \(Invalid control character at column 14\)"),
    ("x.jsonl", GOOD * 2 + b'{"content": "wrong field"}\n', r"x.jsonl:3: no 'text' field \(keys: content\)"),
    ("x.jsonl", b'\n' + GOOD + b'{"text": ["a", "list"]}\n', r"x.jsonl:3: 'text' must be a string, got list"),
    ("x.jsonl", b'["not", "an", "object"]\n', r"x.jsonl:1: expected a JSON object with a 'text' field, got list"),
    ("x.json", b'{\n  "text": "pretty-printed"\n}\n', r"x.json:1: not valid JSON .*read as JSON lines"),
    ("x.jsonl", GOOD + b'{"text": "caf\xe9"}\n', r"x.jsonl:2: not UTF-8 text \(byte 0xe9 at offset 13\)"),
    ("y.txt", b"ok \xff\xfe binary", r"y.txt: not UTF-8 text \(byte 0xff at offset 3\)"),
    ("z.jsonl.gz", gzip.compress(GOOD * 50, mtime=0)[:-20], r"z.jsonl.gz: corrupt or truncated compressed file"),
    ("z.txt.zst", b"\x28\xb5\x2f\xfd garbage", r"z.txt.zst: corrupt or truncated compressed file"),
    ("z.jsonl.zst", zstandard.ZstdCompressor().compress(b"".join(GOOD.replace(b"good", b"%d" % i) for i in range(500)))[:-9],
     r"z.jsonl.zst: corrupt or truncated compressed file \(the file ends inside a zstd frame \(cut short\)\)"),
])
def test_bad_record_errors_name_file_and_line(tmp_path, name, data, message):
    path = _bad(tmp_path, name, data)
    with pytest.raises(UserError, match=message) as info:
        prepare([str(tmp_path / "raw")], str(tmp_path / "out"), NEOX_NAME, max_seq_len=4)
    assert str(info.value).startswith(str(path)) and "--skip-bad" in str(info.value)
    assert not (tmp_path / "out").exists()  # no half-written dataset is left behind


def test_unreadable_file(tmp_path):
    (tmp_path / "raw").mkdir()
    os.symlink(tmp_path / "gone.txt", tmp_path / "raw" / "dangling.txt")
    with pytest.raises(UserError, match=r"dangling.txt: cannot read \(No such file or directory\)"):
        prepare([str(tmp_path / "raw")], str(tmp_path / "out"), NEOX_NAME, max_seq_len=4)


def _fill(value, tmp_path: Path):
    if isinstance(value, list):
        return [_fill(v, tmp_path) for v in value]
    return value.format(tmp=tmp_path) if isinstance(value, str) else value


@pytest.mark.parametrize("kwargs,message", [
    (dict(inputs=["{tmp}/missing"]), r"INPUT '.*missing': no such file or directory"),
    (dict(inputs=["{tmp}/empty"]), r"INPUT: no input files found in .*empty"),
    (dict(max_seq_len=10_000), r"--max-seq-len: the input has [\d,]+ tokens in 1 documents, not enough for one sample of 10000"),
    (dict(max_seq_len=0), r"--max-seq-len: must be a positive number"),
    (dict(workers=0), r"--workers: must be at least 1"),
    (dict(tokenizer="gpt2-xxl"), r"--tokenizer: 'gpt2-xxl' is not installed"),
    (dict(compression="zst"), r"--compression: 'zst' is not supported \(did you mean 'zstd'\?\)"),
    (dict(out="s3://KEY:SECRET@bucket/data"), r"--out: credentials do not belong in the URI"),
    (dict(out="{tmp}/existing"), r"--out: '.*existing' exists and is not empty; .* --overwrite"),
    (dict(out="{tmp}/existing/keep.txt"), r"--out: '.*keep.txt' is a file; choose a new directory"),
    (dict(out="gs://bucket/data"), r"--out: 'gs://bucket/data': data_prep writes to a local directory or "
                                   r"s3://bucket/prefix, not gs://"),
    (dict(size_limit="lots"), r"--shard-size: 'lots' is not a size; give bytes or a number with kb, mb or gb"),
    (dict(size_limit="4gb"), r"--shard-size: '4gb' must be more than 0 bytes and less than 4gb"),
    (dict(compression="zstd:30"), r"--compression: 'zstd:30' is not supported"),
])
def test_argument_errors(tmp_path, kwargs, message):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.txt").write_text("a dozen or so tokens in this one short document here")
    (tmp_path / "empty").mkdir()
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("user data")
    args = dict(inputs=[str(tmp_path / "raw")], out=str(tmp_path / "out"), tokenizer=NEOX_NAME, max_seq_len=4)
    args.update({k: _fill(v, tmp_path) for k, v in kwargs.items()})
    with pytest.raises(UserError, match=message):
        prepare(**args)
    assert (tmp_path / "existing" / "keep.txt").exists() and not (tmp_path / "out").exists()


def test_overwrite_replaces_an_existing_output(tmp_path):
    (tmp_path / "a.txt").write_text("one two three four five six seven eight")
    out = tmp_path / "out"
    prepare([str(tmp_path / "a.txt")], str(out), NEOX_NAME, max_seq_len=2)
    summary = prepare([str(tmp_path / "a.txt")], str(out), NEOX_NAME, max_seq_len=3, overwrite=True)
    assert read_tokens(out).shape == (summary.samples, 3)


def test_plain_progress_lines_report_tokens_per_second(capsys):
    progress = prep._Progress(every=0)
    progress.update(documents=10, tokens=5000, new_tokens=5000)
    assert progress.close() > 0
    assert "data_prep: 10 documents, 5,000 tokens," in capsys.readouterr().err


def test_script_prints_summary_or_one_line_error(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hello there, general data prep"}\n{"txt": "oops"}\n')
    cmd = [sys.executable, str(REPO / "scripts/data_prep.py"), str(tmp_path / "a.jsonl"), "--out",
           str(tmp_path / "out"), "--tokenizer", NEOX_NAME, "--max-seq-len", "4"]
    failed = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'a.jsonl'}:2: no 'text' field (keys: txt); --text-field NAME reads another field; "
        f"fix the input or pass --skip-bad "
        f"to skip (and count) bad records"]
    done = subprocess.run(cmd + ["--skip-bad", "--workers", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "x 4 tokens (uint16)" in done.stdout and "skipped     1 bad records" in done.stdout


def test_s3_output_is_not_overwritten_by_accident(tmp_path, s3_server):
    (tmp_path / "a.txt").write_text("one two three four five six seven eight")
    out = f"s3://{s3_server.make_bucket()}/data/train"
    first = prepare([str(tmp_path / "a.txt")], out, NEOX_NAME, max_seq_len=2)
    with pytest.raises(UserError, match=r"--out: 's3://.*/data/train' already holds a dataset \(index.json\); "
                                        r"choose a new prefix or pass --overwrite"):
        prepare([str(tmp_path / "a.txt")], out, NEOX_NAME, max_seq_len=3)
    again = prepare([str(tmp_path / "a.txt")], out, NEOX_NAME, max_seq_len=3, overwrite=True)
    assert (first.samples, again.samples) == (4, 3)
    bucket = out[len("s3://"):].split("/")[0]
    assert {"data/train/index.json", "data/train/manifest.json"} <= set(s3_server.keys(bucket, "data/train"))


def test_s3_output_errors_are_one_line(tmp_path, s3_server, monkeypatch):
    (tmp_path / "a.txt").write_text("one two three four five six seven eight")
    args = ([str(tmp_path / "a.txt")],)
    with pytest.raises(UserError, match=r"--out: cannot write to 's3://no-such-bucket-[0-9a-f]+/x' \(ClientError: .*\); "
                                        r"check the bucket and the S3_ENDPOINT_URL / AWS_\* environment variables"):
        prepare(*args, f"s3://no-such-bucket-{os.getpid():x}/x", NEOX_NAME, max_seq_len=2)
    bucket = s3_server.make_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(UserError, match=r"--out: cannot write to 's3://.*/x' \(ClientError: .*403.*\); check the bucket"):
        prepare(*args, f"s3://{bucket}/x", NEOX_NAME, max_seq_len=2)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup to wait for
    with pytest.raises(UserError, match=r"--out: cannot write to 's3://.*/x' \(NoCredentialsError: Unable to locate "
                                        r"credentials\); check the bucket"):
        prepare(*args, f"s3://{bucket}/x", NEOX_NAME, max_seq_len=2)
    assert s3_server.keys(bucket) == []


def test_s3_output_matches_the_local_one(tmp_path, s3_server):
    """The same bytes under the prefix as in a local directory, shards, index.json and manifest.json."""
    write_corpus(tmp_path / "raw", make_documents(40, seed=4))
    bucket = s3_server.make_bucket()
    local = tmp_path / "local"
    for out in (str(local), f"s3://{bucket}/a/b"):
        prepare([str(tmp_path / "raw")], out, NEOX_NAME, max_seq_len=16, size_limit="1kb", compression="zstd")
    names = sorted(p.name for p in local.iterdir())
    assert len(names) > 4 and s3_server.keys(bucket) == [f"a/b/{name}" for name in names]
    for name in names:
        body = s3_server.client().get_object(Bucket=bucket, Key=f"a/b/{name}")["Body"].read()
        assert body == (local / name).read_bytes(), name
