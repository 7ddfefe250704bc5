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


_MERGE_SQL = (
    f"INSERT INTO calls (uuid, {', '.join(MERGED)}) VALUES (?, {', '.join('?' * len(MERGED))})"
    f" ON CONFLICT (uuid) DO UPDATE SET {', '.join(f'{c} = {_cdr_value(c)}' for c in MERGED)}"
)


def cdr_filter(*, extension: str = "", missed_cause: str = "", min_mos: float | None = None,
               max_mos: float | None = None) -> tuple[list[str], list[Any]]:
    """The journal's CDR filters: WHERE terms and their parameters.

    ``extension``: the agent's calls, answered or made (a local call also counts for the
    extension it rang). ``min_mos``: every leg that had media scored at least that;
    ``max_mos``: some leg scored at most that.
    """
    where: list[str] = []
    params: list[Any] = []
    if extension:
        where.append("(extension = ? OR (direction = 'local' AND called = ?))")
        params += [extension, extension]
    if missed_cause:
        where.append("missed_cause = ?")
        params.append(missed_cause)
    if min_mos is not None:
        where.append("(caller_mos IS NOT NULL OR callee_mos IS NOT NULL)"
                     " AND COALESCE(caller_mos, 5) >= ? AND COALESCE(callee_mos, 5) >= ?")
        params += [min_mos, min_mos]
    if max_mos is not None:
        where.append("(caller_mos <= ? OR callee_mos <= ?)")
        params += [max_mos, max_mos]
    return where, params


class CDRStore:
    """The CDR half of ``Store`` (mixed in): legs in, one call row out."""

    db: Any

    def cdr_add(self, entries: Sequence[tuple[dict[str, Any], bytes]], compute: Compute, now: str) -> list[bool]:
        """Keep each ``(leg, body)`` and rewrite its call's row from all its legs, in one transaction.

        ``compute`` turns a call's legs into its row (``fsapp.cdr.classify``). Per leg:
        True if it was new, False if it was already kept (a replay: nothing written).
        """
        with self.db.transaction():
            for call_uuid in sorted({leg["call_uuid"] for leg, _ in entries}):  # one order: no deadlock
                self.db.lock("cdr:" + call_uuid)
            return [self._cdr_add_one(leg, body, compute, now) for leg, body in entries]

    def _cdr_add_one(self, leg: dict[str, Any], body: bytes, compute: Compute, now: str) -> bool:
        added = self.db.execute(
            "INSERT INTO cdr_legs (uuid, call_uuid, a_leg, received_at, facts, body) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (uuid) DO NOTHING",
            (leg["uuid"], leg["call_uuid"], int(leg["a_leg"]), now, orjson.dumps(leg).decode(),
             body.decode("utf-8", "replace")),
        )
        if not added:
            return False
        legs = [orjson.loads(r["facts"]) for r in self.db.query(
            "SELECT facts FROM cdr_legs WHERE call_uuid = ? ORDER BY uuid", (leg["call_uuid"],))]
        row = compute(legs)
        self.db.execute(_MERGE_SQL, [row["uuid"], *(_plain(row[c]) for c in MERGED)])
        return True

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


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value
