"""systemd's readiness protocol (``Type=notify``) without a dependency.

``notify("READY=1")`` sends one datagram to the socket systemd names in
``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); outside
systemd the variable is unset and nothing is sent.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send ``states`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``) as one message; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not states:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        return False  # vsock and other forms are not used by systemd's service manager for us
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(states).encode(), address)
        except OSError:
            return False
    return True
