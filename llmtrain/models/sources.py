"""Where a trained model comes from, for the scripts that use one (eval.py, generate.py):

  - a Hugging Face folder (config.json + safetensors) written by export_hf / convert_to_hf or by stock
    transformers MPT: read by `hf_interop.load_hf`, its tokenizer from the folder when it has one;
  - a Composer checkpoint: a full `.pt`, a sharded checkpoint folder, a save folder (its
    `latest-rank0.pt`) or a run directory (its checkpoints/), local or s3://; its model and tokenizer
    sections from `config`, else the run's config.yaml beside or above it, else the checkpoint's own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from llmtrain import builders
from llmtrain.checkpoint.folder import LATEST
from llmtrain.config import TokenizerConfig
from llmtrain.data.tokenizer import NEOX_NAME, build_tokenizer
from llmtrain.errors import UserError
from llmtrain.hf_export import model_from_checkpoint
from llmtrain.models.mpt.hf_interop import load_hf


def checkpoint_of(path: Path) -> Path:
    """A run directory stands for its save folder, a save folder for its latest checkpoint."""
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / LATEST).exists():
        return path / LATEST
    return path


def run_config_of(checkpoint: Path) -> Optional[Path]:
    """The run's config.yaml: save_folder is usually RUN_DIR/checkpoints, so look beside and above."""
    folder = checkpoint.resolve().parent
    for candidate in (folder, folder.parent, folder.parent.parent):
        if (candidate / "config.yaml").is_file():
            return candidate / "config.yaml"
    return None


def load_model(source: str, config: Optional[str] = None, tokenizer: Optional[str] = None):
    """(MPTForCausalLM in eval mode on CPU, its tokenizer, its max_seq_len) from an HF folder or a checkpoint.
    `tokenizer` (a name or folder) overrides the one the source names; gpt-neox-20b when it names none."""
    local = Path(source)
    remote = source.startswith("s3://")
    if not remote and not local.exists():
        raise UserError(f"MODEL: '{source}' does not exist; pass an exported Hugging Face folder or a checkpoint")
    if not remote and (local / "config.json").is_file():
        model = load_hf(local).eval()
        if tokenizer is None and (local / "tokenizer.json").is_file():
            return model, build_tokenizer(str(local), key="MODEL"), model.config.max_seq_len
        return model, build_tokenizer(tokenizer or NEOX_NAME, key="--tokenizer"), model.config.max_seq_len
    checkpoint = source if remote else str(checkpoint_of(local))
    config = config or (None if remote else run_config_of(Path(checkpoint)))
    composer_model, recipe = model_from_checkpoint(checkpoint, str(config) if config else None)
    if tokenizer is not None:
        tok = build_tokenizer(tokenizer, key="--tokenizer")
    elif recipe.get("tokenizer"):
        tok = builders.build_tokenizer(TokenizerConfig(**recipe["tokenizer"]))
    else:
        tok = build_tokenizer(NEOX_NAME)
    return composer_model.model, tok, composer_model.model.config.max_seq_len
