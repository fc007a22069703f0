"""Chaos: kill -9 a 2-rank run again and again, relaunch it with autoresume until it completes, and check it
against a run that never stopped.

    python benchmarks/chaos.py [--kills 20] [--seed 0] [--steps 120] [--every 10]

The run is tests/checkpoint's (yamls/tiny.yaml shrunk to d_model 32, 1 layer; 2 ranks through the composer
launcher on gloo; FSDP2 sharded checkpoints every --every steps; dropout on; 25-step epochs) with its
checkpoints on the local S3 test server (tests/objectstore.py; $LLMTRAIN_TEST_S3_BASE reuses a running
one). Each launch is killed (its process group: every rank and upload worker) at a seeded random point
anywhere in the rest of the run: mid-step between checkpoints, right after a checkpoint step (its save
or uploads in flight), or in the first steps after a resume. Every relaunch must resume right after the
newest checkpoint whose every object reached the bucket; every step any launch logged (loss, lr, tokens,
per-source data counts) and the final weights, optimizer and RNG states must equal the uninterrupted
run's bit for bit. Prints a summary; exit status 1 on any mismatch. Results: docs/reliability.md.

The default run is longer than the tests' 40 steps: a launch's upload worker needs ~20 s to start on a
2-core machine, and shorter launches would rarely leave a checkpoint in the bucket to resume from.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from llmtrain.checkpoint import read_checkpoint, safe_torch_load  # noqa: E402
from tests.checkpoint.conftest import run_overrides  # noqa: E402
from tests.checkpoint.harness import SEQ, Job, by_step, records  # noqa: E402
from tests.data.corpus import write_stream_shards  # noqa: E402
from tests.objectstore import CONFLICTING_ENV, INSTALL_HINT, ObjectStore, missing_programs  # noqa: E402

RUN_NAME = "resumable"  # tests/checkpoint/conftest.py's RESUMABLE names the run
COMPARED = ("loss", "lr", "tokens")  # and every data/<stream>/samples|tokens counter
KINDS = ("between checkpoints", "right after a save", "just after a resume")


@dataclass(frozen=True)
class Run:
    """One command (tests/checkpoint's resumable run, `steps` long) and where it writes: a local
    `save_folder` or an s3:// one on `store`."""
    dir: Path
    shards: Path
    save_folder: str
    steps: int
    every: int
    store: Optional[ObjectStore] = None

    @property
    def overrides(self) -> list[str]:
        return [*run_overrides(self.dir, self.shards, self.save_folder), f"max_duration={self.steps}ba",
                f"save_interval={self.every}ba"]

    def saved_files(self) -> list[str]:
        """Every file (object) in the save folder, by path relative to it."""
        folder = self.save_folder.format(run_name=RUN_NAME)
        if self.store is None:
            return [str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()]
        bucket, _, prefix = folder.removeprefix("s3://").partition("/")
        return [key[len(prefix) + 1:] for key in self.store.keys(bucket, prefix + "/")]

    def complete_checkpoints(self, ranks: int = 2) -> dict[int, str]:
        """{step: checkpoint} of the checkpoints whose index and every rank's shard are saved (uploaded)."""
        files = set(self.saved_files())
        names = {int(m.group(2)): m.group(1) for f in files if (m := re.fullmatch(r"(ep\d+-ba(\d+))/\.metadata", f))}
        return {step: name for step, name in sorted(names.items())
                if all(f"{name}/__{rank}_0.distcp" in files for rank in range(ranks))}

    def final_checkpoint(self) -> str:
        return f"{self.save_folder.format(run_name=RUN_NAME)}/{self.complete_checkpoints()[self.steps]}"


def s3_run(dir: Path, shards: Path, store: ObjectStore, steps: int, every: int) -> Run:
    """A run whose checkpoints go to a new bucket on `store`."""
    return Run(dir, shards, f"s3://{store.make_bucket(dir.name)}/runs/{{run_name}}/checkpoints", steps, every, store)


@dataclass
class Landing:
    """Where one launch's kill landed."""
    kind: str
    resumed_after: int      # the step it resumed after (0: a fresh start)
    killed_after: int       # the last step it logged before the kill
    newest_complete: int    # the newest complete checkpoint left after the kill: the next resume point


def wait_for_step(job: Job, step: int, timeout: float = 600) -> None:
    """Job.wait_for_step, polling every 20 ms: re-reading a long metrics.jsonl every 2 ms takes a core's
    third away from the ranks of a 2-core machine."""
    deadline = time.monotonic() + timeout
    while not any(r["step"] >= step for r in job.new_records()):
        assert job.proc.poll() is None, f"job ended (exit {job.proc.returncode}) before step {step}:\n{job.log()}"
        assert time.monotonic() < deadline, f"no step {step} after {timeout} s:\n{job.log()}"
        time.sleep(0.02)


def kill_somewhere(job: Job, rng: random.Random, resumed_after: int, run: Run) -> str:
    """Wait for a random point of this launch, anywhere in the rest of the run, and kill -9 it there;
    which kind of point it was."""
    last = run.steps - 2  # a kill after the wait must find the run still going
    saves = range((resumed_after // run.every + 1) * run.every, last + 1, run.every)
    kinds = [k for k in KINDS if (k != KINDS[1] or saves) and (k != KINDS[2] or resumed_after)]
    kind = rng.choice(kinds)
    if kind == KINDS[0]:
        wait_for_step(job, rng.choice([s for s in range(resumed_after + 1, last + 1) if s % run.every]))
        time.sleep(rng.uniform(0, 0.2))  # into the next step
    elif kind == KINDS[1]:
        wait_for_step(job, rng.choice(saves))
        time.sleep(rng.uniform(0, 0.5))  # shards being written, or their uploads in flight
    else:
        wait_for_step(job, resumed_after + rng.randint(1, 2))
    job.kill()
    return kind


def run_to_end(run: Run, wait_for_exit: bool = True) -> list[dict]:
    """Launch the run and let it finish; the records it logged. wait_for_exit=False stops it (kill -9) once
    its last step is logged and its final checkpoint is complete, skipping, on S3, Composer's wait for the
    `latest` symlink upload (it polls every 30 s)."""
    job = Job(run.overrides, run.dir)
    if wait_for_exit:
        return job.succeed(timeout=600)
    wait_for_step(job, run.steps)
    while run.steps not in run.complete_checkpoints() and job.proc.poll() is None:
        time.sleep(0.2)
    assert job.proc.poll() in (None, 0), f"exit {job.proc.returncode}:\n{job.log()}"
    return job.kill()


def chaos(run: Run, kills: int, seed: int, wait_for_exit: bool = True, say=print) -> list[Landing]:
    """Launch the run, kill it `kills` times at random points, relaunch until it completes (see
    run_to_end). Raises AssertionError when a launch does not resume right after the newest complete
    checkpoint (saved, and on S3 uploaded)."""
    rng = random.Random(seed)
    landings: list[Landing] = []
    expected = 0  # the step the next launch must resume after
    while True:
        began = time.perf_counter()
        if len(landings) == kills:
            new = run_to_end(run, wait_for_exit)
        else:
            job = Job(run.overrides, run.dir)
            kind = kill_somewhere(job, rng, expected, run)
            new = job.new_records()
            if run.store:
                time.sleep(1)  # an upload whose bytes were all sent may still be landing
            newest = max(run.complete_checkpoints(), default=0)
        resumed = new[0]["step"] - 1 if new else None
        assert resumed == expected, (f"launch {len(landings) + 1} resumed after step {resumed}, expected {expected}:"
                                     f"\n{job.log() if len(landings) < kills else ''}")
        if len(landings) == kills:
            say(f"last launch: resumed after {expected:2}, ran to step {new[-1]['step']} "
                f"({time.perf_counter() - began:.1f} s)")
            return landings
        landings.append(Landing(kind, expected, new[-1]["step"], newest))
        say(f"kill {len(landings):2}: {kind:19} resumed after {expected:2}, killed after step {new[-1]['step']:2}, "
            f"newest complete checkpoint {newest:2} ({time.perf_counter() - began:.1f} s)")
        expected = newest


def mismatches(run: Run, reference: Run) -> list[str]:
    """How `run` (every record of every launch, and its final checkpoint) differs from `reference`."""
    ref, out = by_step(reference.dir / "metrics.jsonl"), []
    logged = [r for r in records(run.dir / "metrics.jsonl") if "loss" in r]
    if sorted({r["step"] for r in logged}) != list(range(1, run.steps + 1)):
        out.append(f"steps logged: {sorted({r['step'] for r in logged})}")
    for r in logged:
        keys = [*COMPARED, *sorted(k for k in ref[r["step"]] if k.startswith("data/"))]
        out += [f"step {r['step']} {k}: {r.get(k)!r} != {ref[r['step']][k]!r}" for k in keys
                if r.get(k) != ref[r["step"]][k]]  # json floats round-trip exactly: == is bit-identical
    got, want = (read_checkpoint(r.final_checkpoint(), prefix="state.") for r in (run, reference))
    if got.batch != run.steps or want.batch != run.steps:
        out.append(f"final checkpoints at steps {got.batch}, {want.batch}")
    if sorted(got.tensors) != sorted(want.tensors):
        out.append(f"final checkpoint tensors differ in names: {sorted(set(got.tensors) ^ set(want.tensors))}")
    out += [f"final {name} differs" for name, t in want.tensors.items()
            if name in got.tensors and not torch.equal(got.tensors[name], t)]
    rng = [safe_torch_load(io.BytesIO(c.objects["state.callbacks.ResumeRng.rng"])) for c in (got, want)]
    for rank, (ours, theirs) in enumerate(zip(*rng)):
        if not (ours["python"] == theirs["python"] and torch.equal(ours["torch"], theirs["torch"])
                and all(np.array_equal(a, b) for a, b in zip(ours["numpy"], theirs["numpy"]))):
            out.append(f"rank {rank}'s final RNG state differs")
    return out


def start_store(base: Path) -> ObjectStore:
    """The S3 test server (the one at $LLMTRAIN_TEST_S3_BASE if set), this process's environment pointed at it."""
    if missing := missing_programs():
        sys.exit(f"error: the S3 test server needs {', '.join(missing)}: {INSTALL_HINT}")
    store = ObjectStore(Path(os.environ.get("LLMTRAIN_TEST_S3_BASE", base)))
    store.start()
    for name in CONFLICTING_ENV:
        os.environ.pop(name, None)
    os.environ.update(store.env)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--every", type=int, default=10, help="checkpoint interval, in steps")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = start_store(tmp / "objectstore")
        try:
            shards = write_stream_shards(tmp / "shards", ["python_stdlib", "licenses"], SEQ, 80)
            reference, run = (s3_run(tmp / name, shards, store, args.steps, args.every)
                              for name in ("reference", "chaos"))
            run_to_end(reference)
            print(f"uninterrupted run: {time.perf_counter() - began:.0f} s")
            try:
                landings = chaos(run, args.kills, args.seed)
            except AssertionError as err:  # a launch that failed, or resumed from the wrong checkpoint
                sys.exit(f"FAILED: {err}")
            wrong = mismatches(run, reference)
            logged = sum("loss" in r for r in records(run.dir / "metrics.jsonl"))
        finally:
            if "LLMTRAIN_TEST_S3_BASE" not in os.environ:
                store.stop()
    kinds = ", ".join(f"{sum(landing.kind == k for landing in landings)} {k}" for k in KINDS)
    print(f"seed {args.seed}: {len(landings)} kills ({kinds}), {len(landings) + 1} launches, "
          f"{time.perf_counter() - began:.0f} s in all")
    print("killed after steps: ", [landing.killed_after for landing in landings])
    print("resumed after steps:", [0] + [landing.newest_complete for landing in landings])
    if wrong:
        print(f"MISMATCH ({len(wrong)}):", *wrong[:20], sep="\n  ")
        sys.exit(1)
    print(f"bit-identical: all {logged} step records of {len(landings) + 1} launches, final weights, optimizer "
          "and RNG states")


if __name__ == "__main__":
    main()
