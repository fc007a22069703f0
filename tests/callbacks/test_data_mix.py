"""data_mix_monitor in a real Composer Trainer (tiny MPT) on real `text` loaders, 1 and 2 ranks."""
import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import torch
from composer import Trainer
from composer.loggers import InMemoryLogger

from llmtrain.callbacks.data_mix import DataMixMonitor
from llmtrain.loggers.metrics_jsonl import MetricsJsonl
from llmtrain.data.prep import prepare
from llmtrain.data.text import build_text_dataloader
from llmtrain.data.tokenizer import NEOX_NAME, install_tokenizers
from llmtrain.errors import UserError
from llmtrain.models import ComposerMPT
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.registry import callbacks
from tests.checkpoint.harness import launcher

REPO = Path(__file__).resolve().parents[2]
SEQ, BATCH, STEPS = 8, 6, 5


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    install_tokenizers()
    root = tmp_path_factory.mktemp("mix")
    for name, word in (("web", "apple"), ("code", "banana")):
        (root / f"{name}.txt").write_text(" ".join([word] * 400))
        prepare([str(root / f"{name}.txt")], str(root / name), NEOX_NAME, max_seq_len=SEQ)
    return {"web": {"local": str(root / "web"), "proportion": 0.75},
            "code": {"local": str(root / "code"), "proportion": 0.25}}


class _Eos:  # the loader only needs the tokenizer's EOS id
    eos_token_id = 0


def loader_section(streams: dict) -> dict:
    return {"dataset": {"max_seq_len": SEQ, "streams": streams, "shuffle": True, "shuffle_seed": 1},
            "num_workers": 0}


def tiny_mpt() -> ComposerMPT:
    torch.manual_seed(0)
    return ComposerMPT(MPTConfig(d_model=16, n_heads=2, n_layers=1, vocab_size=50277, max_seq_len=SEQ,
                                 attn_config={"attn_impl": "torch"}))


def test_logs_cumulative_samples_and_tokens_per_stream(streams, tmp_path):
    # What the loader will hand the trainer, read straight from an identical loader.
    expected = Counter()
    for _, batch in zip(range(STEPS), build_text_dataloader(loader_section(streams), _Eos, BATCH).dataloader):
        expected.update(batch["source_id"].tolist())

    memory = InMemoryLogger()
    monitor = callbacks.get("data_mix_monitor", "callbacks.data_mix_monitor").build({})
    assert isinstance(monitor, DataMixMonitor)
    Trainer(model=tiny_mpt(), train_dataloader=build_text_dataloader(loader_section(streams), _Eos, BATCH),
            max_duration=f"{STEPS}ba", callbacks=[monitor], loggers=[memory, MetricsJsonl(tmp_path / "m.jsonl")],
            device="cpu", progress_bar=False, log_to_console=False).fit()

    web = [v for _, v in memory.data["data/web/samples"]]
    code = [v for _, v in memory.data["data/code/samples"]]
    assert len(web) == STEPS and [w + c for w, c in zip(web, code)] == [BATCH * (i + 1) for i in range(STEPS)]
    assert (web[-1], code[-1]) == (expected[0], expected[1]) and code[-1] > 0
    assert memory.data["data/web/tokens"][-1][1] == SEQ * web[-1]
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["data/code/samples"] for r in records] == code
    assert records[-1]["data/web/tokens"] + records[-1]["data/code/tokens"] == STEPS * BATCH * SEQ


def test_needs_a_loader_with_named_streams():
    batches = [{"input_ids": torch.zeros(2, SEQ, dtype=torch.int64), "labels": torch.zeros(2, SEQ, dtype=torch.int64)}]
    with pytest.raises(UserError, match=r"callbacks.data_mix_monitor: the train loader does not name its data streams"):
        Trainer(model=tiny_mpt(), train_dataloader=batches, max_duration="1ba", callbacks=[DataMixMonitor()],
                device="cpu", device_train_microbatch_size=2, progress_bar=False, log_to_console=False).fit()


def test_takes_no_options():
    with pytest.raises(UserError, match=r"callbacks.data_mix_monitor.window: unknown key"):
        callbacks.get("data_mix_monitor", "callbacks.data_mix_monitor").validate({"window": 5}, "callbacks.data_mix_monitor")


RANK_SCRIPT = """
import json, sys
import torch
from composer import Trainer
from composer.loggers import InMemoryLogger
from composer.devices import DeviceCPU
from composer.utils import dist
from llmtrain.callbacks.data_mix import DataMixMonitor
from llmtrain.data.text import build_text_dataloader
from tests.callbacks.test_data_mix import loader_section, tiny_mpt, _Eos, BATCH, STEPS

streams = json.loads(sys.argv[2])
local_sources = []

class Record(DataMixMonitor):
    def after_dataloader(self, state, logger):
        local_sources.extend(state.batch["source_id"].tolist())
        super().after_dataloader(state, logger)

dist.initialize_dist(DeviceCPU())  # as scripts/train.py does before it builds the loaders
memory = InMemoryLogger()
Trainer(model=tiny_mpt(), train_dataloader=build_text_dataloader(loader_section(streams), _Eos, BATCH),
        max_duration=f"{STEPS}ba", callbacks=[Record()], loggers=[memory], device="cpu",
        progress_bar=False, log_to_console=False).fit()
seen = {"local": local_sources, "logged": {k: [v for _, v in memory.data[k]] for k in memory.data if k.startswith("data/")}}
with open(f"{sys.argv[1]}/rank{dist.get_global_rank()}.json", "w") as f:
    json.dump(seen, f)
"""


@pytest.mark.slow
def test_two_ranks_log_the_same_all_reduced_totals(streams, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([*launcher(2), str(script), str(tmp_path), json.dumps(streams)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["logged"] == ranks[1]["logged"]
    both = Counter(ranks[0]["local"]) + Counter(ranks[1]["local"])
    logged = ranks[0]["logged"]
    assert (logged["data/web/samples"][-1], logged["data/code/samples"][-1]) == (both[0], both[1])
    assert sum(both.values()) == 2 * STEPS * BATCH and logged["data/code/tokens"][-1] == SEQ * both[1]
