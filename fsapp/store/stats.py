"""SQL of the console's statistics: the journal's calls counted per quarter hour of UTC and per extension.

Every zone's offset from UTC is a whole number of quarter hours (Tehran +03:30,
Kathmandu +05:45), so a quarter of the stored UTC time never straddles a local hour
or day. The database counts per quarter, ranged on ``started_at``: a month is at most
2,976 rows whatever the number of calls, and ``fsapp.callstats`` folds them into the
site's hours and days.

The sums are kept as the calls are written (migration 13): ``call_quarters`` per quarter
hour, ``call_day_extensions`` per UTC day and extension. Triggers on ``calls`` catch every
write (the daemon's, the CDR merges, bulk loads, any UPDATE or DELETE): on SQLite they add
to the sums at once (one writer at a time); on PostgreSQL they append to
``call_stat_deltas``, which a reader folds into the sums (no hot row locked by every
daemon, no deadlock between two batches touching the same quarters in another order), and
reads the rest of with them. A period alone is read from the sums: the whole hours (days)
inside it from the tables, the calls of the hour (day) at each end from ``calls``. Any other
filter counts the calls themselves.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable
from typing import Any

# What one call adds to its group's sums ({r}: the row, calls / NEW / OLD). The wait is what
# FreeSWITCH's CDR measured (socket-only rows have none): from the call's start until a person
# answered, over the answered calls that have one.
_MEASURED = "{r}.status = 'answered' AND {r}.cdr_legs > 0"
_ONE = {
    "calls": "1",
    "answered": "CASE WHEN {r}.status = 'answered' THEN 1 ELSE 0 END",
    "missed": "CASE WHEN {r}.status = 'missed' THEN 1 ELSE 0 END",
    "abandoned": "CASE WHEN {r}.status = 'abandoned' THEN 1 ELSE 0 END",
    "too_long": "CASE WHEN {r}.too_long = 1 THEN 1 ELSE 0 END",
    "talk_seconds": "COALESCE({r}.talk_seconds, 0)",
    "answered_talk": "CASE WHEN {r}.status = 'answered' THEN COALESCE({r}.talk_seconds, 0) ELSE 0 END",
    "waited": f"CASE WHEN {_MEASURED} THEN 1 ELSE 0 END",
    "wait_seconds": f"CASE WHEN {_MEASURED} THEN COALESCE({{r}}.wait_seconds, 0) ELSE 0 END",
}
SUMS = {name: f"SUM({sql.format(r='calls')})" for name, sql in _ONE.items()}
STAT_FIELDS = tuple(SUMS)
# the columns the sums read: an UPDATE that changes none of them leaves the sums alone
_READ = ("started_at", "extension", "status", "too_long", "talk_seconds", "cdr_legs", "wait_seconds")

_HOUR = "substr({r}.started_at, 1, 13)"  # 2026-12-01T05
_DAY = "substr({r}.started_at, 1, 10)"  # 2026-12-01
_QUARTER = ("CASE WHEN substr({r}.started_at, 15, 2) < '15' THEN 0 WHEN substr({r}.started_at, 15, 2) < '30'"
            " THEN 1 WHEN substr({r}.started_at, 15, 2) < '45' THEN 2 ELSE 3 END")
_SELECT = ", ".join(f"{sql} AS {name}" for name, sql in SUMS.items())
_SUMMED = ", ".join(f"SUM({f}) AS {f}" for f in STAT_FIELDS)
_FIELDS = ", ".join(STAT_FIELDS)
# The analysis beside each call, joined only when a filter reads it (flag, transcript text).
_ANALYSIS = " LEFT JOIN call_analysis ON call_analysis.call_uuid = calls.uuid"
# The filters the sums answer (the period); the others count the calls. None is "any" for these:
_ANY_WHEN_NONE = ("has_recording", "min_mos", "max_mos")
_PERIOD = ("date_from", "date_to")
FOLD_LOCK = zlib.crc32(b"fsapp-call-stat-deltas") - 2**31


class _Grouping:
    """One of the kept sums: its table, its key, how a call's key is worked out, its key's width in ``started_at``."""

    def __init__(self, table: str, keys: dict[str, str], prefix: str, width: int, step: dt.timedelta,
                 delta_keys: dict[str, str]) -> None:
        self.table, self.keys, self.prefix, self.width, self.step = table, keys, prefix, width, step
        self.delta_keys = delta_keys  # the key worked out from a row of call_stat_deltas

    def key_of(self, r: str) -> dict[str, str]:
        return {k: sql.format(r=r) for k, sql in self.keys.items()}


QUARTERS = _Grouping("call_quarters", {"hour": _HOUR, "quarter": _QUARTER}, "hour", 13, dt.timedelta(hours=1),
                     {"hour": "hour", "quarter": "quarter"})
EXTENSIONS = _Grouping("call_day_extensions", {"day": _DAY, "extension": "{r}.extension"}, "day", 10,
                       dt.timedelta(days=1), {"day": "substr(hour, 1, 10)", "extension": "extension"})
GROUPINGS = (QUARTERS, EXTENSIONS)


class StatsStore:
    """The statistics half of ``Store`` (mixed in); ``filters`` are the journal's (``Store._call_filter``)."""

    db: Any
    _call_filter: Callable[..., tuple[str, list[Any]]]

    def call_stats_quarters(self, **filters: Any) -> list[dict[str, Any]]:
        """The sums per quarter hour of UTC: ``hour`` (``2026-12-01T05``), ``quarter`` (0-3) and STAT_FIELDS."""
        kept = self._kept(QUARTERS, ("hour", "quarter"), filters)
        return self.call_stats_scanned("quarters", **filters) if kept is None else kept

    def call_stats_extensions(self, **filters: Any) -> list[dict[str, Any]]:
        """The sums per ``extension`` ("" for calls no agent had), in extension order."""
        kept = self._kept(EXTENSIONS, ("extension",), filters)
        return self.call_stats_scanned("extensions", **filters) if kept is None else kept

    def call_stats_scanned(self, grouping: str, **filters: Any) -> list[dict[str, Any]]:
        """What ``call_stats_<grouping>`` gives, counted from the calls themselves (any filter; checks)."""
        keys = (QUARTERS if grouping == "quarters" else EXTENSIONS).key_of("calls")
        if grouping != "quarters":
            keys = {"extension": keys["extension"]}
        return self._stats(", ".join(f"{sql} AS {k}" for k, sql in keys.items()), ", ".join(keys.values()), filters)

    def _stats(self, keys: str, group: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        where, params = self._call_filter(**filters)
        source = "calls" + (_ANALYSIS if filters.get("flag") or filters.get("text") else "")
        rows = self.db.query(f"SELECT {keys}, {_SELECT} FROM {source}{where} GROUP BY {group}", params)
        return _ordered(rows)

    def _kept(self, g: _Grouping, out: tuple[str, ...], filters: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The sums read from ``g``'s table, or None when a filter is one it cannot answer."""
        if any(filters.get(k) is not None if k in _ANY_WHEN_NONE else filters.get(k)
               for k in filters if k not in _PERIOD):
            return None
        lo = filters.get("date_from") or ""
        hi = next_day(filters["date_to"]) if filters.get("date_to") else ""
        edges = _edges(lo, hi, g)
        if edges is None:
            return None
        parts, params = _inside(g, lo, hi, self.db.dialect == "postgresql")
        for low, high, prefix in edges:
            key = ", ".join(f"{sql} AS {k}" for k, sql in g.key_of("calls").items())
            ones = ", ".join(f"{sql.format(r='calls')} AS {f}" for f, sql in _ONE.items())
            parts.append(f"SELECT {key}, {ones} FROM calls WHERE calls.started_at >= ? AND calls.started_at < ?"
                         f" AND {g.key_of('calls')[g.prefix]} = ?")
            params += [low, high, prefix]
        if self.db.dialect == "postgresql":
            self.fold_call_stats()
        cols = ", ".join(out)
        rows = self.db.query(f"SELECT {cols}, {_SUMMED} FROM ({' UNION ALL '.join(parts)}) AS kept"
                             f" GROUP BY {cols} HAVING SUM(calls) > 0", params)
        return _ordered(rows)

    def fold_call_stats(self) -> bool:
        """PostgreSQL: add the deltas the triggers appended into the sums (one reader at a time;
        another one folding already: False, and its deltas are read with the sums meanwhile).
        SQLite keeps no deltas: False."""
        if self.db.dialect != "postgresql":
            return False
        with self.db.transaction():
            row = self.db.one("SELECT pg_try_advisory_xact_lock(?) AS got", (FOLD_LOCK,))
            if not (row and row["got"]):
                return False
            self.db.execute(_FOLD)
        return True


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # no ORDER BY: PostgreSQL may then hash the groups; their order is set here, a few thousand at most
    out = [{k: int(v or 0) if k in SUMS else v for k, v in r.items()} for r in rows]
    return sorted(out, key=lambda r: [r[k] for k in r if k not in SUMS])


def next_day(date: str) -> str:
    """The end of a period that ends on ``date``: the next day's start (a day), or ``date`` itself (an instant)."""
    if "T" in date:
        return date
    return (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()


def _following(prefix: str, g: _Grouping) -> str | None:
    """The key after ``prefix`` (an hour ``2026-12-01T05``, a day ``2026-12-01``); None for one that is no such time."""
    shape = "%Y-%m-%dT%H" if g is QUARTERS else "%Y-%m-%d"
    try:
        after = dt.datetime.strptime(prefix, shape) + g.step
    except (ValueError, OverflowError):
        return None
    out = after.strftime(shape)
    return out if len(out) == g.width and out > prefix else None


def _edges(lo: str, hi: str, g: _Grouping) -> list[tuple[str, str, str]] | None:
    """The calls to count one by one: (from, until, key) for the hour (day) each bound falls in.

    A ``started_at`` whose first ``width`` characters sort after the bound's sorts after the
    bound, and one whose sort before sorts before it: only the calls of the bound's own hour
    (day) can fall either side; a bound no longer than the key (a day) splits no key. None
    when a bound is no time (then the calls are counted)."""
    out = []
    if len(lo) > g.width:
        first = lo[:g.width]
        until = _following(first, g)
        if until is None:
            return None
        out.append((lo, min(until, hi) if hi else until, first))
    if len(hi) > g.width:
        last = hi[:g.width]
        if _following(last, g) is None:
            return None
        if not (len(lo) > g.width and last == lo[:g.width]):
            out.append((max(lo, last) if lo else last, hi, last))
    return out


def _inside(g: _Grouping, lo: str, hi: str, deltas: bool) -> tuple[list[str], list[Any]]:
    """The kept sums of the keys wholly inside the period (and on PostgreSQL the deltas not yet folded)."""
    keys = ", ".join(g.keys)
    sources = [(g.table, keys, g.prefix)]
    if deltas:
        sources.append(("call_stat_deltas", ", ".join(f"{sql} AS {k}" for k, sql in g.delta_keys.items()),
                        g.delta_keys[g.prefix]))
    parts: list[str] = []
    params: list[Any] = []
    for table, select, prefix in sources:
        where = []
        if lo:
            where.append(f"{prefix} {'>' if len(lo) > g.width else '>='} ?")
            params.append(lo[:g.width])
        if hi:
            where.append(f"{prefix} < ?")
            params.append(hi[:g.width])
        parts.append(f"SELECT {select}, {_FIELDS} FROM {table}" + (" WHERE " + " AND ".join(where) if where else ""))
    return parts, params


# ---------------------------------------------------------------- migration 13: the kept sums

_SUM_COLUMNS = ", ".join(f"{f} BIGINT NOT NULL DEFAULT 0" for f in STAT_FIELDS)
_TABLES = (
    f"CREATE TABLE call_quarters (hour TEXT NOT NULL, quarter BIGINT NOT NULL, {_SUM_COLUMNS},"
    " PRIMARY KEY (hour, quarter))",
    f"CREATE TABLE call_day_extensions (day TEXT NOT NULL, extension TEXT NOT NULL, {_SUM_COLUMNS},"
    " PRIMARY KEY (day, extension))",
)
_DELTAS = (f"CREATE TABLE call_stat_deltas (hour TEXT NOT NULL, quarter BIGINT NOT NULL, extension TEXT NOT NULL,"
           f" {_SUM_COLUMNS})")


def _upsert(g: _Grouping, r: str, sign: str) -> str:
    """SQLite: add (sign '') or take away (sign '-') row ``r``'s call in ``g``'s table."""
    keys = g.key_of(r)
    values = ", ".join([*keys.values(), *(f"{sign}({sql.format(r=r)})" for sql in _ONE.values())])
    adds = ", ".join(f"{f} = {g.table}.{f} + excluded.{f}" for f in STAT_FIELDS)
    return (f"INSERT INTO {g.table} ({', '.join(keys)}, {_FIELDS}) VALUES ({values})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds}")


def _changed(same: str) -> str:
    return " OR ".join(f"OLD.{c} {same} NEW.{c}" for c in _READ)


def _sqlite_triggers() -> list[str]:
    plus = "; ".join(_upsert(g, "NEW", "") for g in GROUPINGS)
    minus = "; ".join(_upsert(g, "OLD", "-") for g in GROUPINGS)
    return [
        f"CREATE TRIGGER calls_stats_insert AFTER INSERT ON calls BEGIN {plus}; END",
        f"CREATE TRIGGER calls_stats_delete AFTER DELETE ON calls BEGIN {minus}; END",
        f"CREATE TRIGGER calls_stats_update AFTER UPDATE OF {', '.join(_READ)} ON calls"
        f" WHEN {_changed('IS NOT')} BEGIN {minus}; {plus}; END",
    ]


def _delta_row(r: str, sign: str) -> str:
    return "(" + ", ".join([_HOUR.format(r=r), _QUARTER.format(r=r), f"{r}.extension",
                            *(f"{sign}({sql.format(r=r)})" for sql in _ONE.values())]) + ")"


def _postgres_triggers() -> list[str]:
    insert = f"INSERT INTO call_stat_deltas (hour, quarter, extension, {_FIELDS}) VALUES"
    return [
        _DELTAS,
        "CREATE FUNCTION call_stats_delta() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF TG_OP = 'INSERT' THEN {insert} {_delta_row('NEW', '')};"
        f" ELSIF TG_OP = 'DELETE' THEN {insert} {_delta_row('OLD', '-')};"
        f" ELSE {insert} {_delta_row('OLD', '-')}, {_delta_row('NEW', '')};"
        " END IF; RETURN NULL; END $$",
        "CREATE TRIGGER calls_stats AFTER INSERT OR DELETE ON calls FOR EACH ROW EXECUTE FUNCTION call_stats_delta()",
        f"CREATE TRIGGER calls_stats_update AFTER UPDATE OF {', '.join(_READ)} ON calls FOR EACH ROW"
        f" WHEN ({_changed('IS DISTINCT FROM')}) EXECUTE FUNCTION call_stats_delta()",
    ]


def _backfill(g: _Grouping) -> str:
    keys = g.key_of("calls")
    return (f"INSERT INTO {g.table} ({', '.join(keys)}, {_FIELDS})"
            f" SELECT {', '.join(keys.values())}, {', '.join(SUMS.values())} FROM calls"
            f" GROUP BY {', '.join(keys.values())}")


def _fold_into(g: _Grouping) -> str:
    keys = ", ".join(g.delta_keys.values())
    adds = ", ".join(f"{f} = {g.table}.{f} + EXCLUDED.{f}" for f in STAT_FIELDS)
    return (f"INSERT INTO {g.table} ({', '.join(g.keys)}, {_FIELDS}) SELECT {keys}, {_SUMMED} FROM moved"
            f" GROUP BY {keys} ON CONFLICT ({', '.join(g.keys)}) DO UPDATE SET {adds}")


_FOLD = (f"WITH moved AS (DELETE FROM call_stat_deltas RETURNING hour, quarter, extension, {_FIELDS}),"
         f" quarters AS ({_fold_into(QUARTERS)} RETURNING 1) {_fold_into(EXTENSIONS)}")


def kept_sums(db: Any) -> None:
    """Migration 13: the sums tables, the triggers that keep them, and their back-fill from the
    calls already there. The triggers come first: on PostgreSQL creating them waits for the
    writes under way and holds off new ones until this commits, so no call is missed or twice."""
    for statement in _TABLES:
        db.execute(statement)
    for statement in _postgres_triggers() if db.dialect == "postgresql" else _sqlite_triggers():
        db.execute(statement)
    for g in GROUPINGS:
        db.execute(_backfill(g))
