"""A full disk (or a file-size limit) while training is one line naming where, not a traceback.

Composer writes checkpoints in place and re-points `latest` only after a save has finished, so a save cut
short by ENOSPC/EFBIG leaves the previous checkpoint as latest; the next autoresume removes the partial
one (llmtrain/checkpoint/folder.py, `repair_latest`). A save is known by its own marker: `mark_saves` tags
whatever the CheckpointSaver's save raises.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from llmtrain.errors import UserError, causes

# no space left, a file over the size limit (RLIMIT_FSIZE, the filesystem's), the quota used up
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
SAVING = "_llmtrain_while_saving_a_checkpoint"  # the attribute `mark_saves` sets on what a save raised


def mark_saves(saver) -> None:
    """Tag every exception Composer's CheckpointSaver `saver` (None: no saving) raises while it saves."""
    if saver is None:
        return
    save = saver._save_checkpoint

    def marked(state, logger):
        try:
            return save(state, logger)
        except BaseException as err:
            setattr(err, SAVING, True)
            raise

    saver._save_checkpoint = marked


def _disk_full_cause(err: BaseException) -> Optional[OSError]:
    """The OSError behind `err` (itself, or what it was raised from or while handling) that says the disk
    is full. torch.save reports a failed write as a RuntimeError raised while handling it."""
    return next((c for c in causes(err) if isinstance(c, OSError) and c.errno in _FULL), None)


@contextmanager
def reported(save_folder: Optional[str]) -> Iterator[None]:
    """Turn a disk-full error raised inside into a UserError naming the file or save_folder."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        cause = _disk_full_cause(err)
        if cause is None:
            raise
        what = f"out of disk space ({os.strerror(cause.errno)})"
        if any(getattr(c, SAVING, False) for c in causes(err)):
            raise UserError(f"save_folder: '{save_folder}': {what} while saving a checkpoint; the partial one is "
                            "not used: free space there (or point save_folder elsewhere) and relaunch with "
                            "autoresume=true to continue from the last complete checkpoint") from None
        raise UserError(f"{cause.filename or 'a file'}: {what} while writing it; free space there and relaunch "
                        "(with autoresume=true to continue from the last checkpoint)") from None
