"""A checkpoint save that runs out of disk: one line saying so and where, the partial checkpoint never becomes
`latest`, and autoresume continues from the previous one to the same weights as a run that never failed.

Out of disk for real, without root: RLIMIT_FSIZE on the training process (a write past it fails with EFBIG,
Python ignores SIGXFSZ), and a checkpoint path that leads to /dev/full (every write fails with ENOSPC)."""
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmtrain.checkpoint import LATEST, read_checkpoint
from llmtrain.builders import load_config
from llmtrain.errors import UserError
from llmtrain.train import train
from tests.checkpoint.harness import ROOT, SMALL, SUBPROCESS_ENV, by_step


def overrides(run_dir: Path, shards: Path, steps: int) -> list[str]:
    return [*SMALL, f"variables.data_remote={shards}", f"variables.data_local={run_dir}/cache", f"run_dir={run_dir}",
            f"save_folder={run_dir}/checkpoints", f"max_duration={steps}ba", "save_interval=3ba", "autoresume=true"]


def train_in_process(run_dir: Path, shards: Path, steps: int, *extra: str) -> None:
    train(load_config(ROOT / "yamls" / "tiny.yaml", [*overrides(run_dir, shards, steps), *extra])).close()


def test_disk_full_during_save_is_one_line_and_autoresume_continues_from_the_previous_checkpoint(tmp_path, shards):
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    train_in_process(run, shards, 3)  # the step-3 checkpoint
    limit = (ckpts / "ep0-ba3-rank0.pt").stat().st_size // 2

    def small_disk():  # in the child, before it runs Python: no file it writes may pass `limit` bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "scripts/train.py", "yamls/tiny.yaml", *overrides(run, shards, 6)],
                          cwd=ROOT, env={**os.environ, **SUBPROCESS_ENV}, capture_output=True, text=True,
                          preexec_fn=small_disk, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: save_folder: '{ckpts}': out of disk space (File too large) while saving a checkpoint; the partial "
        "one is not used: free space there (or point save_folder elsewhere) and relaunch with autoresume=true to "
        "continue from the last complete checkpoint")
    assert (ckpts / "ep0-ba6-rank0.pt").stat().st_size == limit  # cut short where the disk ran out
    assert os.readlink(ckpts / LATEST) == "ep0-ba3-rank0.pt"

    train_in_process(run, shards, 6)  # autoresume, with room again
    resumed = read_checkpoint(str(ckpts / LATEST), prefix="state.")
    straight = tmp_path / "straight"
    train_in_process(straight, shards, 6)
    want = read_checkpoint(str(straight / "checkpoints" / LATEST), prefix="state.")
    assert resumed.batch == want.batch == 6 and sorted(resumed.tensors) == sorted(want.tensors)
    for name, tensor in want.tensors.items():
        assert torch.equal(resumed.tensors[name], tensor), name
    ran, ref = by_step(run / "metrics.jsonl"), by_step(straight / "metrics.jsonl")
    assert [ran[s]["loss"] for s in range(1, 7)] == [ref[s]["loss"] for s in range(1, 7)]


def test_no_space_left_while_saving_is_a_user_error_naming_the_save_folder(tmp_path, shards):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    os.symlink("/dev/full", ckpts / "ep0-ba3-rank0.pt")  # the step-3 save writes into a device that is always full
    with pytest.raises(UserError) as err:
        train_in_process(tmp_path, shards, 3, "save_overwrite=true", "autoresume=false")
    assert str(err.value) == (
        f"save_folder: '{ckpts}': out of disk space (No space left on device) while saving a checkpoint; the "
        "partial one is not used: free space there (or point save_folder elsewhere) and relaunch with "
        "autoresume=true to continue from the last complete checkpoint")
    assert not (ckpts / LATEST).exists()
