"""Data prep: raw documents → tokenized, packed MDS shards that `train_loader: {name: text}` reads.

Every document is tokenized, an EOS token is appended, all documents are concatenated in input order
and cut into samples of exactly `max_seq_len` tokens (a document may span two samples; the loader's
`sequence_id` recovers the boundaries from the EOS tokens). The trailing tokens that do not fill a
last sample are dropped and reported as `dropped_tail_tokens`.

Shards have one column, `tokens`, encoded `ndarray:<uint16|int32>:<max_seq_len>` (uint16 when the
vocabulary fits). llm-foundry's text dataset reads the same `tokens` ndarray column, and the fixed
shape lets our loader check `max_seq_len` from the index before training starts. They are written by
llmtrain/data/mds.py, the same files as streaming's MDSWriter, and the tokenizer is read with the
`tokenizers` library: data prep imports neither streaming nor transformers, and so not torch, whose
shared libraries alone are ~0.9 GB of RSS (tests/data/test_prep_imports.py keeps it so).

Tokenization runs in `workers` processes; results are consumed in submission order, so the output is
byte-identical for any worker count. A literal "<|endoftext|>" inside a document is tokenized as text:
only the EOS we append marks a document boundary.

Which records are documents is llmtrain/data/sources.py's business (formats, --text-field, --filter);
what was read and written, per input, is printed at the end and kept in the output's manifest.json
(llmtrain/data/manifest.py).
"""
from __future__ import annotations

import hashlib
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from llmtrain.data.encode import Encoder, encode_in_worker, init_worker
from llmtrain.data.fields import Selection, make_selection
from llmtrain.data.mds import COMPRESSIONS, INDEX_NAME, LocalSink, MDSWriter, S3Sink, is_compression
from llmtrain.data.manifest import MANIFEST_NAME, InputFile, InputSummary, PrepSummary, manifest, sha256_of, write_manifest
from llmtrain.data.sources import BadRecord, Filtered, Input, find_inputs, read_records
from llmtrain.data.tokenizer import load_tokenizer_file
from llmtrain.errors import UserError
from llmtrain.errors import closest

# Documents are handed to the tokenizer in chunks of about this many characters (or documents),
# cut only by the input, never by the worker count, so chunking cannot change the output.
_CHUNK_CHARS = 1 << 20
_CHUNK_DOCS = 1024
_SKIP_EXAMPLES = 10  # with --skip-bad, this many skipped records per input are listed on stderr; all are counted
# Written into index.json for every shard file; the loader checks a fetched shard against it
# (llmtrain/data/stream.py), so a flipped byte is an error, not a different token.
SHARD_HASHES = ["xxh64"]


class _Packer:
    """Append EOS to each document, concatenate, and cut into rows of exactly max_seq_len."""

    def __init__(self, max_seq_len: int, eos_id: int, dtype: np.dtype):
        self.max_seq_len = max_seq_len
        self.eos_id = eos_id
        self.dtype = dtype
        self.carry = np.zeros(0, dtype)

    def add(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with_eos = np.insert(ids, np.cumsum(lengths), self.eos_id).astype(self.dtype)
        buffer = np.concatenate([self.carry, with_eos])
        rows = len(buffer) // self.max_seq_len
        cut = rows * self.max_seq_len
        self.carry = buffer[cut:]
        return buffer[:cut].reshape(rows, self.max_seq_len)


class _Progress:
    """tqdm on a terminal; otherwise a plain line on stderr every `every` seconds."""

    def __init__(self, every: float = 10.0):
        self.start = time.perf_counter()
        self.every = every
        self.last_print = self.start
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(unit="tok", unit_scale=True, desc="data_prep", file=sys.stderr)

    def update(self, documents: int, tokens: int, new_tokens: int) -> None:
        if self.bar is not None:
            self.bar.update(new_tokens)
            return
        now = time.perf_counter()
        if now - self.last_print >= self.every:
            self.last_print = now
            rate = tokens / max(now - self.start, 1e-9)
            print(f"data_prep: {documents:,} documents, {tokens:,} tokens, {rate:,.0f} tokens/s",
                  file=sys.stderr, flush=True)

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.start


def _input_file(path: Path) -> InputFile:
    try:
        return InputFile(str(path), path.stat().st_size, sha256_of(path))
    except OSError:  # its reader reports why it cannot be read
        return InputFile(str(path), 0, "")


def _texts(source: Input, summary: InputSummary, selection: Selection, skip_bad: bool) -> Iterator[str]:
    """The document texts of one input in order; bad records raise, or are counted with skip_bad."""
    for path in source.files:
        summary.files.append(_input_file(path))
        for record in read_records(path, selection):
            if isinstance(record, Filtered):
                summary.filtered += 1
                continue
            if isinstance(record, BadRecord):
                if not skip_bad:
                    raise UserError(f"{record.where}: {record.reason}; fix the input or pass --skip-bad "
                                    f"to skip (and count) bad records")
                if sum(summary.skipped.values()) < _SKIP_EXAMPLES:
                    print(f"data_prep: skipped {record.where}: {record.reason}", file=sys.stderr)
                summary.skipped["unreadable file (rest skipped)" if record.whole_file
                                else record.reason.split(" (")[0]] += 1
                continue
            if not record.text:
                summary.empty_documents += 1
                continue
            yield record.text


def _chunks(inputs: list[Input], summary: PrepSummary, selection: Selection,
            skip_bad: bool) -> Iterator[tuple[InputSummary, list[str]]]:
    """(input, document texts) in input order; a chunk never spans two inputs, so tokens are counted per input."""
    for source in inputs:
        counts = InputSummary(source.name)
        summary.inputs.append(counts)
        texts: list[str] = []
        chars = 0
        for text in _texts(source, counts, selection, skip_bad):
            texts.append(text)
            chars += len(text)
            if chars >= _CHUNK_CHARS or len(texts) >= _CHUNK_DOCS:
                yield counts, texts
                texts, chars = [], 0
        if texts:
            yield counts, texts


def _encoded(chunks: Iterator[tuple[InputSummary, list[str]]], tokenizer_json: str, workers: int):
    """(input, ids, lengths) per chunk, in chunk order; at most 2 x workers chunks in flight."""
    if workers == 1:
        encode = Encoder(tokenizer_json)
        for source, texts in chunks:
            yield (source, *encode(texts))
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker,
                             initargs=(tokenizer_json,)) as pool:
        pending: deque = deque()
        for source, texts in chunks:
            pending.append((source, pool.submit(encode_in_worker, texts)))
            if len(pending) >= 2 * workers:
                source, future = pending.popleft()
                yield (source, *future.result())
        while pending:
            source, future = pending.popleft()
            yield (source, *future.result())


def _check_out(out: str) -> bool:
    """Whether `out` is a remote URI; rejects credentials embedded in it."""
    parsed = urlparse(out)
    remote = len(parsed.scheme) > 1  # "C:" style drive letters are not schemes
    if remote and (parsed.username or parsed.password):
        raise UserError("--out: credentials do not belong in the URI; set AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY (and S3_ENDPOINT_URL) in the environment instead")
    return remote


def _open_writer(out: str, remote: bool, dtype: np.dtype, max_seq_len: int, compression: Optional[str],
                 size_limit: str, overwrite: bool) -> MDSWriter:
    if compression and not is_compression(compression):
        raise UserError(f"--compression: '{compression}' is not supported{closest(compression, COMPRESSIONS)}; "
                        f"use one of {', '.join(COMPRESSIONS)} (or NAME:LEVEL, e.g. zstd:7)")
    if remote and urlparse(out).scheme != "s3":
        raise UserError(f"--out: '{out}': data_prep writes to a local directory or s3://bucket/prefix, "
                        f"not {urlparse(out).scheme}://")
    if not remote and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out: '{out}' is a file; choose a new directory")
    if not remote and Path(out).exists() and any(Path(out).iterdir()) and not overwrite:
        raise UserError(f"--out: '{out}' exists and is not empty; choose a new directory or pass --overwrite")
    try:
        writer = MDSWriter(None, "tokens", dtype, (max_seq_len,), compression=compression, hashes=SHARD_HASHES,
                           size_limit=size_limit)
    except ValueError as err:  # the shard size: not a size, or out of range
        raise UserError(f"--shard-size: {err}") from None
    except ImportError as err:  # a codec's library (streaming's dependencies: zstd, brotli, python-snappy)
        raise UserError(f"--compression: '{compression}' needs the Python module '{err.name}', which is not "
                        f"installed; install it or choose another codec") from None
    # Only now, every option checked: a bad one leaves `out` as it was.
    writer.sink = _s3_sink(out, overwrite) if remote else LocalSink(out, replace=overwrite)
    return writer


def _s3_sink(out: str, overwrite: bool) -> S3Sink:
    try:
        sink = S3Sink(out)
        existing = not overwrite and sink.exists(INDEX_NAME)
    except Exception as err:  # boto3/botocore and friends: bucket missing, no endpoint, no credentials
        raise UserError(f"--out: cannot write to '{out}' ({type(err).__name__}: {err}); check the bucket "
                        f"and the S3_ENDPOINT_URL / AWS_* environment variables") from None
    if existing:
        raise UserError(f"--out: '{out}' already holds a dataset (index.json); choose a new prefix or pass --overwrite")
    return sink


def _upload_error(out: str, what: str, err: Exception) -> UserError:
    return UserError(f"--out: uploading {what} to '{out}' failed ({type(err).__name__}: {err}); check the "
                     f"destination and the S3_ENDPOINT_URL / AWS_* environment variables")


def _write(writer: MDSWriter, row: np.ndarray, out: str, remote: bool) -> None:
    try:
        writer.write(row)
    except Exception as err:
        if not remote or isinstance(err, ValueError):
            raise
        raise _upload_error(out, "shards", err) from None


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def prepare(inputs: Sequence[str], out: str, tokenizer: str, max_seq_len: int, workers: int = 1,
            skip_bad: bool = False, compression: Optional[str] = None, size_limit: str = "64mb",
            overwrite: bool = False, text_field: str = "text", filters: Sequence[str] = ()) -> PrepSummary:
    """Tokenize `inputs` into MDS shards at `out` (a local directory or an s3:// URI), with manifest.json."""
    if max_seq_len < 1:
        raise UserError(f"--max-seq-len: must be a positive number of tokens, got {max_seq_len}")
    if workers < 1:
        raise UserError(f"--workers: must be at least 1, got {workers}")
    selection = make_selection(text_field, filters)
    remote = _check_out(out)
    sources = find_inputs(inputs)
    # The `tokenizers` library alone: transformers (and streaming) import torch, ~1 GB of RSS.
    tokenizer_file = load_tokenizer_file(tokenizer, key="--tokenizer")
    eos_id = tokenizer_file.eos_id
    if eos_id is None:
        raise UserError(f"--tokenizer: '{tokenizer}' has no eos_token; set eos_token in its tokenizer_config.json")
    dtype = _token_dtype(tokenizer_file.vocab_size)
    summary = PrepSummary(out=out, max_seq_len=max_seq_len, dtype=dtype.name)
    tokenizer_json = tokenizer_file.json

    writer = _open_writer(out, remote, dtype, max_seq_len, compression, size_limit, overwrite)
    packer = _Packer(max_seq_len, eos_id, dtype)
    progress = _Progress()
    try:
        for source, ids, lengths in _encoded(_chunks(sources, summary, selection, skip_bad), tokenizer_json, workers):
            source.documents += len(lengths)
            new_tokens = int(lengths.sum()) + len(lengths)
            source.tokens += new_tokens
            for row in packer.add(ids, lengths):
                _write(writer, row, out, remote)
                summary.samples += 1
            progress.update(summary.documents, summary.tokens, new_tokens)
        if summary.samples == 0:
            raise UserError(f"--max-seq-len: the input has {summary.tokens:,} tokens in {summary.documents:,} "
                            f"documents, not enough for one sample of {max_seq_len}; lower --max-seq-len "
                            f"or add data")
        summary.dropped_tail_tokens = len(packer.carry)
        try:
            writer.finish()
        except Exception as err:
            if not remote:
                raise
            raise _upload_error(out, "shards and index.json", err) from None
        summary.shards = len(writer.shards)
        content = manifest(
            summary,
            tokenizer={"name": tokenizer, "sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest(),
                       "vocab_size": tokenizer_file.vocab_size, "eos_id": eos_id},
            options={"text_field": text_field, "filters": [str(f) for f in selection.filters],
                     "skip_bad": skip_bad, "compression": compression, "shard_size": size_limit})
        try:
            write_manifest(writer.sink, content)
        except Exception as err:
            if not remote:
                raise
            raise UserError(f"--out: uploading {MANIFEST_NAME} to '{out}' failed ({type(err).__name__}: {err}); "
                            f"the shards and index.json are there: upload the manifest again or re-run") from None
    except BaseException:
        # A half-written local dataset would look complete to a reader; remove it. (Remotely, no
        # index.json has been uploaded, so the partial shards are never read.)
        writer.sink.abort()
        raise
    finally:
        summary.seconds = progress.close()
    return summary


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="scripts/data_prep.py",
        description="Tokenize documents into packed MDS shards for `train_loader: {name: text}`, with a "
                    "manifest.json beside them. Formats: .jsonl/.ndjson/.json (JSON lines; optionally .gz or .zst "
                    "compressed, decompressed as read), .parquet and .arrow (a batch at a time), a Hugging Face "
                    "`datasets` save_to_disk folder, and any other file as one UTF-8 text document. Directories are "
                    "read recursively (hidden entries ignored). S3 credentials come from the environment "
                    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_ENDPOINT_URL), never from arguments. "
                    "docs/data.md lists the command for each source of the MPT-7B mix.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories")
    parser.add_argument("--out", required=True, help="output: a new local directory or an s3://bucket/prefix URI")
    parser.add_argument("--tokenizer", required=True, help="tokenizer name (e.g. EleutherAI/gpt-neox-20b) or directory")
    parser.add_argument("--max-seq-len", type=int, required=True, help="tokens per sample")
    parser.add_argument("--workers", type=int, default=1,
                        help="tokenizer processes (1: tokenize in this process); output is the same for any value")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip and count unreadable files and bad JSON lines instead of stopping")
    parser.add_argument("--compression", default=None,
                        help=f"shard compression: {', '.join(COMPRESSIONS)} or NAME:LEVEL (default none)")
    parser.add_argument("--shard-size", default="64mb", help="uncompressed bytes per shard, e.g. 64mb (default)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--text-field", default="text", metavar="NAME",
                        help="the field (JSON) or column (parquet, arrow) holding the document; a dotted name "
                             "such as content.text reaches into nested objects (default: text)")
    parser.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE[,VALUE]", dest="filters",
                        help="keep only records whose COLUMN is one of the values, e.g. lang=Python,Go; "
                             "repeat for several columns (all must match)")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    summary = prepare(args.inputs, args.out, args.tokenizer, args.max_seq_len, workers=args.workers,
                      skip_bad=args.skip_bad, compression=args.compression, size_limit=args.shard_size,
                      overwrite=args.overwrite, text_field=args.text_field, filters=args.filters)
    print("\n".join(summary.lines()), flush=True)
