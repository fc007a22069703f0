"""Typed YAML sections: turn a plain dict into a dataclass, or say in one line what is wrong.

`parse_section(MyConfig, data, 'train_loader.dataset')` checks every key against the dataclass
fields (unknown key → the closest valid one), required fields, and value types, recursing into
nested dataclasses, and names the dotted key in every error.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, Union

from llmtrain.errors import UserError, closest

Duration = Union[int, str]  # Composer time strings: '10ba', '1ep', '1000tok', or an int of batches


def check_keys(data: Mapping, allowed, key: str) -> None:
    """Raise for the first key of `data` not in `allowed`, naming the closest allowed key."""
    for k in data:
        if k not in allowed:
            where = f"{key}.{k}" if key else str(k)
            raise UserError(f"{where}: unknown key{closest(k, allowed)}; "
                            f"valid keys here: {', '.join(sorted(allowed))}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    """`value` checked (and, for nested dataclasses, parsed) against annotation `tp`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except UserError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise UserError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{key}: '{value}' is not allowed{closest(value, choices)}; "
                            f"choose one of: {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise UserError(f"{key}: expected a mapping (key: value lines), got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if args:
            return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin or tp) is tuple else out
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def parse_section(cls, data: Any, key: str):
    """An instance of dataclass `cls` from mapping `data`; `key` is its dotted YAML path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserError(f"{key or 'config'}: expected a mapping (key: value lines), "
                        f"got {type(data).__name__} {data!r}")
    # a field with metadata {"yaml": False} is the program's, not a key a recipe may set
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get("yaml", True)}
    check_keys(data, fields, key)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        where = f"{key}.{name}" if key else name
        if name in data:
            values[name] = _coerce(data[name], hints[name], where)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UserError(f"{where}: required key is missing; add it to the YAML or pass {where}=... on the command line")
    return cls(**values)
