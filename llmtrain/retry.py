"""The object-store retry policy, one for every read and write of a run: data reads (shards, index.json:
llmtrain/data/stream.py) and checkpoint uploads (llmtrain/checkpoint/uploads.py).

While the store cannot be reached, `retry_through_outage` retries with exponential backoff for up to the
run's `object_store_retry_timeout` (passed as `limit`), then stops the run with one line naming the endpoint
and the limit; a request no retry can mend (no credentials, access denied, no such bucket) stops it at once.
streaming's `download_retry` (a few quick attempts) and Composer's uploader (3 attempts, and none at all for
"connection refused") would end the run within seconds of a restart of the store.
"""
from __future__ import annotations

import logging
import os
import random
import time
from typing import Callable, Optional, TypeVar

from llmtrain.errors import UserError, causes

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a run's object_store_retry_timeout defaults to with the default dist_timeout (llmtrain/config.py):
# the limit of reads and uploads made outside a run (tests, benchmarks).
DEFAULT_RETRY_TIMEOUT = 300.0
_FIRST_BACKOFF, _MAX_BACKOFF = 0.5, 8.0
# S3 error codes of a store that is up but cannot serve now (besides any 5xx status).
_BUSY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
               "InternalError"}


def _status(err) -> tuple[int, str]:
    """A botocore ClientError's HTTP status and error code."""
    return (err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0,
            str(err.response.get("Error", {}).get("Code", "")))


def is_outage(err: BaseException) -> bool:
    """Whether `err` (or what caused it) says the store cannot be reached or cannot serve right now, rather
    than that the request itself is wrong (missing object, no permission)."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    for cause in causes(err):
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
    for cause in causes(err):
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
                         limit: float = DEFAULT_RETRY_TIMEOUT, clean_up: Optional[Callable[[], None]] = None,
                         give_up: Callable[[], bool] = lambda: False, first_contact: bool = False) -> T:
    """`attempt()`, retried with exponential backoff: while the store is unreachable (`is_outage`) for up to
    `limit` seconds (a run passes its object_store_retry_timeout) from the first failure, other errors
    `retries` times, not at all once `give_up()` or for errors `cannot_be_retried` names (`first_contact`:
    the run's first request to this store). Giving up is a one-line UserError starting with `what`
    ("<key>: reading <uri>")."""
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
