"""The object store goes down in the middle of a run that streams its data from it and uploads its
checkpoints to it (scripts/train.py, one process, the real S3 server stopped and started again):

  * back within the limit: reads and uploads wait it out and the losses equal an uninterrupted run's;
  * down past `object_store_retry_timeout`: one line naming the endpoint and the limit, exit 2, and the
    checkpoints uploaded before the outage are whole: autoresume continues from the newest one.

A server of their own (tests/objectstore.py): stopping it must not break the session's shared one."""
import os
import re
import signal
import time

import pytest

from llmtrain.builders import load_config
from llmtrain.data.prep import prepare
from llmtrain.data.tokenizer import NEOX_NAME, install_tokenizers
from llmtrain.errors import UserError
from tests.checkpoint.harness import LIVE, ROOT, SEQ, Job
from tests.data.corpus import make_documents
from tests.objectstore import ObjectStore, require_programs

STEPS, EVERY = 8, 4
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(server, bucket, local copy): a server of this module's own holding the 2-stream mix of yamls/tiny.yaml in
    shards of ~14 samples, so a run keeps reading new shards all along; the same shards in a local folder."""
    require_programs("the outage tests")
    server = ObjectStore(tmp_path_factory.mktemp("outage-s3"))
    server.start()
    bucket = server.make_bucket("outage")
    try:
        install_tokenizers()
        raw, data = tmp_path_factory.mktemp("outage-docs"), tmp_path_factory.mktemp("outage-data")
        for seed, name in enumerate(["python_stdlib", "licenses"]):
            (raw / name).mkdir()
            for i, doc in enumerate(make_documents(40, seed=seed)):
                (raw / name / f"{i:03}.txt").write_text(doc)
            prepare([str(raw / name)], str(data / name), NEOX_NAME, SEQ, size_limit="1kb")
        for path in data.rglob("*"):
            if path.is_file():
                server.client().upload_file(str(path), bucket, f"data/{path.relative_to(data)}")
        with server.environment():
            yield server, bucket, data
    finally:
        for job in list(LIVE):
            job.kill()
        server.stop()


def overrides(data: str, save_folder: str, run_dir, *extra: str) -> list[str]:
    return [f"variables.data_remote={data}", f"variables.data_local={run_dir}/cache", f"run_dir={run_dir}",
            f"save_folder={save_folder}", f"max_duration={STEPS}ba", f"save_interval={EVERY}ba", "autoresume=true",
            "run_name=outage", "model.resid_pdrop=0.1", "train_loader.dataset.predownload=4",  # shards as needed
            *extra]


def on_s3(bucket: str, run_dir, *extra: str) -> list[str]:
    """A run reading its streams from the bucket and uploading its checkpoints there."""
    return overrides(f"s3://{bucket}/data", f"s3://{bucket}/{run_dir.name}/checkpoints", run_dir, *extra)


class Reference:
    """The uninterrupted run: the same shards from the local copy, checkpoints in a local folder, so it can run
    alongside an outage test, untouched by the outage."""

    def __init__(self, data, run_dir):
        self.job = Job(overrides(str(data), str(run_dir / "checkpoints"), run_dir), run_dir, nproc=1)
        self._losses = None

    def losses(self) -> dict[int, float]:
        if self._losses is None:
            self._losses = {r["step"]: r["loss"] for r in self.job.succeed()}
            assert sorted(self._losses) == list(range(1, STEPS + 1))
        return self._losses


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory) -> Reference:
    return Reference(store[2], tmp_path_factory.mktemp("reference"))


def checkpoints(server: ObjectStore, bucket: str, run_dir) -> list[int]:
    keys = server.keys(bucket, f"{run_dir.name}/checkpoints/")
    return sorted(int(m.group(1)) for k in keys if (m := re.search(r"/ep\d+-ba(\d+)-rank0\.pt$", k)))


def test_run_waits_out_an_outage_and_trains_as_if_none_happened(store, reference, tmp_path):
    server, bucket, _ = store
    job = Job(on_s3(bucket, tmp_path), tmp_path, nproc=1)
    job.wait_for_step(EVERY)  # the step-4 checkpoint is about to be uploaded, and more shards to be read
    os.killpg(job.proc.pid, signal.SIGSTOP)  # the whole job, its upload workers too: none finishes first
    server.stop()
    os.killpg(job.proc.pid, signal.SIGCONT)
    waiting = [rf"{what}: object store {re.escape(server.endpoint)} unreachable \(.*\); retrying" for what in
               (r"reading s3://\S+/data/\w+/shard\.\d+\.mds", r"uploading s3://\S+/ep0-ba4-rank0\.pt")]
    job.wait_until(lambda: all(re.search(w, job.log_path.read_text()) for w in waiting),
                   "a read and an upload waiting for the store", timeout=60)
    assert len(job.new_records()) < STEPS
    server.start()
    ran = {r["step"]: r for r in job.succeed()}
    assert sorted(ran) == list(range(1, STEPS + 1))
    assert {s: r["loss"] for s, r in ran.items()} == reference.losses()
    assert checkpoints(server, bucket, tmp_path) == [4, 8]


def test_outage_past_the_limit_stops_the_run_and_autoresume_continues(store, reference, tmp_path):
    server, bucket, _ = store
    job = Job(on_s3(bucket, tmp_path, "object_store_retry_timeout=3"), tmp_path, nproc=1)
    job.wait_for_step(EVERY + 1)  # the step-4 checkpoint is handed to the upload worker
    os.kill(job.proc.pid, signal.SIGSTOP)  # training waits, the upload goes on
    job.wait_until(lambda: checkpoints(server, bucket, tmp_path) == [EVERY], "the step-4 checkpoint uploaded")
    server.stop()
    os.kill(job.proc.pid, signal.SIGCONT)
    try:
        started = time.monotonic()
        assert job.wait(60) == 2
        assert time.monotonic() - started < 30
        errors = [line for line in job.log_path.read_text().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and re.fullmatch(
            r"error: (save_folder: uploading s3://\S+|train_loader\.dataset\.streams\.\w+: reading s3://\S+): "
            rf"object store {re.escape(server.endpoint)} unreachable for \d+ s, past object_store_retry_timeout "
            r"\(3 s\) \(last error \w+: .*\); once it is back, relaunch \(autoresume: true continues from the "
            r"last checkpoint\) or raise object_store_retry_timeout", errors[0]), errors
    finally:
        server.start()
    assert checkpoints(server, bucket, tmp_path) == [EVERY]
    resumed = Job(on_s3(bucket, tmp_path), tmp_path, nproc=1).succeed()
    assert [r["step"] for r in resumed] == list(range(EVERY + 1, STEPS + 1))
    assert [r["loss"] for r in resumed] == [reference.losses()[r["step"]] for r in resumed]
    assert not (ROOT / "s3:").exists()  # autoresume from the bucket made no local folder named after it


@pytest.mark.parametrize("override,error", [
    ("object_store_retry_timeout=0", "object_store_retry_timeout: must be a positive number of seconds, got 0"),
    ("object_store_retry_timeout=900", "object_store_retry_timeout: 900 s is not below dist_timeout (600 s), so a "
     "rank waiting out an outage would time out the others' collectives; lower it or raise dist_timeout"),
])
def test_limit_is_checked_with_the_config(override, error):
    with pytest.raises(UserError) as caught:
        load_config(ROOT / "yamls/tiny.yaml", [override])
    assert str(caught.value) == error


def test_default_limit_stays_below_dist_timeout():
    assert load_config(ROOT / "yamls/tiny.yaml").object_store_retry_timeout == 300
    assert load_config(ROOT / "yamls/tiny.yaml", ["dist_timeout=60"]).object_store_retry_timeout == 30
