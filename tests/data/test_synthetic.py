"""The synthetic loader: deterministic random rows with EOS-delimited documents, batched as `text`'s."""
import torch

from llmtrain.data.synthetic import SyntheticConfig, build_synthetic_dataloader


def first_batch(**kw):
    spec = build_synthetic_dataloader(SyntheticConfig(max_seq_len=16, **kw), None, 3, "train_loader")
    return next(iter(spec.dataloader))


def test_rows_are_deterministic_and_documents_follow_eos():
    a, b = first_batch(docs_per_row=4), first_batch(docs_per_row=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["input_ids"].shape == (3, 16) and torch.equal(a["labels"], a["input_ids"])
    assert (a["input_ids"][:, 3::4] == 0).all()  # EOS closes each 4-token document
    assert torch.equal(a["sequence_id"][0], torch.arange(16) // 4)
    assert not torch.equal(first_batch(seed=1)["input_ids"], a["input_ids"])
