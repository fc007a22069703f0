"""Models. YAML `model: {name: mpt_causal_lm, ...}` builds a ComposerMPT from the rest of the section."""
from __future__ import annotations

from llmtrain.models.composer_model import ComposerMPT
from llmtrain.models.mpt.configuration import MPTConfig, parse_mpt_section
from llmtrain.registry import models


def validate_mpt_section(cfg: dict, key: str = "model") -> None:
    """Raise UserError (naming e.g. `model.attn_config.alibi`) for any mistake; builds nothing."""
    parse_mpt_section(cfg, key)


def build_composer_mpt(cfg: dict) -> ComposerMPT:
    """The YAML `model:` section without `name` (nested attn_config / init_config dicts)."""
    validate_mpt_section(cfg, "model")
    return ComposerMPT(MPTConfig(**cfg))


models.register("mpt_causal_lm", build_composer_mpt, validate=validate_mpt_section)
