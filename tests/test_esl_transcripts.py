"""Wire transcripts of a real FreeSWITCH 1.10 against our parser, our Session and the stand-in.

The transcripts live in the shared ``esl`` directory next to the project (one call
per file, described by its README).  Three groups of tests:

- the parser: every byte FreeSWITCH sent, split into frames and events;
- ``esl.Session`` driven by the recorded bytes through a socket that releases them
  only after the command that preceded them in the transcript;
- ``FakeFreeSWITCH`` driven by the commands the transcript's app sent, its frames
  compared with the real ones on framing, order, header names and encoding.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest

from fsapp import esl
from fsapp.fakefs import DISCONNECT_BODY, FakeFreeSWITCH, Script, fs_encode
from harness import esltrace

TRACE_DIR = Path(__file__).resolve().parents[2] / "shared" / "esl"

pytestmark = pytest.mark.skipif(
    not TRACE_DIR.is_dir(), reason="the FreeSWITCH wire transcripts (shared/esl next to the project) are absent"
)

FILES = [
    "01-happy-path",
    "02-caller-hangs-up-during-digits",
    "03a-bridge-no-answer",
    "03b-bridge-busy",
    "03c-bridge-busy-without-continue-on-fail",
    "04-no-linger-caller-hangup",
    "05-persian-caller-name",
    "06-transfer",
    "07-callcenter",
    "07b-callcenter-hangup-at-execute-complete",
    "08-api-and-uuid-break",
    "09-set-and-hangup-cause",
    "10-inbound-with-rtp-stats",
    "11-callcenter-park-after-bridge",
]

CONTENT_TYPES = {"command/reply", "text/event-plain", "api/response", "text/disconnect-notice"}
PERSIAN_NAME = "مشتری تست"
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_cache: dict[str, list[esltrace.Block]] = {}


def trace(name: str) -> list[esltrace.Block]:
    """The blocks of one transcript (read once)."""
    if name not in _cache:
        path = TRACE_DIR / f"{name}.txt"
        if not path.is_file():
            pytest.skip(f"transcript {path.name} is absent")
        _cache[name] = esltrace.load(path)
    return _cache[name]


# --------------------------------------------------------------------- helpers


def split_frames(data: bytes, sizes: Iterable[int] | None = None) -> list[esl.Frame]:
    """Feed ``data`` to a FrameReader (whole, or in chunks of the given sizes) and collect its frames."""
    reader = esl.FrameReader(None)
    frames: list[esl.Frame] = []
    if sizes is None:
        reader.feed(data)
    else:
        pos = 0
        for n in sizes:
            if pos >= len(data):
                break
            reader.feed(data[pos : pos + n])
            pos += n
            while (frame := reader.next_frame()) is not None:
                frames.append(frame)
        assert pos >= len(data), "the chunk sizes did not cover the stream"
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    return frames


def raw_headers(text: bytes) -> list[tuple[str, str]]:
    """``Name: value`` lines of a header block, in order, values left encoded."""
    out: list[tuple[str, str]] = []
    for line in text.decode("utf-8").split("\n"):
        if line:
            name, sep, value = line.partition(": ")
            assert sep, f"not a header line: {line[:80]!r}"
            out.append((name, value))
    return out


@dataclass
class Msg:
    """One message from FreeSWITCH (real or stand-in), split for comparison."""

    raw: bytes
    ctype: str
    headers: list[tuple[str, str]]  # event body headers for events, outer headers otherwise
    event: esl.Event | None = None

    @property
    def name(self) -> str:
        """Event-Name for events and the connect reply, Content-Type otherwise."""
        for k, v in self.headers:
            if k == "Event-Name":
                return v
        return self.ctype

    def get(self, key: str) -> str:
        for k, v in self.headers:
            if k == key:
                return v
        return ""


def messages(frames: Iterable[bytes]) -> list[Msg]:
    out: list[Msg] = []
    for raw in frames:
        head, _, body = raw.partition(b"\n\n")
        outer = raw_headers(head)
        ctype = dict(outer).get("Content-Type", "")
        if ctype == "text/event-plain":
            out.append(Msg(raw, ctype, raw_headers(body.partition(b"\n\n")[0]), esl.parse_event(body)))
        else:
            out.append(Msg(raw, ctype, outer))
    return out


def is_connect_reply(m: Msg) -> bool:
    return m.ctype == "command/reply" and m.get("Event-Name") == "CHANNEL_DATA"


def events(msgs: list[Msg], *, with_connect: bool = False) -> list[Msg]:
    return [m for m in msgs if m.event is not None or (with_connect and is_connect_reply(m))]


def step(m: Msg) -> tuple[str, ...]:
    """What an event means for the order of a call (the parts that must agree with FreeSWITCH)."""
    ev = m.event
    assert ev is not None
    if ev.name == "CHANNEL_EXECUTE":
        return (ev.name, ev.get("Application"))
    if ev.name == "CHANNEL_EXECUTE_COMPLETE":
        return (ev.name, ev.get("Application"), ev.get("Application-Response"))
    if ev.name == "CHANNEL_STATE":
        return (ev.name, ev.get("Channel-State"))
    if ev.name == "DTMF":
        return (ev.name, ev.get("DTMF-Digit"))
    if ev.name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
        return (ev.name, ev.get("Hangup-Cause"))
    return (ev.name,)


def sent_executes(blocks: list[esltrace.Block]) -> list[tuple[str, str, str]]:
    """(app, arg, Event-UUID) of every sendmsg execute the app sent, in order."""
    out = []
    for first, headers in esltrace.sent_commands(blocks):
        if first == "sendmsg" and headers.get("call-command") == "execute":
            out.append((headers["execute-app-name"], headers.get("execute-app-arg", ""), headers["Event-UUID"]))
    return out


def nixed(blocks: list[esltrace.Block]) -> set[str]:
    """The event names the transcript's app turned off with nixevent (10 and 11)."""
    return {name for first, _ in esltrace.sent_commands(blocks) if first.startswith("nixevent ")
            for name in first.split()[1:]}


def check_application_uuids(sent: list[tuple[str, str, str]], msgs: list[Msg]) -> list[tuple[str, str, str]]:
    """Every EXECUTE/EXECUTE_COMPLETE of an app the app sent carries its Event-UUID; return the sent ones never run.

    Where the app nixed CHANNEL_EXECUTE (10, 11) each completion is matched to the sent app directly."""
    pending = list(sent)
    started: list[tuple[str, str, str]] = []
    sent_ids = {u for _, _, u in sent}
    if not any(m.name == "CHANNEL_EXECUTE" for m in msgs if m.event is not None):
        started, pending = pending, []
    for m in msgs:
        ev = m.event
        if ev is None or ev.name not in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
            continue
        key = (ev.get("Application"), ev.get("Application-Data"))
        if ev.name == "CHANNEL_EXECUTE":
            match = next((s for s in pending if (s[0], s[1]) == key), None)
            if match is None:
                assert ev.get("Application-UUID") not in sent_ids, f"{key} was not sent but carries a sent UUID"
                continue
            pending.remove(match)
            started.append(match)
            assert ev.get("Application-UUID") == match[2], f"CHANNEL_EXECUTE {key}"
        else:
            match = next((s for s in started if (s[0], s[1]) == key), None)
            if match is None:
                assert ev.get("Application-UUID") not in sent_ids, f"{key} was not sent but carries a sent UUID"
                continue
            started.remove(match)
            assert ev.get("Application-UUID") == match[2], f"CHANNEL_EXECUTE_COMPLETE {key}"
    assert not started, f"executes that started and never completed: {started}"
    return pending


def normalized(raw: bytes) -> bytes:
    return UUID_RE.sub(b"<uuid>", raw)


# ============================================================ a. the parser


def test_every_transcript_is_covered() -> None:
    """The tests name every transcript in the directory, in order."""
    assert [p.stem for p in esltrace.transcripts(TRACE_DIR)] == FILES


@pytest.mark.parametrize("name", FILES)
def test_transcript_blocks_follow_the_documented_format(name: str) -> None:
    """Each file is SENT/RECV blocks plus socket facts: commands end in a blank line, Content-Length fits the body."""
    blocks = trace(name)
    assert {b.direction for b in blocks} <= {"sent", "recv", "eof", "quiet", "close"}
    assert blocks[0].direction == "sent" and blocks[0].raw == b"connect\n\n"
    assert blocks[-1].direction == "eof"
    for b in blocks:
        if b.direction == "sent":
            assert b.raw.endswith(b"\n\n") and b.raw.count(b"\n\n") == 1
        elif b.direction == "recv":
            head, sep, body = b.raw.partition(b"\n\n")
            assert sep and len(body) == int(b.header("Content-Length") or 0)


@pytest.mark.parametrize("name", FILES)
def test_whole_stream_gives_one_frame_per_recv_block(name: str) -> None:
    """All RECV bytes fed at once split into exactly the recorded messages, header and body."""
    blocks = esltrace.recv_blocks(trace(name))
    frames = split_frames(esltrace.recv_bytes(trace(name)))
    assert len(frames) == len(blocks)
    for frame, block in zip(frames, blocks, strict=True):
        head, _, body = block.raw.partition(b"\n\n")
        assert frame.headers == esl.parse_headers(head, urlencoded=False)
        assert frame.body == body


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", FILES)
def test_random_small_chunks_give_the_same_frames(name: str, seed: int) -> None:
    """Bytes arriving 1-97 at a time (seeded) give the same frames as the whole stream."""
    data = esltrace.recv_bytes(trace(name))
    rng = random.Random(seed * 1000 + FILES.index(name))
    sizes = [rng.randint(1, 97) for _ in range(len(data))]
    chunked = split_frames(data, sizes)
    whole = split_frames(data)
    assert len(chunked) == len(esltrace.recv_blocks(trace(name)))
    assert [(f.headers, f.body) for f in chunked] == [(f.headers, f.body) for f in whole]


@pytest.mark.parametrize("name", FILES)
def test_every_frame_has_a_known_content_type(name: str) -> None:
    """FreeSWITCH sent only command/reply, text/event-plain, api/response and text/disconnect-notice."""
    for frame in split_frames(esltrace.recv_bytes(trace(name))):
        assert frame.content_type in CONTENT_TYPES


@pytest.mark.parametrize("name", FILES)
def test_every_event_parses_with_an_event_name(name: str) -> None:
    """Each event body parses with parse_event, names its event and belongs to the call's channel."""
    frames = split_frames(esltrace.recv_bytes(trace(name)))
    channel = esl.decode(frames[0].headers["Unique-ID"])
    count = 0
    for frame in frames:
        if frame.content_type != "text/event-plain":
            continue
        ev = esl.parse_event(frame.body)
        assert ev.name, frame.body[:200]
        assert ev.get("Event-Date-Timestamp").isdigit()
        if ev.name != "CUSTOM":
            assert ev.get("Unique-ID") == channel
        count += 1
    assert count >= 8


@pytest.mark.parametrize("name", FILES)
def test_connect_reply_reply_text_decodes_to_ok_newline(name: str) -> None:
    """The connect reply's URL-encoded Reply-Text (%2BOK%0A) stays one header and decodes to '+OK\\n'."""
    first = split_frames(esltrace.recv_bytes(trace(name)))[0]
    assert first.content_type == "command/reply"
    assert first.headers["Reply-Text"] == "%2BOK%0A"
    assert esl.decode(first.headers["Reply-Text"]) == "+OK\n"
    assert first.body == b""


def test_persian_caller_name_decodes() -> None:
    """05: the UTF-8 caller name decodes to 'مشتری تست' in the connect reply and in every event."""
    frames = split_frames(esltrace.recv_bytes(trace("05-persian-caller-name")))
    channel = {k: esl.decode(v) for k, v in frames[0].headers.items()}
    for key in (
        "Caller-Caller-ID-Name",
        "Channel-Caller-ID-Name",
        "Caller-Orig-Caller-ID-Name",
        "variable_sip_from_display",
    ):
        assert channel[key] == PERSIAN_NAME, key
    assert channel["Caller-Caller-ID-Number"] == "09121234567"
    assert channel["variable_sip_full_from"].startswith(f'"{PERSIAN_NAME}" <sip:09121234567@127.0.0.1:5070>')
    for frame in frames:
        if frame.content_type == "text/event-plain":
            ev = esl.parse_event(frame.body)
            if ev.name != "CUSTOM":
                assert ev.get("Caller-Caller-ID-Name") == PERSIAN_NAME, ev.name


@pytest.mark.parametrize("name", FILES)
def test_application_uuid_echoes_the_sent_event_uuid(name: str) -> None:
    """The Event-UUID of each sendmsg execute comes back as Application-UUID on its EXECUTE and EXECUTE_COMPLETE."""
    blocks = trace(name)
    never_ran = check_application_uuids(sent_executes(blocks), messages(esltrace.recv_frames(blocks)))
    if name == "02-caller-hangs-up-during-digits":
        assert [app for app, _, _ in never_ran] == ["playback"]  # sent after the linger notice
    else:
        assert never_ran == []


# ================================================== b. esl.Session on the bytes


class ReplaySocket:
    """FreeSWITCH's side of a transcript: RECV bytes are released once the command before them was sent."""

    def __init__(self, blocks: list[esltrace.Block], chunk: int = 65536) -> None:
        self._segments: list[tuple[bytes | None, bytes]] = []
        sent: bytes | None = None
        data = b""
        for b in blocks:
            if b.direction == "sent":
                self._segments.append((sent, data))
                sent, data = b.raw, b""
            elif b.direction == "recv":
                data += b.raw
        self._segments.append((sent, data))
        self._ends_with_eof = blocks[-1].direction == "eof"
        self._buf = bytearray(self._segments[0][1])
        self._next = 1
        self._chunk = chunk
        self.sent: list[bytes] = []
        self.skipped: list[bytes] = []  # recorded commands the session did not send
        self.late: list[bytes] = []  # sent after FreeSWITCH closed the socket
        self.starved = False
        self.closed = False
        self.timeouts: list[float | None] = []

    def recv(self, n: int) -> bytes:
        if self._buf:
            out = bytes(self._buf[: min(n, self._chunk)])
            del self._buf[: len(out)]
            return out
        if self._next >= len(self._segments) and self._ends_with_eof:
            return b""
        self.starved = True
        raise TimeoutError("the session waits for bytes FreeSWITCH sent only after a command it has not sent")

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)
        for j in range(self._next, len(self._segments)):
            recorded, _ = self._segments[j]
            if recorded == data:
                for k in range(self._next, j + 1):
                    if k < j:
                        self.skipped.append(self._segments[k][0] or b"")
                    self._buf += self._segments[k][1]
                self._next = j + 1
                return
        if self._next >= len(self._segments) and self._ends_with_eof:
            self.late.append(data)
            return
        raise AssertionError(f"the session sent {data!r}, which the transcript's app never sent at this point")

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def settimeout(self, value: float | None) -> None:
        self.timeouts.append(value)

    def close(self) -> None:
        self.closed = True


@dataclass
class Replay:
    session: esl.Session
    sock: ReplaySocket
    blocks: list[esltrace.Block]
    seen: list[esl.Event] = field(default_factory=list)

    def names(self) -> list[str]:
        return [ev.name for ev in self.seen]


class SpySession(esl.Session):
    """A Session that keeps every event it receives, parsed or skipped."""

    seen: list[esl.Event]

    def _event(self, body: bytes) -> None:
        self.seen.append(esl.parse_event(body))
        super()._event(body)


@pytest.fixture(params=[65536, 61], ids=["whole", "chunks61"])
def replay(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Replay]:
    """A Session on a ReplaySocket, with the transcript's Event-UUIDs handed out in order."""

    def make(name: str) -> Replay:
        blocks = trace(name)
        ids = iter([uuid.UUID(u) for _, _, u in sent_executes(blocks)])
        monkeypatch.setattr(esl, "new_app_uuid", lambda: str(next(ids)))
        sock = ReplaySocket(blocks, request.param)
        session = SpySession(sock, command_timeout=2.0)
        rep = Replay(session, sock, blocks)
        session.seen = rep.seen
        return rep

    return make


def open_lingering(s: esl.Session) -> None:
    """connect, myevents, linger: how every transcript's app opened the socket (04 has no linger)."""
    s.connect()
    command(s, "myevents")
    command(s, "linger")


def command(s: esl.Session, name: str) -> None:
    """One bare command (``myevents``, ``linger``) as the transcript's app sent it; +OK expected.

    The daemon sends these with ``Session.setup``, in one write; the transcripts' apps
    sent them one at a time, and the replay checks the bytes, so they go through here."""
    s._expect_ok(s._command(f"{name}\n\n"), name)


def assert_sent_as_recorded(rep: Replay, *, skipped: int = 0) -> None:
    """The session's commands are byte for byte those of the transcript's app."""
    recorded = [b.raw for b in esltrace.sent_blocks(rep.blocks)]
    on_time = rep.sock.sent[: len(rep.sock.sent) - len(rep.sock.late)]
    assert [s for s in recorded if s not in rep.sock.skipped] == on_time
    assert len(rep.sock.skipped) == skipped
    assert not rep.sock.starved
    assert rep.sock.closed and rep.session.closed


def test_session_happy_path(replay: Callable[[str], Replay]) -> None:
    """01: connect, answer, playback, digits 1234#, a bridged span, hangup execute raising Hangup, exit."""
    rep = replay("01-happy-path")
    s = rep.session
    channel = s.connect()
    assert channel["Reply-Text"] == "+OK\n" and channel["Socket-Mode"] == "async" and channel["Control"] == "full"
    assert s.uuid == "f38756e0-eab2-48fb-9511-6f3ee41620d8"
    assert channel["Caller-Caller-ID-Name"] == "SIPp customer"
    assert s.channel.var("sip_from_user") == "5551234"
    command(s, "myevents")
    command(s, "linger")
    assert s.execute("answer").get("Application-Response") == "_none_"
    played = s.execute("playback", "prompts/connecting.wav")
    assert played.get("Application-Response") == "FILE PLAYED" and played.var("playback_ms") == "2526"
    got = s.execute(
        "play_and_get_digits", "1 10 1 8000 # prompts/enter_digits.wav prompts/invalid.wav collected_digits ^\\d+$ 3000"
    )
    assert got.var("collected_digits") == "1234"
    assert got.var("read_result") == "success" and got.var("read_terminator_used") == "#"
    bridged = s.execute("bridge", "sofia/external/agent@127.0.0.1:5090")
    assert bridged.var("originate_disposition") == "SUCCESS" and bridged.var("DIALSTATUS") == "SUCCESS"
    assert bridged.var("bridge_hangup_cause") == "NORMAL_CLEARING"
    assert bridged.var("last_bridge_proto_specific_hangup_cause") == "sip:200"
    assert len(s.bridges) == 1
    span = s.bridges[0]
    assert span.other_uuid == bridged.var("last_bridge_to")
    assert 3.0 < (span.end_us - span.start_us) / 1e6 < 3.1
    assert not s.hungup
    with pytest.raises(esl.Hangup) as hung:
        s.execute("hangup", "NORMAL_CLEARING")
    assert hung.value.cause == "NORMAL_CLEARING"
    s.finish()
    assert s.hangup_complete is not None
    assert s.hangup_complete.var("billsec") == "9" and s.hangup_complete.var("hangup_cause_q850") == "16"
    assert s.hangup_complete.var("sip_hangup_disposition") == "send_bye"
    assert s.lingering
    assert rep.sock.sent[-1] == b"exit\n\n"
    assert_sent_as_recorded(rep)


def test_session_caller_hangs_up_during_digits(replay: Callable[[str], Replay]) -> None:
    """02: play_and_get_digits raises Hangup, a later execute is not sent, finish collects HANGUP_COMPLETE and exits."""
    rep = replay("02-caller-hangs-up-during-digits")
    s = rep.session
    open_lingering(s)
    with pytest.raises(esl.Hangup) as hung:
        s.execute(
            "play_and_get_digits",
            "1 10 1 30000 # tone_stream://%(300,0,800) prompts/invalid.wav collected_digits ^\\d+$ 10000",
        )
    assert hung.value.cause == "NORMAL_CLEARING"
    sent_before = len(rep.sock.sent)
    with pytest.raises(esl.Hangup):
        s.execute("playback", "prompts/connecting.wav")
    assert len(rep.sock.sent) == sent_before  # the real app sent it and got +OK, and nothing ran
    s.finish()
    done = s.hangup_complete
    assert done is not None and done.var("sip_hangup_disposition") == "recv_bye"
    assert s.hangup_cause == "NORMAL_CLEARING" and s.lingering
    assert "CHANNEL_EXECUTE_COMPLETE" in rep.names()[rep.names().index("CHANNEL_HANGUP") :]
    assert rep.sock.sent[-1] == b"exit\n\n"
    assert_sent_as_recorded(rep, skipped=1)


def test_session_bridge_no_answer(replay: Callable[[str], Replay]) -> None:
    """03a: a bridge that only rings completes with NO_ANSWER variables and the caller stays up."""
    rep = replay("03a-bridge-no-answer")
    s = rep.session
    open_lingering(s)
    done = s.execute("bridge", "{originate_timeout=5}sofia/external/nobody@127.0.0.1:5091")
    assert done.var("originate_disposition") == "NO_ANSWER" and done.var("DIALSTATUS") == "NOANSWER"
    assert done.var("bridge_hangup_cause") == "" and s.bridges == [] and not s.hungup
    assert s.execute("playback", "prompts/invalid.wav").get("Application-Response") == "FILE PLAYED"
    with pytest.raises(esl.Hangup):
        s.execute("hangup", "NORMAL_CLEARING")
    s.finish()
    assert s.hangup_complete is not None
    assert_sent_as_recorded(rep)


def test_session_bridge_busy_with_continue_on_fail(replay: Callable[[str], Replay]) -> None:
    """03b: set continue_on_fail, the busy bridge completes with USER_BUSY, a prompt plays, hangup, exit."""
    rep = replay("03b-bridge-busy")
    s = rep.session
    open_lingering(s)
    assert s.execute("set", "continue_on_fail=true").var("continue_on_fail") == "true"
    done = s.execute("bridge", "{originate_timeout=5}sofia/external/busy@127.0.0.1:5092")
    assert done.var("originate_disposition") == "USER_BUSY" and done.var("DIALSTATUS") == "BUSY"
    assert done.var("originate_failed_cause") == "USER_BUSY"
    assert done.var("sip_invite_failure_status") == "486" and done.var("sip_invite_failure_phrase") == "Busy Here"
    assert s.bridges == [] and not s.hungup
    assert s.execute("playback", "prompts/invalid.wav").get("Application-Response") == "FILE PLAYED"
    with pytest.raises(esl.Hangup):
        s.execute("hangup", "NORMAL_CLEARING")
    s.finish()
    assert s.hangup_complete is not None and s.hangup_cause == "NORMAL_CLEARING"
    assert_sent_as_recorded(rep)


def test_session_bridge_busy_hangs_up_the_caller(replay: Callable[[str], Replay]) -> None:
    """03c: without continue_on_fail the busy bridge raises Hangup with cause USER_BUSY."""
    rep = replay("03c-bridge-busy-without-continue-on-fail")
    s = rep.session
    open_lingering(s)
    with pytest.raises(esl.Hangup) as hung:
        s.execute("bridge", "{originate_timeout=5}sofia/external/busy@127.0.0.1:5092")
    assert hung.value.cause == "USER_BUSY"
    s.finish()
    done = s.hangup_complete
    assert done is not None
    assert done.var("hangup_cause") == "USER_BUSY" and done.var("hangup_cause_q850") == "17"
    assert s.bridges == []
    assert rep.sock.sent[-1] == b"exit\n\n"
    assert_sent_as_recorded(rep)


def test_session_no_linger_caller_hangup(replay: Callable[[str], Replay]) -> None:
    """04: without linger the playback raises Hangup, finish still reads HANGUP_COMPLETE and the disconnect notice."""
    rep = replay("04-no-linger-caller-hangup")
    s = rep.session
    s.connect()
    command(s, "myevents")
    with pytest.raises(esl.Hangup) as hung:
        s.execute("playback", "music/8000/moh.wav")
    assert hung.value.cause == "NORMAL_CLEARING"
    s.finish()
    assert s.hangup_complete is not None and not s.lingering
    completes = [ev for ev in rep.seen if ev.name == "CHANNEL_EXECUTE_COMPLETE"]
    assert [ev.get("Application-Response") for ev in completes] == ["PLAYBACK ERROR", "PLAYBACK ERROR"]
    # FreeSWITCH has closed the socket by now; an exit sent into it is harmless.
    assert rep.sock.late in ([], [b"exit\n\n"])
    assert_sent_as_recorded(rep)


def test_session_set_and_hangup_cause(replay: Callable[[str], Replay]) -> None:
    """09: set_var, then hangup(USER_BUSY) as a call-command: no execute events, HANGUP_COMPLETE says USER_BUSY."""
    rep = replay("09-set-and-hangup-cause")
    s = rep.session
    open_lingering(s)
    assert s.execute("set", "fsapp_module=club").var("fsapp_module") == "club"
    before = len(rep.seen)
    s.hangup("USER_BUSY")
    s.finish()
    after = rep.names()[before:]
    assert "CHANNEL_EXECUTE" not in after
    assert after[0] == "CHANNEL_HANGUP" and s.hangup_cause == "USER_BUSY"
    done = s.hangup_complete
    assert done is not None and done.var("hangup_cause") == "USER_BUSY" and done.var("fsapp_module") == "club"
    assert_sent_as_recorded(rep)


# ============================================ c. the stand-in against the real thing

SCRIPTS: dict[str, dict[str, Any]] = {
    "01-happy-path": {"dtmf": ["1234"], "bridges": ["answer:3"]},
    "02-caller-hangs-up-during-digits": {"hangup_after": 1},
    "03a-bridge-no-answer": {"bridges": ["no-answer"]},
    "03b-bridge-busy": {"bridges": ["busy"]},
    "03c-bridge-busy-without-continue-on-fail": {"bridges": ["busy"]},
    "04-no-linger-caller-hangup": {"hangup_after": 1},
    "05-persian-caller-name": {"caller": "09121234567", "caller_name": PERSIAN_NAME},
    "06-transfer": {},
    "07-callcenter": {"bridges": ["answer:3"]},
    "07b-callcenter-hangup-at-execute-complete": {"bridges": ["answer:3"]},
    "08-api-and-uuid-break": {},
    "09-set-and-hangup-cause": {},
    # fsapp itself through a proxy: the caller's speech and the agent's are real RTP.
    "10-inbound-with-rtp-stats": {
        "caller": "09121234567", "caller_name": "Ali Rezaei", "context": "fsapp", "bridges": ["answer:10"],
        "variables": {"RECORD_STEREO": "true", "socket_resume": "true"},
        "rtp_in_packets": 532, "rtp_in_skipped": 30, "rtp_out_packets": 501, "recorded_ms": 10600,
    },
    "11-callcenter-park-after-bridge": {
        "caller": "09121234567", "caller_name": "Ali Rezaei", "context": "fsapp", "destination": "7002",
        "bridges": ["answer:10"], "agent": "agent@default",
        "variables": {"park_after_bridge": "true", "socket_resume": "true"},
        "rtp_in_packets": 477, "rtp_in_skipped": 85, "rtp_out_packets": 530,
    },
}
# Scenarios the stand-in plays out the same way as FreeSWITCH did.
SAME = [
    "01-happy-path",
    "02-caller-hangs-up-during-digits",
    "03a-bridge-no-answer",
    "03b-bridge-busy",
    "03c-bridge-busy-without-continue-on-fail",
    "04-no-linger-caller-hangup",
    "05-persian-caller-name",
    "08-api-and-uuid-break",
    "09-set-and-hangup-cause",
    "10-inbound-with-rtp-stats",
    "11-callcenter-park-after-bridge",
]
EVENT_NAMES = [
    "CHANNEL_PARK",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "DTMF",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_UNPARK",
    "CHANNEL_STATE",
    "CHANNEL_HANGUP_COMPLETE",
]
# Variables FreeSWITCH sets only when it writes the CDR (they appear in CHANNEL_HANGUP_COMPLETE only).
CDR_VARIABLES = {"bridge_epoch", "bridge_uepoch", "digits_dialed", "hangup_cause", "hangup_cause_q850"}
# Variables FreeSWITCH has not set yet in these events (test_variables_appear_when_freeswitch_sets_them).
EARLY_VARIABLES = {"CHANNEL_HANGUP": {"sip_hangup_disposition"}, "CHANNEL_BRIDGE": {"cc_agent", "cc_agent_bridged"}}


@dataclass
class StandInRun:
    fake: FakeFreeSWITCH
    error: str = ""

    @property
    def msgs(self) -> list[Msg]:
        return messages(self.fake.frames_out)


class ScriptedApp:
    """The transcript's app: sends each recorded command byte for byte, waits for its reply and completion."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.reader = esl.FrameReader(conn)
        self.down = False  # a disconnect notice (linger or disconnect) arrived
        self.eof = False
        self.steps: list[tuple[str, ...]] = []  # the events read so far

    def read(self) -> esl.Frame | None:
        if self.eof:
            return None
        try:
            frame = self.reader.read(time.monotonic() + 5.0)
        except esl.ConnectionClosed:
            self.eof = True
            return None
        if frame.content_type == "text/disconnect-notice":
            self.down = True
        elif frame.content_type == "text/event-plain":
            self.steps.append(step(Msg(frame.body, frame.content_type, [], esl.parse_event(frame.body))))
        return frame

    def wait_for(self, awaited: tuple[tuple[str, ...], int] | None) -> None:
        """Read until the stand-in has sent the event the real app reacted to (its step, how many so far)."""
        if awaited is None:
            return
        want, count = awaited
        while self.steps.count(want) < count and not self.down and self.read() is not None:
            pass

    def run(self, blocks: list[esltrace.Block]) -> None:
        commands = esltrace.sent_commands(blocks)
        for (first, headers), data, awaited in zip(commands, one_write(blocks), reacted_to(blocks), strict=True):
            if self.eof:
                return
            self.wait_for(awaited)
            if data:
                self.conn.sendall(data)
            if first == "exit":
                break
            while (frame := self.read()) is not None and frame.content_type not in ("command/reply", "api/response"):
                pass
            if first != "sendmsg" or self.down:
                continue
            app_uuid = headers.get("Event-UUID", "")
            while (frame := self.read()) is not None and frame.content_type != "text/disconnect-notice":
                if frame.content_type == "text/event-plain" and app_uuid:
                    ev = esl.parse_event(frame.body)
                    if ev.name == "CHANNEL_EXECUTE_COMPLETE" and ev.get("Application-UUID") == app_uuid:
                        break
        while self.read() is not None:
            pass


def reacted_to(blocks: list[esltrace.Block]) -> list[tuple[tuple[str, ...], int] | None]:
    """For each sent command, the event the real app had just read (its step and count), if one came last.

    fsapp waits for an event before some commands (11: the hangup follows CHANNEL_UNBRIDGE),
    so the scripted app waits for the stand-in's same event before sending them."""
    out: list[tuple[tuple[str, ...], int] | None] = []
    seen: list[tuple[str, ...]] = []
    last: tuple[str, ...] | None = None
    for b in blocks:
        if b.direction == "sent":
            out.append((last, seen.count(last)) if last is not None else None)
        elif b.direction == "recv":
            m = messages([b.raw])[0]
            last = step(m) if m.event is not None and m.name not in ("CHANNEL_PARK", "CUSTOM") else None
            if last is not None:
                seen.append(last)
    return out


def one_write(blocks: list[esltrace.Block]) -> list[bytes]:
    """For each sent command, what to write then: it and the commands sent with it, or b"" if already written.

    Commands with no reply between them went out in one write (fsapp's myevents,
    nixevent, linger and answer), so FreeSWITCH read them all before it acted."""
    out: list[bytes] = []
    first = -1
    for b in blocks:
        if b.direction == "sent":
            if first >= 0:
                out[first] += b.raw
                out.append(b"")
            else:
                first = len(out)
                out.append(b.raw)
        elif b.direction == "recv":
            first = -1
    return out


_runs: dict[str, StandInRun] = {}


def stand_in(name: str) -> StandInRun:
    """Run FakeFreeSWITCH against the transcript's commands (once per scenario)."""
    if name in _runs:
        return _runs[name]
    blocks = trace(name)
    listener = gevent.socket.socket(gevent.socket.AF_INET, gevent.socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    fake = FakeFreeSWITCH(listener.getsockname(), Script(**SCRIPTS[name]), linger_timeout=5.0, io_timeout=5.0)
    worker = gevent.spawn(fake.run)
    error = ""
    try:
        with gevent.Timeout(10):
            conn, _ = listener.accept()
        try:
            with gevent.Timeout(20):
                ScriptedApp(conn).run(blocks)
        finally:
            conn.close()
        worker.join(timeout=10)
    except (gevent.Timeout, esl.ESLError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        listener.close()
        worker.kill()
    run = StandInRun(fake, error or fake.error)
    _runs[name] = run
    return run


def real_msgs(name: str) -> list[Msg]:
    return messages(esltrace.recv_frames(trace(name)))


def both_sources() -> list[Any]:
    return [pytest.param(src, name, id=f"{src}-{name}") for src in ("real", "stand-in") for name in FILES]


def msgs_of(source: str, name: str) -> list[Msg]:
    return real_msgs(name) if source == "real" else stand_in(name).msgs


@pytest.mark.parametrize("name", FILES)
def test_stand_in_runs_the_recorded_commands(name: str) -> None:
    """The stand-in answers every command the real app sent, in the real order, without error."""
    run = stand_in(name)
    assert run.error == ""
    recorded = [first for first, _ in esltrace.sent_commands(trace(name))]
    assert run.fake.commands == recorded
    assert run.fake.exit_received == (recorded[-1] == "exit")


@pytest.mark.parametrize(("source", "name"), both_sources())
def test_connect_reply_framing(source: str, name: str) -> None:
    """The connect reply has no Content-Length, opens with CHANNEL_DATA and closes with the four reply headers."""
    raw = msgs_of(source, name)[0].raw
    assert raw.startswith(b"Event-Name: CHANNEL_DATA\n")
    assert raw.endswith(b"\nContent-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n")
    assert b"Content-Length" not in raw
    assert raw.count(b"\n\n") == 1


@pytest.mark.parametrize(("source", "name"), both_sources())
def test_event_framing(source: str, name: str) -> None:
    """Events are 'Content-Length: N', 'Content-Type: text/event-plain', a blank line, N bytes ending in one."""
    for m in events(msgs_of(source, name)):
        head, _, body = m.raw.partition(b"\n\n")
        assert head == b"Content-Length: %d\nContent-Type: text/event-plain" % len(body)
        assert body.endswith(b"\n\n") and body.count(b"\n\n") == 1


REPLIES = {
    b"Content-Type: command/reply\nReply-Text: %s\n\n" % text
    for text in (b"+OK", b"+OK Events Enabled", b"+OK events nixed", b"+OK will linger",
                 b"+OK event listener enabled plain", b"+OK bye")
}


@pytest.mark.parametrize(("source", "name"), both_sources())
def test_other_framings(source: str, name: str) -> None:
    """Replies, api responses and disconnect notices are framed as FreeSWITCH frames them."""
    for m in msgs_of(source, name)[1:]:
        if m.ctype == "command/reply":
            assert m.raw in REPLIES, m.raw
        elif m.ctype == "api/response":
            head, _, body = m.raw.partition(b"\n\n")
            assert head == b"Content-Type: api/response\nContent-Length: %d" % len(body)
        elif m.ctype == "text/disconnect-notice":
            if m.get("Content-Disposition") == "linger":
                assert re.fullmatch(
                    rb"Content-Type: text/disconnect-notice\nControlled-Session-UUID: [0-9a-f-]{36}\n"
                    rb"Content-Disposition: linger\nChannel-Name: sofia/external/\d+@127\.0\.0\.1:5070\n"
                    rb"Linger-Time: -1\nContent-Length: 0\n\n",
                    m.raw,
                ), m.raw
            else:
                assert re.fullmatch(
                    rb"Content-Type: text/disconnect-notice\nControlled-Session-UUID: [0-9a-f-]{36}\n"
                    rb"Content-Disposition: disconnect\nContent-Length: 67\n\n" + re.escape(DISCONNECT_BODY),
                    m.raw,
                ), m.raw
        else:
            assert m.ctype == "text/event-plain"


@pytest.mark.parametrize(("source", "name"), both_sources())
def test_application_headers_come_last(source: str, name: str) -> None:
    """In CHANNEL_EXECUTE(_COMPLETE) Application, -Data, -Response, -UUID are the last headers, after every variable."""
    for m in events(msgs_of(source, name)):
        if m.name not in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
            continue
        names = [k for k, _ in m.headers]
        tail_start = names.index("Application")
        tail = names[tail_start:]
        expected = ["Application", "Application-Data", "Application-Response", "Application-UUID"]
        assert tail == [n for n in expected if n in tail], tail
        assert ("Application-Response" in tail) == (m.name == "CHANNEL_EXECUTE_COMPLETE")
        assert not any(n.startswith("variable_") for n in tail)
        assert names[tail_start - 1].startswith("variable_")


@pytest.mark.parametrize("name", FILES)
def test_stand_in_echoes_application_uuids(name: str) -> None:
    """The stand-in returns each sent Event-UUID as Application-UUID, as FreeSWITCH does."""
    never_ran = [app for app, _, _ in check_application_uuids(sent_executes(trace(name)), stand_in(name).msgs)]
    if name == "02-caller-hangs-up-during-digits":
        assert never_ran == ["playback"]  # sent after the linger notice, as in reality
    elif name == "07b-callcenter-hangup-at-execute-complete":
        assert never_ran in ([], ["hangup"])  # see test_hangup_at_callcenter_complete_matches_freeswitch
    else:
        assert never_ran == []


def real_steps(name: str) -> list[tuple[str, ...]]:
    return [step(m) for m in events(real_msgs(name)) if m.name != "CHANNEL_PARK"]


def stand_in_steps(name: str) -> list[tuple[str, ...]]:
    return [step(m) for m in events(stand_in(name).msgs) if m.name != "CHANNEL_PARK"]


@pytest.mark.parametrize("name", SAME)
def test_event_sequence_matches_freeswitch(name: str) -> None:
    """Apart from CHANNEL_PARK's racy position, the stand-in emits FreeSWITCH's events in FreeSWITCH's order."""
    assert stand_in_steps(name) == real_steps(name)
    if "CHANNEL_PARK" in nixed(trace(name)):  # nixed in the write with myevents, before the socket app parked
        assert [m for m in events(real_msgs(name)) + events(stand_in(name).msgs) if m.name == "CHANNEL_PARK"] == []
        return
    for msgs in (real_msgs(name), stand_in(name).msgs):
        parks = [i for i, m in enumerate(events(msgs)) if m.name == "CHANNEL_PARK"]
        assert len(parks) == 1
        assert parks[0] < next(i for i, m in enumerate(events(msgs)) if m.name == "CHANNEL_EXECUTE")


def test_transfer_sequence_matches_freeswitch() -> None:
    """06: transfer gives EXECUTE, EXECUTE_COMPLETE, UNPARK, socket complete, CS_ROUTING, CS_EXECUTE."""
    real = real_steps("06-transfer")
    real = real[: real.index(("CHANNEL_STATE", "CS_EXECUTE")) + 1]  # the dialplan's own apps follow
    assert stand_in_steps("06-transfer") == real


def test_callcenter_sequence_matches_freeswitch() -> None:
    """07: callcenter completes at agent answer, then the uuid_bridge events in FreeSWITCH's order."""
    real = [s for s in real_steps("07-callcenter") if s[0] != "CUSTOM"]  # fsapp never subscribes to CUSTOM
    assert stand_in_steps("07-callcenter") == real


def test_hangup_at_callcenter_complete_matches_freeswitch() -> None:
    """07b: a hangup sent on callcenter's completion cuts the agent's conversation at once."""
    real = [s for s in real_steps("07b-callcenter-hangup-at-execute-complete") if s[0] != "CUSTOM"]
    assert stand_in_steps("07b-callcenter-hangup-at-execute-complete") == real


@pytest.mark.parametrize("name", SAME)
def test_non_event_frames_match_freeswitch(name: str) -> None:
    """Replies, api responses and notices are byte-identical to FreeSWITCH's (UUIDs aside), in the same order."""
    real = [normalized(m.raw) for m in real_msgs(name)[1:] if m.event is None]
    ours = [normalized(m.raw) for m in stand_in(name).msgs[1:] if m.event is None]
    assert ours == real


TEARDOWN = [
    ("CHANNEL_UNPARK",),
    ("CHANNEL_EXECUTE_COMPLETE", "socket"),
    ("CHANNEL_STATE", "CS_HANGUP"),
    ("CHANNEL_STATE", "CS_REPORTING"),
    ("CHANNEL_HANGUP_COMPLETE",),
]


@pytest.mark.parametrize(("source", "name"), [p for p in both_sources() if p.values[1] in SAME])
def test_order_at_hangup(source: str, name: str) -> None:
    """HANGUP, running app's completion, UNPARK, socket, CS_HANGUP, CS_REPORTING, HANGUP_COMPLETE, then the notice.

    Events the app nixed (10, 11) do not come, nor a socket completion that came earlier (11)."""
    msgs = msgs_of(source, name)
    evs = events(msgs)
    i = next(i for i, m in enumerate(evs) if m.name == "CHANNEL_HANGUP")
    running = [m for m in evs[:i] if m.name == "CHANNEL_EXECUTE"]
    done = {m.get("Application-UUID") for m in evs[:i] if m.name == "CHANNEL_EXECUTE_COMPLETE"}
    open_apps = [m for m in running if m.get("Application-UUID") not in done]
    after = evs[i + 1 :]
    off = nixed(trace(name))
    left_socket = any(step(m)[:2] == ("CHANNEL_EXECUTE_COMPLETE", "socket") for m in evs[:i])
    teardown = [t for t in TEARDOWN if t[0] not in off and not (left_socket and t[1:] == ("socket",))]
    if any(h.get("call-command") == "hangup" for _, h in esltrace.sent_commands(trace(name))):
        assert open_apps == []  # call-command hangup: no app is running
    else:
        assert len(open_apps) == 1
        first = after.pop(0)
        assert first.name == "CHANNEL_EXECUTE_COMPLETE"
        assert first.get("Application-UUID") == open_apps[0].get("Application-UUID")
    assert [step(m)[: len(t)] for m, t in zip(after, teardown, strict=True)] == teardown
    tail = msgs[msgs.index(after[-1]) + 1 :]
    disposition = "disconnect" if name.startswith("04") else "linger"
    notices = [m for m in tail if m.ctype == "text/disconnect-notice"]
    assert notices and notices[0].get("Content-Disposition") == disposition
    assert all(m.event is None for m in tail)


@pytest.mark.parametrize("source", ["real", "stand-in"])
def test_sendmsg_after_linger_gets_ok_and_nothing_runs(source: str) -> None:
    """02: a sendmsg execute after the linger notice is answered +OK and no event follows, then exit ends the call."""
    msgs = msgs_of(source, "02-caller-hangs-up-during-digits")
    i = next(i for i, m in enumerate(msgs) if m.get("Content-Disposition") == "linger")
    assert [normalized(m.raw) for m in msgs[i + 1 :]] == [
        b"Content-Type: command/reply\nReply-Text: +OK\n\n",
        b"Content-Type: command/reply\nReply-Text: +OK bye\n\n",
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: <uuid>\nContent-Disposition: disconnect\n"
        b"Content-Length: 67\n\n" + DISCONNECT_BODY,
    ]


@pytest.mark.parametrize("source", ["real", "stand-in"])
def test_call_command_hangup_runs_no_execute(source: str) -> None:
    """09: call-command hangup gets +OK then CHANNEL_HANGUP USER_BUSY, and no CHANNEL_EXECUTE(_COMPLETE) of its own."""
    msgs = msgs_of(source, "09-set-and-hangup-cause")
    i = next(i for i, m in enumerate(msgs) if m.name == "CHANNEL_EXECUTE_COMPLETE" and m.get("Application") == "set")
    after = msgs[i + 1 :]
    assert after[0].raw == b"Content-Type: command/reply\nReply-Text: +OK\n\n"
    assert after[1].name == "CHANNEL_HANGUP" and after[1].get("Hangup-Cause") == "USER_BUSY"
    apps = [m.get("Application") for m in after if m.name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE")]
    assert apps == ["socket"]
    done = next(m for m in after if m.name == "CHANNEL_HANGUP_COMPLETE")
    assert done.get("variable_hangup_cause") == "USER_BUSY" and done.get("variable_hangup_cause_q850") == "17"
    assert done.get("variable_sip_hangup_disposition") == "send_bye"


def header_names(msgs_by_file: Iterable[list[Msg]]) -> dict[str, set[str]]:
    names: dict[str, set[str]] = defaultdict(set)
    for msgs in msgs_by_file:
        for m in events(msgs, with_connect=True):
            names[m.name] |= {k for k, _ in m.headers}
    return names


def real_names() -> dict[str, set[str]]:
    return header_names(real_msgs(n) for n in FILES)


def stand_in_names() -> dict[str, set[str]]:
    return header_names(stand_in(n).msgs for n in FILES)


def test_stand_in_emits_only_real_header_names() -> None:
    """Each non-variable header the stand-in emits appears in FreeSWITCH's events of the same name."""
    real = real_names()
    for event, names in stand_in_names().items():
        assert event in real, event
        extra = {n for n in names if not n.startswith("variable_")} - real[event]
        assert extra == set(), event


def test_stand_in_emits_only_real_variables() -> None:
    """Each variable_* the stand-in emits appears in FreeSWITCH's events of that name (known deviations aside)."""
    real = real_names()
    for event, names in stand_in_names().items():
        if event in ("CHANNEL_STATE", "DTMF"):
            continue  # test_state_and_dtmf_events_carry_no_variables
        allowed = {"variable_" + v for v in CDR_VARIABLES | EARLY_VARIABLES.get(event, set())}
        extra = {n for n in names if n.startswith("variable_")} - real[event] - allowed
        assert extra == set(), event


@pytest.mark.parametrize("source", ["real", "stand-in"])
def test_state_and_dtmf_events_carry_no_variables(source: str) -> None:
    """CHANNEL_STATE and DTMF events carry no variable_* headers."""
    for name in FILES:
        for m in events(msgs_of(source, name)):
            if m.name in ("CHANNEL_STATE", "DTMF"):
                assert not [k for k, _ in m.headers if k.startswith("variable_")], (name, m.name)


@pytest.mark.parametrize("source", ["real", "stand-in"])
def test_cdr_variables_only_in_hangup_complete(source: str) -> None:
    """bridge_epoch, bridge_uepoch, digits_dialed, hangup_cause and hangup_cause_q850 appear only in HANGUP_COMPLETE."""
    for name in FILES:
        for m in events(msgs_of(source, name), with_connect=True):
            if m.name in ("CHANNEL_HANGUP_COMPLETE", "CUSTOM"):
                continue
            found = {k[9:] for k, _ in m.headers if k.startswith("variable_")} & CDR_VARIABLES
            assert found == set(), (name, m.name)


@pytest.mark.parametrize("source", ["real", "stand-in"])
def test_variables_appear_when_freeswitch_sets_them(source: str) -> None:
    """CHANNEL_HANGUP lacks sip_hangup_disposition and CHANNEL_BRIDGE lacks cc_agent and cc_agent_bridged."""
    for name in FILES:
        for m in events(msgs_of(source, name)):
            early = {"variable_" + v for v in EARLY_VARIABLES.get(m.name, set())}
            assert early.isdisjoint(k for k, _ in m.headers), (name, m.name)


def header_order(msgs_by_file: Iterable[list[Msg]], event: str) -> list[list[str]]:
    out = []
    for msgs in msgs_by_file:
        for m in events(msgs, with_connect=True):
            if m.name == event:
                out.append([k for k, _ in m.headers if not k.startswith("variable_")])
    return out


@pytest.mark.parametrize("event", ["CHANNEL_DATA", *EVENT_NAMES])
def test_header_order_matches_freeswitch(event: str) -> None:
    """The headers the stand-in shares with FreeSWITCH come in FreeSWITCH's order, each as often."""
    reference = header_order((real_msgs(n) for n in FILES), event)
    assert reference, event
    real = reference[0]
    for ours in header_order((stand_in(n).msgs for n in FILES), event):
        assert [k for k in ours if k in real] == [k for k in real if k in ours]


# Headers whose values depend on the clock, on generated ids or on the SIP peers.
VOLATILE = re.compile(
    r"Time|Timestamp|Event-Date|Event-Sequence|Event-Calling|UUID|Unique-ID|uuid|epoch|_ms$|_seconds$|msec|"
    r"duration|billsec|signal_bond|_to$|originate_causes|bridge_channel"
)
# Variables the daemon reads: compared for presence as well as value.
KEY_VARIABLES = [
    "read_result",
    "collected_digits",
    "read_terminator_used",
    "originate_disposition",
    "DIALSTATUS",
    "originate_failed_cause",
    "bridge_hangup_cause",
    "last_bridge_hangup_cause",
    "last_bridge_proto_specific_hangup_cause",
    "continue_on_fail",
    "fsapp_module",
    "hangup_cause",
    "hangup_cause_q850",
    "sip_hangup_disposition",
    "current_application",
    "current_application_data",
]
STATE_HEADERS = ("Channel-Call-State", "Channel-State-Number")  # test_state_headers_during_teardown_match_freeswitch


@pytest.mark.parametrize("name", SAME)
def test_header_values_match_freeswitch(name: str) -> None:
    """Event by event, the values the stand-in shares with FreeSWITCH are equal, encoded the same way."""
    real = [m for m in events(real_msgs(name), with_connect=True) if m.name != "CHANNEL_PARK"]
    ours = [m for m in events(stand_in(name).msgs, with_connect=True) if m.name != "CHANNEL_PARK"]
    assert [m.name for m in ours] == [m.name for m in real]
    keys = {"variable_" + k for k in KEY_VARIABLES}
    for r, o in zip(real, ours, strict=True):
        rv = dict(r.headers)
        for k, v in o.headers:
            if k in rv and k not in STATE_HEADERS and (k in keys or not VOLATILE.search(k)):
                assert v == rv[k], (r.name, k)


def test_key_variables_present_as_in_freeswitch() -> None:
    """Each variable the daemon may read is in the stand-in's event wherever FreeSWITCH's event has it."""
    keys = {"variable_" + k for k in KEY_VARIABLES}
    missing = []
    for name in SAME:
        real = [m for m in events(real_msgs(name), with_connect=True) if m.name != "CHANNEL_PARK"]
        ours = [m for m in events(stand_in(name).msgs, with_connect=True) if m.name != "CHANNEL_PARK"]
        for r, o in zip(real, ours, strict=True):
            for k in keys & dict(r.headers).keys():
                if k[9:] not in CDR_VARIABLES | EARLY_VARIABLES.get(r.name, set()) and k not in dict(o.headers):
                    missing.append((name, r.name, k))
    assert missing == []


def test_state_headers_during_teardown_match_freeswitch() -> None:
    """Channel-Call-State and Channel-State-Number of every event agree with FreeSWITCH's."""
    for name in SAME:
        real = [m for m in events(real_msgs(name)) if m.name != "CHANNEL_PARK"]
        ours = [m for m in events(stand_in(name).msgs) if m.name != "CHANNEL_PARK"]
        for r, o in zip(real, ours, strict=True):
            for k in ("Channel-State", "Channel-Call-State", "Channel-State-Number", "Answer-State"):
                assert o.get(k) == r.get(k), (name, r.name, k)


def test_fs_encode_reproduces_every_real_value() -> None:
    """Decoding any header value FreeSWITCH sent and encoding it with fs_encode gives FreeSWITCH's bytes back."""
    count = 0
    for name in FILES:
        for m in events(real_msgs(name), with_connect=True):
            for k, v in m.headers:
                if is_connect_reply(m) and k in ("Content-Type", "Reply-Text", "Socket-Mode", "Control"):
                    continue
                assert fs_encode(esl.decode(v)) == v, (name, m.name, k)
                count += 1
    assert count > 20000


@pytest.mark.parametrize(
    ("plain", "encoded"),
    [
        (" ", "%20"),
        ("#", "%23"),
        ("@", "%40"),
        (":", "%3A"),
        ("+", "%2B"),
        ("\n", "%0A"),
        ("\r", "%0D"),
        ("%", "%25"),
        ("=", "%3D"),
        (";", "%3B"),
        ('"', "%22"),
        ("<>", "%3C%3E"),
        ("{}", "%7B%7D"),
        ("^\\", "%5E%5C"),
        ("/$(),.-_", "/$(),.-_"),
        (PERSIAN_NAME, "%D9%85%D8%B4%D8%AA%D8%B1%DB%8C%20%D8%AA%D8%B3%D8%AA"),
        ("sofia/external/5551234@127.0.0.1:5070", "sofia/external/5551234%40127.0.0.1%3A5070"),
        ("tone_stream://%(300,0,800)", "tone_stream%3A//%25(300,0,800)"),
    ],
)
def test_fs_encode_examples_from_the_transcripts(plain: str, encoded: str) -> None:
    """fs_encode turns space, #, @, :, + and UTF-8 into %XX and keeps / $ ( ) , as the transcripts show."""
    assert fs_encode(plain) == encoded
    assert esl.decode(encoded) == plain


def switch_url_encode(value: str) -> str:
    """FreeSWITCH 1.10's switch_url_encode (switch_utils.c), which serializes event header values."""
    unsafe = b'\r\n #%&+:;<=>?@[\\]^`{|}"'
    hexdigits = b"0123456789ABCDEF"
    data = value.encode("utf-8")
    out = []
    for i, b in enumerate(data):
        if b == 0x25 and len(data) - i > 2 and data[i + 1] in hexdigits and data[i + 2] in hexdigits:
            out.append("%")  # an existing %XX is not encoded again
        elif b < 0x20 or b > 0x7E or b in unsafe:
            out.append(f"%{b:02X}")
        else:
            out.append(chr(b))
    return "".join(out)


def test_switch_url_encode_port_agrees_with_the_transcripts() -> None:
    """The port of switch_url_encode reproduces every value in the transcripts (so it is a fair reference)."""
    for name in FILES:
        for m in events(real_msgs(name)):
            for k, v in m.headers:
                assert switch_url_encode(esl.decode(v)) == v, (name, m.name, k)


def test_fs_encode_matches_switch_url_encode() -> None:
    """fs_encode agrees with switch_url_encode on every printable ASCII character and on an existing %XX."""
    for c in map(chr, range(0x20, 0x7F)):
        assert fs_encode(c) == switch_url_encode(c), c
    assert fs_encode("file_string://a.wav!b.wav") == "file_string%3A//a.wav!b.wav"
    assert fs_encode("a%41b") == switch_url_encode("a%41b") == "a%41b"
