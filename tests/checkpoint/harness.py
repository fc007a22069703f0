"""Launch scripts/train.py (1 process, or 2 ranks through the composer launcher), watch its
metrics.jsonl and kill -9 the whole job: the pieces of the checkpoint tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
SEQ = 32
# yamls/tiny.yaml (LION, cosine warm-up schedule, gradient clipping, a shuffled 2-stream mix) shrunk to
# d_model 32, 1 layer, seq 32, by overrides only.
SMALL = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", f"variables.max_seq_len={SEQ}",
         "global_train_batch_size=4", "device_train_microbatch_size=2", "console_log_interval=1ba"]
# No GPUs (a CPU test), and this tree's llmtrain whatever the venv's editable install points at.
SUBPROCESS_ENV = {"CUDA_VISIBLE_DEVICES": "",
                  "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(nproc: int) -> list[str]:
    """The command prefix that runs a script on `nproc` local ranks through Composer's launcher."""
    return [sys.executable, "-m", "composer.cli.launcher", "-n", str(nproc), "--master_port", str(free_port())]


def python_or_launcher(nproc: int) -> list[str]:
    """One process: plain python; more: Composer's launcher."""
    return [sys.executable] if nproc == 1 else launcher(nproc)


def command(overrides: list[str], nproc: int) -> list[str]:
    return [*python_or_launcher(nproc), "scripts/train.py", "yamls/tiny.yaml", *SMALL, *overrides]


def records(metrics: Path) -> list[dict]:
    """The complete records of a metrics.jsonl that a live run may be appending to: a line without its
    newline yet is still being written (polling read one cut short at character 1002)."""
    text = metrics.read_text() if metrics.exists() else ""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def by_step(metrics: Path) -> dict[int, dict]:
    """metrics.jsonl by step, each step's records merged in order: a resumed run appends the steps it
    re-ran (their values win), and metrics logged after the last step come as one more record."""
    out: dict[int, dict] = {}
    for r in records(metrics):
        out[r["step"]] = {**out.get(r["step"], {}), **r} if "loss" not in r else r
    return out


LIVE: set[Job] = set()  # launched and not yet waited for; killed after each test (conftest.py)


class Job:
    """One launch of a training command in its own process group (so kill() takes every rank)."""

    def __init__(self, overrides: list[str], run_dir: Path, nproc: int = 2, tmp: Path | None = None):
        """`tmp`: TMPDIR (streaming's file locks and owner records), default a folder of the job's own."""
        self.metrics = run_dir / "metrics.jsonl"
        self.first_line = len(records(self.metrics))  # records before this launch belong to earlier ones
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / f"job-{time.time_ns()}.log"
        self._log = self.log_path.open("w")
        self.started = time.perf_counter()
        tmp = tmp or run_dir / "tmp"  # Composer's temp folders (S3 staging, downloads) die with the test's tmp_path
        tmp.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(command(overrides, nproc), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **SUBPROCESS_ENV, "TMPDIR": str(tmp)}, start_new_session=True)
        LIVE.add(self)

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def new_records(self) -> list[dict]:
        """This launch's training-step records (not the extra one metrics logged after the last step make)."""
        return [r for r in records(self.metrics)[self.first_line:] if "loss" in r]

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()
            LIVE.discard(self)

    def succeed(self, timeout: float = 300) -> list[dict]:
        rc = self.wait(timeout)
        assert rc == 0, f"exit {rc}:\n{self.log()}"
        return self.new_records()

    def wait_until(self, done, what: str, timeout: float = 300) -> None:
        """Poll every few ms until done() is true; the job must still be running."""
        deadline = time.monotonic() + timeout
        while not done():
            if self.proc.poll() is not None:
                raise AssertionError(f"job ended (exit {self.proc.returncode}) before {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout} s:\n{self.log()}")
            time.sleep(0.002)

    def wait_for_step(self, step: int, timeout: float = 300) -> float:
        """Wait until this launch has logged `step`; seconds since launch."""
        self.wait_until(lambda: any(r["step"] >= step for r in self.new_records()), f"step {step}", timeout)
        return time.perf_counter() - self.started

    def pause_ranks(self, pause: bool = True) -> None:
        """SIGSTOP (or, pause=False, SIGCONT) the training processes, i.e. the launcher's children, not
        the upload workers they started."""
        for rank in psutil.Process(self.proc.pid).children():
            rank.suspend() if pause else rank.resume()

    def kill(self) -> list[dict]:
        """kill -9 the launcher's process group: every rank at once, no clean-up code runs. The records
        this launch wrote."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group has exited already
            pass
        self.wait()
        return self.new_records()
