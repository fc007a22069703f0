"""scripts/train.py plus one test-only callback, `poison`, that breaks chosen steps the way real faults do:

    callbacks.poison.steps={6: nan, 7: spike, 8: weights}   callbacks.poison.rank=1

- nan: that step's loss (hence its gradients) becomes NaN, on `rank` only (default: every rank);
- spike: that step's loss is multiplied by 1000 (a finite spike);
- weights: after that step is applied, one weight becomes NaN (once per save folder: a corruption
  that skipping the step cures);
- drop: that step's gradients are dropped before the optimizer (the reference "never trained on it").
"""
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmtrain.cli import run_cli
from llmtrain.registry import callbacks

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PoisonConfig:
    steps: dict = field(default_factory=dict)  # step (as logged, from 1) -> nan | spike | weights | drop
    rank: Optional[int] = None
    marker: Optional[str] = None  # file that says the `weights` poison was applied already


class Poison(Callback):
    def __init__(self, cfg: PoisonConfig):
        self.cfg = cfg

    def _mode(self, state: State, done: int = 0) -> Optional[str]:
        on_rank = self.cfg.rank is None or self.cfg.rank == dist.get_global_rank()
        return self.cfg.steps.get(int(state.timestamp.batch) + 1 - done) if on_rank else None

    def after_loss(self, state: State, logger: Logger) -> None:
        mode = self._mode(state)
        if mode in ("nan", "spike"):
            state.loss = state.loss * (float("nan") if mode == "nan" else 1000.0)

    def after_train_batch(self, state: State, logger: Logger) -> None:
        if self._mode(state) == "drop":
            for param in state.model.parameters():
                param.grad = None

    def batch_end(self, state: State, logger: Logger) -> None:
        marker = Path(self.cfg.marker) if self.cfg.marker else None
        if self._mode(state, done=1) == "weights" and marker and not marker.exists():
            marker.write_text("poisoned")
            with torch.no_grad():
                next(state.model.parameters()).view(-1)[0] = float("nan")


callbacks.register("poison", PoisonConfig, Poison)

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    from train import main
    run_cli(main, sys.argv[1:])
