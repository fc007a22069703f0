"""Start scripts/train.py the ways a cluster does, on this one machine: Composer's launcher for one node
(`-n N`), two Composer launchers as two loopback "nodes" (`--world_size 2 --node_rank 0|1 -n 1`), and
torchrun. Every rank is started by a launcher; this module only starts the launchers, as a scheduler
would, and waits for them.

A loopback node gets what a real node has of its own: /dev/shm (a private tmpfs in a mount namespace,
via `unshare`), TMPDIR and the streaming cache (`variables.data_local`). With `own_host=False` the
nodes share all three, as two launchers of one job on one host do (tests/distributed/test_shared_host.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from tests.checkpoint.harness import free_port
from tests.checkpoint.harness import records as metrics_records

ROOT = Path(__file__).resolve().parents[2]
SEQ = 32
STEPS, EVERY, EPOCH = 8, 2, 24  # 24-sample epochs = 6 steps of 4: steps 7-8 are epoch 1
# yamls/tiny.yaml shrunk by overrides; plain SGD with momentum (smooth in the gradients, unlike LION's
# sign, so runs that differ only in reduction order stay within float rounding), no clipping; every
# checkpoint kept.
BASE = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", f"variables.max_seq_len={SEQ}",
        "global_train_batch_size=4", "device_train_microbatch_size=2", "console_log_interval=1ba",
        "optimizer={name: decoupled_sgdw, lr: 0.5, momentum: 0.9}", "~optimizer.betas",
        "algorithms.gradient_clipping.clipping_threshold=1e9", f"train_loader.dataset.epoch_size={EPOCH}",
        f"max_duration={STEPS}ba", f"save_interval={EVERY}ba", "save_num_checkpoints_to_keep=-1"]
NCN2 = "train_loader.dataset.num_canonical_nodes=2"
ENV = {"CUDA_VISIBLE_DEVICES": "",  # CPU ranks on gloo even where GPUs are present
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
_UNSHARE = ["unshare", "--mount", "--propagation", "private",
            *([] if os.geteuid() == 0 else ["--user", "--map-root-user"])]
_OWN_SHM = [*_UNSHARE, "sh", "-c", 'mount -t tmpfs tmpfs /dev/shm && exec "$@"', "sh"]


def require_private_shm() -> None:
    """Fail unless this machine can give a process its own /dev/shm (the loopback-node tests need it):
    a skip would read as green in CI while the multi-node path went untested."""
    try:
        done = subprocess.run([*_OWN_SHM, "true"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.fail("loopback nodes need `unshare` (util-linux) for a private /dev/shm per node: install util-linux")
    if done.returncode != 0:
        pytest.fail(f"loopback nodes need a private /dev/shm per node (unshare --mount): {done.stderr.strip()}; "
                    "run the tests as root or where unprivileged user namespaces are allowed")


def records(run: Path) -> list[dict]:
    return metrics_records(run / "metrics.jsonl")


def run_overrides(run: Path, shards: Path, extra: list[str], local: Optional[Path] = None) -> list[str]:
    return [*BASE, f"variables.data_remote={shards}", f"variables.data_local={local or run / 'cache'}",
            f"run_dir={run}", f"save_folder={run / 'checkpoints'}", *extra]


def _train_args(overrides: list[str]) -> list[str]:
    return ["scripts/train.py", "yamls/tiny.yaml", *overrides]


_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR",
             "MASTER_PORT")  # a launcher sets these for its ranks; none may leak in from the test's own process


def _start(argv: list[str], log: Path, env: Optional[dict] = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    with log.open("w") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**base, **ENV, **(env or {})})


def _finish(procs: list[subprocess.Popen], logs: list[Path], expect_ok: bool, timeout: float = 300) -> str:
    try:
        codes = [p.wait(timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in logs)
    if expect_ok:
        assert codes == [0] * len(procs), f"exit codes {codes}\n{text}"
    else:
        assert any(codes), f"expected a failure, got exit codes {codes}\n{text}"
    return text


class Launch:
    """One training job (any layout) in `run`; `ok=False` expects it to fail. `.log` is its output."""

    def __init__(self, run: Path, shards: Path, extra: list[str], *, nproc: int = 1, nodes: int = 1,
                 torchrun: bool = False, ok: bool = True, own_host: bool = True):
        """`own_host=False`: the nodes share this machine as two launchers on one host do (one /dev/shm,
        TMPDIR and recipe), instead of each having its own."""
        self.run = run
        self.before = len(records(run))
        tag = f"{'torchrun' if torchrun else 'composer'}-{nodes}x{nproc}-{len(list(run.glob('*.log')))}"
        port = free_port()
        procs, logs = [], []
        for node in range(nodes):
            local = run / f"cache-node{node}" if nodes > 1 and own_host else None
            train = _train_args(run_overrides(run, shards, extra, local))
            if torchrun:
                argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node_rank",
                        str(node), "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
                        "--master_port", str(port), *train]
            elif nodes == 1 and nproc == 1:
                argv = [sys.executable, *train]
            else:
                argv = [sys.executable, "-m", "composer.cli.launcher", "--world_size", str(nodes * nproc),
                        "--node_rank", str(node), "-n", str(nproc), "--master_addr", "127.0.0.1",
                        "--master_port", str(port), *train]
            env = None
            if nodes > 1 and own_host:
                tmp = run / f"tmp-node{node}"
                tmp.mkdir(parents=True, exist_ok=True)
                argv, env = [*_OWN_SHM, *argv], {"TMPDIR": str(tmp)}
            logs.append(run / f"{tag}-node{node}.log")
            procs.append(_start(argv, logs[-1], env))
        self.log = _finish(procs, logs, ok)

    def new_records(self) -> list[dict]:
        return records(self.run)[self.before:]

    def errors(self) -> list[str]:
        """The one-line UserError messages the ranks printed."""
        return sorted({line for line in self.log.splitlines() if line.startswith("error: ")})


def resume_from(src: Path, checkpoint: str, dst: Path) -> Path:
    """A new run folder whose save_folder holds only `checkpoint` of run `src`, `latest` naming it: what
    autoresume of a run stopped right after that checkpoint finds."""
    folder = dst / "checkpoints"
    folder.mkdir(parents=True)
    source = src / "checkpoints" / checkpoint
    (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / checkpoint)
    (folder / "latest-rank0.pt").symlink_to(checkpoint)
    return dst
