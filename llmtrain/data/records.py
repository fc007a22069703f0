"""What a reader yields for each record of an input file: a document, a record the filters drop, or a bad one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Document:
    text: str
    where: str  # "file", "file:line" or "file: row N", for messages


@dataclass(frozen=True)
class Filtered:
    """A record that --filter leaves out: counted, not an error."""


@dataclass(frozen=True)
class BadRecord:
    """A record (line, row, or whole file) that cannot become a document."""
    where: str
    reason: str
    whole_file: bool = False


FILTERED = Filtered()
Record = Union[Document, Filtered, BadRecord]
