"""Remove what a killed run left of mosaicml-streaming's coordination state.

StreamingDataset coordinates ranks and workers through POSIX shared memory named `NNNNNN_<what>`
(`/dev/shm/000010_locals`, ...) under a per-dataset prefix NNNNNN, and file locks
`$TMPDIR/NNNNNN_{barrier,cache}_filelock`. A run killed with its whole process group leaves them
behind, and a later run then fails with `FileExistsError: /000010_locals` or "Reused local directory".

streaming's own `clean_stale_shared_memory()` unlinks *every* such block, including those of other
jobs alive on the same machine. Here a prefix is stale when:
  * we recorded its owner (`record_owner`, called for every dataset our loader builds) and that
    process is gone, or
  * it has no owner record and no live process maps any of its blocks (/proc/*/maps).
Mapping alone is not proof of life: looking for a free prefix, streaming maps the blocks of every
prefix below its own and keeps them mapped, so a dead run's blocks stay mapped by whoever scanned
them; hence the owner records. Without /proc (macOS) streaming's function is used.

It runs holding shm_prefix.host_lock(), which llmtrain's runs also hold while they create a prefix: a
block just created and not yet mapped is never taken for a stale one.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from tempfile import gettempdir
from typing import Optional

from streaming.base.constant import BARRIER_FILELOCK, CACHE_FILELOCK, LOCALS, SHM_TO_CLEAN

from llmtrain.data.shm_prefix import host_lock

_SHM_DIR = Path("/dev/shm")
_SHM_NAME = re.compile(r"^(\d{6})_(%s)$" % "|".join(map(re.escape, SHM_TO_CLEAN)))
_LOCK_NAME = re.compile(r"^(\d{6})_(%s|%s)$" % (BARRIER_FILELOCK, CACHE_FILELOCK))
_OWNER_NAME = re.compile(r"^llmtrain_streaming_(\d{6})\.owner$")


def _start_time(pid: int) -> Optional[str]:
    """The process's start time (clock ticks since boot), which tells a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may contain spaces


def _locals_inode(prefix: str) -> Optional[int]:
    try:
        return (_SHM_DIR / f"{prefix}_{LOCALS}").stat().st_ino
    except OSError:
        return None


def _owner_path(prefix: str) -> Path:
    return Path(gettempdir()) / f"llmtrain_streaming_{prefix}.owner"


def record_owner(prefix_int: int) -> None:
    """Note that this process owns the streaming blocks of `prefix_int` (call on the local leader)."""
    if not Path("/proc/self/stat").exists():
        return
    prefix = f"{prefix_int:06}"
    record = {"pid": os.getpid(), "start": _start_time(os.getpid()), "locals_inode": _locals_inode(prefix)}
    _owner_path(prefix).write_text(json.dumps(record))


def _owner_is_dead(prefix: str) -> Optional[bool]:
    """True/False when the blocks of `prefix` are those a recorded owner made; None without a record."""
    try:
        record = json.loads(_owner_path(prefix).read_text())
    except (OSError, ValueError):
        return None
    if record.get("locals_inode") is None or record["locals_inode"] != _locals_inode(prefix):
        return None  # the blocks now under this prefix belong to a later dataset
    return _start_time(record["pid"]) != record["start"]


def _mapped_shm_names() -> set[str]:
    """Names of the /dev/shm files that some live process has mapped."""
    names = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process exited meanwhile, or is not ours to read
            continue
        for line in text.splitlines():
            at = line.find("/dev/shm/")
            if at >= 0:
                names.add(line[at + len("/dev/shm/"):].split(" ")[0])
    return names


def clean_stale_streaming_state() -> list[str]:
    """Unlink the shared memory, locks and owner records of stale prefixes; returns what was removed."""
    with host_lock():
        return _clean_stale_streaming_state()


def _clean_stale_streaming_state() -> list[str]:
    if not (Path("/proc/self/maps").exists() and _SHM_DIR.is_dir()):
        from streaming.base.util import clean_stale_shared_memory
        clean_stale_shared_memory()
        return []
    tmp = Path(gettempdir())
    files: dict[str, list[Path]] = {}
    for folder, pattern in ((_SHM_DIR, _SHM_NAME), (tmp, _LOCK_NAME), (tmp, _OWNER_NAME)):
        for path in folder.iterdir():
            match = pattern.match(path.name)
            if match:
                files.setdefault(match.group(1), []).append(path)
    mapped_prefixes = {name[:6] for name in _mapped_shm_names() if _SHM_NAME.match(name)}
    removed = []
    for prefix, paths in files.items():
        dead = _owner_is_dead(prefix)
        stale = dead if dead is not None else prefix not in mapped_prefixes
        if not stale:
            continue
        for path in paths:
            try:
                path.unlink()
                removed.append(str(path))
            except OSError:  # cleaned by another process first, or another user's: not ours to remove
                pass
    return removed
