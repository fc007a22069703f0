"""Several runs of one recipe on one machine at once, as a learning-rate sweep is run: scripts/train.py
processes started together, sharing the recipe's streaming cache root, /dev/shm and TMPDIR, as on any
one machine. Each run caches in its own folder (llmtrain/data/run_cache.py), takes its shared-memory
prefix without racing the others (llmtrain/data/shm_prefix.py) and locks the folders it writes
(llmtrain/run_lock.py)."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmtrain.checkpoint import read_checkpoint
from llmtrain.run_lock import LOCK_NAME
from tests.checkpoint.harness import LIVE, ROOT, SEQ, SMALL, SUBPROCESS_ENV, Job, by_step
from tests.data.corpus import write_stream_shards

pytestmark = pytest.mark.slow
STEPS, EVERY = 6, 2
LRS = {"a": 1e-3, "b": 3e-3, "c": 1e-2}  # the sweep
ONE_AT_A_TIME = """
import sys
from llmtrain.builders import load_config
from llmtrain.train import train
for overrides in sys.argv[1:]:
    train(load_config("yamls/tiny.yaml", overrides.split("\\n"))).close()
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_stream_shards(tmp_path_factory.mktemp("shards"), ["python_stdlib", "licenses"], SEQ, 80)


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    yield
    for job in list(LIVE):
        job.kill()


def sweep_overrides(root: Path, shards: Path, name: str, lr: float) -> list[str]:
    """Run `name` at learning rate `lr`; all runs under `root` share the cache root `root/cache`."""
    return [f"variables.data_remote={shards}", f"variables.data_local={root}/cache", f"run_name={name}",
            f"run_dir={root}/runs/{name}", f"save_folder={root}/runs/{{run_name}}/checkpoints",
            "autoresume=true", f"max_duration={STEPS}ba", f"save_interval={EVERY}ba", "scheduler.t_warmup=1ba",
            f"optimizer.lr={lr}"]


def sweep_run(root: Path, shards: Path, name: str, lr: float, harness_dir: Path | None = None) -> Job:
    """scripts/train.py with yamls/tiny.yaml shrunk (harness.SMALL); TMPDIR `root/tmp`, shared."""
    return Job(sweep_overrides(root, shards, name, lr), harness_dir or root / "runs" / name, nproc=1,
               tmp=root / "tmp")


def losses(run_dir: Path) -> list[float]:
    steps = by_step(run_dir / "metrics.jsonl")
    assert sorted(steps) == list(range(1, STEPS + 1))
    return [steps[s]["loss"] for s in sorted(steps)]


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def one_at_a_time(root: Path, shards: Path) -> None:
    """The sweep's runs one after another, in one process (it imports the stack once)."""
    runs = ["\n".join([*SMALL, *sweep_overrides(root, shards, name, lr)]) for name, lr in LRS.items()]
    (root / "tmp").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", ONE_AT_A_TIME, *runs], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **SUBPROCESS_ENV, "TMPDIR": str(root / "tmp")}, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_sweep_at_once_after_a_kill_equals_the_runs_one_at_a_time(tmp_path, shards):
    """Run a is killed with kill -9 mid-step; then its relaunch (autoresume, past the lock and shared
    memory the kill left) and two new runs b and c (other learning rates) start at the same moment. While a
    is paused after a checkpoint, the same run a is started again: it stops with one line naming a's
    save_folder and a's pid, a's files untouched. a, b and c end with the losses of the same runs done one
    at a time (a's as if it had never been killed)."""
    together = tmp_path / "together"
    killed = sweep_run(together, shards, "a", LRS["a"])
    killed.wait_for_step(EVERY + 1)  # its checkpoint at step 2 is saved, step 4 is running
    assert [r["step"] for r in killed.kill()][-1] < STEPS
    assert killed.proc.returncode == -signal.SIGKILL
    assert (together / "runs" / "a" / LOCK_NAME).exists()  # left by the kill: the relaunch must take it over

    jobs = {name: sweep_run(together, shards, name, lr) for name, lr in LRS.items()}
    first = jobs["a"]
    first.wait_for_step(2 * EVERY + 1)  # its checkpoint at step 4 is saved
    os.kill(first.proc.pid, signal.SIGSTOP)  # a live run that holds its folders for as long as we like
    try:
        checkpoints = together / "runs" / "a" / "checkpoints"
        before = files(checkpoints)
        started = time.perf_counter()
        duplicate = sweep_run(together, shards, "a", LRS["a"], harness_dir=tmp_path / "duplicate")
        assert duplicate.wait(120) == 2, duplicate.log()
        print(f"duplicate run stopped after {time.perf_counter() - started:.1f} s")
        output = duplicate.log()
        assert "Traceback" not in output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, output
        assert re.fullmatch(rf"error: save_folder: '{re.escape(str(checkpoints))}' is in use by a live run: "
                            rf"pid {first.proc.pid} on host \S+ \(run_name 'a', started [^)]+\), lock "
                            rf"{re.escape(str(checkpoints / LOCK_NAME))}; wait for it to end or stop it, or give "
                            r"this run its own run_name / save_folder", errors[0]), errors[0]
        assert files(checkpoints) == before and "ep0-ba4-rank0.pt" in before
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    for job in jobs.values():
        job.succeed()
    assert jobs["a"].new_records()[0]["step"] == EVERY + 1  # resumed from the checkpoint the kill left
    assert read_checkpoint(str(checkpoints / "latest-rank0.pt")).batch == STEPS
    assert not list((together / "runs").rglob(LOCK_NAME))  # every run removed its locks as it ended
    assert sorted(p.name for p in (together / "cache" / "licenses").iterdir()) == ["a", "b", "c"]

    alone = tmp_path / "alone"
    one_at_a_time(alone, shards)
    for name in LRS:
        assert losses(together / "runs" / name) == losses(alone / "runs" / name), name  # bit-identical
    assert len({tuple(losses(alone / "runs" / name)) for name in LRS}) == 3  # a sweep: three runs apart
