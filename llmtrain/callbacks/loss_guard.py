"""`callbacks: {loss_guard: {...}}`: a NaN/inf loss or a loss spike rolls the run back and skips the batch.

Every step, after the backward pass and before the optimizer step (Composer's AFTER_TRAIN_BATCH, which
runs inside the optimizer's closure), the guard all-reduces the batch's mean loss and whether any
gradient is non-finite, so every rank decides the same. A bad step is

- non-finite: the loss or a gradient is NaN/inf (gradients are not checked under amp_fp16, whose
  scaler skips such steps itself), or
- a spike (only with `spike_factor`): loss > spike_factor x the mean of the last `window` good losses.

A bad step is not applied: the guard raises `RolledBack` before the optimizer runs; the run loop (`fit` in
llmtrain/train.py) then builds the trainer again from the newest checkpoint (autoresume: model, optimizer,
scheduler, data position, RNG) and continues. The bad batch is replayed in order but not applied (its gradients are
dropped, so the optimizer leaves every parameter and its state alone): the result is the run that never
trained on it. Skipped steps are kept in `skipped_steps.json` in the save folder, so a later rollback
or a crash + autoresume skips them too. Before any checkpoint save, the guard checks that every
parameter is finite; if one is not, the step just taken counts as bad and nothing is saved.

Each event is a console line and a metric reported through Composer's logger (`loss_guard/rolled_back`, a
record of its own in metrics.jsonl, or `loss_guard/skipped` on the step's own record).
"""
from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from composer.callbacks import CheckpointSaver
from composer.core import Callback, Precision, State
from composer.loggers import Logger
from composer.utils import dist

from llmtrain.checkpoint.callbacks import LaterState
from llmtrain.checkpoint.folder import read_beside_checkpoints, write_beside_checkpoints
from llmtrain.errors import UserError
from llmtrain.loggers import log_event
from llmtrain.registry import callbacks
from llmtrain.schema import parse_section

SKIPPED_FILE = "skipped_steps.json"
RECENT_KEY = "state.callbacks.LossGuard.recent_losses"  # its key in a sharded checkpoint


@dataclass(frozen=True)
class LossGuardConfig:
    spike_factor: Optional[float] = None  # None: only non-finite losses and gradients are bad steps
    window: int = 100                     # good steps averaged for the spike test (it waits for a full window)
    max_skipped: int = 20                 # more bad steps than this is divergence, not bad data: stop


class RolledBack(Exception):
    """A bad step: raised on every rank before the optimizer applies it."""


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor  # an FSDP2 shard (DTensor)


class LossGuard(LaterState, Callback):
    def __init__(self, cfg: LossGuardConfig):
        self.cfg = cfg
        self.recent: deque[float] = deque(maxlen=cfg.window)
        self.skipped: dict[int, str] = {}  # step -> why it was bad
        self.save_folder: Optional[str] = None
        self._carried: Optional[dict[int, str]] = None  # steps skipped before a rollback in this process
        self._loss_sum = self._samples = 0.0

    # --- set up by the run loop (llmtrain/train.py) -------------------------------------------------------------------------------

    def prepare(self, save_folder: Optional[str], carried: Optional[dict[int, str]]) -> None:
        self.save_folder, self._carried = save_folder, carried

    def state_dict(self) -> dict[str, Any]:
        if self.loading_lacks(RECENT_KEY):
            return {}  # a sharded checkpoint saved without the guard: DCP would miss the key
        return {"recent_losses": json.dumps(list(self.recent))}  # text: DCP loads it whatever its length

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "recent_losses" in state:  # saved without the guard: the window starts empty (spikes wait for it)
            self.recent.extend(json.loads(state["recent_losses"]))

    def fit_start(self, state: State, logger: Logger) -> None:
        self.skipped = dict(self._carried or {})
        if self.save_folder is not None:
            resumed = self._carried is not None or int(state.timestamp.batch) > 0
            if dist.get_global_rank() == 0 and not resumed:  # a fresh run: an old list is not about it
                write_beside_checkpoints(self.save_folder, SKIPPED_FILE, None)
            found = [self._read_skipped() if resumed and dist.get_global_rank() == 0 else {}]
            dist.broadcast_object_list(found, src=0)
            self.skipped.update(found[0])
        for saver in (cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)):
            saver.save_interval = self._checked_before_saving(saver.save_interval, logger)

    def _read_skipped(self) -> dict[int, str]:
        data = read_beside_checkpoints(self.save_folder, SKIPPED_FILE)
        return {int(step): why for step, why in json.loads(data).items()} if data else {}

    # --- every step -----------------------------------------------------------------------------------

    def before_train_batch(self, state: State, logger: Logger) -> None:
        self._loss_sum = self._samples = 0.0

    def after_backward(self, state: State, logger: Logger) -> None:
        samples = len(state.batch["input_ids"])
        self._loss_sum = self._loss_sum + state.loss.detach().float() * samples
        self._samples += samples

    def after_train_batch(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch) + 1  # the step this batch is logged as
        if step in self.skipped:
            for param in state.model.parameters():
                param.grad = None  # the optimizer skips parameters without a gradient
            logger.log_metrics({"loss_guard/skipped": 1})
            self._say(f"step {step}: skipped (consumed, not applied): it had {self.skipped[step]}")
            return
        grads = [_local(p.grad) for p in state.model.parameters() if p.grad is not None]
        check_grads = grads and state.precision != Precision.AMP_FP16
        grads_bad = (~torch.stack([torch.isfinite(g).all() for g in grads]).all()) if check_grads else 0
        totals = state.device.tensor_to_device(torch.zeros(3))
        totals[0], totals[1], totals[2] = self._loss_sum, self._samples, grads_bad
        dist.all_reduce(totals)
        loss = (totals[0] / totals[1]).item()
        if not math.isfinite(loss):
            self._roll_back(state, logger, step, f"loss {loss}")
        if totals[2].item():
            self._roll_back(state, logger, step, "non-finite gradients")
        if self.cfg.spike_factor is not None and len(self.recent) == self.cfg.window:
            mean = sum(self.recent) / len(self.recent)
            if loss > self.cfg.spike_factor * mean:
                self._roll_back(state, logger, step, f"loss {loss:.4g} > {self.cfg.spike_factor:g} x {mean:.4g} "
                                             f"(mean of the last {self.cfg.window} steps)")
        self.recent.append(loss)

    def _checked_before_saving(self, due: Callable[[State, Any], bool], logger: Logger) -> Callable[[State, Any], bool]:
        def check(state: State, event) -> bool:
            if not due(state, event):
                return False
            bad = state.device.tensor_to_device(torch.zeros(1))
            bad[0] = any(not torch.isfinite(_local(p)).all() for p in state.model.parameters())
            dist.all_reduce(bad)
            if bad.item():  # the step just taken broke the weights: never saved, rolled back instead
                self._roll_back(state, logger, int(state.timestamp.batch), "non-finite weights after it")
            return True
        return check

    # --- a bad step -----------------------------------------------------------------------------------

    def _roll_back(self, state: State, logger: Logger, step: int, why: str) -> None:
        self.skipped[step] = why
        if len(self.skipped) > self.cfg.max_skipped:
            raise UserError(f"callbacks.loss_guard: {len(self.skipped)} bad steps (steps "
                            f"{', '.join(map(str, sorted(self.skipped)))}) exceed max_skipped "
                            f"{self.cfg.max_skipped}: the run diverges; lower optimizer.lr or resume from an "
                            "earlier checkpoint (save_folder keeps them)")
        if dist.get_global_rank() == 0 and self.save_folder is not None:
            body = json.dumps({str(s): w for s, w in sorted(self.skipped.items())}, indent=1).encode()
            write_beside_checkpoints(self.save_folder, SKIPPED_FILE, body)
        log_event(logger, step, {"loss_guard/rolled_back": why})  # the step ends here: reported now
        where = "the newest checkpoint" if self.save_folder else "the start of the run (no save_folder)"
        self._say(f"step {step}: {why}: not applied; rolling back to {where}, this batch will be skipped")
        raise RolledBack(f"step {step}: {why}")

    @staticmethod
    def _say(line: str) -> None:
        if dist.get_global_rank() == 0:
            print(f"loss_guard: {line}", flush=True)


def _parse(section: dict, key: str) -> LossGuardConfig:
    cfg = parse_section(LossGuardConfig, section, key)
    if cfg.spike_factor is not None and cfg.spike_factor <= 1:
        raise UserError(f"{key}.spike_factor: {cfg.spike_factor:g} would flag ordinary steps; use a factor above 1 "
                        "(e.g. 2.0), or leave it out to catch only NaN/inf")
    if cfg.window < 1:
        raise UserError(f"{key}.window: {cfg.window}; use a number of steps ≥ 1 (e.g. 100)")
    return cfg


callbacks.register("loss_guard", _parse, LossGuard)
