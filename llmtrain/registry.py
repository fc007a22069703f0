"""Registries: a YAML `name:` picks a builder.

Every component registers itself, at the bottom of the module that defines it, one way:

    callbacks.register("speed_monitor", SpeedMonitorConfig, lambda cfg: SpeedMonitor(**vars(cfg)))

`schema` is the YAML section's shape: a dataclass (read with `schema.parse_section`, so every key, type and
default is checked) or a function `parse(section, key)` returning the checked section (for sections with
relations between keys). `make(parsed, *args)` builds the component. `llmtrain.builders` imports each
component module and is the one place that looks them up; `builders.validate(cfg)` checks every section
up front, before anything is built.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from llmtrain.errors import UserError, closest
from llmtrain.schema import parse_section


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    parse: Callable[[dict, str], Any]
    make: Callable[..., Any]

    def validate(self, section: dict, key: str) -> None:
        """Raise UserError (naming the dotted `key`) for any mistake in `section`; builds nothing."""
        self.parse(section, key)

    def build(self, section: dict, *args, key: str | None = None, **kwargs):
        """The component for `section` (without `name`); `key` is its YAML key, for errors (default: the kind)."""
        return self.make(self.parse(section, key or self.kind), *args, **kwargs)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, schema, make: Callable[..., Any]) -> None:
        """Register component `name`: `schema` a dataclass or `parse(section, key)`; `make(parsed, *args)`."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        if dataclasses.is_dataclass(schema):
            cls = schema

            def parse(section: dict, key: str):
                return parse_section(cls, section, key)
        else:
            parse = schema
        self._entries[name] = Entry(name, self.kind, parse, make)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: Any, key: str) -> Entry:
        """The entry for `name`; `key` is the dotted YAML key that named it, for the error."""
        if name not in self._entries:
            raise UserError(
                f"{key}: unknown {self.kind} '{name}'{closest(name, self._entries)}; "
                f"choose one of: {', '.join(self.names())}")
        return self._entries[name]


models = Registry("model")
dataloaders = Registry("dataloader")
optimizers = Registry("optimizer")
schedulers = Registry("scheduler")
algorithms = Registry("algorithm")
callbacks = Registry("callback")
loggers = Registry("logger")
