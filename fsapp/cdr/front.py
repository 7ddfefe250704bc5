"""The CDR listener's HTTP side in a process of its own (``[cdr] own_process``, the default).

At 2,000 posts a second the daemon's one core did everything: the HTTP of each post
and its JSON (about 300 us of CPU a post) and the commit (about 300 us a leg in a
batch), 1.1 cores of work for one, so posts queued for half a second. The front
process takes the first half on the other core: it accepts mod_json_cdr's
connections on the daemon's listening socket, checks peer, credentials and size,
parses the leg, and sends it to the daemon, which commits it in its writer as before
and sends back the answer; only then does the front answer the post. So a 200 still
means committed, and everything that happens once a call is in (its after-call work,
the metrics) stays in the daemon.

The daemon binds the socket (a bad ``listen`` fails the start) and keeps it, so while
a front starts again after a crash, posts wait in the socket's queue; posts the dead
front held got no answer and FreeSWITCH sends them again (a replay changes nothing).
The front ends when its channel to the daemon does. Its refusals come back to be
logged by the daemon, with their reasons, as its own are.

Frames (``fsapp.cdr.channel``), daemon to front: ``["settings", {the [cdr] section}]``
first and after each reload, ``["answers", [[id, status, text], ...]]``, ``["stop"]``; front
to daemon: ``["leg", id, leg]`` with the post's body, ``["log", level, event, fields]``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.socket

from fsapp import log as logmod
from fsapp.cdr import http
from fsapp.cdr.channel import Channel
from fsapp.cdr.endpoint import CDREndpoint
from fsapp.cdr.http import Response
from fsapp.config import CDRConfig
from fsapp.spawn import Child

# (leg, body, reply): reply(answer) is called once the leg is committed or has failed
Submit = Callable[[dict[str, Any], bytes, Callable[[Response], None]], None]
RESTART_SECONDS = 1.0  # a front that keeps dying is started again at most this often
STOP_SECONDS = 5.0
_GONE = Response(503, "not stored: the daemon is stopping or gone\n")  # a post the daemon never answered
LOG_LEVELS = frozenset(("warning",))  # what the front's lines may be logged as


class FrontProcess:
    """The daemon's side: starts the front on ``sock``, hands its legs to ``submit``, restarts it."""

    def __init__(self, sock: socket.socket, submit: Submit, settings: Callable[[], CDRConfig]) -> None:
        self.sock = sock
        self.submit = submit
        self.settings = settings
        self.log = logmod.get("fsapp").bind(component="cdr")
        self.child: Child | None = None
        self.channel: Channel | None = None
        self._stopping = False
        self._watch: gevent.Greenlet | None = None

    def start(self) -> None:
        self._spawn()
        self._watch = gevent.spawn(self._run)

    def _spawn(self) -> None:
        mine, theirs = socket.socketpair()
        fds = (self.sock.fileno(), theirs.fileno())
        try:  # a session of its own: a terminal's Ctrl-C or hangup is the daemon's to act on
            self.child = Child([sys.executable, "-m", "fsapp.cdr.front", *map(str, fds)], pass_fds=fds,
                               new_session=True)
        except OSError:
            mine.close()
            raise
        finally:
            theirs.close()
        self.channel = Channel(mine)
        self.channel.send(["settings", _settings(self.settings())])
        self.log.info("cdr_front_started", pid=self.child.pid)

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            if self.channel is not None:
                self._serve(self.channel)
                if self._stopping:
                    return
                self.log.error("cdr_front_exited", pid=self.child.pid, status=self.child.poll())
                self._reap()
                self.channel = None
            gevent.sleep(max(0.0, RESTART_SECONDS - (time.monotonic() - started)))
            if self._stopping:
                return
            try:
                self._spawn()
            except OSError as exc:  # out of processes or file descriptors: tried again in a while
                self.log.error("cdr_front_failed", reason=str(exc))

    def _serve(self, channel: Channel) -> None:
        """The front's frames until it closes; the answers of a batch go back together, as one frame."""
        answers: list[tuple[int, int, str]] = []
        ready = gevent.event.Event()
        sender = gevent.spawn(self._send_answers, channel, answers, ready)
        for frame, body in channel.frames():
            if frame[0] == "leg":
                _, ident, leg = frame
                self.submit(leg, body, functools.partial(self._answered, answers, ready, ident))
            elif frame[0] == "log" and frame[1] in LOG_LEVELS:  # the front's refusals
                _, level, event, fields = frame
                getattr(self.log, level)(event, **fields)
        sender.kill()
        channel.close()

    @staticmethod
    def _answered(answers: list[tuple[int, int, str]], ready: gevent.event.Event, ident: int,
                  response: Response) -> None:
        answers.append((ident, response.status, response.text))
        ready.set()

    @staticmethod
    def _send_answers(channel: Channel, answers: list[tuple[int, int, str]], ready: gevent.event.Event) -> None:
        while True:
            ready.wait()
            ready.clear()
            batch = answers[:]
            del answers[:]
            try:
                channel.send(["answers", batch])
            except OSError:
                return  # the front is gone; FreeSWITCH sends those legs again, and a replay changes nothing

    def reconfigure(self) -> None:
        """After a reload: the front checks posts against the new ``[cdr]`` section."""
        self._tell(["settings", _settings(self.settings())])  # restarting: the new front gets them when it starts

    def stop(self) -> None:
        """The front stops taking posts, answers those in flight (the daemon still commits them), then ends."""
        self._stopping = True
        self._tell(["stop"])
        if self._watch is not None:
            self._watch.join(timeout=STOP_SECONDS)
            self._watch.kill()
        if self.channel is not None:
            self._reap()

    def _tell(self, frame: list[Any]) -> None:
        try:
            if self.channel is not None:
                self.channel.send(frame)
        except OSError:
            pass  # the front is gone, and comes back (or the daemon is stopping)

    def _reap(self) -> None:
        child = self.child
        if child.wait(timeout=STOP_SECONDS) is None:
            child.kill()
            child.wait()


class _Front:
    """The front process's side: posts checked and parsed here, kept by the daemon."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.config = CDRConfig()
        self._ids = itertools.count()
        self._waiting: dict[int, gevent.event.AsyncResult] = {}

    def keep(self, leg: dict[str, Any], body: bytes) -> Response:
        ident = next(self._ids)
        result = self._waiting[ident] = gevent.event.AsyncResult()
        try:
            self.channel.send(["leg", ident, leg], body)
            return result.get()
        except OSError:
            return _GONE
        finally:
            del self._waiting[ident]

    def answered(self, ident: int, status: int, text: str) -> None:
        waiting = self._waiting.get(ident)
        if waiting is not None:
            waiting.set(Response(status, text))

    def gone(self) -> None:
        for waiting in list(self._waiting.values()):
            waiting.set(_GONE)


class _ChannelLog:
    """The endpoint's log in the front: each line sent for the daemon to log."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def _send(self, level: str, event: str, fields: dict[str, Any]) -> None:
        try:
            self.channel.send(["log", level, event, fields])
        except OSError:
            pass  # the daemon is gone: so is its log

    def warning(self, event: str, **fields: Any) -> None:  # the endpoint's one kind of line: a refusal
        self._send("warning", event, fields)


def main(argv: list[str]) -> int:
    """The front process: ``python -m fsapp.cdr.front LISTEN_FD CHANNEL_FD``, started by ``FrontProcess``."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # the daemon's to act on; this ends when its channel does
    listen_fd, channel_fd = map(int, argv)
    channel = Channel(gevent.socket.socket(fileno=channel_fd))
    front = _Front(channel)
    frames = channel.frames()
    first = next(frames, None)
    if first is None or first[0][0] != "settings":
        return 1
    front.config = CDRConfig(**first[0][1])
    endpoint = CDREndpoint(lambda: front.config, front.keep, _ChannelLog(channel))
    server = http.serve_on(socket.socket(fileno=listen_fd), endpoint)
    stopping = None
    for frame, _ in frames:
        if frame[0] == "answers":
            for answer in frame[1]:
                front.answered(*answer)
        elif frame[0] == "settings":
            front.config = CDRConfig(**frame[1])
        elif frame[0] == "stop" and stopping is None:
            stopping = gevent.spawn(_stop, server, channel)  # the answers of the posts in flight still come
    front.gone()
    server.stop(timeout=0)
    return 0


def _settings(cfg: CDRConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _stop(server: Any, channel: Channel) -> None:
    server.stop(timeout=2)
    channel.done_sending()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
