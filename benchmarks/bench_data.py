"""Data path throughput on this machine: data prep (tokenize + pack + write MDS) and the `text` loader.

    python benchmarks/bench_data.py [--mb 8] [--seq 2048] [--batch 8]

The corpus is real text already on every machine: Python's standard library sources, as JSON lines
(one document per file), capped at --mb megabytes. Prints one table; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sysconfig
import tempfile
import time
from pathlib import Path

# llmtrain imports live inside the functions: data prep's worker processes re-import this file.
NEOX_NAME = "EleutherAI/gpt-neox-20b"


def write_corpus(path: Path, megabytes: float) -> tuple[int, int]:
    """Stdlib .py files as JSON lines until `megabytes` of text; returns (documents, characters)."""
    budget = int(megabytes * 1e6)
    docs = chars = 0
    with path.open("w") as out:
        for source in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
            try:
                text = source.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            out.write(json.dumps({"text": text}) + "\n")
            docs, chars = docs + 1, chars + len(text)
            if chars >= budget:
                break
    return docs, chars


def bench_prep(corpus: Path, out: Path, seq: int, workers: int, compression: str | None):
    from llmtrain.data.prep import prepare

    start = time.perf_counter()
    summary = prepare([str(corpus)], str(out), NEOX_NAME, max_seq_len=seq, workers=workers,
                      compression=compression)
    seconds = time.perf_counter() - start  # wall time including tokenizer load and worker start-up
    return summary, seconds


def bench_loader(mds: Path, seq: int, batch: int, workers: int, tokenizer) -> tuple[int, float, float]:
    """(tokens after the first batch, their seconds, seconds to the first batch incl. worker start)."""
    from llmtrain.data.text import build_text_dataloader

    section = {"dataset": {"local": str(mds), "max_seq_len": seq, "shuffle": True},
               "num_workers": workers, "persistent_workers": False, "drop_last": False}
    loader = build_text_dataloader(section, tokenizer, batch).dataloader
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter()
    tokens = sum(b["input_ids"].numel() for b in batches)
    return tokens, time.perf_counter() - first, first - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=8, help="corpus size in MB of text (default 8)")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    from llmtrain.data.tokenizer import build_tokenizer, install_tokenizers

    install_tokenizers()
    tokenizer = build_tokenizer(NEOX_NAME)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        root = Path(tmp)
        docs, chars = write_corpus(root / "corpus.jsonl", args.mb)
        for workers, compression in ((1, None), (2, None), (2, "zstd")):
            out = root / f"mds-{workers}-{compression}"
            summary, seconds = bench_prep(root / "corpus.jsonl", out, args.seq, workers, compression)
            size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
            rows.append((f"data_prep --workers {workers}" + (f" --compression {compression}" if compression else ""),
                         summary.tokens, seconds, f"{chars / 1e6 / seconds:.2f} MB text/s, {size:.0f} MB out"))
        for workers in (0, 2):
            for name in ("mds-2-None", "mds-2-zstd"):
                tokens, seconds, startup = bench_loader(root / name, args.seq, args.batch, workers, tokenizer)
                kind = "zstd shards" if name.endswith("zstd") else "raw shards"
                rows.append((f"text loader num_workers={workers}, {kind}", tokens, seconds,
                             f"{tokens / args.seq / seconds:,.0f} samples/s after the first batch "
                             f"({startup:.2f} s to it)"))
    print(f"corpus: {docs:,} documents, {chars / 1e6:.1f} MB of text (Python stdlib sources); "
          f"seq {args.seq}, batch {args.batch}; {os.cpu_count()} CPU cores")
    print(f"{'what':<48} {'tokens':>12} {'seconds':>8} {'tokens/s':>12}  notes")
    for what, tokens, seconds, notes in rows:
        print(f"{what:<48} {tokens:>12,} {seconds:>8.2f} {tokens / seconds:>12,.0f}  {notes}")


if __name__ == "__main__":
    main()
