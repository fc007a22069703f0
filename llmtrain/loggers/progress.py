"""The console during a run: one compact line per `console_log_interval`, and a live bar on a terminal.

    step 30/150 (20%) | loss 8.0678 | lr 1.22e-04 | 1.85k tok/s | mfu 41.3% | 30.7k tok | 0:00:17 elapsed, eta 0:01:08
    eval @ step 30/150: loss 7.9120 | ppl 2731.2

It replaces Composer's console logger (a dozen lines per step) and its progress bar. Rank 0 prints,
to stdout. When stdout is a terminal (or `bar=True`), a tqdm bar over the steps stays at the bottom and
the same lines scroll above it; piped to a file or a scheduler's log there is no bar, only the lines.

Tokens/s is over all ranks since the previous line, training time only (evaluation pauses excluded);
with several ranks the per-device rate follows in brackets. `mfu` shows when `callbacks: {speed_monitor:
{}}` logs `throughput/device/mfu` (on a GPU it knows; see docs/observability.md). ETA is wall clock,
evaluation included, measured from the end of this process's first step (so compilation and warm-up do
not count).
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import Any, Optional, TextIO

from composer.core import State, Time, TimeUnit
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from llmtrain.errors import UserError

_EVAL_NAMES = {"LanguageCrossEntropy": "loss", "LanguagePerplexity": "ppl"}


def human(n: float) -> str:
    """1234 → '1.23k', 4.5e6 → '4.50M'."""
    for bound, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= bound:
            return f"{n / bound:.2f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() or abs(n) >= 100 else f"{n:.3g}"


def clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def _fraction_done(state: State) -> Optional[float]:
    """How far through max_duration training is, at batch resolution (None: unknown)."""
    if state.max_duration is None:
        return None
    unit, total = state.max_duration.unit, state.max_duration.value
    if unit == TimeUnit.EPOCH:
        if not state.dataloader_len:  # a loader without a length: only whole epochs are known
            return None
        return int(state.timestamp.batch) / (int(state.dataloader_len) * total)
    return int(state.timestamp.get(unit)) / total


class Progress(LoggerDestination):
    def __init__(self, interval: str | int = "1ba", bar: Optional[bool] = None, stream: TextIO | None = None):
        try:
            self.interval = Time.from_input(int(interval) if str(interval).isdigit() else interval, TimeUnit.BATCH)
        except ValueError:
            self.interval = None
        if self.interval is None or self.interval.unit != TimeUnit.BATCH or self.interval.value < 1:
            raise UserError(f"console_log_interval: {interval!r} must be a number of batches, e.g. 10ba")
        self.stream = stream or sys.stdout
        self.bar_wanted = bar
        self.bar = None
        self._latest: dict[str, Any] = {}  # everything logged since the run started; latest value per name
        self._lr: Optional[float] = None
        self._first: Optional[tuple[float, float]] = None  # (wall time, fraction done) after this process's first step
        self._prev: tuple[int, float] = (0, 0.0)  # (tokens, train seconds) at the previous line
        self._started = 0.0
        self._finished = False

    # --- collecting -----------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._latest.update(metrics)

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    # --- events ---------------------------------------------------------------------------------------
    def fit_start(self, state: State, logger: Logger) -> None:
        self._started = time.perf_counter()
        self._prev = (int(state.timestamp.token), state.timestamp.total_wct.total_seconds())
        if dist.get_global_rank() != 0:
            return
        use_bar = self.bar_wanted
        if use_bar is None:
            use_bar = getattr(self.stream, "isatty", lambda: False)()
        if use_bar:
            from tqdm import tqdm
            total = self._total_batches(state)
            self.bar = tqdm(total=total, initial=int(state.timestamp.batch), unit="step", file=self.stream,
                            dynamic_ncols=True, leave=True, smoothing=0.1)

    def batch_start(self, state: State, logger: Logger) -> None:
        # The learning rate this step applies; the scheduler moves it on before BATCH_END.
        self._lr = state.optimizers[0].param_groups[0]["lr"]

    def batch_end(self, state: State, logger: Logger) -> None:
        fraction = _fraction_done(state)
        if self._first is None:
            self._first = (time.perf_counter(), fraction or 0.0)
        if dist.get_global_rank() != 0:
            return
        step = int(state.timestamp.batch)
        if self.bar is not None:
            total = self._total_batches(state)
            if total is not None and total != self.bar.total:
                self.bar.total = total
            self.bar.set_postfix_str(self._postfix(state), refresh=False)
            self.bar.update(step - self.bar.n)
        if step % int(self.interval.value) == 0 or fraction is not None and fraction >= 1.0:
            self._print(self._line(state, fraction))

    def eval_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        label = state.dataloader_label or "eval"
        prefix = f"metrics/{label}/"
        parts = [f"{_EVAL_NAMES.get(k[len(prefix):], k[len(prefix):])} {_fmt(v)}"
                 for k, v in self._latest.items() if k.startswith(prefix)]
        where = f"step {int(state.timestamp.batch)}" + (f"/{t}" if (t := self._total_batches(state)) else "")
        name = "eval" if label == "eval" else f"eval {label}"
        self._print(f"{name} @ {where}: " + " | ".join(parts))

    def fit_end(self, state: State, logger: Logger) -> None:
        self._finished = True
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self, state: State, logger: Logger) -> None:
        # The summary waits for close(): Composer evaluates once more after FIT_END.
        if self.bar is not None:  # a run that died mid-way: leave the terminal on a fresh line
            self.bar.close()
            self.bar = None
        if not self._finished or dist.get_global_rank() != 0:
            return
        self._finished = False  # close() may run twice (explicitly, then at exit)
        elapsed = time.perf_counter() - self._started
        train_s = state.timestamp.total_wct.total_seconds()
        tokens = int(state.timestamp.token)
        rate = f", {human(tokens / train_s)} tok/s over the run" if train_s > 0 else ""
        self._print(f"done: step {int(state.timestamp.batch)}, {human(tokens)} tokens, "
                    f"{clock(elapsed)} in this process{rate}")

    # --- formatting -----------------------------------------------------------------------------------
    def _total_batches(self, state: State) -> Optional[int]:
        if state.max_duration is not None and state.max_duration.unit == TimeUnit.BATCH:
            return int(state.max_duration.value)
        fraction, step = _fraction_done(state), int(state.timestamp.batch)
        return round(step / fraction) if fraction and step else None

    def _tokens_per_sec(self, state: State) -> Optional[float]:
        """All ranks, since the previous line, training time only."""
        tokens, train_s = int(state.timestamp.token), state.timestamp.total_wct.total_seconds()
        last_tokens, last_s = self._prev
        return (tokens - last_tokens) / (train_s - last_s) if train_s > last_s and tokens > last_tokens else None

    def _mfu(self) -> Optional[float]:
        mfu = self._latest.get("throughput/device/mfu")  # logged by speed_monitor when it knows the peak
        return float(mfu) if mfu is not None else None

    def _postfix(self, state: State) -> str:
        loss = (state.total_loss_dict or {}).get("loss/train/total")
        mfu = self._mfu()
        return " ".join(p for p in (
            f"loss {loss:.4f}" if loss is not None else "",
            f"lr {self._lr:.2e}" if self._lr is not None else "",
            f"{human(int(state.timestamp.token))} tok",
            f"mfu {100 * mfu:.1f}%" if mfu is not None else "") if p)

    def _line(self, state: State, fraction: Optional[float]) -> str:
        step, total = int(state.timestamp.batch), self._total_batches(state)
        exact = state.max_duration is not None and state.max_duration.unit == TimeUnit.BATCH
        parts = [f"step {step}" + (f"/{'' if exact else '~'}{total}" if total else "")
                 + (f" ({100 * min(fraction, 1.0):.0f}%)" if fraction is not None else "")]
        loss = (state.total_loss_dict or {}).get("loss/train/total")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if self._lr is not None:
            parts.append(f"lr {self._lr:.2e}")
        rate, mfu = self._tokens_per_sec(state), self._mfu()
        if rate is not None:
            world = dist.get_world_size()
            per_device = f" ({human(rate / world)}/{'gpu' if state.device.name == 'gpu' else 'rank'})"
            parts.append(f"{human(rate)} tok/s" + (per_device if world > 1 else ""))
        if mfu is not None:
            parts.append(f"mfu {100 * mfu:.1f}%")
        parts.append(f"{human(int(state.timestamp.token))} tok")
        parts.append(f"{clock(time.perf_counter() - self._started)} elapsed, eta {self._eta(fraction)}")
        self._prev = (int(state.timestamp.token), state.timestamp.total_wct.total_seconds())
        return " | ".join(parts)

    def _eta(self, fraction: Optional[float]) -> str:
        if fraction is None or self._first is None:
            return "?"
        first_time, first_fraction = self._first
        if fraction >= 1.0:
            return "0:00:00"
        if fraction <= first_fraction:
            return "?"
        per_unit = (time.perf_counter() - first_time) / (fraction - first_fraction)
        return clock(per_unit * (1.0 - fraction))


def _fmt(value: Any) -> str:
    value = float(value.item() if hasattr(value, "item") else value)
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
