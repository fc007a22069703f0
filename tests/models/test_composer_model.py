import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from llmtrain.models.composer_model import ComposerMPT
from tests.models.conftest import tiny_config, token_batch


def test_loss_is_next_token_cross_entropy_ignoring_masked_labels_and_extra_keys():
    torch.manual_seed(0)
    model = ComposerMPT(tiny_config())
    batch = token_batch()
    batch["labels"][:, :5] = -100
    batch["source_id"] = torch.tensor([3, 7])  # extra loader keys are ignored
    outputs = model(batch)
    logits = outputs.logits
    assert logits.shape == (2, 16, 64)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 64), batch["labels"][:, 1:].reshape(-1))
    assert torch.allclose(model.loss(outputs, batch), expected)
    # -100 labels really are excluded: labels 1..4 (the targets of positions 0..3) are masked.
    unmasked = F.cross_entropy(logits[:, 4:-1].reshape(-1, 64), batch["labels"][:, 5:].reshape(-1))
    assert torch.allclose(model.loss(outputs, batch), unmasked)


def test_metrics_agree_with_loss():
    torch.manual_seed(0)
    model = ComposerMPT(tiny_config())
    batch = token_batch()
    with torch.no_grad():
        logits = model.eval_forward(batch)
        loss = model.loss(logits, batch)
    metrics = model.get_metrics(is_train=False)
    assert set(metrics) == {"LanguageCrossEntropy", "LanguagePerplexity"}
    for metric in metrics.values():
        model.update_metric(batch, logits, metric)
    assert metrics["LanguageCrossEntropy"].compute().item() == pytest.approx(loss.item(), rel=1e-5)
    assert metrics["LanguagePerplexity"].compute().item() == pytest.approx(math.exp(loss.item()), rel=1e-5)
    assert model.get_metrics(is_train=True) is not metrics


def test_train_metrics_read_the_loss_and_weigh_micro_batches_by_targets():
    torch.manual_seed(0)
    model = ComposerMPT(tiny_config())
    first, second = token_batch(), token_batch()
    second["labels"][:, :10] = -100  # fewer targets: counts for less in the mean
    metrics = model.get_metrics(is_train=True)
    losses, counts = [], []
    for batch in (first, second):
        outputs = model(batch)
        for metric in metrics.values():
            model.update_metric(batch, outputs, metric)
        losses.append(outputs.loss.item())
        counts.append(int((batch["labels"][:, 1:] != -100).sum()))
    expected = sum(l * n for l, n in zip(losses, counts)) / sum(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics warns when compute() follows no counted update
        assert metrics["LanguageCrossEntropy"].compute().item() == pytest.approx(expected, rel=1e-6)
        assert metrics["LanguagePerplexity"].compute().item() == pytest.approx(math.exp(expected), rel=1e-6)


def test_sequence_id_reaches_attention():
    torch.manual_seed(0)
    model = ComposerMPT(tiny_config(attn_config={"attn_uses_sequence_id": True}))
    batch = token_batch()
    plain = model(batch).logits
    batch["sequence_id"] = torch.tensor([[0] * 8 + [1] * 8] * 2)
    packed = model(batch).logits
    assert torch.equal(plain[:, :8], packed[:, :8])  # first document: same keys either way
    assert not torch.allclose(plain[:, 8:], packed[:, 8:])


@pytest.mark.parametrize("tied", [True, False])
def test_flops_per_batch_follows_llm_foundry(tied):
    model = ComposerMPT(tiny_config(tie_word_embeddings=tied, no_bias=True, attn_config={"alibi": True}))
    cfg = model.model.config
    per_block = 12 * cfg.d_model ** 2 + 2 * cfg.d_model  # qkv+out (4d^2), mlp (8d^2), two norm weights
    matmul_params = cfg.n_layers * per_block + cfg.d_model + cfg.vocab_size * cfg.d_model  # norm_f, lm_head
    batch = token_batch(batch=3, seq=16)
    s = 16
    expected = (2 * matmul_params * s + 4 * cfg.n_layers * cfg.d_model * s ** 2) * 3 * 3
    assert model.flops_per_batch(batch) == expected


def test_trains_in_composer_trainer():
    from composer import Trainer

    torch.manual_seed(0)
    model = ComposerMPT(tiny_config())
    batch = token_batch(batch=4, seq=16)
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch.items()} for i in range(4)], batch_size=4)
    with torch.no_grad():
        before = model.loss(model(batch), batch).item()
    trainer = Trainer(model=model, train_dataloader=loader, eval_dataloader=loader, max_duration="20ba",
                      optimizers=torch.optim.AdamW(model.parameters(), lr=1e-2), device="cpu",
                      progress_bar=False, log_to_console=False)
    trainer.fit()
    with torch.no_grad():
        after = model.loss(model(batch), batch).item()
    assert after < before / 2  # memorises one batch
    assert trainer.state.eval_metric_values["LanguageCrossEntropy"] == pytest.approx(after, rel=1e-3)
