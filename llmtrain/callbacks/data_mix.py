"""`callbacks: {data_mix_monitor: {}}`: how many samples and tokens each data stream has supplied.

Every step it logs, cumulative over the run and summed over all ranks,
`data/<stream>/samples` and `data/<stream>/tokens` for each stream of the train loader (the
`streams:` names of `train_loader: {name: text}`, or `default` for a single dataset). Needs batches
with `source_id` (B,), which the `text` loader provides. A resumed run counts from its restart.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmtrain.errors import UserError
from llmtrain.registry import callbacks


class DataMixMonitor(Callback):
    def __init__(self):
        self.stream_names: list[str] = []
        self.samples = torch.zeros(0, dtype=torch.int64)
        self.tokens = torch.zeros(0, dtype=torch.int64)

    def fit_start(self, state: State, logger: Logger) -> None:
        names = getattr(state.train_dataloader, "stream_names", None)
        if not names:
            raise UserError("callbacks.data_mix_monitor: the train loader does not name its data streams; "
                            "use train_loader: {name: text, ...} or remove the callback")
        self.stream_names = list(names)
        self.samples = torch.zeros(len(names), dtype=torch.int64)
        self.tokens = torch.zeros(len(names), dtype=torch.int64)

    def after_dataloader(self, state: State, logger: Logger) -> None:
        # AFTER_DATALOADER sees the whole device batch; later events may see one microbatch.
        batch = state.batch
        source = batch["source_id"].to(torch.int64).cpu()
        if "attention_mask" in batch:
            per_sample = batch["attention_mask"].sum(dim=1).to(torch.int64).cpu()
        else:  # packed samples: every position is a real token
            per_sample = torch.full_like(source, batch["input_ids"].shape[1])
        n = len(self.stream_names)
        counts = torch.stack([torch.bincount(source, minlength=n),
                              torch.zeros(n, dtype=torch.int64).scatter_add_(0, source, per_sample)])
        counts = state.device.tensor_to_device(counts)
        dist.all_reduce(counts, reduce_operation="SUM")
        counts = counts.cpu()
        self.samples += counts[0]
        self.tokens += counts[1]
        metrics = {}
        for i, name in enumerate(self.stream_names):
            metrics[f"data/{name}/samples"] = int(self.samples[i])
            metrics[f"data/{name}/tokens"] = int(self.tokens[i])
        logger.log_metrics(metrics)


@dataclass(frozen=True)
class DataMixMonitorConfig:
    pass


callbacks.register_typed("data_mix_monitor", DataMixMonitorConfig, lambda cfg: DataMixMonitor())
