"""Raw documents for data prep: find input files and read them, naming the file:line of any bad record.

Formats (chosen by file name, after an optional `.gz` / `.zst` suffix):
  * `.jsonl`, `.ndjson`, `.json`: JSON lines, one object per line; the document is its `text` field.
    Blank lines are not records. (`.json` is read as JSON lines because that is how C4 and most
    pretraining dumps ship.)
  * anything else: UTF-8 text, the whole file is one document.
Directories are walked recursively in sorted order; hidden files and folders (`.name`) are ignored.
A `.zst` file is decompressed whole in memory (no streaming zstd decoder is installed), so split
very large `.zst` dumps first.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence, Union

import cramjam

from llmtrain.errors import UserError

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class Document:
    text: str
    where: str  # "file" or "file:line", for messages


@dataclass(frozen=True)
class BadRecord:
    """A record (line, or whole file) that cannot become a document."""
    where: str
    reason: str
    whole_file: bool = False


Record = Union[Document, BadRecord]


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def find_input_files(inputs: Sequence[str]) -> list[Path]:
    """Every input file, in argument order with directories expanded (sorted, recursive)."""
    if not inputs:
        raise UserError("INPUT: no input given; pass text/.jsonl files or directories")
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(root) / n for n in names if not n.startswith(".")]
            files += sorted(found)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise UserError(f"INPUT '{item}': no such file or directory; check the path")
    if not files:
        raise UserError(f"INPUT: no input files found in {', '.join(inputs)} (hidden files are ignored); "
                        f"pass directories that contain text or .jsonl files")
    return files


def _base_suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in (".gz", ".zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return Path(name).suffix


def _open_binary(path: Path) -> BinaryIO:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        with open(path, "rb") as f:
            return io.BytesIO(bytes(cramjam.zstd.decompress(f.read())))
    return open(path, "rb")


def _describe(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
    if isinstance(err, OSError) and err.strerror:
        return f"cannot read ({err.strerror})"
    if isinstance(err, (EOFError, zlib.error, cramjam.DecompressionError)):
        return f"corrupt or truncated compressed file ({err})"
    return f"cannot read ({type(err).__name__}: {err})"


def _json_lines(path: Path, stream: BinaryIO) -> Iterator[Record]:
    hint = " (.json files are read as JSON lines: one object per line)" if _base_suffix(path) == ".json" else ""
    for lineno, raw in enumerate(stream, start=1):
        where = f"{path}:{lineno}"
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except UnicodeDecodeError as err:
            yield BadRecord(where, _describe(err))
            continue
        except json.JSONDecodeError as err:
            yield BadRecord(where, f"not valid JSON ({err.msg.removesuffix(' at')} at column {err.colno}){hint}")
            continue
        if not isinstance(obj, dict):
            yield BadRecord(where, f"expected a JSON object with a 'text' field, got {type(obj).__name__}")
        elif "text" not in obj:
            keys = ", ".join(list(obj)[:8]) or "none"
            yield BadRecord(where, f"no 'text' field (keys: {keys})")
        elif not isinstance(obj["text"], str):
            yield BadRecord(where, f"'text' must be a string, got {type(obj['text']).__name__}")
        else:
            yield Document(obj["text"], where)


def read_records(path: Path) -> Iterator[Record]:
    """The documents of one file, and a BadRecord for each line (or the file) that is unusable."""
    try:
        with _open_binary(path) as stream:
            if _base_suffix(path) in JSON_LINES_SUFFIXES:
                yield from _json_lines(path, stream)
            else:
                yield Document(stream.read().decode("utf-8"), str(path))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, cramjam.DecompressionError) as err:
        # Unreadable, not UTF-8, or corrupt compression: the rest of this file is unusable.
        yield BadRecord(str(path), _describe(err), whole_file=True)
