"""Shared by the checkpoint tests: test shards, an uninterrupted 2-rank reference run and a 1-process one."""
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmtrain.data.prep import prepare
from llmtrain.data.tokenizer import NEOX_NAME, install_tokenizers
from tests.checkpoint.harness import LIVE, SEQ, Job, by_step
from tests.data.corpus import make_documents

STEPS, EVERY = 40, 5
# The run every resume is compared with: 2 ranks, FSDP2 sharded checkpoints every 5 steps (keeping 2),
# dropout on (so the RNG state matters), 100-sample epochs (25 steps: resumes cross an epoch boundary).
RESUMABLE = [f"max_duration={STEPS}ba", f"save_interval={EVERY}ba", "fsdp_config={}", "autoresume=true",
             "run_name=resumable", "train_loader.dataset.epoch_size=100", "model.resid_pdrop=0.1",
             "model.emb_pdrop=0.1"]


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    yield
    for job in list(LIVE):  # a failed test leaves its launch running: kill -9 its process group
        job.kill()


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    install_tokenizers()
    root = tmp_path_factory.mktemp("ckpt_shards")
    for seed, name in enumerate(["python_stdlib", "licenses"]):
        docs = root / f"raw_{name}"
        docs.mkdir()
        for i, doc in enumerate(make_documents(80, seed=seed)):
            (docs / f"{i:03}.txt").write_text(doc)
        prepare([str(docs)], str(root / name), NEOX_NAME, SEQ)
    return root


def run_overrides(run_dir: Path, shards: Path, save_folder: str | None = None) -> list[str]:
    return [f"variables.data_remote={shards}", f"variables.data_local={run_dir}/cache", f"run_dir={run_dir}",
            f"save_folder={save_folder or run_dir / 'checkpoints'}", *RESUMABLE]


@pytest.fixture(scope="session")
def reference(tmp_path_factory, shards) -> Path:
    """The uninterrupted run's directory (metrics.jsonl, checkpoints/)."""
    run = tmp_path_factory.mktemp("reference")
    Job(run_overrides(run, shards), run).succeed()
    assert sorted(by_step(run / "metrics.jsonl")) == list(range(1, STEPS + 1))
    return run


@dataclass
class OneRankRun:
    dir: Path
    shards: Path

    def overrides(self, run_dir: Path) -> list[str]:
        """1 process: full (single-file .pt) checkpoints at steps 3 and 6."""
        return [f"variables.data_remote={self.shards}", f"variables.data_local={run_dir}/cache", f"run_dir={run_dir}",
                f"save_folder={run_dir / 'checkpoints'}", "max_duration=6ba", "save_interval=3ba", "autoresume=true",
                "run_name=onerank", "model.resid_pdrop=0.1"]


@pytest.fixture(scope="session")
def one_rank_run(tmp_path_factory, shards) -> OneRankRun:
    run = OneRankRun(tmp_path_factory.mktemp("onerank"), shards)
    Job(run.overrides(run.dir), run.dir, nproc=1).succeed()
    assert sorted(by_step(run.dir / "metrics.jsonl")) == [1, 2, 3, 4, 5, 6]
    return run
