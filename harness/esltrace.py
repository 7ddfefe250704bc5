"""Reader for the event-socket wire transcripts in ``shared/esl``.

A transcript is a few ``#`` lines and a blank line, then blocks.  Each block is a
marker line; ``SENT`` and ``RECV`` markers give a byte count ``n`` and are followed
by exactly ``n`` bytes and one ``\\n`` added by the capture.  ``EOF``, ``QUIET`` and
``CLOSE`` markers are one line and carry no bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_DATA_MARKER = re.compile(rb"^(>>>>>>>> SENT|<<<<<<<< RECV) (\d+(?:\.\d+)?) \(\+(\d+(?:\.\d+)?) s, (\d+) bytes\)$")
_FACT_MARKER = re.compile(rb"^======== (EOF|QUIET|CLOSE) (\d+(?:\.\d+)?) \(\+(\d+(?:\.\d+)?) s\)(?: (.*))?$")
_DIRECTIONS = {b">>>>>>>> SENT": "sent", b"<<<<<<<< RECV": "recv"}


class TraceFormatError(ValueError):
    """A transcript that does not follow the documented format."""


@dataclass(frozen=True, slots=True)
class Block:
    """One marker of a transcript: what went over the wire, or a socket fact."""

    direction: str  # 'sent' | 'recv' | 'eof' | 'quiet' | 'close'
    epoch: float
    raw: bytes = b""
    since_connect: float = 0.0
    note: str = ""

    @property
    def head(self) -> bytes:
        """The header block of the message (up to the first blank line)."""
        return self.raw.split(b"\n\n", 1)[0]

    def header(self, name: str) -> str | None:
        """The first value of an outer header of the message, undecoded."""
        prefix = name.encode() + b": "
        for line in self.head.split(b"\n"):
            if line.startswith(prefix):
                return line[len(prefix) :].decode("utf-8", errors="replace")
        return None


def parse(data: bytes, name: str = "<transcript>") -> list[Block]:
    """Split the bytes of one transcript into blocks."""
    pos = 0
    size = len(data)
    while pos < size and data.startswith(b"#", pos):
        nl = data.find(b"\n", pos)
        pos = size if nl < 0 else nl + 1
    if data.startswith(b"\n", pos):
        pos += 1
    blocks: list[Block] = []
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            nl = size
        line = data[pos:nl]
        pos = nl + 1
        if not line:
            raise TraceFormatError(f"{name}: blank line where a marker was expected at byte {nl}")
        m = _DATA_MARKER.match(line)
        if m is not None:
            n = int(m.group(4))
            raw = data[pos : pos + n]
            if len(raw) != n:
                raise TraceFormatError(f"{name}: block at byte {pos} is cut short ({len(raw)} of {n} bytes)")
            pos += n
            if data[pos : pos + 1] != b"\n":
                raise TraceFormatError(f"{name}: no '\\n' after the {n}-byte block ending at byte {pos}")
            pos += 1
            blocks.append(Block(_DIRECTIONS[m.group(1)], float(m.group(2)), raw, float(m.group(3))))
            continue
        m = _FACT_MARKER.match(line)
        if m is not None:
            note = (m.group(4) or b"").decode("utf-8", errors="replace")
            blocks.append(Block(m.group(1).decode().lower(), float(m.group(2)), b"", float(m.group(3)), note))
            continue
        raise TraceFormatError(f"{name}: not a marker line: {line[:80]!r}")
    return blocks


def load(path: str | Path) -> list[Block]:
    """Read one transcript file into its blocks, in order."""
    p = Path(path)
    return parse(p.read_bytes(), p.name)


def transcripts(directory: str | Path) -> list[Path]:
    """The transcript files of a directory (``NN-*.txt``), sorted by name."""
    return sorted(p for p in Path(directory).glob("*.txt") if re.match(r"\d\d[a-z]?-", p.name))


def recv_blocks(blocks: list[Block]) -> list[Block]:
    """The blocks FreeSWITCH sent, in order."""
    return [b for b in blocks if b.direction == "recv"]


def sent_blocks(blocks: list[Block]) -> list[Block]:
    """The blocks the app sent, in order."""
    return [b for b in blocks if b.direction == "sent"]


def recv_bytes(blocks: list[Block]) -> bytes:
    """Every byte FreeSWITCH sent, as one stream (the capture's added newlines left out)."""
    return b"".join(b.raw for b in blocks if b.direction == "recv")


def recv_frames(blocks: list[Block]) -> list[bytes]:
    """The raw bytes of each message FreeSWITCH sent (one message per RECV block)."""
    return [b.raw for b in blocks if b.direction == "recv"]


def event_body(frame: bytes) -> bytes | None:
    """The body of a ``text/event-plain`` frame, or None for any other frame."""
    head, sep, body = frame.partition(b"\n\n")
    if not sep or b"Content-Type: text/event-plain" not in head.split(b"\n"):
        return None
    return body


def sent_event_uuids(blocks: list[Block]) -> list[str]:
    """The ``Event-UUID`` of every SENT command that carries one, in order."""
    out: list[str] = []
    for b in sent_blocks(blocks):
        value = b.header("Event-UUID")
        if value is not None:
            out.append(value.strip())
    return out


def sent_commands(blocks: list[Block]) -> list[tuple[str, dict[str, str]]]:
    """Each SENT command as its first line and its ``Name: value`` headers."""
    out: list[tuple[str, dict[str, str]]] = []
    for b in sent_blocks(blocks):
        lines = b.raw.decode("utf-8", errors="replace").split("\n\n", 1)[0].split("\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(": ")
            if sep:
                headers.setdefault(key, value)
        out.append((lines[0], headers))
    return out
