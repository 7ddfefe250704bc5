"""FreeSWITCH's side of an outbound event socket, for simulate, loadtest and tests.

``FakeCall`` connects to the daemon as FreeSWITCH's ``socket`` app would, answers
``connect`` with channel data, answers every command, and emits the events a real
FreeSWITCH 1.10 emits, in the same order and framing as the wire transcripts:
CHANNEL_HANGUP before the running app's completion, the linger notice after
CHANNEL_HANGUP_COMPLETE, ``+OK`` but no events for a sendmsg after hangup, and so on.

Time is virtual: a 10-minute bridge advances the call's clock (and every
FreeSWITCH timestamp the daemon sees) by 10 minutes without waiting for it,
unless the bridge is scripted to ``hold`` in real time.
"""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import gevent
import gevent.socket

from fsapp.esl import FrameReader, parse_headers

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!$'()*,-./_~")
# Byte -> text; '%' stays raw here and _LONE_PERCENT encodes the ones that start no %XX.
_ENCODED = [chr(b) if b in _SAFE or b == 0x25 else f"%{b:02X}" for b in range(256)]
_NEEDS_ENCODING = re.compile(r"[^A-Za-z0-9!$'()*,\-./_~]").search
_LONE_PERCENT = re.compile(r"%(?![0-9A-F]{2})")
DISCONNECT_BODY = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
CORE_UUID = "3d9d09fa-d0e9-48f9-aaf9-98e77cabf86a"
SOCKET_ARG = "127.0.0.1:8084 async full"  # the dialplan's socket app data


def fs_encode(value: str) -> str:
    """URL-encode a header value as FreeSWITCH's switch_url_encode does.

    Space is %20 and UTF-8 bytes are %XX; letters, digits and ``!$'()*,-./_~`` are
    kept, and so is a ``%`` that already starts an uppercase ``%XX``.
    """
    if _NEEDS_ENCODING(value) is None:
        return value
    out = "".join([_ENCODED[b] for b in value.encode("utf-8")])
    return _LONE_PERCENT.sub("%25", out) if "%" in value else out


MAX_TALK_SECONDS = 86400.0


def _talk_seconds(plan: str, text: str) -> float:
    """The SECONDS of ``answer:SECONDS``: a finite number from 0 to a day."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"bridge plan {plan!r}: {text!r} is not a number of seconds") from None
    if not 0 <= seconds <= MAX_TALK_SECONDS:  # also false for nan
        raise ValueError(f"bridge plan {plan!r}: talk seconds must be 0 to {MAX_TALK_SECONDS:g}, not {text}")
    return seconds


@dataclass
class BridgePlan:
    """How one bridge (or callcenter) attempt goes."""

    outcome: str  # answer | no-answer | busy | unregistered | failed
    seconds: float = 0.0  # talk time when answered
    caller_hangs_up: bool = False  # the caller, not the agent, ends the talk
    hold: bool = False  # keep the bridge up in real time (for kill tests)

    @classmethod
    def parse(cls, text: str) -> BridgePlan:
        parts = text.split(":")
        kind = parts[0]
        if kind == "answer":
            seconds = _talk_seconds(text, parts[1]) if len(parts) > 1 and parts[1] else 5.0
            flags = set(parts[2:])
            unknown = flags - {"caller", "hold"}
            if unknown:
                raise ValueError(f"bridge plan {text!r}: unknown flag {sorted(unknown)[0]!r}")
            return cls("answer", seconds, "caller" in flags, "hold" in flags)
        if kind in ("no-answer", "busy", "unregistered", "failed"):
            return cls(kind)
        raise ValueError(f"bridge plan {text!r}: answer:SECONDS[:caller][:hold], no-answer, busy, unregistered, failed")


@dataclass
class Script:
    """What the caller and the network do during one call."""

    caller: str = "5551234"
    caller_name: str = "SIPp customer"
    destination: str = "7000"
    direction: str = "inbound"
    variables: dict[str, str] = field(default_factory=dict)
    dtmf: list[str] = field(default_factory=list)  # one entry per play_and_get_digits; "" = no input
    bridges: list[str] = field(default_factory=list)  # one BridgePlan per bridge/callcenter
    hangup_after: int | None = None  # the caller hangs up while the Nth app runs (1-based)
    channel_uuid: str = ""
    context: str = "public"  # the dialplan context that ran the socket app
    agent: str = "agent1@default"  # the mod_callcenter agent that answers a queue call
    # What the dialplan runs after the socket line when FreeSWITCH resumes it (a
    # callcenter talk ended without park_after_bridge): "hangup" (nothing follows, or a
    # hangup) or "socket" (a second socket line: a second connection for the same uuid).
    after_socket: str = "hangup"
    # The RTP the network carried, 20 ms PCMU packets (transcripts 10 and 11): None
    # leaves the RTP figures out of CHANNEL_HANGUP_COMPLETE. And the media the
    # recording got (None: whole 20 ms frames from record_session to hangup).
    rtp_in_packets: int | None = None
    rtp_in_skipped: int = 0
    rtp_out_packets: int = 0
    recorded_ms: int | None = None
    recording: str = ""  # a WAV that record_session's file holds once the call is down


@dataclass
class Step:
    """One thing the daemon made FreeSWITCH do, for transcripts and assertions."""

    app: str
    arg: str = ""
    result: str = ""


_DISPOSITION = {
    "no-answer": ("NO_ANSWER", "NOANSWER", "NO_ANSWER", "", 5.0),
    "busy": ("USER_BUSY", "BUSY", "USER_BUSY", "sip:486", 0.02),
    "unregistered": ("USER_NOT_REGISTERED", "CHANUNAVAIL", "USER_NOT_REGISTERED", "", 0.01),
    "failed": ("NORMAL_TEMPORARY_FAILURE", "CHANUNAVAIL", "NORMAL_TEMPORARY_FAILURE", "sip:503", 0.05),
}

_Q850 = {"NORMAL_CLEARING": "16", "USER_BUSY": "17", "NO_ANSWER": "19", "NORMAL_TEMPORARY_FAILURE": "41"}


_CODECS = [
    ("Channel-Read-Codec-Name", "PCMU"),
    ("Channel-Read-Codec-Rate", "8000"),
    ("Channel-Read-Codec-Bit-Rate", "64000"),
    ("Channel-Write-Codec-Name", "PCMU"),
    ("Channel-Write-Codec-Rate", "8000"),
    ("Channel-Write-Codec-Bit-Rate", "64000"),
]


class CallerHungUp(Exception):
    pass


# Apps with a media loop that runs the channel's queued commands while it plays.
MEDIA_APPS = frozenset({"playback", "play_and_get_digits", "say", "bridge", "callcenter", "transfer", "sleep"})


class _Channel:
    """The channel's state and the frames FreeSWITCH would send for it."""

    def __init__(self, address: tuple[str, int], script: Script, *, start_us: int | None = None,
                 linger_timeout: float = 10.0, io_timeout: float = 30.0) -> None:
        self.address = address
        self.script = script
        self.uuid = script.channel_uuid or str(uuidlib.uuid4())
        self.now_us = start_us if start_us is not None else int(time.time() * 1_000_000)
        self.created_us = self.now_us
        self.seq = 1423
        self.vars: dict[str, str] = {}
        self.steps: list[Step] = []
        self.frames_out: list[bytes] = []
        self.commands: list[str] = []
        # The commands that came in one read, as "verb" or "sendmsg <app>": what the
        # daemon wrote together without waiting for a reply in between.
        self.batches: list[list[str]] = []
        self.app_count = 0
        self.up = True
        self.lingering_requested = False
        self.myevents = False
        self.nixed: set[str] = set()  # event names turned off with nixevent
        # A media app sent without event-lock earlier in this read: FreeSWITCH would run
        # an execute queued behind it inside it (switch_ivr_play_file parses queued events).
        self._unlocked_media = ""
        self.bridged_us = 0
        self.hangup_cause = ""
        self.hangup_us = 0
        self.exit_received = False
        self.closed_by_peer = False
        self.setup_latency = 0.0
        self.command_latencies: list[float] = []  # our last frame sent -> the daemon's next command
        self._sent_at = 0.0
        self.io_timeout = io_timeout
        self.linger_timeout = linger_timeout
        self._dtmf = list(script.dtmf)
        self._bridges = [BridgePlan.parse(b) for b in script.bridges]
        self._sock: Any = None
        self._out: list[bytes] = []
        # Channel-State is the state the channel runs in, Channel-State-Number the one
        # it is headed for: CHANNEL_HANGUP says CS_EXECUTE with number 10 (CS_HANGUP).
        self.channel_state = "CS_EXECUTE"
        self.state_number = "4"
        self.call_state = "ACTIVE"
        self.answer_state = "answered"
        self.transferred = False
        self.error = ""
        self._chan = f"sofia/external/{script.caller}@127.0.0.1:5070"
        self._left_socket = False  # the socket app has completed (transfer, callcenter's uuid_bridge)
        self._first_bridge_us = 0  # bridge_uepoch, written with the CDR at hangup
        self._digits_dialed = ""  # digits_dialed, likewise
        self._pending: tuple[BridgePlan, str] | None = None  # callcenter's uuid_bridge not begun: (plan, agent)
        self._live_bridge = ""  # the agent of a uuid_bridge that is up and whose talk has not played
        self._record_start_us = 0  # record_session began (its figures are set at hangup)
        self._record_path = ""  # where record_session writes (script.recording's audio, at hangup)
        self._profiles = 1  # caller profiles: mod_callcenter's bridge to the agent adds one
        self._profile_us = 0  # when the newest one was made
        self._park_due = False  # myevents is on and the socket app has not parked the channel yet
        self._parked = False  # parked after a uuid_bridge (park_after_bridge): CHANNEL_UNPARK at hangup
        self.resumed: list[FakeFreeSWITCH] = []  # connections of the resumed dialplan's socket lines
        self._resumers: list[Any] = []  # their greenlets
        self._date_sec = -1
        self._date_local = ""
        self._date_gmt = ""

    # ----------------------------------------------------------- wire helpers

    def _send(self, data: bytes) -> None:
        # Frames are sent together when the command is handled (as FreeSWITCH's
        # socket loop does), so no frame waits on Nagle + delayed ACK.
        self.frames_out.append(data)
        self._out.append(data)

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._sock.sendall(data)

    def _reply(self, text: str) -> None:
        self._send(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())

    def _headers(self, name: str, extra: Iterable[tuple[str, str]] = (), *, calling: str = "switch_channel.c",
                 function: str = "switch_channel_perform_event", variables: bool = True) -> list[tuple[str, str]]:
        """An event's headers; ``variables=False`` leaves out the ``variable_*`` lines (DTMF, CHANNEL_STATE)."""
        self.seq += 1
        ts = self.now_us
        sec = ts // 1_000_000
        if sec != self._date_sec:
            self._date_sec = sec
            self._date_local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
            self._date_gmt = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(sec))
        direction = self.script.direction
        h: list[tuple[str, str]] = [
            ("Event-Name", name),
            ("Core-UUID", CORE_UUID),
            ("FreeSWITCH-Hostname", "vm"),
            ("FreeSWITCH-Switchname", "vm"),
            ("FreeSWITCH-IPv4", "192.0.2.2"),
            ("FreeSWITCH-IPv6", "fd00::2"),
            ("Event-Date-Local", self._date_local),
            ("Event-Date-GMT", self._date_gmt),
            ("Event-Date-Timestamp", str(ts)),
            ("Event-Calling-File", calling),
            ("Event-Calling-Function", function),
            ("Event-Calling-Line-Number", "1"),
            ("Event-Sequence", str(self.seq)),
        ]
        h.extend(extra)
        h += [
            ("Channel-State", self.channel_state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", self.state_number),
            ("Channel-Name", self._chan),
            ("Unique-ID", self.uuid),
            ("Call-Direction", direction),
            ("Presence-Call-Direction", direction),
            ("Channel-HIT-Dialplan", "true"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
        ]
        if self.hangup_cause:
            h.append(("Hangup-Cause", self.hangup_cause))
        h += _CODECS
        h += self._caller_profile()
        if variables:
            h += [("variable_" + k, v) for k, v in self.vars.items()]
        return h

    def _caller_profile(self) -> list[tuple[str, str]]:
        s = self.script
        created = str(self.created_us)
        return [
            ("Caller-Direction", s.direction),
            ("Caller-Logical-Direction", s.direction),
            ("Caller-Username", s.caller),
            ("Caller-Dialplan", "XML"),
            ("Caller-Caller-ID-Name", s.caller_name),
            ("Caller-Caller-ID-Number", s.caller),
            ("Caller-Orig-Caller-ID-Name", s.caller_name),
            ("Caller-Orig-Caller-ID-Number", s.caller),
            ("Caller-Network-Addr", "127.0.0.1"),
            ("Caller-ANI", s.caller),
            ("Caller-Destination-Number", s.destination),
            ("Caller-Unique-ID", self.uuid),
            ("Caller-Source", "mod_sofia"),
            ("Caller-Context", s.context),
            ("Caller-Channel-Name", self._chan),
            ("Caller-Profile-Index", str(self._profiles)),
            ("Caller-Profile-Created-Time", str(self._profile_us or self.created_us)),
            ("Caller-Channel-Created-Time", created),
            ("Caller-Channel-Answered-Time", created),
            ("Caller-Channel-Progress-Time", "0"),
            ("Caller-Channel-Progress-Media-Time", created),
            ("Caller-Channel-Hangup-Time", str(self.hangup_us)),
            ("Caller-Channel-Transfer-Time", "0"),
            ("Caller-Channel-Resurrect-Time", "0"),
            ("Caller-Channel-Bridged-Time", str(self.bridged_us)),
            ("Caller-Channel-Last-Hold", "0"),
            ("Caller-Channel-Hold-Accum", "0"),
            ("Caller-Screen-Bit", "true"),
            ("Caller-Privacy-Hide-Name", "false"),
            ("Caller-Privacy-Hide-Number", "false"),
        ]

    def _event(self, name: str, extra: Iterable[tuple[str, str]] = (), tail: Iterable[tuple[str, str]] = (),
               *, variables: bool = True, **kw: str) -> None:
        if not self.myevents or name in self.nixed:
            return
        headers = self._headers(name, extra, variables=variables, **kw)
        headers.extend(tail)
        body = "".join([f"{k}: {fs_encode(v)}\n" for k, v in headers]) + "\n"
        raw = body.encode("ascii")
        self._send(b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(raw) + raw)

    def _state(self, state: str, number: str, call_state: str = "ACTIVE") -> None:
        """The channel moves to ``state``: a CHANNEL_STATE event (which carries no variables)."""
        self.channel_state = state
        self.state_number = number
        self.call_state = call_state
        self._event("CHANNEL_STATE", variables=False, function="switch_channel_perform_set_running_state")

    def _park_event(self, name: str) -> None:
        self._event(name, calling="switch_ivr.c", function="switch_ivr_park")

    def _execute_events(self, app: str, arg: str, app_uuid: str) -> None:
        self.vars["current_application"] = app
        if arg:
            self.vars["current_application_data"] = arg
        else:
            self.vars.pop("current_application_data", None)
        tail = [("Application", app)]
        if arg:
            tail.append(("Application-Data", arg))
        tail.append(("Application-UUID", app_uuid))
        self._event("CHANNEL_EXECUTE", tail=tail, calling="switch_core_session.c",
                    function="switch_core_session_exec")

    def _complete(self, app: str, arg: str, app_uuid: str, response: str = "_none_") -> None:
        tail = [("Application", app)]
        if arg:
            tail.append(("Application-Data", arg))
        tail += [("Application-Response", response), ("Application-UUID", app_uuid)]
        self._event("CHANNEL_EXECUTE_COMPLETE", tail=tail, calling="switch_core_session.c",
                    function="switch_core_session_exec")

    def _advance(self, seconds: float) -> None:
        self.now_us += int(seconds * 1_000_000)


class _CommandReader(FrameReader):
    """Reads daemon commands: a first line (``connect``, ``sendmsg``...) then headers."""

    def next_command(self) -> tuple[str, dict[str, str]] | None:
        buf = self._buf
        end = buf.find(b"\n\n")
        if end < 0:
            return None
        block = bytes(buf[:end]).decode("utf-8", errors="replace")
        del buf[: end + 2]
        first, _, rest = block.partition("\n")
        return first.strip(), parse_headers(rest.encode(), urlencoded=False) if rest else {}


class FakeFreeSWITCH(_Channel):
    """The stand-in proper: reads commands and plays FreeSWITCH's part."""

    # How long a callcenter uuid_bridge waits for a command that may cut it (07b)
    # before the agent's conversation plays out.
    bridge_settle = 0.1

    def connect(self) -> bytes:
        """Open ``self._sock`` to the daemon; return what was already read from it (nothing here).

        A subclass that reads the first command itself sets ``setup_latency`` and returns
        the bytes it read (the bench's setup driver times it on a blocking socket)."""
        self._sock = gevent.socket.create_connection(self.address, timeout=self.io_timeout)
        self._sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        return b""

    def run(self) -> FakeFreeSWITCH:
        t0 = time.monotonic()
        try:
            early = self.connect()
        except OSError as exc:
            self.error = f"connect failed: {exc}"
            return self
        reader = _CommandReader(self._sock)
        reader.feed(early)
        first = not early
        try:
            while True:
                cmd = reader.next_command()
                if cmd is None:
                    if self._park_due:
                        self._socket_parks()
                        self._flush()
                    if self._pending is not None:
                        deadline = self.bridge_settle
                    elif not self.up and self.lingering_requested:
                        deadline = self.linger_timeout
                    else:
                        deadline = self.io_timeout
                    self._sock.settimeout(deadline)
                    try:
                        data = self._sock.recv(65536)
                    except (TimeoutError, gevent.socket.timeout):
                        if self._pending is not None:
                            try:
                                self._finish_uuid_bridge()
                            finally:
                                self._flush()
                                self._sent_at = time.monotonic()
                            continue
                        self.error = "daemon went quiet" if self.up else "daemon never sent exit"
                        break
                    except OSError:
                        self.closed_by_peer = True
                        break
                    if not data:
                        self.closed_by_peer = True
                        break
                    reader.feed(data)
                    self.batches.append([])
                    self._unlocked_media = ""
                    continue
                if first:
                    self.setup_latency = time.monotonic() - t0
                    first = False
                name, headers = cmd
                self.commands.append(name)
                if not self.batches:
                    self.batches.append([])
                label = name.split(" ", 1)[0]
                if label == "sendmsg":
                    label += " " + (headers.get("execute-app-name") or headers.get("call-command", ""))
                self.batches[-1].append(label)
                if self._sent_at:
                    self.command_latencies.append(time.monotonic() - self._sent_at)
                try:
                    keep = self.handle(name, headers)
                finally:
                    self._flush()
                    self._sent_at = time.monotonic()
                if not keep:
                    break
        except CallerHungUp:
            pass
        except OSError:
            self.closed_by_peer = True
        finally:
            try:
                self._sock.close()
            except OSError:
                pass
            gevent.joinall(self._resumers, timeout=self.io_timeout)
        return self

    # ----------------------------------------------------------- commands

    def handle(self, name: str, headers: dict[str, str]) -> bool:
        is_sendmsg = name == "sendmsg" or name.startswith("sendmsg ")
        if self._pending is not None and not is_sendmsg:
            self._finish_uuid_bridge()
        if is_sendmsg:
            return self._sendmsg(headers)
        if name == "connect":
            self._send_channel_data()
            return True
        if name == "myevents" or name.startswith("myevents "):
            self.myevents = True
            self._reply("+OK Events Enabled")
            self._park_due = True
            return True
        if name == "linger" or name.startswith("linger "):
            self.lingering_requested = True
            self._reply("+OK will linger")
            return True
        if name == "nixevent" or name.startswith("nixevent "):
            # mod_event_socket: unknown names are skipped; none known is an error.
            names = [n.upper() for n in name.split()[1:] if re.fullmatch(r"[A-Za-z_]+", n)]
            if not names:
                self._reply("-ERR no keywords supplied")
                return True
            self.nixed.update(names)
            self._reply("+OK events nixed")
            return True
        if name.startswith("event "):
            words = [n.upper() for n in name.split()[2:]]
            if "ALL" in words:
                self.nixed.clear()
            else:
                self.nixed.difference_update(words)
            self._reply("+OK event listener enabled plain")
            return True
        if name == "exit":
            self.exit_received = True
            self._reply("+OK bye")
            self._send(b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: %s\n"
                       b"Content-Disposition: disconnect\nContent-Length: %d\n\n"
                       % (self.uuid.encode(), len(DISCONNECT_BODY)) + DISCONNECT_BODY)
            return False
        if name.startswith("api "):
            body = b"+OK\n" if name.startswith("api uuid_break") else b"-ERR no such command\n"
            self._send(b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body)
            return True
        self._reply("-ERR command not found")
        return True

    def _send_channel_data(self) -> None:
        for k, v in self.script.variables.items():
            self.vars[k] = v
        self.vars.setdefault("direction", self.script.direction)
        self.vars.setdefault("uuid", self.uuid)
        self.vars.setdefault("call_uuid", self.uuid)
        self.vars.setdefault("socket_host", "127.0.0.1")
        self.vars.setdefault("current_application", "socket")
        self.vars.setdefault("current_application_data", SOCKET_ARG)
        s = self.script
        headers = self._headers("CHANNEL_DATA", calling="mod_event_socket.c", function="parse_command")
        # CHANNEL_DATA carries Channel-* copies of the caller profile before the rest.
        channel = [
            ("Channel-Direction", s.direction),
            ("Channel-Logical-Direction", s.direction),
            ("Channel-Username", s.caller),
            ("Channel-Dialplan", "XML"),
            ("Channel-Caller-ID-Name", s.caller_name),
            ("Channel-Caller-ID-Number", s.caller),
            ("Channel-ANI", s.caller),
            ("Channel-Destination-Number", s.destination),
            ("Channel-Unique-ID", self.uuid),
            ("Channel-Source", "mod_sofia"),
            ("Channel-Context", s.context),
            ("Channel-Channel-Name", self._chan),
        ]
        headers = headers[:13] + channel + headers[13:]
        body = "".join(f"{k}: {fs_encode(v)}\n" for k, v in headers)
        body += "Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n"
        self._send(body.encode("ascii"))

    def _socket_parks(self) -> None:
        """The socket app parks the channel a moment after connect: CHANNEL_PARK, unless nixed by now.

        Commands written with myevents are read first: nixevent in that write turns it
        off (transcripts 10 and 11), an execute in it runs inside the park."""
        self._park_due = False
        self._park_event("CHANNEL_PARK")

    def _sendmsg(self, headers: dict[str, str]) -> bool:
        command = headers.get("call-command", "")
        app = headers.get("execute-app-name", "")
        if self._park_due:
            self._socket_parks()
        self._reply("+OK")
        if self._pending is not None:
            if command == "hangup" or (command == "execute" and app == "hangup"):
                self._start_uuid_bridge()  # the hangup runs inside the bridge and cuts it (07b)
            else:
                self._finish_uuid_bridge()
        if not self.up:
            return True  # after hangup: +OK, and nothing runs
        if command == "hangup":
            cause = headers.get("hangup-cause", "NORMAL_CLEARING")
            self.steps.append(Step("hangup", cause, "call-command"))
            self._teardown(cause, running=None)
            return True
        if command != "execute":
            return True
        arg = headers.get("execute-app-arg", "")
        if self._unlocked_media and not self.error:
            self.error = f"execute {app} queued behind {self._unlocked_media} without event-lock"
        if app in MEDIA_APPS and headers.get("event-lock", "").lower() != "true":
            self._unlocked_media = app
        app_uuid = headers.get("Event-UUID") or str(uuidlib.uuid4())
        self.app_count += 1
        self._execute_events(app, arg, app_uuid)
        if self.script.hangup_after is not None and self.app_count >= self.script.hangup_after:
            self._caller_hangup_during(app, arg, app_uuid)
            return True
        handler = getattr(self, "_app_" + app, None)
        if handler is None:
            self.steps.append(Step(app, arg, "_none_"))
            self._advance(0.001)
            self._complete(app, arg, app_uuid)
            return True
        handler(arg, app_uuid)
        return True

    # ----------------------------------------------------------- apps

    def _app_answer(self, arg: str, app_uuid: str) -> None:
        self.steps.append(Step("answer"))
        self._advance(0.02)
        self._complete("answer", arg, app_uuid)

    def _app_set(self, arg: str, app_uuid: str) -> None:
        k, _, v = arg.partition("=")
        self.vars[k] = v
        self.steps.append(Step("set", arg))
        self._complete("set", arg, app_uuid)

    def _app_multiset(self, arg: str, app_uuid: str) -> None:
        for item in arg.split():
            k, _, v = item.partition("=")
            self.vars[k] = v
        self.steps.append(Step("multiset", arg))
        self._complete("multiset", arg, app_uuid)

    def _app_playback(self, arg: str, app_uuid: str) -> None:
        files = arg[len("file_string://"):].split("!") if arg.startswith("file_string://") else [arg]
        self.steps.append(Step("playback", arg, "FILE PLAYED"))
        seconds = 1.5 * len(files)
        self._advance(seconds)
        self.vars.update(playback_seconds=str(int(seconds)), playback_ms=str(int(seconds * 1000)))
        self._complete("playback", arg, app_uuid, "FILE PLAYED")

    def _app_say(self, arg: str, app_uuid: str) -> None:
        self.steps.append(Step("say", arg))
        self._advance(2)
        self._complete("say", arg, app_uuid)

    def _app_record_session(self, arg: str, app_uuid: str) -> None:
        # Completes at once and records on (transcript 10); its figures come at hangup.
        self.steps.append(Step("record_session", arg))
        self._record_start_us = self._record_start_us or self.now_us
        self._record_path = self._record_path or arg
        self._complete("record_session", arg, app_uuid)

    def _write_recording(self) -> None:
        """FreeSWITCH closes the file at hangup: ``script.recording``'s audio appears at the path then."""
        path = self._record_path
        if not path or not self.script.recording:
            return
        import shutil
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.script.recording, path)
        self.vars["record_file_size"] = str(Path(path).stat().st_size)

    def _app_play_and_get_digits(self, arg: str, app_uuid: str) -> None:
        parts = arg.split(" ")
        var = parts[7] if len(parts) > 7 else "collected_digits"
        regex = parts[8] if len(parts) > 8 else ""
        max_digits = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 128
        typed = self._dtmf.pop(0) if self._dtmf else ""
        self._advance(1.0)
        for d in typed + ("#" if typed else ""):
            self._advance(0.3)
            self._event("DTMF", tail=[("DTMF-Digit", d), ("DTMF-Duration", "2240"), ("DTMF-Source", "RTP")],
                        variables=False, function="switch_channel_dequeue_dtmf")
        if not typed:
            self._advance(int(parts[3]) / 1000 if len(parts) > 3 and parts[3].isdigit() else 5)
        digits = typed[:max_digits]
        ok = bool(digits) and (not regex or re.search(regex, digits, re.ASCII) is not None)
        if ok:
            self.vars[var] = digits
            self.vars["read_result"] = "success"
            self.vars["read_terminator_used"] = "#"
        else:
            self.vars.pop(var, None)
            self.vars["read_result"] = "failure"
            if digits:
                self.vars[var + "_invalid"] = digits
        if typed:
            self._digits_dialed += typed + "#"
        self.steps.append(Step("play_and_get_digits", arg, digits if ok else ("invalid:" + digits if digits else "")))
        self._complete("play_and_get_digits", arg, app_uuid)

    def _next_bridge(self) -> BridgePlan:
        return self._bridges.pop(0) if self._bridges else BridgePlan("no-answer")

    def _app_bridge(self, arg: str, app_uuid: str) -> None:
        plan = self._next_bridge()
        other = str(uuidlib.uuid4())
        self.steps.append(Step("bridge", arg, plan.outcome if plan.outcome != "answer" else f"answer:{plan.seconds:g}"))
        if plan.outcome != "answer":
            disp, dial, cause, proto, secs = _DISPOSITION[plan.outcome]
            if plan.outcome == "no-answer" and "originate_timeout=" in arg:
                secs = float(arg.split("originate_timeout=", 1)[1].split("}")[0].split(",")[0] or 5)
            self._advance(secs)
            self.vars.update(originate_disposition=disp, DIALSTATUS=dial, originate_failed_cause=cause,
                             last_bridge_hangup_cause=cause, originate_causes=f"{other};{cause}")
            if proto:
                self.vars["last_bridge_proto_specific_hangup_cause"] = proto
            if self.vars.get("continue_on_fail") != "true" and plan.outcome != "no-answer":
                # FreeSWITCH hangs the caller up itself (transcript 03c).
                self._teardown(cause, running=("bridge", arg, app_uuid))
                return
            self._complete("bridge", arg, app_uuid)
            return
        self._advance(2.0)  # ringing
        self._bridge_talk(plan, other, arg, app_uuid, "bridge")

    def _bridge_event(self, name: str, other: str) -> None:
        self._event(name, [("Bridge-A-Unique-ID", self.uuid), ("Bridge-B-Unique-ID", other)],
                    calling="switch_ivr_bridge.c", function="switch_ivr_multi_threaded_bridge")

    def _bridge_up(self, other: str) -> None:
        """The other leg answered: CHANNEL_BRIDGE (its Event-Date-Timestamp starts the talk)."""
        self.bridged_us = self.now_us
        if not self._first_bridge_us:
            self._first_bridge_us = self.now_us
        self.vars.update(originate_disposition="SUCCESS", DIALSTATUS="SUCCESS",
                         originate_causes=f"{other};NONE", signal_bond=other)
        self._bridge_event("CHANNEL_BRIDGE", other)

    def _talk(self, plan: BridgePlan) -> None:
        if plan.hold:
            # Real time: the daemon's meter heartbeats happen while we wait here.
            self._flush()
            end = time.monotonic() + plan.seconds
            while time.monotonic() < end:
                gevent.sleep(min(0.05, max(0.0, end - time.monotonic())))
                self.now_us = self.bridged_us + int((plan.seconds - (end - time.monotonic())) * 1e6)
            self.now_us = self.bridged_us + int(plan.seconds * 1e6)
        else:
            self._advance(plan.seconds)

    def _bridge_down(self, other: str) -> None:
        """The other leg hung up: CHANNEL_UNBRIDGE with the bridge's outcome."""
        self.vars.update(last_bridge_to=other, bridge_channel=f"sofia/internal/{other[:8]}",
                         bridge_hangup_cause="NORMAL_CLEARING", last_bridge_hangup_cause="NORMAL_CLEARING",
                         last_bridge_proto_specific_hangup_cause="sip:200")
        self._bridge_event("CHANNEL_UNBRIDGE", other)

    def _bridge_talk(self, plan: BridgePlan, other: str, arg: str, app_uuid: str, app: str) -> None:
        self._bridge_up(other)
        self._talk(plan)
        if plan.caller_hangs_up:
            self._teardown("NORMAL_CLEARING", running=(app, arg, app_uuid), unbridge=other)
            return
        self._bridge_down(other)
        if app == "bridge":
            self._complete("bridge", arg, app_uuid)

    def _app_callcenter(self, arg: str, app_uuid: str) -> None:
        plan = self._next_bridge()
        self.steps.append(Step("callcenter", arg, plan.outcome if plan.outcome != "answer" else
                               f"answer:{plan.seconds:g}"))
        self.vars.update(cc_queue=arg, cc_side="member", cc_member_uuid=str(uuidlib.uuid4()),
                         cc_queue_joined_epoch=str(self.now_us // 1_000_000))
        if plan.outcome != "answer":
            self._advance(30)
            self.vars["cc_cause"] = "timeout"
            self._complete("callcenter", arg, app_uuid)
            return
        self._advance(2.0)
        other = str(uuidlib.uuid4())
        self.vars.update(cc_cause="answered", cc_agent_uuid=other)
        self._profiles += 1  # the caller profile is cloned for the bridge (07, 11)
        self._profile_us = self.now_us
        # Completes at agent answer (transcript 07); mod_callcenter then takes the
        # caller out of the socket app into a uuid_bridge with the agent.
        self.state_number = "8"
        self._complete("callcenter", arg, app_uuid)
        self._park_event("CHANNEL_UNPARK")
        self._complete("socket", SOCKET_ARG, str(uuidlib.uuid4()))
        self._left_socket = True
        self._state("CS_HIBERNATE", "8")
        self._state("CS_RESET", "9")
        self._state("CS_SOFT_EXECUTE", "3")
        # The rest waits for the daemon's next command (a hangup sent now cuts the
        # bridge, 07b) or for bridge_settle to pass.
        self._pending = (plan, other)

    def _start_uuid_bridge(self) -> None:
        assert self._pending is not None
        _plan, other = self._pending
        self._pending = None
        self._event("CHANNEL_EXECUTE", tail=[("Application", "uuid_bridge"), ("Application-Data", other)],
                    calling="switch_ivr_bridge.c", function="uuid_bridge_on_soft_execute")
        self._bridge_up(other)
        self._live_bridge = other

    def _finish_uuid_bridge(self) -> None:
        """The agent's conversation plays out; then the caller is parked, or the dialplan goes on."""
        assert self._pending is not None
        plan, other = self._pending
        self._start_uuid_bridge()
        self._talk(plan)
        self._live_bridge = ""
        self.vars.update(cc_agent=self.script.agent, cc_agent_bridged="true",
                         cc_queue_answered_epoch=str(self.bridged_us // 1_000_000))
        if plan.caller_hangs_up:
            self._teardown("NORMAL_CLEARING", running=None, unbridge=other)
            return
        self._bridge_down(other)
        if self.vars.get("park_after_bridge") == "true":
            # CS_SOFT_EXECUTE -> CS_PARK: the caller waits in park for the socket's
            # next command, and the dialplan is not resumed (transcript 11).
            self._parked = True
            self._state("CS_PARK", "6")
            self._park_event("CHANNEL_PARK")
            return
        # The dialplan is resumed after the socket line (07, the README's finding on 7001).
        self._state("CS_EXECUTE", "4")
        if self.script.after_socket == "socket":
            self._resume_socket()
            return
        self._teardown("NORMAL_CLEARING", running=None)  # nothing (or a hangup) follows socket

    def _resume_socket(self) -> None:
        """The dialplan's second socket line runs: a second connection to the daemon for this uuid.

        The first connection stays open (it lingers) and keeps answering its own
        commands; each connection plays its own part of the channel."""
        self._execute_events("socket", SOCKET_ARG, str(uuidlib.uuid4()))
        self._flush()
        script = replace(self.script, channel_uuid=self.uuid, variables=dict(self.vars), dtmf=[], bridges=[],
                         hangup_after=None, after_socket="hangup")
        second = FakeFreeSWITCH(self.address, script, start_us=self.now_us, linger_timeout=self.linger_timeout,
                                io_timeout=self.io_timeout)
        second.created_us = self.created_us
        second._dtmf, second._bridges = self._dtmf, self._bridges  # what is left of the caller's script
        self.resumed.append(second)
        self._resumers.append(gevent.spawn(second.run))

    def _app_transfer(self, arg: str, app_uuid: str) -> None:
        self.steps.append(Step("transfer", arg))
        self.transferred = True
        self.state_number = "2"
        self._complete("transfer", arg, app_uuid)
        self._park_event("CHANNEL_UNPARK")
        self._complete("socket", SOCKET_ARG, str(uuidlib.uuid4()))
        self._left_socket = True
        self._state("CS_ROUTING", "2", "RINGING")
        self._state("CS_EXECUTE", "4")

    def _app_hangup(self, arg: str, app_uuid: str) -> None:
        cause = arg or "NORMAL_CLEARING"
        self.steps.append(Step("hangup", cause, "execute"))
        self._teardown(cause, running=("hangup", arg, app_uuid))

    # ----------------------------------------------------------- hangup

    def _caller_hangup_during(self, app: str, arg: str, app_uuid: str) -> None:
        self.steps.append(Step(app, arg, "caller hung up"))
        self._advance(0.5)
        if app in ("bridge", "callcenter"):
            plan = self._next_bridge()
            if plan.outcome == "answer":
                other = str(uuidlib.uuid4())
                self._advance(2.0)
                self._bridge_talk(BridgePlan("answer", plan.seconds, True, plan.hold), other, arg, app_uuid, app)
                return
        response = "PLAYBACK ERROR" if app == "playback" else "_none_"
        if app == "play_and_get_digits":
            self.vars["read_result"] = "failure"
        self._teardown("NORMAL_CLEARING", running=(app, arg, app_uuid), response=response, by_caller=True)

    def _teardown(self, cause: str, running: tuple[str, str, str] | None, *, response: str = "_none_",
                  unbridge: str = "", by_caller: bool = False) -> None:
        """The channel goes down: the events, in FreeSWITCH's order, then linger or close."""
        self.up = False
        self.hangup_cause = cause
        self.hangup_us = self.now_us
        self.answer_state = "hangup"
        self.state_number = "10"
        self._event("CHANNEL_HANGUP", function="switch_channel_perform_hangup")
        by_caller = by_caller or bool(unbridge)
        if by_caller:
            # The caller's BYE shows from the next event on; our own BYE only with the CDR.
            self.vars["sip_hangup_disposition"] = "recv_bye"
        if unbridge:
            self.vars.update(last_bridge_to=unbridge, bridge_hangup_cause=cause)
            self._bridge_event("CHANNEL_UNBRIDGE", unbridge)
        if running is not None:
            app, arg, app_uuid = running
            self._complete(app, arg, app_uuid, response)
        if self._live_bridge:
            # Our own hangup inside callcenter's uuid_bridge cut the agent's conversation.
            self.vars.update(last_bridge_to=self._live_bridge, bridge_hangup_cause=cause, cc_agent_bridged="false")
            self._bridge_event("CHANNEL_UNBRIDGE", self._live_bridge)
            self._live_bridge = ""
        if not self._left_socket:
            self._park_event("CHANNEL_UNPARK")
            self._complete("socket", SOCKET_ARG, str(uuidlib.uuid4()), response)
        elif self._parked:
            self._park_event("CHANNEL_UNPARK")  # the park loop ends; the socket app completed long ago
        self._advance(0.02)
        self._state("CS_HANGUP", "10")
        self._state("CS_REPORTING", "11", "HANGUP")
        # The CDR variables: FreeSWITCH sets these only now.
        start = self.created_us
        end = self.now_us
        bridged = self._first_bridge_us
        self.vars.update(self._record_figures(end))
        self.vars.update(
            hangup_cause=cause, hangup_cause_q850=_Q850.get(cause, "16"),
            start_epoch=str(start // 1_000_000), start_uepoch=str(start),
            answer_epoch=str(start // 1_000_000), answer_uepoch=str(start),
            bridge_epoch=str(bridged // 1_000_000), bridge_uepoch=str(bridged),
            end_epoch=str(end // 1_000_000), end_uepoch=str(end),
            duration=str((end - start) // 1_000_000), billsec=str((end - start) // 1_000_000),
            mduration=str((end - start) // 1000), billmsec=str((end - start) // 1000),
            uduration=str(end - start), digits_dialed=self._digits_dialed or "none",
        )
        if not by_caller:
            self.vars["sip_hangup_disposition"] = "send_bye"
        self.vars.update(self._rtp_figures())
        self._write_recording()
        self._event("CHANNEL_HANGUP_COMPLETE", [("Hangup-Cause", cause)],
                    calling="switch_core_state_machine.c", function="switch_core_session_reporting_state")
        if self.lingering_requested:
            self._send(f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {self.uuid}\n"
                       f"Content-Disposition: linger\nChannel-Name: {self._chan}\nLinger-Time: -1\n"
                       f"Content-Length: 0\n\n".encode())
        else:
            self._send(b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: %s\n"
                       b"Content-Disposition: disconnect\nContent-Length: %d\n\n"
                       % (self.uuid.encode(), len(DISCONNECT_BODY)) + DISCONNECT_BODY)
            raise CallerHungUp()

    def _record_figures(self, end_us: int) -> dict[str, str]:
        """record_session's variables, set when the recording stops at hangup (transcript 10)."""
        if not self._record_start_us:
            return {}
        ms = self.script.recorded_ms
        if ms is None:
            ms = (end_us - self._record_start_us) // 20_000 * 20  # whole 20 ms frames
        samples = ms * 8  # 8 kHz
        channels = 2 if self.vars.get("RECORD_STEREO") == "true" else 1
        return {"record_file_size": str(44 + samples * channels * 2), "record_samples": str(samples),
                "record_seconds": str(ms // 1000), "record_ms": str(ms),
                "record_completion_cause": "success-silence"}

    def _rtp_figures(self) -> dict[str, str]:
        """The caller leg's RTP statistics, as FreeSWITCH sets them for the CDR (PCMU, 20 ms, no loss)."""
        s = self.script
        if s.rtp_in_packets is None:
            return {}
        rx, tx = s.rtp_in_packets, s.rtp_out_packets
        size = 172  # 160 bytes of PCMU and a 12-byte RTP header
        figures = {
            "in_raw_bytes": rx * size, "in_media_bytes": rx * size, "in_packet_count": rx,
            "in_media_packet_count": rx, "in_skip_packet_count": s.rtp_in_skipped, "in_jitter_packet_count": 0,
            "in_dtmf_packet_count": 0, "in_cng_packet_count": 0, "in_flush_packet_count": 0,
            "in_largest_jb_size": 0, "in_jitter_min_variance": "0.00", "in_jitter_max_variance": "0.00",
            "in_jitter_loss_rate": "0.00", "in_jitter_burst_rate": "0.00",
            "in_mean_interval": "20.00" if rx else "0.00", "in_flaw_total": 0,
            "in_quality_percentage": "100.00", "in_mos": "4.50",
            "out_raw_bytes": tx * size, "out_media_bytes": tx * size, "out_packet_count": tx,
            "out_media_packet_count": tx, "out_skip_packet_count": 0, "out_dtmf_packet_count": 0,
            "out_cng_packet_count": 0, "rtcp_packet_count": 0, "rtcp_octet_count": 0,
        }
        return {f"rtp_audio_{k}": str(v) for k, v in figures.items()}

    # ----------------------------------------------------------- reading it back

    def prompts(self) -> list[str]:
        """Every file played, in order (file_string lists split)."""
        out: list[str] = []
        for st in self.steps:
            if st.app == "playback":
                arg = st.arg
                out += arg[len("file_string://"):].split("!") if arg.startswith("file_string://") else [arg]
        return out

    def apps(self) -> list[str]:
        return [st.app for st in self.steps]


def run_call(address: tuple[str, int], script: Script, **kw: Any) -> FakeFreeSWITCH:
    """Play one call against the daemon at ``address`` and return the finished stand-in."""
    return FakeFreeSWITCH(address, script, **kw).run()
