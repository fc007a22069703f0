"""Loading a checkpoint from an untrusted place runs no code; a bad load_path is one line naming it."""
import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch

from llmtrain.checkpoint import UnsafeCheckpoint, check_load_path, read_checkpoint, validate_checkpoint_file
from llmtrain.errors import UserError
from tests.checkpoint.harness import ROOT, SUBPROCESS_ENV, Job


class Payload:
    """Unpickling this runs os.mkdir(marker): stands in for any code an attacker would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def runs_code_when_unpickled(path, marker) -> bool:
    """Control: torch.load(weights_only=False), as Composer 0.32.1 calls it, in a fresh process."""
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   env={**os.environ, **SUBPROCESS_ENV}, capture_output=True)
    ran = marker.exists()
    if ran:
        marker.rmdir()
    return ran


@pytest.fixture
def poisoned_full(tmp_path, one_rank_run):
    """A real 1-process checkpoint with a Payload among its callback states."""
    state = torch.load(one_rank_run.dir / "checkpoints" / "ep0-ba6-rank0.pt", weights_only=False)
    marker = tmp_path / "payload-ran"
    state["state"]["callbacks"]["Innocent"] = {"note": Payload(marker)}
    torch.save(state, tmp_path / "poisoned.pt")
    assert runs_code_when_unpickled(tmp_path / "poisoned.pt", marker)
    return tmp_path / "poisoned.pt", marker


def test_full_checkpoint_with_code_is_refused(poisoned_full):
    path, marker = poisoned_full
    with pytest.raises(UnsafeCheckpoint, match="posix.mkdir"):
        read_checkpoint(str(path))
    with pytest.raises(UnsafeCheckpoint, match="posix.mkdir"):
        validate_checkpoint_file(path)
    assert not marker.exists()


@pytest.mark.slow
def test_training_refuses_to_load_it(tmp_path, poisoned_full, one_rank_run):
    """load_path → Composer unpickles with weights_only=False, after our validation hook refused it."""
    path, marker = poisoned_full
    job = Job([*one_rank_run.overrides(tmp_path / "run"), "autoresume=false", f"load_path={path}"], tmp_path / "run",
              nproc=1)
    assert job.wait() == 2, job.log()
    assert job.log().strip().splitlines()[-1].startswith(f"error: load_path '{path}': not loaded: it is not a "
                                                         "plain-data checkpoint (")
    assert not marker.exists()


def test_sharded_checkpoint_with_code_in_index_or_object_is_refused(tmp_path, reference):
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    marker = tmp_path / "payload-ran"
    folder = tmp_path / "ckpt"
    shutil.copytree((reference / "checkpoints" / "latest-rank0.pt").resolve(), folder)
    original = (folder / ".metadata").read_bytes()
    metadata = pickle.loads(original)

    # 1. In the index (.metadata), which DCP reads with pickle.load.
    metadata.planner_data["innocent"] = Payload(marker)
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    assert runs_code_when_unpickled(folder / ".metadata", marker)  # plain pickle, as torch.load reads it
    for check in (lambda: read_checkpoint(str(folder)), lambda: validate_checkpoint_file(folder / ".metadata")):
        with pytest.raises(UnsafeCheckpoint, match="posix.mkdir"):
            check()

    # 2. In a non-tensor item of a shard, which DCP's load planner reads with torch.load(weights_only=False).
    metadata = pickle.loads(original)
    index, info = next((i, s) for i, s in metadata.storage_data.items()
                       if isinstance(metadata.state_dict_metadata[i.fqn], BytesStorageMetadata))
    shard = folder / info.relative_path
    blob = shard.parent / "blob"
    torch.save({"x": Payload(marker)}, blob)
    info.offset, info.length = shard.stat().st_size, blob.stat().st_size
    with shard.open("ab") as f:
        f.write(blob.read_bytes())
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    assert runs_code_when_unpickled(blob, marker)
    for check in (lambda: read_checkpoint(str(folder)),
                  lambda: validate_checkpoint_file(shard, [(info.offset, info.length)])):
        with pytest.raises(UnsafeCheckpoint, match="posix.mkdir"):
            check()
    assert not marker.exists()


def test_bad_load_path_is_one_line_naming_it(tmp_path, reference, one_rank_run, s3_server):
    sharded = (reference / "checkpoints" / "latest-rank0.pt").resolve()
    full = one_rank_run.dir / "checkpoints" / "ep0-ba6-rank0.pt"
    check_load_path(str(sharded), "r", sharded=True)
    check_load_path(str(full), "r", sharded=False)
    check_load_path(str(full.parent / "ep0-ba{batch}-rank{rank}.pt").replace("{batch}", "6"), "r", sharded=False)
    bucket = s3_server.make_bucket()
    s3_server.client().upload_file(str(full), bucket, "runs/r/ep0-ba6-rank0.pt")
    check_load_path(f"s3://{bucket}/runs/{{run_name}}/ep0-ba6-rank0.pt", "r", sharded=False)
    cases = {
        (str(tmp_path / "nope.pt"), False): "does not exist",
        (f"s3://{bucket}/runs/r/nope.pt", False): "does not exist",
        ("s4://bucket/ckpt.pt", False): "scheme 's4://' is not supported",
        ("https://example.com/ckpt.pt", False): "scheme 'https://' is not supported",
        (str(tmp_path), False): "is a folder without .metadata",
        (str(sharded), False): "is a sharded checkpoint, which only FSDP loads: set fsdp_config",
        (str(full), True): "set fsdp_config.state_dict_type: full",
    }
    for (path, is_sharded), message in cases.items():
        with pytest.raises(UserError, match=f"^load_path: {re.escape(repr(path))}.*{re.escape(message)}") as err:
            check_load_path(path, "r", sharded=is_sharded)
        assert "\n" not in str(err.value)


def test_train_cli_reports_a_missing_load_path(tmp_path):
    done = subprocess.run([sys.executable, "scripts/train.py", "yamls/tiny.yaml", f"run_dir={tmp_path}",
                           "save_folder=null", f"load_path={tmp_path}/ep0-ba9-rank0.pt"],
                          cwd=ROOT, env={**os.environ, **SUBPROCESS_ENV}, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: load_path: '{tmp_path}/ep0-ba9-rank0.pt' does not exist; point it at a checkpoint: a sharded folder "
        "(ep{E}-ba{B}/) or a full file (ep{E}-ba{B}-rank0.pt) in a run's save_folder"]
