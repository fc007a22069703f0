"""Checkpoint uploads to an object store (`save_folder: s3://...`) that wait out an outage, by the same policy as
data reads (llmtrain/retry.py): Composer's uploader makes 3 quick attempts, none at all for "connection refused".
"""
from __future__ import annotations

import os
import shutil
import uuid
from typing import Any

from composer.utils import RemoteUploader
from composer.utils.object_store.utils import build_remote_backend

from llmtrain.retry import retry_through_outage


def upload_through_outage(remote_backend_name: str, backend_kwargs: dict, remote_file_name: str,
                          local_file_path: str, overwrite: bool, limit: float, stopping) -> int:
    """Composer's `_upload_file_to_object_store` (run in its upload worker processes), retrying through
    outages for `limit` seconds instead of 3 quick attempts that an unreachable endpoint does not survive;
    no more retries once the `stopping` event (a multiprocessing Manager's) is set."""
    store = build_remote_backend(remote_backend_name, backend_kwargs)
    uri = store.get_uri(remote_file_name)
    checked = overwrite

    def attempt() -> None:
        nonlocal checked
        if not checked:  # once only: after a retry the object may be ours, uploaded before the error
            try:
                store.get_object_size(remote_file_name)
            except FileNotFoundError:
                pass
            else:
                raise FileExistsError(f"{uri} exists already; set save_overwrite: true to overwrite it")
            checked = True
        store.upload_object(object_name=remote_file_name, filename=local_file_path)

    retry_through_outage(attempt, f"save_folder: uploading {uri}", uri, limit=limit, give_up=lambda: _is_set(stopping))
    os.remove(local_file_path)
    return 0


def _is_set(event) -> bool:
    try:
        return event.is_set()
    except (OSError, EOFError):  # the Manager holding it is gone with the run's main process
        return True


class PatientRemoteUploader(RemoteUploader):
    """Composer's checkpoint uploader, each upload retrying through outages (`upload_through_outage`)."""

    def __init__(self, remote_folder: str, limit: float, **kwargs: Any):
        super().__init__(remote_folder, **kwargs)
        self.limit = limit

    def upload_file_async(self, remote_file_name: str, file_path, overwrite: bool):
        # As RemoteUploader's: a copy in the staging folder (the checkpoint may be rotated away meanwhile).
        staged = os.path.join(self._upload_staging_folder, str(uuid.uuid4()))
        os.makedirs(self._upload_staging_folder, exist_ok=True)
        shutil.copy2(file_path, staged)
        future = self.upload_executor.submit(
            upload_through_outage, remote_backend_name=self.remote_backend_name, backend_kwargs=self.backend_kwargs,
            remote_file_name=remote_file_name, local_file_path=staged, overwrite=overwrite, limit=self.limit,
            stopping=self.is_remote_upload_failed)
        self.futures.append(future)
        return future

    def wait_and_close(self):
        # Called as the run ends; after a failure, with uploads queued or retrying. Those still try once each,
        # but do not wait out an outage each in turn, delaying the exit by a multiple of the limit.
        self.is_remote_upload_failed.set()
        super().wait_and_close()


def retry_checkpoint_uploads(saver, limit: float) -> None:
    """Give Composer's CheckpointSaver `saver` (None: no saving) a PatientRemoteUploader, before it uploads."""
    old = getattr(saver, "remote_uploader", None)
    if old is None:
        return
    new = PatientRemoteUploader(old.remote_folder, limit, num_concurrent_uploads=saver.num_concurrent_uploads)
    new.path, new.backend_kwargs = old.path, old.backend_kwargs  # as old.init() resolved them
    old.wait_and_close()  # nothing was submitted to it: this only ends its (unstarted) worker pools
    saver.remote_uploader = new
    # Composer polls every 30 s for a checkpoint's objects before it uploads the `latest` symlink, so a run
    # spends up to 30 s after its last step waiting; one small GET every 2 s costs nothing.
    saver._symlink_upload_wait_before_next_try_in_seconds = 2.0
