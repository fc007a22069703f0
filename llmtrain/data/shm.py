"""Remove what a killed run left of mosaicml-streaming's coordination state.

StreamingDataset coordinates ranks and workers through POSIX shared memory named `NNNNNN_<what>`
(`/dev/shm/000010_locals`, ...) and file locks `$TMPDIR/NNNNNN_{barrier,cache}_filelock`. A run that
is killed with its whole process group leaves them behind, and the next run then fails with
`FileExistsError: /000010_locals` or "Reused local directory".

streaming's own `clean_stale_shared_memory()` unlinks *every* such block, including those of other
jobs that are alive on the same machine. Here a prefix is stale only when no live process maps any
of its blocks (read from /proc/*/maps), so a concurrent run is never disturbed. This errs on the
safe side: while looking for a free prefix, streaming also maps the blocks of the prefixes below it,
so a live process that scanned a dead run's blocks keeps them "alive" until it exits. Without /proc
(macOS) streaming's function is used.
"""
from __future__ import annotations

import re
from pathlib import Path
from tempfile import gettempdir

from streaming.base.constant import BARRIER_FILELOCK, CACHE_FILELOCK, SHM_TO_CLEAN

_SHM_DIR = Path("/dev/shm")
_SHM_NAME = re.compile(r"^(\d{6})_(%s)$" % "|".join(map(re.escape, SHM_TO_CLEAN)))
_LOCK_NAME = re.compile(r"^(\d{6})_(%s|%s)$" % (BARRIER_FILELOCK, CACHE_FILELOCK))


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
    """Unlink streaming's shared memory and file locks that no live process uses; returns their paths."""
    if not (Path("/proc/self/maps").exists() and _SHM_DIR.is_dir()):
        from streaming.base.util import clean_stale_shared_memory
        clean_stale_shared_memory()
        return []
    mapped = _mapped_shm_names()
    live_prefixes = {m.group(1) for m in map(_SHM_NAME.match, mapped) if m}
    stale = [path for path in _SHM_DIR.iterdir()
             if (m := _SHM_NAME.match(path.name)) and path.name not in mapped and m.group(1) not in live_prefixes]
    # A lock is stale when nothing of its prefix is alive: a dataset maps its blocks before it locks.
    stale += [path for path in Path(gettempdir()).iterdir()
              if (m := _LOCK_NAME.match(path.name)) and m.group(1) not in live_prefixes]
    removed = []
    for path in stale:
        try:
            path.unlink()
            removed.append(str(path))
        except OSError:  # cleaned by another process first, or another user's: not ours to remove
            pass
    return removed
