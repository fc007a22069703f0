"""A run's report: RUN_DIR/metrics.jsonl (+ config.yaml) → RUN_DIR/report.png.

Panels, all over training steps, each drawn only when the run logged what it needs:
  loss        train loss (raw and smoothed) and every evaluator's `metrics/<label>/LanguageCrossEntropy`
  lr          the learning rate each step applied
  throughput  tokens/s over all ranks, per device when speed_monitor logs it, and MFU (right axis)
  icl         every in-context-learning accuracy (`icl/<label>/<n>-shot`) and gauntlet score
              (`icl/gauntlet/<category>`, dashed), from the ICLEvaluator (llmtrain/eval/)
  data mix    each stream's share of the tokens seen so far (`data/<stream>/tokens`, from
              data_mix_monitor) against its target `proportion` in config.yaml (dashed)

`python scripts/plot_run.py RUN_DIR` is the command-line front.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from llmtrain.errors import UserError

_EVAL_LOSS = re.compile(r"^metrics/(?P<label>.+)/LanguageCrossEntropy$")
_STREAM_TOKENS = re.compile(r"^data/(?P<stream>.+)/tokens$")
_ICL = re.compile(r"^icl/(?P<name>.+)$")


def _number(value) -> Optional[float]:
    """A plottable float, or None. metrics.jsonl writes NaN/inf as strings ('nan', 'inf')."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl, one per step, sorted by step. Records of the same step are
    merged, later values winning: a resumed run repeats the steps after its checkpoint, and a late
    record may add metrics (an evaluation after the last step) to a step already written."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found; pass the run directory of a training run (it holds config.yaml "
                        f"and metrics.jsonl)")
    by_step: dict[int, dict] = {}
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # a run killed mid-write leaves half a last line
                continue
            raise UserError(f"{path}:{n}: not a JSON object; metrics.jsonl has one JSON object per line") from None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            by_step.setdefault(record["step"], {}).update(record)
    if not by_step:
        raise UserError(f"{path}: no step records yet; the run has not logged a step (log_interval decides how often)")
    return [by_step[s] for s in sorted(by_step)]


def target_proportions(run_dir: Path) -> dict[str, float]:
    """{stream: target share} from config.yaml's train_loader.dataset.streams.*.proportion (normalised
    to sum to 1, as streaming does); {} when the run has no config or no proportions."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    cfg = yaml.safe_load(path.read_text()) or {}
    streams = ((cfg.get("train_loader") or {}).get("dataset") or {}).get("streams") or {}
    props = {name: _number((body or {}).get("proportion")) for name, body in streams.items()}
    if not props or any(p is None for p in props.values()):
        return {}
    total = sum(props.values())
    return {name: p / total for name, p in props.items()} if total > 0 else {}


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        v = _number(r.get(key))
        if v is not None and math.isfinite(v):
            steps.append(r["step"])
            values.append(v)
    return steps, values


def _smooth(values: list[float]) -> list[float]:
    """An exponential moving average spanning about 1/20 of the points (raw noise stays visible beside it)."""
    alpha = min(1.0, 2.0 / (max(len(values) / 20, 1) + 1))
    out, avg = [], values[0]
    for v in values:
        avg = alpha * v + (1 - alpha) * avg
        out.append(avg)
    return out


@dataclass
class Report:
    path: Path
    panels: list[str]


def plot_run(run_dir, out: Optional[Path] = None) -> Report:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    targets = target_proportions(run_dir)
    keys = set().union(*records)
    eval_labels = sorted(m["label"] for k in keys if (m := _EVAL_LOSS.match(k)) and m["label"] != "train")
    streams = [m["stream"] for k in sorted(keys) if (m := _STREAM_TOKENS.match(k))]
    streams = [s for s in targets if s in streams] + [s for s in streams if s not in targets]  # config order
    icl_names = sorted(m["name"] for k in keys if (m := _ICL.match(k)))

    draws = [("loss", _draw_loss)]
    if _series(records, "lr")[0]:
        draws.append(("lr", _draw_lr))
    if _series(records, "tokens_per_sec")[0]:
        draws.append(("throughput", _draw_throughput))
    if icl_names:
        draws.append(("icl", _draw_icl))
    if streams:
        draws.append(("data mix", _draw_mix))

    cols = 2 if len(draws) > 1 else 1
    rows = math.ceil(len(draws) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(draws):]:
        ax.set_visible(False)
    ctx = {"records": records, "eval_labels": eval_labels, "streams": streams, "targets": targets,
           "icl_names": icl_names}
    for ax, (_, draw) in zip(axes.flat, draws):
        draw(ax, **ctx)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    last = records[-1]
    tokens = _number(last.get("tokens"))
    fig.suptitle(f"{run_dir.resolve().name}: {last['step']} steps"
                 + (f", {tokens:,.0f} tokens" if tokens else ""), fontsize=13)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "report.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Report(out, [name for name, _ in draws])


def _draw_loss(ax, records, eval_labels, **_):
    steps, loss = _series(records, "loss")
    if steps:
        ax.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
        ax.plot(steps, _smooth(loss), color="tab:blue", linewidth=1.8, label="train (smoothed)")
    for i, label in enumerate(eval_labels):
        s, v = _series(records, f"metrics/{label}/LanguageCrossEntropy")
        ax.plot(s, v, "o-", color=f"C{(i + 1) % 10}", markersize=5, linewidth=1.5, label=label)
    ax.set_title("Loss")
    ax.set_ylabel("cross-entropy (nats / token)")
    if steps or eval_labels:
        ax.legend(loc="upper right", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no loss logged", transform=ax.transAxes, ha="center", va="center", color="gray")


def _draw_lr(ax, records, **_):
    ax.plot(*_series(records, "lr"), color="tab:green", linewidth=1.8)
    ax.set_title("Learning rate")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


def _draw_throughput(ax, records, **_):
    ax.plot(*_series(records, "tokens_per_sec"), color="tab:purple", linewidth=1.2, label="all ranks")
    s, v = _series(records, "throughput/device/tokens_per_sec")
    if s:
        ax.plot(s, v, color="tab:orange", linewidth=1.5, label="per device, windowed (speed_monitor)")
    ax.set_title("Throughput")
    ax.set_ylabel("tokens / s")
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    s, mfu = _series(records, "throughput/device/mfu")
    if s:
        twin = ax.twinx()
        twin.plot(s, [100 * m for m in mfu], color="tab:red", linewidth=1.5, linestyle="--")
        twin.set_ylabel("MFU (%)", color="tab:red")
        twin.tick_params(axis="y", colors="tab:red")
        twin.set_ylim(bottom=0)
        handles.append(twin.lines[0])
        labels.append("MFU (right axis)")
    ax.legend(handles, labels, loc="lower right", fontsize=9)


def _draw_icl(ax, records, icl_names, **_):
    for i, name in enumerate(icl_names):
        style = "--" if name.startswith("gauntlet/") else "-"
        ax.plot(*_series(records, f"icl/{name}"), style, marker="o", markersize=4, color=f"C{i % 10}", label=name)
    ax.set_title("In-context learning (icl_tasks)")
    ax.set_ylabel("accuracy (gauntlet: above chance)")
    ax.legend(loc="best", fontsize=8)


def _draw_mix(ax, records, streams, targets, **_):
    for i, stream in enumerate(streams):
        steps, shares = [], []
        for r in records:
            counts = [_number(r.get(f"data/{s}/tokens")) for s in streams]
            total = sum(c for c in counts if c)
            mine = _number(r.get(f"data/{stream}/tokens"))
            if total and mine is not None:
                steps.append(r["step"])
                shares.append(mine / total)
        color = f"C{i % 10}"
        ax.plot(steps, shares, color=color, linewidth=1.8, label=stream)
        if stream in targets:
            ax.axhline(targets[stream], color=color, linestyle="--", linewidth=1.2,
                       label=f"{stream} target {targets[stream]:.0%}")
    ax.set_title("Data mix: share of tokens seen so far")
    ax.set_ylabel("share of tokens")
    ax.set_ylim(0, 1)
    ax.legend(loc="best", fontsize=9)
