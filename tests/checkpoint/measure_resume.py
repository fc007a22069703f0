"""Resume time: process start → first step logged, fresh start vs autoresume (numbers for docs/performance.md).

    python tests/checkpoint/measure_resume.py [--repeats 3] [--nproc 2]

The tests' 2-rank FSDP2 CPU run (d_model 32, 1 layer): a fresh start (autoresume on an empty save
folder) against a relaunch that resumes the checkpoint at step 10 (sharded on 2 ranks, full on 1) of a
run killed at step 12, alternated.
"""
import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmtrain.data.prep import prepare  # noqa: E402
from llmtrain.data.tokenizer import NEOX_NAME, install_tokenizers  # noqa: E402
from tests.checkpoint.conftest import run_overrides  # noqa: E402
from tests.checkpoint.harness import SEQ, Job  # noqa: E402
from tests.data.corpus import make_documents  # noqa: E402


def make_shards(root: Path) -> Path:
    install_tokenizers()
    for seed, name in enumerate(["python_stdlib", "licenses"]):
        docs = root / f"raw_{name}"
        docs.mkdir(parents=True)
        for i, doc in enumerate(make_documents(80, seed=seed)):
            (docs / f"{i:03}.txt").write_text(doc)
        prepare([str(docs)], str(root / name), NEOX_NAME, SEQ)
    return root


def first_step_seconds(run: Path, shards: Path, nproc: int) -> tuple[float, int]:
    overrides = run_overrides(run, shards)
    job = Job(overrides, run, nproc)
    job.wait_until(lambda: job.new_records(), "a first step")
    seconds = time.perf_counter() - job.started
    step = job.new_records()[0]["step"]
    job.kill()
    return seconds, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp, "shards"))
        saved = Path(tmp, "saved")  # a run killed at step 12: checkpoints at 5 and 10
        job = Job(run_overrides(saved, shards), saved, args.nproc)
        job.wait_for_step(12)
        job.kill()
        times = {"fresh": [], "resume": []}
        for i in range(args.repeats):
            fresh, step = first_step_seconds(Path(tmp, f"fresh{i}"), shards, args.nproc)
            assert step == 1
            times["fresh"].append(fresh)
            resumed = Path(tmp, f"resumed{i}")
            shutil.copytree(saved, resumed, symlinks=True)
            (resumed / "metrics.jsonl").unlink()
            shutil.rmtree(resumed / "cache")  # as cold as the fresh start's
            seconds, step = first_step_seconds(resumed, shards, args.nproc)
            assert step == 11, step
            times["resume"].append(seconds)
        fresh, resume = statistics.median(times["fresh"]), statistics.median(times["resume"])
        print(f"{args.nproc} process(es), median of {args.repeats}: fresh start → step 1 {fresh:.2f} s "
              f"{[round(t, 2) for t in times['fresh']]}; resume → step 11 {resume:.2f} s "
              f"{[round(t, 2) for t in times['resume']]}; ratio {resume / fresh:.2f}")


if __name__ == "__main__":
    main()
