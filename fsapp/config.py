"""Configuration: TOML into frozen dataclasses; every problem names ``file:key``."""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fsapp import flow, instants
from fsapp.modules import KINDS
from fsapp.options import ModuleConfig, Opt
from fsapp.store import sqlite_path

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_CONFIG = PACKAGE_DIR / "sample" / "fsapp.toml"
# The prompt set shipped with fsapp: copied into the package by the wheel build
# (setup.py), the top-level sounds/ folder of a source checkout or an editable install.
INSTALLED_SOUNDS = PACKAGE_DIR / "prompts"


def shipped_sounds() -> Path:
    """Where the shipped prompt set is: ``[sounds] dir = ""`` names it."""
    return INSTALLED_SOUNDS if INSTALLED_SOUNDS.is_dir() else PACKAGE_DIR.parent / "sounds"


class ConfigError(Exception):
    """The configuration has problems; ``problems`` holds one ``file:key: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8084
    allow: tuple[str, ...] = ("127.0.0.1",)
    max_calls: int = 5000
    drain_seconds: float = 30.0
    metrics_listen: str = ""
    backlog: int = 4096
    command_timeout_seconds: float = 10.0
    call_timeout_seconds: float = 4 * 3600.0
    connect_timeout_seconds: float = 2.0  # FreeSWITCH answers connect in milliseconds


@dataclass(frozen=True)
class CRMConfig:
    kind: str = "local"
    url: str = ""
    token_env: str = ""
    timeout_seconds: float = 3.0
    connect_timeout_seconds: float = 1.0
    breaker_threshold: int = 5
    breaker_cooldown_seconds: float = 30.0
    region: str = "IR"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SoundsConfig:
    dir: Path = Path("sounds")
    language: str = "fa"
    fs_dir: str = ""  # how FreeSWITCH sees dir; "" = the absolute path of dir
    say: str = "files"  # files | mod_say
    currency: str = "rial"
    loudness_lufs: float = -20.0  # what `fsapp sounds build` and `tts` normalise to (EBU R128)
    fs_user: str = "freeswitch"  # the user FreeSWITCH runs as, for `fsapp check`'s access test

    @functools.cached_property
    def _prefix(self) -> str:
        return f"{self.fs_dir or self.dir}/{self.language}/"

    def path(self, name: str) -> str:
        """What playback gets for prompt ``group/name`` (FreeSWITCH picks the rate folder)."""
        return f"{self._prefix}{name}.wav"


@dataclass(frozen=True)
class JournalConfig:
    too_long_seconds: int = 600
    record: bool = False
    record_dir: str = "/var/lib/freeswitch/recordings/fsapp"
    notify_command: str = ""
    record_bridged_only: bool = False  # RECORD_BRIDGE_REQ: record only while a person is bridged
    timezone: str = ""  # IANA name; "" is the host's zone
    calendar: str = "gregorian"  # or "jalali": a Solar Hijri date beside the Gregorian one

    @property
    def zone(self) -> Any:
        """The ``tzinfo`` times are shown in (None: the host's zone)."""
        return instants.zone(self.timezone)


@dataclass(frozen=True)
class AnalysisConfig:
    """``[analysis]``: the background analysis of recorded calls, and its flags (0 = flag off)."""

    enabled: bool = True
    workers: int = 1
    nice: int = 10
    poll_seconds: float = 1.0
    lease_seconds: float = 900.0
    max_attempts: int = 3
    recording_dir: str = ""  # how this host sees [journal] record_dir ("" = the same path)
    vad_mode: int = 3
    frame_ms: int = 20
    min_speech_ms: int = 200
    hangover_ms: int = 700
    long_silence_seconds: float = 10.0
    max_overtalk_ratio: float = 0.15
    min_mos: float = 3.5
    max_agent_share: float = 0.0
    max_hold_seconds: float = 0.0
    transcribe_command: str = ""
    transcribe_timeout_seconds: float = 600.0


@dataclass(frozen=True)
class DialConfig:
    extension: str = "user/{ext}@${domain_name}"
    queue: str = "{queue}@default"
    ring_seconds: int = 30
    fallback: str = "hangup:NO_ANSWER"


@dataclass(frozen=True)
class SecurityConfig:
    """PIN guessing limits: per customer, per caller ID (withheld numbers share one), daemon-wide alarm."""

    pin_max_failures: int = 5
    pin_window_seconds: int = 900
    pin_lockout_seconds: int = 1800
    caller_max_failures: int = 10
    caller_window_seconds: int = 900
    caller_lockout_seconds: int = 3600
    anonymous_max_failures: int = 20
    alarm_failures: int = 50
    alarm_window_seconds: int = 300


@dataclass(frozen=True)
class BillingConfig:
    meter_heartbeat_seconds: float = 15.0
    outbox_retry_seconds: float = 5.0
    outbox_max_retry_seconds: float = 600.0


@dataclass(frozen=True)
class EntryConfig:
    default: str = ""
    overflow: str = "hangup:NORMAL_TEMPORARY_FAILURE"
    on_storage_failure: str = ""


@dataclass(frozen=True)
class CDRConfig:
    listen: str = ""  # HOST:PORT for mod_json_cdr's posts; "" = off
    credentials_env: str = ""  # the environment variable holding mod_json_cdr's cred, user:password
    max_body_bytes: int = 1 << 20
    own_process: bool = True  # the posts' HTTP in a front process of its own (fsapp.cdr.front)
    credentials: str = field(default="", repr=False)  # read from credentials_env at load


@dataclass(frozen=True)
class WebConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8090
    secret_env: str = ""  # the env var holding the session secret; "" = a generated file by the database
    language: str = "fa"
    login_max_failures: int = 5
    login_window_seconds: int = 900
    in_serve: bool = False  # fsapp serve serves the console too, on listen, in its own event loop
    daemon_health_url: str = ""  # the daemon's /healthz for the live page; "" = from server.metrics_listen


@dataclass(frozen=True)
class Config:
    file: str
    server: ServerConfig
    storage_url: str
    crm: CRMConfig
    sounds: SoundsConfig
    journal: JournalConfig
    dial: DialConfig
    security: SecurityConfig
    billing: BillingConfig
    entry: EntryConfig
    modules: Mapping[str, ModuleConfig]
    analysis: AnalysisConfig = AnalysisConfig()
    storage_pool_size: int = 20
    storage_group_commit_ms: float = 2.0
    cdr: CDRConfig = field(default_factory=CDRConfig)
    web: WebConfig = field(default_factory=WebConfig)


# ------------------------------------------------------------------ loading


# The ceiling of a number key that names none of its own: what a C int holds
# (socket and pool sizes are passed to C), and a day for a float of seconds.
INT_CEILING = 2**31 - 1
FLOAT_CEILING = 86400.0
# Characters FreeSWITCH reads as argument syntax in an app's argument: a space splits
# play_and_get_digits' and record_session's arguments, '!' splits a file_string,
# quotes and backslashes are unquoted, '{' '}' '$' are channel variable syntax.
PATH_UNSAFE = frozenset(" \t\n\r'\"\\!{}$")


class _Reader:
    """Reads typed keys from one TOML table, collecting problems."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{self.file}:{key}: {message}")

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "must be a table")
            return {}
        return value

    def get(
        self,
        data: Mapping[str, Any],
        section: str,
        key: str,
        typ: type | tuple[type, ...],
        default: Any,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        choices: Iterable[Any] = (),
    ) -> Any:
        full = f"{section}.{key}" if section else key
        if key not in data:
            return default
        value = data[key]
        ok = isinstance(value, typ) and not (typ in (int, float, (int, float)) and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            self.fail(full, f"must be {names}, not {type(value).__name__}")
            return default
        choices = tuple(choices)
        if choices and value not in choices:
            self.fail(full, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._number(full, value, default, minimum, maximum)
        return value

    def _number(self, full: str, value: float, default: Any, minimum: float | None,
                maximum: float | None) -> Any:
        """A number within its bounds (its own, else INT_CEILING or FLOAT_CEILING); finite."""
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(full, f"must be a finite number, not {value}")
            return default
        if maximum is None:
            maximum = FLOAT_CEILING if isinstance(value, float) else INT_CEILING
        if minimum is not None and value < minimum:
            self.fail(full, f"must be at least {minimum}, not {value}")
            return default
        if value > maximum:
            self.fail(full, f"must be at most {_plain(maximum)}, not {value}")
            return default
        return value

    def path(self, full: str, value: str) -> None:
        """A path FreeSWITCH gets inside an app argument: refused if it holds argument syntax."""
        bad = sorted(set(value) & PATH_UNSAFE)
        if bad:
            self.fail(full, f"{value!r} holds {' '.join(repr(c) for c in bad)}, which FreeSWITCH reads as "
                            f"argument syntax; use a path without them (a symlink, or [sounds] fs_dir)")

    def unknown(self, data: Mapping[str, Any], section: str, known: Iterable[str]) -> None:
        known = set(known)
        for key in data:
            if key not in known:
                self.fail(f"{section}.{key}" if section else key, "unknown key")


def _plain(n: float) -> str:
    """A bound as people write it: 1000000000000, not 1e12."""
    return str(int(n)) if float(n).is_integer() else str(n)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    host = host.strip("[]")
    ipaddress.ip_address(host) if host not in ("localhost", "") else None
    return host, int(port)


def peer_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address as connected (an IPv4 peer of an IPv6 socket as IPv4); None if not an address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip


def _check_listen(r: _Reader, key: str, value: str) -> None:
    if value:
        try:
            parse_listen(value)
        except ValueError as exc:
            r.fail(key, str(exc))


def load(path: str | os.PathLike[str] | None = None, *, check_files: bool = True) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    p = Path(path) if path else SAMPLE_CONFIG
    file = str(path) if path else "fsapp.toml (sample)"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # an editor's byte-order mark is no error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    if path:
        return from_dict(data, file=file, base=p.resolve().parent, check_files=check_files)
    # The shipped sample works from the working directory (its database lands there).
    return from_dict(data, file=file, base=Path.cwd(), check_files=check_files)


def _relative(base: Path, value: str) -> Path:
    q = Path(value)
    return q if q.is_absolute() else base / q


SECTIONS = ("server", "storage", "crm", "sounds", "journal", "dial", "security", "billing", "entry", "modules",
            "analysis", "cdr", "web")


def from_dict(
    data: Mapping[str, Any],
    *,
    file: str = "fsapp.toml",
    base: Path | None = None,
    sounds_base: Path | None = None,
    check_files: bool = True,
) -> Config:
    """Validate parsed TOML; raise ConfigError listing every problem."""
    base = base or Path.cwd()
    problems: list[str] = []
    r = _Reader(file, problems)
    r.unknown(data, "", SECTIONS)
    server = _server(r, r.table(data, "server"))
    storage_url, pool_size, group_commit_ms = _storage(r, r.table(data, "storage"), base)
    crm = _crm(r, r.table(data, "crm"))
    sounds = _sounds(r, r.table(data, "sounds"), sounds_base or base, check_files)
    journal = _journal(r, r.table(data, "journal"))
    dial = _dial(r, r.table(data, "dial"))
    security = _security(r, r.table(data, "security"))
    billing = _billing(r, r.table(data, "billing"))
    entry = _entry(r, r.table(data, "entry"))
    cdr = _cdr(r, r.table(data, "cdr"))
    web = _web(r, r.table(data, "web"), server, cdr.listen)
    modules = _modules(r, data.get("modules", []), crm.kind)
    cfg = Config(
        file=file, server=server, storage_url=storage_url, storage_pool_size=pool_size,
        storage_group_commit_ms=group_commit_ms, crm=crm, sounds=sounds, journal=journal, dial=dial,
        security=security, billing=billing, entry=entry, modules=MappingProxyType(modules),
        analysis=_analysis(r, data), cdr=cdr, web=web,
    )
    problems.extend(flow.check_graph(cfg, KINDS))
    if check_files and sounds.dir.is_dir():
        problems.extend(check_prompt_files(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def _server(r: _Reader, s: Mapping[str, Any]) -> ServerConfig:
    r.unknown(s, "server", ServerConfig.__dataclass_fields__.keys() - {"listen_host", "listen_port"} | {"listen"})
    host, port = ServerConfig.listen_host, ServerConfig.listen_port
    listen = r.get(s, "server", "listen", str, "127.0.0.1:8084")
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        r.fail("server.listen", str(exc))
    allow = r.get(s, "server", "allow", list, ["127.0.0.1"])
    for i, a in enumerate(allow):
        try:
            ipaddress.ip_network(str(a), strict=False)
        except ValueError:
            r.fail(f"server.allow[{i}]", f"not an IP address or network: {a!r}")
    metrics_listen = r.get(s, "server", "metrics_listen", str, "")
    _check_listen(r, "server.metrics_listen", metrics_listen)
    return ServerConfig(
        listen_host=host,
        listen_port=port,
        allow=tuple(str(a) for a in allow),
        max_calls=r.get(s, "server", "max_calls", int, 5000, minimum=1, maximum=100_000),
        drain_seconds=r.get(s, "server", "drain_seconds", float, 30.0, minimum=0, maximum=3600),
        metrics_listen=metrics_listen,
        backlog=r.get(s, "server", "backlog", int, 4096, minimum=16, maximum=65535),
        command_timeout_seconds=r.get(s, "server", "command_timeout_seconds", float, 10.0, minimum=0.1,
                                      maximum=3600),
        call_timeout_seconds=r.get(s, "server", "call_timeout_seconds", float, 14400.0, minimum=1,
                                   maximum=86400),
        connect_timeout_seconds=r.get(s, "server", "connect_timeout_seconds", float, 2.0, minimum=0.1,
                                      maximum=60),
    )


def _storage(r: _Reader, st: Mapping[str, Any], base: Path) -> tuple[str, int, float]:
    """``[storage]``: the URL (a relative sqlite: path made absolute), pool size, group commit window."""
    r.unknown(st, "storage", ("url", "pool_size", "group_commit_ms"))
    storage_url = r.get(st, "storage", "url", str, "sqlite:fsapp.db")
    pool_size = r.get(st, "storage", "pool_size", int, 20, minimum=1, maximum=1000)
    # At most 100: a call's writes each wait up to it.
    group_commit_ms = r.get(st, "storage", "group_commit_ms", float, 2.0, minimum=0, maximum=100)
    if storage_url.startswith("sqlite:"):
        # sqlite:///var/lib/fsapp/fsapp.db is absolute; sqlite:fsapp.db is relative to this file.
        storage_url = "sqlite://" + str(sqlite_path(storage_url, base))
    elif not storage_url.startswith(("postgresql://", "postgres://")):
        r.fail("storage.url", f"must be sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH or postgresql://..., "
                              f"not {storage_url!r}")
    return storage_url, pool_size, group_commit_ms


def _crm(r: _Reader, c: Mapping[str, Any]) -> CRMConfig:
    known_crm = set(CRMConfig.__dataclass_fields__) - {"extra"}
    crm = CRMConfig(
        kind=r.get(c, "crm", "kind", str, "local", choices=("local", "http", "payamgostar")),
        url=r.get(c, "crm", "url", str, ""),
        token_env=r.get(c, "crm", "token_env", str, ""),
        timeout_seconds=r.get(c, "crm", "timeout_seconds", float, 3.0, minimum=0.1, maximum=300),
        connect_timeout_seconds=r.get(c, "crm", "connect_timeout_seconds", float, 1.0, minimum=0.1, maximum=300),
        breaker_threshold=r.get(c, "crm", "breaker_threshold", int, 5, minimum=1, maximum=10_000),
        breaker_cooldown_seconds=r.get(c, "crm", "breaker_cooldown_seconds", float, 30.0, minimum=0,
                                       maximum=86400),
        region=r.get(c, "crm", "region", str, "IR"),
        extra=MappingProxyType({k: v for k, v in c.items() if k not in known_crm}),
    )
    if crm.kind != "local" and not crm.url:
        r.fail("crm.url", f"required for kind {crm.kind!r}")
    if crm.kind == "local":
        r.unknown(c, "crm", known_crm)
    return crm


def _sounds(r: _Reader, so: Mapping[str, Any], base: Path, check_files: bool) -> SoundsConfig:
    r.unknown(so, "sounds", SoundsConfig.__dataclass_fields__)
    sounds = SoundsConfig(
        dir=_relative(base, r.get(so, "sounds", "dir", str, "sounds")) if so.get("dir") != "" else shipped_sounds(),
        language=r.get(so, "sounds", "language", str, "fa", choices=("fa", "en")),
        fs_dir=r.get(so, "sounds", "fs_dir", str, ""),
        say=r.get(so, "sounds", "say", str, "files", choices=("files", "mod_say")),
        currency=r.get(so, "sounds", "currency", str, "rial", choices=("rial", "toman")),
        loudness_lufs=r.get(so, "sounds", "loudness_lufs", float, -20.0),
        fs_user=r.get(so, "sounds", "fs_user", str, "freeswitch"),
    )
    if not -70.0 < sounds.loudness_lufs < 0.0:
        r.fail("sounds.loudness_lufs", f"must be between -70 and 0 LUFS, not {sounds.loudness_lufs}")
    if check_files and not sounds.dir.is_dir():
        r.fail("sounds.dir", f"no such directory: {sounds.dir}")
    r.path("sounds.fs_dir" if sounds.fs_dir else "sounds.dir", sounds.fs_dir or str(sounds.dir))
    return sounds


def _journal(r: _Reader, j: Mapping[str, Any]) -> JournalConfig:
    r.unknown(j, "journal", JournalConfig.__dataclass_fields__)
    journal = JournalConfig(
        too_long_seconds=r.get(j, "journal", "too_long_seconds", int, 600, minimum=1, maximum=86400),
        record=r.get(j, "journal", "record", bool, False),
        record_dir=r.get(j, "journal", "record_dir", str, JournalConfig.record_dir),
        notify_command=r.get(j, "journal", "notify_command", str, ""),
        record_bridged_only=r.get(j, "journal", "record_bridged_only", bool, False),
        timezone=_timezone(r, r.get(j, "journal", "timezone", str, "")),
        calendar=r.get(j, "journal", "calendar", str, "gregorian", choices=instants.CALENDARS),
    )
    r.path("journal.record_dir", journal.record_dir)
    return journal


def _timezone(r: _Reader, name: str) -> str:
    try:
        instants.zone(name)
    except ValueError as exc:
        r.fail("journal.timezone", str(exc))
        return ""
    return name


def _dial(r: _Reader, d: Mapping[str, Any]) -> DialConfig:
    r.unknown(d, "dial", DialConfig.__dataclass_fields__)
    dial = DialConfig(
        extension=r.get(d, "dial", "extension", str, DialConfig.extension),
        queue=r.get(d, "dial", "queue", str, DialConfig.queue),
        ring_seconds=r.get(d, "dial", "ring_seconds", int, 30, minimum=1, maximum=3600),
        fallback=r.get(d, "dial", "fallback", str, DialConfig.fallback),
    )
    if "{ext}" not in dial.extension:
        r.fail("dial.extension", "must contain {ext}")
    if "{queue}" not in dial.queue:
        r.fail("dial.queue", "must contain {queue}")
    return dial


YEAR = 366 * 86400


def _security(r: _Reader, se: Mapping[str, Any]) -> SecurityConfig:
    r.unknown(se, "security", SecurityConfig.__dataclass_fields__)
    return SecurityConfig(**{
        key: r.get(se, "security", key, int, f.default, minimum=1,
                   maximum=YEAR if key.endswith("_seconds") else 1_000_000)
        for key, f in SecurityConfig.__dataclass_fields__.items()
    })


def _billing(r: _Reader, b: Mapping[str, Any]) -> BillingConfig:
    r.unknown(b, "billing", BillingConfig.__dataclass_fields__)
    return BillingConfig(
        # A kill -9 loses at most one heartbeat of talk: an hour is the most that may be at stake.
        meter_heartbeat_seconds=r.get(b, "billing", "meter_heartbeat_seconds", float, 15.0, minimum=1,
                                      maximum=3600),
        outbox_retry_seconds=r.get(b, "billing", "outbox_retry_seconds", float, 5.0, minimum=0.05, maximum=3600),
        outbox_max_retry_seconds=r.get(b, "billing", "outbox_max_retry_seconds", float, 600.0, minimum=1,
                                       maximum=86400),
    )


def _entry(r: _Reader, e: Mapping[str, Any]) -> EntryConfig:
    r.unknown(e, "entry", EntryConfig.__dataclass_fields__)
    return EntryConfig(
        default=r.get(e, "entry", "default", str, ""),
        overflow=r.get(e, "entry", "overflow", str, EntryConfig.overflow),
        on_storage_failure=r.get(e, "entry", "on_storage_failure", str, ""),
    )


def _web(r: _Reader, w: Mapping[str, Any], server: ServerConfig, cdr_listen: str) -> WebConfig:
    """``[web]``: the managers' console (``fsapp web``, or inside ``fsapp serve`` with ``in_serve``)."""
    r.unknown(w, "web", WebConfig.__dataclass_fields__.keys() - {"listen_host", "listen_port"} | {"listen"})
    host, port = WebConfig.listen_host, WebConfig.listen_port
    try:
        host, port = parse_listen(r.get(w, "web", "listen", str, "127.0.0.1:8090"))
    except ValueError as exc:
        r.fail("web.listen", str(exc))
    secret_env = r.get(w, "web", "secret_env", str, "")
    if secret_env and not secret_env.replace("_", "").isalnum():
        r.fail("web.secret_env", f"must be an environment variable name, not {secret_env!r}")
    return WebConfig(
        listen_host=host, listen_port=port, secret_env=secret_env,
        language=r.get(w, "web", "language", str, "fa", choices=("fa", "en")),
        login_max_failures=r.get(w, "web", "login_max_failures", int, 5, minimum=1),
        login_window_seconds=r.get(w, "web", "login_window_seconds", int, 900, minimum=1),
        in_serve=_web_in_serve(r, w, (host, port), server, cdr_listen),
        daemon_health_url=_daemon_health_url(r, w, server.metrics_listen),
    )


def _web_in_serve(r: _Reader, w: Mapping[str, Any], web: tuple[str, int], server: ServerConfig,
                  cdr_listen: str) -> bool:
    """``in_serve``: a bool; the console then needs a port none of serve's other listeners has."""
    in_serve = bool(r.get(w, "web", "in_serve", bool, False))
    others = {"server.listen": f"{server.listen_host}:{server.listen_port}",
              "server.metrics_listen": server.metrics_listen, "cdr.listen": cdr_listen}
    for key, listen in others.items():
        if in_serve and listen and _same_address(web, listen):
            r.fail("web.listen", f"with in_serve = true the console needs a port of its own, "
                                 f"but {web[0]}:{web[1]} is also {key}")
    return in_serve


def _same_address(a: tuple[str, int], listen: str) -> bool:
    try:
        host, port = parse_listen(listen)
    except ValueError:  # reported under its own key
        return False
    wildcard = ("0.0.0.0", "::", "")
    return port == a[1] != 0 and (host == a[0] or host in wildcard or a[0] in wildcard)


def _daemon_health_url(r: _Reader, w: Mapping[str, Any], metrics_listen: str) -> str:
    """Where the live page reads the daemon's health: the key, else ``/healthz`` on server.metrics_listen."""
    url = r.get(w, "web", "daemon_health_url", str, "")
    if url:
        if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
            r.fail("web.daemon_health_url", f"must be an http:// or https:// URL, not {url!r}")
            return ""
        return url
    if not metrics_listen:
        return ""
    try:
        host, port = parse_listen(metrics_listen)
    except ValueError:  # reported under server.metrics_listen
        return ""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"


_ANALYSIS_LIMITS: dict[str, dict[str, Any]] = {
    "workers": {"minimum": 1}, "nice": {"minimum": 0}, "poll_seconds": {"minimum": 0.05},
    "lease_seconds": {"minimum": 5}, "max_attempts": {"minimum": 1}, "vad_mode": {"choices": (0, 1, 2, 3)},
    "frame_ms": {"choices": (10, 20, 30)}, "min_speech_ms": {"minimum": 0}, "hangover_ms": {"minimum": 0},
    "long_silence_seconds": {"minimum": 0}, "max_overtalk_ratio": {"minimum": 0}, "min_mos": {"minimum": 0},
    "max_agent_share": {"minimum": 0}, "max_hold_seconds": {"minimum": 0},
    "transcribe_timeout_seconds": {"minimum": 1},
}


def _analysis(r: _Reader, data: Mapping[str, Any]) -> AnalysisConfig:
    a = r.table(data, "analysis")
    fields = AnalysisConfig.__dataclass_fields__
    r.unknown(a, "analysis", fields)
    values = {}
    for key, f in fields.items():
        default = getattr(AnalysisConfig, key)
        typ = float if f.type == "float" else {"bool": bool, "int": int, "str": str}[str(f.type)]
        values[key] = r.get(a, "analysis", key, typ, default, **_ANALYSIS_LIMITS.get(key, {}))
    for key in ("max_overtalk_ratio", "max_agent_share"):
        if values[key] > 1:
            r.fail(f"analysis.{key}", f"is a share of the call, from 0 to 1 (0 = off), not {values[key]}")
    if values["transcribe_command"] and values["lease_seconds"] < values["transcribe_timeout_seconds"] + 60:
        r.fail("analysis.lease_seconds", f"must outlast transcribe_timeout_seconds by a minute "
               f"({values['transcribe_timeout_seconds']:g} + 60), not {values['lease_seconds']:g}: "
               "a call whose lease ends mid-analysis is taken by another worker")
    if values["min_mos"] > 5:
        r.fail("analysis.min_mos", f"MOS runs from 1 to 5 (0 = off), not {values['min_mos']}")
    return AnalysisConfig(**values)


def _cdr(r: _Reader, t: Mapping[str, Any]) -> CDRConfig:
    r.unknown(t, "cdr", ("listen", "credentials_env", "max_body_bytes", "own_process"))
    listen = r.get(t, "cdr", "listen", str, "")
    _check_listen(r, "cdr.listen", listen)
    env = r.get(t, "cdr", "credentials_env", str, "")
    credentials = os.environ.get(env, "") if env else ""
    if env and ":" not in credentials:
        r.fail("cdr.credentials_env", f"environment variable {env} must hold user:password (mod_json_cdr's cred), "
                                      + ("but is not set" if not credentials else "but has no ':'"))
    return CDRConfig(
        listen=listen,
        credentials_env=env,
        max_body_bytes=r.get(t, "cdr", "max_body_bytes", int, CDRConfig.max_body_bytes, minimum=1024),
        own_process=r.get(t, "cdr", "own_process", bool, True),
        credentials=credentials,
    )


def _modules(r: _Reader, raw_modules: Any, crm_kind: str) -> dict[str, ModuleConfig]:
    """``[[modules]]``: each table read against its kind's schema, then its kind's own rules."""
    modules: dict[str, ModuleConfig] = {}
    if not isinstance(raw_modules, list):
        r.fail("modules", "must be an array of tables ([[modules]])")
        raw_modules = []
    for i, m in enumerate(raw_modules):
        module = _module(r, f"modules[{i}]", m, modules)
        if module is not None:
            modules[module.code] = module
            kind = KINDS[module.kind]
            problems = [*kind.validate(module), *kind.crm_rules(module, crm_kind)]
            r.problems.extend(f"{r.file}:{module.where}.{msg}" for msg in problems)
    return modules


def _module(r: _Reader, where: str, m: Any, seen: Mapping[str, ModuleConfig]) -> ModuleConfig | None:
    if not isinstance(m, dict):
        r.fail(where, "must be a table")
        return None
    code = m.get("code")
    if not isinstance(code, str) or not code:
        r.fail(f"{where}.code", "missing")
        return None
    if not flow.CODE_RE.fullmatch(code):
        r.fail(f"{where}.code", f"{code!r} must be letters, digits, '_' or '-'")
        return None
    if code in seen:
        r.fail(f"{where}.code", f"duplicate code {code!r} (also {seen[code].where})")
        return None
    kind = m.get("kind")
    if kind not in KINDS:
        r.fail(f"{where}.kind", f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
        return None
    schema = KINDS[kind].schema
    r.unknown(m, where, {"code", "name", "kind", "enabled", "next", "error", "record", *schema})
    opts = {key: _freeze(_option(r, where, m, key, opt)) for key, opt in schema.items()}
    for key in ("next", "error"):
        if not isinstance(m.get(key), str) or not m.get(key):
            r.fail(f"{where}.{key}", "missing destination")
    return ModuleConfig(
        code=code,
        name=r.get(m, where, "name", str, code),
        kind=kind,
        enabled=r.get(m, where, "enabled", bool, True),
        next=str(m.get("next", "")),
        error=str(m.get("error", "")),
        record=r.get(m, where, "record", bool, False),
        options=MappingProxyType(opts),
        where=where,
    )


def _option(r: _Reader, where: str, m: Mapping[str, Any], key: str, opt: Opt) -> Any:
    """One kind-specific key of a module table: its value, or its default (and a problem if wrong)."""
    full = f"{where}.{key}"
    if key not in m:
        if opt.required:
            r.fail(full, "missing")
        return opt.default
    value = m[key]
    if opt.role == "destmap":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            r.fail(full, "must be a table of destinations")
            return {}
    elif opt.role == "destlist":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            r.fail(full, "must be a list of destinations")
            return []
    else:
        return r.get(m, where, key, opt.type, opt.default, minimum=opt.minimum, maximum=opt.maximum,
                     choices=opt.choices)
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def prompt_names(cfg: Config) -> dict[str, str]:
    """Every prompt the config names -> the key that names it."""
    from fsapp import say

    names: dict[str, str] = {}
    for m in cfg.modules.values():
        schema = KINDS[m.kind].schema
        for key, opt in schema.items():
            if opt.role == "prompt" and m.options[key]:
                names.setdefault(m.options[key], f"{m.where}.{key}")
        if KINDS[m.kind].speaks_numbers and cfg.sounds.say == "files":
            for name in say.number_prompt_names(cfg.sounds.language):
                names.setdefault(name, f"{m.where} (spoken amounts)")
    return names


def check_prompt_files(cfg: Config) -> list[str]:
    from fsapp import sounds

    problems = []
    for name, key in prompt_names(cfg).items():
        for message in sounds.check(cfg.sounds.dir, cfg.sounds.language, [name]):
            problems.append(f"{cfg.file}:{key}: {message}")
    return problems
