"""The module graph: destinations, their parsing and the config-time graph checks.

A destination is a string (spec section 3): a module ``code``; ``ext:1001``;
``queue:support``; ``transfer:EXT[:CONTEXT]``; ``hangup[:CAUSE]``.
Pure functions only: no I/O here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsapp.config import Config
    from fsapp.modules import Kind

CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
EXT_RE = re.compile(r"[A-Za-z0-9_.+-]{1,40}")
CAUSE_RE = re.compile(r"[A-Z_]{3,40}")
CONTEXT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

TERMINAL_KINDS = ("ext", "queue", "transfer", "hangup")


@dataclass(frozen=True, slots=True)
class Dest:
    kind: str  # module | ext | queue | transfer | hangup
    value: str = ""
    context: str = ""

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS

    def __str__(self) -> str:
        if self.kind == "module":
            return self.value
        if self.kind == "hangup":
            return f"hangup:{self.value}" if self.value else "hangup"
        if self.kind == "transfer" and self.context:
            return f"transfer:{self.value}:{self.context}"
        return f"{self.kind}:{self.value}"


def parse_dest(text: str) -> Dest:
    """Parse a destination string; ValueError says what is wrong with it."""
    if not isinstance(text, str) or not text:
        raise ValueError("empty destination")
    return _parse_dest(text)


# A call parses its modules' destinations at every hop: the same few strings, and a
# Dest is immutable. Bounded, since destinations can also come from the CRM.
@functools.lru_cache(maxsize=1024)
def _parse_dest(text: str) -> Dest:
    head, sep, rest = text.partition(":")
    if not sep:
        if text == "hangup":
            return Dest("hangup", "NORMAL_CLEARING")
        if CODE_RE.fullmatch(text):
            return Dest("module", text)
        raise ValueError(f"{text!r} is not a module code or a destination")
    if head == "hangup":
        if not CAUSE_RE.fullmatch(rest):
            raise ValueError(f"{text!r}: hangup cause must be like NORMAL_CLEARING")
        return Dest("hangup", rest)
    if head == "ext":
        if not EXT_RE.fullmatch(rest):
            raise ValueError(f"{text!r}: extension may hold letters, digits and _ . + - only")
        return Dest("ext", rest)
    if head == "queue":
        if not EXT_RE.fullmatch(rest):
            raise ValueError(f"{text!r}: queue name may hold letters, digits and _ . + - only")
        return Dest("queue", rest)
    if head == "transfer":
        ext, _, context = rest.partition(":")
        if not EXT_RE.fullmatch(ext) or (context and not CONTEXT_RE.fullmatch(context)):
            raise ValueError(f"{text!r}: must be transfer:EXT or transfer:EXT:CONTEXT")
        return Dest("transfer", ext, context)
    raise ValueError(f"{text!r}: unknown destination type {head!r} (ext, queue, transfer, hangup)")


def check_graph(cfg: Config, kinds: Mapping[str, Kind]) -> list[str]:
    """Unknown codes, bad destinations, and modules from which no call can ever leave.

    ``kinds`` is the table of module kinds (``fsapp.modules.KINDS``): their schemas
    say which keys are destinations, and which kinds bridge the call themselves.
    """
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    exits: set[str] = set()  # modules with a terminal destination

    def resolve(where: str, text: str) -> Dest | None:
        try:
            d = parse_dest(text)
        except ValueError as exc:
            problems.append(f"{cfg.file}:{where}: {exc}")
            return None
        if d.kind == "module" and d.value not in cfg.modules:
            problems.append(f"{cfg.file}:{where}: unknown module code {d.value!r}")
            return None
        return d

    for code, m in cfg.modules.items():
        edges[code] = set()
        for key, text in m.destinations(kinds[m.kind].schema):
            if not text:
                continue
            d = resolve(f"{m.where}.{key}", text)
            if d is None:
                continue
            if d.kind == "module":
                edges[code].add(d.value)
            else:
                exits.add(code)
        if kinds[m.kind].bridges:
            exits.add(code)  # the module hands the call to FreeSWITCH itself
    if cfg.entry.default:
        resolve("entry.default", cfg.entry.default)
    for key in ("overflow", "on_storage_failure"):
        text = getattr(cfg.entry, key)
        if text:
            d = resolve(f"entry.{key}", text)
            if d is not None and not d.terminal:
                problems.append(f"{cfg.file}:entry.{key}: must be ext:, queue:, transfer: or hangup")
    fb = resolve("dial.fallback", cfg.dial.fallback)
    if fb is not None and fb.kind in ("ext", "queue"):
        problems.append(f"{cfg.file}:dial.fallback: must be a module, transfer: or hangup (not another bridge)")

    # A module can leave the graph if it, or a module it reaches, has a terminal exit.
    can_leave = set(exits)
    changed = True
    while changed:
        changed = False
        for code, targets in edges.items():
            if code not in can_leave and targets & can_leave:
                can_leave.add(code)
                changed = True
    for code, m in cfg.modules.items():
        if code not in can_leave:
            problems.append(
                f"{cfg.file}:{m.where}: module {code!r} loops without ever reaching FreeSWITCH or a hangup"
            )
    return problems
