"""FP8 training GEMMs for `precision: amp_fp8`, through torchao's float8 (`pip install .[hopper]`).

Each `nn.Linear` inside the transformer blocks becomes a torchao `Float8Linear`: its matmuls (forward,
grad-input, grad-weight) run in float8 with dynamic scales, everything else stays under bf16 autocast.
The embedding and the LM head (tied to it, the one GEMM whose output feeds the loss) stay bf16, as do
layers whose dimensions are not multiples of 16 (FP8 GEMMs need that). The weights themselves stay in
their high-precision dtype: FP8 is a compute format, not a storage format, so a checkpoint of an FP8 run
has the same keys and dtypes as a bf16 one and loads into a bf16 run or the Hugging Face export.

Conversion happens before FSDP2 and torch.compile (the Trainer applies both), which is the order torchao
needs. `check_supported` runs before anything is built: FP8 GEMMs need a CUDA GPU of compute capability
>= 8.9 (Ada, Hopper, Blackwell).
"""
from __future__ import annotations

import dataclasses
import logging

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from torch import nn

from llmtrain.config import Fp8Config
from llmtrain.errors import UserError
from llmtrain.models.mpt.attention import FLASH, TRITON
from llmtrain.models.mpt.modeling import MPTModel

log = logging.getLogger(__name__)


def check_supported(device: str, fp8: Fp8Config) -> None:
    """One line when this machine cannot train with `precision: amp_fp8`."""
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        raise UserError("precision: amp_fp8 needs torchao: pip install '.[hopper]' (or torchao==0.18.0)") from None
    if fp8.emulate:
        return
    if device != "gpu" or not torch.cuda.is_available():
        raise UserError("precision: amp_fp8 needs a CUDA GPU with FP8 GEMMs (compute capability >= 8.9, e.g. "
                        "H100); on this machine use precision: amp_bf16 (fp32 on CPU)")
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        raise UserError(f"precision: amp_fp8 needs FP8 GEMMs (compute capability >= 8.9, e.g. H100); "
                        f"{torch.cuda.get_device_name()} has {major}.{minor}: use precision: amp_bf16")


def _in_blocks(module: nn.Module, fqn: str) -> bool:
    return (isinstance(module, nn.Linear) and ".blocks." in f".{fqn}"
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def convert(model: nn.Module, fp8: Fp8Config, fsdp: bool) -> list[str]:
    """Swap the transformer blocks' Linears of `model` for Float8Linear in place; returns their names.

    Under FSDP2 with tensorwise scales the parameters are also all-gathered in float8 (half the bytes);
    `Fp8ScalePrecompute` must then run after each optimizer step."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    from torchao.float8.config import Float8GemmConfig

    config = dataclasses.replace(Float8LinearConfig.from_recipe_name(fp8.recipe), emulate=fp8.emulate,
                                 enable_fsdp_float8_all_gather=fsdp and fp8.recipe == "tensorwise")
    if fp8.fast_accum:
        fast = Float8GemmConfig(use_fast_accum=True)
        config = dataclasses.replace(config, gemm_config_grad_input=fast, gemm_config_grad_weight=fast)
    converted = [name for name, module in model.named_modules() if _in_blocks(module, name)]
    if not converted:
        raise UserError("precision: amp_fp8: the model has no Linear layer in its blocks with dimensions that are "
                        "multiples of 16; use precision: amp_bf16")
    convert_to_float8_training(model, module_filter_fn=_in_blocks, config=config)
    for module in model.modules():
        # FP8 models keep flex's Triton attention: with FlashAttention-4 the FP8 MPT-1B's compile did not
        # finish within 190 s on an H200 (the whole bf16 run took 78 s; docs/performance.md, 2026-12-04).
        if isinstance(module, MPTModel) and module.flex_backend == FLASH:
            module.flex_backend = TRITON
            log.warning("attention: flex's Triton kernel for precision: amp_fp8 (not FlashAttention-4)")
    return converted


def all_gathers_in_fp8(model: nn.Module) -> bool:
    from torchao.float8.float8_linear import Float8Linear
    return any(isinstance(m, Float8Linear) and m.config.enable_fsdp_float8_all_gather for m in model.modules())


class Fp8ScalePrecompute(Callback):
    """With float8 all-gathers, the weights' scales for the next forward: one fused amax over every FSDP2
    shard after the optimizer step (torchao), instead of one all-reduce per layer inside the forward."""

    def batch_end(self, state: State, logger: Logger) -> None:
        from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp
        precompute_float8_dynamic_scale_for_fsdp(state.model)
