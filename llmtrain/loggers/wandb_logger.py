"""`loggers: {wandb: {...}}` → Composer logger destinations. metrics.jsonl is always on (train.py)."""
from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from composer.loggers import WandBLogger
from composer.utils import dist

from llmtrain.registry import loggers


@dataclass(frozen=True)
class WandBConfig:
    project: Optional[str] = None
    entity: Optional[str] = None
    group: Optional[str] = None
    name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    log_artifacts: bool = False
    init_kwargs: dict = field(default_factory=dict)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def build_wandb(cfg: WandBConfig, run_dir: Path) -> WandBLogger:
    # A run must never block or die on wandb: without credentials, log offline into the run directory.
    if not os.environ.get("WANDB_MODE") and not _has_wandb_credentials():
        os.environ["WANDB_MODE"] = "offline"
        if dist.get_global_rank() == 0:
            print(f"wandb: no credentials found; logging offline into {run_dir}/wandb "
                  f"(upload later with `wandb sync {run_dir}/wandb/offline-run-*`)", flush=True)
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    return WandBLogger(project=cfg.project, entity=cfg.entity, group=cfg.group, name=cfg.name,
                       tags=list(cfg.tags), log_artifacts=cfg.log_artifacts, init_kwargs=dict(cfg.init_kwargs))


loggers.register("wandb", WandBConfig, build_wandb)
