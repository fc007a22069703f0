"""Checkpoints you can trust: exact resume, resume only from complete checkpoints, reading without running code.

How Composer 0.32.1 writes a checkpoint into `save_folder` (see docs/checkpoints.md for the details):

- sharded (2+ ranks, `fsdp_config`, `state_dict_type: sharded`): a folder `ep{E}-ba{B}/` of torch DCP
  files, `__{rank}_0.distcp` per rank and `.metadata` (the index, written last: temp file + rename), then
  rank 0 re-points the symlink `latest-rank0.pt` at the folder (remove, then create).
- full (1 rank, or `state_dict_type: full`): `ep{E}-ba{B}-rank0.pt`, one torch.save pickle written in
  place by rank 0, then the symlink.
- object store (`save_folder: s3://...`): the same files saved in a local temp folder and uploaded; rank 0
  uploads `latest-rank0.pt.symlink` (a text object naming the checkpoint) after it has seen all its files.

`autoresume: true` loads whatever `latest` names. This module (wired in by llmtrain/train.py) adds:

- `prepare_load`, before the Trainer exists: `latest` is made to name the newest *complete* checkpoint
  and what a crash left of a newer save is removed (Composer would refuse to save over it); `load_path`
  is checked; Composer's per-file validation hook is pointed at `validate_checkpoint_file`, so every file
  Composer is about to unpickle is first read through a restricted unpickler.
- `ResumeRng`: restores the RNG state on a mid-epoch resume, which Composer skips when the loader resumes
  itself (dropout masks would differ from an uninterrupted run's).
- `ModelRecipe`: keeps the model and tokenizer sections in each checkpoint, so one converts on its own.
- `read_checkpoint`: a checkpoint's tensors (sharded or full, local or s3://) without executing its
  pickles; `convert_to_hf` (scripts/convert_to_hf.py) writes them as a Hugging Face folder.
"""
from __future__ import annotations

import importlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import (dist, format_name_with_dist, maybe_create_object_store_from_uri,
                            parse_uri, partial_format, reproducibility)

from llmtrain.errors import UserError

log = logging.getLogger(__name__)

LATEST = "latest-rank0.pt"  # Composer's save_latest_filename for rank 0; `.symlink` appended in an object store
METADATA = ".metadata"
MODEL_PREFIX = "state.model."  # DCP keys of the model's tensors; in a full .pt they sit under ["state"]["model"]
_CHECKPOINT_NAME = re.compile(r"^ep(\d+)-ba(\d+)(-rank0\.pt)?$")
# Schemes Composer 0.32.1 can load from (composer.utils.maybe_create_object_store_from_uri).
LOAD_SCHEMES = {"s3": "s3://", "gs": "gs://", "oci": "oci://", "dbfs": "dbfs:/"}
VALIDATION_ENV = "CHECKPOINT_VALIDATION_FUNCTION"
TRUST_ENV = "LLMTRAIN_TRUSTED_CHECKPOINTS"  # "1": let Composer unpickle checkpoints unchecked


class UnsafeCheckpoint(UserError):
    """A checkpoint file asks to run code (or build objects) that a checkpoint has no business with."""


# --- Reading pickles without running code -------------------------------------------------------------

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


def _byte_items(metadata) -> dict[str, set[int]]:
    """{relative file: offsets} of the non-tensor items (pickled objects) of a DCP checkpoint."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    out: dict[str, set[int]] = {}
    for index, info in metadata.storage_data.items():
        if isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            out.setdefault(info.relative_path, set()).add(info.offset)
    return out


# What Composer is loading, as the user named it (it validates temp copies): set by prepare_load.
_loading: Optional[str] = None
# The `state.callbacks.*` keys of the sharded checkpoint Composer is loading (None: not one): set by prepare_load.
_loading_callback_keys: Optional[list[str]] = None
# The checkpoint autoresume loads from a remote save_folder (see trainer_load_arguments): set by prepare_load.
_autoresume_uri: Optional[str] = None


def validate_checkpoint_file(path, specs: Optional[list[tuple[int, int]]] = None) -> bool:
    """Composer's CHECKPOINT_VALIDATION_FUNCTION: Composer calls it on each file right before it unpickles
    it with torch.load(weights_only=False) or pickle.load. Raises UnsafeCheckpoint unless the file is
    plain data: `.metadata` through the restricted unpickler, a `.distcp` file's pickled objects (its
    tensors DCP loads with weights_only=True itself) and a full `.pt` through torch.load(weights_only=True)."""
    path = Path(path)
    name = f"{_loading} ({path.name})" if _loading else str(path)
    if path.name == METADATA:
        read_metadata(path.read_bytes(), name)
    elif path.suffix == ".distcp":
        objects = _byte_items(read_metadata((path.parent / METADATA).read_bytes(), name))
        wanted = objects.get(path.name, set())
        with path.open("rb") as f:
            for offset, length in specs or []:
                if offset in wanted:
                    f.seek(offset)
                    safe_torch_load(io.BytesIO(f.read(length)), f"{name}@{offset}")
    else:
        safe_torch_load(str(path), _loading, mmap=True)  # mmap: the pickle is read, the tensor bytes are not
    return True


# --- Save folders: a local directory or an S3 prefix ---------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    name: str      # "ep0-ba10" (sharded folder) or "ep0-ba10-rank0.pt" (full)
    batch: int

    @property
    def sharded(self) -> bool:
        return not self.name.endswith(".pt")


class _Folder:
    """The files of one save folder, by path relative to it."""

    def __init__(self, uri: str):
        backend, bucket, path = parse_uri(uri)
        if backend not in ("", "s3"):
            raise UserError(f"save_folder: '{uri}': checkpoints are checked (autoresume, conversion) in local "
                            "folders and s3:// only; use one of those")
        self.uri = uri.rstrip("/")
        self.store = maybe_create_object_store_from_uri(uri) if backend else None
        self.root = path.rstrip("/") if backend else uri

    def _key(self, rel: str) -> str:
        return self.store.get_key(f"{self.root}/{rel}")

    def _s3(self, op: str, missing_ok: bool = False, **kwargs):
        """One S3 call on this folder's bucket; its failure is a UserError naming save_folder."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return getattr(self.store.client, op)(Bucket=self.store.bucket, **kwargs)
        except ClientError as err:
            if missing_ok and err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            reason = err
        except BotoCoreError as err:
            reason = err
        raise UserError(f"save_folder: '{self.uri}': {op} failed ({type(reason).__name__}: "
                        f"{str(reason).splitlines()[0]}); check the bucket, its permissions and the "
                        "S3_ENDPOINT_URL / AWS_* environment")

    def sizes(self) -> dict[str, int]:
        if self.store is None:
            root = Path(self.root)
            if not root.is_dir():
                return {}
            # Symlinks are not followed: `latest` is read by latest(), not counted as a file.
            return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
                    if p.is_file() and not p.is_symlink()}
        prefix, out, token = self._key(""), {}, {}
        while True:
            page = self._s3("list_objects_v2", Prefix=prefix, **token)
            out.update({obj["Key"][len(prefix):]: obj["Size"] for obj in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                return out
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def read(self, rel: str, missing_ok: bool = False) -> Optional[bytes]:
        if self.store is None:
            path = Path(self.root, rel)
            return None if missing_ok and not path.exists() else path.read_bytes()
        obj = self._s3("get_object", missing_ok, Key=self._key(rel))
        return None if obj is None else obj["Body"].read()

    def latest(self) -> Optional[str]:
        """The checkpoint `latest` names (relative), or None."""
        if self.store is None:
            link = Path(self.root, LATEST)
            return os.readlink(link).rstrip("/") if link.is_symlink() else None
        target = self.read(LATEST + ".symlink", missing_ok=True)
        if target is None:
            return None
        target = target.decode().strip()
        return target[len(self.root) + 1:] if target.startswith(self.root + "/") else target

    def set_latest(self, name: Optional[str]) -> None:
        if self.store is None:
            link = Path(self.root, LATEST)
            if name is None:
                link.unlink(missing_ok=True)
                return
            tmp = link.with_name(f"{LATEST}.tmp{os.getpid()}")
            tmp.unlink(missing_ok=True)
            os.symlink(name, tmp)
            os.replace(tmp, link)  # atomic, unlike Composer's remove-then-create
            return
        if name is None:
            self._s3("delete_object", Key=self._key(LATEST + ".symlink"))
        else:  # the format Composer writes: the object name, without the bucket
            self._s3("put_object", Key=self._key(LATEST + ".symlink"), Body=f"{self.root}/{name}".encode())

    def write(self, rel: str, data: Optional[bytes]) -> None:
        """Replace file `rel` with `data` (atomically where local); None deletes it."""
        if self.store is not None:
            if data is None:
                self._s3("delete_object", Key=self._key(rel))
            else:
                self._s3("put_object", Key=self._key(rel), Body=data)
            return
        path = Path(self.root, rel)
        if data is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def remove(self, ckpt: Checkpoint, files: list[str]) -> None:
        if self.store is None:
            path = Path(self.root, ckpt.name)
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            return
        for rel in files:
            self._s3("delete_object", Key=self._key(rel))


def _checkpoints(files: dict[str, int]) -> list[Checkpoint]:
    """Every checkpoint with at least one file, newest first."""
    found = {}
    for rel in files:
        top = rel.split("/", 1)[0]
        if (m := _CHECKPOINT_NAME.match(top)) and (m.group(3) is None) == ("/" in rel):
            found[top] = Checkpoint(top, int(m.group(2)))
    return sorted(found.values(), key=lambda c: c.batch, reverse=True)


def _files_of(ckpt: Checkpoint, files: dict[str, int]) -> list[str]:
    return [rel for rel in files if rel == ckpt.name or rel.startswith(ckpt.name + "/")]


def _incomplete_reason(folder: _Folder, ckpt: Checkpoint, files: dict[str, int]) -> Optional[str]:
    """Why `ckpt` cannot be loaded whole, or None when every byte it needs is there."""
    if ckpt.sharded:
        index = f"{ckpt.name}/{METADATA}"
        if index not in files:
            return f"no {METADATA} (DCP writes it last)"
        try:
            metadata = read_metadata(folder.read(index), f"{folder.uri}/{index}")
        except UserError as err:
            return str(err)
        needed: dict[str, int] = {}
        for info in metadata.storage_data.values():
            needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
        for rel, size in needed.items():
            have = files.get(f"{ckpt.name}/{rel}")
            if have is None or have < size:
                return f"{rel} has {have or 0} of {size} bytes"
        return None
    if folder.store is not None:
        return None  # an upload appears whole or not at all, and only after torch.save finished locally
    try:  # torch.save writes the zip's central directory last: a cut-short file has none
        with zipfile.ZipFile(Path(folder.root, ckpt.name)):
            return None
    except (zipfile.BadZipFile, OSError) as err:
        return f"not a whole torch.save file ({err})"


def repair_latest(save_folder: str) -> Optional[str]:
    """Point `latest` at the newest complete checkpoint in `save_folder` and delete the newer, incomplete
    ones; the name of the checkpoint autoresume will load, or None. Call on one process, with no run writing
    to the folder."""
    folder = _Folder(save_folder)
    files = folder.sizes()
    chosen = None
    for ckpt in _checkpoints(files):
        reason = _incomplete_reason(folder, ckpt, files)
        if reason is None:
            chosen = ckpt
            break
        log.warning("checkpoint %s/%s is incomplete (%s): removing it; autoresume uses an older one",
                    folder.uri, ckpt.name, reason)
        folder.remove(ckpt, _files_of(ckpt, files))
    latest = folder.latest()
    name = chosen.name if chosen else None
    if latest != name:
        log.warning("%s/%s named %s; it now names %s, the newest complete checkpoint",
                    folder.uri, LATEST, latest, name)
        folder.set_latest(name)
    return name


def read_beside_checkpoints(save_folder: str, name: str) -> Optional[bytes]:
    """File `name` kept in `save_folder` (local or s3://) next to the checkpoints, or None."""
    return _Folder(save_folder).read(name, missing_ok=True)


def write_beside_checkpoints(save_folder: str, name: str, data: Optional[bytes]) -> None:
    """Write (None: delete) file `name` in `save_folder`; checkpoint discovery ignores such files."""
    _Folder(save_folder).write(name, data)


# --- load_path -----------------------------------------------------------------------------------------

def _dist_formatted(path: str, run_name: str) -> str:
    # What Composer loads on rank 0: {run_name} and the rank placeholders filled in.
    return partial_format(path, run_name=run_name, rank=0, local_rank=0, node_rank=0)


def check_load_path(load_path: str, run_name: str, sharded: bool) -> None:
    """UserError naming load_path unless it is a checkpoint Composer can load into this run (`sharded`:
    the run loads DCP folders, i.e. FSDP with state_dict_type sharded)."""
    backend, bucket, path = parse_uri(load_path)
    if backend and backend not in LOAD_SCHEMES:
        raise UserError(f"load_path: '{load_path}': scheme '{backend}://' is not supported; use a local path or "
                        f"{', '.join(LOAD_SCHEMES.values())}")
    path = _dist_formatted(path if backend else load_path, run_name)
    if backend == "s3":
        store = maybe_create_object_store_from_uri(load_path)
        try:
            keys = store.list_objects(path.rstrip("/"))
        except Exception as err:  # boto3's errors: no credentials, no bucket, no endpoint
            raise UserError(f"load_path: '{load_path}': cannot list it ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}); check the URI and S3_* / AWS_* "
                            "environment") from None
        name = path.rstrip("/")
        exists_file = name in keys or f"{name}.symlink" in keys
        exists_dir = any(k.startswith(name + "/") for k in keys)
        is_dir = exists_dir and f"{name}/{METADATA}" in keys
    elif backend:
        return  # gs/oci/dbfs: Composer reports a missing object itself
    else:
        target = Path(path)
        exists_file, exists_dir = target.is_file(), target.is_dir()
        is_dir = exists_dir and (target / METADATA).is_file()
    if not (exists_file or exists_dir):
        raise UserError(f"load_path: '{load_path}' does not exist; point it at a checkpoint: a sharded folder "
                        "(ep{E}-ba{B}/) or a full file (ep{E}-ba{B}-rank0.pt) in a run's save_folder")
    if exists_dir and not is_dir:
        raise UserError(f"load_path: '{load_path}' is a folder without {METADATA}, not a sharded checkpoint; "
                        "point it at an ep{E}-ba{B}/ folder (or a .pt file)")
    if is_dir and not sharded:
        raise UserError(f"load_path: '{load_path}' is a sharded checkpoint, which only FSDP loads: set fsdp_config "
                        "(e.g. fsdp_config: {}, any number of ranks), or export its weights with "
                        "scripts/convert_to_hf.py")
    if exists_file and sharded:
        raise UserError(f"load_path: '{load_path}' is a full (single-file) checkpoint; to load it on several ranks "
                        "set fsdp_config.state_dict_type: full")


def _saved_callback_keys(uri: str) -> Optional[list[str]]:
    """The `state.callbacks.*` DCP keys of the sharded checkpoint at `uri` (local or s3://); None for a full
    checkpoint, or where they cannot be read (Composer reports that when it loads)."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    if parse_uri(uri)[0] not in ("", "s3") or name.endswith(".pt"):
        return None
    data = _Folder(parent).read(f"{name}/{METADATA}", missing_ok=True)
    if data is None:
        return None
    try:
        metadata = read_metadata(data, uri)
    except UserError:  # refused or unreadable here: Composer's load reports it (or reads it, if trusted)
        return None
    return sorted(k for k in metadata.state_dict_metadata if k.startswith("state.callbacks."))


def loading_lacks(key: str) -> bool:
    """Whether the Trainer being built loads a sharded checkpoint saved without DCP key `key` (state a
    callback gained later): the callback must leave `key` out of the state dict DCP loads into, or DCP
    fails on it. False once `load_done`: every later state_dict() is a save, which writes every key."""
    return _loading_callback_keys is not None and key not in _loading_callback_keys


def load_done() -> None:
    """Call once Composer's Trainer is built: it loads the checkpoint prepare_load found in its constructor."""
    global _loading_callback_keys
    _loading_callback_keys = None


def prepare_load(cfg, sharded: bool) -> None:
    """Call on every rank after dist init, before building the Trainer from `cfg` (a TrainConfig)."""
    global _loading, _loading_callback_keys, _autoresume_uri
    if os.environ.get(TRUST_ENV) != "1":
        os.environ.setdefault(VALIDATION_ENV, f"{__name__}.validate_checkpoint_file")
    outcome: dict[str, Any] = {}
    if dist.get_global_rank() == 0:
        try:
            resumes = None
            if cfg.autoresume and cfg.save_folder:
                folder = format_name_with_dist(cfg.save_folder, cfg.run_name)
                if resumes := repair_latest(folder):
                    uri = f"{folder.rstrip('/')}/{resumes}"
                    outcome.update(loading=f"autoresume checkpoint '{uri}'", autoresume_uri=uri,
                                   callback_keys=_saved_callback_keys(uri))
            if cfg.load_path and resumes is None:  # with a checkpoint to resume, Composer ignores load_path
                check_load_path(cfg.load_path, cfg.run_name, sharded)
                outcome["loading"] = f"load_path '{cfg.load_path}'"
                outcome["callback_keys"] = _saved_callback_keys(_dist_formatted(cfg.load_path, cfg.run_name))
        except UserError as err:
            outcome["error"] = str(err)
    outcome = dist.all_gather_object(outcome)[0]  # every rank raises the same error, none waits forever
    if "error" in outcome:
        raise UserError(outcome["error"])
    _loading, _loading_callback_keys = outcome.get("loading"), outcome.get("callback_keys")
    _autoresume_uri = outcome.get("autoresume_uri")


def trainer_load_arguments(cfg) -> dict[str, Any]:
    """Composer Trainer's `load_path`, `load_weights_only` and `autoresume` for `cfg` (after `prepare_load`).

    With a remote (s3://) save_folder, the checkpoint autoresume resumes (found by prepare_load) is passed
    as `load_path` and Composer's autoresume is off: for full checkpoints, Composer's own takes the URI for
    a local folder, making `s3:/BUCKET/...` in the working directory and downloading `latest` into it."""
    if not (cfg.autoresume and cfg.save_folder and parse_uri(cfg.save_folder)[0]):
        return {"load_path": cfg.load_path, "load_weights_only": cfg.load_weights_only, "autoresume": cfg.autoresume}
    if _autoresume_uri is not None:  # what Composer's autoresume loads: the whole state, not just weights
        return {"load_path": _autoresume_uri, "load_weights_only": False, "autoresume": False}
    return {"load_path": cfg.load_path, "load_weights_only": cfg.load_weights_only, "autoresume": False}


# --- Callbacks -----------------------------------------------------------------------------------------

class ResumeRng(Callback):
    """Restores each rank's RNG state when a run resumes mid-epoch.

    Composer restores the checkpointed RNG state at the start of an epoch or while it replays a loader up
    to the resume point; a loader that resumes itself (StreamingDataset) is not replayed, so a mid-epoch
    resume trains on the reseeded RNG instead (other dropout masks than the uninterrupted run's). The state
    is restored where the uninterrupted run stood: right after the first batch is fetched (creating a loader
    iterator draws from the RNG, which that run had done already), or, if the resumed epoch turns out to be
    finished, at the next epoch's start, before its iterator."""

    def __init__(self):
        self._pending: Optional[list] = None

    def state_dict(self) -> dict[str, Any]:
        # Every rank's state (gathered; DCP keeps rank 0's copy) as one bytes item: a list would be one DCP
        # key per rank, and a resume on more ranks than wrote the checkpoint would miss keys.
        buffer = io.BytesIO()
        torch.save(reproducibility.get_rng_state(), buffer)
        return {"rng": buffer.getvalue()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = safe_torch_load(io.BytesIO(state["rng"]), "the checkpoint's RNG state")

    def fit_start(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch_in_epoch) == 0:
            self._pending = None  # Composer restores it itself at an epoch boundary

    def _restore(self) -> None:
        if self._pending is not None:
            reproducibility.load_rng_state(self._pending)
            self._pending = None

    def epoch_start(self, state: State, logger: Logger) -> None:
        self._restore()

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self._restore()


class ModelRecipe(Callback):
    """Stores the run's `model` and `tokenizer` sections in every checkpoint (as JSON text), so that
    scripts/convert_to_hf.py needs nothing but the checkpoint."""

    def __init__(self, model: dict, tokenizer: dict):
        self.recipe = json.dumps({"model": model, "tokenizer": tokenizer})

    def state_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the recipe of the run that resumes is the one that counts


def callbacks(cfg) -> list[Callback]:
    """The callbacks every run gets from this module (`cfg`: a TrainConfig)."""
    return [ResumeRng(), ModelRecipe(cfg.model, {"name": cfg.tokenizer.name, "kwargs": cfg.tokenizer.kwargs})]


# --- Reading a checkpoint without Composer -------------------------------------------------------------

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
    folder = _Folder(f"s3://{bucket}/{parent}")
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


# --- Conversion to Hugging Face ------------------------------------------------------------------------

def model_from_checkpoint(checkpoint: str, config: Optional[str] = None):
    """(ComposerMPT with the checkpoint's weights, on CPU, in eval mode; the recipe it was built from, a dict
    with `model` and usually `tokenizer`). The sections come from the checkpoint, or from `config` (a run's
    config.yaml) if given; see `read_checkpoint` for what CHECKPOINT may be."""
    from omegaconf import OmegaConf

    from llmtrain import builders

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
    from llmtrain import builders
    from llmtrain.config import TokenizerConfig
    from llmtrain.models.mpt.hf_interop import export_hf

    model, recipe = model_from_checkpoint(checkpoint, config)
    tok = None
    if tokenizer and recipe.get("tokenizer"):
        tok = builders.build_tokenizer(TokenizerConfig(**recipe["tokenizer"]))
    return export_hf(model.model, out_dir, tok, dtype=dtype)
