"""Child processes started without forking the daemon: ``posix_spawn``, then the event loop's
child watcher for the exit status.

The daemon has threads (gevent's thread pool, where SQLite's checkpoints and other blocking
calls run). A fork copies only the thread that called it, with every lock another thread held
at that moment still held, and gevent's ``subprocess`` runs Python in the child between its
fork and the exec: a lock it takes there that another thread held (a logging handler's, the
import lock) never comes free, and the child hangs before it is even the program it was meant
to be. Python 3.12 warns of exactly that. ``posix_spawn`` runs no Python in the child (glibc
starts it with ``clone(CLONE_VM | CLONE_VFORK)`` and execs at once).

The loop reaps every child (libev's SIGCHLD handler waits for any), so the status comes
from its child watcher, never from a ``waitpid`` of our own.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from collections.abc import Mapping, Sequence

import gevent.event
from gevent.hub import get_hub


class Child:
    """One child process: ``argv`` (searched for on the environment's PATH, as ``execvp``
    does), its standard input /dev/null, its output and errors the daemon's own. ``pass_fds``
    stay open in it (their close-on-exec flag cleared there only); ``new_session`` puts it in
    a session of its own. Raises OSError (FileNotFoundError for a missing program)."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 pass_fds: Sequence[int] = (), new_session: bool = False) -> None:
        self.args = list(argv)
        environ = dict(os.environ if env is None else env)
        path = shutil.which(self.args[0], path=environ.get("PATH", os.defpath))
        if path is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.args[0])
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in pass_fds]  # onto itself: close-on-exec cleared
        loop = get_hub().loop
        loop.install_sigchld()
        # An empty signal mask, and SIGPIPE and SIGXFSZ back to their defaults (Python ignores
        # them), as subprocess's restore_signals gives a child.
        self.pid = os.posix_spawn(path, self.args, environ, file_actions=actions, setsid=new_session,
                                  setsigmask=(), setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        self.returncode: int | None = None
        self._done = gevent.event.Event()
        # Started before the loop runs again: the exit cannot come before the watcher is there.
        self._watcher = loop.child(self.pid, False, ref=False)
        self._watcher.start(self._exited)

    def _exited(self) -> None:
        self._watcher.stop()
        self.returncode = os.waitstatus_to_exitcode(self._watcher.rstatus)
        self._done.set()

    def poll(self) -> int | None:
        """Its exit code (negative: the signal that ended it), or None while it runs."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code once it ends; None if it still runs after ``timeout`` seconds."""
        self._done.wait(timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """``signum`` to it, unless it has ended (and been reaped: its pid may be another's now)."""
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
