"""Models: MPT (llmtrain/models/mpt/) behind Composer's interface (composer_model.py, which registers
`mpt_causal_lm`), float8 training (fp8.py), and where a trained model is read from (sources.py)."""
from __future__ import annotations

from llmtrain.models.composer_model import ComposerMPT, build_composer_mpt, validate_mpt_section

__all__ = ["ComposerMPT", "build_composer_mpt", "validate_mpt_section"]
