"""ICLEvaluator: the recipe's `icl_tasks` scored during training, every `eval_interval` and at the end.

It runs at BATCH_END, so its metrics (`icl/<label>/<n>-shot`, `icl/gauntlet/...`; see evaluator.py)
land in that step's metrics.jsonl record (written at BATCH_CHECKPOINT) and in every logger (wandb),
beside the perplexity evaluation of the same interval. The model runs in eval mode under the run's
precision, on the wrapped module itself, so FSDP2 shards stay where they are.
"""
from __future__ import annotations

from typing import Optional

from composer.core import Callback, Event, State
from composer.core.precision import get_precision_context
from composer.loggers import Logger
from composer.utils import create_interval_scheduler

from llmtrain.eval.evaluator import LoadedTask, TaskResult, evaluate, metric_values
from llmtrain.eval.tasks import GauntletConfig


class ICLEvaluator(Callback):
    def __init__(self, tasks: list[LoadedTask], tokenizer, batch_size: int, interval,
                 gauntlet: Optional[GauntletConfig] = None):
        self.tasks, self.tokenizer, self.batch_size, self.gauntlet = tasks, tokenizer, batch_size, gauntlet
        self.due = create_interval_scheduler(interval, checkpoint_events=False, final_events={Event.BATCH_END})

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.due(state, Event.BATCH_END):
            logger.log_metrics(metric_values(self.run(state), self.gauntlet))

    def run(self, state: State) -> list[TaskResult]:
        """Score every task now, on every rank (collective)."""
        model = state.model.model  # the MPTForCausalLM inside ComposerMPT
        was_training = model.training
        model.eval()
        try:
            with get_precision_context(state.precision):
                return evaluate(model, self.tasks, self.tokenizer, self.batch_size, state.device._device)
        finally:
            model.train(was_training)
