"""Stress: many fresh-process reads of MDS shards from the local S3 server with DataLoader workers.

    python benchmarks/bench_s3_workers.py [--reads 100] [--workers 2] [--no-fix] [--samples 2000]

Each read is a new Python process that builds a StreamingDataset on a fresh local dir and reads
every sample through a StreamingDataLoader with --workers workers, checking each sample is there
once and intact (tests/data/test_s3_workers.py's read_all). --no-fix leaves out
llmtrain.data.remote.worker_init_fn, to show the failure it fixes. Starts its own server in a temp
dir (needs scripts/objectstore/install.sh), or uses $LLMTRAIN_TEST_S3_BASE's.
Prints one line per read and a summary: failures by kind, hangs, median seconds per read.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.objectstore import ObjectStore  # noqa: E402  (after the path set-up)

HANG_S = 120  # a read still running after this long counts as a hang
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")

READ = """
import sys
from tests.data.test_s3_workers import read_all
from llmtrain.data.remote import worker_init_fn
remote, workers, samples, fix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "fix"
print(f"{read_all(remote, workers, worker_init_fn if fix else None, samples):.2f}")
"""


def one_read(remote: str, args, env: dict) -> tuple[str, float]:
    """('ok' | 'hang' | the error's last line, seconds) for one read in a fresh process."""
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-W", "ignore", "-c", READ, remote, str(args.workers),
                               str(args.samples), "nofix" if args.no_fix else "fix"],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        return "hang", time.monotonic() - start
    if done.returncode == 0:
        return "ok", time.monotonic() - start
    # The first exception line: a worker thread's real error (zstd, IndexError) comes before the
    # DataLoader timeout that it causes.
    errors = [line for line in done.stderr.splitlines() if ERROR_LINE.match(line)]
    return (errors[0] if errors else f"exit {done.returncode}")[:160], time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--no-fix", action="store_true", help="read without llmtrain's worker_init_fn")
    args = parser.parse_args()

    from tests.data.test_s3_workers import write_numbered_shards

    reused = os.environ.get("LLMTRAIN_TEST_S3_BASE")
    server = ObjectStore(Path(reused) if reused else Path(tempfile.mkdtemp(prefix="bench-s3-")))
    server.start()
    try:
        env = {**os.environ, **server.env, "PYTHONPATH": str(REPO)}
        os.environ.update(server.env)
        remote = f"s3://{server.make_bucket('bench')}/numbered"
        write_numbered_shards(remote, args.samples)
        outcomes, seconds = collections.Counter(), []
        for i in range(args.reads):
            outcome, took = one_read(remote, args, env)
            outcomes[outcome] += 1
            seconds.append(took)
            print(f"read {i:4d}  {took:6.2f}s  {outcome}", flush=True)
    finally:
        if not reused:
            server.stop()
    failed = args.reads - outcomes["ok"]
    print(f"\n{'without' if args.no_fix else 'with'} worker_init_fn, {args.workers} workers: "
          f"{failed} of {args.reads} reads failed; median {statistics.median(seconds):.2f}s per read")
    for outcome, count in outcomes.most_common():
        if outcome != "ok":
            print(f"  {count:4d} x {outcome}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
