"""SQL of FreeSWITCH's CDRs: the ``cdr_legs`` table and the merge of a call's legs into ``calls``.

One row per call, whoever writes first. A call fsapp journaled through its socket
and its CDR legs meet in the same ``calls`` row (the A leg's uuid):

- the socket's write keeps the IVR's details (modules, customer, auth, charge) and
  never overwrites what the CDR knows better: once the A leg's CDR is in, its times,
  direction, numbers and talk stay; a non-empty extension, recording or queue stays; an
  ``answered`` status stays;
- the CDR's write sets the columns only it knows (missed cause, ring, wait and hold
  time, who hung up, quality) and, on a socket-journaled row, leaves the status
  alone unless a person answered (the IVR's own statuses are finer than the CDR's).

A leg is kept once (keyed by its uuid), so a replay changes nothing. The legs of one
call are merged under a per-call lock, so daemons sharing one PostgreSQL database
each take a leg of the same call and still write one row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import orjson

CDR_FIELDS = (
    "missed_cause ring_seconds wait_seconds hold_seconds hangup_by caller_mos caller_quality caller_flaws "
    "caller_jitter callee_mos callee_quality callee_flaws callee_jitter cdr_legs cdr_a_leg"
).split()
# Columns both write: the A leg's CDR is FreeSWITCH's own account of them.
FROM_A_LEG = frozenset(
    "started_at answered_at ended_at direction caller caller_name called total_seconds talk_seconds too_long "
    "hangup_cause".split()
)
KEEP_NONEMPTY = frozenset(("extension", "recording", "queue"))
MERGED = (*sorted(FROM_A_LEG), *sorted(KEEP_NONEMPTY), "status", *CDR_FIELDS)

Compute = Callable[[list[dict[str, Any]]], dict[str, Any]]
Completed = Callable[[list[dict[str, Any]]], None]


def socket_value(col: str, new: str) -> str:
    """The SQL the socket's journal write sets ``col`` to (``new``: its own value) on a row the CDR may have."""
    if col in FROM_A_LEG:
        return f"CASE WHEN calls.cdr_a_leg = 1 THEN calls.{col} ELSE {new} END"
    if col in KEEP_NONEMPTY:
        return f"CASE WHEN calls.cdr_legs > 0 AND calls.{col} <> '' THEN calls.{col} ELSE {new} END"
    if col == "status":
        return f"CASE WHEN calls.cdr_legs > 0 AND calls.status = 'answered' THEN calls.status ELSE {new} END"
    return new


def _cdr_value(col: str) -> str:
    """The SQL the CDR's merge sets ``col`` to, over a row the socket (or earlier legs) wrote."""
    if col in FROM_A_LEG:
        return f"CASE WHEN excluded.cdr_a_leg = 1 OR calls.daemon = '' THEN excluded.{col} ELSE calls.{col} END"
    if col in KEEP_NONEMPTY:
        return f"CASE WHEN excluded.{col} <> '' THEN excluded.{col} ELSE calls.{col} END"
    if col == "status":
        return ("CASE WHEN excluded.status = 'answered' OR calls.daemon = '' OR calls.status = 'active'"
                " THEN excluded.status ELSE calls.status END")
    return f"excluded.{col}"


_LEG_SQL = ("INSERT INTO cdr_legs (uuid, call_uuid, a_leg, received_at, facts, body) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (uuid) DO NOTHING")


@functools.lru_cache(maxsize=256)
def _merge_sql(columns: tuple[str, ...]) -> str:
    """The merge of a call's row that may SET only ``columns`` of a row already there.

    SQLite rewrites every index holding a column an UPDATE names, and runs its triggers,
    even when the value is the same: naming only the columns that differ keeps a leg's
    merge to the indexes it changes. A column left out has the value the CDR would bring
    (whichever way its rule goes, it stays as it is).
    """
    return (f"INSERT INTO calls (uuid, {', '.join(MERGED)}) VALUES (?, {', '.join('?' * len(MERGED))})"
            f" ON CONFLICT (uuid) DO UPDATE SET {', '.join(f'{c} = {_cdr_value(c)}' for c in columns)}")


EXTENSION_HALVES = {
    0: "(extension = ? OR (direction = 'local' AND called = ?))",
    # The two halves, which a UNION ALL reads each from its own index: the agent's own calls,
    # then the local calls that rang it and are not its own (so none comes twice).
    1: "extension = ?",
    # (direction || '') keeps PostgreSQL off the direction's index: ANDed with the called
    # number's thousand-odd calls, it made a bitmap of every local call (60,000 at a million).
    2: "called = ? AND (direction || '') = 'local' AND extension <> ?",
}


# A call's worst MOS, a leg with no figure counting as perfect, as each database writes it: the
# MOS filter reads it, and the scored calls' covering index leads with it (migration 18).
WORST_MOS = {"sqlite": "min(COALESCE(caller_mos, 5), COALESCE(callee_mos, 5))",
             "postgresql": "LEAST(COALESCE(caller_mos, 5), COALESCE(callee_mos, 5))"}


def cdr_filter(*, extension: str = "", missed_cause: str = "", min_mos: float | None = None,
               max_mos: float | None = None, extension_half: int = 0,
               dialect: str = "sqlite") -> tuple[list[str], list[Any]]:
    """The journal's CDR filters: WHERE terms and their parameters.

    ``extension``: the agent's calls, answered or made (a local call also counts for the
    extension it rang); ``extension_half`` 1 or 2 gives one half of it alone (see
    ``EXTENSION_HALVES``). ``min_mos``: every leg that had media scored at least that;
    ``max_mos``: some leg scored at most that.
    """
    where: list[str] = []
    params: list[Any] = []
    if extension:
        where.append(EXTENSION_HALVES[extension_half])
        params += [extension] * where[-1].count("?")
    if missed_cause:
        where.append("missed_cause = ?")
        params.append(missed_cause)
    if min_mos is not None:
        where.append(f"(caller_mos IS NOT NULL OR callee_mos IS NOT NULL) AND {WORST_MOS[dialect]} >= ?")
        params.append(min_mos)
    if max_mos is not None:
        where.append("(caller_mos <= ? OR callee_mos <= ?)")
        params += [max_mos, max_mos]
    return where, params


class CDRStore:
    """The CDR half of ``Store`` (mixed in): legs in, one call row out."""

    db: Any

    def cdr_add(self, entries: Sequence[tuple[dict[str, Any], bytes]], compute: Compute, now: str,
                completed: Completed | None = None) -> list[bool]:
        """Keep each ``(leg, body)`` and rewrite its call's row from all its legs, in one transaction.

        ``compute`` turns a call's legs into its row (``fsapp.cdr.classify``). Per leg:
        True if it was new, False if it was already kept (a replay: nothing written).
        A batch costs the same few statements whatever its size: one read of what is
        kept of its calls, one insert of the new legs, one merge of their calls' rows.
        ``completed(rows)`` is called once, inside the transaction, with the calls this batch
        completes that only their CDRs know (see ``_completed``), if there are any.
        """
        with self.db.transaction():
            calls = sorted({leg["call_uuid"] for leg, _ in entries})
            self.db.lock_many(["cdr:" + c for c in calls])  # one order: no deadlock
            kept, known = self._cdr_kept(calls, [leg["uuid"] for leg, _ in entries])
            added, rows = [], []
            for leg, body in entries:
                new = leg["uuid"] not in known
                added.append(new)
                if new:
                    known.add(leg["uuid"])
                    kept.setdefault(leg["call_uuid"], []).append(leg)
                    rows.append((leg["uuid"], leg["call_uuid"], int(leg["a_leg"]), now, orjson.dumps(leg).decode(),
                                 body.decode("utf-8", "replace")))
            if not rows:
                return added
            self.db.execute_many(_LEG_SQL, rows)
            merged = {r[1]: compute(sorted(kept[r[1]], key=_by_uuid)) for r in rows}
            self._merge(list(merged.values()))
            fresh = [merged[r[1]] for r in rows if r[2]]  # the calls whose A leg came in this batch
            if completed is not None and fresh:
                rows = self._completed(fresh)
                if rows:
                    completed(rows)
            return added

    def _merge(self, rows: list[dict[str, Any]]) -> None:
        """Write each call's row: a new one whole, one already there in the columns whose value differs."""
        now = self._calls_now([r["uuid"] for r in rows])
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for row in rows:
            params = _merge_params(row)
            old = now.get(row["uuid"])
            columns = MERGED if old is None else tuple(c for c, v in zip(MERGED, params[1:], strict=True)
                                                       if old[c] != v)
            if columns:
                by_columns.setdefault(columns, []).append(params)
        for columns, batch in by_columns.items():
            self.db.execute_many(_merge_sql(columns), batch)

    def _calls_now(self, uuids: list[str]) -> dict[str, dict[str, Any]]:
        """The merged columns of those of ``uuids`` already journaled, locked until the transaction ends.

        SQLite's write transaction already excludes every other writer; PostgreSQL locks the
        rows, so a socket write cannot change one between this read and the merge.
        """
        lock = " ORDER BY uuid FOR UPDATE" if self.db.dialect == "postgresql" else ""
        return {r["uuid"]: r for r in self.db.query(
            f"SELECT uuid, {', '.join(MERGED)} FROM calls WHERE uuid IN ({', '.join('?' * len(uuids))}){lock}",
            uuids)}

    def _cdr_kept(self, calls: list[str], uuids: list[str]) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
        """The legs already kept of ``calls`` (by call), and which of ``uuids`` (or theirs) are kept."""
        kept: dict[str, list[dict[str, Any]]] = {}
        known: set[str] = set()
        marks = ", ".join("?" * len(calls))
        rows = self.db.query(
            f"SELECT uuid, call_uuid, facts FROM cdr_legs WHERE call_uuid IN ({marks})"
            f" OR uuid IN ({', '.join('?' * len(uuids))})", [*calls, *uuids])
        for r in rows:
            known.add(r["uuid"])
            if r["call_uuid"] in calls:
                kept.setdefault(r["call_uuid"], []).append(orjson.loads(r["facts"]))
        return kept, known

    def _completed(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of the calls whose A leg was just kept, those fsapp's socket did not journal.

        The A leg is kept once (its uuid is the call's), so each call is here once,
        whatever replays or daemons post it; a call the socket journaled (its row has
        a daemon) got the after-call work from its session.
        """
        marks = ", ".join("?" * len(rows))
        socket = {r["uuid"] for r in self.db.query(
            f"SELECT uuid FROM calls WHERE uuid IN ({marks}) AND daemon <> ''", [r["uuid"] for r in rows])}
        return [r for r in rows if r["uuid"] not in socket]

    def cdr_leg_count(self) -> int:
        row = self.db.one("SELECT COUNT(*) AS n FROM cdr_legs")
        return int(row["n"]) if row else 0

    def cdr_legs_of(self, call_uuid: str) -> list[dict[str, Any]]:
        """The legs kept for one call: uuid, a_leg, received_at and the body as posted."""
        return self.db.query(
            "SELECT uuid, a_leg, received_at, body FROM cdr_legs WHERE call_uuid = ? ORDER BY a_leg DESC, uuid",
            (call_uuid,))

    def cdr_leg_facts(self, call_uuid: str) -> list[dict[str, Any]]:
        """The legs kept for one call as read (``fsapp.cdr.legs.parse``): the A leg first, then by uuid."""
        return [orjson.loads(r["facts"]) for r in self.db.query(
            "SELECT facts FROM cdr_legs WHERE call_uuid = ? ORDER BY a_leg DESC, uuid", (call_uuid,))]


def _by_uuid(leg: dict[str, Any]) -> str:
    return str(leg["uuid"])


def _merge_params(row: dict[str, Any]) -> list[Any]:
    return [row["uuid"], *(int(v) if v.__class__ is bool else v for v in map(row.__getitem__, MERGED))]
