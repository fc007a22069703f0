"""Where the GPU waits for the host: idle gaps in a profiler's Chrome trace, with what Python was doing.

    python benchmarks/gaps.py trace.json.gz [--steps 2] [--top 15]

Reads a trace of CPU and CUDA activity taken with `with_stack=True` (bench_train.py --trace writes one).
GPU busy time is the union of kernels, copies and memsets; every stretch between them longer than
--min-us is a gap. For each of the largest gaps it prints its length and the innermost Python frames
running at its middle (what the host was doing while the GPU had nothing queued), and it sums all gaps
by the innermost frame of our code or Composer's, so a step's idle time reads as a short list of causes.
Imports only the standard library.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json

GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
OWN_CODE = ("llmtrain/", "composer/", "benchmarks/", "torch/optim", "torch/nn/utils/clip_grad", "torchmetrics/")


def load(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)["traceEvents"]


def busy_intervals(events: list[dict]) -> list[tuple[float, float]]:
    spans = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                   if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES)
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def idle_gaps(busy: list[tuple[float, float]], min_us: float) -> list[tuple[float, float]]:
    return [(a[1], b[0]) for a, b in zip(busy, busy[1:]) if b[0] - a[1] >= min_us]


class Stacks:
    """Python frames (outermost first) of the main thread at increasing times, by one sweep over the events."""

    def __init__(self, events: list[dict]):
        python = [e for e in events if e.get("ph") == "X" and e.get("cat") == "python_function"]
        # The host thread that drives the step: the one with the most Python frames (the train loop's).
        busiest = collections.Counter(e["tid"] for e in python).most_common(1)
        main = busiest[0][0] if busiest else None
        self.events = sorted((e for e in python if e["tid"] == main), key=lambda e: e["ts"])
        self.next = 0
        self.active: list[dict] = []

    def at(self, t: float) -> list[str]:
        while self.next < len(self.events) and self.events[self.next]["ts"] <= t:
            self.active.append(self.events[self.next])
            self.next += 1
        self.active = [e for e in self.active if e["ts"] + e.get("dur", 0) >= t]
        return [e["name"] for e in self.active]


def own_frame(stack: list[str]) -> str:
    return next((name for name in reversed(stack) if any(key in name for key in OWN_CODE)),
                stack[-1] if stack else "(no Python frame)")


def summarise(events: list[dict], steps: int, top: int, min_us: float, sample_us: float = 25.0) -> str:
    """The report: idle time a step, split by what the host ran (sampled every `sample_us` in each gap)."""
    busy = busy_intervals(events)
    if not busy:
        return "no GPU activity in the trace"
    gaps = idle_gaps(busy, min_us)
    window = busy[-1][1] - busy[0][0]
    busy_us = sum(e - s for s, e in busy)
    lines = [f"window {window / 1e3:.1f} ms over {steps} steps: GPU busy {busy_us / 1e3:.1f} ms, "
             f"idle {(window - busy_us) / 1e3:.1f} ms ({(window - busy_us) / 1e3 / steps:.2f} ms a step), "
             f"{len(gaps)} gaps >= {min_us:.0f} us ({sum(e - s for s, e in gaps) / 1e3:.1f} ms)"]
    stacks = Stacks(events)
    by_cause: dict[str, float] = {}
    largest = []
    for start, end in gaps:
        n = max(1, int((end - start) // sample_us))
        for i in range(n):
            stack = stacks.at(start + (i + 0.5) * (end - start) / n)
            if i == n // 2:
                largest.append((end - start, start - busy[0][0], stack))
            cause = own_frame(stack)
            by_cause[cause] = by_cause.get(cause, 0.0) + (end - start) / n
    lines.append("idle ms a step by the innermost frame of ours / Composer's / torch.optim on the host:")
    for cause, us in sorted(by_cause.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {us / 1e3 / steps:7.2f}  {cause[:150]}")
    lines.append(f"largest {top} gaps (ms, at ms into the window): innermost frames at the middle")
    for dur, at, stack in sorted(largest, key=lambda s: -s[0])[:top]:
        lines.append(f"  {dur / 1e3:6.2f} @ {at / 1e3:8.1f}: " + " < ".join(n[:70] for n in reversed(stack[-6:])))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--min-us", type=float, default=20.0)
    args = parser.parse_args()
    print(summarise(load(args.trace), args.steps, args.top, args.min_us))


if __name__ == "__main__":
    main()
