"""train(cfg): build every component from a validated TrainConfig and run Composer's Trainer.

The pipeline: config (llmtrain/config.py, checked by builders.validate) → dist up → the run's resume plan
(llmtrain/checkpoint/resume.py: what it loads, once) → parallelism (llmtrain/distributed.py) → components
(llmtrain/builders.py) → Composer's Trainer (loading the plan's checkpoint) → `fit`, which rolls back and
rebuilds when the loss guard rejects a step.
"""
from __future__ import annotations

import atexit
import gc
from dataclasses import replace
from pathlib import Path

import torch
from composer import Trainer
from composer.core.engine import Engine
from composer.utils import dist, format_name_with_dist, get_device, parse_uri, reproducibility
from omegaconf import OmegaConf

from llmtrain import builders, run_lock
from llmtrain.callbacks.loss_guard import LossGuard, RolledBack
from llmtrain.checkpoint import callbacks as checkpoint_callbacks
from llmtrain.checkpoint import disk_full, uploads
from llmtrain.checkpoint.resume import resume_plan, trainer_load_arguments
from llmtrain.config import TrainConfig
from llmtrain.data.run_cache import scoped_to_run
from llmtrain.distributed import adopt_torchrun_env, parallelism_for
from llmtrain.errors import UserError
from llmtrain.gloo import gloo_reduce_scatter_avg_factor, gradient_average_fix
from llmtrain.loggers.metrics_jsonl import MetricsJsonl
from llmtrain.loggers.progress import Progress
from llmtrain.models import fp8


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.run_dir or f"runs/{cfg.run_name}")


def _write_resolved_config(cfg: TrainConfig, run_dir: Path) -> None:
    # The config as it ran, overrides and interpolations applied, except values read from the
    # environment (${oc.env:...}), which stay references: they are where secrets live.
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg.recorded())))
    tmp.replace(run_dir / "config.yaml")


def device_batch_size(cfg: TrainConfig) -> int:
    world = dist.get_world_size()
    if cfg.global_train_batch_size % world:
        raise UserError(f"global_train_batch_size: {cfg.global_train_batch_size} does not split evenly "
                        f"over {world} ranks; make it a multiple of {world}")
    return cfg.global_train_batch_size // world


def composer_precision(precision: str, device: str) -> str:
    """Composer's precision for ours: autocast is a GPU feature here; amp_fp8 is bf16 autocast around
    torchao's float8 GEMMs (Composer's own amp_fp8 is TransformerEngine's, which we do not use)."""
    if device != "gpu":
        return "fp32"
    return "amp_bf16" if precision == "amp_fp8" else precision


def _start_dist(cfg: TrainConfig) -> str:
    """Join the run's process group (once; later calls find it up); the device name. A precision this
    machine cannot run is refused first."""
    device = cfg.device or ("gpu" if torch.cuda.is_available() else "cpu")
    if cfg.precision == "amp_fp8":
        fp8.check_supported(device, cfg.fp8)
    adopt_torchrun_env()  # before anything asks Composer for the node rank
    dist.initialize_dist(get_device(device), timeout=cfg.dist_timeout)
    return device


def written_folders(cfg: TrainConfig) -> dict[str, Path]:
    """The local folders this run writes, by the config key that names them: one run at a time each."""
    folders = {}
    if cfg.save_folder and not parse_uri(cfg.save_folder)[0]:
        folders["save_folder"] = Path(format_name_with_dist(cfg.save_folder, cfg.run_name))
    folders["run_dir"] = run_dir_of(cfg)
    return folders


def _loggers(cfg: TrainConfig, run_dir: Path) -> list:
    """metrics.jsonl (always), the recipe's `loggers:`, and the console lines (llmtrain/loggers/)."""
    return [MetricsJsonl(run_dir / "metrics.jsonl", cfg.log_interval), *builders.build_loggers(cfg.loggers, run_dir),
            *([Progress(cfg.console_log_interval, bar=cfg.progress_bar)] if cfg.log_to_console else [])]


def build_trainer(cfg: TrainConfig) -> Trainer:
    """The Trainer for `cfg` (component sections checked: builders.load_config or train)."""
    device = _start_dist(cfg)
    reproducibility.seed_all(cfg.seed)
    batch_size = device_batch_size(cfg)
    run_dir = run_dir_of(cfg)
    if dist.get_global_rank() == 0:
        _write_resolved_config(cfg, run_dir)

    plan = resume_plan(cfg)  # what the run loads: save_folder listed and repaired once, on rank 0
    parallelism = parallelism_for(cfg, device, plan)
    model_section = cfg.model
    if model_section.get("init_device") == "meta" and parallelism is None:
        # Only FSDP materialises meta weights; an unsharded run builds them in host memory instead.
        model_section = {**model_section, "init_device": "cpu"}
    tokenizer = builders.build_tokenizer(cfg.tokenizer)
    eval_batch_size = cfg.device_eval_batch_size or batch_size
    icl_evaluator = builders.build_icl_evaluator(cfg, tokenizer, eval_batch_size)  # reads the task files first
    model = builders.build_model(model_section)
    callbacks = [*builders.build_callbacks(cfg.callbacks), *checkpoint_callbacks.run_callbacks(cfg)]
    if cfg.precision == "amp_fp8":  # before the Trainer applies FSDP2 and compile, as torchao needs
        fp8.convert(model, cfg.fp8, fsdp=parallelism is not None)
        if fp8.all_gathers_in_fp8(model):
            callbacks.append(fp8.Fp8ScalePrecompute())
    if icl_evaluator:
        callbacks.append(icl_evaluator)
    node_rank = dist.get_node_rank()  # the run's own streaming caches (data/run_cache.py)
    retry = cfg.object_store_retry_timeout  # how long reads (and uploads) wait out an outage
    train_loader = builders.build_dataloader(scoped_to_run(cfg.train_loader, cfg.run_name, node_rank),
                                             "train_loader", tokenizer, batch_size, retry)
    eval_loader = None
    if cfg.eval_loader is not None:
        eval_loader = builders.build_dataloader(scoped_to_run(cfg.eval_loader, cfg.run_name, node_rank),
                                                "eval_loader", tokenizer, eval_batch_size, retry)
    optimizer = builders.build_optimizer(cfg.optimizer, model)
    scheduler = builders.build_scheduler(cfg.scheduler)
    algorithms = builders.build_algorithms(cfg.algorithms)
    if parallelism is not None and (factor := gloo_reduce_scatter_avg_factor()) != 1.0:
        # Last in the list: Composer runs AFTER_* events in reverse order, so this runs before
        # gradient clipping or anything else that reads the gradients.
        algorithms.append(gradient_average_fix(factor))

    with checkpoint_callbacks.loading(plan, callbacks):  # the constructor loads the plan's checkpoint
        trainer = Trainer(
            run_name=cfg.run_name,
            model=model,
            train_dataloader=train_loader,
            eval_dataloader=eval_loader,
            # Composer's interval is for eval_loader only (it warns without one); ICLEvaluator keeps its own.
            eval_interval=cfg.eval_interval if eval_loader is not None else 1,
            eval_subset_num_batches=cfg.eval_subset_num_batches,
            optimizers=optimizer,
            schedulers=scheduler,
            algorithms=algorithms,
            callbacks=callbacks,
            loggers=_loggers(cfg, run_dir),
            max_duration=cfg.max_duration,
            precision=composer_precision(cfg.precision, device),
            device=device,
            device_train_microbatch_size=cfg.device_train_microbatch_size,
            parallelism_config=parallelism,
            compile_config=cfg.compile_config,
            save_folder=cfg.save_folder,
            save_interval=cfg.save_interval,
            save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
            save_overwrite=cfg.save_overwrite,
            save_weights_only=cfg.save_weights_only,
            load_strict_model_weights=cfg.load_strict_model_weights,
            **trainer_load_arguments(cfg, plan),  # load_path, load_weights_only, autoresume
            seed=cfg.seed,
            log_to_console=False,  # Progress prints one compact line per console_log_interval instead
            progress_bar=False,
            dist_timeout=cfg.dist_timeout,
            python_log_level=cfg.python_log_level,
        )
    disk_full.mark_saves(trainer._checkpoint_saver)  # a full disk while saving names save_folder
    # Checkpoint uploads wait out an outage as long as reads do (llmtrain/retry.py).
    uploads.retry_checkpoint_uploads(trainer._checkpoint_saver, retry)
    return trainer


def fit(trainer: Trainer, cfg: TrainConfig) -> Trainer:
    """`trainer.fit()`; after each rollback (the loss guard rejected a step), build the trainer again with
    autoresume on (so it starts from the newest checkpoint in save_folder; without one, from the start or
    load_path) and fit that. Returns the trainer that finished."""
    save_folder = format_name_with_dist(cfg.save_folder, cfg.run_name) if cfg.save_folder else None
    carried = None
    while True:
        guard = next((cb for cb in trainer.state.callbacks if isinstance(cb, LossGuard)), None)
        if guard is not None:
            guard.prepare(save_folder, carried)
        try:
            trainer.fit()
            return trainer
        except RolledBack:
            carried = dict(guard.skipped)
        _dispose(trainer)  # outside `except`: the traceback would keep the old trainer's tensors alive
        trainer = None
        gc.collect()
        trainer = build_trainer(replace(cfg, autoresume=cfg.save_folder is not None))


def _dispose(trainer: Trainer) -> None:
    trainer.close()
    # Engine registers its close at exit with the state as argument and keeps that after close():
    # drop it so the old model and optimizer can be freed before the new ones are built.
    atexit.unregister(Engine._close)


def train(cfg: TrainConfig) -> Trainer:
    builders.validate(cfg)  # before dist is up: a mistake in a component section is one line
    _start_dist(cfg)
    with run_lock.held(written_folders(cfg), cfg.run_name):  # before anything is written
        trainer = build_trainer(cfg)
        if cfg.eval_first and cfg.eval_loader is not None and int(trainer.state.timestamp.batch) == 0:
            trainer.eval()
        with disk_full.reported(cfg.save_folder):
            return fit(trainer, cfg)  # a plain trainer.fit() unless the loss guard rolls back
