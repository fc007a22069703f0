"""Reading a Composer checkpoint without Composer and without running its pickles: `read_checkpoint` gives
a checkpoint's tensors and plain-data objects (sharded or full, local or s3://); llmtrain/hf_export.py and
the tests read checkpoints through it.
"""
from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from composer.utils import parse_uri

from llmtrain.checkpoint.folder import LATEST, Folder
from llmtrain.checkpoint.safe import METADATA, read_metadata, safe_torch_load
from llmtrain.errors import UserError

MODEL_PREFIX = "state.model."  # DCP keys of the model's tensors; in a full .pt they sit under ["state"]["model"]


def _localize(uri: str, tmp: str) -> Path:
    """A local path holding the checkpoint at `uri`: the path itself, or a copy of an s3:// checkpoint."""
    backend, bucket, key = parse_uri(uri)
    if not backend:
        path = Path(uri)
        if not path.exists():
            raise UserError(f"checkpoint '{uri}' does not exist; pass a sharded folder (ep{{E}}-ba{{B}}/), a full "
                            f".pt file or a save_folder's {LATEST}")
        return path.resolve()
    if backend != "s3":
        raise UserError(f"checkpoint '{uri}': scheme '{backend}://' is not supported here; use a local path or s3://")
    key = key.rstrip("/")
    parent, _, name = key.rpartition("/")
    folder = Folder(f"s3://{bucket}/{parent}")
    if name in (LATEST, LATEST + ".symlink"):
        name = folder.latest()
        if name is None:
            raise UserError(f"checkpoint '{uri}': {folder.uri} has no {LATEST}.symlink")
    files = [rel for rel in folder.sizes() if rel == name or rel.startswith(name + "/")]
    if not files:
        raise UserError(f"checkpoint '{uri}' does not exist; pass a sharded folder or a full .pt file")
    for rel in files:
        if ".." in Path(rel).parts:  # an object name must not write outside the temp folder
            raise UserError(f"checkpoint '{uri}': object name '{rel}' climbs out of the checkpoint; not loaded")
        dest = Path(tmp, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        folder.store.download_object(f"{folder.root}/{rel}", str(dest))
    return Path(tmp, name)


def _read_dcp(folder: Path, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors under `prefix` (whole, from every rank's chunks) and plain-data objects of a DCP folder."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata
    metadata = read_metadata((folder / METADATA).read_bytes(), str(folder / METADATA))
    tensors: dict[str, torch.Tensor] = {}
    objects: dict[str, Any] = {}
    wanted: dict[str, list] = {}  # by file: the objects, and the tensors under `prefix`
    for index, info in metadata.storage_data.items():
        kind = metadata.state_dict_metadata.get(index.fqn)
        if isinstance(kind, BytesStorageMetadata) or (isinstance(kind, TensorStorageMetadata)
                                                      and index.fqn.startswith(prefix)):
            if getattr(info, "transform_descriptors", None):
                raise UserError(f"{folder}: {index.fqn} is stored with transforms {info.transform_descriptors}, "
                                "which this reader does not undo")
            wanted.setdefault(info.relative_path, []).append((index, info, kind))
    for rel, items in wanted.items():
        with (folder / rel).open("rb") as f:
            for index, info, kind in items:
                f.seek(info.offset)
                value = safe_torch_load(io.BytesIO(f.read(info.length)), f"{folder / rel}@{info.offset}")
                if isinstance(kind, BytesStorageMetadata):
                    objects[index.fqn] = value
                    continue
                whole = tensors.get(index.fqn)
                if whole is None:
                    whole = tensors[index.fqn] = torch.empty(kind.size, dtype=kind.properties.dtype)
                offsets = index.offset or [0] * value.dim()  # this rank's chunk of the whole tensor
                whole[tuple(slice(o, o + n) for o, n in zip(offsets, value.shape))] = value
    return {k[len(prefix):]: v for k, v in tensors.items()}, objects


@dataclass
class CheckpointContents:
    tensors: dict[str, torch.Tensor]   # by key under the prefix read, e.g. "model.transformer.wte.weight"
    objects: dict[str, Any]            # every non-tensor item, by DCP key ("state.run_name", ...)
    recipe: Optional[dict]             # {"model": {...}, "tokenizer": {...}} when the run stored it
    batch: Optional[int]               # the step it was saved at


def read_checkpoint(uri: str, prefix: str = MODEL_PREFIX) -> CheckpointContents:
    """Read a Composer checkpoint without unpickling anything but plain data: a sharded DCP folder or a
    full .pt file (or a save folder's `latest-rank0.pt`), local or s3://. `prefix` picks tensors by their
    DCP key ("state.model." the model, "state." everything); a full .pt is read as if it were DCP keyed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _localize(uri, tmp)
        if path.is_dir():
            if not (path / METADATA).is_file():
                raise UserError(f"checkpoint '{uri}' is a folder without {METADATA}; pass a sharded checkpoint "
                                "folder (ep{E}-ba{B}/) or a .pt file")
            tensors, objects = _read_dcp(path, prefix)
        else:
            try:
                flat = _flatten({"state": safe_torch_load(str(path), mmap=True)["state"]})
            except (RuntimeError, KeyError, TypeError) as err:
                raise UserError(f"checkpoint '{uri}' is not a Composer checkpoint ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''})") from None
            tensors = {k[len(prefix):]: v.clone() for k, v in flat.items()
                       if k.startswith(prefix) and isinstance(v, torch.Tensor)}
            objects = {k: v for k, v in flat.items() if not isinstance(v, torch.Tensor)}
    recipe = objects.get("state.callbacks.ModelRecipe.recipe")
    batch = objects.get("state.timestamp.Timestamp.batch")
    return CheckpointContents(tensors, objects, json.loads(recipe) if recipe else None,
                              int(batch.value if hasattr(batch, "value") else batch) if batch is not None else None)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists) → {"a.b.0.c": leaf}, the way DCP names a state dict's entries."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix[:-1]: tree}
    out = {}
    for key, value in items:
        out.update(_flatten(value, f"{prefix}{key}."))
    return out
