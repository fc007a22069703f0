"""Streaming shared-memory prefixes that several runs on one host can take at the same moment.

mosaicml-streaming names a dataset's shared memory `/dev/shm/NNNNNN_*` after a prefix that every rank
finds by scanning for the lowest one in use by nobody, and that the node's local leader then creates,
after a barrier. Two leaders scanning at once (two runs started together, or two node ranks of one run on
one host) find the same prefix and the second dies with `FileExistsError: '/000000_locals'`
(streaming #901); a non-leader that scans while another job registers can even find another prefix
than its own leader.

`race_free_prefixes()` puts `_allocate` in place of streaming's `get_shm_prefix` while a dataset is
built: only the local leader searches (with streaming's own search, which also refuses a local directory
that another live dataset uses) and creates the `locals` block, both while holding `host_lock()`; it
tells the other ranks of its node the prefix by an all-gather. No lock is held across a collective:
two node ranks of one run on one host each take the lock for their own leader, and a collective inside
the lock would deadlock them. Programs other than llmtrain do not take the lock, so they can still
race with a run, as they race with each other.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from tempfile import gettempdir
from typing import Iterator, Optional

import streaming.base.dataset as streaming_dataset
from streaming.base.constant import LOCALS, SHM_TO_CLEAN
from streaming.base.shared import SharedMemory
from streaming.base.shared.prefix import (_check_and_find_retrying, _check_self, _get_path, _pack_locals,
                                          _unpack_locals)
from torch import distributed as torch_dist

LOCK_NAME = "llmtrain_streaming_prefix.lock"


def _lock_path() -> Path:
    # Next to the names it guards: a process with a private /dev/shm (a container, a loopback test node)
    # has a private lock too.
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() else Path(gettempdir())) / LOCK_NAME


@contextmanager
def host_lock() -> Iterator[None]:
    """Exclusive, among llmtrain processes sharing this /dev/shm, while creating or removing streaming
    state. The kernel drops it when its holder dies, kill -9 included."""
    path = _lock_path()
    try:  # read-only and without O_CREAT when it exists: another user's file in sticky /dev/shm
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o444)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _gather(item: tuple) -> list[tuple]:
    if torch_dist.is_available() and torch_dist.is_initialized():
        items: list = [None] * torch_dist.get_world_size()
        torch_dist.all_gather_object(items, item)
        return items
    return [item]


def _allocate(streams_local: list[str], streams_remote: list[Optional[str]], world, retry: int = 100):
    """streaming's `get_shm_prefix(streams_local, streams_remote, world, retry)`, without its race."""
    _check_self(streams_local)
    prefix, shm, error = None, None, None
    if world.is_local_leader:
        try:
            with host_lock():
                prefix = max(_check_and_find_retrying(streams_local, streams_remote, name, retry)
                             for name in SHM_TO_CLEAN)
                data = _pack_locals(streams_local, prefix)
                shm = SharedMemory(_get_path(prefix, LOCALS), True, len(data))
                shm.buf[:len(data)] = data
        except ValueError as err:  # a local directory in use by a live dataset: every rank raises it
            error = str(err)
        except OSError as err:  # a block created meanwhile by a program that does not take the lock
            error = f"{type(err).__name__}: {err}"
    gathered = _gather((world.node, prefix, error))
    errors = [e for _, _, e in gathered if e]
    if errors:
        raise ValueError(errors[0])
    prefix = next(p for node, p, _ in gathered if node == world.node and p is not None)
    if not world.is_local_leader:
        shm = SharedMemory(_get_path(prefix, LOCALS), False)
        their_locals, _ = _unpack_locals(bytes(shm.buf))
        if their_locals != streams_local:
            raise RuntimeError(f"streaming shared memory prefix {prefix}: registered for {their_locals}, "
                               f"this rank's local directories are {streams_local}; every rank of a node "
                               "needs the same `local`")
    return prefix, shm


@contextmanager
def race_free_prefixes() -> Iterator[None]:
    """While building a StreamingDataset: its prefix comes from `_allocate`."""
    if not hasattr(streaming_dataset, "get_shm_prefix"):  # streaming's internals moved: fail loudly
        raise RuntimeError("streaming.base.dataset has no get_shm_prefix; update llmtrain/data/shm_prefix.py "
                           "for this mosaicml-streaming version")
    original = streaming_dataset.get_shm_prefix
    streaming_dataset.get_shm_prefix = _allocate
    try:
        yield
    finally:
        streaming_dataset.get_shm_prefix = original
