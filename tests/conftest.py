"""Suite-wide pytest set-up."""
import os
from pathlib import Path

import pytest
import torch

from tests.objectstore import ObjectStore, require_programs


# --- Subprocesses (scripts/*.py, launchers) import this checkout, not whichever clone the shared
# venv's editable install points at ---
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)


# --- Parallel runs (`make test`: pytest-xdist, --dist loadgroup): a test file runs on one worker, so its
# module fixtures are built once. The session fixtures of tests/distributed are training runs, so that folder
# stays on one worker; tests/checkpoint's reference runs are shared the same way, except by test_resume.py,
# whose kill -9 tests are the suite's longest and go to a worker of their own ---
_ONE_WORKER_FOLDERS = {"checkpoint", "distributed"}
_OWN_WORKER_FILES = {"tests/checkpoint/test_resume.py"}


def _worker_group(item) -> str:
    path = item.path.relative_to(_ROOT)
    folder = path.parts[1] if len(path.parts) > 2 else ""
    if folder in _ONE_WORKER_FOLDERS and path.as_posix() not in _OWN_WORKER_FILES:
        return folder
    return str(path)


# --- `gpu` marker: GPU tests run on the device machine and are skipped where there is no CUDA ---
@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_worker_group(item)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --- Object store: a real S3-compatible server (scripts/objectstore) for tests that use s3:// ---
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running local S3 server; S3_ENDPOINT_URL and AWS_* point at it for the whole session.

    Yields a tests.objectstore.ObjectStore: `.endpoint`, `.make_bucket()`, `.client()`. Starts one
    in a temp dir and stops it at the end, or reuses (and leaves running) the server whose base dir
    is in $LLMTRAIN_TEST_S3_BASE (see docs/objectstore.md).
    """
    require_programs("the S3 tests")
    reused = os.environ.get("LLMTRAIN_TEST_S3_BASE")
    server = ObjectStore(Path(reused) if reused else tmp_path_factory.mktemp("objectstore"))
    server.start()
    try:
        with server.environment():
            yield server
    finally:
        if not reused:
            server.stop()


@pytest.fixture
def s3_outage(s3_server):
    """The session's s3_server, for a test that calls `.stop()` / `.start()`; running again after it."""
    yield s3_server
    if not s3_server.is_up():
        s3_server.stop()  # a partly stopped server must be fully down before start()
        s3_server.start()
