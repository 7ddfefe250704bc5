"""Frames between the daemon and its CDR front process, over a socket pair of their own.

A frame is a JSON array (its first item says what it is) and, for a leg, the post's body
as the bytes it came in: eight bytes of the two lengths, then the JSON, then the body.
The front parses what anyone may post, so what it sends the daemon is data, never
anything the daemon would run (no pickle). Sends from many greenlets go out whole,
one at a time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import gevent.lock
import orjson

HEADER = struct.Struct("!II")  # the JSON's length, the body's
READ_BYTES = 1 << 18


class Channel:
    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._lock = gevent.lock.Semaphore()

    def send(self, frame: list[Any], body: bytes = b"") -> None:
        """Raises OSError when the other end has gone."""
        data = orjson.dumps(frame)
        with self._lock:
            self.sock.sendall(HEADER.pack(len(data), len(body)) + data + body)

    def frames(self) -> Iterator[tuple[list[Any], bytes]]:
        """Each frame and its body as they come; ends when the other end closes (or the socket fails)."""
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(READ_BYTES)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            start = 0
            while len(buffer) - start >= HEADER.size:
                size, body_size = HEADER.unpack_from(buffer, start)
                middle = start + HEADER.size + size
                end = middle + body_size
                if end > len(buffer):
                    break
                yield orjson.loads(buffer[start + HEADER.size:middle]), buffer[middle:end]
                start = end
            buffer = buffer[start:]

    def done_sending(self) -> None:
        """The other end reads to the end of what was sent, then sees the end."""
        try:
            self.sock.shutdown(1)  # SHUT_WR
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
