"""Frames between the daemon and its CDR front process, over a socket pair of their own.

A frame is a tuple, pickled, after its length in four bytes. Both ends are fsapp,
started together (the daemon makes the pair and hands the child its end), so
nothing from outside ever reaches a frame; a post's body travels as the bytes it came
in. Sends from many greenlets go out whole, one at a time.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from typing import Any

import gevent.lock

HEADER = struct.Struct("!I")
READ_BYTES = 1 << 18


class Channel:
    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._lock = gevent.lock.Semaphore()

    def send(self, *frame: Any) -> None:
        """Raises OSError when the other end has gone."""
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self.sock.sendall(HEADER.pack(len(data)) + data)

    def frames(self) -> Iterator[tuple[Any, ...]]:
        """Each frame as it comes; ends when the other end closes (or the socket fails)."""
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
                (size,) = HEADER.unpack_from(buffer, start)
                end = start + HEADER.size + size
                if end > len(buffer):
                    break
                yield pickle.loads(buffer[start + HEADER.size:end])  # noqa: S301 - our own process's frames
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
