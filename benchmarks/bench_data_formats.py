"""P8: data prep's tokens/s and peak memory per input format, on generated corpora of any size.

    python benchmarks/bench_data_formats.py --mb 500 --formats jsonl,jsonl.zst --workers 1,2 --dir /tmp/p8

One corpus of --mb megabytes of text (Python's standard-library sources as documents, cycled with a
pass number until the size is reached, as bench_data.py's), written once per format: jsonl (the
reference), json.gz, jsonl.zst, parquet (row groups of 1,000 documents, with a `lang` column) and a
`datasets` folder (save_to_disk's layout: arrow IPC stream files and state.json). Each run is
`scripts/data_prep.py` in a child process; reported per run, as one JSON line on stdout: tokens,
seconds (wall, start-up included), tokens/s, peak RSS as wait4's ru_maxrss gives it (and `/usr/bin/time
-f %M`: on Linux the largest of data_prep and its reaped workers, not their sum), data_prep's own peak RSS
(its VmHWM, read every 0.1 s; Linux only), the peak RSS of it and its tokenizer workers together
(sampled every 0.1 s) and, every 30 s, both RSS then (`rss_timeline_s_own_with_workers_mb`: [seconds,
data_prep, with workers], to see memory stay flat). `--read` also times reading
each format alone (no tokenizer: how far the readers are from being the bottleneck) with that
reader's peak RSS; `--workers ''` runs only that. `--seconds S` stops each data_prep run after S seconds (SIGINT: it
removes its partial output) and reports the rate of its last progress line (printed every 10 s) and
the peak RSS until then: for a busy machine, where a whole 500 MB corpus takes most of an hour. Corpora and outputs are removed at the end unless --keep.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NEOX_NAME = "EleutherAI/gpt-neox-20b"
FORMATS = ("jsonl", "json.gz", "jsonl.zst", "parquet", "datasets")
LANGS = ("Python", "Markdown", "Go")


def documents(megabytes: float):
    """Standard-library sources, cycled with a pass number, until `megabytes` of text."""
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    budget, chars, rounds = int(megabytes * 1e6), 0, 0
    while True:
        for source in sources:
            try:
                text = source.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if rounds:
                text = f"# pass {rounds}\n{text}"
            yield text
            chars += len(text)
            if chars >= budget:
                return
        rounds += 1


def write_jsonl(path: Path, megabytes: float) -> None:
    with path.open("w") as out:
        for text in documents(megabytes):
            out.write(json.dumps({"text": text}) + "\n")


def _lines(reference: Path):
    with reference.open("rb") as f:
        yield from f


def _tables(reference: Path, rows: int = 1000):
    import pyarrow as pa

    batch: list[str] = []
    for line in _lines(reference):
        batch.append(json.loads(line)["text"])
        if len(batch) == rows:
            yield pa.table({"content": batch, "lang": [LANGS[i % 3] for i in range(len(batch))]})
            batch = []
    if batch:
        yield pa.table({"content": batch, "lang": [LANGS[i % 3] for i in range(len(batch))]})


def write_format(kind: str, reference: Path, root: Path) -> Path:
    """`reference` (jsonl) as `kind`, written a piece at a time."""
    if kind == "jsonl":
        return reference
    if kind == "json.gz":
        path = root / "corpus.json.gz"
        with gzip.open(path, "wb", compresslevel=6) as out:
            shutil.copyfileobj(reference.open("rb"), out, 1 << 20)
        return path
    if kind == "jsonl.zst":
        import zstandard

        path = root / "corpus.jsonl.zst"
        with path.open("wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out) as z:
            shutil.copyfileobj(reference.open("rb"), z, 1 << 20)
        return path
    if kind == "parquet":
        import pyarrow.parquet as pq

        path = root / "corpus.parquet"
        writer = None
        for table in _tables(reference):
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        writer.close()
        return path
    if kind == "datasets":
        import pyarrow as pa

        folder = root / "corpus-hf"
        folder.mkdir()
        names, sink, writer, size = [], None, None, 0
        for table in _tables(reference):
            if writer is None or size > 500e6:  # save_to_disk's default: shards of at most 500 MB
                if writer:
                    writer.close()
                    sink.close()
                names.append(f"data-{len(names):05}.arrow")
                sink = pa.OSFile(str(folder / names[-1]), "wb")
                writer, size = pa.ipc.new_stream(sink, table.schema), 0
            writer.write_table(table)
            size += table.nbytes
        writer.close()
        sink.close()
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
        (folder / "dataset_info.json").write_text("{}")
        return folder
    raise SystemExit(f"--formats: unknown format '{kind}'; choose from {', '.join(FORMATS)}")


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _own_hwm(pid: int) -> int:
    """The process's own peak RSS so far (VmHWM), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def _own_rss(pid: int) -> int:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def run_prep(source: Path, out: Path, kind: str, workers: int, seq: int, seconds: float = 0) -> dict:
    """One data_prep run; with `seconds`, it is interrupted then and its last progress line is the result."""
    cmd = [sys.executable, str(REPO / "scripts/data_prep.py"), str(source), "--out", str(out), "--tokenizer",
           NEOX_NAME, "--max-seq-len", str(seq), "--workers", str(workers)]
    if kind in ("parquet", "datasets"):
        cmd += ["--text-field", "content"]
    start = time.perf_counter()
    # SIGINT back to its default in the child: a shell's background job inherits it ignored, and then
    # Python installs no KeyboardInterrupt handler.
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    peak_tree, peak_own, interrupted, timeline, last_mark = 0, 0, False, [], start
    while True:  # reaped here, not by Popen, to get the child's rusage (ru_maxrss)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        tree = _tree_rss(child.pid)
        peak_tree = max(peak_tree, tree)
        peak_own = max(peak_own, _own_hwm(child.pid))
        if time.perf_counter() - last_mark >= 30:  # does memory grow as the run goes on?
            last_mark = time.perf_counter()
            timeline.append([round(last_mark - start), round(_own_rss(child.pid) / 2**20), round(tree / 2**20)])
        if seconds and not interrupted and time.perf_counter() - start > seconds:
            child.send_signal(signal.SIGINT)  # data_prep removes its partial output and exits
            interrupted = True
        time.sleep(0.1)
    wall = time.perf_counter() - start
    output, errors = child.stdout.read(), child.stderr.read()
    result = {"peak_rss_mb": round(usage.ru_maxrss / 1024), "peak_rss_own_mb": round(peak_own / 2**20),
              "peak_rss_with_workers_mb": round(peak_tree / 2**20),
              "rss_timeline_s_own_with_workers_mb": timeline}
    if interrupted:
        progress = [line for line in errors.splitlines() if line.startswith("data_prep: ") and "tokens/s" in line]
        if not progress:
            raise SystemExit(f"no progress line within {seconds} s: {' '.join(cmd)}")
        numbers = [int(w.replace(",", "")) for w in progress[-1].split() if w.replace(",", "").isdigit()]
        return {"stopped_after_s": round(wall), "documents": numbers[0], "tokens": numbers[1],
                "tokens_per_s": numbers[2], **result}
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"data_prep failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    tokens = int(next(line for line in output.splitlines() if line.strip().startswith("tokens")).split()[1].replace(",", ""))
    return {"tokens": tokens, "seconds": round(wall, 1), "tokens_per_s": round(tokens / wall), **result}


def read_only(source: str, text_field: str) -> None:
    """In a child process: read every document of `source` (no tokenizer), print counts, seconds, peak RSS."""
    import resource

    from llmtrain.data.fields import make_selection
    from llmtrain.data.records import Document
    from llmtrain.data.sources import find_inputs, read_records

    start = time.perf_counter()
    documents = chars = 0
    for path in find_inputs([source])[0].files:
        for record in read_records(path, make_selection(text_field)):
            if isinstance(record, Document):
                documents, chars = documents + 1, chars + len(record.text)
    seconds = time.perf_counter() - start
    print(json.dumps({"documents": documents, "text_mb": round(chars / 1e6), "seconds": round(seconds, 1),
                      "text_mb_per_s": round(chars / 1e6 / seconds, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def run_read(source: Path, kind: str) -> dict:
    field = "content" if kind in ("parquet", "datasets") else "text"
    done = subprocess.run([sys.executable, __file__, "--read-only", str(source), "--text-field", field],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=500, help="corpus size in MB of text (default 500)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--dir", default="/tmp/bench-data-formats", help="scratch folder (removed at the end)")
    parser.add_argument("--seconds", type=float, default=0,
                        help="stop each data_prep run after this long and report its rate so far (0: run to the end)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora in --dir for another run")
    parser.add_argument("--read", action="store_true",
                        help="also time reading each format alone (no tokenizer), with its peak RSS")
    parser.add_argument("--read-only", metavar="INPUT", help=argparse.SUPPRESS)  # the child of --read
    parser.add_argument("--text-field", default="text", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_only:
        return read_only(args.read_only, args.text_field)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        reference = root / "corpus.jsonl"
        if not reference.exists():
            write_jsonl(reference, args.mb)
        for kind in args.formats.split(","):
            source = _existing(kind, root) or write_format(kind, reference, root)
            size = sum(f.stat().st_size for f in ([source] if source.is_file() else source.iterdir()))
            if args.read:
                print(json.dumps({"format": kind, "input_mb": round(size / 1e6), "read_only": run_read(source, kind)}),
                      flush=True)
            for workers in [int(w) for w in args.workers.split(",") if w]:
                out = root / f"out-{kind}-{workers}"
                shutil.rmtree(out, ignore_errors=True)
                result = run_prep(source, out, kind, workers, args.seq, args.seconds)
                shutil.rmtree(out, ignore_errors=True)
                print(json.dumps({"format": kind, "input_mb": round(size / 1e6), "text_mb": args.mb,
                                  "workers": workers, **result}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _existing(kind: str, root: Path):
    path = {"jsonl": root / "corpus.jsonl", "json.gz": root / "corpus.json.gz", "jsonl.zst": root / "corpus.jsonl.zst",
            "parquet": root / "corpus.parquet", "datasets": root / "corpus-hf"}[kind]
    return path if path.exists() else None  # written by an earlier --keep run


if __name__ == "__main__":
    main()
