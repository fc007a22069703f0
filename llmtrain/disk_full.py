"""A full disk (or a file-size limit) while training is one line naming where, not a traceback.

Composer writes checkpoints in place and re-points `latest` only after a save has finished, so a save cut
short by ENOSPC/EFBIG leaves the previous checkpoint as latest; the next autoresume removes the partial
one (llmtrain.checkpoint.repair_latest).
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from llmtrain.errors import UserError

# no space left, a file over the size limit (RLIMIT_FSIZE, the filesystem's), the quota used up
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _disk_full_cause(err: BaseException) -> Optional[OSError]:
    """The OSError behind `err` (itself, or what it was raised from or while handling) that says the disk
    is full. torch.save reports a failed write as a RuntimeError raised while handling it."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL:
            return err
        err = err.__cause__ or err.__context__
    return None


def _while_saving(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None:
        if "checkpoint" in os.path.basename(tb.tb_frame.f_code.co_filename):
            return True
        tb = tb.tb_next
    return False


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
        if _while_saving(err):
            raise UserError(f"save_folder: '{save_folder}': {what} while saving a checkpoint; the partial one is "
                            "not used: free space there (or point save_folder elsewhere) and relaunch with "
                            "autoresume=true to continue from the last complete checkpoint") from None
        raise UserError(f"{cause.filename or 'a file'}: {what} while writing it; free space there and relaunch "
                        "(with autoresume=true to continue from the last checkpoint)") from None
