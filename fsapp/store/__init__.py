"""The storage database: journal, customer directory, lockouts, meters, ledger, outbox.

All SQL lives here, written once; the backend (``sqlite.py``) only runs it.
Schema changes are numbered migrations applied in order at open.
"""

from __future__ import annotations

import functools
import json
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsapp import digits, instants
from fsapp.pins import Limit, PinLimits
from fsapp.store.analysis import ANALYSIS_COLUMNS, FIGURES, AnalysisStore, flag_rows, like_pattern
from fsapp.store.cdr import CDR_FIELDS, WORST_MOS, CDRStore, cdr_filter, socket_value
from fsapp.store.sqlite import SQLiteDB, StorageError
from fsapp.store.stats import StatsStore, kept_sums
from fsapp.store.stats import next_day as _next_day

__all__ = ["Store", "StorageError", "open_store"]


def _times_to_utc(db: Any) -> None:
    """Naive journal and ledger times (the host's local time, as written before) become UTC.

    Assumes what the daemon did: ``time.localtime`` of the host that wrote them, which is
    the host running this (DST and all, as its zone database knows it). Rows already in
    UTC (ending in ``Z``) are left alone, and so is text that is no time at all.
    """

    utc = instants.stored
    for row in db.query("SELECT uuid, started_at, answered_at, ended_at FROM calls WHERE started_at NOT LIKE ?"
                        " OR answered_at NOT LIKE ? OR ended_at NOT LIKE ?", ("%Z",) * 3):
        db.execute("UPDATE calls SET started_at = ?, answered_at = ?, ended_at = ? WHERE uuid = ?",
                   (utc(row["started_at"]), utc(row["answered_at"]), utc(row["ended_at"]), row["uuid"]))
    for row in db.query("SELECT id, created_at FROM charges WHERE created_at NOT LIKE ?", ("%Z",)):
        db.execute("UPDATE charges SET created_at = ? WHERE id = ?", (utc(row["created_at"]), row["id"]))


def _number_search_indexes(db: Any) -> None:
    """PostgreSQL with pg_trgm (a contrib extension, trusted since PostgreSQL 13): trigram
    indexes for the journal's number search (``caller`` or ``called`` LIKE '%...%', which no
    b-tree serves). Without the extension, or the right to create it, the search stays a scan."""
    if db.dialect != "postgresql" or not db.one(
            "SELECT 1 AS x FROM pg_available_extensions WHERE name = 'pg_trgm'"):
        return
    db.execute("SAVEPOINT number_search")
    try:
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except StorageError:
        db.execute("ROLLBACK TO SAVEPOINT number_search")
        return
    db.execute("CREATE INDEX calls_caller_trigrams ON calls USING gin (caller gin_trgm_ops)")
    db.execute("CREATE INDEX calls_called_trigrams ON calls USING gin (called gin_trgm_ops)")


def _number_search_table(db: Any) -> None:
    """SQLite with FTS5's trigram tokenizer (SQLite 3.34 and later): a trigram index of each
    call's ``caller`` and ``called`` (``call_numbers``, contentless, keyed by the call's
    ``call_number_ids.id``: a table's rowid may change on VACUUM, that id does not), kept by
    triggers on every write of ``calls``. Without it the number search stays a scan."""
    if db.dialect != "sqlite" or not sqlite_trigrams(db):
        return
    for statement in _NUMBER_SEARCH_SQL:
        db.execute(statement)


_NUMBER_SEARCH_SQL = (
    "CREATE TABLE call_number_ids (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE call_numbers USING fts5(caller, called, content='', tokenize='trigram')",
    "INSERT INTO call_number_ids (uuid) SELECT uuid FROM calls",
    """INSERT INTO call_numbers (rowid, caller, called)
        SELECT i.id, c.caller, c.called FROM call_number_ids i JOIN calls c ON c.uuid = i.uuid""",
    """CREATE TRIGGER call_numbers_insert AFTER INSERT ON calls BEGIN
        INSERT INTO call_number_ids (uuid) VALUES (new.uuid);
        INSERT INTO call_numbers (rowid, caller, called)
            SELECT id, new.caller, new.called FROM call_number_ids WHERE uuid = new.uuid;
    END""",
    """CREATE TRIGGER call_numbers_update AFTER UPDATE OF caller, called ON calls
    WHEN old.caller IS NOT new.caller OR old.called IS NOT new.called BEGIN
        INSERT INTO call_numbers (call_numbers, rowid, caller, called)
            SELECT 'delete', id, old.caller, old.called FROM call_number_ids WHERE uuid = old.uuid;
        INSERT INTO call_numbers (rowid, caller, called)
            SELECT id, new.caller, new.called FROM call_number_ids WHERE uuid = new.uuid;
    END""",
    """CREATE TRIGGER call_numbers_delete AFTER DELETE ON calls BEGIN
        INSERT INTO call_numbers (call_numbers, rowid, caller, called)
            SELECT 'delete', id, old.caller, old.called FROM call_number_ids WHERE uuid = old.uuid;
        DELETE FROM call_number_ids WHERE uuid = old.uuid;
    END""",
)


def keep_number_search(db: Any) -> None:
    """At each open of a SQLite journal: the number search's triggers where this SQLite can run
    them, none where it cannot. A journal made where FTS5 had trigrams, opened by a SQLite
    without them (the file moved to an older system), would otherwise fail every write of a
    call ("no such module"): its triggers are dropped and the search scans. Opened again where
    trigrams work, the index is built afresh from the calls and its triggers come back."""
    if db.dialect != "sqlite" or db.one("SELECT 1 AS x FROM sqlite_master WHERE name = 'call_numbers'") is None:
        return
    kept = db.one("SELECT 1 AS x FROM sqlite_master WHERE type = 'trigger' AND name = 'call_numbers_insert'")
    able = sqlite_trigrams(db)
    if able == (kept is not None):
        return
    with db.transaction():
        if not able:
            for trigger in ("insert", "update", "delete"):
                db.execute(f"DROP TRIGGER IF EXISTS call_numbers_{trigger}")
            return
        db.execute("INSERT INTO call_numbers (call_numbers) VALUES ('delete-all')")
        db.execute("DELETE FROM call_number_ids")
        for statement in _NUMBER_SEARCH_SQL[2:]:  # the tables are there: fill them, make the triggers
            db.execute(statement)


def sqlite_trigrams(db: Any) -> bool:
    """Whether this SQLite has FTS5 with its trigram tokenizer (3.34 and later)."""
    row = db.one("SELECT sqlite_version() AS v")
    version = tuple(int(p) for p in row["v"].split(".")[:2]) if row else (0, 0)
    return version >= (3, 34) and db.one(
        "SELECT 1 AS x FROM pragma_compile_options WHERE compile_options = 'ENABLE_FTS5'") is not None


def _flag_table(db: Any) -> None:
    """``call_flags``: each call's analysis flags one per row, for the flag filter (kept where
    the analysis is written), filled from the flags already written (comma-separated)."""
    db.execute("CREATE TABLE call_flags (flag TEXT NOT NULL, call_uuid TEXT NOT NULL, PRIMARY KEY (flag, call_uuid))")
    db.execute("CREATE INDEX call_flags_call ON call_flags (call_uuid)")
    rows = db.query("SELECT call_uuid, flags FROM call_analysis WHERE flags <> ''")
    db.load_rows("call_flags", ["call_uuid", "flag"], flag_rows((r["call_uuid"], r["flags"]) for r in rows))


# The journal's covering filter indexes (migration 16): the filter's column (or, for a partial
# one, the rows it holds), then the start time and uuid (the default sort's order), then every
# other sort column, so that a filter's matches can be sorted by any column from the index alone.
COVERING_INDEXES = {  # name: (leading column or "", the rows it holds or "")
    "calls_status_covering": ("status", ""),
    "calls_direction_covering": ("direction", ""),
    "calls_customer_covering": ("customer_id", ""),
    "calls_extension_covering": ("extension", ""),
    "calls_missed_covering": ("missed_cause", ""),
    "calls_queue_covering": ("queue", ""),
    "calls_recorded_covering": ("", "recording <> ''"),
    "calls_scored_covering": ("", "caller_mos IS NOT NULL OR callee_mos IS NOT NULL"),
}
# The sort columns that lead a covering index (migration 19): the journal in their order, tie and
# all, is that index; a sort index of their own held the same entries again.
SORTED_BY_COVERING = {COVERING_INDEXES[name][0]: name for name in (
    "calls_status_covering", "calls_direction_covering", "calls_extension_covering", "calls_missed_covering",
    "calls_queue_covering")}
_REPLACED_BY_COVERING = ["calls_status_started", "calls_direction_started", "calls_customer_started",
                         "calls_extension_started", "calls_missed_started", "calls_queue_started"]


def _covering_indexes(db: Any) -> None:
    """Migration 16: the filter indexes (F, started_at, uuid) become covering indexes, and the
    recording and MOS filters get one each (see COVERING_INDEXES): a filter's matches sorted by
    any column without reading their rows. PostgreSQL keeps the other columns as INCLUDE
    payload; SQLite has them as trailing key columns. The too-long calls keep their small
    partial indexes, one per sort column, which serve every sort of them directly."""
    for name in _REPLACED_BY_COVERING:
        db.execute(f"DROP INDEX {name}")
    for name, (lead, rows) in COVERING_INDEXES.items():
        _create_covering(db, name, lead, rows)


def _create_covering(db: Any, name: str, lead: str, rows: str) -> None:
    """One covering index: ``lead`` (a column or an expression; "" for none), the start time and
    the uuid, then every other sort column (and, for the scored calls, their MOS figures)."""
    rest = [c for c in SORTABLE_CALL_FIELDS if c not in (lead, "started_at")]
    if rows.startswith("caller_mos"):
        rest += ["caller_mos", "callee_mos"]
    key = ([lead] if lead else []) + ["started_at", "uuid"]
    cols = (f"{', '.join(key)}) INCLUDE ({', '.join(rest)}" if db.dialect == "postgresql"
            else ", ".join(key + rest))
    db.execute(f"CREATE INDEX {name} ON calls ({cols})" + (f" WHERE {rows}" if rows else ""))


def _scored_by_worst_mos(db: Any) -> None:
    """Migration 18: the scored calls' covering index leads with each call's worst MOS
    (``WORST_MOS``), as the MOS filter now reads it: a filter of at least 4.4 reads the 92,000
    calls that score that, not all 560,000 scored ones (at a million calls, 70 ms of a SQLite page
    went in passing over the others)."""
    db.execute("DROP INDEX calls_scored_covering")
    _create_covering(db, "calls_scored_covering", f"({WORST_MOS[db.dialect]})",
                     COVERING_INDEXES["calls_scored_covering"][1])
    if db.dialect == "postgresql":  # the expression's statistics (SQLite's come after every migration)
        row = db.one("SELECT reltuples AS n FROM pg_class WHERE oid = 'calls'::regclass")
        if row and float(row["n"]) > 0:
            db.execute("ANALYZE calls")


def _sort_indexes_by_time(db: Any) -> None:
    """Migration 17: each sort column's index (but the start time's) breaks its ties by start
    time, then uuid; it was by uuid alone. FreeSWITCH's uuids are random, so a new call landed
    at a random page of every one of those indexes: some thirty pages written for each call. By
    start time it lands near the end of its value's run, on a page the last calls already had."""
    for order in SORTABLE_CALL_FIELDS:
        if order == "started_at":
            continue
        for name, rows in ((f"calls_by_{order}", ""), (f"calls_too_long_by_{order}", " WHERE too_long = 1")):
            db.execute(f"DROP INDEX IF EXISTS {name}")
            db.execute(f"CREATE INDEX {name} ON calls ({order}, started_at, uuid){rows}")  # as tie() says


def _sorts_walk_covering_indexes(db: Any) -> None:
    """Migration 19: the sort indexes of the columns that lead a covering index go
    (``SORTED_BY_COVERING``): that index has the journal in the same order. Each was written
    for every call: five of the journal's 45 indexes, an eighth of a CDR's cost in the store
    (bench/cdr_bench.py)."""
    for order in SORTED_BY_COVERING:
        db.execute(f"DROP INDEX IF EXISTS calls_by_{order}")


def sort_index(order: str) -> str:
    """The index of every call in ``order``, then its tie (``tie``): the sort column's own, or the
    covering index it leads."""
    return SORTED_BY_COVERING.get(order, f"calls_by_{order}")


def tie(order: str) -> tuple[str, ...]:
    """The columns that break the journal's ties when it is sorted by ``order`` (see migration 17):
    the uuid when sorted by start time, else the start time and then the uuid."""
    return ("uuid",) if order == "started_at" else ("started_at", "uuid")


MIGRATIONS: list[str | Callable[[Any], None]] = [
    # 1: the call journal, the customer directory, PIN failures
    """
    CREATE TABLE calls (
        uuid TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        answered_at TEXT,
        ended_at TEXT,
        direction TEXT NOT NULL DEFAULT 'inbound',
        caller TEXT NOT NULL DEFAULT '',
        caller_name TEXT NOT NULL DEFAULT '',
        called TEXT NOT NULL DEFAULT '',
        extension TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'active',
        total_seconds BIGINT NOT NULL DEFAULT 0,
        talk_seconds BIGINT NOT NULL DEFAULT 0,
        too_long BIGINT NOT NULL DEFAULT 0,
        customer_id TEXT NOT NULL DEFAULT '',
        customer_name TEXT NOT NULL DEFAULT '',
        customer_type TEXT NOT NULL DEFAULT '',
        modules TEXT NOT NULL DEFAULT '[]',
        auth_method TEXT NOT NULL DEFAULT '',
        auth_result TEXT NOT NULL DEFAULT '',
        charge BIGINT NOT NULL DEFAULT 0,
        recording TEXT NOT NULL DEFAULT '',
        downloaded BIGINT NOT NULL DEFAULT 0,
        hangup_cause TEXT NOT NULL DEFAULT '',
        final_destination TEXT NOT NULL DEFAULT '',
        entry_module TEXT NOT NULL DEFAULT '',
        daemon TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX calls_started ON calls (started_at);
    CREATE INDEX calls_customer ON calls (customer_id, started_at);
    CREATE INDEX calls_status ON calls (status, started_at);

    CREATE TABLE customers (
        id TEXT PRIMARY KEY,
        number TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL DEFAULT '',
        type TEXT NOT NULL DEFAULT '',
        mobile TEXT NOT NULL DEFAULT '',
        pin_hash TEXT NOT NULL DEFAULT '',
        sales TEXT NOT NULL DEFAULT '',
        support TEXT NOT NULL DEFAULT '',
        other TEXT NOT NULL DEFAULT '',
        debt BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE customer_phones (
        phone TEXT NOT NULL,
        customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
        PRIMARY KEY (phone, customer_id)
    );
    CREATE TABLE pin_failures (
        customer_id TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX pin_failures_customer ON pin_failures (customer_id, at);
    CREATE TABLE lockouts (
        customer_id TEXT PRIMARY KEY,
        until DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: meters, the ledger, the outbox
    """
    CREATE TABLE meters (
        call_uuid TEXT NOT NULL,
        module TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        interval_minutes BIGINT NOT NULL,
        amount_per_interval BIGINT NOT NULL,
        product_code TEXT NOT NULL DEFAULT '',
        product_name TEXT NOT NULL DEFAULT '',
        invoice_type TEXT NOT NULL DEFAULT '',
        account TEXT NOT NULL DEFAULT '',
        send_payment_link BIGINT NOT NULL DEFAULT 0,
        mobile TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL DEFAULT '',
        bridge_us BIGINT NOT NULL DEFAULT 0,
        seen_us BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'open',
        daemon TEXT NOT NULL DEFAULT '',
        opened_at DOUBLE PRECISION NOT NULL,
        beat_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (call_uuid, module)
    );
    CREATE TABLE charges (
        id {ID},
        call_uuid TEXT NOT NULL,
        module TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        talk_seconds BIGINT NOT NULL,
        units BIGINT NOT NULL,
        amount BIGINT NOT NULL,
        debt_after BIGINT NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT 'call',
        created_at TEXT NOT NULL,
        UNIQUE (call_uuid, module)
    );
    CREATE INDEX charges_customer ON charges (customer_id, created_at);
    CREATE TABLE outbox (
        id {ID},
        kind TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        delivered_at DOUBLE PRECISION,
        result TEXT NOT NULL DEFAULT '',
        last_error TEXT NOT NULL DEFAULT '',
        locked_by TEXT NOT NULL DEFAULT '',
        locked_until DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_due ON outbox (delivered_at, next_at);
    """,
    # 3: PIN attempts take their slot before the PIN is verified; failures per caller ID
    """
    ALTER TABLE pin_failures ADD COLUMN caller TEXT NOT NULL DEFAULT '';
    ALTER TABLE pin_failures ADD COLUMN slot TEXT NOT NULL DEFAULT '';
    ALTER TABLE pin_failures ADD COLUMN pending BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX pin_failures_caller ON pin_failures (caller, at);
    CREATE INDEX pin_failures_slot ON pin_failures (slot);
    CREATE INDEX pin_failures_at ON pin_failures (at);
    CREATE TABLE caller_lockouts (
        caller TEXT PRIMARY KEY,
        until DOUBLE PRECISION NOT NULL
    );
    """,
    # 4: which recording channel is the customer; the analysis queue and each call's figures
    """
    ALTER TABLE calls ADD COLUMN recording_customer TEXT NOT NULL DEFAULT '';
    CREATE TABLE call_analysis (
        call_uuid TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'pending',
        recording TEXT NOT NULL DEFAULT '',
        customer_channel TEXT NOT NULL DEFAULT 'left',
        queued_at DOUBLE PRECISION NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        locked_by TEXT NOT NULL DEFAULT '',
        locked_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        analysed_at DOUBLE PRECISION,
        error TEXT NOT NULL DEFAULT '',
        duration_seconds DOUBLE PRECISION,
        customer_talk_seconds DOUBLE PRECISION,
        customer_share DOUBLE PRECISION,
        agent_talk_seconds DOUBLE PRECISION,
        agent_share DOUBLE PRECISION,
        silence_seconds DOUBLE PRECISION,
        silence_ratio DOUBLE PRECISION,
        longest_silence_seconds DOUBLE PRECISION,
        long_silences BIGINT,
        overtalk_seconds DOUBLE PRECISION,
        overtalk_count BIGINT,
        customer_interruptions BIGINT,
        agent_interruptions BIGINT,
        agent_customer_ratio DOUBLE PRECISION,
        mos DOUBLE PRECISION,
        quality_percentage DOUBLE PRECISION,
        flaws BIGINT,
        jitter_ms DOUBLE PRECISION,
        jitter_loss_rate DOUBLE PRECISION,
        hold_seconds DOUBLE PRECISION,
        flags TEXT NOT NULL DEFAULT '',
        segments TEXT NOT NULL DEFAULT '[]',
        transcript_state TEXT NOT NULL DEFAULT '',
        transcript TEXT NOT NULL DEFAULT '',
        transcript_segments TEXT NOT NULL DEFAULT '',
        transcript_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX call_analysis_due ON call_analysis (state, locked_until);
    """,
    # 5: FreeSWITCH's CDRs (mod_json_cdr): every leg as posted, and what they add to a call's row
    """
    CREATE TABLE cdr_legs (
        uuid TEXT PRIMARY KEY,
        call_uuid TEXT NOT NULL,
        a_leg BIGINT NOT NULL DEFAULT 0,
        received_at TEXT NOT NULL,
        facts TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX cdr_legs_call ON cdr_legs (call_uuid);
    ALTER TABLE calls ADD COLUMN missed_cause TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN ring_seconds BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN wait_seconds BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN hold_seconds BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN hangup_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN caller_mos DOUBLE PRECISION;
    ALTER TABLE calls ADD COLUMN caller_quality DOUBLE PRECISION;
    ALTER TABLE calls ADD COLUMN caller_flaws BIGINT;
    ALTER TABLE calls ADD COLUMN caller_jitter DOUBLE PRECISION;
    ALTER TABLE calls ADD COLUMN callee_mos DOUBLE PRECISION;
    ALTER TABLE calls ADD COLUMN callee_quality DOUBLE PRECISION;
    ALTER TABLE calls ADD COLUMN callee_flaws BIGINT;
    ALTER TABLE calls ADD COLUMN callee_jitter DOUBLE PRECISION;
    ALTER TABLE calls ADD COLUMN cdr_legs BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN cdr_a_leg BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX calls_extension ON calls (extension, started_at);
    """,
    # 6: journal and ledger times in UTC ("...Z"), from the host's naive local time
    _times_to_utc,
    # 7: a talk is charged once: keyed by the call, the module's code (not the visit) and
    # FreeSWITCH's CHANNEL_BRIDGE timestamp, so a replayed or resumed session cannot charge it again
    """
    ALTER TABLE charges ADD COLUMN code TEXT NOT NULL DEFAULT '';
    ALTER TABLE charges ADD COLUMN bridge_us BIGINT NOT NULL DEFAULT 0;
    UPDATE charges SET code = module, bridge_us = COALESCE((SELECT m.bridge_us FROM meters m
        WHERE m.call_uuid = charges.call_uuid AND m.module = charges.module), 0) WHERE module NOT LIKE '%#%';
    CREATE UNIQUE INDEX charges_talk ON charges (call_uuid, code, bridge_us) WHERE bridge_us > 0;
    """,
    # 8: the web console's users and its failed logins (per user and per address)
    """
    CREATE TABLE web_users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE web_login_failures (
        key TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX web_login_failures_key ON web_login_failures (key, at);
    """,
    # 9: a billed module's invoice search field, kept with its meter for the invoice a reconcile makes
    """
    ALTER TABLE meters ADD COLUMN invoice_search_field TEXT NOT NULL DEFAULT '';
    """,
    # 10: the queue a call went to (mod_callcenter's, without its @domain) and each bridge attempt's outcome
    """
    ALTER TABLE calls ADD COLUMN queue TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
    """,
    # 11: the journal's pages by keyset at a million calls: each sort column with the uuid
    # that breaks its ties (an ordered walk that stops at the page's end), each equality
    # filter with the default sort (the newest of its calls first), and the too-long calls
    # (a few in a hundred: small indexes, written only for them) by each sort column
    """
    DROP INDEX calls_started;
    DROP INDEX calls_customer;
    DROP INDEX calls_status;
    DROP INDEX calls_extension;
    CREATE INDEX calls_by_started_at ON calls (started_at, uuid);
    CREATE INDEX calls_by_status ON calls (status, uuid);
    CREATE INDEX calls_by_direction ON calls (direction, uuid);
    CREATE INDEX calls_by_caller ON calls (caller, uuid);
    CREATE INDEX calls_by_called ON calls (called, uuid);
    CREATE INDEX calls_by_extension ON calls (extension, uuid);
    CREATE INDEX calls_by_queue ON calls (queue, uuid);
    CREATE INDEX calls_by_total_seconds ON calls (total_seconds, uuid);
    CREATE INDEX calls_by_wait_seconds ON calls (wait_seconds, uuid);
    CREATE INDEX calls_by_ring_seconds ON calls (ring_seconds, uuid);
    CREATE INDEX calls_by_talk_seconds ON calls (talk_seconds, uuid);
    CREATE INDEX calls_by_hold_seconds ON calls (hold_seconds, uuid);
    CREATE INDEX calls_by_too_long ON calls (too_long, uuid);
    CREATE INDEX calls_by_missed_cause ON calls (missed_cause, uuid);
    CREATE INDEX calls_by_hangup_by ON calls (hangup_by, uuid);
    CREATE INDEX calls_by_customer_name ON calls (customer_name, uuid);
    CREATE INDEX calls_by_customer_type ON calls (customer_type, uuid);
    CREATE INDEX calls_by_charge ON calls (charge, uuid);
    CREATE INDEX calls_status_started ON calls (status, started_at, uuid);
    CREATE INDEX calls_direction_started ON calls (direction, started_at, uuid);
    CREATE INDEX calls_customer_started ON calls (customer_id, started_at, uuid);
    CREATE INDEX calls_extension_started ON calls (extension, started_at, uuid);
    CREATE INDEX calls_missed_started ON calls (missed_cause, started_at, uuid);
    CREATE INDEX calls_queue_started ON calls (queue, started_at, uuid);
    CREATE INDEX calls_too_long_by_started_at ON calls (started_at, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_status ON calls (status, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_direction ON calls (direction, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_caller ON calls (caller, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_called ON calls (called, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_extension ON calls (extension, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_queue ON calls (queue, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_total_seconds ON calls (total_seconds, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_wait_seconds ON calls (wait_seconds, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_ring_seconds ON calls (ring_seconds, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_talk_seconds ON calls (talk_seconds, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_hold_seconds ON calls (hold_seconds, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_missed_cause ON calls (missed_cause, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_hangup_by ON calls (hangup_by, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_customer_name ON calls (customer_name, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_customer_type ON calls (customer_type, uuid) WHERE too_long = 1;
    CREATE INDEX calls_too_long_by_charge ON calls (charge, uuid) WHERE too_long = 1;
    """,
    # 12: PostgreSQL: the number search by trigrams, where pg_trgm is there
    _number_search_indexes,
    # 13: the statistics' sums per quarter hour and per day and extension, kept by triggers (store/stats.py)
    kept_sums,
    # 14: SQLite: the number search by trigrams, where FTS5 has its trigram tokenizer
    _number_search_table,
    # 15: each call's analysis flags one per row, for the flag filter
    _flag_table,
    # 16: the filter indexes become covering ones, and the recording and MOS filters get theirs
    _covering_indexes,
    # 17: the sort indexes break ties by start time, then uuid
    _sort_indexes_by_time,
    # 18: the MOS filter's covering index by each call's worst MOS
    _scored_by_worst_mos,
    # 19: the sort columns that lead a covering index are walked in it
    _sorts_walk_covering_indexes,
]

WEB_USERS_LOCK = "fsapp-web-users"  # a role change or removal checks "another admin remains" under it


class LastAdmin(ValueError):
    """The change would leave the console without an admin."""


PIN_LOCK = "fsapp-pin-attempts"  # one lock for every PIN slot: a customer's and a caller's counts are both exact
_LOCK_TABLES = {"customer": ("lockouts", "customer_id"), "caller": ("caller_lockouts", "caller")}

CALL_FIELDS = (
    "uuid started_at answered_at ended_at direction caller caller_name called extension status "
    "total_seconds talk_seconds too_long customer_id customer_name customer_type modules auth_method "
    "auth_result charge recording downloaded hangup_cause final_destination entry_module daemon recording_customer "
    "queue attempts "
    + " ".join(CDR_FIELDS)
).split()

# Columns the journal can be paged by: never NULL, so a keyset comparison always holds.
SORTABLE_CALL_FIELDS = (
    "started_at status direction caller called extension queue total_seconds wait_seconds ring_seconds "
    "talk_seconds hold_seconds too_long missed_cause hangup_by customer_name customer_type charge"
).split()


# The journal's filters an index serves (migration 11), and how many rows one must match before
# a page walks its sort column's index instead (see Store._walk_sort_index).
_INDEXED_FILTERS = ("date_from", "date_to", "customer", "status", "direction", "extension", "missed_cause", "queue")
WALK_AFTER = 5000
SAMPLED_ROWS = 2000  # of each index, for the daily planner statistics (Store.sample_statistics)
# How many entries of the sort column's index a page with a covered filter walks before it takes
# the rest from the filter's covering index (see Store._covered_page).
WALK_ROWS = 2000
# When that walk falls short, a sample of the matches past it: where they have no more sort values
# than this, the walk goes on from the nearest match's value (see Store._matches_share_values).
VALUE_SAMPLE, SHARED_VALUES = 64, 8
# How many entries a page of a number or a flag that matches many calls walks, checking each row,
# before it takes the rest from the calls the search's index finds (see Store._searched_page). A
# row checked costs PostgreSQL more, and its search's index less: the best bounds measured there.
SEARCH_WALK_ROWS = {"sqlite": 20_000, "postgresql": 5_000}
# PostgreSQL sorts a covered filter's matches without a walk first when its planner expects fewer
# (at a million calls: a rare status's 7,000 calls, a rare customer's; not a busy customer's 47,000).
SORT_MATCHES_BELOW = 20_000


def now_iso(ts: float | None = None) -> str:
    """What the journal and the ledger store for an instant: UTC, ``2026-12-01T05:38:37Z``."""
    return instants.utc_iso(ts)


# How long a failed write keeps the storage unhealthy after later writes succeed again.
WRITE_FAILURE_SECONDS = 30.0


class _Watched:
    """A backend that remembers its writes' last failure (for ``/healthz``); the rest passes through."""

    _OWN = frozenset({"_db", "failing", "failed_at", "failure", "failures"})

    def __init__(self, db: Any) -> None:
        object.__setattr__(self, "_db", db)
        self.failing = False  # the last write failed
        self.failed_at = 0.0  # monotonic time of the last failure
        self.failure = ""
        self.failures = 0  # writes that failed since the store was opened

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._db, name, value)

    def _failed(self, exc: StorageError) -> None:
        self.failing, self.failed_at, self.failure = True, time.monotonic(), str(exc)
        self.failures += 1

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            n = self._db.execute(sql, params)
        except StorageError as exc:
            self._failed(exc)
            raise
        self.failing = False
        return n

    @contextmanager
    def transaction(self, wait: float | None = None) -> Iterator[None]:
        try:
            with self._db.transaction(wait):
                yield
        except StorageError as exc:
            self._failed(exc)
            raise


class _Probe(Exception):
    """Rolls the write probe back."""


class Store(AnalysisStore, CDRStore, StatsStore):
    """Everything fsapp keeps, above one database connection."""

    def __init__(self, db: Any) -> None:
        self.db = _Watched(db)
        self._numbers_indexed: bool | None = None  # see number_search_indexed
        self.covered = False  # the schema has the covering filter indexes (migration 16): set by migrate

    # ------------------------------------------------------------ schema

    def migrate(self) -> int:
        behind = not self._has_table("schema_version") or self._version() < len(MIGRATIONS)
        with self.db.transaction(wait=self.db.opening_wait if behind else None):  # see SQLiteDB.opening_wait
            self.db.lock("fsapp-migrate")  # two daemons starting together on an empty database
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            current = self._version()
            analysed = current < len(MIGRATIONS) and self._analysed()
            for number, sql in enumerate(MIGRATIONS[current:], start=current + 1):
                if callable(sql):  # a data migration: statements that depend on the rows
                    sql(self.db)
                    sql = ""
                for statement in sql.replace("{ID}", self.db.autoid).split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            if analysed:
                self.db.execute("ANALYZE calls")
        self.covered = _covering_indexes in MIGRATIONS
        return len(MIGRATIONS)

    def _version(self) -> int:
        row = self.db.one("SELECT MAX(version) AS v FROM schema_version")
        return int(row["v"]) if row and row["v"] is not None else 0

    def _analysed(self) -> bool:
        """SQLite: whether the journal has the planner's statistics (``refresh_statistics``). A
        migration that drops and makes indexes again drops theirs, and SQLite then plans those
        indexes blind (at a million calls, a too-long page sorted all 50,000 of them): they are
        gathered again after it. Not where there were none: statistics of a table still empty
        would mislead the planner once it has grown."""
        return self.db.dialect == "sqlite" and self._has_table("sqlite_stat1") and self.db.one(
            "SELECT 1 AS x FROM sqlite_stat1 WHERE tbl = 'calls' LIMIT 1") is not None

    def ping(self) -> bool:
        return self.db.ping()

    def health(self) -> tuple[bool, str]:
        """(ok, why not): the database answers, is still the file it opened, and its writes succeed."""
        problem = getattr(self.db, "problem", lambda: "")()
        if problem:
            return False, problem
        if not self.db.ping():
            return False, "the database does not answer"
        w = self.db
        if w.failing or time.monotonic() - w.failed_at < WRITE_FAILURE_SECONDS and w.failed_at:
            return False, f"a write failed: {w.failure}"
        return True, ""

    def write_failures(self) -> int:
        """How many writes failed since this store was opened (for ``/healthz``)."""
        return int(self.db.failures)

    def check_writable(self) -> None:
        """Raise StorageError unless the database takes a write (a read-only one opens and reads fine)."""
        try:
            with self.db.transaction():
                self.db.execute("UPDATE schema_version SET version = version")
                raise _Probe
        except _Probe:
            pass

    def transaction(self) -> Any:
        """A context: the store calls made inside it commit together, or not at all."""
        return self.db.transaction()

    def set_group_commit(self, seconds: float) -> None:
        """SQLite only (see sqlite.py): writes closer together than ``seconds`` commit as one."""
        if hasattr(self.db, "group_window"):
            self.db.group_window = seconds

    def checkpoint_in_background(self) -> None:
        """SQLite only (see sqlite.py): the WAL copied back into the database off the event loop."""
        start = getattr(self.db, "checkpoint_in_background", None)
        if start is not None:
            start()

    def flush(self) -> None:
        """Commit a group of writes still in its window now (SQLite's group commit)."""
        flush = getattr(self.db, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ journal

    def call_started(self, row: dict[str, Any]) -> bool:
        """Journal a call's start; False if the call already has a row (an earlier session of it)."""
        cols = [c for c in CALL_FIELDS if c in row]
        return self.db.execute(
            f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            " ON CONFLICT (uuid) DO NOTHING",
            [_sql_value(row[c]) for c in cols],
        ) > 0

    def call_finished(self, uuid: str, row: dict[str, Any], *, charge_from_ledger: bool = False) -> None:
        """Write a call's final row.

        ``charge_from_ledger``: the ``charge`` column is the sum of the call's ledger charges,
        read in the same statement. A charge the database refused mid-call and wrote later
        (App.flush_settles adds it to the row) is then neither lost nor counted twice,
        whichever of the two writes comes first.
        """
        cols = [c for c in CALL_FIELDS if c in row and c != "uuid"]
        marks, values = [], []
        for c in cols:
            if c == "charge" and charge_from_ledger:
                marks.append("(SELECT COALESCE(SUM(amount), 0) FROM charges WHERE call_uuid = ?)")
                values.append(uuid)
            else:
                marks.append("?")
                values.append(_sql_value(row[c]))
        # What the call's CDR already wrote (fsapp.store.cdr) keeps what only FreeSWITCH knows.
        if "started_at" in row:  # a whole row: one statement, whether or not the start was journaled
            merged = ", ".join(f"{c} = {socket_value(c, 'excluded.' + c)}" for c in cols)
            self.db.execute(
                f"INSERT INTO calls (uuid, {', '.join(cols)}) VALUES (?, {', '.join(marks)})"
                f" ON CONFLICT (uuid) DO UPDATE SET {merged}",
                [uuid, *values],
            )
            return
        with self.db.transaction():
            changed = self.db.execute(
                f"UPDATE calls SET {', '.join(f'{c} = {socket_value(c, m)}' for c, m in zip(cols, marks, strict=True))}"
                " WHERE uuid = ?",
                [*values, uuid],
            )
            if not changed:
                self.call_started({**row, "uuid": uuid})

    def get_call(self, uuid: str) -> dict[str, Any] | None:
        row = self.db.one(f"SELECT {_JOURNAL_COLUMNS} FROM {_JOURNAL} WHERE calls.uuid = ?", (uuid,))
        return _call_out(row) if row else None

    def _call_filter(self, *, date_from: str = "", date_to: str = "", customer: str = "", status: str = "",
                     direction: str = "", too_long: bool = False, number: str = "", flag: str = "",
                     text: str = "", extension: str = "", missed_cause: str = "", min_mos: float | None = None,
                     max_mos: float | None = None, queue: str = "", has_recording: bool | None = None,
                     row_by_row: bool | None = None, number_by_row: bool | None = None, extension_half: int = 0,
                     ) -> tuple[str, list[Any]]:
        """The journal's filters as a WHERE clause ("" when none) and its parameters. The number and
        flag filters are read first through their indexes, or checked on each row (``row_by_row``;
        None: when they match many calls, see ``_searches_walk``; ``number_by_row``: the number's
        alone, when it is not as ``row_by_row`` says). ``extension_half``: see ``cdr_filter``."""
        where: list[str] = []
        params: list[Any] = []
        if date_from:
            where.append("started_at >= ?")
            params.append(date_from)
        if date_to:
            where.append("started_at < ?")
            params.append(_next_day(date_to))
        if customer:
            where.append("customer_id = ?")
            params.append(customer)
        if status:
            where.append("status = ?")
            params.append(status)
        if direction:
            where.append("direction = ?")
            params.append(direction)
        if too_long:
            where.append("too_long = 1")
        if queue:
            where.append("calls.queue = ?")
            params.append(queue)
        if has_recording is not None:
            where.append("calls.recording <> ''" if has_recording else "calls.recording = ''")
        if row_by_row is None:
            row_by_row = bool(self._searches_walk({"number": number, "flag": flag}))
        where += self._search_conditions(number, flag, params, row_by_row,
                                         row_by_row if number_by_row is None else number_by_row)
        for word in text.lower().split():
            where.append("LOWER(call_analysis.transcript) LIKE ? ESCAPE '\\'")
            params.append(like_pattern(word))
        cdr_where, cdr_params = cdr_filter(extension=extension, missed_cause=missed_cause, min_mos=min_mos,
                                           max_mos=max_mos, extension_half=extension_half, dialect=self.db.dialect)
        where += cdr_where
        params += cdr_params
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def list_calls(self, *, order: str = "started_at", descending: bool = False, limit: int = 0,
                   **filters: Any) -> list[dict[str, Any]]:
        """Journal rows matching ``filters`` (see ``_call_filter``), sorted by ``order``."""
        if order not in CALL_FIELDS:
            raise ValueError(f"cannot sort by {order!r}")
        where, params = self._call_filter(**filters)
        ties = ", ".join(f"calls.{c}" for c in tie(order))
        way = "DESC" if descending else "ASC"
        sql = f"SELECT {_JOURNAL_COLUMNS} FROM {_JOURNAL}{where} ORDER BY calls.{order} {way}, {ties}"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_call_out(r) for r in self.db.query(sql, params)]

    def page_calls(self, *, order: str = "started_at", descending: bool = False, after: str = "",
                   limit: int = 50, **filters: Any) -> list[dict[str, Any]]:
        """One page of the journal by keyset: the rows after the row ``after`` (a uuid) in the
        order (``order``, its tie: see ``tie``), both ascending or both descending; no OFFSET, no count."""
        return [_call_out(r) for r in self._page(order, descending, after, limit, filters, self.db.query)]

    def explain_page_calls(self, *, order: str = "started_at", descending: bool = False, after: str = "",
                           limit: int = 50, scans_last: bool = False, **filters: Any) -> list[str]:
        """The plans the database chooses for that ``page_calls``'s queries, one line per step
        (SQLite's EXPLAIN QUERY PLAN details, PostgreSQL's EXPLAIN lines), each query's plan after
        the last's and an empty line between two. ``scans_last``: PostgreSQL plans as if a
        sequential scan cost the earth (``enable_seqscan = off``), so that on a small table the
        plan still shows whether an index can serve the query."""
        plan: list[str] = []

        def explain(sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
            if plan:
                plan.append("")
            if self.db.dialect == "sqlite":
                plan.extend(r["detail"] for r in self.db.query("EXPLAIN QUERY PLAN " + sql, params))
            else:
                with self.db.transaction():
                    if scans_last:
                        self.db.execute("SET LOCAL enable_seqscan = off")
                    plan.extend(r["QUERY PLAN"] for r in self.db.query("EXPLAIN " + sql, params))
            return self.db.query(sql, params)  # the later steps depend on what this one found

        self._page(order, descending, after, limit, filters, explain)
        return plan

    def _page(self, order: str, descending: bool, after: str, limit: int, filters: dict[str, Any],
              run: Callable[[str, Sequence[Any]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """A page's rows, by one query or, where a covering index serves the filter, by a bounded
        walk of the sort column's index and then the filter's covering index (``_covered_page``)."""
        if order not in SORTABLE_CALL_FIELDS:
            raise ValueError(f"cannot page by {order!r}")
        covering = _covering_index(filters, order) if self.covered else ""
        if covering:
            return self._covered_page(order, descending, after, limit, filters, covering, run)
        walk = self._searches_walk(filters)  # a number or a flag: its own count decides
        if walk is not None and not filters.get("text") and (walk or self.db.dialect == "postgresql"):
            return self._searched_page(order, descending, after, limit, filters, run, walk)
        sql, params = self._page_sql(order, descending, after, limit, filters, walk)
        return run(sql, params)

    def _page_sql(self, order: str, descending: bool, after: str, limit: int,
                  filters: dict[str, Any], walk: bool | None) -> tuple[str, list[Any]]:
        where, params = self._call_filter(**filters, row_by_row=bool(walk))
        source = _JOURNAL
        if self.db.dialect == "sqlite" and walk is None and order != "started_at" and self._walk_sort_index(
                filters, where, params):
            source = _JOURNAL.replace("calls ", f"calls INDEXED BY {sort_index(order)} ", 1)
        elif self.db.dialect == "sqlite" and walk is None and filters.get("too_long"):
            # SQLite takes the too-long calls' index by too_long (they all match) and sorts all
            # of them (50,000 at a million calls: 150-240 ms a page); the sort column's walks in order
            source = _JOURNAL.replace("calls ", f"calls INDEXED BY calls_too_long_by_{order} ", 1)
        keys = self._keyset(order, descending, after=after)
        fixed = _fixed_value(filters, order)
        key_where, key_params = (keys if fixed is None else keys.within(fixed)).sql()
        sql = f"SELECT {_JOURNAL_COLUMNS} FROM {source}{_and(where, key_where)} ORDER BY {keys.by()} LIMIT {int(limit)}"
        return sql, params + key_params

    def _keyset(self, order: str, descending: bool, *, after: str = "", **bounds: Any) -> _Keyset:
        """The keyset after the row ``after`` (a uuid), its keys read first: SQLite uses a
        row-value range of subqueries by its first column only (a deep page walked its value's
        whole run: 90-170 ms at a million calls), of plain values by all of them (0.2 ms). A
        uuid no longer in the journal is left to the subqueries (they find nothing)."""
        if after:
            keys = (order, *tie(order))
            row = self.db.one(f"SELECT {', '.join(keys)} FROM calls WHERE uuid = ?", (after,))
            if row is not None:
                return _Keyset(order, descending, past=tuple(row[k] for k in keys), **bounds)
        return _Keyset(order, descending, after=after, **bounds)

    def _walk_sort_index(self, filters: dict[str, Any], where: str, params: list[Any]) -> bool:
        """SQLite: whether a page is best read walking the sort column's index (stopping at the
        page's end) rather than through its filter's index and then sorted. SQLite's planner
        takes an indexed filter first however many rows it matches: sorting the month of a
        million-call journal (some 85,000 rows) for one page. Walk when the indexed filters
        match at least WALK_AFTER rows (counted no further than that). A number or a flag filter
        decides by its own count instead (``_searches_walk``)."""
        if not any(filters.get(k) for k in _INDEXED_FILTERS):
            return False
        row = self.db.one(f"SELECT COUNT(*) AS n FROM (SELECT 1 FROM {_JOURNAL}{where} LIMIT {WALK_AFTER})", params)
        return bool(row) and int(row["n"]) >= WALK_AFTER

    # ------------------------------------------------------------ number and flag search

    def _search_conditions(self, number: str, flag: str, params: list[Any], row_by_row: bool,
                           number_by_row: bool) -> list[str]:
        """The number and flag filters' conditions (appending their parameters): the calls their
        indexes find, read first (``calls.uuid IN ...``), or, ``row_by_row``, a check of each row
        (for a page that walks its sort column's index, see ``_searches_walk``); ``number_by_row``
        says it for the number alone (PostgreSQL's trigram indexes serve its check directly)."""
        where = []
        if number:
            candidates = None if number_by_row else self._number_candidates(number)
            if candidates is None:
                where.append(_number_match(number, params))
            else:
                sql, found = candidates
                where.append(f"({self._among(sql)} AND {_number_match(number, found)})")
                params += found
        if flag:
            where.append("EXISTS (SELECT 1 FROM call_flags WHERE flag = ? AND call_uuid = calls.uuid)" if row_by_row
                         else self._among("SELECT call_uuid FROM call_flags WHERE flag = ?"))
            params.append(flag)
        return where

    def _among(self, uuids: str) -> str:
        """``calls.uuid`` is one of the query's: PostgreSQL reads them first, as an array."""
        return f"calls.uuid IN ({uuids})" if self.db.dialect == "sqlite" else f"calls.uuid = ANY(ARRAY({uuids}))"

    def _number_candidates(self, number: str) -> tuple[str, list[Any]] | None:
        """A query of the uuids of the calls that may match ``number`` (every one that does) through
        the trigram indexes, and its parameters; None when none can serve (a search of fewer than 3
        characters, or no trigram index): the search then checks each row."""
        forms = list(dict.fromkeys((number, digits.to_ascii(number))))
        if min(len(f) for f in forms) < 3 or "\x00" in number or not self.number_search_indexed():
            return None  # (FTS5's query syntax ends at a NUL)
        if self.db.dialect == "postgresql":
            params: list[Any] = []
            return f"SELECT uuid FROM calls WHERE {_number_match(number, params)}", params
        fts = ("SELECT i.uuid FROM call_numbers JOIN call_number_ids i ON i.id = call_numbers.rowid"
               " WHERE call_numbers MATCH ?")
        sql = " UNION ALL ".join([fts] * len(forms) + ["SELECT uuid FROM calls WHERE extension = ?"] * len(forms))
        return sql, ['"' + f.replace('"', '""') + '"' for f in forms] + forms

    def _searches_walk(self, filters: dict[str, Any]) -> bool | None:
        """Whether a page filtered by a number or a flag is best read walking its sort column's
        index, checking each row: when each of them matches at least WALK_AFTER calls (counted no
        further). None when neither filter is set."""
        searches = []
        if filters.get("number"):
            searches.append(self._number_candidates(filters["number"]))
        if filters.get("flag"):
            searches.append(("SELECT call_uuid FROM call_flags WHERE flag = ?", [filters["flag"]]))
        if not searches:
            return None
        for search in searches:
            if search is None:
                continue  # no index: every row is checked anyway
            if self._matches_fewer(*search):
                return False
        return True

    def _matches_fewer(self, sql: str, params: list[Any]) -> bool:
        """Whether the query finds fewer than WALK_AFTER rows: counted (no further than that); on
        PostgreSQL a contains-match is estimated by the planner from its trigram statistics (a count
        builds the whole bitmap of a common number's calls: tens of milliseconds)."""
        if self.db.dialect == "postgresql" and " LIKE " in sql:
            plan = self.db.one("EXPLAIN (FORMAT JSON) " + sql, params)
            return bool(plan) and float(plan["QUERY PLAN"][0]["Plan"]["Plan Rows"]) < WALK_AFTER
        row = self.db.one(f"SELECT COUNT(*) AS n FROM ({sql} LIMIT {WALK_AFTER}) AS m", params)
        return bool(row) and int(row["n"]) < WALK_AFTER

    def _estimated_fewer(self, where: str, params: list[Any]) -> bool:
        """PostgreSQL: whether its planner expects the filter to match fewer than SORT_MATCHES_BELOW
        calls (from the column's statistics: no rows read)."""
        plan = self.db.one(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM calls{where}", params)
        return bool(plan) and float(plan["QUERY PLAN"][0]["Plan"]["Plan Rows"]) < SORT_MATCHES_BELOW

    def _covered_page(self, order: str, descending: bool, after: str, limit: int, filters: dict[str, Any],
                      covering: str, run: Callable[[str, Sequence[Any]], list[dict[str, Any]]],
                      ) -> list[dict[str, Any]]:
        """A filter's page in two steps, each bounded. First a walk of the sort column's index,
        no further than WALK_ROWS entries past ``after`` (where the filter's matches are spread
        along the sort column, the page fills within a few hundred). If that does not fill the
        page (the matches lie further along, as missed calls by talk time do), the rest comes
        from the filter's covering index: its matches after the walk's end, sorted from the
        index alone by the database's top-N sort, and only the page's rows read. Both steps
        keep the order (``order``, its tie), so the page is exactly what one ORDER BY gives.
        PostgreSQL goes straight to the second step for the extension filter and for a filter its
        planner expects to match fewer than SORT_MATCHES_BELOW calls."""
        where, params = self._call_filter(**filters)
        start = self._keyset(order, descending, after=after)
        if self.db.dialect == "postgresql" and (filters.get("extension") or self._estimated_fewer(where, params)):
            # No walk: the matches, sorted. The extension filter's walk (an OR checked on each row)
            # is planned as a bitmap of all its matches, each row read (70-180 ms for one agent at a
            # million calls), so it comes in its halves; a rare filter's matches sort in a few ms.
            halves = [self._call_filter(**filters, extension_half=half) for half in (1, 2)
                      ] if filters.get("extension") else []
            sql, page_params = self._covered_sql(start, covering, where, params, limit, halves)
            return run(sql, page_params)
        bound = self._walk_end(start, run)
        sql, walk_params = self._walk_sql(start, bound, WALK_ROWS, where, params, limit)
        rows = run(sql, walk_params)
        if len(rows) >= limit or bound is None:
            return rows
        past = _Keyset(order, descending, past=bound)
        if self._matches_share_values(past, covering, where, params, run):
            nearest = self._nearest_value(past, covering, where, params, run)
            if nearest is None:
                return rows  # no match past the walk
            if nearest != bound[0]:
                # The next match lies past the walked value's run (missed calls by talk time, the
                # recorded calls by status): the walk goes on from that value's first row.
                start = _Keyset(order, descending, reach=nearest)
                bound = self._walk_end(start, run)
                sql, walk_params = self._walk_sql(start, bound, WALK_ROWS, where, params, limit - len(rows))
                rows += run(sql, walk_params)
                if len(rows) >= limit or bound is None:
                    return rows
        sql, rest_params = self._covered_sql(self._keyset(order, descending, past=bound), covering, where, params,
                                             limit - len(rows))
        return rows + run(sql, rest_params)

    def _matches_share_values(self, keys: _Keyset, covering: str, where: str, params: list[Any],
                              run: Callable[[str, Sequence[Any]], list[dict[str, Any]]]) -> bool:
        """Whether the first VALUE_SAMPLE matches within ``keys``' range (in the covering index's
        own order, read from it alone) have at most SHARED_VALUES values of the sort column: the
        matches then lie in those values' runs, dense there, and a walk from the nearest of them
        fills the page (``_nearest_value``). Spread over many values (the well-scored calls by
        length), the nearest value's run holds a match or two: the sorted matches serve better."""
        key_where, key_params = self._range_checked(keys)
        rows = run(f"SELECT calls.{keys.order} AS v FROM {self._through(covering)}{_and(where, key_where)}"
                   f" LIMIT {VALUE_SAMPLE}", params + key_params)
        return len({r["v"] for r in rows}) <= SHARED_VALUES

    def _nearest_value(self, keys: _Keyset, covering: str, where: str, params: list[Any],
                       run: Callable[[str, Sequence[Any]], list[dict[str, Any]]]) -> Any:
        """The sort value of the first match within ``keys``' range, from the filter's covering
        index alone (MIN or MAX of its matches: no sort, no row read); None when none matches.
        PostgreSQL: with a FILTER clause, which its planner's MIN/MAX shortcut does not take (else
        it reads the value off the sort column's index, checking each row: 1.4 s for the missed
        calls' most talk at a million calls); the matches are then scanned, in parallel."""
        key_where, key_params = self._range_checked(keys)
        pick = f"{'MAX' if keys.descending else 'MIN'}(calls.{keys.order})"
        if self.db.dialect == "postgresql":
            pick += " FILTER (WHERE TRUE)"
        rows = run(f"SELECT {pick} AS v FROM {self._through(covering)}{_and(where, key_where)}", params + key_params)
        return rows[0]["v"] if rows else None

    def _walk_end(self, start: _Keyset, run: Callable[[str, Sequence[Any]], list[dict[str, Any]]],
                  entries: int = 0) -> tuple[Any, ...] | None:
        """(sort value, tie...) of the ``entries``-th (default WALK_ROWS, read when called) entry of
        the sort column's index from ``start`` (read from the index alone); None when fewer are left."""
        entries = entries or WALK_ROWS
        where, params = start.sql()
        index = f" INDEXED BY {sort_index(start.order)}" if self.db.dialect == "sqlite" else ""
        rows = run(f"SELECT {start.columns()} FROM calls{index}{where}"
                   f" ORDER BY {start.by()} LIMIT 1 OFFSET {entries - 1}", params)
        return tuple(rows[0].values()) if rows else None

    def _searched_page(self, order: str, descending: bool, after: str, limit: int, filters: dict[str, Any],
                       run: Callable[[str, Sequence[Any]], list[dict[str, Any]]], walk: bool) -> list[dict[str, Any]]:
        """A page of a number or a flag. One that matches many calls (``walk``) is read in two
        steps, each bounded. First a walk of the sort column's index checking each row, no further
        than SEARCH_WALK_ROWS entries past ``after``: where the matches are spread along the sort
        column (a common number by start time or talk time) the page fills within a few thousand.
        Where they lie together further along (a customer's number by customer name: the walk
        passed most of the journal, 1.5-2.7 s at a million calls), the rest comes from the calls
        the search's index finds (``_found``), after the walk's end. One that matches few calls
        comes from those alone. Both keep the order (``order``, its tie), so the page is exactly
        what one ORDER BY gives. (Not with the transcript filter: its column is not in ``calls``.)"""
        start = self._keyset(order, descending, after=after)
        if not walk:
            return self._found(start, filters, limit, run)
        where, params = self._call_filter(**filters, row_by_row=True)
        entries = SEARCH_WALK_ROWS[self.db.dialect]
        bound = self._walk_end(start, run, entries)
        sql, walk_params = self._walk_sql(start, bound, entries, where, params, limit)
        rows = run(sql, walk_params)
        if len(rows) >= limit or bound is None:
            return rows
        return rows + self._found(self._keyset(order, descending, past=bound), filters, limit - len(rows), run)

    def _found(self, keys: _Keyset, filters: dict[str, Any], limit: int,
               run: Callable[[str, Sequence[Any]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The first ``limit`` matches of a number or a flag within ``keys``' range, of the calls its
        index finds, sorted. SQLite: the calls of the uuids that index gives, their own index named
        (else it walks the sort column's again). PostgreSQL: the rows of the number's trigram
        conditions or of the flag's uuids, in a MATERIALIZED CTE; given the uuids in the query, its
        planner (not knowing how many come) walked the sort column's index checking each row
        against them: 2-4 s for a rare number's deep page at a million calls."""
        if self.db.dialect == "sqlite":
            where, params = self._call_filter(**filters, row_by_row=False)
            index = self._uuid_index
        else:
            where, params = self._call_filter(**filters, row_by_row=False, number_by_row=True)
            index = ""
        sql, found_params = self._covered_sql(keys, index, where, params, limit)
        return run(sql, found_params)

    @functools.cached_property
    def _uuid_index(self) -> str:
        """SQLite's name for the index of the calls' primary key (uuid), read once: the schema is
        migrated before the first page."""
        row = self.db.one("SELECT name FROM pragma_index_list('calls') WHERE origin = 'pk'")
        if row is None:
            raise StorageError("the journal's calls table has no primary key index")
        return str(row["name"])

    def _walk_sql(self, start: _Keyset, bound: tuple[Any, ...] | None, entries: int, where: str,
                  params: list[Any], limit: int) -> tuple[str, list[Any]]:
        """The filtered rows of the walk of the sort column's index from ``start`` to ``bound``,
        its ``entries``-th entry (``_walk_end``; None: the journal's end). PostgreSQL: the walk
        is the first ``entries`` entries from ``start``, not the range up to ``bound``. Its b-tree
        stops a scan at a row comparison's first column only: the range up to the 2,000th
        missed cause of the calls that have none read all 850,000 of them (22,700 pages, 120-170
        ms for a walk that found nothing)."""
        if self.db.dialect == "postgresql":
            start_where, start_params = start.sql()
            walk = f"SELECT calls.* FROM calls{start_where} ORDER BY {start.by()} LIMIT {int(entries)}"
            pick = f"SELECT calls.uuid FROM ({walk}) AS calls{where} ORDER BY {start.by()} LIMIT {int(limit)}"
            sql = f"SELECT {_JOURNAL_COLUMNS} FROM {_JOURNAL} WHERE calls.uuid IN ({pick}) ORDER BY {start.by()}"
            return sql, start_params + params
        keys = start.until(bound)
        key_where, key_params = keys.sql()
        source = _JOURNAL.replace("calls ", f"calls INDEXED BY {sort_index(keys.order)} ", 1)
        sql = (f"SELECT {_JOURNAL_COLUMNS} FROM {source}{_and(where, key_where)}"
               f" ORDER BY {keys.by()} LIMIT {int(limit)}")
        return sql, params + key_params

    def _range_checked(self, keys: _Keyset) -> tuple[str, list[Any]]:
        """``keys``' range as a check of each match, not a bound of an index: on PostgreSQL as
        ``(...) IS TRUE``, which its planner does not match to an index. Else, where the sort
        column leads another covering index (the missed cause's, the queue's...), it read the
        range off that one, checking the filter on each entry (the missed calls by cause: 800,000
        entries passed over for a sample of 64, 240 ms)."""
        where, params = keys.sql()
        if self.db.dialect == "postgresql" and where:
            where = f" WHERE ({where[len(' WHERE '):]}) IS TRUE"
        return where, params

    def _through(self, covering: str) -> str:
        """The calls, read through the filter's covering index: SQLite is told it by name, but for
        the extension filter's, an OR (the agent's calls, or local calls to it), left to SQLite's
        OR plan, one index per branch, which a named index would rule out; PostgreSQL picks its own."""
        if self.db.dialect == "sqlite" and covering and covering != "calls_extension_covering":
            return f"calls INDEXED BY {covering}"
        return "calls"

    def _covered_sql(self, keys: _Keyset, covering: str, where: str, params: list[Any],
                     limit: int, halves: Sequence[tuple[str, list[Any]]] = ()) -> tuple[str, list[Any]]:
        """The first ``limit`` filtered rows within ``keys``' range, found in the filter's covering
        index (``covering``: or another index that finds them) and sorted from it (SQLite: the
        index named, the sort kept off every index by the unary +; PostgreSQL: the matches taken
        first, in a subquery behind OFFSET 0, which its planner plans on its own and does not
        push the range or the order into; a MATERIALIZED CTE did as much but wrote every match
        down first: 115-170 ms for 200,000 of them, 75 ms now), then read. ``halves``
        (PostgreSQL): the filter as two disjoint WHERE clauses whose matches a UNION ALL takes
        instead. The extension filter's OR made a bitmap of both halves and read each match's
        row (15,000 for one agent: 70-180 ms); its first half is then read from its covering
        index alone."""
        key_where, key_params = keys.sql()
        if self.db.dialect == "sqlite":
            cond = _and(where, key_where)
            pick = (f"SELECT calls.rowid FROM {self._through(covering)}{cond}"
                    f" ORDER BY {keys.by(plus=True)} LIMIT {int(limit)}")
            sql = (f"SELECT {_JOURNAL_COLUMNS} FROM {_JOURNAL} WHERE calls.rowid IN ({pick})"
                   f" ORDER BY {keys.by()}")
        else:  # the range applied to the matches, not inside: else it leads PostgreSQL to the sort's index again
            parts = halves or [(where, params)]
            params = [p for _, half in parts for p in half]
            matches = " UNION ALL ".join(f"SELECT {keys.columns()} FROM calls{part}" for part, _ in parts)
            sql = (f"WITH page AS (SELECT calls.uuid FROM ({matches} OFFSET 0) AS calls{key_where}"
                   f" ORDER BY {keys.by()} LIMIT {int(limit)})"
                   f" SELECT {_JOURNAL_COLUMNS} FROM {_JOURNAL} WHERE calls.uuid IN (SELECT uuid FROM page)"
                   f" ORDER BY {keys.by()}")
        return sql, params + key_params

    # ------------------------------------------------------------ bulk loads (benchmarks, imports)

    def load_calls(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Insert journal rows (tuples in ``columns`` order) in one go; how many. No merge
        with rows already there: for filling a journal (benchmarks, imports), not for the daemon."""
        return self._load("calls", CALL_FIELDS, columns, rows)

    def load_analysis(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Insert call_analysis rows (tuples in ``columns`` order) in one go; how many."""
        known = ("call_uuid", "recording", "customer_channel", "queued_at", "analysed_at", "segments",
                 *ANALYSIS_COLUMNS)
        if "flags" not in columns or not self._has_table("call_flags"):  # an old schema (tests of migrations)
            return self._load("call_analysis", known, columns, rows)
        flagged: list[tuple[str, str]] = []
        uuid_at, flags_at = list(columns).index("call_uuid"), list(columns).index("flags")

        def kept(rows: Iterable[Sequence[Any]]) -> Iterator[Sequence[Any]]:
            for row in rows:
                if row[flags_at]:
                    flagged.append((row[uuid_at], row[flags_at]))
                yield row

        with self.db.transaction():
            n = self._load("call_analysis", known, columns, kept(rows))
            self.db.load_rows("call_flags", ["call_uuid", "flag"], flag_rows(flagged))
        return n

    def _has_table(self, name: str) -> bool:
        return self.db.one("SELECT 1 AS x FROM sqlite_master WHERE name = ?" if self.db.dialect == "sqlite"
                           else "SELECT 1 AS x FROM pg_tables WHERE tablename = ?", (name,)) is not None

    def _load(self, table: str, known: Sequence[str], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise ValueError(f"{table}: no such column(s): {', '.join(unknown)}")
        return int(self.db.load_rows(table, list(columns), rows))

    def number_search_indexed(self) -> bool:
        """Whether the journal's number search has its trigram indexes (PostgreSQL with pg_trgm,
        migration 12; SQLite with FTS5's trigrams, migration 14). Asked once per store."""
        if self._numbers_indexed is None:
            self._numbers_indexed = self.db.one(
                "SELECT 1 AS x FROM pg_indexes WHERE indexname = 'calls_caller_trigrams'") is not None if (
                self.db.dialect == "postgresql") else self._has_table("call_numbers_insert")  # its trigger
        return self._numbers_indexed

    def refresh_statistics(self) -> None:
        """The query planner's statistics brought up to date (after a bulk load): ANALYZE; on
        PostgreSQL VACUUM too, which also moves the rows just loaded out of the trigram indexes'
        pending lists (where a search reads them one by one)."""
        self.db.execute("ANALYZE" if self.db.dialect == "sqlite" else "VACUUM (ANALYZE) calls, call_analysis")
        if self.db.dialect == "postgresql" and self._has_table("call_flags"):
            self.db.execute("ANALYZE call_flags")

    def sample_statistics(self) -> bool:
        """SQLite: the journal's planner statistics gathered again from a sample of each index
        (``PRAGMA analysis_limit``: milliseconds, where a full ANALYZE takes 13 s at a million
        calls). Without them SQLite plans the console's pages blind. False on PostgreSQL, whose
        autovacuum keeps its own."""
        if self.db.dialect != "sqlite":
            return False
        with self.db.transaction():
            self.db.execute(f"PRAGMA analysis_limit = {SAMPLED_ROWS}")
            try:
                self.db.execute("ANALYZE calls")
            finally:
                self.db.execute("PRAGMA analysis_limit = 0")
        return True

    def calls_by_day(self, *, limit: int = 0, width: int = 10, **filters: Any) -> list[dict[str, Any]]:
        """Per day (the first ``width`` characters of the UTC ``started_at``: 10 is the UTC day,
        13 the hour...) of the matching calls: how many, answered, missed, abandoned, talk
        seconds and charge; oldest first. Counted by the database."""
        where, params = self._call_filter(**filters)
        day = f"COALESCE(substr(started_at, 1, {int(width)}), '')"
        sql = (f"SELECT {day} AS date, COUNT(*) AS calls,"
               " SUM(CASE WHEN status = 'answered' THEN 1 ELSE 0 END) AS answered,"
               " SUM(CASE WHEN status = 'missed' THEN 1 ELSE 0 END) AS missed,"
               " SUM(CASE WHEN status = 'abandoned' THEN 1 ELSE 0 END) AS abandoned,"
               " COALESCE(SUM(talk_seconds), 0) AS talk_seconds, COALESCE(SUM(charge), 0) AS charge"
               f" FROM {_JOURNAL}{where} GROUP BY {day} ORDER BY date")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [{k: (v if k == "date" else int(v)) for k, v in r.items()} for r in self.db.query(sql, params)]

    def mark_downloaded(self, uuid: str) -> bool:
        return self.db.execute("UPDATE calls SET downloaded = 1 WHERE uuid = ?", (uuid,)) > 0

    def active_call_daemons(self) -> list[str]:
        """The daemons that have calls journaled as 'active'."""
        return [r["daemon"] for r in self.db.query("SELECT DISTINCT daemon FROM calls WHERE status = 'active'")]

    def fail_calls_started_before(self, started_before: str) -> int:
        """Calls still 'active' that started before ``started_before`` (ISO) become 'failed'."""
        return self.db.execute(
            "UPDATE calls SET status = 'failed', hangup_cause = 'DAEMON_LOST'"
            " WHERE status = 'active' AND started_at < ?",
            (started_before,),
        )

    def add_call_charge(self, uuid: str, amount: int) -> None:
        """Add a charge settled apart from the call's own journal write to its row."""
        self.db.execute("UPDATE calls SET charge = charge + ? WHERE uuid = ?", (amount, uuid))

    def call_reconciled(self, uuid: str, amount: int, talk_seconds: int) -> None:
        """A call whose meter was reconciled: 'failed' if still 'active', the charge added, the talk kept."""
        self.db.execute(
            "UPDATE calls SET status = CASE WHEN status = 'active' THEN 'failed' ELSE status END,"
            " charge = charge + ?, talk_seconds = GREATEST(talk_seconds, ?) WHERE uuid = ?",
            (amount, talk_seconds, uuid),
        )

    def close_stale_calls(self, daemon: str) -> int:
        """Calls a dead daemon left 'active' become 'failed' (its meters are reconciled apart)."""
        return self.db.execute(
            "UPDATE calls SET status = 'failed', hangup_cause = CASE WHEN hangup_cause = '' "
            "THEN 'DAEMON_RESTART' ELSE hangup_cause END WHERE status = 'active' AND daemon = ?",
            (daemon,),
        )

    # ------------------------------------------------------------ directory

    def customer_rows(self) -> list[dict[str, Any]]:
        """The whole directory, by id, each row with its ``phones``."""
        return self._customers("", ())

    def customer_by_phone(self, phone: str) -> dict[str, Any] | None:
        rows = self._customers("WHERE id IN (SELECT customer_id FROM customer_phones WHERE phone = ?)", (phone,))
        return rows[0] if rows else None

    def customer_by_number(self, number: str) -> dict[str, Any] | None:
        rows = self._customers("WHERE number = ?", (number,))
        return rows[0] if rows else None

    def pin_hash(self, customer_id: str) -> str:
        """The customer's stored PIN hash; '' when there is none (or no such customer)."""
        row = self.db.one("SELECT pin_hash FROM customers WHERE id = ?", (customer_id,))
        return row["pin_hash"] if row else ""

    def debt(self, customer_id: str) -> int | None:
        """The customer's debt in rial; None if there is no such customer."""
        row = self.db.one("SELECT debt FROM customers WHERE id = ?", (customer_id,))
        return int(row["debt"]) if row else None

    def _customers(self, where: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        rows = self.db.query(f"SELECT * FROM customers {where} ORDER BY id", params)
        if not rows:
            return rows
        ids = [r["id"] for r in rows]
        phones: dict[str, list[str]] = {}
        for chunk in _chunks(ids, 500):
            for p in self.db.query(
                f"SELECT phone, customer_id FROM customer_phones WHERE customer_id IN ({','.join('?' * len(chunk))})"
                " ORDER BY phone",
                chunk,
            ):
                phones.setdefault(p["customer_id"], []).append(p["phone"])
        for r in rows:
            r["phones"] = phones.get(r["id"], [])
        return rows

    def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The directory's row of one customer (with its ``phones``), or None."""
        rows = self._customers("WHERE id = ?", (customer_id,))
        return rows[0] if rows else None

    def customer_count(self) -> int:
        row = self.db.one("SELECT COUNT(*) AS n FROM customers")
        return int(row["n"]) if row else 0

    def upsert_customer(self, c: dict[str, Any], phones: Iterable[str]) -> None:
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO customers (id, number, name, type, mobile, pin_hash, sales, support, other, debt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET number = excluded.number, name = excluded.name,"
                " type = excluded.type, mobile = excluded.mobile,"
                " pin_hash = CASE WHEN excluded.pin_hash = '' THEN customers.pin_hash ELSE excluded.pin_hash END,"
                " sales = excluded.sales, support = excluded.support, other = excluded.other, debt = excluded.debt",
                (
                    c["id"], c["number"], c.get("name", ""), c.get("type", ""), c.get("mobile", ""),
                    c.get("pin_hash", ""), c.get("sales", ""), c.get("support", ""), c.get("other", ""),
                    int(c.get("debt", 0)),
                ),
            )
            self.db.execute("DELETE FROM customer_phones WHERE customer_id = ?", (c["id"],))
            for phone in dict.fromkeys(phones):
                self.db.execute(
                    "INSERT INTO customer_phones (phone, customer_id) VALUES (?, ?)", (phone, c["id"])
                )

    def set_pin_hash(self, customer_id: str, pin_hash: str) -> bool:
        return self.db.execute("UPDATE customers SET pin_hash = ? WHERE id = ?", (pin_hash, customer_id)) > 0

    def replace_pin_hash(self, customer_id: str, old: str, new: str) -> bool:
        """``new`` in place of ``old`` only: a PIN set meanwhile (``customers set-pin``) is kept."""
        return self.db.execute("UPDATE customers SET pin_hash = ? WHERE id = ? AND pin_hash = ?",
                               (new, customer_id, old)) > 0

    # ------------------------------------------------------------ PIN attempts and lockouts
    #
    # An attempt takes its slot (a pending pin_failures row) before its PIN is verified,
    # under one lock across calls and daemons, and only while every scope it counts in
    # (its customer, its caller ID) has room: no more PINs than a limit allows are ever
    # in flight or done within the window. A wrong PIN keeps the slot as a failure, a
    # right one deletes it, a CRM error gives it back (the caller learnt nothing). A call
    # killed or a daemon dead mid-verification leaves the slot pending: it counts until
    # the window forgets it. A lockout row's ``until``, even past, is where its scope's
    # count starts again (a right PIN sets the customer's to now).

    def pin_reserve(self, customer_id: str, limits: PinLimits, now: float) -> tuple[str, str]:
        """Take a slot for one PIN attempt: ``(slot, "")``, or ``("", scope)`` when that scope is full or locked."""
        with self.db.transaction():
            self.db.lock(PIN_LOCK)
            self.db.execute("DELETE FROM pin_failures WHERE at < ?", (now - limits.longest_window,))
            for scope, key, limit in self._pin_scopes(customer_id, limits):
                table, column = _LOCK_TABLES[scope]
                until = self._until(table, column, key)
                if until > now or self._pin_count(column, key, max(now - limit.window, until), True) >= limit.max:
                    return "", scope
            slot = uuidlib.uuid4().hex
            self.db.execute(
                "INSERT INTO pin_failures (customer_id, caller, at, slot, pending) VALUES (?, ?, ?, ?, 1)",
                (customer_id, limits.caller, now, slot),
            )
        return slot, ""

    def pin_failed(self, slot: str, customer_id: str, limits: PinLimits, now: float) -> tuple[str, bool]:
        """The slot's PIN was wrong: keep it as a failure. Returns the scope this failure locked ("" if none)
        and whether the failures of every customer within the alarm window just reached the alarm level."""
        locked = ""
        with self.db.transaction():
            self.db.lock(PIN_LOCK)
            self.db.execute("UPDATE pin_failures SET pending = 0 WHERE slot = ?", (slot,))
            for scope, key, limit in self._pin_scopes(customer_id, limits):
                if self._lock_if_full(scope, key, now, limit) and not locked:
                    locked = scope
            row = self.db.one("SELECT COUNT(*) AS n FROM pin_failures WHERE pending = 0 AND at >= ?",
                              (now - limits.alarm_window,))
        return locked, bool(row) and int(row["n"]) == limits.alarm_failures

    def pin_succeeded(self, slot: str, customer_id: str, now: float) -> None:
        """The slot's PIN was right: drop it; the customer's count starts again (its caller ID's does not)."""
        with self.db.transaction():
            self.db.lock(PIN_LOCK)
            self.db.execute("DELETE FROM pin_failures WHERE slot = ?", (slot,))
            if self.db.one("SELECT 1 AS x FROM pin_failures WHERE customer_id = ? LIMIT 1", (customer_id,)):
                self._set_until("customer", customer_id, now)

    def pin_release(self, slot: str) -> None:
        """Give a slot back unused: the PIN was never verified (the CRM failed)."""
        self.db.execute("DELETE FROM pin_failures WHERE slot = ?", (slot,))

    def pin_locked(self, customer_id: str, caller: str, now: float) -> str:
        """Which scope is locked out now: "customer", "caller" or ""."""
        if self.locked_until(customer_id, now):
            return "customer"
        return "caller" if caller and self._until("caller_lockouts", "caller", caller) > now else ""

    def record_pin_failure(self, customer_id: str, now: float, window: float, limit: int, lockout: float) -> bool:
        """Count one wrong PIN for a customer, outside any slot; lock at ``limit``. True if now locked."""
        with self.db.transaction():
            self.db.lock(PIN_LOCK)
            self.db.execute("INSERT INTO pin_failures (customer_id, at) VALUES (?, ?)", (customer_id, now))
            return self._lock_if_full("customer", customer_id, now, Limit(limit, window, lockout))

    def locked_until(self, customer_id: str, now: float) -> float:
        row = self.db.one("SELECT until FROM lockouts WHERE customer_id = ? AND until > ?", (customer_id, now))
        return float(row["until"]) if row else 0.0

    @staticmethod
    def _pin_scopes(customer_id: str, limits: PinLimits) -> list[tuple[str, str, Limit]]:
        return [("customer", customer_id, limits.customer), ("caller", limits.caller, limits.per_caller)]

    def _lock_if_full(self, scope: str, key: str, now: float, limit: Limit) -> bool:
        """Lock ``key`` when its failures (slots in flight aside) fill the window; True if this locked it."""
        table, column = _LOCK_TABLES[scope]
        until = self._until(table, column, key)
        if until > now or self._pin_count(column, key, max(now - limit.window, until), False) < limit.max:
            return False
        self._set_until(scope, key, now + limit.lockout)
        return True

    def _pin_count(self, column: str, key: str, since: float, pending: bool) -> int:
        row = self.db.one(
            f"SELECT COUNT(*) AS n FROM pin_failures WHERE {column} = ? AND at >= ?"
            + ("" if pending else " AND pending = 0"),
            (key, since),
        )
        return int(row["n"]) if row else 0

    def _until(self, table: str, column: str, key: str) -> float:
        row = self.db.one(f"SELECT until FROM {table} WHERE {column} = ?", (key,))
        return float(row["until"]) if row else 0.0

    def _set_until(self, scope: str, key: str, until: float) -> None:
        """Lock ``key`` until then; a later lockout already there stays."""
        table, column = _LOCK_TABLES[scope]
        self.db.execute(
            f"INSERT INTO {table} ({column}, until) VALUES (?, ?)"
            f" ON CONFLICT ({column}) DO UPDATE SET until = GREATEST({table}.until, excluded.until)",
            (key, until),
        )

    # ------------------------------------------------------------ meters and ledger

    def meter_open(self, m: dict[str, Any]) -> bool:
        """Record a billed bridge before it starts (so a crash leaves a trace); False if the key is taken."""
        cols = list(m)
        return self.db.execute(
            f"INSERT INTO meters ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            " ON CONFLICT (call_uuid, module) DO NOTHING",
            [m[c] for c in cols],
        ) > 0

    def meter_bridged(self, call_uuid: str, module: str, bridge_us: int, now: float) -> None:
        self.db.execute(
            "UPDATE meters SET bridge_us = ?, seen_us = ?, beat_at = ? WHERE call_uuid = ? AND module = ?"
            " AND state = 'open' AND bridge_us = 0",
            (bridge_us, bridge_us, now, call_uuid, module),
        )

    def meter_beat(self, call_uuid: str, module: str, seen_us: int, now: float) -> None:
        self.db.execute(
            "UPDATE meters SET seen_us = GREATEST(seen_us, ?), beat_at = ? WHERE call_uuid = ? AND module = ?"
            " AND state = 'open'",
            (seen_us, now, call_uuid, module),
        )

    def open_meters(self, *, stale_before: float | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM meters WHERE state = 'open'"
        params: list[Any] = []
        if stale_before is not None:
            sql += " AND beat_at < ?"
            params.append(stale_before)
        return self.db.query(sql + " ORDER BY opened_at", params)

    def settle(
        self,
        meter: dict[str, Any],
        *,
        talk_seconds: int,
        units: int,
        amount: int,
        source: str,
        outbox: list[tuple[str, str, dict[str, Any]]],
        now: float,
    ) -> dict[str, Any] | None:
        """Close a meter and charge it, once: ledger row, debt, outbox rows, one transaction.

        Returns the charge, or None if the meter was already settled (by another daemon,
        or by reconcile), or its talk already charged (the same FreeSWITCH bridge seen by
        another session of the call): the ledger's keys (call_uuid, module) and (call_uuid,
        code, bridge_us) make it exactly once.
        """
        uuid, module = meter["call_uuid"], meter["module"]
        code, bridge_us = module.partition("#")[0], int(meter.get("bridge_us") or 0)
        with self.db.transaction():
            self.db.lock("talk:" + uuid)  # two daemons settling one call's talks: one at a time
            charged = bool(amount and bridge_us and self.db.one(
                "SELECT 1 AS x FROM charges WHERE call_uuid = ? AND code = ? AND bridge_us = ?",
                (uuid, code, bridge_us)))
            closed = self.db.execute(
                "UPDATE meters SET state = ?, seen_us = GREATEST(seen_us, bridge_us + ?)"
                " WHERE call_uuid = ? AND module = ? AND state = 'open'",
                ("charged" if amount and not charged else "closed", talk_seconds * 1_000_000, uuid, module),
            )
            if not closed or charged:
                return None
            if not amount:
                return {"call_uuid": uuid, "module": module, "amount": 0, "units": 0, "talk_seconds": talk_seconds}
            customer = meter["customer_id"]
            changed = self.db.execute("UPDATE customers SET debt = debt + ? WHERE id = ?", (amount, customer))
            if changed:
                row = self.db.one("SELECT debt FROM customers WHERE id = ?", (customer,))
                debt = int(row["debt"]) if row else amount
            else:
                row = self.db.one("SELECT COALESCE(SUM(amount), 0) AS s FROM charges WHERE customer_id = ?",
                                  (customer,))
                debt = int(row["s"]) + amount if row else amount
            created = now_iso(now)
            self.db.execute(
                "INSERT INTO charges (call_uuid, module, code, bridge_us, customer_id, talk_seconds, units, amount,"
                " debt_after, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uuid, module, code, bridge_us, customer, talk_seconds, units, amount, debt, source, created),
            )
            for kind, key, payload in outbox:
                self.outbox_add(kind, key, payload, now)
        return {"call_uuid": uuid, "module": module, "customer_id": customer, "talk_seconds": talk_seconds,
                "units": units, "amount": amount, "debt": debt, "created_at": created, "source": source}

    def call_charges(self, uuid: str) -> list[dict[str, Any]]:
        """The ledger rows of one call, oldest first."""
        return self.db.query("SELECT * FROM charges WHERE call_uuid = ? ORDER BY id", (uuid,))

    def recent_charges(self, *, limit: int, customer: str = "", before: int = 0) -> list[dict[str, Any]]:
        """Ledger rows newest first, ``limit`` of them, only ids below ``before`` when given (keyset)."""
        where, params = _where([("customer_id = ?", customer), ("id < ?", int(before))])
        return self.db.query(f"SELECT * FROM charges{where} ORDER BY id DESC LIMIT {int(limit)}", params)

    def charge_totals(self, customer: str) -> dict[str, int]:
        """A customer's ledger summed: how many charges, their rial and their talk seconds."""
        row = self.db.one("SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0) AS amount,"
                          " COALESCE(SUM(talk_seconds), 0) AS talk FROM charges WHERE customer_id = ?", (customer,))
        assert row is not None  # an aggregate always has its one row
        return {"charges": int(row["n"]), "amount": int(row["amount"]), "talk_seconds": int(row["talk"])}

    def charges(self, customer: str = "") -> list[dict[str, Any]]:
        sql = "SELECT * FROM charges"
        params: list[Any] = []
        if customer:
            sql += " WHERE customer_id = ?"
            params.append(customer)
        return self.db.query(sql + " ORDER BY id", params)

    # ------------------------------------------------------------ web console users

    def web_user_set(self, name: str, role: str, password_hash: str) -> bool:
        """Add a user, or change an existing one's role and password; True if it was new.
        Raises LastAdmin rather than take the admin role from the last admin."""
        with self.db.transaction():
            self.db.lock(WEB_USERS_LOCK)
            if role != "admin":
                self._keep_an_admin(name)
            new = self.db.one("SELECT 1 AS x FROM web_users WHERE name = ?", (name,)) is None
            self.db.execute(
                "INSERT INTO web_users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash",
                (name, role, password_hash, now_iso()),
            )
        return new

    def web_user_add(self, name: str, role: str, password_hash: str) -> bool:
        """Add a user; False (and nothing changed) if the name is taken."""
        return self.db.execute(
            "INSERT INTO web_users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING", (name, role, password_hash, now_iso())) > 0

    def web_user_update(self, name: str, *, role: str = "", password_hash: str = "") -> bool:
        """Change a user's role and/or password hash; False if there is no such user.
        Raises LastAdmin rather than take the admin role from the last admin."""
        sets = [(c, v) for c, v in (("role", role), ("password_hash", password_hash)) if v]
        if not sets:
            raise ValueError("web_user_update: nothing to change")
        with self.db.transaction():
            self.db.lock(WEB_USERS_LOCK)
            if role and role != "admin":
                self._keep_an_admin(name)
            return self.db.execute(f"UPDATE web_users SET {', '.join(c + ' = ?' for c, _ in sets)} WHERE name = ?",
                                   [v for _, v in sets] + [name]) > 0

    def web_user_remove(self, name: str) -> bool:
        """Remove a user; False if there was none. Raises LastAdmin rather than remove the last admin."""
        with self.db.transaction():
            self.db.lock(WEB_USERS_LOCK)
            self._keep_an_admin(name)
            return self.db.execute("DELETE FROM web_users WHERE name = ?", (name,)) > 0

    def _keep_an_admin(self, name: str) -> None:
        """Raise LastAdmin if ``name`` is an admin and no other user is (inside the users' lock)."""
        row = self.db.one("SELECT COUNT(*) AS admins, MAX(CASE WHEN name = ? THEN 1 ELSE 0 END) AS me"
                          " FROM web_users WHERE role = 'admin'", (name,))
        if row and row["me"] and int(row["admins"]) <= 1:
            raise LastAdmin(f"{name} is the last admin: make another user admin first")

    def web_user(self, name: str) -> dict[str, Any] | None:
        return self.db.one("SELECT * FROM web_users WHERE name = ?", (name,))

    def web_users(self) -> list[dict[str, Any]]:
        return self.db.query("SELECT name, role, created_at FROM web_users ORDER BY name")

    def web_login_failed(self, keys: Sequence[str], now: float, window: float) -> None:
        """Count a failed login against each key (``user:NAME``, ``addr:IP``); forget old ones."""
        with self.db.transaction():
            self.db.execute("DELETE FROM web_login_failures WHERE at < ?", (now - window,))
            for key in keys:
                self.db.execute("INSERT INTO web_login_failures (key, at) VALUES (?, ?)", (key, now))

    def web_login_failures(self, key: str, since: float) -> int:
        row = self.db.one("SELECT COUNT(*) AS n FROM web_login_failures WHERE key = ? AND at >= ?", (key, since))
        return int(row["n"]) if row else 0

    def web_login_clear(self, key: str) -> None:
        self.db.execute("DELETE FROM web_login_failures WHERE key = ?", (key,))

    # ------------------------------------------------------------ outbox

    def outbox_add(self, kind: str, key: str, payload: dict[str, Any], now: float) -> bool:
        """Queue a CRM write once per idempotency key; False if that key was already queued."""
        return self.db.execute(_OUTBOX_ADD, _outbox_row(kind, key, payload, now)) > 0

    def outbox_add_many(self, kind: str, writes: Sequence[tuple[str, dict[str, Any]]], now: float) -> None:
        """``outbox_add`` of each (idempotency key, payload), in one statement (inside a transaction)."""
        if writes:
            self.db.execute_many(_OUTBOX_ADD, [_outbox_row(kind, key, payload, now) for key, payload in writes])

    def outbox_claim(self, worker: str, now: float, limit: int = 20, lease: float = 60.0) -> list[dict[str, Any]]:
        """Take due rows for ``worker`` under a lease; other workers skip them until it ends."""
        with self.db.transaction():
            rows = self.db.query(
                "SELECT id FROM outbox WHERE delivered_at IS NULL AND next_at <= ? AND locked_until < ?"
                " ORDER BY next_at, id LIMIT ?" + self.db.skip_locked,
                (now, now, limit),
            )
            ids = [r["id"] for r in rows]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            self.db.execute(
                f"UPDATE outbox SET locked_by = ?, locked_until = ? WHERE id IN ({marks})", [worker, now + lease, *ids]
            )
            out = self.db.query(f"SELECT * FROM outbox WHERE id IN ({marks}) ORDER BY next_at, id", ids)
        for r in out:
            r["payload"] = json.loads(r["payload"])
        return out

    def outbox_delivered(self, row_id: int, worker: str, result: str, now: float) -> bool:
        return self.outbox_delivered_many(worker, [(row_id, result, now)]) == 1

    def outbox_delivered_many(self, worker: str, rows: list[tuple[int, str, float]]) -> int:
        """Mark rows ``(id, result, delivered_at)`` delivered, in one transaction; how many were still ours."""
        marked = 0
        with self.db.transaction():
            for row_id, result, now in rows:
                marked += self.db.execute(
                    "UPDATE outbox SET delivered_at = ?, result = CASE WHEN result = '' THEN ? ELSE result END,"
                    " attempts = attempts + 1, locked_by = '', locked_until = 0, last_error = ''"
                    " WHERE id = ? AND locked_by = ? AND delivered_at IS NULL",
                    (now, result, row_id, worker),
                )
        return marked

    def outbox_failed(self, row_id: int, worker: str, error: str, next_at: float) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ?, locked_by = '', locked_until = 0"
            " WHERE id = ? AND locked_by = ?",
            (error[:500], next_at, row_id, worker),
        )

    def outbox_rows(self, *, pending_only: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT * FROM outbox"
        if pending_only:
            sql += " WHERE delivered_at IS NULL"
        rows = self.db.query(sql + " ORDER BY id")
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    def call_deliveries(self, uuid: str) -> list[dict[str, Any]]:
        """The CRM deliveries (outbox rows) of one call: their keys start with the call's uuid."""
        rows = self.db.query("SELECT * FROM outbox WHERE idempotency_key LIKE ? ESCAPE '\\' ORDER BY id",
                             (like_pattern(uuid)[1:-1] + "-%",))
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    def outbox_stats(self, now: float) -> tuple[int, float]:
        row = self.db.one("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE delivered_at IS NULL")
        if not row or not row["n"]:
            return 0, 0.0
        return int(row["n"]), max(0.0, now - float(row["oldest"]))


_OUTBOX_ADD = ("INSERT INTO outbox (kind, idempotency_key, payload, created_at, next_at) VALUES (?, ?, ?, ?, ?)"
               " ON CONFLICT (idempotency_key) DO NOTHING")


def _outbox_row(kind: str, key: str, payload: dict[str, Any], now: float) -> tuple[Any, ...]:
    return kind, key, json.dumps(payload, ensure_ascii=False), now, now


def _number_match(number: str, params: list[Any]) -> str:
    """Caller or called containing ``number``, or extension equal to it: as written, and with
    Persian and Arabic-Indic digits read as 0-9 (what FreeSWITCH sends). Appends the parameters."""
    matches = []
    for form in dict.fromkeys((number, digits.to_ascii(number))):
        pattern = like_pattern(form)
        matches.append("caller LIKE ? ESCAPE '\\' OR called LIKE ? ESCAPE '\\' OR extension = ?")
        params += [pattern, pattern, form]
    return "(" + " OR ".join(matches) + ")"


class _Keyset:
    """A range of the journal's order (``order``, then its tie: see ``tie``), one way: after the
    row ``after`` (a uuid; its other keys read by subqueries) or past a known (value, tie...),
    and up to a known (value, tie...) (inclusive)."""

    def __init__(self, order: str, descending: bool, *, after: str = "", past: tuple[Any, ...] | None = None,
                 upto: tuple[Any, ...] | None = None, reach: Any = None) -> None:
        self.order, self.descending, self.after, self.past, self.upto = order, descending, after, past, upto
        self.reach = reach  # not None: from the first row with this sort value on (inclusive)
        self.keys = (order, *tie(order))
        self.compared = self.keys  # by sql(): see within()

    def until(self, upto: tuple[Any, ...] | None) -> _Keyset:
        """This range, ending at ``upto`` (inclusive; None: at the journal's end)."""
        return _Keyset(self.order, self.descending, after=self.after, past=self.past, upto=upto, reach=self.reach)

    def within(self, value: Any) -> _Keyset:
        """This range, for rows that all have ``value`` in the sort column (a filter fixes it):
        compared by the tie alone. Given the column's equality and a range of the whole key,
        SQLite sorts every row of the value past the cursor (a deep page of the local calls by
        direction: 0.3-0.6 s at a million calls); by the tie alone it reads the page off the index."""
        if self.past is None or self.upto is not None or self.past[0] != value:
            return self
        keyset = _Keyset(self.order, self.descending, past=self.past[1:])
        keyset.compared = self.keys[1:]
        return keyset

    def columns(self) -> str:
        return ", ".join(f"calls.{c}" for c in self.keys)

    def by(self, *, plus: bool = False, table: str = "calls") -> str:
        way, p = ("DESC" if self.descending else "ASC"), ("+" if plus else "")
        return ", ".join(f"{p}{table}.{c} {way}" for c in self.keys)

    def sql(self) -> tuple[str, list[Any]]:
        """`` WHERE ...`` (or "") and its parameters."""
        after, before = ("<", ">=") if self.descending else (">", "<=")
        pair = f"({', '.join(f'calls.{c}' for c in self.compared)})"
        marks = f"({', '.join('?' * len(self.compared))})"
        terms: list[str] = []
        params: list[Any] = []
        if self.after:
            values = ", ".join("?" if c == "uuid" else f"(SELECT k.{c} FROM calls AS k WHERE k.uuid = ?)"
                               for c in self.compared)
            terms.append(f"{pair} {after} ({values})")
            params += [self.after] * len(self.compared)
        if self.past is not None:
            terms.append(f"{pair} {after} {marks}")
            params += list(self.past)
        if self.upto is not None:
            terms.append(f"{pair} {before} {marks}")
            params += list(self.upto)
        if self.reach is not None:
            terms.append(f"calls.{self.order} {'<=' if self.descending else '>='} ?")
            params.append(self.reach)
        return (" WHERE " + " AND ".join(terms)) if terms else "", params


def _and(where: str, more: str) -> str:
    """Two `` WHERE ...`` clauses (either may be "") as one."""
    if not where or not more:
        return where or more
    return f"{where} AND {more[len(' WHERE '):]}"


# The filters a covering index serves (migration 16), in the order one is picked when several are
# given (the likeliest to be narrow first), with the index that holds their matches.
_COVERED_FILTERS = (("customer", "calls_customer_covering"), ("extension", "calls_extension_covering"),
                    ("queue", "calls_queue_covering"), ("missed_cause", "calls_missed_covering"),
                    ("status", "calls_status_covering"), ("direction", "calls_direction_covering"),
                    ("has_recording", "calls_recorded_covering"), ("min_mos", "calls_scored_covering"))
# Filters a page is planned as before with: on what a covering index does not hold, or (the too-long
# calls) served by their partial indexes, one per sort column.
_UNCOVERED_FILTERS = ("number", "flag", "text", "max_mos", "too_long")
# Equality filters on a sort column: sorted by it, the page is in uuid order within one value,
# which the sort column's own index serves directly.
_FIXING_FILTERS = {"status": "status", "direction": "direction", "missed_cause": "missed_cause",
                   "queue": "queue", "too_long": "too_long"}


def _fixed_value(filters: dict[str, Any], order: str) -> Any:
    """The value a filter gives every row in ``order``'s column, or None when none fixes it."""
    for key, column in _FIXING_FILTERS.items():
        value = filters.get(key)
        if column == order and value:
            return 1 if value is True else value
    return None


def _covering_index(filters: dict[str, Any], order: str) -> str:
    """The covering index a page with ``filters`` sorted by ``order`` is read through, or "" when
    it is planned as one query (no covered filter, an uncovered one, or a filter fixing ``order``)."""
    if any(filters.get(k) for k in _UNCOVERED_FILTERS):
        return ""
    if any(filters.get(k) for k, column in _FIXING_FILTERS.items() if column == order):
        return ""
    for key, index in _COVERED_FILTERS:
        value = filters.get(key)
        if value is not None and value != "" and value is not False:
            return index
    return ""


# The journal with each call's analysis beside it (none yet: NULLs).
_JOURNAL = "calls LEFT JOIN call_analysis ON call_analysis.call_uuid = calls.uuid"
# Its state, error, flags and line figures are named analysis_*: the journal's own columns
# (and FreeSWITCH's CDR figures, where a site keeps them there) keep the plain names.
_JOURNAL_COLUMNS = "calls.*, " + ", ".join(
    f"call_analysis.{c}" if c in FIGURES or c == "transcript_state" else f"call_analysis.{c} AS analysis_{c}"
    for c in ANALYSIS_COLUMNS
)


def _where(conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """`` WHERE a AND b`` of the conditions whose value is set (not empty, not 0), and their values."""
    used = [(sql, value) for sql, value in conditions if value]
    return (" WHERE " + " AND ".join(sql for sql, _ in used)) if used else "", [value for _, value in used]


def _sql_value(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), ensure_ascii=False)
    if isinstance(v, bool):
        return int(v)
    return v


def _call_out(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["modules"] = json.loads(row.get("modules") or "[]")
    row["attempts"] = json.loads(row.get("attempts") or "[]")
    row["too_long"] = bool(row.get("too_long"))
    row["downloaded"] = bool(row.get("downloaded"))
    row["analysis_flags"] = [f for f in (row.get("analysis_flags") or "").split(",") if f]
    return row


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def sqlite_path(url: str, base: Path | None = None) -> Path:
    """The database file a sqlite: URL names (relative paths from ``base``)."""
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        return Path("/" + rest.lstrip("/"))
    return (base or Path.cwd()) / rest


def open_store(url: str, *, pool_size: int = 20) -> Store:
    """Open the database named by ``[storage] url`` and bring its schema up to date."""
    db: Any
    if url.startswith("sqlite:"):
        db = SQLiteDB(str(sqlite_path(url)))
    elif url.startswith(("postgresql://", "postgres://")):
        from fsapp.store.postgres import PostgresDB

        db = PostgresDB(url, size=pool_size)
    else:
        raise StorageError(f"storage.url: unsupported database URL {url!r}")
    store = Store(db)
    store.migrate()
    keep_number_search(store.db)
    store.db.opened()
    return store
