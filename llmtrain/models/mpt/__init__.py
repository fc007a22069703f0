"""The MPT model: configuration, modeling, attention backends, Hugging Face interchange."""
from llmtrain.models.mpt.configuration import MPTConfig
from llmtrain.models.mpt.modeling import MPTForCausalLM

__all__ = ["MPTConfig", "MPTForCausalLM"]
