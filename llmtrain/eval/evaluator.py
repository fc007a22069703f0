"""Run a list of ICL tasks on a model: `load_tasks` once (reads and checks every task file), then
`evaluate` as often as wanted. Collective under torch.distributed: every rank calls `evaluate`, takes
the examples i with i % world_size == rank, and all ranks end with every example's outcome, each
example scored exactly once whatever the world size.

Metric names (`metric_values`): `icl/<label>/<n>-shot` (accuracy, 0 to 1) and, with a gauntlet,
`icl/gauntlet/<category>` and `icl/gauntlet/average`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from composer.utils import dist

from llmtrain.eval.metrics import Outcome, accuracy, gauntlet_scores, outcome
from llmtrain.eval.prompts import PromptBuilder
from llmtrain.eval.scoring import score
from llmtrain.eval.task_files import read_examples
from llmtrain.eval.tasks import GauntletConfig, ICLTaskConfig


@dataclass
class LoadedTask:
    config: ICLTaskConfig
    prompts: PromptBuilder


@dataclass(frozen=True)
class TaskResult:
    label: str
    num_fewshot: int
    outcomes: list[Outcome]   # every example's, in file order

    @property
    def key(self) -> str:
        return f"{self.label}/{self.num_fewshot}-shot"

    @property
    def accuracy(self) -> float:
        return accuracy(self.outcomes)


def read_task_files(configs: list[ICLTaskConfig]) -> list[list[dict]]:
    """Every task's examples; raises UserError (file:line: field) for the first bad file."""
    return [read_examples(c.dataset_uri, c.icl_task_type) for c in configs]


def load_tasks(configs: list[ICLTaskConfig], tokenizer, max_seq_len: int,
               examples: Optional[list[list[dict]]] = None) -> list[LoadedTask]:
    """The tasks ready to evaluate; `examples`: what `read_task_files` returned, else the files are read now."""
    examples = examples if examples is not None else read_task_files(configs)
    return [LoadedTask(c, PromptBuilder(c, rows, tokenizer, max_seq_len, c.dataset_uri))
            for c, rows in zip(configs, examples)]


def _gathered(mine: list[Outcome]) -> list[Outcome]:
    if dist.get_world_size() == 1:
        return mine
    everyone = [o for share in dist.all_gather_object(mine) for o in share]
    return sorted(everyone, key=lambda o: o.index)


def evaluate_task(model, task: LoadedTask, num_fewshot: int, tokenizer, batch_size: int, device) -> TaskResult:
    cfg, prompts = task.config, task.prompts
    rank, world = dist.get_global_rank(), dist.get_world_size()
    requests = [prompts.request(i, num_fewshot) for i in range(rank, len(prompts.examples), world)]
    seqs = [s for r in requests for s in r.sequences]
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    results = score(model, seqs, batch_size, pad_id, prompts.max_seq_len, device,
                    max_new_tokens=prompts.max_new_tokens)
    mine, start = [], 0
    for request in requests:
        n = len(request.sequences)
        mine.append(outcome(cfg.icl_task_type, request, results[start:start + n], length_normalize=cfg.length_normalize,
                            tokenizer=tokenizer, stops=cfg.early_stopping_criteria))
        start += n
    return TaskResult(cfg.label, num_fewshot, _gathered(mine))


def evaluate(model, tasks: list[LoadedTask], tokenizer, batch_size: int, device) -> list[TaskResult]:
    """Every task at every few-shot count; `model` in eval mode, under the caller's autocast."""
    return [evaluate_task(model, task, n, tokenizer, batch_size, device)
            for task in tasks for n in task.config.num_fewshot]


def metric_values(results: list[TaskResult], gauntlet: Optional[GauntletConfig] = None) -> dict[str, float]:
    values = {f"icl/{r.key}": r.accuracy for r in results}
    if gauntlet is not None:
        scores = gauntlet_scores(gauntlet, {r.key: r.accuracy for r in results},
                                 {r.key: len(r.outcomes) for r in results})
        values.update({f"icl/gauntlet/{name}": v for name, v in scores.items()})
    return values


def format_table(results: list[TaskResult], values: dict[str, float]) -> str:
    """The results as a plain-text table: one row per task and shot count, then the gauntlet's scores."""
    rows = [("task", "shots", "accuracy", "examples")]
    rows += [(r.label, str(r.num_fewshot), f"{r.accuracy:.4f}", str(len(r.outcomes))) for r in results]
    rows += [(f"gauntlet/{k.removeprefix('icl/gauntlet/')}", "", f"{v:.4f}", "")
             for k, v in values.items() if k.startswith("icl/gauntlet/")]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    def line(row) -> str:  # the task name left-aligned, numbers right-aligned
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
    return "\n".join(line(row) for row in rows)
