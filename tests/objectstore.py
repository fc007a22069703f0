"""The local S3-compatible server for tests: scripts/objectstore/{start,stop}.sh driven from Python.

`ObjectStore(base_dir)` is one Swift+s3api server whose config, data and logs live in `base_dir`.
`start()` / `stop()` can be called mid-test to simulate an outage: data and port survive.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import boto3

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "objectstore"
INSTALL_HINT = "run scripts/objectstore/install.sh (as root; CI and `make test` do)"

# Fixed test credentials (tempauth's user test:tester in scripts/objectstore/conf/proxy-server.conf.in).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test:tester",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Set in a developer's shell, these would send the tests' requests elsewhere or sign them wrongly.
CONFLICTING_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                   "AWS_ENDPOINT_URL_S3")


def missing_programs() -> list[str]:
    return [p for p in ("swift-proxy-server", "swift-ring-builder", "memcached", "curl")
            if shutil.which(p) is None]


def require_programs(who: str) -> None:
    """Fail the calling test (or fixture) `who` if the server's programs are not installed."""
    if missing := missing_programs():
        import pytest

        pytest.fail(f"{who} need {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)


class ObjectStore:
    """One local object-store server rooted at `base` (see scripts/objectstore/start.sh)."""

    def __init__(self, base: Path, port: int = 0):
        self.base = Path(base)
        self.port = port  # 0 until the first start picks a free one
        self._client = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment boto3 and mosaicml-streaming need to reach this server."""
        return {"S3_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    @contextlib.contextmanager
    def environment(self):
        """`os.environ` pointed at this server (its `env` set, CONFLICTING_ENV removed) inside the block,
        as it was after it."""
        import pytest

        with pytest.MonkeyPatch.context() as env:
            for name in CONFLICTING_ENV:
                env.delenv(name, raising=False)
            for name, value in self.env.items():
                env.setenv(name, value)
            yield self

    def start(self) -> None:
        """Start (or confirm running) and wait until healthy; keeps earlier data and port."""
        done = subprocess.run([str(SCRIPTS / "start.sh"), str(self.base), str(self.port)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"object store did not start (logs in {self.base / 'run'}):\n{done.stderr}")
        exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
        self.port = int(exports["S3_ENDPOINT_URL"].rsplit(":", 1)[1])

    def stop(self) -> None:
        """Stop the server (an outage); its data stays for the next start()."""
        subprocess.run([str(SCRIPTS / "stop.sh"), str(self.base)], check=True, capture_output=True)

    def is_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/healthcheck", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def client(self):
        """A boto3 S3 client for this server (made once, in the calling process)."""
        if self._client is None:
            self._client = boto3.client("s3", endpoint_url=self.endpoint,
                                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                        region_name=CREDENTIALS["AWS_DEFAULT_REGION"])
        return self._client

    def make_bucket(self, prefix: str = "test") -> str:
        """Create a new, empty bucket and return its (unique) name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """All object keys under `prefix` in `bucket`, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
