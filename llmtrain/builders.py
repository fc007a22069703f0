"""The one place where validated config sections become objects: YAML `name:` → registry → build."""
from __future__ import annotations

from pathlib import Path

import llmtrain.algorithms  # noqa: F401  (each import registers its components)
import llmtrain.callbacks  # noqa: F401
import llmtrain.data  # noqa: F401
import llmtrain.data.synthetic  # noqa: F401
import llmtrain.loggers  # noqa: F401
import llmtrain.models  # noqa: F401
import llmtrain.optim  # noqa: F401
from llmtrain.config import TokenizerConfig, TrainConfig
from llmtrain.registry import Registry, algorithms, callbacks, dataloaders, loggers, models, optimizers, schedulers


def _build_named(reg: Registry, section: dict, key: str, *args):
    entry = reg.get(section["name"], f"{key}.name")
    return entry.build({k: v for k, v in section.items() if k != "name"}, *args)


def _build_keyed(reg: Registry, sections: dict, key: str, *args) -> list:
    return [reg.get(name, f"{key}.{name}").build(body or {}, *args) for name, body in sections.items()]


def build_tokenizer(cfg: TokenizerConfig):
    from llmtrain.data.tokenizer import build_tokenizer as build
    return build(cfg.name, **cfg.kwargs)


def build_icl_evaluator(cfg: TrainConfig, tokenizer, batch_size: int):
    """The ICLEvaluator callback for `cfg.icl_tasks` (reads every task file now), or None."""
    if not cfg.icl_tasks:
        return None
    from llmtrain.eval.callback import ICLEvaluator
    from llmtrain.eval.evaluator import load_tasks

    tasks = load_tasks(cfg.icl_tasks, tokenizer, cfg.model.get("max_seq_len", cfg.max_seq_len))
    return ICLEvaluator(tasks, tokenizer, batch_size, cfg.eval_interval, cfg.eval_gauntlet)


def build_model(section: dict):
    return _build_named(models, section, "model")


def build_dataloader(section: dict, key: str, tokenizer, device_batch_size: int):
    entry = dataloaders.get(section["name"], f"{key}.name")
    return entry.build({k: v for k, v in section.items() if k != "name"}, tokenizer, device_batch_size, key)


def build_optimizer(section: dict, model):
    return _build_named(optimizers, section, "optimizer", model.parameters())


def build_scheduler(section: dict | None):
    return None if section is None else _build_named(schedulers, section, "scheduler")


def build_algorithms(sections: dict) -> list:
    return _build_keyed(algorithms, sections, "algorithms")


def build_callbacks(sections: dict) -> list:
    return _build_keyed(callbacks, sections, "callbacks")


def build_loggers(sections: dict, run_dir: Path) -> list:
    return _build_keyed(loggers, sections, "loggers", run_dir)
