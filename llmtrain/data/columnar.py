"""Parquet and Arrow inputs, read a batch at a time: only the columns that --text-field and --filter name.

  * `.parquet`: row group by row group (`ParquetFile.read_row_group`), never the whole file; The
    Stack ships this way (`content`, `lang`, ...).
  * `.arrow`: Arrow IPC, the stream format that Hugging Face `datasets` writes with `save_to_disk` (and
    in its cache), or the random-access file format; read through a plain file, not a memory map,
    so resident memory is one record batch, not the file.
A missing or non-text column, or a file pyarrow cannot read, is one BadRecord for the whole file
(naming the columns it does have); a null text is a BadRecord for that row. Imported only when such
an input is read: pyarrow costs ~50 MB of resident memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmtrain.data.fields import Selection, path_of
from llmtrain.data.records import FILTERED, BadRecord, Document, Record

_BATCH_ROWS = 1024


def _resolve(schema: pa.Schema, name: str) -> Union[list[str], str]:
    """The column and struct fields to follow for `name`, or why it is not there."""
    columns = schema.names
    parts = path_of(name, columns)
    if parts[0] not in columns:
        return f"no column '{name}' (columns: {', '.join(columns[:12])})"
    kind = schema.field(parts[0]).type
    for depth, key in enumerate(parts[1:], start=1):
        if not pa.types.is_struct(kind) or kind.get_field_index(key) < 0:
            parent = ".".join(parts[:depth])
            have = f"has fields: {', '.join(kind.field(i).name for i in range(kind.num_fields))}" \
                if pa.types.is_struct(kind) else f"is {kind}"
            return f"no field '{name}' (column '{parent}' {have})"
        kind = kind.field(key).type
    return parts


def _column(batch: pa.RecordBatch, parts: list[str]) -> pa.Array:
    array = batch.column(parts[0])
    for key in parts[1:]:
        array = pc.struct_field(array, key)
    return array


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _check(path: Path, schema: pa.Schema, selection: Selection) -> Union[dict[str, list[str]], BadRecord]:
    resolved = {}
    for name in selection.fields:
        parts = _resolve(schema, name)
        if isinstance(parts, str):
            hint = "pass --text-field NAME" if name == selection.text_field else "check --filter"
            return BadRecord(str(path), f"{parts}; {hint}", whole_file=True)
        resolved[name] = parts
    text_parts = resolved[selection.text_field]
    kind = schema.field(text_parts[0]).type
    for key in text_parts[1:]:
        kind = kind.field(key).type
    if not _is_text(kind):
        return BadRecord(str(path), f"column '{selection.text_field}' is {kind}, not text; pass --text-field "
                                    f"NAME of a string column", whole_file=True)
    return resolved


def _records(path: Path, batches: Iterable[pa.RecordBatch], resolved: dict[str, list[str]],
             selection: Selection) -> Iterator[Record]:
    row = 0
    for batch in batches:
        keep: Optional[pa.Array] = None
        for f in selection.filters:
            values = pc.cast(_column(batch, resolved[f.field]), pa.string())
            match = pc.fill_null(pc.is_in(values, value_set=pa.array(sorted(f.values), pa.string())), False)
            keep = match if keep is None else pc.and_(keep, match)
        texts = _column(batch, resolved[selection.text_field]).to_pylist()
        kept = keep.to_pylist() if keep is not None else None
        for i, text in enumerate(texts):
            if kept is not None and not kept[i]:
                yield FILTERED
            elif text is None:
                yield BadRecord(f"{path}: row {row + i}", f"'{selection.text_field}' is null")
            else:
                yield Document(text, f"{path}: row {row + i}")
        row += len(texts)


def _unreadable(path: Path, err: Exception) -> BadRecord:
    return BadRecord(str(path), f"not a readable parquet / arrow file ({err})", whole_file=True)


def read_parquet(path: Path, selection: Selection) -> Iterator[Record]:
    try:
        yield from _parquet(path, selection)
    except pa.ArrowException as err:
        yield _unreadable(path, err)


def read_arrow(path: Path, selection: Selection) -> Iterator[Record]:
    try:
        yield from _arrow(path, selection)
    except pa.ArrowException as err:
        yield _unreadable(path, err)


def _parquet(path: Path, selection: Selection) -> Iterator[Record]:
    with pq.ParquetFile(path, memory_map=False) as parquet:
        resolved = _check(path, parquet.schema_arrow, selection)
        if isinstance(resolved, BadRecord):
            yield resolved
            return
        columns = sorted({parts[0] for parts in resolved.values()})
        # One row group at a time, each freed before the next (iter_batches' read-ahead kept growing
        # on a 500 MB file: docs/performance.md, P8).
        batches = (batch for group in range(parquet.num_row_groups)
                   for batch in parquet.read_row_group(group, columns=columns).to_batches(max_chunksize=_BATCH_ROWS))
        yield from _records(path, batches, resolved, selection)


def _arrow_batches(source: pa.NativeFile) -> tuple[pa.Schema, Iterable[pa.RecordBatch]]:
    try:
        reader = pa.ipc.open_stream(source)
        return reader.schema, reader
    except pa.ArrowInvalid:  # not the stream format: try the random-access file format
        source.seek(0)
        file_reader = pa.ipc.open_file(source)
        return file_reader.schema, (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))


def _arrow(path: Path, selection: Selection) -> Iterator[Record]:
    with pa.OSFile(str(path)) as source:
        schema, batches = _arrow_batches(source)
        resolved = _check(path, schema, selection)
        if isinstance(resolved, BadRecord):
            yield resolved
            return
        yield from _records(path, batches, resolved, selection)

