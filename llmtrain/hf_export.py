"""A checkpoint's model as a Hugging Face folder (scripts/convert_to_hf.py, scripts/generate.py) and as a
model in memory (scripts/eval.py): the checkpoint read without running code (llmtrain/checkpoint/reader.py),
the model built from the recipe the checkpoint keeps (or a run's config.yaml).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from llmtrain import builders
from llmtrain.checkpoint.reader import read_checkpoint
from llmtrain.config import TokenizerConfig
from llmtrain.errors import UserError
from llmtrain.models.mpt.hf_interop import export_hf


def model_from_checkpoint(checkpoint: str, config: Optional[str] = None):
    """(ComposerMPT with the checkpoint's weights, on CPU, in eval mode; the recipe it was built from, a dict
    with `model` and usually `tokenizer`). The sections come from the checkpoint, or from `config` (a run's
    config.yaml) if given; see `read_checkpoint` for what CHECKPOINT may be."""
    contents = read_checkpoint(checkpoint)
    recipe = contents.recipe
    if config is not None:
        if not Path(config).is_file():
            raise UserError(f"--config: '{config}' not found; pass a run's config.yaml (runs/NAME/config.yaml)")
        recipe = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    if not recipe or "model" not in recipe:
        raise UserError(f"checkpoint '{checkpoint}' does not record its model (saved before llmtrain kept the recipe "
                        "in checkpoints); pass --config runs/NAME/config.yaml of the run that wrote it")
    if not contents.tensors:
        raise UserError(f"checkpoint '{checkpoint}' holds no model weights (state.model.*)")
    model = builders.build_model({**recipe["model"], "init_device": "cpu"})
    missing, unexpected = model.load_state_dict(contents.tensors, strict=False)
    if missing or unexpected:
        raise UserError(f"checkpoint '{checkpoint}': weights do not match its model section (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return model.eval(), recipe


def convert_to_hf(checkpoint: str, out_dir, config: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                  tokenizer: bool = True) -> Path:
    """Write the model of a Composer checkpoint (see `model_from_checkpoint`) as a folder that stock
    `transformers.MptForCausalLM.from_pretrained` loads (safetensors weights, tokenizer files)."""
    model, recipe = model_from_checkpoint(checkpoint, config)
    tok = None
    if tokenizer and recipe.get("tokenizer"):
        tok = builders.build_tokenizer(TokenizerConfig(**recipe["tokenizer"]))
    return export_hf(model.model, out_dir, tok, dtype=dtype)
