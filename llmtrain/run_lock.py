"""One live run per folder: the folders a run writes are locked while it runs.

Before anything is written (config.yaml, metrics.jsonl, the repair of `latest` in save_folder), global
rank 0 takes an exclusive flock on `<folder>/.llmtrain-run.lock` for the run's `run_dir` and its local
`save_folder`, and writes into that file who holds it (pid, host, run_name, start time). A second run on
one of those folders stops at once with one line naming the folder and the holder; nothing of the
first run is touched. The kernel drops a flock when its process dies, kill -9 included, so a crashed
run never blocks its relaunch (autoresume): there is no stale lock to judge. The file is removed when
the run ends; one left by a killed run is taken over.

Not covered: an `s3://` save_folder (an object store has no lock; its run_dir is locked), and
filesystems without flock (Linux NFSv4 has it).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from composer.utils import dist

from llmtrain.errors import UserError

LOCK_NAME = ".llmtrain-run.lock"


@dataclass(frozen=True)
class _Held:
    path: Path
    fd: int

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # while still holding it: a waiter re-checks the inode
        os.close(self.fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return (f"pid {info['pid']} on host {info['host']} (run_name '{info['run_name']}', "
                f"started {info['started']})")
    except (OSError, ValueError, KeyError):  # the holder has not written it yet
        return "a process that is starting"


def _lock(key: str, folder: Path, run_name: str) -> _Held:
    path = folder / LOCK_NAME
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"{key}: '{folder}': cannot write there ({err.strerror}); point {key} at a folder "
                            "this user can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{key}: '{folder}' is in use by a live run: {holder}, lock {path}; wait for it to "
                            f"end or stop it, or give this run its own run_name / {key}") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed the file as it ended: lock the one now there
    info = {"pid": os.getpid(), "host": socket.gethostname(), "run_name": run_name,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    data = json.dumps(info).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))  # after writing: a reader never sees an empty file in between
    return _Held(path, fd)


@contextmanager
def held(folders: dict[str, Path], run_name: str) -> Iterator[None]:
    """Hold the locks of `folders` ({config key: local folder}) on global rank 0 while the block runs;
    every rank raises the same UserError when one is taken. Call after dist init."""
    locks: list[_Held] = []
    error = None
    if dist.get_global_rank() == 0:
        try:
            for key, folder in folders.items():
                if all(folder.resolve() != lock.path.parent.resolve() for lock in locks):
                    locks.append(_lock(key, folder, run_name))
        except UserError as err:
            error = str(err)
    error = dist.all_gather_object(error)[0]  # every rank stops, none waits on rank 0 forever
    try:
        if error is not None:
            raise UserError(error)
        yield
    finally:
        for lock in locks:
            lock.release()
