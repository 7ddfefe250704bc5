"""The schema of a module kind's own keys, and one module's configuration.

A leaf: it imports nothing of fsapp, so the module kinds (``fsapp/modules/``) and
the config loader (``fsapp.config``) both build on it without depending on each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Opt:
    """One kind-specific module key: its type, default and role."""

    type: type | tuple[type, ...]
    default: Any = None
    role: str = "plain"  # plain | prompt | dest | destmap | destlist
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    required: bool = False
    maximum: float | None = None


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def field_name(key: str, value: str) -> list[str]:
    """A problem if ``value`` (a CRM field the module names, e.g. ``invoice_search_field``) is no field name."""
    if value and not _FIELD_NAME.fullmatch(value):
        return [f"{key}: {value!r} must be a CRM field name (letters, digits, _)"]
    return []


def prompt(default: str = "") -> Opt:
    return Opt(str, default, "prompt")


def dest(required: bool = False) -> Opt:
    return Opt(str, "", "dest", required=required)


@dataclass(frozen=True)
class ModuleConfig:
    code: str
    name: str
    kind: str
    enabled: bool
    next: str
    error: str
    record: bool
    options: Mapping[str, Any]
    where: str  # "file:modules[3]" for messages

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def destinations(self, schema: Mapping[str, Opt]) -> list[tuple[str, str]]:
        """(key, destination) pairs: next, error and every destination option."""
        out = [("next", self.next), ("error", self.error)]
        for key, opt in schema.items():
            value = self.options[key]
            if opt.role == "dest" and value:
                out.append((key, value))
            elif opt.role == "destmap":
                out.extend((f"{key}.{k}", v) for k, v in value.items())
            elif opt.role == "destlist":
                out.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        return out
