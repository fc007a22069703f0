"""The checkpoint's own callbacks, and loading a checkpoint into callbacks that gained state later.

- `ResumeRng`: restores the RNG state on a mid-epoch resume, which Composer skips when the loader resumes
  itself (dropout masks would differ from an uninterrupted run's).
- `ModelRecipe`: keeps the model and tokenizer sections in each checkpoint, so one converts on its own.
- `LaterState` + `loading(...)`: while the Trainer loads a sharded checkpoint saved without a callback's key,
  that callback leaves the key out of the state dict DCP loads into (DCP fails on a key the checkpoint lacks).
"""
from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import reproducibility

from llmtrain.checkpoint.resume import ResumePlan
from llmtrain.checkpoint.safe import LOADING_ENV, arm_validation, safe_torch_load


class LaterState:
    """Mixed into a callback whose checkpointed state some checkpoints lack (it was added later)."""

    _keys_loading: Optional[tuple[str, ...]] = None  # set by `loading` while a sharded checkpoint loads

    def loading_lacks(self, key: str) -> bool:
        """Whether the Trainer being built loads a sharded checkpoint saved without DCP key `key`: then
        state_dict() must leave `key` out. False outside `loading`: every other state_dict() is a save."""
        return self._keys_loading is not None and key not in self._keys_loading


@contextmanager
def loading(plan: ResumePlan, callbacks: list) -> Iterator[None]:
    """Around building the Trainer, which loads `plan`'s checkpoint in its constructor: every file Composer
    unpickles is checked first (llmtrain/checkpoint/safe.py) and named as the plan names it, and the
    `LaterState` callbacks know the keys the checkpoint holds."""
    arm_validation()
    later = [cb for cb in callbacks if isinstance(cb, LaterState)]
    for cb in later:
        cb._keys_loading = plan.callback_keys
    previous = os.environ.pop(LOADING_ENV, None)
    if plan.loading:
        os.environ[LOADING_ENV] = plan.loading
    try:
        yield
    finally:
        for cb in later:
            cb._keys_loading = None
        os.environ.pop(LOADING_ENV, None)
        if previous is not None:
            os.environ[LOADING_ENV] = previous


class ResumeRng(Callback):
    """Restores each rank's RNG state when a run resumes mid-epoch.

    Composer restores the checkpointed RNG state at the start of an epoch or while it replays a loader up
    to the resume point; a loader that resumes itself (StreamingDataset) is not replayed, so a mid-epoch
    resume trains on the reseeded RNG instead (other dropout masks than the uninterrupted run's). The state
    is restored where the uninterrupted run stood: right after the first batch is fetched (creating a loader
    iterator draws from the RNG, which that run had done already), or, if the resumed epoch turns out to be
    finished, at the next epoch's start, before its iterator."""

    def __init__(self):
        self._pending: Optional[list] = None

    def state_dict(self) -> dict[str, Any]:
        # Every rank's state (gathered; DCP keeps rank 0's copy) as one bytes item: a list would be one DCP
        # key per rank, and a resume on more ranks than wrote the checkpoint would miss keys.
        buffer = io.BytesIO()
        torch.save(reproducibility.get_rng_state(), buffer)
        return {"rng": buffer.getvalue()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = safe_torch_load(io.BytesIO(state["rng"]), "the checkpoint's RNG state")

    def fit_start(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch_in_epoch) == 0:
            self._pending = None  # Composer restores it itself at an epoch boundary

    def _restore(self) -> None:
        if self._pending is not None:
            reproducibility.load_rng_state(self._pending)
            self._pending = None

    def epoch_start(self, state: State, logger: Logger) -> None:
        self._restore()

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self._restore()


class ModelRecipe(Callback):
    """Stores the run's `model` and `tokenizer` sections in every checkpoint (as JSON text), so that
    scripts/convert_to_hf.py needs nothing but the checkpoint."""

    def __init__(self, model: dict, tokenizer: dict):
        self.recipe = json.dumps({"model": model, "tokenizer": tokenizer})

    def state_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the recipe of the run that resumes is the one that counts


def run_callbacks(cfg) -> list[Callback]:
    """The callbacks every run gets from this module (`cfg`: a TrainConfig)."""
    return [ResumeRng(), ModelRecipe(cfg.model, {"name": cfg.tokenizer.name, "kwargs": cfg.tokenizer.kwargs})]
