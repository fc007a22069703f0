"""The software stack llmtrain runs on, checked: `python -m llmtrain.stack` (what `make setup` runs last).

Composer 0.32.1 and streaming 0.13.0 are installed with `--no-deps` (requirements/no-deps.txt) because their
last releases pin torch < 2.7.1; we run them on torch >= 2.11. This check fails with one line when the venv
still holds an older stack, when either is missing or another version, or when torch and torchvision do not
import together, instead of a failure deep inside the first run.
"""
from __future__ import annotations

import sys
from importlib import metadata

from packaging.version import Version

from llmtrain.errors import UserError

MIN_TORCH = Version("2.11")
PINNED = {"mosaicml": "0.32.1", "mosaicml-streaming": "0.13.0"}
_FIX = "run `make setup` (or see docs/install.md)"


def check() -> dict[str, str]:
    """The versions of the stack's main parts; UserError naming the part and the fix when one is off."""
    versions = {}
    for name in ("torch", "torchvision", *PINNED, "transformers", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise UserError(f"{name} is not installed: {_FIX}") from None
    torch_version = Version(versions["torch"])
    if Version(torch_version.base_version) < MIN_TORCH:
        raise UserError(f"torch {versions['torch']} is installed; llmtrain needs torch >= {MIN_TORCH}: {_FIX}")
    for name, want in PINNED.items():
        if versions[name] != want:
            raise UserError(f"{name} {versions[name]} is installed; llmtrain is built on {name}=={want}: {_FIX}")
    try:
        import torchvision  # noqa: F401  (Composer imports it; a build for another torch fails here)
        import composer  # noqa: F401
        import streaming  # noqa: F401
    except Exception as err:  # a broken import of any kind is the stack's fault, named in one line
        raise UserError(f"the stack does not import ({type(err).__name__}: {err}): {_FIX}") from None
    return versions


def main() -> int:
    try:
        versions = check()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("stack: " + ", ".join(f"{name} {v}" for name, v in versions.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
