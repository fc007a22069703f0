"""What data prep did, per input and in total: the summary it prints and the `manifest.json` it writes.

`manifest.json` sits beside `index.json` in the output so that a mix can be audited later: every
input file with its size and sha256, the tokenizer (name, sha256 of its tokenizer.json, EOS id),
max_seq_len, the options that select documents (--text-field, --filter, --skip-bad), and the counts
per input and in total. It holds no time stamp or worker count, so like the shards it is the same
bytes for the same inputs and options. The loader never reads it.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class InputFile:
    path: str
    bytes: int
    sha256: str


@dataclass
class InputSummary:
    """One INPUT argument: what was read from it and what became of it."""
    name: str
    files: list[InputFile] = field(default_factory=list)
    documents: int = 0
    empty_documents: int = 0  # documents with no text: nothing to train on, counted, not written
    filtered: int = 0  # records that --filter left out
    skipped: Counter = field(default_factory=Counter)  # reason -> count (with --skip-bad)
    tokens: int = 0  # EOS included

    def line(self) -> str:
        size = sum(f.bytes for f in self.files)
        skipped = sum(self.skipped.values())
        reasons = "; ".join(f"{n:,} x {reason}" for reason, n in self.skipped.most_common())
        return (f"  {self.name}: {len(self.files):,} files, {size / 1e6:,.1f} MB -> {self.documents:,} documents, "
                f"{self.tokens:,} tokens; {self.filtered:,} filtered out, {self.empty_documents:,} empty, "
                f"{skipped:,} skipped" + (f" ({reasons})" if reasons else ""))


@dataclass
class PrepSummary:
    out: str
    max_seq_len: int
    dtype: str
    inputs: list[InputSummary] = field(default_factory=list)
    samples: int = 0
    shards: int = 0
    dropped_tail_tokens: int = 0
    seconds: float = 0.0

    def _total(self, name: str) -> int:
        return sum(getattr(i, name) for i in self.inputs)

    @property
    def files(self) -> int:
        return sum(len(i.files) for i in self.inputs)

    @property
    def documents(self) -> int:
        return self._total("documents")

    @property
    def empty_documents(self) -> int:
        return self._total("empty_documents")

    @property
    def filtered(self) -> int:
        return self._total("filtered")

    @property
    def tokens(self) -> int:
        return self._total("tokens")

    @property
    def skipped(self) -> Counter:
        return sum((i.skipped for i in self.inputs), Counter())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def lines(self) -> list[str]:
        rate = self.tokens / max(self.seconds, 1e-9)
        out = [
            f"wrote {self.out}",
            f"  files       {self.files:,}",
            f"  documents   {self.documents:,} (+{self.empty_documents:,} empty, not written)",
            f"  filtered    {self.filtered:,} records left out by --filter",
            f"  tokens      {self.tokens:,} (EOS after each document; {rate:,.0f} tokens/s)",
            f"  samples     {self.samples:,} x {self.max_seq_len} tokens ({self.dtype})",
            f"  shards      {self.shards:,}",
            f"  dropped     {self.dropped_tail_tokens:,} tail tokens (less than one sample)",
            f"  skipped     {self.skipped_total:,} bad records",
        ]
        out += [f"    {n:,} x {reason}" for reason, n in self.skipped.most_common()]
        out.append("per input:")
        out += [i.line() for i in self.inputs]
        return out


def manifest(summary: PrepSummary, tokenizer: dict, options: dict) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "tokenizer": tokenizer,
        "max_seq_len": summary.max_seq_len,
        "dtype": summary.dtype,
        "options": options,
        "inputs": [{
            "input": i.name,
            "files": [vars(f) for f in i.files],
            "documents": i.documents,
            "empty_documents": i.empty_documents,
            "filtered": i.filtered,
            "skipped": dict(i.skipped.most_common()),
            "tokens": i.tokens,
        } for i in summary.inputs],
        "totals": {"files": summary.files, "documents": summary.documents, "tokens": summary.tokens,
                   "samples": summary.samples, "shards": summary.shards,
                   "dropped_tail_tokens": summary.dropped_tail_tokens},
    }


def write_manifest(sink, content: dict) -> None:
    """Into the finished output, beside index.json: `sink` is the shard writer's (llmtrain/data/mds.py),
    a local folder or an S3 prefix."""
    sink.put(MANIFEST_NAME, (json.dumps(content, indent=1) + "\n").encode("utf-8"))
