"""structlog, configured once: JSON lines off a TTY, console rendering on one.

Secrets never reach a log line: a processor blanks PIN and token fields and
masks long digit runs (card-like numbers) in every string value, unless the run is
a phone number (a caller ID such as ``00989121234567`` stays readable).

Under journald (``JOURNAL_STREAM`` names stderr) each line starts with its syslog
priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug), which journald
takes off and files: ``journalctl -p err`` then finds the errors.
"""

from __future__ import annotations

import contextvars
import json as jsonlib
import logging
import os
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from fsapp import phones

SECRET_KEYS = frozenset({"pin", "password", "token", "authorization", "secret", "api_key", "new_pin"})
_CARD_RE = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


_secret_key: dict[str, bool] = {}
_masked: dict[str, str] = {}  # long strings seen, as logged (a call's uuid and caller are on every line)


def _mask(value: str) -> str:
    masked = _masked.get(value)
    if masked is None:
        masked = _CARD_RE.sub(_mask_card, value) if _CARD_RE.search(value) else value
        if len(_masked) >= 4096:
            _masked.clear()
        _masked[value] = masked
    return masked


def _mask_card(match: re.Match[str]) -> str:
    digits = match.group(0)
    if (phones.normalize(digits) or "").startswith("+"):  # a valid phone number, not a card
        return digits
    return digits[:4] + "*" * (len(digits) - 4)


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Blank secret fields; mask card-like digit runs in strings."""
    for key, value in event.items():
        secret = _secret_key.get(key)
        if secret is None:
            secret = key in SECRET_KEYS or key.endswith("_pin") or key.lower() in SECRET_KEYS
            if len(_secret_key) < 1024:
                _secret_key[key] = secret
        if secret:
            event[key] = "[redacted]"
        elif type(value) is str and len(value) >= 13:
            event[key] = _mask(value)
    return event


# The uuid of the call a greenlet runs (gevent gives each greenlet its own context): lines
# logged there by code that knows nothing of the call, such as the CRM clients, carry it too.
CALL_UUID: contextvars.ContextVar[str] = contextvars.ContextVar("fsapp_call_uuid", default="")

_LEVELS = {"warn": "warning", "exception": "error"}
_second = -1
_second_text = ""


def stamp(_logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``level``, an ISO-8601 UTC ``timestamp`` (microseconds), the call's ``uuid`` (see
    CALL_UUID) when the line has none, then :func:`redact`.

    One processor for what structlog's add_log_level + TimeStamper do, with the
    date and time formatted once a second: a busy daemon writes a dozen lines a call.
    """
    global _second, _second_text
    event["level"] = _LEVELS.get(name, name)
    call = CALL_UUID.get()
    if call and "uuid" not in event:
        event["uuid"] = call
    now = time.time()
    sec = int(now)
    if sec != _second:
        _second, _second_text = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    event["timestamp"] = f"{_second_text}.{int((now - sec) * 1_000_000):06d}Z"
    return redact(_logger, name, event)


class BufferedLogger:
    """Writes lines to a stream without a flush per line; ``flush`` is called by the daemon.

    A busy daemon logs tens of lines per call: one write(2) each costs more than
    the rest of the logging. The daemon flushes every 100 ms and at exit, so at
    most that much log is lost if the process is killed outright.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        self._stream.write(message + "\n")

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass


def render_json(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    """One compact JSON line (UTF-8 as is); what JSON cannot hold is written as its repr."""
    try:
        return orjson.dumps(event, default=repr).decode()
    except TypeError:  # a dict key that is not a string, an integer past 64 bits
        return jsonlib.dumps(event, ensure_ascii=False, separators=(",", ":"), default=repr)


# syslog priorities (RFC 5424) of structlog's method names
_PRIORITY = {"debug": "<7>", "info": "<6>", "warning": "<4>", "warn": "<4>", "error": "<3>",
             "exception": "<3>", "critical": "<2>", "fatal": "<2>"}


def render_journald(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
    """A JSON line behind its syslog priority, for journald's ``SyslogLevelPrefix``."""
    return _PRIORITY.get(name, "<6>") + render_json(logger, name, event)


def to_journald(stream: Any) -> bool:
    """Whether ``stream`` is the journald stream systemd names in ``JOURNAL_STREAM`` (device:inode)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


_buffered: BufferedLogger | None = None


def flush() -> None:
    """Push buffered log lines out (no-op unless ``configure(buffered=True)``)."""
    if _buffered is not None:
        _buffered.flush()


def configure(level: str = "info", *, json: bool | None = None, stream: Any = None, buffered: bool = False) -> None:
    """Configure structlog for this process (a later call replaces the configuration)."""
    global _buffered
    stream = stream or sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer()
    if json:
        renderer = render_journald if to_journald(stream) else render_json
    structlog.configure(
        processors=[
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_factory(stream, buffered and json),
        cache_logger_on_first_use=False,
    )


def _factory(stream: Any, buffered: bool) -> Any:
    global _buffered
    if not buffered:
        _buffered = None
        return structlog.PrintLoggerFactory(stream)
    if stream is sys.stderr:
        # sys.stderr is line-buffered even on a pipe: write through a buffer of our own.
        import atexit
        import io

        raw = open(sys.stderr.fileno(), "wb", buffering=1 << 16, closefd=False)  # noqa: SIM115
        stream = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", line_buffering=False)
        atexit.register(flush)
    _buffered = BufferedLogger(stream)
    logger = _buffered
    return lambda *args: logger


def get(name: str = "fsapp") -> Any:
    return structlog.get_logger(name)
