"""kill -9 a 2-rank FSDP2 run, at random steps and in the middle of a save, and autoresume it: every loss
after a resume point and the final weights, optimizer and RNG states are bit-identical to the
uninterrupted run's (tests/checkpoint/conftest.py). Whatever a crash leaves, autoresume loads the newest
complete checkpoint."""
import io
import os
import random
import re
import shutil
import time

import numpy as np
import pytest
import torch

from llmtrain.checkpoint import read_checkpoint, repair_latest, safe_torch_load
from llmtrain.builders import load_config
from llmtrain.train import train
from tests.checkpoint.conftest import EVERY, STEPS, run_overrides
from tests.checkpoint.harness import ROOT, SMALL, Job, by_step, records


def newest_checkpoint(killed_at: int) -> int:
    """The step of the newest checkpoint a run killed after logging `killed_at` has. Saving is synchronous:
    a step's record is written before its checkpoint and the next step starts after it, so a kill right
    after a checkpoint step's own record may have cut that save short."""
    newest = killed_at // EVERY * EVERY
    return newest if killed_at % EVERY else newest - EVERY


def random_kill_step(rng: random.Random, after: int) -> int:
    """A step between checkpoints, after `after` and the first checkpoint, within two intervals."""
    after = max(after, EVERY)
    return rng.choice([s for s in range(after + 1, min(after + 2 * EVERY, STEPS)) if s % EVERY])


def assert_same_run(run, reference, final_checkpoint: str) -> None:
    ran, ref = by_step(run / "metrics.jsonl"), by_step(reference / "metrics.jsonl")
    assert sorted(ran) == list(range(1, STEPS + 1))
    for step in ref:  # json floats round-trip exactly: == is bit-identical
        for key in ("loss", "lr", "tokens"):
            assert ran[step][key] == ref[step][key], (step, key, ran[step][key], ref[step][key])
    got = read_checkpoint(final_checkpoint, prefix="state.")
    want = read_checkpoint(str(reference / "checkpoints" / "latest-rank0.pt"), prefix="state.")
    assert got.batch == want.batch == STEPS
    # model weights and optimizer state
    assert sorted(got.tensors) == sorted(want.tensors) and len(got.tensors) > 10
    for name, tensor in want.tensors.items():
        assert torch.equal(got.tensors[name], tensor), name
    # every rank's RNG state: the same random numbers were drawn all along
    rng = [safe_torch_load(io.BytesIO(c.objects["state.callbacks.ResumeRng.rng"])) for c in (got, want)]
    assert len(rng[0]) == len(rng[1]) == 2
    for ours, theirs in zip(*rng):
        assert ours["python"] == theirs["python"] and torch.equal(ours["torch"], theirs["torch"])
        assert all(np.array_equal(a, b) for a, b in zip(ours["numpy"], theirs["numpy"]))


def truncate(path, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


@pytest.mark.slow
def test_kill9_mid_save_and_at_5_random_steps_then_autoresume_is_bit_identical(tmp_path, shards, reference):
    ckpts = tmp_path / "checkpoints"
    overrides = run_overrides(tmp_path, shards)
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    history = []  # (how it was stopped, step it resumed after, last step logged)
    resumes_after = logged = 0
    for launch in range(7):
        job = Job(overrides, tmp_path)
        if launch == 0:  # kill -9 as soon as a rank starts writing its shard of the step-10 checkpoint
            job.wait_until(lambda: any((ckpts / "ep0-ba10").glob("__*_0.distcp")), "the step-10 shards")
            new = job.kill()
            finished = (ckpts / "ep0-ba10" / ".metadata").exists()  # DCP renames it in after every shard
            how = f"mid-save (ep0-ba10: {sorted(p.name for p in (ckpts / 'ep0-ba10').iterdir())})"
            newest = 10 if finished else 5
        elif launch < 6:
            job.wait_for_step(random_kill_step(rng, logged))
            new = job.kill()
            how, newest = "random step", newest_checkpoint(new[-1]["step"])
        else:
            new, how = job.succeed(), "ran to the end"
        assert new[0]["step"] == resumes_after + 1, (history, how, new[0]["step"], job.log())
        history.append((how, resumes_after, logged := new[-1]["step"]))
        resumes_after = newest
        if launch == 2:  # killed between Composer's removing `latest` and creating it again
            (ckpts / "latest-rank0.pt").unlink()
        if launch == 4:  # `latest` names a checkpoint whose shard lost its tail: take the one before
            assert os.readlink(ckpts / "latest-rank0.pt") == (broken := next(ckpts.glob(f"ep*-ba{newest}"))).name
            truncate(broken / "__1_0.distcp")
            resumes_after = newest - EVERY
            history.append(("cut short: " + broken.name, None, None))
    print(f"seed {seed}: (stopped, resumed after step, last step logged): {history}")
    assert_same_run(tmp_path, reference, str(ckpts / "latest-rank0.pt"))


@pytest.mark.slow
def test_kill9_and_autoresume_from_s3(tmp_path, shards, reference, s3_server):
    """Checkpoints uploaded by Composer to the S3 server, autoresume reading them back from there."""
    bucket = s3_server.make_bucket()
    folder = f"s3://{bucket}/runs/{{run_name}}/checkpoints"

    def uploaded() -> int:
        """The newest checkpoint whose every object is in the bucket, 0 if none."""
        keys = s3_server.keys(bucket, "runs/resumable/checkpoints/")
        steps = {int(m.group(1)) for k in keys if (m := re.search(r"/ep\d+-ba(\d+)/\.metadata$", k))}
        return max([s for s in steps if all(any(k.endswith(f"-ba{s}/__{r}_0.distcp") for k in keys)
                                            for r in range(2))], default=0)

    def settle(job, want=None) -> None:
        # Uploads run in the background, and these steps are far shorter than an upload (real ones are
        # not): stop the ranks until the newest checkpoint is all in the bucket. A stopped rank cannot
        # hand its uploader the next file: when the bucket stalls, let the ranks run a moment.
        # Composer's latest-rank0.pt.symlink may still name an older checkpoint, or none.
        while True:
            job.pause_ranks()
            goal = want or newest_checkpoint(job.new_records()[-1]["step"])
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline:
                if uploaded() >= goal:
                    return
                time.sleep(0.05)
            job.pause_ranks(False)
            time.sleep(0.1)

    seed = random.randrange(10**6)
    rng = random.Random(seed)
    overrides = run_overrides(tmp_path, shards, folder)
    history = []  # (step resumed after, last step logged, whether the kill waited for the uploads)
    for launch in range(6):  # 5 kills at random steps, then a run to the end
        job = Job(overrides, tmp_path)
        last = launch == 5
        job.wait_for_step(random_kill_step(rng, history[-1][1] if history else 0) if not last else STEPS)
        settled = last or launch % 2 == 0  # the others are killed with uploads in flight
        if settled:
            settle(job, STEPS if last else None)
        new = job.kill()
        if history:
            resumed_after, (_, previous_logged, previous_settled) = new[0]["step"] - 1, history[-1]
            if previous_settled:  # the newest checkpoint was all in the bucket: it is the one resumed
                assert resumed_after == newest_checkpoint(previous_logged), (history, job.log())
            else:  # some checkpoint that was complete in the bucket, never a partly uploaded one
                assert resumed_after % EVERY == 0 and resumed_after <= newest_checkpoint(previous_logged), history
        history.append((new[0]["step"] - 1, new[-1]["step"], settled))
    print(f"seed {seed}: (resumed after step, killed after step, uploads settled): {history}")
    # The last launch was killed once its final checkpoint was in the bucket (before Composer's
    # symlink to it, which it polls for every 30 s): read that checkpoint by name.
    assert_same_run(tmp_path, reference, folder.format(run_name="resumable") + "/ep1-ba40")


@pytest.mark.slow
def test_cut_short_full_checkpoint_is_skipped(tmp_path, one_rank_run):
    """1 process, full checkpoints: a kill during torch.save leaves a cut-short ep0-ba6-rank0.pt, newer than
    `latest` (Composer alone would refuse to start: the file "may conflict with a future checkpoint")."""
    run = tmp_path / "run"
    shutil.copytree(one_rank_run.dir / "checkpoints", run / "checkpoints", symlinks=True)
    truncate(run / "checkpoints" / "ep0-ba6-rank0.pt")
    (run / "checkpoints" / "latest-rank0.pt").unlink()
    (run / "checkpoints" / "latest-rank0.pt").symlink_to("ep0-ba3-rank0.pt")
    new = Job(one_rank_run.overrides(run), run, nproc=1).succeed()
    ref = by_step(one_rank_run.dir / "metrics.jsonl")
    assert [r["step"] for r in new] == [4, 5, 6]
    assert [r["loss"] for r in new] == [ref[s]["loss"] for s in (4, 5, 6)]


def test_s3_upload_cut_short_is_removed_and_latest_repointed(reference, s3_server):
    """A kill during the uploads leaves some objects of the newest checkpoint, and a symlink object that
    may name it: autoresume's folder check removes them and names the newest complete one."""
    bucket, client = s3_server.make_bucket(), s3_server.client()
    older, newer = sorted((reference / "checkpoints").glob("ep*"))
    for folder in (older, newer):
        for f in folder.iterdir():
            if not (folder == newer and f.name == "__1_0.distcp"):
                client.upload_file(str(f), bucket, f"run/checkpoints/{folder.name}/{f.name}")
    client.put_object(Bucket=bucket, Key="run/checkpoints/latest-rank0.pt.symlink",
                      Body=f"run/checkpoints/{newer.name}".encode())
    assert repair_latest(f"s3://{bucket}/run/checkpoints") == older.name
    assert s3_server.keys(bucket) == sorted([f"run/checkpoints/{older.name}/{f.name}" for f in older.iterdir()]
                                            + ["run/checkpoints/latest-rank0.pt.symlink"])
    symlink = client.get_object(Bucket=bucket, Key="run/checkpoints/latest-rank0.pt.symlink")["Body"].read()
    assert symlink.decode() == f"run/checkpoints/{older.name}"  # what Composer's autoresume reads


def test_autoresume_from_an_s3_save_folder_leaves_no_local_s3_folder(tmp_path, shards, s3_server, monkeypatch):
    """1 process, full checkpoints uploaded to the S3 server, `autoresume: true`, in this process with the working
    directory in tmp_path: Composer's autoresume took save_folder for a local path and made a folder `s3:/BUCKET/...`
    in the working directory (and downloaded `latest` into it). Now it resumes from the bucket and makes none."""
    bucket = s3_server.make_bucket()
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"

    def launch(steps: int) -> None:
        overrides = [*SMALL, *run_overrides(run, shards, f"s3://{bucket}/runs/{{run_name}}/checkpoints"),
                     f"max_duration={steps}ba", "save_interval=2ba"]
        train(load_config(ROOT / "yamls" / "tiny.yaml", overrides)).close()

    launch(2)
    assert "runs/resumable/checkpoints/ep0-ba2-rank0.pt" in s3_server.keys(bucket)
    launch(4)  # resumes after step 2
    assert [r["step"] for r in records(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not (ROOT / "s3:").exists()
