"""loss_guard for real, with tests/callbacks/poisoned_train.py's callback poisoning chosen steps: on one process (the
real Trainer, in this process) a NaN loss, a loss spike and NaN weights before a save each roll the run back to
the newest checkpoint and skip that batch, ending bit-identical to a run that dropped those batches' gradients;
on 2 ranks (scripts/train.py via the composer launcher, gloo, FSDP2) a NaN on one rank rolls both back, and a
kill -9 after the rollback and a relaunch (on one process, where nothing poisons) still skip the batch."""
import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from llmtrain.callbacks.loss_guard import RECENT_KEY, SKIPPED_FILE
from llmtrain.checkpoint import read_checkpoint
from llmtrain.builders import load_config
from llmtrain.errors import UserError
from llmtrain.train import train
from tests.callbacks import poisoned_train  # noqa: F401  (registers the `poison` callback)
from tests.checkpoint.harness import ROOT, SEQ, SMALL, SUBPROCESS_ENV, by_step, python_or_launcher, records
from tests.data.corpus import write_stream_shards

SCRIPT = "tests/callbacks/poisoned_train.py"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_stream_shards(tmp_path_factory.mktemp("guard_shards"), ["python_stdlib", "licenses"], SEQ, 80)


def launch(run_dir: Path, shards: Path, extra: list[str], nproc: int = 1) -> subprocess.Popen:
    overrides = [*SMALL, f"variables.data_remote={shards}", f"variables.data_local={run_dir}/cache",
                 f"run_dir={run_dir}", f"save_folder={run_dir}/checkpoints", "max_duration=10ba", *extra]
    run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*python_or_launcher(nproc), SCRIPT, "yamls/tiny.yaml", *overrides], cwd=ROOT,
                            env={**os.environ, **SUBPROCESS_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def succeed(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    return out


def final_state(run_dir: Path):
    return read_checkpoint(str(run_dir / "checkpoints" / "latest-rank0.pt"), prefix="state.")


def train_in_process(run_dir: Path, shards: Path, extra: list[str]) -> None:
    overrides = [*SMALL, f"variables.data_remote={shards}", f"variables.data_local={run_dir}/cache",
                 f"run_dir={run_dir}", f"save_folder={run_dir}/checkpoints", "max_duration=10ba", *extra]
    train(load_config(ROOT / "yamls" / "tiny.yaml", overrides)).close()


def test_nan_spike_and_nan_weights_roll_back_and_equal_a_run_without_those_batches(tmp_path, shards, capsys):
    guarded, reference = tmp_path / "guarded", tmp_path / "reference"
    # Checkpoints at 4 and 8. Step 6: NaN loss; 7: loss x1000 (> 3 x the last 3 steps' mean); 8: a NaN weight
    # after the step, found before the step-8 save. Each rolls back to step 4 and replays the earlier skips.
    train_in_process(guarded, shards, [
        "save_interval=4ba", "callbacks.loss_guard={spike_factor: 3, window: 3}",
        f"callbacks.poison={{steps: {{6: nan, 7: spike, 8: weights}}, marker: {tmp_path}/poisoned}}"])
    out = capsys.readouterr().out
    train_in_process(reference, shards, ["save_interval=4ba", "callbacks.poison={steps: {6: drop, 7: drop, 8: drop}}"])

    assert "loss_guard: step 6: loss nan: not applied; rolling back to the newest checkpoint, this batch will be " \
           "skipped" in out
    assert "loss_guard: step 7: loss 1.163e+04 > 3 x 11.66 (mean of the last 3 steps): not applied" in out
    assert "loss_guard: step 8: non-finite weights after it: not applied" in out
    assert out.count("loss_guard: step 6: skipped (consumed, not applied): it had loss nan") == 3
    events = [(r["step"], r["loss_guard/rolled_back"]) for r in records(guarded / "metrics.jsonl")
              if "loss_guard/rolled_back" in r]
    assert [step for step, _ in events] == [6, 7, 8]
    assert json.loads((guarded / "checkpoints" / SKIPPED_FILE).read_text()) == dict((str(s), w) for s, w in events)
    # what stands in metrics.jsonl: the skipped steps flagged, every other step's loss as if they never were
    ran, ref = by_step(guarded / "metrics.jsonl"), by_step(reference / "metrics.jsonl")
    assert [s for s in ran if ran[s].get("loss_guard/skipped")] == [6, 7, 8]
    for step in (1, 2, 3, 4, 5, 9, 10):
        assert ran[step]["loss"] == ref[step]["loss"], step
    # final weights and optimizer state: bit-identical to the run that dropped steps 6-8, and finite
    got, want = final_state(guarded), final_state(reference)
    assert got.batch == want.batch == 10 and sorted(got.tensors) == sorted(want.tensors)
    for name, tensor in want.tensors.items():
        assert torch.equal(got.tensors[name], tensor), name
        assert torch.isfinite(tensor).all(), name


@pytest.mark.slow
def test_two_ranks_agree_on_a_nan_from_one_rank_and_a_relaunch_after_kill9_still_skips_it(tmp_path, shards, capsys):
    # FSDP2, checkpoints at 5 and 10. Rank 1 alone has a NaN loss at step 7: both ranks roll back to 5.
    args = ["fsdp_config={}", "save_interval=5ba", "autoresume=true", "callbacks.loss_guard={}",
            "callbacks.poison={steps: {7: nan}, rank: 1}"]
    metrics = tmp_path / "metrics.jsonl"
    job = launch(tmp_path, shards, args, nproc=2)
    deadline = time.monotonic() + 300
    while not any(r.get("loss_guard/skipped") for r in records(metrics)):  # replayed up to 7, which is skipped
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0][-4000:]
        time.sleep(0.002)
    os.killpg(job.pid, signal.SIGKILL)  # before the step-10 save: the relaunch resumes from step 5
    first = job.communicate()[0]
    assert "loss_guard: step 7: loss nan: not applied; rolling back to the newest checkpoint" in first
    before = records(metrics)

    # Relaunched on one process (an elastic resume of the sharded checkpoint), where nothing poisons step 7:
    # only skipped_steps.json can make it skip that batch.
    train_in_process(tmp_path, shards, args)
    out = capsys.readouterr().out
    relaunch = records(metrics)[len(before):]
    assert relaunch[0]["step"] == 6  # resumed from the step-5 checkpoint
    assert "loss_guard: step 7: skipped (consumed, not applied): it had loss nan" in out
    assert [r["step"] for r in relaunch if r.get("loss_guard/skipped")] == [7]
    # before the kill, step 6 ran twice (before the rollback and after it) with the same loss
    assert len([r for r in before if r["step"] == 6]) == 2 and len({r["loss"] for r in before if r["step"] == 6}) == 1
    final = final_state(tmp_path)
    assert final.batch == 10 and all(torch.isfinite(t).all() for t in final.tensors.values())


def test_sharded_checkpoint_saved_without_the_guard_resumes_with_it_on(tmp_path, shards, capsys):
    # 2 ranks (FSDP2, sharded) train steps 1-2 without loss_guard: the step-2 checkpoint has no key of it. One
    # process resumes it (elastic) with the guard on: DCP would miss `recent_losses`; the guard leaves the key
    # out of what it asks for and starts with an empty window, and the checkpoint it saves carries the key.
    sharded = ["fsdp_config={}", "save_interval=2ba", "autoresume=true"]
    succeed(launch(tmp_path, shards, [*sharded, "max_duration=2ba"], nproc=2))
    assert not [k for k in read_metadata_keys(tmp_path / "checkpoints" / "ep0-ba2") if "LossGuard" in k]
    train_in_process(tmp_path, shards, [*sharded, "max_duration=4ba", "callbacks.loss_guard={window: 3}"])
    assert "loss_guard" not in capsys.readouterr().out  # nothing rolled back or skipped
    assert [r["step"] for r in records(tmp_path / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]  # resumed at 3
    assert RECENT_KEY in read_metadata_keys(tmp_path / "checkpoints" / "ep0-ba4")


def read_metadata_keys(checkpoint: Path) -> list[str]:
    return sorted(pickle.loads((checkpoint / ".metadata").read_bytes()).state_dict_metadata)


@pytest.mark.parametrize("override, error", [
    ("callbacks.loss_guard={spike_factor: 0.5}", "callbacks.loss_guard.spike_factor: 0.5 would flag ordinary steps; "
     "use a factor above 1 (e.g. 2.0), or leave it out to catch only NaN/inf"),
    ("callbacks.loss_guard={window: 0}", "callbacks.loss_guard.window: 0; use a number of steps ≥ 1 (e.g. 100)"),
    ("callbacks.loss_guard={spike: 3}", "callbacks.loss_guard.spike: unknown key (did you mean 'spike_factor'?); "
     "valid keys here: max_skipped, spike_factor, window"),
])
def test_bad_loss_guard_options_are_one_line_errors(override, error):
    with pytest.raises(UserError) as err:
        load_config(ROOT / "yamls" / "tiny.yaml", [override])
    assert str(err.value) == error


def test_mpt_7b_recipe_turns_the_guard_on():
    cfg = load_config(ROOT / "yamls" / "mpt-7b.yaml")
    assert cfg.callbacks["loss_guard"] == {"spike_factor": 2.0, "window": 100, "max_skipped": 20}
