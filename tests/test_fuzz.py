"""FreeSWITCH misbehaving on the event socket: the parser, the Session and the daemon under hostile input.

The inputs are the real wire transcripts in the shared ``esl`` directory, mutated:
bad or missing ``Content-Length``, truncated bodies, huge headers, invalid UTF-8,
%-escapes that decode to nonsense, frames dropped, repeated or out of order, events
for another channel.  The generators (``harness/fuzz.py``) take any ``random.Random``-like object, so
hypothesis drives them in these tests (seeded, a few hundred cases) and
``bench/fuzz.py`` runs them at scale from plain integer seeds.

What must hold: the parser raises nothing but ``esl.ProtocolError``; a Session ends
with ``ESLError`` or ``Hangup`` within its deadlines; the daemon closes a bad
connection, logs it, keeps no live call and goes on serving.
"""

from __future__ import annotations

import io
import random
import socket
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import gevent.socket
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from fsapp import esl
from fsapp import log as logmod
from fsapp.simulate import wait_idle
from harness.fuzz import (
    ABSURD,
    BAD_LENGTHS,
    SETUP_STREAMS,
    DaemonUnderFire,
    Hang,
    RawFS,
    _seed01,
    answer_turn,
    assert_still_serving,
    connect_reply,
    daemon_case,
    drive,
    fast,
    fuzz_config,
    hostile_peer,
    log_lines,
    needs_traces,
    parse_stream,
    parser_case,
    session_case,
    setup,
    warnings,
)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The project's log pipeline as JSON lines into a buffer; the structlog config is restored after."""
    saved = structlog.get_config()
    buf = io.StringIO()
    logmod.configure("debug", json=True, stream=buf)
    try:
        yield buf
    finally:
        structlog.configure(**saved)


@pytest.fixture
def under_fire(tmp_path: Path) -> Iterator[Callable[..., DaemonUnderFire]]:
    started: list[DaemonUnderFire] = []

    def start(command_timeout: float = 0.5) -> DaemonUnderFire:
        d = DaemonUnderFire(fuzz_config(tmp_path, command_timeout))
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@fast(150)
@given(data=st.binary(max_size=4096), sizes=st.lists(st.integers(1, 512), max_size=8))
def test_reader_on_arbitrary_bytes_raises_only_protocol_error(data: bytes, sizes: list[int]) -> None:
    """FrameReader and the event readers on any bytes, in any pieces: frames, None or ProtocolError only."""
    parse_stream(data, sizes)


@fast(150)
@given(lines=st.lists(st.tuples(st.sampled_from(["Content-Length", "Content-Type", "Reply-Text", "Event-Name",
                                                   "Unique-ID", "X"]),
                                st.text(max_size=12)), max_size=6),
       body=st.binary(max_size=64))
def test_reader_on_framed_nonsense_raises_only_protocol_error(lines: list[tuple[str, str]], body: bytes) -> None:
    """Frames of real header names with arbitrary text values (any Content-Length text) never crash the reader."""
    head = "".join(f"{k}: {v}\n" for k, v in lines).encode("utf-8", "surrogatepass")
    data = head + b"\n" + body
    parse_stream(data, [len(data)])
    parse_stream(b"Content-Type: text/event-plain\nContent-Length: %d\n\n" % len(data) + data, [7, 64])


@needs_traces
@fast(200)
@given(rng=st.randoms(use_true_random=False))
def test_reader_on_mutated_transcripts_raises_only_protocol_error(rng: random.Random) -> None:
    """Mutated real streams (bad lengths, truncation, huge headers, bad UTF-8, odd escapes) parse or fail cleanly."""
    parser_case(rng)


@fast(150)
@given(body=st.binary(max_size=2048))
def test_parse_event_and_accessors_raise_only_protocol_error(body: bytes) -> None:
    """parse_event, Event.get/[]/headers/raw/timestamp_us on any body raise nothing but ProtocolError."""
    try:
        ev = esl.parse_event(body)
        for key in ("Event-Name", "Unique-ID", "Content-Length", "x"):
            ev.get(key)
        _ = (ev.name, ev.timestamp_us, ev.body, ev.headers)
    except esl.ProtocolError:
        pass


@fast(100)
@given(value=st.one_of(st.sampled_from(BAD_LENGTHS), st.binary(max_size=24)))
def test_any_content_length_text_is_a_number_or_a_protocol_error(value: bytes) -> None:
    """Whatever the Content-Length text (unicode digits, 5000 digits, signs), the reader waits, frames or refuses."""
    reader = esl.FrameReader(None)
    reader.feed(b"Content-Type: api/response\nContent-Length: " + value.replace(b"\n", b"") + b"\n\n+OK\n")
    try:
        reader.next_frame()
    except esl.ProtocolError:
        pass


def test_content_length_in_non_ascii_digits_is_refused() -> None:
    """'²' and Arabic-Indic digits pass str.isdigit(); the reader refuses them as a ProtocolError, not ValueError."""
    for value in ("²", "١٢", "٣", "9" * 5000):
        reader = esl.FrameReader(None)
        reader.feed(b"Content-Type: api/response\nContent-Length: " + value.encode() + b"\n\n+OK\n")
        with pytest.raises(esl.ProtocolError):
            reader.next_frame()


def test_absurd_event_timestamps_read_as_zero() -> None:
    """Event-Date-Timestamp out of 2000-2200, signed or in other digits reads as 0: no overflow, no years of talk."""
    for value in ("9" * 25, "9" * 400, "-5", "5", "²", "١٢", "1e9", ""):
        ev = esl.parse_event(f"Event-Name: CHANNEL_BRIDGE\nEvent-Date-Timestamp: {value}\n\n".encode())
        assert ev.timestamp_us == 0, value
    assert esl.parse_event(b"Event-Date-Timestamp: 1700000000000000\n\n").timestamp_us == 1700000000000000


def test_a_body_arriving_in_pieces_parses_its_header_block_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 MB body behind a 200 KB header block, fed 1 KB at a time: one header parse, not one per piece."""
    calls = []
    real = esl.parse_headers

    def counting(block: bytes, *, urlencoded: bool) -> dict[str, str]:
        calls.append(len(block))
        return real(block, urlencoded=urlencoded)

    monkeypatch.setattr(esl, "parse_headers", counting)
    body = b"x" * 1_000_000
    head = b"".join(b"X-Pad-%d: %s\n" % (i, b"p" * 90) for i in range(2000))
    data = head + b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body + b"Content-Type: x\n\n"
    reader = esl.FrameReader(None)
    frames = []
    for pos in range(0, len(data), 1024):
        reader.feed(data[pos : pos + 1024])
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    assert [f.content_type for f in frames] == ["api/response", "x"]
    assert frames[0].body == body
    assert len(calls) == 2


@needs_traces
@fast(60)
@given(rng=st.randoms(use_true_random=False))
def test_session_against_hostile_peer_ends_within_its_deadline(rng: random.Random) -> None:
    """A Session fed mutated transcript turns over a socket pair ends with ESLError/Hangup, closed, in its bound."""
    outcome, elapsed = session_case(rng)
    assert outcome in {"ok", "Hangup", "ProtocolError", "ConnectionClosed", "Timeout", "ESLError"}


@needs_traces
def test_session_against_a_silent_peer_times_out() -> None:
    """A peer that sends the connect reply and then nothing: each wait ends at its deadline, the session closes."""
    seed = _seed01()
    ours, theirs = gevent.socket.socketpair()
    peer = gevent.spawn(hostile_peer, theirs, seed, seed.turns[:1], quiet=True, idle=5.0)
    session = esl.Session(ours, command_timeout=0.2)
    started = time.monotonic()
    with gevent.Timeout(3, Hang("silent peer")):
        outcome = drive(session, seed, exec_timeout=0.3)
    assert outcome == "Timeout"
    assert session.closed and time.monotonic() - started < 1.5
    peer.join(2)


def test_a_wait_ends_when_another_greenlet_closes_the_socket() -> None:
    """A read waiting on a quiet peer is woken by a close elsewhere (shutdown): ConnectionClosed, not the deadline."""
    ours, theirs = gevent.socket.socketpair()
    session = esl.Session(ours, command_timeout=30)
    reader = gevent.spawn(session._pump, time.monotonic() + 30)
    gevent.sleep(0.05)
    assert not reader.ready()
    started = time.monotonic()
    ours.close()
    reader.join(5)
    assert isinstance(reader.exception, esl.ConnectionClosed)
    assert time.monotonic() - started < 1
    theirs.close()


def test_a_peer_that_stops_reading_fails_a_send_within_the_command_timeout() -> None:
    """FreeSWITCH wedged: the socket's buffers fill and the write gives up after command_timeout."""
    ours, theirs = gevent.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    session = esl.Session(ours, command_timeout=0.3)
    started = time.monotonic()
    with gevent.Timeout(5, Hang("the write never gave up")), pytest.raises(esl.ConnectionClosed):
        for _ in range(10_000):
            session._send("sendmsg\ncall-command: execute\nexecute-app-name: playback\n" + "x" * 1000 + "\n\n")
    assert time.monotonic() - started < 3
    session.close()
    theirs.close()


def test_replies_repeated_during_a_wait_are_not_hoarded() -> None:
    """20,000 unsolicited +OK replies while an app runs: the session keeps at most one, and the app completes."""
    ours, theirs = gevent.socket.socketpair()

    def peer() -> None:
        fs = RawFS.__new__(RawFS)
        fs.sock, fs.buf = theirs, bytearray()
        _name, headers = fs.command()
        body = (b"Event-Name: CHANNEL_EXECUTE_COMPLETE\nApplication: playback\n"
                b"Application-UUID: " + headers["Event-UUID"].encode() + b"\n\n")
        fs.send(b"Content-Type: command/reply\nReply-Text: +OK\n\n" * 20_000)
        fs.send(b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body)

    g = gevent.spawn(peer)
    session = esl.Session(ours, command_timeout=2.0)
    done = session.execute("playback", "prompts/x.wav", timeout=5)
    assert done.get("Application") == "playback"
    assert len(session._replies) <= 1
    g.join(2)
    session.close()
    theirs.close()


def test_repeated_bridge_events_do_not_grow_the_session() -> None:
    """20,000 CHANNEL_BRIDGE events during an app: the session keeps MAX_BRIDGES spans at most; the app completes."""
    ours, theirs = gevent.socket.socketpair()

    def event(body: bytes) -> bytes:
        return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body

    def peer() -> None:
        fs = RawFS.__new__(RawFS)
        fs.sock, fs.buf = theirs, bytearray()
        _name, headers = fs.command()
        fs.send(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
        bridge = event(b"Event-Name: CHANNEL_BRIDGE\nEvent-Date-Timestamp: 1795400000000000\n"
                       b"Bridge-B-Unique-ID: b-leg\n\n")
        fs.send(bridge * 20_000)
        fs.send(event(b"Event-Name: CHANNEL_EXECUTE_COMPLETE\nApplication: bridge\n"
                      b"Application-UUID: " + headers["Event-UUID"].encode() + b"\n\n"))

    g = gevent.spawn(peer)
    session = esl.Session(ours, command_timeout=2.0)
    done = session.execute("bridge", "user/1001", timeout=10)
    assert done.get("Application") == "bridge"
    assert len(session.bridges) == esl.MAX_BRIDGES
    g.join(2)
    session.close()
    theirs.close()


@needs_traces
@pytest.mark.parametrize("bad", ["../../etc/passwd", "a b", "x\ny", "", "%2E%2E%2Fx"])
def test_connect_refuses_a_malformed_unique_id(bad: str) -> None:
    """A Unique-ID with a slash, a space or a line break (it names recordings) is a ProtocolError at connect."""
    seed = _seed01()
    reply = connect_reply().replace(seed.uuid.encode(), bad.encode())
    ours, theirs = gevent.socket.socketpair()
    peer = gevent.spawn(hostile_peer, theirs, seed, [[reply]], quiet=True, hold=1.0)
    session = esl.Session(ours, command_timeout=0.5)
    with pytest.raises(esl.ProtocolError):
        session.connect()
    session.close()
    peer.join(2)


@needs_traces
@pytest.mark.parametrize("kind", sorted(SETUP_STREAMS))
def test_daemon_closes_and_logs_a_bad_setup_stream(under_fire: Callable[..., DaemonUnderFire],
                                                   json_log: io.StringIO, kind: str) -> None:
    """Garbage, truncated, huge-header, bad-length, out-of-order or nonsense connect: closed, logged, serving on."""
    d = under_fire()
    fs = RawFS(d.address)
    assert fs.command()[0] == "connect"
    fs.send(SETUP_STREAMS[kind](random.Random(kind)))
    if kind in ("garbage", "truncated"):
        fs.sock.shutdown(gevent.socket.SHUT_WR)  # and FreeSWITCH goes away
    assert fs.closed_by_daemon(3.0)
    fs.close()
    wait_idle(d.server, 3)
    assert not d.server.calls and not d.escaped
    assert d.server.app.store.list_calls() == []
    warned = warnings(json_log)
    assert [w["event"] for w in warned] == ["call_setup_failed"], warned
    assert warned[0]["reason"]
    assert_still_serving(d)


@needs_traces
def test_daemon_ignores_another_channels_events_then_logs_the_closed_socket(
        under_fire: Callable[..., DaemonUnderFire], json_log: io.StringIO) -> None:
    """A CHANNEL_HANGUP and a completion for another uuid change nothing; EOF mid-call is call_socket_failed."""
    d = under_fire()
    fs = RawFS(d.address)
    setup(fs)
    name, headers = fs.command()
    assert headers["execute-app-name"] == "answer"
    seed = _seed01()
    other = str(uuidlib.uuid4()).encode()
    hangup = next(f for f in seed.turns[7] if b"Event-Name: CHANNEL_HANGUP\n" in f)
    completion = answer_turn(headers["Event-UUID"]).split(b"Content-Length: ")[-1]
    stray = hangup + b"Content-Length: " + completion
    fs.send(stray.replace(seed.uuid.encode(), other))
    fs.send(answer_turn(headers["Event-UUID"]))
    name, headers = fs.command()
    assert headers.get("execute-app-name") == "play_and_get_digits"  # the call went on
    fs.close()
    wait_idle(d.server, 3)
    assert not d.server.calls and not d.escaped
    [row] = d.server.app.store.list_calls()
    assert row["status"] == "abandoned" and row["hangup_cause"] == ""
    assert [w["event"] for w in warnings(json_log)] == ["call_socket_failed"]
    assert_still_serving(d)


@needs_traces
def test_daemon_gives_up_on_a_peer_silent_after_ok(under_fire: Callable[..., DaemonUnderFire],
                                                   json_log: io.StringIO) -> None:
    """FreeSWITCH that says +OK to answer and then nothing: the call ends at the command timeout, logged."""
    d = under_fire(command_timeout=0.3)
    fs = RawFS(d.address)
    setup(fs)
    assert fs.command()[1]["execute-app-name"] == "answer"
    fs.send(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
    started = time.monotonic()
    try:
        assert fs.closed_by_daemon(3.0), "the call greenlet still waits for answer's completion"
    finally:
        fs.close()
    assert time.monotonic() - started < 1.5
    wait_idle(d.server, 3)
    assert not d.server.calls and not d.escaped
    warned = warnings(json_log)
    assert [w["event"] for w in warned] == ["call_socket_failed"] and "answer" in warned[0]["reason"]
    [row] = d.server.app.store.list_calls()
    assert row["status"] == "abandoned"
    assert_still_serving(d)


@needs_traces
@fast(25)
@given(rng=st.randoms(use_true_random=False))
def test_daemon_under_mutated_transcripts_keeps_serving(tmp_path_factory: pytest.TempPathFactory,
                                                        rng: random.Random) -> None:
    """Mutated transcript streams against the live daemon: no escaped exception, no crash log, no live call."""
    saved = structlog.get_config()
    buf = io.StringIO()
    logmod.configure("debug", json=True, stream=buf)
    d = DaemonUnderFire(fuzz_config(tmp_path_factory.mktemp("fuzz")))
    try:
        for _ in range(2):
            daemon_case(rng, d, settle=3.0)
        assert not d.escaped
        lines = log_lines(buf)
        crashes = [line for line in lines if line["event"] == "call_crashed"]
        assert not crashes, crashes
        rows = d.server.app.store.list_calls()
        assert len(rows) == len([line for line in lines if line["event"] == "call_started"])
        assert "active" not in {r["status"] for r in rows}
        assert_still_serving(d)
    finally:
        d.stop()
        structlog.configure(**saved)


@needs_traces
@pytest.mark.parametrize("case", sorted(ABSURD))
def test_daemon_journals_a_call_whose_times_are_absurd(under_fire: Callable[..., DaemonUnderFire],
                                                       json_log: io.StringIO, case: str) -> None:
    """Absurd created/end epochs or a '²' duration: the call still ends, is journaled, nothing crashes."""
    d = under_fire()
    name, value = ABSURD[case]
    seed = _seed01()
    turns = [[frame.replace(name, name + value) for frame in turn] for turn in seed.turns]
    hostile_peer(gevent.socket.create_connection(d.address, timeout=5), seed, turns)
    wait_idle(d.server, 3)
    assert not d.server.calls
    assert not d.escaped
    assert [line["event"] for line in log_lines(json_log) if line["event"] == "call_crashed"] == []
    assert len(d.server.app.store.list_calls()) == 1
