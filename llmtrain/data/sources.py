"""Raw documents for data prep: find input files and read them, naming the file:line of any bad record.

Formats (chosen by file name, after an optional `.gz` / `.zst` suffix, which is decompressed as it is
read: llmtrain/data/decompress.py):
  * `.jsonl`, `.ndjson`, `.json`: JSON lines, one object per line; the document is its --text-field
    (default `text`; a dotted name reaches into nested objects, llmtrain/data/fields.py). Blank lines
    are not records. (`.json` is read as JSON lines because that is how C4 and most pretraining dumps ship.)
  * `.parquet`, `.arrow`: columnar, a batch at a time (llmtrain/data/columnar.py); not compressed outside.
  * anything else: UTF-8 text, the whole file is one document (--filter cannot apply to it).
Directories are walked recursively in sorted order; hidden files and folders (`.name`) are ignored.
A Hugging Face `datasets` folder (`save_to_disk`: a `state.json` beside `data-*.arrow`) is read as
its arrow files in the order its state.json lists; a `DatasetDict` folder must be given one split.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from llmtrain.data.decompress import DECOMPRESSION_ERRORS, open_binary
from llmtrain.data.fields import Selection, keeps, lookup
from llmtrain.data.records import FILTERED, BadRecord, Document, Filtered, Record
from llmtrain.errors import UserError

__all__ = ["BadRecord", "Document", "Filtered", "Record", "Input", "find_inputs", "read_records"]

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")
COLUMNAR_SUFFIXES = (".parquet", ".arrow")
_UNREADABLE = (OSError, zlib.error, UnicodeDecodeError, *DECOMPRESSION_ERRORS)


@dataclass(frozen=True)
class Input:
    """One INPUT argument and the files it stands for, in reading order."""
    name: str
    files: tuple[Path, ...]


def _dataset_files(folder: Path) -> list[Path]:
    """The arrow files of a `save_to_disk` folder, in the order of its state.json."""
    try:
        state = json.loads((folder / "state.json").read_text())
        return [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"INPUT '{folder}': state.json is not a Hugging Face datasets state ({type(err).__name__}: "
                        f"{err}); re-save it with Dataset.save_to_disk") from None


def _check_not_dataset_dict(folder: Path) -> None:
    if (folder / "dataset_dict.json").is_file():
        try:
            splits = ", ".join(json.loads((folder / "dataset_dict.json").read_text())["splits"])
        except (OSError, ValueError, KeyError, TypeError):
            splits = "?"
        raise UserError(f"INPUT '{folder}': a Hugging Face DatasetDict (splits: {splits}); pass one split's "
                        f"folder, e.g. {folder / 'train'}")


def _walk(root: Path) -> list[Path]:
    found: list[tuple[Path, list[Path]]] = []  # (sort key, files in reading order)
    for here, dirs, names in os.walk(root, followlinks=True):
        here_path = Path(here)
        _check_not_dataset_dict(here_path)
        if "state.json" in names:  # a datasets folder: its arrow files, not its metadata
            found.append((here_path, _dataset_files(here_path)))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [(here_path / n, [here_path / n]) for n in names if not n.startswith(".")]
    return [path for _, files in sorted(found) for path in files]


def find_inputs(inputs: Sequence[str]) -> list[Input]:
    """Every input with its files, in argument order with directories expanded (sorted, recursive)."""
    if not inputs:
        raise UserError("INPUT: no input given; pass text/.jsonl/.parquet files or directories")
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = _walk(path)
        elif path.exists() or path.is_symlink():
            files = [path]
        else:
            raise UserError(f"INPUT '{item}': no such file or directory; check the path")
        found.append(Input(item, tuple(files)))
    if not any(i.files for i in found):
        raise UserError(f"INPUT: no input files found in {', '.join(inputs)} (hidden files are ignored); "
                        f"pass directories that contain text, .jsonl or .parquet files")
    return found


def _base_suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in (".gz", ".zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return Path(name).suffix


def _describe(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
    if isinstance(err, OSError) and err.strerror:
        return f"cannot read ({err.strerror})"
    if isinstance(err, (zlib.error, *DECOMPRESSION_ERRORS)):
        return f"corrupt or truncated compressed file ({err})"
    return f"cannot read ({type(err).__name__}: {err})"


def _json_lines(path: Path, stream: BinaryIO, selection: Selection) -> Iterator[Record]:
    hint = " (.json files are read as JSON lines: one object per line)" if _base_suffix(path) == ".json" else ""
    field = selection.text_field
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
            yield BadRecord(where, f"expected a JSON object with a '{field}' field, got {type(obj).__name__}")
            continue
        if selection.filters:
            kept, why = keeps(obj, selection.filters)
            if why:
                yield BadRecord(where, why)
                continue
            if not kept:
                yield FILTERED
                continue
        text, missing = lookup(obj, field)
        if missing:
            yield BadRecord(where, f"{missing}; --text-field NAME reads another field")
        elif not isinstance(text, str):
            yield BadRecord(where, f"'{field}' must be a string, got {type(text).__name__}")
        else:
            yield Document(text, where)


def read_records(path: Path, selection: Selection = Selection()) -> Iterator[Record]:
    """The documents of one file, FILTERED for each record --filter drops, and a BadRecord for each
    record (or the file) that is unusable."""
    suffix = _base_suffix(path)
    if suffix in COLUMNAR_SUFFIXES and suffix != path.suffix.lower():
        yield BadRecord(str(path), f"a compressed {suffix} file cannot be read a batch at a time; decompress it "
                                   f"first", whole_file=True)
        return
    if suffix not in JSON_LINES_SUFFIXES + COLUMNAR_SUFFIXES and selection.filters:
        yield BadRecord(str(path), "a plain text file has no fields for --filter (it needs JSON lines, parquet "
                                   "or arrow input)", whole_file=True)
        return
    try:
        if suffix in COLUMNAR_SUFFIXES:
            from llmtrain.data.columnar import read_arrow, read_parquet  # pyarrow only when it is needed
            yield from (read_parquet if suffix == ".parquet" else read_arrow)(path, selection)
        else:
            with open_binary(path) as stream:
                if suffix in JSON_LINES_SUFFIXES:
                    yield from _json_lines(path, stream, selection)
                else:
                    yield Document(stream.read().decode("utf-8"), str(path))
    except _UNREADABLE as err:
        # Unreadable, not UTF-8, or corrupt compression: the rest of this file is unusable.
        yield BadRecord(str(path), _describe(err), whole_file=True)
