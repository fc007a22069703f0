"""benchmarks/chaos.py's core, so the script cannot rot: one seeded kill -9 of the 2-rank run and a relaunch
that resumes after the newest complete checkpoint, compared with the uninterrupted run (conftest.py's
`reference`): every step record — per-source data_mix_monitor counts included, which must continue
across the resume — and the final weights, optimizer and RNG states. The checkpoints are local here (an S3
launch waits ~20 s for its upload workers); the script itself runs on the S3 server."""
import json
import math

import pytest

from benchmarks.chaos import KINDS, Run, chaos, mismatches
from tests.checkpoint.conftest import EVERY, STEPS


@pytest.mark.slow
def test_chaos_kill_and_autoresume_is_bit_identical(tmp_path, shards, reference):
    ref = Run(reference, shards, str(reference / "checkpoints"), STEPS, EVERY)
    run = Run(tmp_path, shards, str(tmp_path / "checkpoints"), STEPS, EVERY)
    [landing] = chaos(run, kills=1, seed=22)  # seed 22: killed between checkpoints, after step 9
    assert landing.kind == KINDS[0] and landing.resumed_after == 0 and landing.killed_after in (9, 10)
    assert landing.newest_complete in (5, 10)  # the relaunch resumed there (chaos checks), counts included
    assert mismatches(run, ref) == []

    # One changed bit of one record is a mismatch.
    metrics = tmp_path / "metrics.jsonl"
    last = [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r][-1]
    changed = math.nextafter(last["loss"], math.inf)
    with metrics.open("a") as f:
        f.write(json.dumps({**last, "loss": changed, "data/licenses/samples": 0}) + "\n")
    assert mismatches(run, ref) == [f"step {STEPS} loss: {changed!r} != {last['loss']!r}",
                                    f"step {STEPS} data/licenses/samples: 0 != {last['data/licenses/samples']!r}"]
