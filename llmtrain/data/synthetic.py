"""`train_loader: {name: synthetic}`: random tokens, no files — for benchmarks and smoke runs.

Each row is `max_seq_len` uniform random token ids (deterministic per index and seed), with an EOS
every `max_seq_len / docs_per_row` tokens so that document masking has real work to do; batches are
collated exactly as the `text` loader's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from composer.core import DataSpec
from composer.utils import dist
from torch.utils.data import DataLoader, Dataset

from llmtrain.data.text import TextCollator
from llmtrain.registry import dataloaders


@dataclass(frozen=True)
class SyntheticConfig:
    max_seq_len: int
    vocab_size: int = 50277
    num_samples: int = 1_000_000
    docs_per_row: int = 1
    eos_token_id: int = 0
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = True
    pin_memory: bool = True  # as the text loader: with workers, a thread receives and pins each batch


class SyntheticTokens(Dataset):
    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.num_samples

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + index)
        tokens = torch.randint(1, self.cfg.vocab_size, (self.cfg.max_seq_len,), generator=gen)
        doc_len = self.cfg.max_seq_len // self.cfg.docs_per_row
        tokens[doc_len - 1::doc_len] = self.cfg.eos_token_id
        return {"tokens": tokens, "source_id": 0}


def build_synthetic_dataloader(cfg: SyntheticConfig, tokenizer, device_batch_size: int, key: str,
                               retry_timeout: Optional[float] = None) -> DataSpec:
    """(`retry_timeout`: as for every loader; nothing here is read from an object store.)"""
    dataset = SyntheticTokens(cfg)
    sampler = dist.get_sampler(dataset, shuffle=False, drop_last=cfg.drop_last)
    loader = DataLoader(dataset, batch_size=device_batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        drop_last=cfg.drop_last, collate_fn=TextCollator(cfg.eos_token_id),
                        pin_memory=cfg.pin_memory and torch.cuda.is_available())  # pinning needs an accelerator
    return DataSpec(loader)


dataloaders.register("synthetic", SyntheticConfig, build_synthetic_dataloader)
