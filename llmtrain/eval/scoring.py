"""Token sequences → what the model makes of them, batched and split over the ranks.

`model` is any causal LM called as `model(input_ids=ids).logits` (our MPTForCausalLM, bare or under
FSDP2, or stock transformers MPT). For a sequence whose last `n_scored` tokens are a continuation:
  log_likelihood  sum over the continuation of log p(token | everything before it), in fp32
  greedy_match    whether the argmax at every continuation position is that token (teacher-forced:
                  one forward pass gives exactly what greedy decoding of the continuation would)
For a generation prompt (n_scored 0): the `max_new_tokens` greedy tokens that follow it.

Batches hold `batch_size` sequences of similar length (sorted longest first), right-padded: under
causal attention padding after a sequence changes nothing before it (on CUDA also padded to a few
fixed shapes; see `_shape`). Every rank must run the same
number of forward passes under FSDP2 (each one all-gathers weights), so a rank with fewer batches
runs dummy ones and drops their results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from composer.utils import dist

from llmtrain.eval.prompts import Sequence


@dataclass(frozen=True)
class Scored:
    log_likelihood: float
    n_tokens: int
    greedy_match: bool
    generated: Optional[list[int]] = None  # generation prompts: the greedy tokens


@dataclass(frozen=True)
class _Batching:
    size: int          # sequences per forward pass
    pad_id: int
    max_width: int     # the model's max_seq_len: no batch is padded past it
    device: torch.device
    fixed_shapes: bool  # pad every batch to `size` rows and a power-of-two width (see _shape)


def _shape(rows: int, width: int, batch: _Batching) -> tuple[int, int]:
    """The padded (rows, width) of a batch. Fixed shapes (the default on CUDA) are full batches of
    power-of-two widths (at most max_width): compiled attention (attn_impl flash) is compiled once per
    input shape and falls back to slow eager code after a few."""
    if not batch.fixed_shapes:
        return rows, width
    return batch.size, min(max(16, 1 << (width - 1).bit_length()), max(width, batch.max_width))


def _padded(seqs: list[Sequence], extra: int, batch: _Batching) -> torch.Tensor:
    rows, width = _shape(len(seqs), max(len(s.tokens) for s in seqs) + extra, batch)
    ids = torch.full((rows, width), batch.pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s.tokens)] = torch.tensor(s.tokens)
    return ids.to(batch.device)


def _score_batch(model, seqs: list[Sequence], batch: _Batching) -> list[Scored]:
    ids = _padded(seqs, 0, batch)
    scored = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)  # built on the host: no launches
    for row, s in enumerate(seqs):  # rows past len(seqs) are padding: nothing scored
        scored[row, len(s.tokens) - 1 - s.n_scored:len(s.tokens) - 1] = True
    scored = scored.to(batch.device)
    logits = model(input_ids=ids).logits[:, :-1]  # position t predicts token t + 1
    targets = ids[:, 1:][scored]
    picked = logits[scored].float()  # (continuation tokens of the batch, vocab), row-major
    token_ll = picked.log_softmax(-1).gather(1, targets[:, None])[:, 0]
    misses = (picked.argmax(-1) != targets).float()
    row_of = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor([s.n_scored for s in seqs])).to(batch.device)
    per_row = torch.zeros(2, len(seqs), device=batch.device)
    per_row[0].index_add_(0, row_of, token_ll)
    per_row[1].index_add_(0, row_of, misses)
    sums, missed = per_row.tolist()  # one device-to-host copy per batch
    return [Scored(ll, s.n_scored, m == 0) for s, ll, m in zip(seqs, sums, missed)]


def _generate_batch(model, seqs: list[Sequence], max_new_tokens: int, batch: _Batching) -> list[Scored]:
    ids = _padded(seqs, max_new_tokens, batch)
    lengths = torch.tensor([len(s.tokens) for s in seqs], device=batch.device)
    rows = torch.arange(len(seqs), device=batch.device)
    longest = int(max(len(s.tokens) for s in seqs))
    for step in range(max_new_tokens):  # no early stop: every rank runs the same number of passes
        logits = model(input_ids=ids[:, :_shape(len(seqs), longest + step, batch)[1]]).logits
        ids[rows, lengths] = logits[rows, lengths - 1].argmax(-1)
        lengths += 1
    return [Scored(0.0, 0, False, ids[row, len(s.tokens):len(s.tokens) + max_new_tokens].tolist())
            for row, s in enumerate(seqs)]


def _agreed_batch_count(mine: int, device) -> int:
    if dist.get_world_size() == 1:
        return mine
    count = torch.tensor([mine], device=device)
    dist.all_reduce(count, reduce_operation="MAX")
    return int(count.item())


@torch.no_grad()
def score(model, seqs: list[Sequence], batch_size: int, pad_id: int, max_width: int, device,
          max_new_tokens: int = 0, fixed_shapes: Optional[bool] = None) -> list[Scored]:
    """One `Scored` per sequence of this rank, in the order given. Collective: every rank calls it
    (with its own share, possibly empty) for the same task, shot count and `max_new_tokens`.
    `fixed_shapes` None: on CUDA only."""
    device = torch.device(device)
    batching = _Batching(batch_size, pad_id, max_width, device,
                         device.type == "cuda" if fixed_shapes is None else fixed_shapes)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].tokens))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    results: list[Optional[Scored]] = [None] * len(seqs)
    dummy = [Sequence([pad_id, pad_id], 1)]
    for b in range(_agreed_batch_count(len(batches), batching.device)):
        batch = [seqs[i] for i in batches[b]] if b < len(batches) else dummy
        if max_new_tokens:
            out = _generate_batch(model, batch, max_new_tokens, batching)
        else:
            out = _score_batch(model, batch, batching)
        if b < len(batches):
            for i, r in zip(batches[b], out):
                results[i] = r
    return results
