import json

import pytest
import torch
from composer.core import DataSpec
from streaming import MDSWriter

from llmtrain.data.prep import prepare
from llmtrain.data.text import build_text_dataloader, validate_text_section
from llmtrain.data.tokenizer import NEOX_NAME
from llmtrain.errors import UserError
from llmtrain.registry import dataloaders
from tests.data.corpus import make_documents, write_corpus
from tests.data.test_prep import expected_stream

EOS = "<|endoftext|>"


def batches(spec: DataSpec) -> list[dict[str, torch.Tensor]]:
    return list(spec.dataloader)


def filled_to_multiple(neox, docs: list[str], seq: int) -> list[str]:
    """`docs` plus one filler document ("a a a ...", one token a word) so nothing is left over."""
    total = len(expected_stream(neox, docs))
    words = 1 + (-(total + 2)) % seq  # filler = `words` tokens + EOS
    return docs + [" ".join(["a"] * words)]


@pytest.mark.parametrize("workers,compression", [(0, None), (2, "zstd")])
def test_round_trip_documents_to_batches(tmp_path, neox, workers, compression):
    seq = 64
    docs = filled_to_multiple(neox, make_documents(80, seed=5), seq)
    order = write_corpus(tmp_path / "raw", docs)
    summary = prepare([str(tmp_path / "raw")], str(tmp_path / "mds"), NEOX_NAME, max_seq_len=seq,
                      size_limit="3kb", compression=compression)
    assert summary.dropped_tail_tokens == 0 and summary.shards > 3
    # (Non-persistent workers: a persistent-worker loader freed later by the garbage collector takes
    # 5 s per worker to shut down, which would land in some other test's time.)
    spec = build_text_dataloader({"dataset": {"local": str(tmp_path / "mds"), "max_seq_len": seq},
                                  "num_workers": workers, "persistent_workers": False, "drop_last": False}, neox, 5)
    got = batches(spec)
    ids = torch.cat([b["input_ids"] for b in got])
    assert ids.shape == (summary.samples, seq) and ids.dtype == torch.int64
    # Every document, in order, joined by EOS: token for token, and as text.
    assert ids.ravel().tolist() == expected_stream(neox, order)
    assert neox.decode(ids.ravel().tolist()) == EOS.join(order) + EOS
    for b in got:
        assert torch.equal(b["labels"], b["input_ids"]) and b["labels"].dtype == torch.int64
        assert b["source_id"].tolist() == [0] * len(b["input_ids"]) and b["source_id"].dtype == torch.int64
    assert spec.dataloader.stream_names == ["default"]
    assert spec.get_num_samples_in_batch(got[0]) == 5 and spec.get_num_tokens_in_batch(got[0]) == 5 * seq


def test_sequence_id_counts_documents_within_each_row(neox):
    from llmtrain.data.text import TextCollator

    rows = [[5, 6, 0, 7, 0, 0, 8, 9], [0, 1, 2, 3, 4, 5, 6, 0]]
    batch = TextCollator(eos_token_id=0)([{"tokens": torch.tensor(r), "source_id": i} for i, r in enumerate(rows)])
    assert batch["sequence_id"].tolist() == [[0, 0, 0, 1, 1, 2, 3, 3], [0, 1, 1, 1, 1, 1, 1, 1]]
    assert batch["source_id"].tolist() == [0, 1]


def test_registered_as_text(tmp_path, neox):
    (tmp_path / "a.txt").write_text("one two three four five six seven eight nine ten")
    prepare([str(tmp_path / "a.txt")], str(tmp_path / "mds"), NEOX_NAME, max_seq_len=4)
    entry = dataloaders.get("text", "train_loader.name")
    section = {"dataset": {"local": str(tmp_path / "mds"), "max_seq_len": 4}, "num_workers": 0}
    entry.validate(section, "train_loader")
    spec = entry.build(section, neox, 2)
    assert isinstance(spec, DataSpec) and next(iter(spec.dataloader))["input_ids"].shape == (2, 4)


def test_longer_shards_are_truncated_to_max_seq_len(tmp_path, neox):
    (tmp_path / "a.txt").write_text(" ".join(["word"] * 100))
    prepare([str(tmp_path / "a.txt")], str(tmp_path / "mds"), NEOX_NAME, max_seq_len=16)
    full = build_text_dataloader({"dataset": {"local": str(tmp_path / "mds"), "max_seq_len": 16},
                                  "num_workers": 0}, neox, 2)
    short = build_text_dataloader({"dataset": {"local": str(tmp_path / "mds"), "max_seq_len": 8},
                                   "num_workers": 0}, neox, 2)
    assert torch.equal(next(iter(short.dataloader))["input_ids"], next(iter(full.dataloader))["input_ids"][:, :8])


@pytest.fixture
def mds(tmp_path, neox):
    (tmp_path / "a.txt").write_text("one two three four five six seven eight nine ten eleven twelve")
    prepare([str(tmp_path / "a.txt")], str(tmp_path / "mds"), NEOX_NAME, max_seq_len=4)
    return str(tmp_path / "mds")


@pytest.mark.parametrize("section,message", [
    ({"dataset": {"local": "MDS", "max_seq_len": 4, "shufle": True}},
     r"train_loader.dataset.shufle: unknown key \(did you mean 'shuffle'\?\)"),
    ({"dataset": {"local": "MDS"}}, r"train_loader.dataset.max_seq_len: required key is missing"),
    ({"dataset": {"local": "MDS", "max_seq_len": 4}, "num_wrkers": 2},
     r"train_loader.num_wrkers: unknown key \(did you mean 'num_workers'\?\)"),
    ({"dataset": {"local": "MDS", "max_seq_len": 4}, "num_workers": "two"},
     r"train_loader.num_workers: expected an integer, got str 'two'"),
    ({"dataset": {"local": "MDS", "max_seq_len": 4, "shuffle_algo": "pyle"}},
     r"train_loader.dataset.shuffle_algo: 'pyle' is not allowed \(did you mean 'py1e'\?\)"),
    ({"dataset": {"local": "MDS", "max_seq_len": 0}}, r"train_loader.dataset.max_seq_len: must be a positive"),
    ({"dataset": {"max_seq_len": 4}}, r"train_loader.dataset: needs local"),
    ({"dataset": {"local": "TMP/nothing-here", "max_seq_len": 4}},
     r"train_loader.dataset.local: '.*nothing-here/index.json' not found; write the dataset there with scripts/data_prep.py"),
    ({"dataset": {"local": "MDS", "split": "train", "max_seq_len": 4}}, r"train_loader.dataset.local: '.*mds/train/index.json' not found"),
    ({"dataset": {"remote": "s3://bucket/c4", "max_seq_len": 4}},
     r"train_loader.dataset.local: required with remote 's3://bucket/c4'; set it to a local cache directory"),
    ({"dataset": {"local": "MDS", "max_seq_len": 4, "streams": {"a": {"local": "MDS"}}}},
     r"train_loader.dataset: use either streams or remote/local, not both"),
    ({"dataset": {"max_seq_len": 4, "streams": {"a": {"local": "MDS", "proportion": 0.5},
                                               "b": {"remote": "s3://x/y", "local": "TMP/c"}}}},
     r"train_loader.dataset.streams.b.proportion: missing; give every stream a proportion, or none of them"),
    ({"dataset": {"max_seq_len": 4, "streams": {"a": {"local": "MDS", "proportion": -1}}}},
     r"train_loader.dataset.streams.a.proportion: must not be negative"),
    ({"dataset": {"max_seq_len": 4, "streams": {"a": {"local": "MDS"}, "b": {"remote": "s3://x", "local": "MDS"}}}},
     r"train_loader.dataset.streams.b.local: same directory as stream 'a'; each stream needs its own"),
    ({"dataset": {"max_seq_len": 4, "streams": {"a": {"local": "MDS", "proprtion": 1}}}},
     r"train_loader.dataset.streams.a.proprtion: unknown key \(did you mean 'proportion'\?\)"),
    ({"dataset": {"max_seq_len": 4, "streams": {}}}, r"train_loader.dataset.streams: is empty"),
])
def test_invalid_sections_are_rejected_before_building(tmp_path, mds, section, message):
    text = json.dumps(section).replace("MDS", mds).replace("TMP", str(tmp_path))
    with pytest.raises(UserError, match=message):
        validate_text_section(json.loads(text), "train_loader")


def test_max_seq_len_longer_than_the_shards_fails_at_build(mds, neox):
    with pytest.raises(UserError, match=r"eval_loader.dataset.max_seq_len: is 8 but stream 'default' has samples "
                                        r"of 4 tokens; .*--max-seq-len 8"):
        build_text_dataloader({"dataset": {"local": mds, "max_seq_len": 8}}, neox, 2, key="eval_loader")


def test_shards_without_a_tokens_column_fail_at_build(tmp_path, neox):
    with MDSWriter(out=str(tmp_path / "text"), columns={"text": "str"}) as writer:
        writer.write({"text": "raw text, not tokens"})
    with pytest.raises(UserError, match=r"train_loader.dataset: shards of '.*text' have columns \{'text': 'str'\}, "
                                        r"need a 'tokens' ndarray column"):
        build_text_dataloader({"dataset": {"local": str(tmp_path / "text"), "max_seq_len": 4}}, neox, 2)


def test_eos_comes_from_the_tokenizer_or_the_yaml(mds):
    with pytest.raises(UserError, match=r"train_loader.dataset.eos_token_id: the tokenizer has no EOS token"):
        build_text_dataloader({"dataset": {"local": mds, "max_seq_len": 4}}, None, 2)
    spec = build_text_dataloader({"dataset": {"local": mds, "max_seq_len": 4, "eos_token_id": 1},
                                  "num_workers": 0}, None, 2)
    assert spec.dataloader.collate_fn.eos_token_id == 1


def test_missing_remote_index_is_a_user_error(tmp_path, neox):
    remote = tmp_path / "remote"
    remote.mkdir()
    with pytest.raises(UserError, match=r"^train_loader.dataset: reading .*/remote/index.json: FileNotFoundError: .*$"):
        build_text_dataloader({"dataset": {"remote": str(remote), "local": str(tmp_path / "cache"), "max_seq_len": 4}},
                              neox, 2)

