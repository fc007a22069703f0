"""Composer Trainer + FSDP2 on a tiny MPT in real processes (see fsdp2_train.py for what runs)."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.checkpoint.harness import launcher

SCRIPT = Path(__file__).with_name("fsdp2_train.py")
REPO = SCRIPT.parents[2]


def run_ranks(tmp_path: Path, init_device: str, device: str, ranks: int = 2) -> dict:
    out = tmp_path / "seen.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if device == "cpu":  # Composer's FSDP2 set-up picks CUDA whenever it sees a GPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [*launcher(ranks), str(SCRIPT), str(out), init_device, device],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def assert_sharded_per_block(seen: dict) -> None:
    assert seen["blocks_sharded"] == [True, True, True]  # one FSDP unit per transformer block
    assert seen["root_sharded"]  # and MPTForCausalLM itself (embedding, final norm, head)
    assert seen["blocks_checkpointed"] == ["CheckpointWrapper"] * 3  # activation checkpointing per block
    assert seen["still_tied"] and not seen["any_meta"]
    assert seen["param_types"] == ["DTensor"]
    assert abs(seen["init_wqkv_std_ratio"] - 1) < 0.1 and seen["init_norms_one"]
    assert seen["max_change_from_init"] > 0.01


@pytest.mark.slow
def test_fsdp2_cpu_mixed_init_matches_single_process(tmp_path):
    seen = run_ranks(tmp_path, "mixed", "cpu")
    assert_sharded_per_block(seen)
    assert seen["init_matches_rank0"]  # rank 1 built on meta and received rank 0's weights
    assert seen["max_diff_vs_single_process"] < 1e-5


@pytest.mark.slow
@pytest.mark.gpu
def test_fsdp2_gpu_meta_init(tmp_path):
    # Every rank on meta; Composer materialises each module on CUDA through param_init_fn.
    seen = run_ranks(tmp_path, "meta", "gpu", ranks=min(2, torch.cuda.device_count()))
    assert_sharded_per_block(seen)
    assert seen["reduce_scatter_avg_factor"] == 1.0
