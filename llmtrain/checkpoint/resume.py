"""What a run loads before it trains: one `ResumePlan`, made once, on every rank, before anything is built.

`resume_plan(cfg)` looks on rank 0 only and broadcasts what it found (or the same UserError to every rank):
with `autoresume`, it repairs save_folder (`folder.repair_latest`: `latest` names the newest complete
checkpoint) and takes that checkpoint; otherwise `load_path`. The plan says what is loaded and its format
(`source`: the parallelism builder checks it against fsdp_config), the arguments Composer's Trainer gets
(`trainer_load_arguments`), and the `state.callbacks.*` keys of a sharded checkpoint (callbacks that gained
state later leave theirs out while it loads: llmtrain/checkpoint/callbacks.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from composer.utils import (dist, format_name_with_dist, maybe_create_object_store_from_uri, parse_uri,
                            partial_format)

from llmtrain.checkpoint.folder import Folder, repair_latest
from llmtrain.checkpoint.safe import METADATA, read_metadata
from llmtrain.errors import UserError

# Schemes Composer 0.32.1 can load from (composer.utils.maybe_create_object_store_from_uri).
LOAD_SCHEMES = {"s3": "s3://", "gs": "gs://", "oci": "oci://", "dbfs": "dbfs:/"}


@dataclass(frozen=True)
class ResumeSource:
    """The checkpoint a run starts from: `where` names it for messages, `sharded` is its format (a DCP
    folder, written with FSDP sharded state dicts, or one full .pt file)."""
    where: str
    sharded: bool


@dataclass(frozen=True)
class LoadPathKind:
    """What `load_path` names: a file, a folder, a folder with a DCP index."""
    exists_file: bool
    exists_dir: bool
    is_dir: bool


@dataclass(frozen=True)
class ResumePlan:
    load_path: Optional[str] = None          # the run's load_path (Composer ignores it when autoresume resumes)
    source: Optional[ResumeSource] = None    # what is loaded, and its format; None: a fresh start (or unknown)
    loading: Optional[str] = None            # it, as messages name it ("load_path '...'")
    autoresume_uri: Optional[str] = None     # the checkpoint autoresume found in save_folder
    callback_keys: Optional[tuple[str, ...]] = None  # `state.callbacks.*` keys of the sharded checkpoint loaded
    load_path_kind: Optional[LoadPathKind] = None    # to check load_path against the run's format
    error: Optional[str] = None              # a load_path problem, raised by `check_load` (after the FSDP checks)

    def check_load(self, sharded: bool) -> None:
        """UserError unless load_path (when it is what the run loads) fits a run that loads DCP folders
        (`sharded`: FSDP with state_dict_type sharded) or full files."""
        if self.error is not None:
            raise UserError(self.error)
        if self.load_path_kind is not None:
            _judge_load_path(self.load_path, self.load_path_kind, sharded)


def _dist_formatted(path: str, run_name: str) -> str:
    # What Composer loads on rank 0: {run_name} and the rank placeholders filled in.
    return partial_format(path, run_name=run_name, rank=0, local_rank=0, node_rank=0)


def _load_path_format(load_path: str, run_name: str) -> Optional[bool]:
    """True for a sharded checkpoint, False for a full file, None when it cannot be told (a missing path:
    `check_load` reports it)."""
    path = format_name_with_dist(load_path, run_name)
    backend, _, key = parse_uri(path)
    if not backend:
        return True if Path(path).is_dir() else False if Path(path).is_file() else None
    try:
        keys = maybe_create_object_store_from_uri(path).list_objects(key.rstrip("/"))
    except Exception:  # no such bucket, no credentials, a scheme without listing: reported when loading
        return None
    name = key.rstrip("/")
    if f"{name}/{METADATA}" in keys:
        return True
    return False if name in keys else None


def inspect_load_path(load_path: str, run_name: str) -> Optional[LoadPathKind]:
    """What `load_path` names (None: a scheme Composer reports a missing object for itself); a UserError
    for a scheme Composer cannot load, or an object store that cannot be listed."""
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
        exists_dir = any(k.startswith(name + "/") for k in keys)
        return LoadPathKind(name in keys or f"{name}.symlink" in keys, exists_dir,
                            exists_dir and f"{name}/{METADATA}" in keys)
    if backend:
        return None  # gs/oci/dbfs: Composer reports a missing object itself
    target = Path(path)
    exists_dir = target.is_dir()
    return LoadPathKind(target.is_file(), exists_dir, exists_dir and (target / METADATA).is_file())


def _judge_load_path(load_path: str, kind: LoadPathKind, sharded: bool) -> None:
    if not (kind.exists_file or kind.exists_dir):
        raise UserError(f"load_path: '{load_path}' does not exist; point it at a checkpoint: a sharded folder "
                        "(ep{E}-ba{B}/) or a full file (ep{E}-ba{B}-rank0.pt) in a run's save_folder")
    if kind.exists_dir and not kind.is_dir:
        raise UserError(f"load_path: '{load_path}' is a folder without {METADATA}, not a sharded checkpoint; "
                        "point it at an ep{E}-ba{B}/ folder (or a .pt file)")
    if kind.is_dir and not sharded:
        raise UserError(f"load_path: '{load_path}' is a sharded checkpoint, which only FSDP loads: set fsdp_config "
                        "(e.g. fsdp_config: {}, any number of ranks), or export its weights with "
                        "scripts/convert_to_hf.py")
    if kind.exists_file and sharded:
        raise UserError(f"load_path: '{load_path}' is a full (single-file) checkpoint; to load it on several ranks "
                        "set fsdp_config.state_dict_type: full")


def check_load_path(load_path: str, run_name: str, sharded: bool) -> None:
    """UserError naming load_path unless it is a checkpoint Composer can load into this run (`sharded`:
    the run loads DCP folders, i.e. FSDP with state_dict_type sharded)."""
    kind = inspect_load_path(load_path, run_name)
    if kind is not None:
        _judge_load_path(load_path, kind, sharded)


def saved_callback_keys(uri: str) -> Optional[tuple[str, ...]]:
    """The `state.callbacks.*` DCP keys of the sharded checkpoint at `uri` (local or s3://); None for a full
    checkpoint, or where they cannot be read (Composer reports that when it loads)."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    if parse_uri(uri)[0] not in ("", "s3") or name.endswith(".pt"):
        return None
    data = Folder(parent).read(f"{name}/{METADATA}", missing_ok=True)
    if data is None:
        return None
    try:
        metadata = read_metadata(data, uri)
    except UserError:  # refused or unreadable here: Composer's load reports it (or reads it, if trusted)
        return None
    return tuple(sorted(k for k in metadata.state_dict_metadata if k.startswith("state.callbacks.")))


def _autoresume_plan(cfg) -> Optional[ResumePlan]:
    """The plan when autoresume finds a complete checkpoint in save_folder (repaired first), else None."""
    if not (cfg.autoresume and cfg.save_folder):
        return None
    folder = format_name_with_dist(cfg.save_folder, cfg.run_name).rstrip("/")
    name = repair_latest(folder)
    if name is None:
        return None
    uri = f"{folder}/{name}"
    try:
        keys, error = saved_callback_keys(uri), None
    except UserError as err:
        keys, error = None, str(err)
    return ResumePlan(cfg.load_path, ResumeSource(f"autoresume's {uri}", not name.endswith(".pt")),
                      f"autoresume checkpoint '{uri}'", uri, keys, error=error)


def _load_path_plan(cfg) -> ResumePlan:
    sharded = _load_path_format(cfg.load_path, cfg.run_name)
    source = ResumeSource(f"load_path {cfg.load_path}", sharded) if sharded is not None else None
    try:
        kind = inspect_load_path(cfg.load_path, cfg.run_name)
        keys = saved_callback_keys(_dist_formatted(cfg.load_path, cfg.run_name))
    except UserError as err:
        return ResumePlan(cfg.load_path, source, error=str(err))
    return ResumePlan(cfg.load_path, source, f"load_path '{cfg.load_path}'", None, keys, kind)


def resume_plan(cfg) -> ResumePlan:
    """The plan of `cfg` (a TrainConfig); call on every rank after dist init, before anything is built."""
    found: dict[str, Any] = {}
    if dist.get_global_rank() == 0:
        try:
            plan = _autoresume_plan(cfg)
            if plan is None and cfg.load_path:  # with a checkpoint to resume, Composer ignores load_path
                plan = _load_path_plan(cfg)
            found["plan"] = plan or ResumePlan(cfg.load_path)
        except UserError as err:
            found["error"] = str(err)
    found = dist.all_gather_object(found)[0]  # every rank raises the same error, none waits forever
    if "error" in found:
        raise UserError(found["error"])
    return found["plan"]


def trainer_load_arguments(cfg, plan: ResumePlan) -> dict[str, Any]:
    """Composer Trainer's `load_path`, `load_weights_only` and `autoresume` for `cfg` and its `plan`.

    With a remote (s3://) save_folder, the checkpoint autoresume resumes is passed as `load_path` and
    Composer's autoresume is off: for full checkpoints, Composer's own takes the URI for a local folder,
    making `s3:/BUCKET/...` in the working directory and downloading `latest` into it."""
    if not (cfg.autoresume and cfg.save_folder and parse_uri(cfg.save_folder)[0]):
        return {"load_path": cfg.load_path, "load_weights_only": cfg.load_weights_only, "autoresume": cfg.autoresume}
    if plan.autoresume_uri is not None:  # what Composer's autoresume loads: the whole state, not just weights
        return {"load_path": plan.autoresume_uri, "load_weights_only": False, "autoresume": False}
    return {"load_path": cfg.load_path, "load_weights_only": cfg.load_weights_only, "autoresume": False}
