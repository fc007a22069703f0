"""`metrics.jsonl`: one JSON object per logged step, always written by rank 0 into the run directory.

Contract (other parts add fields, none removes these): `step`, `loss`, `lr`, `tokens` (cumulative,
all ranks), `tokens_per_sec` (since the previous record), plus every metric any callback logged for
that step under its own name (`data/<stream>/tokens`, `throughput/device/mfu`, ...). Metrics logged
after the last step (Composer's closing evaluation) come as one more record for that step.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from composer.core import State, Time
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

log = logging.getLogger(__name__)


def drop_torn_tail(path: Path) -> int:
    """Cut off a last line that lacks its newline (a crash or a full disk in the middle of a write), so
    the records a resumed run appends stay one per line; returns the bytes removed. The cut record's
    step is logged again after the resume. Reads backwards from the end: the file can be large."""
    with path.open("rb+") as f:
        end = pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            chunk = f.read(pos - start)
            if pos == end and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                f.truncate(start + newline + 1)
                return end - (start + newline + 1)
            pos = start
        f.truncate(0)
        return end


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: tensors and numpy numbers become floats; NaN/inf become strings."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsJsonl(LoggerDestination):
    def __init__(self, path: str | Path, log_interval: str | int = "1ba"):
        self.path = Path(path)
        self.log_interval = Time.from_input(log_interval, "ba")
        self._pending: dict[str, Any] = {}
        self._lr: float | None = None
        self._last = (0, time.perf_counter())  # (tokens, wall time) at the previous record

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._pending.update(metrics)

    def log_event(self, step: int, metrics: dict[str, Any]) -> None:
        """A record of its own, written now (llmtrain.loggers.log_event), leaving the step's pending metrics be."""
        self._append({"step": step, **{key: _plain(value) for key, value in metrics.items()}})

    def fit_start(self, state: State, logger: Logger) -> None:
        self._last = (int(state.timestamp.token), time.perf_counter())
        if dist.get_global_rank() == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and (removed := drop_torn_tail(self.path)):
                log.warning("%s: dropped a cut-short last record (%d bytes) left by the previous run", self.path, removed)

    def batch_start(self, state: State, logger: Logger) -> None:
        # The learning rate this step applies; schedulers step before BATCH_END moves it on.
        self._lr = state.optimizers[0].param_groups[0]["lr"]

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        # BATCH_CHECKPOINT runs after every callback's BATCH_END and the evaluators, so the record is whole.
        step = int(state.timestamp.batch)
        if step % int(self.log_interval.value) != 0 and state.timestamp < state.max_duration:
            return
        tokens, now = int(state.timestamp.token), time.perf_counter()
        last_tokens, last_time = self._last
        record = {
            "step": step,
            "loss": state.total_loss_dict.get("loss/train/total") if state.total_loss_dict else None,
            "lr": self._lr,
            "tokens": tokens,
            "tokens_per_sec": (tokens - last_tokens) / max(now - last_time, 1e-9),
        }
        self._last = (tokens, now)
        self._write(record)

    def fit_end(self, state: State, logger: Logger) -> None:
        # Composer's epoch-end time/* counters alone are no reason for a record; a closing eval is.
        if any(not key.startswith("time/") for key in self._pending):
            self._write({"step": int(state.timestamp.batch)})

    def _write(self, record: dict) -> None:
        for key, value in self._pending.items():
            record.setdefault(key, _plain(value))
        self._pending.clear()
        self._append(record)

    def _append(self, record: dict) -> None:
        if dist.get_global_rank() == 0:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
