"""Plot a run: `python scripts/plot_run.py RUN_DIR [--out FILE]` → RUN_DIR/report.png (see llmtrain/loggers/report.py)."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's llmtrain, not an installed one

from llmtrain.cli import run_cli  # noqa: E402


def main(argv: list[str]) -> None:
    from llmtrain.loggers.report import plot_run

    parser = argparse.ArgumentParser(prog="scripts/plot_run.py", description=__doc__)
    parser.add_argument("run_dir", help="a run directory (holds metrics.jsonl and config.yaml)")
    parser.add_argument("--out", help="where to write the PNG (default: RUN_DIR/report.png)")
    args = parser.parse_args(argv)
    report = plot_run(args.run_dir, args.out)
    print(f"{report.path}: {', '.join(report.panels)}")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
