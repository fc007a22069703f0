"""Where a run's numbers go, all in this package:

  metrics_jsonl.py  runs/NAME/metrics.jsonl, one record per logged step (always on)
  progress.py       the console: one compact line per console_log_interval, a bar on a terminal
  wandb_logger.py   `loggers: {wandb: {...}}` (registered; offline without credentials)
  report.py         reading metrics.jsonl back: scripts/plot_run.py's plots and summary

Components report through Composer's `Logger` only. `log_event` is for a record that cannot wait for its
step to end (a rollback ends the step): destinations that keep records of their own (`log_event(step,
metrics)`: MetricsJsonl) write it at once; the others are not sent it.
"""
from __future__ import annotations

from typing import Any


def log_event(logger, step: int, metrics: dict[str, Any]) -> None:
    """Report `metrics` for `step` now, through Composer's `logger` (every rank calls it; rank 0 writes)."""
    for destination in logger.destinations:
        write = getattr(destination, "log_event", None)
        if write is not None:
            write(step, metrics)
