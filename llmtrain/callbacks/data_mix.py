"""`callbacks: {data_mix_monitor: {}}`: how many samples and tokens each data stream has supplied.

Every step it logs, cumulative over the run and summed over all ranks,
`data/<stream>/samples` and `data/<stream>/tokens` for each stream of the train loader (the
`streams:` names of `train_loader: {name: text}`, or `default` for a single dataset). Needs batches
with `source_id` (B,), which the `text` loader provides. The counts are checkpointed: a resumed run
continues them (a stream the checkpoint does not name starts at 0, and so do all after a resume from a
checkpoint saved before the counts were kept).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmtrain.checkpoint.callbacks import LaterState
from llmtrain.errors import UserError
from llmtrain.registry import callbacks


COUNTS_KEY = "state.callbacks.DataMixMonitor.counts"  # its key in a sharded checkpoint


class DataMixMonitor(LaterState, Callback):
    def __init__(self):
        self.stream_names: list[str] = []
        self.samples = torch.zeros(0, dtype=torch.int64)
        self.tokens = torch.zeros(0, dtype=torch.int64)
        self._resumed: Optional[dict[str, list[int]]] = None  # {stream: [samples, tokens]} from a checkpoint

    def state_dict(self) -> dict[str, Any]:
        if self.loading_lacks(COUNTS_KEY):
            return {}  # what a sharded load asks for, from a checkpoint without counts: DCP would miss the key
        # One JSON string: a single checkpoint item however many streams and ranks (a sharded checkpoint
        # resumed on another number of ranks or with other streams must find the same keys).
        counts = {name: [int(self.samples[i]), int(self.tokens[i])] for i, name in enumerate(self.stream_names)}
        return {"counts": json.dumps(counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "counts" in state:  # a full checkpoint saved before the counts were kept has none
            self._resumed = json.loads(state["counts"])  # applied at fit_start, once the streams are known

    def fit_start(self, state: State, logger: Logger) -> None:
        names = getattr(state.train_dataloader, "stream_names", None)
        if not names:
            raise UserError("callbacks.data_mix_monitor: the train loader does not name its data streams; "
                            "use train_loader: {name: text, ...} or remove the callback")
        self.stream_names = list(names)
        self.samples = torch.zeros(len(names), dtype=torch.int64)
        self.tokens = torch.zeros(len(names), dtype=torch.int64)
        for i, name in enumerate(names):
            self.samples[i], self.tokens[i] = (self._resumed or {}).get(name, (0, 0))
        self._resumed = None

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


callbacks.register("data_mix_monitor", DataMixMonitorConfig, lambda cfg: DataMixMonitor())
