"""Save folders, a local directory or an S3 prefix: listing, atomic writes, and `repair_latest`.

How Composer 0.32.1 writes a checkpoint into `save_folder` (docs/checkpoints.md has the details):

- sharded (FSDP, `state_dict_type: sharded`): a folder `ep{E}-ba{B}/` of torch DCP files, `__{rank}_0.distcp`
  per rank and `.metadata` (the index, written last: temp file + rename), then rank 0 re-points the symlink
  `latest-rank0.pt` at the folder (remove, then create).
- full (1 rank, or `state_dict_type: full`): `ep{E}-ba{B}-rank0.pt`, one torch.save pickle written in place by
  rank 0, then the symlink.
- object store (`save_folder: s3://...`): the same files saved in a local temp folder and uploaded; rank 0
  uploads `latest-rank0.pt.symlink` (a text object naming the checkpoint) after it has seen all its files.

`repair_latest` makes `latest` name the newest *complete* checkpoint and removes what a crash left of a newer
save (Composer would refuse to save over it).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from composer.utils import maybe_create_object_store_from_uri, parse_uri

from llmtrain.checkpoint.safe import METADATA, read_metadata
from llmtrain.errors import UserError

log = logging.getLogger(__name__)

LATEST = "latest-rank0.pt"  # Composer's save_latest_filename for rank 0; `.symlink` appended in an object store
_CHECKPOINT_NAME = re.compile(r"^ep(\d+)-ba(\d+)(-rank0\.pt)?$")


@dataclass(frozen=True)
class Checkpoint:
    name: str      # "ep0-ba10" (sharded folder) or "ep0-ba10-rank0.pt" (full)
    batch: int

    @property
    def sharded(self) -> bool:
        return not self.name.endswith(".pt")


class Folder:
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


def _incomplete_reason(folder: Folder, ckpt: Checkpoint, files: dict[str, int]) -> Optional[str]:
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
    folder = Folder(save_folder)
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
    return Folder(save_folder).read(name, missing_ok=True)


def write_beside_checkpoints(save_folder: str, name: str, data: Optional[bytes]) -> None:
    """Write (None: delete) file `name` in `save_folder`; checkpoint discovery ignores such files."""
    Folder(save_folder).write(name, data)
