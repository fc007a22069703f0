"""A run killed with its whole process group leaves streaming's shared memory behind; the next run
must still start, and a run that is alive must not lose its state to the clean-up."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from tempfile import gettempdir

import pytest

from llmtrain.data.prep import prepare
from llmtrain.data.tokenizer import NEOX_NAME

HOLD = """
import sys, time
from llmtrain.data.text import build_text_dataloader
spec = build_text_dataloader({"dataset": {"remote": sys.argv[1], "local": sys.argv[2], "max_seq_len": 4,
                                          "eos_token_id": 0}, "num_workers": 1}, None, 2)
next(iter(spec.dataloader))
print("ready", flush=True)
time.sleep(300)
"""
HOLD_WITHOUT_US = """
import sys, time
from streaming import StreamingDataset
next(iter(StreamingDataset(remote=sys.argv[1], local=sys.argv[2], batch_size=2)))
print("ready", flush=True)
time.sleep(300)
"""
STREAMING_ALONE = """
import sys
from streaming import StreamingDataset
next(iter(StreamingDataset(remote=sys.argv[1], local=sys.argv[2], batch_size=2)))
"""
OURS = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from llmtrain.data.text import build_text_dataloader
spec = build_text_dataloader({"dataset": {"remote": sys.argv[1], "local": sys.argv[2], "max_seq_len": 4,
                                          "eos_token_id": 0}, "num_workers": 1}, None, 2)
print(next(iter(spec.dataloader))["input_ids"].shape)
"""


def own_blocks(pid: int) -> set[str]:
    """The streaming shared-memory blocks of the one dataset in process `pid`: its highest prefix
    (finding a free prefix, streaming also maps the blocks of the prefixes below it)."""
    names = set(re.findall(r"/dev/shm/(\d{6}_[a-z_]+)", Path(f"/proc/{pid}/maps").read_text()))
    own = max(name[:6] for name in names)
    return {name for name in names if name.startswith(own)}


def start_holder(remote: str, local: str, code: str = HOLD) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, remote, local], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_killed_run_leaves_no_trap_and_live_runs_are_untouched(tmp_path, neox_dir):
    (tmp_path / "a.txt").write_text("one two three four five six seven eight nine ten eleven twelve")
    remote = str(tmp_path / "remote")
    prepare([str(tmp_path / "a.txt")], remote, NEOX_NAME, max_seq_len=4)

    # A live run of another program (no owner record of ours): protected because it maps its blocks.
    alive = start_holder(remote, str(tmp_path / "other-cache"), HOLD_WITHOUT_US)
    try:
        live = own_blocks(alive.pid)
        killed = start_holder(remote, str(tmp_path / "cache"))
        stale = own_blocks(killed.pid)
        assert any(name.endswith("_locals") for name in stale) and not stale & live
        os.killpg(killed.pid, signal.SIGKILL)  # the whole group: no atexit, no resource tracker clean-up
        killed.wait()
        assert all((Path("/dev/shm") / name).exists() for name in stale)
        # Without its lock files (a different $TMPDIR, a cleaned /tmp) the leftovers trap the next run.
        locks = [lock for prefix in {name[:6] for name in stale}
                 for lock in Path(gettempdir()).glob(f"{prefix}_*_filelock")]
        assert locks
        for lock in locks:
            lock.rename(tmp_path / lock.name)
        trapped = run(STREAMING_ALONE, remote, str(tmp_path / "cache"))
        assert trapped.returncode != 0 and "Reused local directory" in trapped.stderr
        for lock in locks:  # the locks left behind too: ours removes both
            (tmp_path / lock.name).rename(lock)

        done = run(OURS, remote, str(tmp_path / "cache"))
        assert done.returncode == 0, done.stderr
        assert "torch.Size([2, 4])" in done.stdout
        removed = int(re.search(r"removed (\d+) stale streaming", done.stderr).group(1))
        assert removed >= len(stale) + len(locks)
        assert not any((Path("/dev/shm") / name).exists() for name in stale)
        assert all((Path("/dev/shm") / name).exists() for name in live) and alive.poll() is None
    finally:
        alive.kill()  # the main process only: its resource tracker unlinks what it created
        alive.wait()
