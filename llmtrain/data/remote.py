"""Give every DataLoader worker its own object-store connection.

Why: each streaming `Stream` keeps one downloader, and the S3 downloader makes its boto3 client on
its first download. The first download is `index.json`, done by the main process while the
StreamingDataset is built, so that client then holds a pooled keep-alive TCP socket. DataLoader
workers are forked after that and inherit the client and the socket. Two workers then send requests
down one connection and read each other's responses: a worker stores shard B's bytes as shard A
(zstd "Src size is incorrect", "Relative sample index ... not present in shard"), or waits forever
for a response the other worker read (a hang). streaming drops the client when a downloader is
pickled (spawn), but fork copies it as it is.

Use: `DataLoader(..., worker_init_fn=worker_init_fn)` for any loader over a StreamingDataset.

Outages: every object-store read (shards, index.json) and checkpoint upload goes through
`retry_through_outage`: while the store cannot be reached it retries with exponential backoff for up to the
run's `object_store_retry_timeout`, then stops the run with one line naming the endpoint and the limit.
streaming's `download_retry` (a few quick attempts) and Composer's uploader (3 attempts, and none at all for
"connection refused") would end the run within seconds of a restart of the store.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import time
import uuid
from typing import Any, Callable, Optional, TypeVar

import torch
from composer.utils import RemoteUploader
from composer.utils.object_store.utils import build_remote_backend
from streaming.base.storage import CloudDownloader

from llmtrain.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


def fresh_downloaders(dataset) -> None:
    """Replace each stream's downloader with an unconnected one, in the process that will download.

    A new downloader rather than `clean_up()`: some downloaders' clean_up closes the connection
    (SFTP sends a disconnect), which would end it for the parent too; dropping our copy does not.
    """
    for stream in getattr(dataset, "streams", ()):
        if not hasattr(stream, "_downloader"):  # streaming's internals moved: fail loudly, not silently
            raise RuntimeError("streaming.Stream has no _downloader; update llmtrain/data/remote.py "
                               "for this mosaicml-streaming version")
        stream._downloader = CloudDownloader.get(stream.remote)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: this worker downloads over its own connection."""
    fresh_downloaders(torch.utils.data.get_worker_info().dataset)


# --- Outages: retry with backoff, up to the run's object_store_retry_timeout ----------------------------

_retry_timeout = 300.0  # seconds; runs set their object_store_retry_timeout (llmtrain/train.py)
_FIRST_BACKOFF, _MAX_BACKOFF = 0.5, 8.0
# S3 error codes of a store that is up but cannot serve now (besides any 5xx status).
_BUSY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
               "InternalError"}


def set_retry_timeout(seconds: float) -> None:
    """The run's `object_store_retry_timeout`; llmtrain/train.py sets it before building the loaders."""
    global _retry_timeout
    _retry_timeout = float(seconds)


def _chain(err: Optional[BaseException]):
    """`err` and what caused it, outermost first."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        # s3transfer's RetriesExceededError keeps its cause in an attribute, not in the chain
        err = getattr(err, "last_exception", None) or err.__cause__ or err.__context__


def _status(err) -> tuple[int, str]:
    """A botocore ClientError's HTTP status and error code."""
    return (err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0,
            str(err.response.get("Error", {}).get("Code", "")))


def is_outage(err: BaseException) -> bool:
    """Whether `err` (or what caused it) says the store cannot be reached or cannot serve right now, rather
    than that the request itself is wrong (missing object, no permission)."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    for cause in _chain(err):
        if isinstance(cause, (BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError,
                              TimeoutError)):
            return True
        if isinstance(cause, ClientError):
            status, code = _status(cause)
            return status >= 500 or status == 429 or code in _BUSY_CODES
    return False


# S3 error codes of a request the store refuses: wrong or unknown keys, no permission.
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                 "InvalidToken", "ExpiredToken", "AccountProblem", "401", "403"}
_ENDPOINT_ENV = ("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _endpoint_is_set() -> bool:
    return any(os.environ.get(name) for name in _ENDPOINT_ENV)


def _bucket_exists(bucket: str) -> bool:
    """False only when the store says the bucket does not exist (asked once, after a 404)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    try:
        client = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
                              config=Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=10))
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        status, code = _status(err)
        return status != 404 and code not in ("404", "NoSuchBucket")
    except Exception:  # cannot tell: treat the 404 as a missing object, as before
        pass
    return True


def cannot_be_retried(err: BaseException, uri: str, first_contact: bool = False) -> Optional[str]:
    """For an s3:// `uri`: what to fix, when `err` says that no retry can succeed (no credentials, access
    denied, no such bucket) or, on the first contact of the run (`first_contact`), that AWS S3 cannot be
    reached while no endpoint is set (the run would otherwise wait out a whole object_store_retry_timeout
    for a store it was never meant to reach). None: retry as usual."""
    if not uri.startswith("s3://"):
        return None
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError
    bucket = uri[len("s3://"):].split("/", 1)[0]
    aws = not _endpoint_is_set()
    where = "AWS S3" if aws else endpoint_of(uri)
    unset = " (S3_ENDPOINT_URL is not set, so s3:// means AWS S3: set it to use another store)" if aws else ""
    for cause in _chain(err):
        if isinstance(cause, (NoCredentialsError, PartialCredentialsError)):
            return (f"no credentials for {where} ({_reason(cause)}); set AWS_ACCESS_KEY_ID and "
                    f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE){unset}")
        if isinstance(cause, ClientError):
            status, code = _status(cause)
            if status in (401, 403) or code in _DENIED_CODES:
                detail = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
                return (f"access denied by {where} ({detail}); check AWS_ACCESS_KEY_ID / "
                        f"AWS_SECRET_ACCESS_KEY and that they may use bucket '{bucket}'{unset}")
            if code == "NoSuchBucket" or ((status == 404 or code == "404") and not _bucket_exists(bucket)):
                return f"bucket '{bucket}' does not exist at {where}; check the URI and S3_ENDPOINT_URL{unset}"
            return None
    if first_contact and aws and is_outage(err):
        return (f"AWS S3 cannot be reached ({_reason(err)}) and S3_ENDPOINT_URL is not set; set S3_ENDPOINT_URL "
                "to your object store's URL (e.g. http://HOST:9000), or check the network if the bucket is on AWS")
    return None


def endpoint_of(uri: str) -> str:
    """The server `uri` (s3://bucket/key, gs://...) is read from, as a user would recognise it."""
    scheme, _, rest = uri.partition("://")
    if scheme == "s3" and os.environ.get("S3_ENDPOINT_URL"):
        return os.environ["S3_ENDPOINT_URL"]
    return f"{scheme}://{rest.split('/', 1)[0]}" if rest else uri


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


def retry_through_outage(attempt: Callable[[], T], what: str, uri: str, retries: int = 0,
                         limit: Optional[float] = None, clean_up: Optional[Callable[[], None]] = None,
                         give_up: Callable[[], bool] = lambda: False, first_contact: bool = False) -> T:
    """`attempt()`, retried with exponential backoff: while the store is unreachable (`is_outage`) for up to
    `limit` seconds (default: the run's object_store_retry_timeout) from the first failure, other errors
    `retries` times, not at all once `give_up()` or for errors `cannot_be_retried` names (`first_contact`:
    the run's first request to this store). Giving up is a one-line UserError starting with `what`
    ("<key>: reading <uri>")."""
    limit = _retry_timeout if limit is None else limit
    backoff, failures, down_since = _FIRST_BACKOFF, 0, None
    while True:
        try:
            return attempt()
        except UserError:
            raise
        except Exception as err:
            if clean_up is not None:
                clean_up()  # a fresh connection next time, not one the outage broke
            if give_up():
                raise UserError(f"{what}: not retried, the run is stopping ({_reason(err)})") from None
            if fix := cannot_be_retried(err, uri, first_contact):
                raise UserError(f"{what}: {fix}") from None
            now = time.monotonic()
            if is_outage(err):
                down_since = now if down_since is None else down_since
                down = now - down_since
                if down >= limit:
                    raise UserError(f"{what}: object store {endpoint_of(uri)} unreachable for {down:.0f} s, "
                                    f"past object_store_retry_timeout ({limit:g} s) (last error {_reason(err)}); "
                                    "once it is back, relaunch (autoresume: true continues from the last "
                                    "checkpoint) or raise object_store_retry_timeout") from None
                wait = min(backoff, limit - down)
                log.warning("%s: object store %s unreachable (%s); retrying in %.1f s, for up to %.0f s more",
                            what, endpoint_of(uri), _reason(err), wait, limit - down)
            else:
                failures += 1
                if failures > retries:
                    raise UserError(f"{what}: {_reason(err)}") from None
                wait = backoff
                log.warning("%s: %s; retrying in %.1f s (%d of %d)", what, _reason(err), wait, failures, retries)
            time.sleep(wait * (1 + 0.25 * random.random()))  # jitter: workers and ranks do not retry in step
            backoff = min(2 * backoff, _MAX_BACKOFF)


# --- Checkpoint uploads through the same policy ---------------------------------------------------------

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
