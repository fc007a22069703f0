"""ComposerMPT: MPTForCausalLM behind Composer's model interface.

Batch contract (from the data loader): `input_ids` (B, S) int64; `labels` (B, S) int64, an unshifted
copy of input_ids with -100 where no loss is taken; optional `sequence_id` (B, S) and
`attention_mask` (B, S). Other keys (e.g. `source_id`) are ignored.

YAML `model: {name: mpt_causal_lm, ...}` builds a ComposerMPT from the rest of the section (registered below).
"""
from __future__ import annotations

from typing import Mapping

import torch
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
from composer.models import ComposerModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from llmtrain.models.mpt.configuration import MPTConfig, parse_mpt_section
from llmtrain.models.mpt.modeling import MPTForCausalLM, shifted_targets
from llmtrain.registry import models


def _metrics() -> dict:
    return {"LanguageCrossEntropy": LanguageCrossEntropy(), "LanguagePerplexity": LanguagePerplexity()}


def _several_processes() -> bool:
    return torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


class _FromLoss:
    """Train metrics read off the loss the step already computed: Composer updates train metrics
    on every micro-batch, and a second (and third) cross entropy over the (B, S, 50432) logits costs
    as much as the loss itself. The sums are the same ones LanguageCrossEntropy keeps. It replaces
    `update`, which torchmetrics wraps to count updates (compute() warns when it saw none)."""

    def update(self, loss: torch.Tensor, n_targets: torch.Tensor) -> None:
        self.sum_loss += loss.detach().float() * n_targets
        self.total_items += n_targets

    def __init__(self):
        # Composer computes train metrics after every batch; with one process torchmetrics would still
        # barrier and all-gather each state then (host round trips while the GPU waits).
        super().__init__()
        self.distributed_available_fn = _several_processes


class TrainCrossEntropy(_FromLoss, LanguageCrossEntropy):
    pass


class TrainPerplexity(_FromLoss, LanguagePerplexity):
    pass


class ComposerMPT(ComposerModel):
    def __init__(self, config: MPTConfig):
        super().__init__()
        # The only direct child, so Composer's FSDP2 wraps it and asks its fsdp_wrap_fn /
        # activation_checkpointing_fn about everything inside (one FSDP unit per block).
        self.model = MPTForCausalLM(config)
        # Counted before sharding (FSDP2 keeps global shapes anyway); tied weights count once.
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.train_metrics = {"LanguageCrossEntropy": TrainCrossEntropy(), "LanguagePerplexity": TrainPerplexity()}
        self.eval_metrics = _metrics()

    def forward(self, batch: Mapping) -> CausalLMOutputWithPast:
        # The loss is computed here, not in `loss()`, so that it lies inside the compiled graph with
        # the output projection: the compiler fuses the fp32 upcast, log-softmax and gather.
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                          sequence_id=batch.get("sequence_id"), labels=batch.get("labels"))

    def loss(self, outputs: CausalLMOutputWithPast, batch: Mapping) -> torch.Tensor:
        return outputs.loss

    def get_metrics(self, is_train: bool = False) -> dict:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: Mapping, outputs: CausalLMOutputWithPast, metric) -> None:
        targets = shifted_targets(batch["labels"])
        if isinstance(metric, _FromLoss):
            metric.update(outputs.loss, (targets != -100).sum())
        else:
            metric.update(outputs.logits, targets)

    def flops_per_batch(self, batch: Mapping) -> int:
        """Training FLOPs of one batch, as llm-foundry counts them (no padding, backward = 2x forward):
        2 FLOPs per parameter per token, plus attention's QK^T and AV (2 * 2 * n_layers * d_model * s^2),
        times 3 for forward + backward. Parameters are all parameters; an untied input embedding is a
        lookup, not a matmul, so it is left out (tied, it is counted once, as the output projection)."""
        bs, s = batch["input_ids"].shape[:2]
        cfg = self.model.config
        params = self.n_params
        if not cfg.tie_word_embeddings:
            params -= cfg.vocab_size * cfg.d_model
        attn_flops = 4 * cfg.n_layers * cfg.d_model * s ** 2
        return (2 * params * s + attn_flops) * 3 * bs


def validate_mpt_section(cfg: dict, key: str = "model") -> dict:
    """`cfg` itself once checked: raises UserError (naming e.g. `model.attn_config.alibi`) for any mistake."""
    parse_mpt_section(cfg, key)
    return cfg


def build_composer_mpt(cfg: dict) -> ComposerMPT:
    """The YAML `model:` section without `name` (nested attn_config / init_config dicts)."""
    return ComposerMPT(MPTConfig(**validate_mpt_section(cfg, "model")))


models.register("mpt_causal_lm", validate_mpt_section, lambda cfg: ComposerMPT(MPTConfig(**cfg)))
