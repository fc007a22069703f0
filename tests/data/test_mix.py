"""A weighted mix of streams: each sample comes from one stream, at the configured proportions."""
from collections import Counter

import pytest
import torch

from llmtrain.data.prep import prepare
from llmtrain.data.text import build_text_dataloader
from llmtrain.data.tokenizer import NEOX_NAME

SEQ = 8
# Each stream's documents use their own words, so a sample's tokens show which stream it came from.
STREAMS = {"web": ("apple", 0.6, 100), "code": ("banana", 0.3, 60), "books": ("cherry", 0.1, 40)}


@pytest.fixture(scope="module")
def mix_dirs(tmp_path_factory, neox_dir):
    root = tmp_path_factory.mktemp("mix")
    for name, (word, _, samples) in STREAMS.items():
        raw = root / f"{name}.jsonl"
        raw.write_text("".join(f'{{"text": "{" ".join([word] * 6)}"}}\n' for _ in range(samples * SEQ // 7 + 1)))
        prepare([str(raw)], str(root / name), NEOX_NAME, max_seq_len=SEQ)
    return root


def word_ids(neox, word: str) -> set[int]:
    return set(neox(f"{word} {word}")["input_ids"]) | {neox.eos_token_id}


def test_three_source_mix_matches_proportions(mix_dirs, neox):
    epoch = 3000
    streams = {name: {"local": str(mix_dirs / name), "proportion": p} for name, (_, p, _) in STREAMS.items()}
    spec = build_text_dataloader({"dataset": {"max_seq_len": SEQ, "streams": streams, "shuffle": True,
                                              "shuffle_seed": 7, "epoch_size": epoch},
                                  "num_workers": 0, "drop_last": False}, neox, 16)
    names = spec.dataloader.stream_names
    assert names == list(STREAMS)
    sources: list[int] = []
    for batch in spec.dataloader:
        for row, source in zip(batch["input_ids"], batch["source_id"]):
            # source_id names the stream whose data the sample really holds
            assert set(row.tolist()) <= word_ids(neox, STREAMS[names[source]][0])
        sources += batch["source_id"].tolist()
    assert len(sources) == epoch
    # Over the epoch within 2 %, and already mixed in its first third (within 5 %).
    for window, tolerance in ((sources, 0.02), (sources[:1000], 0.05)):
        counts = Counter(window)
        for i, (name, (_, proportion, _)) in enumerate(STREAMS.items()):
            share = counts[i] / len(window)
            assert abs(share - proportion) <= tolerance, (name, share, proportion, len(window))
    # Small streams are repeated to reach their share: books has 40 samples but gives ~300.
    assert Counter(sources)[2] > 5 * STREAMS["books"][2]
    assert torch.is_tensor(batch["source_id"]) and batch["source_id"].dtype == torch.int64
