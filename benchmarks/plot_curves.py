"""Training loss of several runs on one plot, from their metrics.jsonl, and the final losses compared.

    python benchmarks/plot_curves.py a/metrics.jsonl b/metrics.jsonl --out curves.png [--smooth 20]
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def losses(path: str) -> tuple[list[int], list[float]]:
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r and "step" in r]
    return [r["step"] for r in train], [r["loss"] for r in train]


def mean_of_last(values: list[float], n: int) -> float:
    return sum(values[-n:]) / len(values[-n:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--smooth", type=int, default=20, help="final loss: mean of the last N steps")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    finals = {}
    for path in args.runs:
        steps, values = losses(path)
        label = Path(path).stem.removeprefix("loss_")
        ax.plot(steps, values, label=label, linewidth=1)
        finals[label] = mean_of_last(values, args.smooth)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    base = next(iter(finals.values()))
    for label, value in finals.items():
        print(f"{label}: final loss (mean of last {args.smooth}) {value:.4f}, {100 * (value / base - 1):+.2f} % vs first")


if __name__ == "__main__":
    main()
