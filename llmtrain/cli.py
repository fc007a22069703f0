"""Entry-point glue shared by scripts/: a user mistake ends as one line on stderr, exit code 2."""
from __future__ import annotations

import sys
from typing import Callable

from llmtrain.errors import UserError


def run_cli(main: Callable[[list[str]], object], argv: list[str]) -> None:
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
