"""Mid-epoch resumption continues at exactly the next sample (loader level and through Composer)."""
import gc

import pytest
import torch
from composer import Callback, Trainer

from llmtrain.data.prep import prepare
from llmtrain.data.text import build_text_dataloader
from llmtrain.data.tokenizer import NEOX_NAME
from llmtrain.models import ComposerMPT
from llmtrain.models.mpt.configuration import MPTConfig
from tests.data.corpus import make_documents

SEQ, BATCH = 16, 4


@pytest.fixture(scope="module")
def streams(tmp_path_factory, neox_dir):
    root = tmp_path_factory.mktemp("resume")
    for seed, name in enumerate(("a", "b")):
        raw = root / f"{name}.txt"
        raw.write_text("\n\n".join(make_documents(40, seed=10 + seed)))
        prepare([str(raw)], str(root / name), NEOX_NAME, max_seq_len=SEQ, size_limit="1kb")
    return {name: {"local": str(root / name), "proportion": p} for name, p in (("a", 0.7), ("b", 0.3))}


def section(streams: dict, workers: int) -> dict:
    return {"dataset": {"max_seq_len": SEQ, "streams": streams, "shuffle": True, "shuffle_seed": 3,
                        "epoch_size": 200},
            # Non-persistent workers: a persistent-worker loader that the garbage collector frees (a
            # DataSpec holds it in a reference cycle) waits 5 s per worker before it shuts them down.
            "num_workers": workers, "persistent_workers": False, "drop_last": True}


def rows(batches) -> list[tuple]:
    return [(tuple(ids.tolist()), int(src)) for b in batches for ids, src in zip(b["input_ids"], b["source_id"])]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("via", ["loader", "composer"])
def test_resume_continues_at_the_next_sample(streams, neox, workers, via):
    whole = rows(build_text_dataloader(section(streams, workers), neox, BATCH).dataloader)
    assert len(whole) == 200 and len(set(whole)) > 100

    spec = build_text_dataloader(section(streams, workers), neox, BATCH)
    batches = iter(spec.dataloader)
    first = [next(batches) for _ in range(7)]
    if via == "loader":  # StreamingDataLoader.state_dict: samples yielded by this loader
        state = spec.dataloader.state_dict()
    else:  # what Composer checkpoints: dataset.state_dict(sample_in_epoch, from_beginning=True)
        state = spec.dataloader.dataset.state_dict(7 * BATCH, True)
    del batches, spec
    gc.collect()

    resumed = build_text_dataloader(section(streams, workers), neox, BATCH)
    if via == "loader":
        resumed.dataloader.load_state_dict(state)
    else:
        resumed.dataloader.dataset.load_state_dict(state)
    assert rows(first) + rows(resumed.dataloader) == whole


class RecordBatches(Callback):
    def __init__(self):
        self.seen: list[tuple] = []

    def after_dataloader(self, state, logger):
        self.seen += rows([state.batch])


def tiny_mpt() -> ComposerMPT:
    torch.manual_seed(0)
    return ComposerMPT(MPTConfig(d_model=16, n_heads=2, n_layers=1, vocab_size=50277, max_seq_len=SEQ,
                                 attn_config={"attn_impl": "torch"}))


def trainer(streams, neox, tmp_path, callback, **kwargs) -> Trainer:
    return Trainer(model=tiny_mpt(), train_dataloader=build_text_dataloader(section(streams, 0), neox, BATCH),
                   max_duration="8ba", callbacks=[callback], device="cpu", save_folder=str(tmp_path / "ckpt"),
                   save_interval="3ba", progress_bar=False, log_to_console=False, **kwargs)


def test_composer_checkpoint_resume_sees_the_same_batches(streams, neox, tmp_path):
    straight = RecordBatches()
    trainer(streams, neox, tmp_path, straight).fit()
    assert len(straight.seen) == 8 * BATCH

    resumed = RecordBatches()
    trainer(streams, neox, tmp_path / "again", resumed, load_path=str(tmp_path / "ckpt" / "ep0-ba3-rank0.pt")).fit()
    assert resumed.seen == straight.seen[3 * BATCH:]
