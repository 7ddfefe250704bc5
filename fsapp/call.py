"""One call: its context, the apps it asks FreeSWITCH to run, and the handler.

``CallHandler.run`` is what the server runs in the call's greenlet.  Modules get
a ``CallContext`` and talk to the caller only through ``ctx.io`` (a ``CallIO``);
they never see the socket.  A caller hangup anywhere is one ``Hangup`` exception,
caught once, in ``CallHandler.run``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fsapp import callrow, esl, flow
from fsapp import log as logmod
from fsapp.analysis.quality import line_quality
from fsapp.esl import Hangup
from fsapp.modules import KINDS
from fsapp.store import StorageError

if TYPE_CHECKING:
    from fsapp.app import App
    from fsapp.config import Config
    from fsapp.crm import Customer

MAX_HOPS = 100
PROMPT_DEADLINE = 600.0
SILENCE = "silence_stream://250"

# originate_disposition / DIALSTATUS -> outcome
_OUTCOMES = {
    "SUCCESS": "answered",
    "ANSWER": "answered",
    "NO_ANSWER": "no_answer",
    "NOANSWER": "no_answer",
    "ALLOTTED_TIMEOUT": "no_answer",
    "PROGRESS_TIMEOUT": "no_answer",
    "ORIGINATOR_CANCEL": "no_answer",
    "USER_BUSY": "busy",
    "BUSY": "busy",
    "CALL_REJECTED": "busy",
    "USER_NOT_REGISTERED": "unregistered",
    "SUBSCRIBER_ABSENT": "unregistered",
    "UNALLOCATED_NUMBER": "unregistered",
    "NO_USER_RESPONSE": "no_answer",
}


def classify(disposition: str) -> str:
    return _OUTCOMES.get(disposition.upper(), "failed")


@dataclass
class BridgeResult:
    """What a bridge attempt came to, read from FreeSWITCH's variables."""

    target: str
    outcome: str  # answered | no_answer | busy | unregistered | failed
    disposition: str = ""
    hangup_cause: str = ""
    extension: str = ""  # who answered: the extension, or the queue's agent (cc_agent)
    start_us: int = 0
    end_us: int = 0

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"

    @property
    def talk_seconds(self) -> float:
        if not self.start_us or self.end_us < self.start_us:
            return 0.0
        return (self.end_us - self.start_us) / 1_000_000


class CallIO:
    """The apps a module can run on its call, in prompt names and destinations."""

    def __init__(self, session: esl.Session, cfg: Config) -> None:
        self.session = session
        self.cfg = cfg
        self._ask_seq = itertools.count(1)
        self._bridge_vars_set = False
        self._lead: list[str] = []  # playback args to send ahead of the next app
        self.attempts: list[BridgeResult] = []  # every bridge or queue attempt, for the journal

    def prompt_path(self, name: str) -> str:
        return self.cfg.sounds.path(name)

    def _playback_arg(self, names: str | list[str] | tuple[str, ...]) -> str:
        items = [names] if isinstance(names, str) else list(names)
        paths = [self.prompt_path(n) for n in items if n]
        if not paths:
            return ""
        return paths[0] if len(paths) == 1 else "file_string://" + "!".join(paths)

    def play(self, names: str | list[str] | tuple[str, ...]) -> None:
        """Play one prompt, or several as one file_string playback; empty names are skipped."""
        arg = self._playback_arg(names)
        if arg:
            self._execute("playback", arg, timeout=PROMPT_DEADLINE)

    def lead(self, names: str | list[str] | tuple[str, ...]) -> None:
        """Play ``names`` ahead of the next app (an ask, a bridge...), sent in the same write.

        FreeSWITCH queues both on the channel and runs them in order (the prompt with
        ``event-lock``, so the next app waits for it), which saves the prompt a round
        trip of its own. Only for a prompt with nothing slow between it and the next
        app: a CRM lookup in between would delay the prompt until it is done.
        """
        arg = self._playback_arg(names)
        if arg:
            self._lead.append(arg)

    def _execute(self, app: str, arg: str = "", *, timeout: float | None = None,
                 tick: tuple[float, Callable[[], None]] | None = None,
                 before: tuple[tuple[str, str], ...] = ()) -> esl.Event:
        """Run ``app``, sending the lead prompts (and ``before``) ahead of it in one write."""
        if self._lead:
            before = tuple(("playback", a) for a in self._lead) + before
            self._lead.clear()
            timeout = (self.session.command_timeout if timeout is None else timeout) + PROMPT_DEADLINE
        return self.session.execute(app, arg, timeout=timeout, tick=tick, before=before)

    def say_amount(self, amount: int, before: str | tuple[str, ...] = "", after: str = "") -> None:
        """``before`` + the amount spoken in the configured language + ``after``, as one playback."""
        from fsapp import say

        sounds = self.cfg.sounds
        if sounds.say == "mod_say":
            self.lead(before)
            self._execute("say", f"{sounds.language} CURRENCY PRONOUNCED {int(amount)}", timeout=120)
            self.play(after)
            return
        words = say.amount_prompts(int(amount), sounds.language, sounds.currency)
        lead = [before] if isinstance(before, str) else list(before)
        self.play([*lead, *words, after])

    def ask(
        self,
        prompt: str,
        *,
        min_digits: int,
        max_digits: int,
        timeout_ms: int = 5000,
        regex: str = r"^\d+$",
        terminators: str = "#",
        digit_timeout_ms: int = 3000,
    ) -> str:
        """One play_and_get_digits try; the digits typed, or '' on no or invalid input."""
        var = f"fsapp_in{next(self._ask_seq)}"
        file = self.prompt_path(prompt) if prompt else SILENCE
        arg = (
            f"{min_digits} {max_digits} 1 {timeout_ms} {terminators or 'none'} {file} {SILENCE} "
            f"{var} {regex} {digit_timeout_ms}"
        )
        deadline = 120 + (timeout_ms + digit_timeout_ms * max_digits) / 1000
        done = self._execute("play_and_get_digits", arg, timeout=deadline)
        if done.var("read_result") not in ("success", ""):
            return ""
        return done.var(var)

    def _bridge_vars(self) -> tuple[tuple[str, str], ...]:
        """The variables a bridge needs, sent ahead of the first one (in the same write).

        Marked sent before the write goes out: a write that fails raises ESLError, which
        no module catches, so the call ends there and no later bridge relies on the mark.
        """
        if self._bridge_vars_set:
            return ()
        self._bridge_vars_set = True
        # Without continue_on_fail a busy callee makes FreeSWITCH hang up the caller.
        # park_after_bridge: when a queue's agent hangs up, mod_callcenter's uuid_bridge
        # ends outside the socket app; FreeSWITCH then parks the caller for this socket
        # instead of resuming the dialplan (whose next socket line would start a second
        # session for the same call), so the module's next still reaches the caller.
        return (("multiset", "continue_on_fail=true hangup_after_bridge=false park_after_bridge=true"),)

    def dial_string(self, dest: flow.Dest, ring_seconds: int) -> str:
        if dest.kind != "ext" or not flow.EXT_RE.fullmatch(dest.value):
            raise ValueError(f"not an extension destination: {dest}")
        return f"{{originate_timeout={int(ring_seconds)}}}" + self.cfg.dial.extension.replace("{ext}", dest.value)

    def bridge(
        self,
        dest: flow.Dest,
        ring_seconds: int,
        *,
        on_answer: Callable[[int], None] | None = None,
        tick: tuple[float, Callable[[], None]] | None = None,
    ) -> BridgeResult:
        """Bridge to ``ext:`` or ``queue:``; the result tells answered from no answer, busy, failed.

        Every attempt is kept in ``attempts`` (the journal's answered/missed and
        extension come from there), also when the caller hangs up while it rings
        or mid-talk: then the attempt is answered if FreeSWITCH bridged it.
        """
        attempt = BridgeResult(target=str(dest), outcome="no_answer")
        self.attempts.append(attempt)
        s = self.session
        spans_before = len(s.bridges)
        watcher = None
        if on_answer is not None:

            def watcher(ev: esl.Event) -> None:
                if ev.name == "CHANNEL_BRIDGE":
                    on_answer(ev.timestamp_us)

        prev, s.on_event = s.on_event, _chain(s.on_event, watcher)
        try:
            if dest.kind == "queue":
                result = self._callcenter(dest, ring_seconds, tick)
            else:
                done = self._execute(
                    "bridge",
                    self.dial_string(dest, ring_seconds),
                    timeout=ring_seconds + self.cfg.server.call_timeout_seconds,
                    tick=tick,
                    before=self._bridge_vars(),
                )
                disposition = done.var("originate_disposition") or done.var("DIALSTATUS")
                result = BridgeResult(
                    target=str(dest),
                    outcome=classify(disposition),
                    disposition=disposition,
                    hangup_cause=done.var("bridge_hangup_cause") or done.var("originate_failed_cause"),
                )
        except Hangup as exc:
            if not exc.app_started:
                self.attempts.pop()  # down before the bridge (or queue) began: no attempt
                raise
            span = self._close_span(spans_before)
            if span is not None:
                attempt.outcome, attempt.start_us, attempt.end_us = "answered", span.start_us, span.end_us
                attempt.extension = dest.value if dest.kind == "ext" else s.cc_agent
            raise
        finally:
            s.on_event = prev
        span = self._close_span(spans_before)
        if span is not None:
            result.start_us, result.end_us = span.start_us, span.end_us
            result.outcome = "answered"
        if result.answered and dest.kind == "ext":
            result.extension = dest.value
        self.attempts[-1] = result
        return result

    def _callcenter(
        self, dest: flow.Dest, ring_seconds: int, tick: tuple[float, Callable[[], None]] | None
    ) -> BridgeResult:
        s = self.session
        queue = self.cfg.dial.queue.replace("{queue}", dest.value)
        done = self._execute("callcenter", queue, timeout=ring_seconds + self.cfg.server.call_timeout_seconds,
                             tick=tick, before=self._bridge_vars())
        cause = done.var("cc_cause")
        if cause != "answered":
            return BridgeResult(str(dest), "no_answer", disposition=cause or "NO_ANSWER", hangup_cause=cause)
        # mod_callcenter has uuid_bridged the caller out of the socket app: the talk
        # goes on until UNBRIDGE; hanging up here would cut it. After it the caller is
        # parked (park_after_bridge) and this socket goes on with the module's next.
        first = len(s.bridges)

        def talk_over() -> bool:
            return len(s.bridges) > first and bool(s.bridges[-1].end_us)

        s.wait_for(talk_over, timeout=self.cfg.server.call_timeout_seconds, tick=tick, what="queue call")
        return BridgeResult(str(dest), "answered", disposition="SUCCESS", extension=s.cc_agent)

    def _close_span(self, first: int) -> esl.BridgeSpan | None:
        """The bridged span that began after index ``first`` (closed at hangup), if any."""
        if len(self.session.bridges) <= first:
            return None
        return self.session.talk_span()

    def talk_span(self) -> tuple[int, int]:
        """FreeSWITCH's (bridge, unbridge-or-hangup) timestamps of the last talk, in µs."""
        span = self.session.talk_span()
        return (span.start_us, span.end_us) if span else (0, 0)

    def transfer(self, ext: str, context: str = "") -> None:
        arg = f"{ext} XML {context}" if context else ext
        self._execute("transfer", arg)

    def record(self, path: str, variables: tuple[str, ...] = ()) -> None:
        """``record_session``, with the channel variables that shape it set in the same write."""
        before = (("multiset", " ".join(variables)),) if variables else ()
        self._execute("record_session", path, before=before)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._lead:
            self._execute("playback", self._lead.pop(), timeout=PROMPT_DEADLINE)  # the caller hears it first
        self.session.hangup(cause)


def _chain(*fns: Callable[[esl.Event], None] | None) -> Callable[[esl.Event], None] | None:
    live = [f for f in fns if f is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def both(ev: esl.Event) -> None:
        for f in live:
            f(ev)

    return both


@dataclass
class CallContext:
    """Everything one call carries from module to module."""

    uuid: str
    app: App
    cfg: Config
    io: CallIO
    log: Any
    caller: str = ""
    caller_name: str = ""
    called: str = ""
    direction: str = "inbound"
    channel: esl.Event = field(default_factory=lambda: esl.Event({}))
    customer: Customer | None = None  # identified: later modules act for this customer
    claimed: Customer | None = None  # named but not authenticated (wrong PIN, locked, registered)
    auth_method: str = ""
    auth_result: str = ""
    modules: list[str] = field(default_factory=list)
    charge: int = 0
    recording: str = ""
    recording_customer: str = ""  # the recording's channel (left | right) that holds the customer
    error_reason: str = ""  # why a module went to error (CRM down, ...), if an error did
    rejected: str = ""  # why the daemon turned the call away ("max_calls"), if it did
    transferred: bool = False
    final: str = ""
    final_status: str = ""
    mobile: str = ""

    @property
    def answered(self) -> BridgeResult | None:
        """The first bridge or queue attempt a person answered, if any."""
        return next((a for a in self.io.attempts if a.answered), None)


class CallHandler:
    """Runs one call from ``connect`` to ``exit`` and journals it."""

    def __init__(self, app: App, sock: Any, *, overflow: bool = False) -> None:
        self.app = app
        self.cfg = app.config  # a reload applies to new calls; this one keeps its config
        self.sock = sock
        self.overflow = overflow
        self._answer = ""  # Event-UUID of the answer sent with the setup
        self._connected = False
        self.session = esl.Session(
            sock, command_timeout=self.cfg.server.command_timeout_seconds, on_command=app.metrics.command
        )

    def connect(self, timeout: float) -> esl.ESLError | None:
        """The connect exchange within ``timeout``; the error (logged) when the peer did not complete it."""
        try:
            self.session.connect(timeout)
        except esl.ESLError as exc:
            self.app.log.warning("call_setup_failed", reason=str(exc), stage="connect")
            return exc
        self._connected = True
        return None

    def run(self) -> None:
        s = self.session
        log = self.app.log
        ctx: CallContext | None = None
        outcome = "failed"
        try:
            try:
                if not self._connected:
                    s.connect()
                # The answer goes out with the event subscription: one round trip for both.
                self._answer = s.setup(None if self.overflow else ("answer", ""))
            except esl.ESLError as exc:
                log.warning("call_setup_failed", reason=str(exc))
                return
            ctx = self._context()
            log = ctx.log
            log.info("call_started", entry=ctx.channel.var("fsapp_module"), overflow=self.overflow)
            try:
                self.app.store.call_started(self._row(ctx, "active"))
            except StorageError as exc:
                log.error("journal_write_failed", reason=str(exc))
                if self.cfg.entry.on_storage_failure:
                    ctx.error_reason = "storage failed"
                    self._go(ctx, self.cfg.entry.on_storage_failure, storage_failed=True)
                    return
            outcome = self._drive(ctx)
        except Hangup:
            outcome = "caller_hangup"
        except esl.ESLError as exc:
            log.warning("call_socket_failed", reason=str(exc))
            outcome = "socket"
        except Exception:
            log.exception("call_crashed")
            outcome = "crash"
            if ctx is not None:
                ctx.error_reason = ctx.error_reason or "daemon fault"
            try:
                s.hangup("NORMAL_TEMPORARY_FAILURE")
            except Exception:  # noqa: BLE001 - the socket may be gone; finish() handles it
                pass
        finally:
            s.finish(timeout=self.cfg.server.command_timeout_seconds)
            if ctx is not None:
                self._journal(ctx, outcome)
                self.app.metrics.call_ended(ctx.modules[0] if ctx.modules else "", ctx.final_status)
                for attempt in ctx.io.attempts:
                    self.app.metrics.bridge(attempt.outcome, attempt.talk_seconds)

    def _context(self) -> CallContext:
        ch = self.session.channel
        uuid = self.session.uuid
        caller = ch.get("Caller-Caller-ID-Number") or ch.get("Channel-Caller-ID-Number", "")
        log = self.app.log.bind(uuid=uuid, caller=caller)
        logmod.CALL_UUID.set(uuid)
        io = CallIO(self.session, self.cfg)
        direction = (ch.get("Call-Direction") or ch.get("Caller-Direction") or "inbound").lower()
        return CallContext(
            uuid=uuid,
            app=self.app,
            cfg=self.cfg,
            io=io,
            log=log,
            caller=caller,
            caller_name=ch.get("Caller-Caller-ID-Name", ""),
            called=ch.get("Caller-Destination-Number") or ch.get("Channel-Destination-Number", ""),
            direction="outbound" if direction == "outbound" else "inbound",
            channel=ch,
        )

    def _drive(self, ctx: CallContext) -> str:
        cfg = self.cfg
        if self.overflow:
            ctx.log.warning("call_overflow", destination=cfg.entry.overflow, cause="max_calls")
            ctx.rejected = "max_calls"
            return self._go(ctx, cfg.entry.overflow)
        self.session.wait_execute(self._answer, "answer")
        if cfg.journal.record:
            self._record(ctx)
        entry = ctx.channel.var("fsapp_module") or cfg.entry.default
        if entry and flow.CODE_RE.fullmatch(entry) and entry not in cfg.modules:
            ctx.log.warning("entry_unknown", module=entry)
            entry = cfg.entry.default
        if not entry:
            ctx.log.error("entry_missing")
            return self._go(ctx, "hangup:NORMAL_TEMPORARY_FAILURE")
        return self._go(ctx, entry)

    def _record(self, ctx: CallContext) -> None:
        if ctx.recording:
            return
        path = f"{self.cfg.journal.record_dir}/{time.strftime('%Y/%m/%d')}/{ctx.uuid}.wav"
        ctx.io.record(path, recording_variables(self.cfg, ctx.direction))
        ctx.recording = path
        ctx.recording_customer = "left"

    def _go(self, ctx: CallContext, dest_text: str, *, storage_failed: bool = False) -> str:
        """Follow destinations until one hands the call to FreeSWITCH or hangs it up."""
        for _hop in range(MAX_HOPS):
            dest = flow.parse_dest(dest_text)
            if dest.kind == "module":
                module = self.cfg.modules[dest.value]
                ctx.modules.append(module.code)
                if not module.enabled:
                    ctx.log.info("module_disabled", module=module.code, destination=module.error)
                    dest_text = module.error
                    continue
                if module.record and not storage_failed:
                    self._record(ctx)
                ctx.log.debug("module_entered", module=module.code, kind=module.kind)
                try:
                    dest_text = KINDS[module.kind].run(ctx, module)
                except StorageError as exc:
                    # The database is locked, full or gone: the caller is still routed.
                    dest_text = self.cfg.entry.on_storage_failure or module.error
                    ctx.error_reason = ctx.error_reason or "storage failed"
                    ctx.log.error("module_storage_failed", module=module.code, reason=str(exc),
                                  destination=dest_text)
                result = "next" if dest_text == module.next else "error" if dest_text == module.error else "other"
                self.app.metrics.module_result(module.code, result)
                ctx.log.debug("module_left", module=module.code, result=result, destination=dest_text)
                continue
            ctx.final = str(dest)
            return self._terminal(ctx, dest)
        ctx.log.error("call_loop_limit", hops=MAX_HOPS)
        ctx.final = "hangup:NORMAL_TEMPORARY_FAILURE"
        ctx.error_reason = ctx.error_reason or "destination loop"
        ctx.io.hangup("NORMAL_TEMPORARY_FAILURE")
        return "hangup"

    def _terminal(self, ctx: CallContext, dest: flow.Dest) -> str:
        if dest.kind == "hangup":
            ctx.log.debug("call_hangup_sent", cause=dest.value)
            ctx.io.hangup(dest.value)
            return "hangup"
        if dest.kind == "transfer":
            ctx.log.info("call_transferred", extension=dest.value, context=dest.context)
            ctx.io.transfer(dest.value, dest.context)
            ctx.transferred = True
            return "transfer"
        # ext: / queue: as a plain destination: ring, then the [dial] fallback if nobody answers.
        ctx.log.info("bridge_started", target=str(dest))
        result = ctx.io.bridge(dest, self.cfg.dial.ring_seconds)
        ctx.log.info("bridge_ended", target=str(dest), outcome=result.outcome, talk_seconds=result.talk_seconds)
        if result.answered:
            ctx.io.hangup("NORMAL_CLEARING")
            return "hangup"
        fallback = self.cfg.dial.fallback
        ctx.final = fallback
        return self._go(ctx, fallback)

    # ------------------------------------------------------------ journal

    def _journal(self, ctx: CallContext, outcome: str) -> None:
        status = callrow.status(ctx, outcome)
        ctx.final_status = status
        row = self._row(ctx, status)
        row["quality"] = line_quality(self.session.hangup_complete)  # for the analysis queue
        if row["too_long"]:
            ctx.log.warning("call_too_long", talk_seconds=row["talk_seconds"], limit=self.cfg.journal.too_long_seconds)
        self.app.journal_call(row, ctx.log)
        ctx.log.info(
            "call_ended",
            status=status,
            hangup_cause=row["hangup_cause"],
            talk_seconds=row["talk_seconds"],
            total_seconds=row["total_seconds"],
            charge=ctx.charge,
        )

    def _row(self, ctx: CallContext, status: str) -> dict[str, Any]:
        return callrow.row(ctx, self.session, status=status, too_long_seconds=self.cfg.journal.too_long_seconds,
                           daemon=self.app.daemon_id)


def recording_variables(cfg: Config, direction: str) -> tuple[str, ...]:
    """Stereo with the customer on the left: FreeSWITCH's left channel is what it read from
    this (A) leg, which on an agent's outbound call is the agent, so that call swaps them."""
    out = ["RECORD_STEREO=true", f"RECORD_STEREO_SWAP={'true' if direction == 'outbound' else 'false'}"]
    if cfg.journal.record_bridged_only:
        out.append("RECORD_BRIDGE_REQ=true")  # nothing is written until a person is bridged
    return tuple(out)
