"""Which field of a record is the document, and which records are kept: `--text-field` and `--filter`.

A field name is looked up as written first; if no field has that name, a dotted name walks nested
objects (JSON) or struct columns (parquet / arrow): `content.text` is `record["content"]["text"]`.
`--filter COLUMN=VALUE[,VALUE]` keeps the records whose COLUMN equals one of the values; several
filters must all hold. Values are compared as text: strings as they are, numbers as JSON writes
them, booleans as `true` / `false`; a null never matches.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from llmtrain.errors import UserError


@dataclass(frozen=True)
class Filter:
    field: str
    values: frozenset[str]

    def __str__(self) -> str:
        return f"{self.field}={','.join(sorted(self.values))}"


@dataclass(frozen=True)
class Selection:
    """--text-field and --filter, as every reader applies them."""
    text_field: str = "text"
    filters: tuple[Filter, ...] = ()

    @property
    def fields(self) -> list[str]:
        return [self.text_field, *(f.field for f in self.filters)]


def parse_filters(specs: Sequence[str]) -> tuple[Filter, ...]:
    filters = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        chosen = frozenset(v for v in values.split(",") if v)
        if not sep or not name.strip() or not chosen:
            raise UserError(f"--filter '{spec}': expected COLUMN=VALUE[,VALUE...], e.g. --filter lang=Python,Go")
        filters.append(Filter(name.strip(), chosen))
    return tuple(filters)


def make_selection(text_field: str = "text", filters: Sequence[str] = ()) -> Selection:
    if not text_field or text_field.startswith(".") or text_field.endswith(".") or ".." in text_field:
        raise UserError(f"--text-field '{text_field}': expected a field name or a dotted path, e.g. content.text")
    return Selection(text_field, parse_filters(filters))


def path_of(name: str, present: Sequence[str]) -> list[str]:
    """The keys to follow for `name`: itself when a top-level key has that name, else its dotted parts."""
    return [name] if name in present else name.split(".")


def lookup(record: dict, name: str) -> tuple[Any, Optional[str]]:
    """(value, None), or (None, why it is missing) naming the keys that are there."""
    value: Any = record
    walked = []
    for key in path_of(name, record):
        if not isinstance(value, dict) or key not in value:
            where = f"'{'.'.join(walked)}' is {type(value).__name__}" if not isinstance(value, dict) else \
                f"keys{' of ' + repr('.'.join(walked)) if walked else ''}: {', '.join(list(value)[:12]) or 'none'}"
            return None, f"no '{name}' field ({where})"
        value = value[key]
        walked.append(key)
    return value, None


def as_text(value: Any) -> Optional[str]:
    """A field value as --filter compares it."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def keeps(record: dict, filters: tuple[Filter, ...]) -> tuple[bool, Optional[str]]:
    """(kept, None), or (False, why the filter cannot be applied) when a filter field is missing."""
    for f in filters:
        value, missing = lookup(record, f.field)
        if missing:
            return False, f"{missing} for --filter"
        if as_text(value) not in f.values:
            return False, None
    return True, None
