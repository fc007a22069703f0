"""The one place where config sections become objects: YAML `name:` → registry → build.

Importing this module imports every component module, each of which registers itself (llmtrain/registry.py).
`validate(cfg)` checks every component section of a config against its registry entry before anything is
built; `load_config` is `llmtrain.config.load_config` followed by it, what scripts/ call.
"""
from __future__ import annotations

from pathlib import Path

import llmtrain.algorithms  # noqa: F401  (each component module registers its components)
import llmtrain.callbacks.data_mix  # noqa: F401
import llmtrain.callbacks.loss_guard  # noqa: F401
import llmtrain.callbacks.monitors  # noqa: F401
import llmtrain.data.synthetic  # noqa: F401
import llmtrain.data.text  # noqa: F401
import llmtrain.loggers.wandb_logger  # noqa: F401
import llmtrain.models.composer_model  # noqa: F401
import llmtrain.optim.optimizers  # noqa: F401
import llmtrain.optim.schedulers  # noqa: F401
from llmtrain import config
from llmtrain.config import TokenizerConfig, TrainConfig
from llmtrain.data import tokenizer as tokenizers
from llmtrain.errors import UserError
from llmtrain.eval.callback import ICLEvaluator
from llmtrain.eval.evaluator import load_tasks
from llmtrain.registry import Registry, algorithms, callbacks, dataloaders, loggers, models, optimizers, schedulers
from llmtrain.retry import DEFAULT_RETRY_TIMEOUT

# Sections holding `{name: ..., ...}`, and those holding `{name: {...}, ...}` (one entry per component).
NAMED_SECTIONS = {"model": models, "train_loader": dataloaders, "eval_loader": dataloaders,
                  "optimizer": optimizers, "scheduler": schedulers}
KEYED_SECTIONS = {"algorithms": algorithms, "callbacks": callbacks, "loggers": loggers}


def validate(cfg: TrainConfig) -> TrainConfig:
    """`cfg` once every component it names exists and its section is right; else a UserError naming the key."""
    for section, reg in NAMED_SECTIONS.items():
        body = getattr(cfg, section)
        if body is None:
            continue
        if "name" not in body:
            raise UserError(f"{section}.name: required key is missing; choose one of: {', '.join(reg.names())}")
        reg.get(body["name"], f"{section}.name").validate({k: v for k, v in body.items() if k != "name"}, section)
    for section, reg in KEYED_SECTIONS.items():
        for name, body in getattr(cfg, section).items():
            entry = reg.get(name, f"{section}.{name}")
            if body is not None and not isinstance(body, dict):
                raise UserError(f"{section}.{name}: expected a mapping of options (use {{}} for none), got {body!r}")
            entry.validate(body or {}, f"{section}.{name}")
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """The run config of recipe `path` with `overrides`, every section checked (config's and components')."""
    return validate(config.load_config(path, overrides))


def config_from_dict(data: dict, overrides: list[str] = (), source: str = "<config>",
                     default_run_name: str = "run") -> TrainConfig:
    """The same as `load_config` for a recipe already read into a dict."""
    return validate(config.config_from_dict(data, overrides, source, default_run_name))


def _build_named(reg: Registry, section: dict, key: str, *args, **kwargs):
    entry = reg.get(section["name"], f"{key}.name")
    return entry.build({k: v for k, v in section.items() if k != "name"}, *args, key=key, **kwargs)


def _build_keyed(reg: Registry, sections: dict, key: str, *args) -> list:
    return [reg.get(name, f"{key}.{name}").build(body or {}, *args, key=f"{key}.{name}")
            for name, body in sections.items()]


def build_tokenizer(cfg: TokenizerConfig):
    return tokenizers.build_tokenizer(cfg.name, **cfg.kwargs)


def build_icl_evaluator(cfg: TrainConfig, tokenizer, batch_size: int):
    """The ICLEvaluator callback for `cfg.icl_tasks` (reads every task file now), or None."""
    if not cfg.icl_tasks:
        return None
    tasks = load_tasks(cfg.icl_tasks, tokenizer, cfg.model.get("max_seq_len", cfg.max_seq_len))
    return ICLEvaluator(tasks, tokenizer, batch_size, cfg.eval_interval, cfg.eval_gauntlet)


def build_model(section: dict):
    return _build_named(models, section, "model")


def build_dataloader(section: dict, key: str, tokenizer, device_batch_size: int,
                     retry_timeout: float = DEFAULT_RETRY_TIMEOUT):
    """The loader of section `key` (train_loader, eval_loader); its object-store reads wait out an outage
    for up to `retry_timeout` seconds (the run's object_store_retry_timeout)."""
    return _build_named(dataloaders, section, key, tokenizer, device_batch_size, key, retry_timeout)


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
