"""Fuzz cases: frame parser input, session streams and a daemon under fire, seeded from the wire transcripts.

``tests/test_fuzz.py`` runs them small; ``bench/fuzz.py`` runs many more.
"""

from __future__ import annotations

import io
import json
import random
import re
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest
from hypothesis import HealthCheck, settings

from fsapp import config as configmod
from fsapp import esl
from fsapp.fakefs import Script, run_call
from fsapp.simulate import in_process_server, wait_idle
from harness import esltrace, write_config

TRACE_DIR = Path(__file__).resolve().parents[2] / "shared" / "esl"


@dataclass
class Seed:
    """One transcript: the frames FreeSWITCH sent after each command of the app, and those commands."""

    name: str
    turns: list[list[bytes]]
    commands: list[tuple[str, dict[str, str]]]
    event_uuids: list[str]  # Event-UUID of each sendmsg execute, in order
    uuid: str  # the channel's Unique-ID


def load_seeds(directory: Path = TRACE_DIR) -> list[Seed]:
    """Every transcript of ``directory`` split into turns (empty when the directory is absent)."""
    if not directory.is_dir():
        return []
    seeds = []
    for path in esltrace.transcripts(directory):
        blocks = esltrace.load(path)
        turns: list[list[bytes]] = [[]]
        for block in blocks:
            if block.direction == "sent" and turns[-1]:
                turns.append([])
            elif block.direction == "recv":
                turns[-1].append(block.raw)
        commands = esltrace.sent_commands(blocks)
        uuids = [h["Event-UUID"].strip() for line, h in commands if "Event-UUID" in h]
        connect = esltrace.recv_frames(blocks)[0]
        m = re.search(rb"\nUnique-ID: ([0-9a-f-]{36})\n", connect)
        seeds.append(Seed(path.stem, turns, commands, uuids, m.group(1).decode() if m else ""))
    return seeds


SEEDS = load_seeds()


BAD_LENGTHS = (
    b"-1", b"", b" ", b"abc", b"1e3", b"0x10", b"+5", b" 12", b"12 ", b"1_0", b"4 2", b"%31%32", b"\xff\xfe",
    "²".encode(), "١٢".encode(), "٣".encode(), b"9" * 5000, b"0" * 4400 + b"1", b"99999999999999999999",
    b"4294967296", str(esl.MAX_BODY_BYTES + 1).encode(),
)


WEIRD_NUMBERS = (
    b"", b"-1", b"0", b"abc", b"1e9", b"1.5", b"NaN", b"inf", b" 7", b"%31%32", "١٢٣".encode(),
    b"99999999999999999999999", b"-99999999999999999999", b"9" * 25, b"9" * 400, b"1" * 4400,
)


ESCAPES = (
    b"%", b"%%", b"%G1", b"%0A", b"%0A%0A", b"%00", b"%FF%FE", b"%E2%82", b"%C3%28", b"%25", b"%2", b"%ZZ",
    b"%0D%0A", b"%3A%20", b"%ED%A0%80", b"%F4%90%80%80", b"%C0%AF", b"%2BOK%0A",
    b"%0AEvent-Name%3A%20CHANNEL_HANGUP", b"%D9%85%D8%B4%D8%AA%D8%B1%DB%8C",
)


INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf",
                b"\xe2\x82")


CONTROL = (b"\x00", b"\r", b"\r\n", b"\x1b[2J", b"\t", b"\x7f", b"\n", b"\n\n", b": ", b":", b"\n: x\n")


TOKENS = BAD_LENGTHS[:12] + WEIRD_NUMBERS[:11] + ESCAPES + INVALID_UTF8 + CONTROL


EVENT_NAMES = (*sorted(esl.INTERESTING), "CHANNEL_EXECUTE", "DTMF", "", "CHANNEL_HANGUP%0A", "\xff", "HEARTBEAT")


NUMERIC_FIELDS = (
    b"Event-Date-Timestamp", b"Caller-Channel-Created-Time", b"Caller-Channel-Hangup-Time", b"variable_end_uepoch",
    b"variable_duration", b"variable_bridge_uepoch", b"variable_billsec", b"DTMF-Duration",
)


SYNTHETIC = (
    b"Content-Type: command/reply\nReply-Text: +OK\n\n",
    b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n",
    b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n",
    b"Content-Type: text/disconnect-notice\nContent-Disposition: linger\nLinger-Time: -1\nContent-Length: 0\n\n",
    b"Content-Type: text/disconnect-notice\nContent-Disposition: disconnect\nContent-Length: 0\n\n",
    b"Content-Type: text/rude-remark\nContent-Length: 3\n\nhey",
    b"Content-Type: log/data\nContent-Length: 5\n\nhello",
    b"Content-Length: 12\nContent-Type: text/event-plain\n\nEvent-Name: \n",
    b"Content-Length: 40\nContent-Type: text/event-plain\n\nEvent-Name: CHANNEL_HANGUP\nHangup-Cause: X\n\n",
    b"Content-Type: command/reply\n",
    b"\n\n\n",
    b"no colon here\n\n",
    b": nameless\n\n",
)


def _rand_bytes(rng: Any, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def garbage(rng: Any, limit: int = 4096) -> bytes:
    """Random bytes, often with line breaks in them so that they look like frames."""
    data = bytearray(_rand_bytes(rng, rng.randrange(1, limit)))
    for _ in range(rng.randrange(4)):
        data[rng.randrange(len(data)) :][:0] = rng.choice((b"\n", b"\n\n", b": ", b"Content-Length: 5\n"))
    return bytes(data)


def _head_end(frame: bytes) -> int:
    end = frame.find(b"\n\n")
    return len(frame) if end < 0 else end


def _set_header(frame: bytes, name: bytes, value: bytes) -> bytes:
    """Replace the first ``name`` header (outer block first, then anywhere), or add it at the front."""
    pattern = re.compile(rb"(^|\n)" + re.escape(name) + rb": [^\n]*")
    m = pattern.search(frame, 0, _head_end(frame)) or pattern.search(frame)
    if m is None:
        return name + b": " + value + b"\n" + frame
    return frame[: m.start()] + m.group(1) + name + b": " + value + frame[m.end() :]


def _lines(frame: bytes) -> list[tuple[int, int]]:
    """(start, end) of each non-empty line."""
    out, pos = [], 0
    for line in frame.split(b"\n"):
        if line:
            out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def mutate_frame(rng: Any, frame: bytes, channel_uuid: str = "") -> bytes:
    """One hostile change to one frame."""
    op = rng.randrange(19)
    if op >= 17:
        op = 7  # numbers FreeSWITCH writes are read by the call code: three times the weight
    if not frame:
        return garbage(rng, 256)
    if op == 0:  # a bad Content-Length
        return _set_header(frame, b"Content-Length", rng.choice(BAD_LENGTHS))
    if op == 1:  # a Content-Length off by a little or a lot: truncated body, or one that eats the next frame
        head = _head_end(frame)
        size = len(frame) - head - 2
        return _set_header(frame, b"Content-Length", str(max(0, size + rng.choice((-1, 1)) * rng.randrange(1, 9000)))
                           .encode())
    if op == 2:  # a Content-Length inside the event body
        head = _head_end(frame)
        cut = frame.rfind(b"\n\n")
        value = rng.choice((*BAD_LENGTHS, b"5", b"500000", b"0"))
        if cut > head:
            return frame[:cut] + b"\nContent-Length: " + value + frame[cut:] + _rand_bytes(rng, rng.randrange(16))
        return frame + b"Content-Length: " + value + b"\n\n"
    if op == 3:  # truncated
        return frame[: rng.randrange(len(frame))]
    if op == 4:  # flipped bytes
        data = bytearray(frame)
        for _ in range(rng.randrange(1, 9)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if op == 5:  # a hostile token anywhere
        at = rng.randrange(len(frame) + 1)
        return frame[:at] + rng.choice(TOKENS) + frame[at:]
    if op == 6:  # a header value replaced by escapes, invalid UTF-8 or control characters
        lines = _lines(frame)
        if not lines:
            return frame + rng.choice(TOKENS)
        start, end = lines[rng.randrange(len(lines))]
        line = frame[start:end]
        colon = line.find(b": ")
        value = b"".join(rng.choice(TOKENS) for _ in range(rng.randrange(1, 4)))
        if colon < 0:
            return frame[:start] + value + frame[end:]
        return frame[: start + colon + 2] + value + frame[end:]
    if op == 7:  # a number FreeSWITCH writes (timestamps, durations) made absurd
        return _set_header(frame, rng.choice(NUMERIC_FIELDS), rng.choice(WEIRD_NUMBERS))
    if op == 8:  # another event name, so that a skipped event gets parsed or the reverse
        return _set_header(frame, b"Event-Name", rng.choice(EVENT_NAMES).encode("utf-8", "surrogateescape"))
    if op == 9:  # a huge header, up to past the limit
        size = rng.choice((1000, 70000, esl.MAX_HEADER_BYTES - 100, esl.MAX_HEADER_BYTES + 100))
        at = rng.choice((0, _head_end(frame)))
        return frame[:at] + b"X-Huge: " + b"A" * size + b"\n" + frame[at:]
    if op == 10:  # another channel's frame
        other = str(uuidlib.UUID(int=rng.getrandbits(128), version=4)).encode()
        return frame.replace(channel_uuid.encode(), other) if channel_uuid else frame
    if op == 11:  # CRLF line ends
        return frame.replace(b"\n", b"\r\n")
    if op == 12:  # a range deleted
        a = rng.randrange(len(frame))
        return frame[:a] + frame[a + rng.randrange(1, 200) :]
    if op == 13:  # the blank line after the header block lost
        return frame.replace(b"\n\n", b"\n", 1)
    if op == 14:  # a line without a colon, or without a name
        at = _head_end(frame) if rng.random() < 0.5 else frame.rfind(b"\n\n")
        at = max(at, 0)
        return frame[:at] + rng.choice((b"\nno colon", b"\n: nameless", b"\n:", b"\n   : x")) + frame[at:]
    if op == 15:  # the Application-UUID changed or removed
        value = rng.choice((b"", b"not-a-uuid", b"%00", str(uuidlib.UUID(int=rng.getrandbits(128))).encode()))
        return _set_header(frame, b"Application-UUID", value) if b"Application-UUID" in frame else frame
    return frame + garbage(rng, 64)  # trailing bytes


def mutate_turns(rng: Any, seed: Seed, ops: int | None = None) -> list[list[bytes]]:
    """The seed's turns with 1 to 5 hostile changes: frames mutated, dropped, repeated, swapped, moved, inserted."""
    turns = [list(t) for t in seed.turns]
    for _ in range(rng.randrange(1, 6) if ops is None else ops):
        spots = [(t, i) for t, frames in enumerate(turns) for i in range(len(frames))]
        op = rng.randrange(10)
        t, i = rng.choice(spots) if spots else (0, 0)
        if not spots:
            turns[0].append(garbage(rng))
        elif op <= 3:
            if turns[0] and rng.random() < 0.2:
                t, i = 0, 0  # the connect reply: one frame that the whole call reads from
            turns[t][i] = mutate_frame(rng, turns[t][i], seed.uuid)
        elif op == 4:
            del turns[t][i]
        elif op == 5:  # repeated, here or later
            u = rng.randrange(t, len(turns))
            turns[u].insert(rng.randrange(len(turns[u]) + 1), turns[t][i])
        elif op == 6:  # two frames swapped: replies and events out of order
            u, j = rng.choice(spots)
            turns[t][i], turns[u][j] = turns[u][j], turns[t][i]
        elif op == 7:  # moved to another turn
            frame = turns[t].pop(i)
            u = rng.randrange(len(turns))
            turns[u].insert(rng.randrange(len(turns[u]) + 1), frame)
        elif op == 8:
            turns[t].insert(i, rng.choice(SYNTHETIC) if rng.random() < 0.7 else garbage(rng))
        else:  # a frame split by stray bytes
            frame = turns[t][i]
            at = rng.randrange(len(frame) + 1)
            turns[t][i] = frame[:at] + garbage(rng, 32) + frame[at:]
    return turns


def chunk_sizes(rng: Any, total: int) -> list[int]:
    """How a stream arrives: whole, in TCP-like pieces, or byte by byte at the start."""
    kind = rng.randrange(3)
    if kind == 0 or total == 0:
        return [total]
    if kind == 1:
        sizes = []
        while sum(sizes) < total:
            sizes.append(rng.choice((1, 2, 7, 61, 1448, 4096, 65536)))
        return sizes
    head = rng.randrange(1, 300)
    return [1] * head + [max(total - head, 0)]


def touch_frame(frame: esl.Frame) -> None:
    """Read a frame the way the Session and the call code do; ProtocolError may come out."""
    _ = frame.content_type
    if frame.content_type == "text/event-plain":
        ev = esl.parse_event(frame.body)
    else:
        ev = esl.Event(frame.headers)
    for key in ("Event-Name", "Unique-ID", "Application-UUID", "Hangup-Cause", "Caller-Caller-ID-Name",
                "Reply-Text", "Content-Length", "", "nope"):
        ev.get(key)
        _ = key in ev
        try:
            ev[key]
        except KeyError:
            pass
    ev.var("collected_digits")
    _ = (ev.name, ev.timestamp_us, ev.body)
    _ = ev.headers
    _ = ev.raw


def parse_stream(data: bytes, sizes: list[int]) -> int:
    """Split ``data``, fed in pieces, into frames and read every one; the frames read.

    ``esl.ProtocolError`` ends the stream (from the reader) or skips the frame (from an
    event); any other exception propagates: that is a parser bug.
    """
    reader = esl.FrameReader(None)
    pos = n = 0
    try:
        for size in [*sizes, len(data)]:
            reader.feed(data[pos : pos + size])
            pos += size
            while (frame := reader.next_frame()) is not None:
                n += 1
                try:
                    touch_frame(frame)
                except esl.ProtocolError:
                    pass
            if pos >= len(data):
                break
    except esl.ProtocolError:
        pass
    return n


def parser_input(rng: Any) -> tuple[bytes, list[int]]:
    """A mutated transcript stream, or raw garbage, and the pieces it arrives in."""
    if not SEEDS or rng.random() < 0.1:
        data = garbage(rng, 8192)
    else:
        seed = rng.choice(SEEDS)
        data = b"".join(b"".join(t) for t in mutate_turns(rng, seed))
    return data, chunk_sizes(rng, len(data))


def parser_case(rng: Any) -> int:
    """One parser case: the frames read from ``parser_input``."""
    return parse_stream(*parser_input(rng))


class Crash(AssertionError):
    """An exception other than the expected ones."""


class Hang(AssertionError):
    """Something did not end within its bound."""


NIXEVENT_REPLY = b"Content-Type: command/reply\nReply-Text: +OK events nixed\n\n"


def hostile_peer(sock: Any, seed: Seed, turns: list[list[bytes]], *, quiet: bool = False,
                 idle: float = 0.05, hold: float = 5.0) -> list[bytes]:
    """FreeSWITCH's side, misbehaving: each command gets the next (mutated) turn; returns the commands seen.

    The transcript's Event-UUIDs in the frames are replaced by the ones the other side
    sends, so that executes can complete.  If the other side stays quiet for ``idle``
    seconds the next turn is sent anyway (FreeSWITCH sends events when they happen).
    When the turns run out the socket is closed, or with ``quiet`` it stays open and
    silent until the other side closes it (at most ``hold`` seconds).
    """
    buf = bytearray()
    commands: list[bytes] = []
    transcript_uuids = iter(seed.event_uuids)
    remap: list[tuple[bytes, bytes]] = []
    t = 0
    try:
        sock.settimeout(idle)
        while t < len(turns):
            try:
                data = sock.recv(65536)
            except (TimeoutError, gevent.socket.timeout):
                data = None
            if data == b"":
                return commands
            # One answer per command: the next turn, or for nixevent (which the
            # transcripts' app never sent) FreeSWITCH's own reply, turns untouched.
            answers: list[bytes | None] = []
            if data is None:
                answers.append(None)
            else:
                buf += data
                while (end := buf.find(b"\n\n")) >= 0:
                    cmd = bytes(buf[:end])
                    del buf[: end + 2]
                    commands.append(cmd)
                    if cmd.startswith(b"nixevent "):
                        answers.append(NIXEVENT_REPLY)
                        continue
                    m = re.search(rb"\nEvent-UUID: ([^\n]*)", cmd)
                    old = next(transcript_uuids, None) if m else None
                    if m and old:
                        remap.append((old.encode(), m.group(1)))
                    answers.append(None)
            for literal in answers:
                if literal is not None:
                    sock.sendall(literal)
                    continue
                if t >= len(turns):
                    break
                out = b"".join(turns[t])
                for old_b, new_b in remap:
                    out = out.replace(old_b, new_b)
                t += 1
                if out:
                    sock.sendall(out)
        if quiet:
            sock.settimeout(hold)
            while sock.recv(65536):
                pass
    except OSError:
        pass
    finally:
        sock.close()
    return commands


def drive(session: esl.Session, seed: Seed, exec_timeout: float) -> str:
    """Play the transcript app's commands on ``session``, then finish; the name of what ended it."""
    try:
        for line, headers in seed.commands:
            if line == "connect":
                session.connect()
            elif line in ("myevents", "linger"):
                session._expect_ok(session._command(line + "\n\n"), line)
            elif line == "exit":
                break
            elif line.startswith("api "):
                session._command(line + "\n\n")
            elif line.startswith("sendmsg") and headers.get("call-command") == "hangup":
                session.hangup(headers.get("hangup-cause", "NORMAL_CLEARING"))
            elif line.startswith("sendmsg"):
                session.execute(headers.get("execute-app-name", ""), headers.get("execute-app-arg", ""),
                                timeout=exec_timeout)
            else:
                session._command(line + "\n\n")
        outcome = "ok"
    except esl.Hangup:
        outcome = "Hangup"
    except esl.ESLError as exc:
        outcome = type(exc).__name__
    finally:
        session.finish(timeout=exec_timeout)
    return outcome


def session_bound(seed: Seed, command_timeout: float, exec_timeout: float) -> float:
    """The longest a driven Session may take: every command at its deadline, then finish."""
    return len(seed.commands) * (command_timeout + exec_timeout) + exec_timeout + 1.0


def session_case(rng: Any, *, command_timeout: float = 0.2, exec_timeout: float = 0.3,
                 quiet: bool | None = None) -> tuple[str, float]:
    """A Session over a gevent socket pair against a hostile peer replaying a mutated transcript.

    Returns what ended the session and how long it took.  Raises Crash for an
    unexpected exception and Hang when the session outlives its bound.
    """
    seed = rng.choice(SEEDS)
    turns = mutate_turns(rng, seed)
    if quiet is None:
        quiet = rng.random() < 0.1
    ours, theirs = gevent.socket.socketpair()
    peer = gevent.spawn(hostile_peer, theirs, seed, turns, quiet=quiet)
    session = esl.Session(ours, command_timeout=command_timeout)
    bound = session_bound(seed, command_timeout, exec_timeout)
    started = time.monotonic()
    try:
        with gevent.Timeout(bound, Hang(f"{seed.name}: session still running after {bound:.1f} s")):
            outcome = drive(session, seed, exec_timeout)
    except (Hang, Crash):
        raise
    except Exception as exc:
        raise Crash(f"{seed.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        session.close()
        peer.join(2)
        peer.kill()
    elapsed = time.monotonic() - started
    if not session.closed:
        raise Crash(f"{seed.name}: session not closed")
    return outcome, elapsed


DAEMON_MENU = """
[[modules]]
code = "main"
kind = "menu"
prompt = "menu/main"
invalid_prompt = "menu/invalid"
options = { "1" = "ext:1001", "2" = "queue:support", "0" = "transfer:9196:public" }
timeout_ms = 3000
max_attempts = 2
next = "hangup"
error = "hangup:CALL_REJECTED"
"""


def fuzz_config(tmp_path: Path, command_timeout: float = 0.5) -> configmod.Config:
    """A menu daemon with a short command timeout."""
    path = write_config(tmp_path, DAEMON_MENU)
    path.write_text(path.read_text().replace("command_timeout_seconds = 5",
                                             f"command_timeout_seconds = {command_timeout}"))
    return configmod.load(path, check_files=False)


class DaemonUnderFire:
    """An in-process daemon whose call greenlets report any exception that escapes them."""

    def __init__(self, cfg: configmod.Config) -> None:
        self.server = in_process_server(cfg)
        self.escaped: list[str] = []
        handle = self.server._handle

        def guarded(sock: Any, address: Any) -> None:
            try:
                handle(sock, address)
            except Exception as exc:
                self.escaped.append(f"{type(exc).__name__}: {exc}")
                raise

        self.server.stream.set_handle(guarded)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def stop(self) -> None:
        self.server.stream.close()
        self.server.app.stop()
        self.server.app.store.close()


def daemon_case(rng: Any, d: DaemonUnderFire, *, quiet: bool = False, settle: float = 5.0) -> int:
    """One hostile connection to the daemon; the commands it sent.  Raises Hang if the call outlives ``settle``."""
    seed = rng.choice(SEEDS)
    turns = mutate_turns(rng, seed) if rng.random() < 0.9 else [[garbage(rng)]]
    fresh = str(uuidlib.UUID(int=rng.getrandbits(128), version=4)).encode()  # one journal row per case
    turns = [[frame.replace(seed.uuid.encode(), fresh) for frame in turn] for turn in turns]
    sock = gevent.socket.create_connection(d.address, timeout=5)
    commands = hostile_peer(sock, seed, turns, quiet=quiet, hold=settle)
    deadline = time.monotonic() + settle
    while d.server.calls and time.monotonic() < deadline:
        gevent.sleep(0.002)
    if d.server.calls:
        raise Hang(f"{seed.name}: {len(d.server.calls)} call(s) still live {settle} s after the peer closed")
    return len(commands)


def log_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def assert_still_serving(d: DaemonUnderFire) -> None:
    """A normal call right after: routed, bridged, journaled, nothing left live."""
    fake = run_call(d.address, Script(dtmf=["1"], bridges=["answer:5"]))
    wait_idle(d.server)
    assert fake.exit_received and not fake.error
    row = d.server.app.store.get_call(fake.uuid)
    assert row is not None and row["status"] == "answered"
    assert not d.server.calls and not d.escaped


needs_traces = pytest.mark.skipif(not SEEDS, reason="the FreeSWITCH wire transcripts (shared/esl) are absent")


def fast(examples: int) -> settings:
    """Seeded, no deadline per example, a fixed number of examples."""
    return settings(derandomize=True, deadline=None, max_examples=examples, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class RawFS:
    """A raw client on the daemon's port, playing FreeSWITCH by hand."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = gevent.socket.create_connection(address, timeout=5)
        self.buf = bytearray()

    def command(self, timeout: float = 5.0) -> tuple[str, dict[str, str]]:
        self.sock.settimeout(timeout)
        while (end := self.buf.find(b"\n\n")) < 0:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the daemon closed the socket")
            self.buf += data
        block = bytes(self.buf[:end]).decode()
        del self.buf[: end + 2]
        first, _, rest = block.partition("\n")
        return first, dict(line.split(": ", 1) for line in rest.split("\n") if ": " in line)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed_by_daemon(self, timeout: float) -> bool:
        """Whether the daemon closes its end within ``timeout`` (what it still sends is read and dropped)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    if not self.sock.recv(65536):
                        return True
                except (TimeoutError, gevent.socket.timeout):
                    return False
        except OSError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def _seed01() -> Seed:
    return next(s for s in SEEDS if s.name.startswith("01"))


def connect_reply() -> bytes:
    return _seed01().turns[0][0]


def answer_turn(event_uuid: str) -> bytes:
    """The transcript's frames for ``answer``, its Application-UUID made the daemon's."""
    seed = _seed01()
    return b"".join(seed.turns[3]).replace(seed.event_uuids[0].encode(), event_uuid.encode())


def setup(fs: RawFS) -> None:
    """connect, myevents, nixevent, linger answered as FreeSWITCH does."""
    assert fs.command()[0] == "connect"
    fs.send(connect_reply())
    assert fs.command()[0] == "myevents"
    fs.send(b"".join(_seed01().turns[1]))
    assert fs.command()[0].startswith("nixevent ")
    fs.send(NIXEVENT_REPLY)
    assert fs.command()[0] == "linger"
    fs.send(b"".join(_seed01().turns[2]))


def warnings(buf: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in log_lines(buf) if line.get("level") in ("warning", "error", "critical")]


def garbage_stream(rng: random.Random) -> bytes:
    return garbage(rng, 2048) + b"\n\n"


def truncated_connect(rng: random.Random) -> bytes:
    reply = connect_reply()
    return reply[: rng.randrange(100, len(reply) - 10)]


def huge_header(_rng: random.Random) -> bytes:
    return b"Content-Type: command/reply\nX-Huge: " + b"A" * (esl.MAX_HEADER_BYTES + 1024)


def bad_length(_rng: random.Random) -> bytes:
    return b"Content-Type: api/response\nContent-Length: \xc2\xb2\n\n+OK\n"


def reply_before_data(_rng: random.Random) -> bytes:
    """The linger reply where the connect reply belongs, then the connect reply."""
    return b"".join(_seed01().turns[2]) + connect_reply()


def invalid_utf8_escapes(rng: random.Random) -> bytes:
    """The connect reply with its Unique-ID line and a few values turned to nonsense bytes and escapes."""
    reply = connect_reply().replace(b"\nUnique-ID: ", b"\nUnique-ID: \xff%ZZ%0A")
    reply = reply.replace(b"\nChannel-Unique-ID: ", b"\nChannel-Unique-ID: \xc3\x28")
    nonsense = b"%ED%A0%80%00%0A" + rng.choice(ESCAPES)
    return reply.replace(b"\nCaller-Caller-ID-Name: ", b"\nCaller-Caller-ID-Name: " + nonsense)


SETUP_STREAMS = {
    "garbage": garbage_stream,
    "truncated": truncated_connect,
    "huge_header": huge_header,
    "bad_length": bad_length,
    "out_of_order": reply_before_data,
    "invalid_utf8": invalid_utf8_escapes,
}


ABSURD = {
    "created_time_25_digits": (b"\nCaller-Channel-Created-Time: ", b"9" * 25),
    "created_time_400_digits": (b"\nCaller-Channel-Created-Time: ", b"9" * 400),
    "end_uepoch_25_digits": (b"\nvariable_end_uepoch: ", b"9" * 25),
    "duration_superscript": (b"\nvariable_duration: ", "²".encode()),
}
