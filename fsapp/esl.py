"""The event-socket layer: the only code in fsapp that speaks ESL.

One `Session` per call, driven from the call's own greenlet: there is no reader
greenlet and no queue.  Every wait reads frames from the socket until what it waits
for arrives, dispatching the events it meets on the way, under a deadline.

Facts of real FreeSWITCH 1.10 this layer relies on (see the wire transcripts):

- replies are not always the next frame: events queued earlier come first, so
  frames are told apart by ``Content-Type`` only;
- each ``sendmsg`` execute carries an ``Event-UUID`` that comes back as
  ``Application-UUID`` on its CHANNEL_EXECUTE_COMPLETE;
- at hangup CHANNEL_HANGUP comes *before* the running app's completion, and after
  the linger notice a ``sendmsg`` still gets ``+OK`` but nothing runs.

greenswitch's ESLEvent is not used for parsing: it URL-decodes a whole header block
before splitting it into lines, so an encoded newline inside a value (``%0A``, as in
the connect reply's ``Reply-Text: %2BOK%0A``) splits a header in two.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import gevent.socket
from gevent.hub import Waiter

MAX_HEADER_BYTES = 256 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_BRIDGES = 256  # bridged spans kept per call: far more than any dialplan makes


class ESLError(Exception):
    """The socket or the peer misbehaved: closed, timed out, or sent a bad frame."""


class ProtocolError(ESLError):
    """A frame that does not follow the event-socket wire format."""


class ConnectionClosed(ESLError):
    """FreeSWITCH closed the socket."""


class Timeout(ESLError):
    """A wait passed its deadline."""


class Hangup(Exception):
    """The channel is gone: the caller hung up or FreeSWITCH hung up the channel."""

    def __init__(self, cause: str = "") -> None:
        super().__init__(cause or "hangup")
        self.cause = cause
        # False when the channel went down before the app (sent behind others) could start.
        self.app_started = True


def decode(value: str) -> str:
    """URL-decode an ESL header value (invalid UTF-8 becomes U+FFFD)."""
    if "%" not in value:
        return value
    return unquote(value, errors="replace")


def parse_headers(block: bytes, *, urlencoded: bool) -> dict[str, str]:
    """Parse ``Name: value`` lines; values are URL-decoded when ``urlencoded``."""
    headers: dict[str, str] = {}
    text = block.decode("utf-8", errors="replace")
    for line in text.split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(": ")
        if not sep:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"header line without a colon: {line[:80]!r}")
        name = name.strip()
        if not name:
            raise ProtocolError(f"header line without a name: {line[:80]!r}")
        if urlencoded:
            value = decode(value)
        # FreeSWITCH repeats some headers (Hangup-Cause); the first one wins.
        headers.setdefault(name, value)
    return headers


@dataclass(slots=True)
class Frame:
    """One ESL message: its outer headers and the raw body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


class Event:
    """A ``text/event-plain`` event.

    Real events carry a few hundred headers of which a call needs a handful, so
    the header block is kept as text: ``get`` finds one header in it and decodes
    only that value; ``headers`` builds (and checks) the whole dict on first use.
    """

    __slots__ = ("_text", "body", "_raw", "_decoded")

    def __init__(self, raw: dict[str, str] | str, body: str = "") -> None:
        if isinstance(raw, dict):
            self._raw: dict[str, str] | None = raw
            self._text = ""
        else:
            self._raw = None
            self._text = "\n" + raw + "\n"
        self.body = body
        self._decoded: dict[str, str] | None = None

    @property
    def raw(self) -> dict[str, str]:
        """Every header, values as sent (URL-encoded)."""
        if self._raw is None:
            self._raw = parse_headers(self._text.strip("\n").encode("utf-8"), urlencoded=False)
        return self._raw

    @property
    def headers(self) -> dict[str, str]:
        """Every header, decoded."""
        if self._decoded is None:
            self._decoded = {k: decode(v) for k, v in self.raw.items()}
        return self._decoded

    def _find(self, key: str) -> str | None:
        if self._raw is not None:
            return self._raw.get(key)
        text = self._text
        i = text.find("\n" + key + ": ")
        if i < 0:
            return None
        start = i + len(key) + 3
        return text[start : text.index("\n", start)]

    @property
    def name(self) -> str:
        return self._find("Event-Name") or ""

    def __getitem__(self, key: str) -> str:
        value = self._find(key)
        if value is None:
            raise KeyError(key)
        return decode(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def get(self, key: str, default: str = "") -> str:
        value = self._find(key)
        return default if value is None else decode(value)

    def var(self, name: str, default: str = "") -> str:
        return self.get("variable_" + name, default)

    @property
    def timestamp_us(self) -> int:
        """FreeSWITCH's own clock for this event, in microseconds (0 when absent or not a plausible time)."""
        return epoch_us(self._find("Event-Date-Timestamp"))


# FreeSWITCH's clocks read microseconds since 1970; anything outside these years is
# a corrupt field, not a time, and is treated as absent.
_EPOCH_US_MIN = 946_684_800_000_000  # 2000-01-01
_EPOCH_US_MAX = 7_258_118_400_000_000  # 2200-01-01


def epoch_us(value: str | None) -> int:
    """A FreeSWITCH microsecond timestamp, or 0 when missing, not a number, or absurd."""
    if not value or not value.isascii() or not value.isdigit() or len(value) > 17:
        return 0
    us = int(value)
    return us if _EPOCH_US_MIN <= us <= _EPOCH_US_MAX else 0


def parse_event(body: bytes) -> Event:
    """Parse the body of a ``text/event-plain`` frame (headers looked up on demand)."""
    head, sep, rest = body.partition(b"\n\n")
    text = head.decode("utf-8", errors="replace")
    content = ""
    if sep and "\nContent-Length: " in "\n" + text:
        ev = Event(text)
        raw = ev.get("Content-Length").strip()
        # str.isdigit() alone passes '²' and other digits int() refuses or reads otherwise.
        if not (raw.isascii() and raw.isdigit()):
            raise ProtocolError(f"event body Content-Length is not a number: {raw[:20]!r}")
        content = rest[: int(raw[:16])].decode("utf-8", errors="replace")
    return Event(text, content)


# Events the session acts on; the others (DTMF, CHANNEL_EXECUTE, CHANNEL_STATE, ...)
# are skipped without being parsed.
INTERESTING = frozenset(
    {"CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE"}
)
_APP_UUID = b"\nApplication-UUID: "

# What ``myevents`` subscribes to that no code here uses (mod_event_socket's list,
# less INTERESTING). ``nixevent`` drops them, so FreeSWITCH neither renders nor sends
# them: a call's DTMF, CHANNEL_EXECUTE and state events are about half its frames.
NIXED = (
    "CHANNEL_EXECUTE DTMF CHANNEL_STATE CHANNEL_PARK CHANNEL_UNPARK CHANNEL_ANSWER CHANNEL_PROGRESS "
    "CHANNEL_PROGRESS_MEDIA CHANNEL_APPLICATION CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_ORIGINATE "
    "CHANNEL_OUTGOING DETECTED_SPEECH TALK NOTALK"
)

# Event-UUIDs: unique per process start and counted up, as cheap as a counter.
_APP_UUID_PREFIX = str(uuidlib.uuid4())[:24]
_app_uuid_seq = itertools.count(1)


def new_app_uuid() -> str:
    return f"{_APP_UUID_PREFIX}{next(_app_uuid_seq) % 16**12:012x}"


_UUID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._:-]{0,127}")


_TIMED_OUT = object()


class FrameReader:
    """Splits a byte stream into ESL frames."""

    __slots__ = ("_buf", "_sock", "_pending", "_raw", "_read_event", "_hub")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = bytearray()
        # (headers, header end, frame size) of a frame whose body is still arriving:
        # its header block is parsed once, not again for every piece of the body.
        self._pending: tuple[dict[str, str], int, int] | None = None
        # A gevent socket is read through its non-blocking OS socket, waiting on its own
        # read watcher with a timer: what socket.recv does under settimeout, without a
        # gevent Timeout object (and its greenlet.throw) for every wait. A close from
        # another greenlet still wakes the wait, as gevent's cancel_wait expects.
        raw = getattr(sock, "_sock", None)
        event = getattr(sock, "_read_event", None)
        if isinstance(sock, gevent.socket.socket) and raw is not None and event is not None:
            self._raw, self._read_event, self._hub = raw, event, sock.hub
        else:
            self._raw = self._read_event = self._hub = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame in the buffer, or None if more bytes are needed."""
        buf = self._buf
        pending = self._pending
        if pending is not None:
            headers, end, total = pending
            if len(buf) < total:
                return None
            self._pending = None
        else:
            # FreeSWITCH never sends blank lines between frames, but be lenient.
            while buf[:1] == b"\n":
                del buf[:1]
            end = buf.find(b"\n\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise ProtocolError(f"header block longer than {MAX_HEADER_BYTES} bytes")
                return None
            if end > MAX_HEADER_BYTES:
                raise ProtocolError(f"header block longer than {MAX_HEADER_BYTES} bytes")
            headers = parse_headers(bytes(buf[:end]), urlencoded=False)
            length = 0
            if "Content-Length" in headers:
                raw = headers["Content-Length"].strip()
                # str.isdigit() alone passes '²' (int() refuses it) and 5000-digit runs (int() refuses those too).
                if not (raw.isascii() and raw.isdigit()):
                    raise ProtocolError(f"bad Content-Length: {raw[:20]!r}")
                length = int(raw) if len(raw) <= 16 else MAX_BODY_BYTES + 1
                if length > MAX_BODY_BYTES:
                    raise ProtocolError(f"Content-Length {length} over the {MAX_BODY_BYTES} limit")
            total = end + 2 + length
            if len(buf) < total:
                self._pending = (headers, end, total)
                return None
        body = bytes(buf[end + 2 : total])
        del buf[:total]
        return Frame(headers, body)

    def read(self, deadline: float | None) -> Frame:
        """Block (cooperatively) until a frame arrives or the deadline passes."""
        raw = self._raw
        if raw is None:
            return self._read_plain(deadline)
        while True:
            frame = self.next_frame()
            if frame is not None:
                return frame
            try:
                data = raw.recv(65536)
            except BlockingIOError:
                self._wait(deadline)
                continue
            except OSError as exc:
                raise ConnectionClosed(f"socket error: {exc}") from exc
            if not data:
                raise ConnectionClosed("FreeSWITCH closed the socket")
            self._buf += data

    def _wait(self, deadline: float | None) -> None:
        """Until the socket is readable; Timeout at the deadline."""
        event = self._read_event
        if event.callback is not None:
            raise ESLError(f"the socket is already read by another greenlet: {event.callback!r}")
        hub = self._hub
        timer = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout("no frame before the deadline")
            timer = hub.loop.timer(remaining)
        waiter = Waiter(hub)
        event.start(waiter.switch, waiter)
        try:
            if timer is not None:
                timer.start(waiter.switch, _TIMED_OUT)
            result = waiter.get()
        except OSError as exc:  # the socket was closed in another greenlet
            raise ConnectionClosed(f"socket error: {exc}") from exc
        finally:
            event.stop()
            if timer is not None:
                timer.close()
        if result is _TIMED_OUT:
            raise Timeout("no frame before the deadline")

    def _read_plain(self, deadline: float | None) -> Frame:
        """``read`` for a socket-like object that is not a gevent socket (test doubles)."""
        while True:
            frame = self.next_frame()
            if frame is not None:
                return frame
            if deadline is None:
                self._sock.settimeout(None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout("no frame before the deadline")
                self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except gevent.socket.timeout as exc:
                raise Timeout("no frame before the deadline") from exc
            except OSError as exc:
                raise ConnectionClosed(f"socket error: {exc}") from exc
            if not data:
                raise ConnectionClosed("FreeSWITCH closed the socket")
            self._buf += data


def _clean_arg(value: str) -> str:
    """Arguments travel in a header line: no newline may reach the wire."""
    if "\n" in value or "\r" in value:
        raise ValueError("ESL arguments cannot contain line breaks")
    return value


@dataclass
class BridgeSpan:
    """One bridged period as FreeSWITCH timestamped it (microseconds)."""

    start_us: int
    end_us: int = 0
    other_uuid: str = ""


@dataclass(slots=True)
class Session:
    """One outbound-socket call: FreeSWITCH connected to us for one channel."""

    sock: Any
    command_timeout: float = 5.0
    on_command: Callable[[str, float], None] | None = None
    on_event: Callable[[Event], None] | None = None  # sees the INTERESTING events only
    channel: Event = field(default_factory=lambda: Event({}))
    uuid: str = ""
    hungup: bool = False
    hangup_cause: str = ""
    hangup_complete: Event | None = None
    lingering: bool = False
    closed: bool = False
    hangup_requested: bool = False
    hangup_us: int = 0
    bridges: list[BridgeSpan] = field(default_factory=list)
    cc_agent: str = ""
    _reader: FrameReader = field(init=False)
    _completions: dict[str, Event] = field(default_factory=dict)
    _waiting: set[str] = field(default_factory=set)
    _replies: list[Frame] = field(default_factory=list)
    _want_replies: int = 1
    # Apps sent ahead of another (their completion is noted, not kept): "" running,
    # "done" completed, "late" completed after CHANNEL_HANGUP.
    _ahead: dict[str, str] = field(default_factory=dict)
    _sent_at: dict[str, float] = field(default_factory=dict)  # Event-UUID -> when its execute was sent

    def __post_init__(self) -> None:
        self._reader = FrameReader(self.sock)
        if self._reader._raw is not None:
            # Reads wait under their own deadlines; a write that finds the socket's buffer
            # full waits at most this long.
            self.sock.settimeout(self.command_timeout)

    # ---------------------------------------------------------------- reading

    def _pump(self, deadline: float | None) -> None:
        """Read and dispatch one frame."""
        frame = self._reader.read(deadline)
        ctype = frame.content_type
        if ctype == "text/event-plain":
            self._event(frame.body)
        elif ctype in ("command/reply", "api/response"):
            # Commands take the replies after they are sent, in order; a peer repeating
            # replies during a long wait must not grow this list without bound.
            if len(self._replies) < self._want_replies:
                self._replies.append(frame)
        elif ctype == "text/disconnect-notice":
            if frame.headers.get("Content-Disposition") == "linger":
                self.lingering = True
            else:
                self.closed = True
        elif ctype in ("text/event-json", "text/event-xml", "log/data"):
            pass  # never subscribed; ignore rather than fail
        else:
            raise ProtocolError(f"unexpected Content-Type {ctype[:60]!r}")

    def _event(self, body: bytes) -> None:
        """Parse and dispatch an event, unless it is one the session has no use for."""
        if body.startswith(b"Event-Name: "):
            nl = body.find(b"\n")
            name = body[12:nl].decode("ascii", errors="replace")
            if name not in INTERESTING:
                return
            if name == "CHANNEL_EXECUTE_COMPLETE":
                i = body.rfind(_APP_UUID)
                if i >= 0:
                    end = body.find(b"\n", i + 1)
                    app_uuid = body[i + len(_APP_UUID) : end].decode("ascii", errors="replace")
                    if app_uuid not in self._waiting and app_uuid not in self._ahead:
                        return
        self._dispatch(parse_event(body))

    def _dispatch(self, ev: Event) -> None:
        if self.uuid and (ev._find("Unique-ID") or self.uuid) != self.uuid:
            return  # another channel's event (never with myevents; ignore)
        name = ev.name
        if name == "CHANNEL_EXECUTE_COMPLETE":
            app_uuid = ev.get("Application-UUID")
            if app_uuid in self._waiting:
                self._completions[app_uuid] = ev
            elif app_uuid in self._ahead:
                self._ahead[app_uuid] = "late" if self.hungup else "done"
        elif name == "CHANNEL_HANGUP":
            self.hungup = True
            self.hangup_cause = ev.get("Hangup-Cause")
            self.hangup_us = ev.timestamp_us
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self.hungup = True
            self.hangup_cause = self.hangup_cause or ev.get("Hangup-Cause")
            self.hangup_complete = ev
        elif name == "CHANNEL_BRIDGE":
            if len(self.bridges) < MAX_BRIDGES:  # a peer repeating CHANNEL_BRIDGE cannot grow the list
                self.bridges.append(BridgeSpan(ev.timestamp_us, 0, ev.get("Bridge-B-Unique-ID")))
        elif name == "CHANNEL_UNBRIDGE":
            if self.bridges and not self.bridges[-1].end_us:
                self.bridges[-1].end_us = ev.timestamp_us
            self.cc_agent = ev.var("cc_agent") or self.cc_agent
        if self.on_event is not None:
            self.on_event(ev)

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    def _send(self, text: str) -> None:
        data = text.encode("utf-8")
        try:
            # One send(2) takes a command whole unless the socket's buffer is full; gevent's
            # sendall would first ask the kernel for SO_SNDBUF on every call.
            sent = self.sock.send(data)
            if sent < len(data):
                self.sock.sendall(data[sent:])
        except OSError as exc:
            raise ConnectionClosed(f"socket error on send: {exc}") from exc

    def _command(self, text: str, timeout: float | None = None) -> Frame:
        """Send a command and wait for its reply (events met on the way are dispatched)."""
        return self._exchange([text], timeout)[0]

    def _exchange(self, texts: list[str], timeout: float | None = None) -> list[Frame]:
        """Send commands in one write and wait for their replies, which FreeSWITCH sends in order.

        mod_event_socket reads a command at a time (a byte at a time up to the blank
        line), so commands written together are run one after the other, as if each
        had waited for the previous reply.
        """
        started = time.monotonic()
        deadline = self._deadline(self.command_timeout if timeout is None else timeout)
        self._replies.clear()
        self._want_replies = len(texts)
        self._send("".join(texts))
        while len(self._replies) < len(texts):
            self._pump(deadline)
        replies = self._replies[:]
        self._replies.clear()
        self._want_replies = 1
        if self.on_command is not None:
            elapsed = time.monotonic() - started
            for text in texts:
                self.on_command(text.split("\n", 1)[0], elapsed)
        return replies

    # --------------------------------------------------------------- commands

    def connect(self, timeout: float | None = None) -> Event:
        """Send ``connect``; the reply carries the channel's data (within ``timeout``, else the command's)."""
        reply = self._command("connect\n\n", timeout)
        if reply.content_type != "command/reply":
            raise ProtocolError("connect was not answered by a command/reply")
        self.channel = Event(reply.headers)
        self.uuid = self.channel.get("Unique-ID") or self.channel.get("Channel-Unique-ID")
        if not self.uuid:
            raise ProtocolError("connect reply carries no Unique-ID")
        if not _UUID_RE.fullmatch(self.uuid):
            # It ends up in file paths (recordings), logs and the journal: no slash, space or line break.
            raise ProtocolError(f"connect reply carries a malformed Unique-ID: {self.uuid[:60]!r}")
        return self.channel

    def setup(self, first: tuple[str, str] | None = None) -> str:
        """``myevents``, ``nixevent`` (see NIXED) and ``linger`` in one write, and ``first``
        (an app and its argument) after them if given: its Event-UUID is returned, for
        :meth:`wait_execute`. A refused ``nixevent`` only costs the unused events."""
        texts = ["myevents\n\n", f"nixevent {NIXED}\n\n", "linger\n\n"]
        app_uuid = ""
        if first is not None:
            app_uuid = new_app_uuid()
            texts.append(self._execute_text(first[0], first[1], app_uuid))
            self._waiting.add(app_uuid)
            self._sent_at[app_uuid] = time.monotonic()
        try:
            replies = self._exchange(texts)
            self._expect_ok(replies[0], "myevents")
            self._expect_ok(replies[2], "linger")
            if first is not None:
                self._expect_ok(replies[3], f"execute {first[0]}")
        except BaseException:
            self._waiting.discard(app_uuid)
            raise
        return app_uuid

    def _expect_ok(self, reply: Frame, what: str) -> None:
        text = reply.headers.get("Reply-Text", "")
        if not text.startswith("+OK"):
            raise ESLError(f"{what} refused: {text[:80]}")

    def execute(
        self,
        app: str,
        arg: str = "",
        *,
        timeout: float | None = None,
        tick: tuple[float, Callable[[], None]] | None = None,
        before: tuple[tuple[str, str], ...] = (),
    ) -> Event:
        """Run a dialplan app on the channel and wait for its CHANNEL_EXECUTE_COMPLETE.

        Raises Hangup as soon as the channel is down (before or while the app runs):
        once the channel is gone no app runs and no completion may ever come.
        ``timeout`` defaults to the command timeout (apps that play or ring pass their own).
        ``tick`` is (seconds, fn): fn runs every that many seconds while waiting.
        ``before`` are (app, arg) pairs sent in the same write, ahead of it: FreeSWITCH
        queues them on the channel and runs them first, in order (their completions are
        not waited for: setting variables before a bridge costs no round trip).
        """
        if self.hungup or self.lingering:
            raise Hangup(self.hangup_cause)
        event_uuid = new_app_uuid()
        first = tuple(new_app_uuid() for _ in before)
        self._sent_at[event_uuid] = time.monotonic()
        self._waiting.add(event_uuid)
        self._ahead.update(dict.fromkeys(first, ""))
        try:
            self._send_executes(before, first, app, arg, event_uuid)
            return self.wait_execute(event_uuid, app, timeout=timeout, tick=tick)
        except Hangup as exc:
            # Events come in order: an app sent ahead that had not completed when the
            # channel went down means this one never started.
            exc.app_started = all(self._ahead[u] == "done" for u in first)
            raise
        finally:
            self._waiting.discard(event_uuid)
            self._sent_at.pop(event_uuid, None)
            for u in first:
                del self._ahead[u]

    def _send_executes(self, before: tuple[tuple[str, str], ...], first: tuple[str, ...], app: str, arg: str,
                       event_uuid: str) -> None:
        """Write the executes in one go and check their replies (nothing of it is kept while the app runs)."""
        # event-lock: FreeSWITCH holds the apps queued behind one until it ends (a
        # playback runs queued apps inside itself otherwise).
        texts = [self._execute_text(a, g, u, lock=True) for (a, g), u in zip(before, first, strict=True)]
        texts.append(self._execute_text(app, arg, event_uuid))
        replies = self._exchange(texts)
        for (name, _), reply in zip((*before, (app, arg)), replies, strict=True):
            text = reply.headers.get("Reply-Text", "")
            if not text.startswith("+OK"):
                raise ESLError(f"execute {name} refused: {text[:80]}")

    def wait_execute(
        self,
        event_uuid: str,
        app: str,
        *,
        timeout: float | None = None,
        tick: tuple[float, Callable[[], None]] | None = None,
    ) -> Event:
        """Wait for the CHANNEL_EXECUTE_COMPLETE of an app sent with ``event_uuid``."""
        if timeout is None:
            timeout = self.command_timeout
        self._waiting.add(event_uuid)
        try:
            self.wait_for(lambda: event_uuid in self._completions, timeout=timeout, tick=tick, what=app)
            done = self._completions.pop(event_uuid)
        finally:
            self._waiting.discard(event_uuid)
        sent = self._sent_at.pop(event_uuid, None)
        if self.on_command is not None and sent is not None:
            self.on_command("execute " + app, time.monotonic() - sent)
        return done

    @staticmethod
    def _execute_text(app: str, arg: str, event_uuid: str, *, lock: bool = False) -> str:
        lines = ["sendmsg", "call-command: execute", f"execute-app-name: {_clean_arg(app)}"]
        if arg:
            lines.append(f"execute-app-arg: {_clean_arg(arg)}")
        if lock:
            lines.append("event-lock: true")
        lines.append(f"Event-UUID: {event_uuid}")
        return "\n".join(lines) + "\n\n"

    def wait_for(
        self,
        done: Callable[[], bool],
        *,
        timeout: float | None,
        tick: tuple[float, Callable[[], None]] | None = None,
        what: str = "wait",
    ) -> None:
        """Dispatch frames until ``done()``; Hangup if the channel goes down first.

        ``tick`` is (seconds, fn): fn runs every that many seconds while waiting.
        """
        deadline = self._deadline(timeout)
        next_tick = time.monotonic() + tick[0] if tick else None
        while not done():
            if self.hungup or self.lingering:
                raise Hangup(self.hangup_cause)
            wait_until = deadline
            if next_tick is not None and (wait_until is None or next_tick < wait_until):
                wait_until = next_tick
            try:
                self._pump(wait_until)
            except Timeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"{what} did not complete in {timeout} s") from None
            if tick is not None and next_tick is not None and time.monotonic() >= next_tick:
                tick[1]()
                next_tick = time.monotonic() + tick[0]

    def talk_span(self) -> BridgeSpan | None:
        """The last bridged span, closed at the hangup time if it was never unbridged."""
        if not self.bridges:
            return None
        span = self.bridges[-1]
        if not span.end_us and self.hungup:
            span.end_us = self.hangup_us or span.start_us
        return span

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang the channel up (a call-command: no execute events follow)."""
        if self.hungup or self.lingering:
            return
        self.hangup_requested = True
        self._command(f"sendmsg\ncall-command: hangup\nhangup-cause: {_clean_arg(cause)}\n\n")

    def finish(self, timeout: float = 5.0, *, wait_hangup: bool = True) -> None:
        """Collect CHANNEL_HANGUP_COMPLETE (when the channel is down), send ``exit``."""
        deadline = time.monotonic() + timeout
        try:
            if wait_hangup and (self.hungup or self.hangup_requested):
                while self.hangup_complete is None and not self.closed:
                    self._pump(deadline)
            if not self.closed:
                self._replies.clear()
                self._send("exit\n\n")
                # +OK bye, the disconnect notice, then EOF; stop at whichever comes.
                while not self.closed:
                    self._pump(deadline)
        except (ESLError, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
