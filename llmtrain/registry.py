"""Registries: a YAML `name:` picks a builder.

Components register where they are defined (`models.register('mpt_causal_lm', build, validate)`),
and `llmtrain.builders` is the one place that looks them up. A registry entry may carry a
`validate(section, key)` that checks its YAML section up front, before anything is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from llmtrain.errors import UserError, closest


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable[..., Any]
    validate: Optional[Callable[[dict, str], None]] = None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, build: Callable[..., Any], validate=None) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = Entry(name, build, validate)

    def register_typed(self, name: str, config_cls, make: Callable[..., Any]) -> None:
        """Register a component whose YAML section is the dataclass `config_cls`:
        `build(section, *args)` calls `make(parsed_config, *args)`; validation comes for free."""
        from llmtrain.schema import parse_section

        def build(section: dict, *args):
            return make(parse_section(config_cls, section, self.kind), *args)

        def validate(section: dict, key: str) -> None:
            parse_section(config_cls, section, key)

        self.register(name, build, validate)

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
