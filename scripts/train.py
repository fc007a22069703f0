"""Train from a YAML recipe: `python scripts/train.py yamls/tiny.yaml [key=value ...]`
(or `composer -n 8 scripts/train.py ...` for several processes)."""
import sys

from llmtrain.cli import run_cli


def main(argv: list[str]) -> None:
    from llmtrain.builders import load_config
    from llmtrain.train import train

    if not argv or argv[0].startswith("-"):
        print("usage: scripts/train.py RECIPE.yaml [dotted.key=value ...]", file=sys.stderr)
        sys.exit(2)
    train(load_config(argv[0], argv[1:]))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
