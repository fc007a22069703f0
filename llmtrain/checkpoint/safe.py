"""Reading checkpoint pickles without running code, and Composer's hook that checks every file it loads.

Composer calls `CHECKPOINT_VALIDATION_FUNCTION` (set to `validate_checkpoint_file` by `arm_validation`) on each
file right before it unpickles it; unless the file is plain data that is an UnsafeCheckpoint. What is being
loaded is named in messages as the run's resume plan names it (`LOADING_ENV`, set while the Trainer is built).
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from llmtrain.errors import UserError

METADATA = ".metadata"
VALIDATION_ENV = "CHECKPOINT_VALIDATION_FUNCTION"
TRUST_ENV = "LLMTRAIN_TRUSTED_CHECKPOINTS"  # "1": let Composer unpickle checkpoints unchecked
# What Composer is loading, as the user named it (it validates temp copies): set while a Trainer is built.
LOADING_ENV = "LLMTRAIN_LOADING_CHECKPOINT"


class UnsafeCheckpoint(UserError):
    """A checkpoint file asks to run code (or build objects) that a checkpoint has no business with."""


def allowed_globals() -> list:
    """What Composer's state holds beyond tensors and plain containers: wall-clock times, the torch
    version string, numpy arrays (the numpy RNG state). Each only builds data; none can call out."""
    import datetime
    from torch.torch_version import TorchVersion
    state = np.zeros(1, dtype=np.uint32)  # what numpy's RNG state holds
    reconstruct = state.__reduce__()[0]  # numpy.core or numpy._core, by numpy version
    # np.dtype builds the dtype; its class (numpy.dtypes.UInt32DType) then gets its state set.
    return [datetime.timedelta, TorchVersion, reconstruct, np.ndarray, np.dtype, type(state.dtype)]


def _unpickling_reason(err: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only error that names what was refused: torch 2.7 puts it last in the
    first paragraph, 2.11+ after a generic paragraph ("Trying to load unsupported GLOBAL ...")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line
    return lines[0] if lines else type(err).__name__


def safe_torch_load(source, name=None, **kwargs) -> Any:
    """torch.load(weights_only=True) allowing `allowed_globals()`; anything else is an UnsafeCheckpoint
    naming `name` (default: the file)."""
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            return torch.load(source, map_location="cpu", weights_only=True, **kwargs)
        except pickle.UnpicklingError as err:
            reason = _unpickling_reason(err)
            raise UnsafeCheckpoint(f"{name or getattr(source, 'name', source)}: not loaded: it is not a plain-data "
                                   f"checkpoint ({reason}); load only checkpoints you trust (for training, "
                                   f"{TRUST_ENV}=1 skips this check)") from None


_METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
_METADATA_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath")}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's `.metadata` is a plain pickle (torch reads it with pickle.load). This reads it allowing only
    DCP's own metadata classes, torch.Size, dtypes, layouts and paths."""

    def find_class(self, module: str, name: str):
        allowed = (module, name) in _METADATA_GLOBALS
        if not allowed and "." not in name and module in (*_METADATA_MODULES, "torch"):
            obj = getattr(importlib.import_module(module), name, None)
            # a dtype, or a class defined in DCP's metadata modules (not something they import)
            allowed = isinstance(obj, torch.dtype) or (module != "torch" and isinstance(obj, type)
                                                       and obj.__module__ == module)
        if allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in DCP metadata")


def read_metadata(data: bytes, name: str = METADATA):
    """A DCP `Metadata` from the bytes of a `.metadata` file, without running code from it."""
    try:
        return _MetadataUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpoint(f"{name}: not loaded: {err}; load only checkpoints you trust (for training, "
                               f"{TRUST_ENV}=1 skips this check)") from None
    except (EOFError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{name}: not a readable DCP index ({type(err).__name__}: {err})") from None


def byte_items(metadata) -> dict[str, set[int]]:
    """{relative file: offsets} of the non-tensor items (pickled objects) of a DCP checkpoint."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    out: dict[str, set[int]] = {}
    for index, info in metadata.storage_data.items():
        if isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            out.setdefault(info.relative_path, set()).add(info.offset)
    return out


def arm_validation() -> None:
    """Point Composer's per-file validation hook at `validate_checkpoint_file` (unless TRUST_ENV is 1)."""
    if os.environ.get(TRUST_ENV) != "1":
        os.environ.setdefault(VALIDATION_ENV, "llmtrain.checkpoint.validate_checkpoint_file")  # the package exports it


def validate_checkpoint_file(path, specs: Optional[list[tuple[int, int]]] = None) -> bool:
    """Composer's CHECKPOINT_VALIDATION_FUNCTION: Composer calls it on each file right before it unpickles
    it with torch.load(weights_only=False) or pickle.load. Raises UnsafeCheckpoint unless the file is
    plain data: `.metadata` through the restricted unpickler, a `.distcp` file's pickled objects (its
    tensors DCP loads with weights_only=True itself) and a full `.pt` through torch.load(weights_only=True)."""
    path = Path(path)
    loading = os.environ.get(LOADING_ENV) or None
    name = f"{loading} ({path.name})" if loading else str(path)
    if path.name == METADATA:
        read_metadata(path.read_bytes(), name)
    elif path.suffix == ".distcp":
        objects = byte_items(read_metadata((path.parent / METADATA).read_bytes(), name))
        wanted = objects.get(path.name, set())
        with path.open("rb") as f:
            for offset, length in specs or []:
                if offset in wanted:
                    f.seek(offset)
                    safe_torch_load(io.BytesIO(f.read(length)), f"{name}@{offset}")
    else:
        safe_torch_load(str(path), loading, mmap=True)  # mmap: the pickle is read, the tensor bytes are not
    return True
