"""A large call centre's year of calls, for the web console's benchmark (``bench/web_bench.py``).

Fills a journal with ``--rows`` calls (default 1,000,000) spread over a year of UTC
``started_at``, busiest in Tehran's office hours (Saturday to Wednesday, a half day on
Thursday, little on Friday), with the journal's own mix: statuses and missed causes,
inbound/outbound/local calls, 50 extensions, a few thousand customers of four types
(a few of them calling a lot), numbers in the forms FreeSWITCH's caller ID gives them
(``0912...``, ``+98912...``, ``912...``, ``0098...``, now and then in Persian digits),
talk, ring, wait and hold times, MOS figures on most answered calls, too-long marks,
recordings on part of them and each recording's analysis row (flags on some). Rows go
in through the store's bulk load (executemany on SQLite, COPY on PostgreSQL), then
ANALYZE.

    python bench/web_gen.py --rows 100000 --url sqlite:///journal.db
    python bench/web_gen.py --rows 1000000 --postgres   # database fsapp_bench_web on $FSAPP_TEST_PG_URL

The rows are the same for the same ``--seed`` and ``--rows``.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fsapp.store as storemod  # noqa: E402
from fsapp.analysis.flags import NAMES as FLAG_NAMES  # noqa: E402
from fsapp.store import Store, open_store  # noqa: E402

YEAR_START = calendar.timegm((2026, 1, 1, 0, 0, 0))  # UTC; the journal's year
TEHRAN = 3.5 * 3600  # UTC+03:30, no daylight saving since 2022
TOO_LONG = 600
EXTENSIONS = [str(1001 + i) for i in range(50)]
QUEUES = ["support", "sales", "billing", "vip"]  # the first takes most calls
DIDS = ["02191001000", "02191002000", "7000"]
# Local hour -> weight: mornings and afternoons of an office day, a trickle at night.
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 6, 30, 70, 90, 85, 55, 45, 75, 80, 65, 40, 20, 10, 6, 4, 2, 1]
# Weekday (Monday = 0) -> weight: the Iranian week, Saturday to Wednesday full, Thursday half, Friday off.
DAY_WEIGHTS = [10, 10, 10, 5, 1, 10, 10]
STATUSES = {
    "inbound": (("answered", 58), ("missed", 16), ("abandoned", 12), ("completed", 6), ("transferred", 5),
                ("failed", 2), ("rejected", 1)),
    "outbound": (("answered", 64), ("missed", 31), ("failed", 5)),
    "local": (("answered", 80), ("missed", 20)),
}
MISSED = (("no_answer", 55), ("busy", 20), ("cancelled", 15), ("unregistered", 7), ("failed", 3))
CAUSES = {"answered": "NORMAL_CLEARING", "completed": "NORMAL_CLEARING", "transferred": "NORMAL_CLEARING",
          "abandoned": "ORIGINATOR_CANCEL", "failed": "NORMAL_TEMPORARY_FAILURE", "rejected": "CALL_REJECTED"}
MISSED_HANGUP = {"no_answer": "NO_ANSWER", "busy": "USER_BUSY", "cancelled": "ORIGINATOR_CANCEL",
                 "unregistered": "USER_NOT_REGISTERED", "failed": "NORMAL_TEMPORARY_FAILURE"}
TYPES = (("active", 50), ("prospect", 25), ("problem", 15), ("vip", 10))
FIRST = ["Ali", "Sara", "Reza", "Maryam", "Hossein", "Zahra", "Mehdi", "Fatemeh", "Amir", "Leila"]
LAST = ["Ahmadi", "Hosseini", "Karimi", "Rezaei", "Moradi", "Jafari", "Mohammadi", "Kazemi", "Rahimi", "Sadeghi"]
ENTRIES = (("[\"main\"]", 40), ("[\"main\", \"club\"]", 25), ("[\"main\", \"club\", \"balance\"]", 15),
           ("[\"main\", \"club\", \"bill\"]", 15), ("[\"club\", \"expert\"]", 5))
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")

CALL_COLUMNS = (
    "uuid started_at answered_at ended_at direction caller caller_name called extension status total_seconds "
    "talk_seconds too_long customer_id customer_name customer_type modules auth_method auth_result charge "
    "recording downloaded hangup_cause final_destination entry_module daemon recording_customer missed_cause "
    "ring_seconds wait_seconds hold_seconds hangup_by caller_mos caller_quality caller_flaws caller_jitter "
    "callee_mos callee_quality callee_flaws callee_jitter cdr_legs cdr_a_leg queue"
).split()
ANALYSIS_COLUMNS = (
    "call_uuid state recording customer_channel queued_at analysed_at duration_seconds customer_talk_seconds "
    "customer_share agent_talk_seconds agent_share silence_seconds silence_ratio longest_silence_seconds "
    "long_silences overtalk_seconds overtalk_count mos hold_seconds flags"
).split()


@dataclass
class Made:
    """What the bench needs to know of the rows made: counts, and values its filters can look for."""

    rows: int = 0
    analysed: int = 0
    seconds: float = 0.0
    migrate_seconds: float = 0.0  # building the journal's indexes over the loaded rows (fill_url)
    busiest_customer: str = ""
    rare_customer: str = ""
    numbers: list[str] = field(default_factory=list)  # national significant numbers of customers who call
    counts: dict[str, int] = field(default_factory=dict)


def _picker(rng: random.Random, table: tuple[tuple[str, int], ...]) -> Any:
    values = [v for v, _ in table]
    cum, total = [], 0
    for _, w in table:
        total += w
        cum.append(total)
    return lambda: rng.choices(values, cum_weights=cum)[0]


def _stored(nsn: str, r: float) -> str:
    """A national significant number as a caller ID gives it (most often 0912..., then +98912...)."""
    if r < 0.55:
        return "0" + nsn
    if r < 0.80:
        return "+98" + nsn
    if r < 0.90:
        return nsn
    if r < 0.95:
        return "0098" + nsn
    if r < 0.99:
        return "98" + nsn
    return ("0" + nsn).translate(PERSIAN)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _nsn(rng: random.Random, mobiles: float) -> str:
    """A national significant number: a mobile (``mobiles`` of them), else a Tehran line."""
    if rng.random() < mobiles:
        return f"9{rng.choice('0123')}{rng.randrange(10**8):08}"
    return f"21{rng.randrange(10**8):08}"


def _customers(rng: random.Random, n: int) -> list[tuple[str, str, str, str]]:
    pick_type = _picker(rng, TYPES)
    out = []
    for i in range(n):
        nsn = _nsn(rng, 0.8)
        out.append((f"C{i + 1:05}", nsn, f"{rng.choice(FIRST)} {rng.choice(LAST)}", pick_type()))
    return out


def _instants(rng: random.Random, n: int, days: int) -> list[float]:
    """``n`` start times over ``days`` days from YEAR_START, by weekday and local hour weights."""
    day_w = [DAY_WEIGHTS[time.gmtime(YEAR_START + d * 86400 + TEHRAN).tm_wday] for d in range(days)]
    day_list = rng.choices(range(days), weights=day_w, k=n)
    hour_list = rng.choices(range(24), weights=HOUR_WEIGHTS, k=n)
    rand = rng.random
    return [YEAR_START + d * 86400 + h * 3600 - TEHRAN + rand() * 3600
            for d, h in zip(day_list, hour_list, strict=True)]


def _quality(rng: random.Random) -> tuple[float, float, int, float]:
    mos = round(max(1.0, 4.5 - rng.expovariate(5.0)), 2)
    return mos, round(mos / 4.5 * 100, 1), int((4.5 - mos) * 40), round(rng.uniform(0.5, 12.0), 2)


def generate(n: int, seed: int = 7, days: int = 365, customers: int = 5000,
             made: Made | None = None) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """(call row, its analysis row or None) for ``n`` calls, in CALL_COLUMNS / ANALYSIS_COLUMNS order."""
    rng = random.Random(seed)
    rand = rng.random
    people = _customers(rng, customers)
    weights = [1 / (i + 1) ** 0.9 for i in range(customers)]  # a few customers call a lot
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    if made is not None:
        made.busiest_customer, made.rare_customer = people[0][0], people[-1][0]
        made.numbers = [p[1] for p in people[:20]]
    pick_status = {d: _picker(rng, t) for d, t in STATUSES.items()}
    pick_missed = _picker(rng, MISSED)
    pick_entry = _picker(rng, ENTRIES)
    starts = _instants(rng, n, days)
    for i, start in enumerate(starts):
        uuid = (f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-"
                f"{0x8000 | rng.getrandbits(14):04x}-{rng.getrandbits(48):012x}")
        r = rand()
        direction = "inbound" if r < 0.72 else "outbound" if r < 0.94 else "local"
        status = pick_status[direction]()
        ext = EXTENSIONS[int(rand() ** 1.3 * len(EXTENSIONS))]  # some agents take more calls
        known = direction != "local" and rand() < 0.7
        if known:
            cid, nsn, cname, ctype = rng.choices(people, cum_weights=cum)[0]
        else:
            cid, cname, ctype = "", "", ""
            nsn = _nsn(rng, 0.7)
        number = _stored(nsn, rand())
        if direction == "inbound":
            caller, called = number, DIDS[i % 3]
        elif direction == "outbound":
            caller, called = ext, number
        else:
            caller, called = ext, EXTENSIONS[int(rand() * len(EXTENSIONS))]
        answered = status == "answered"
        ivr = int(5 + rand() * 55) if direction == "inbound" else 0
        wait = int(rng.expovariate(1 / 25)) if direction == "inbound" and status != "completed" else 0
        ring = int(3 + rand() * 27) if status in ("answered", "missed", "transferred") else 0
        talk = min(int(rng.lognormvariate(4.8, 0.9)), 5400) if answered or status == "transferred" else 0
        hold = int(10 + rand() * 290) if answered and rand() < 0.1 else 0
        total = ivr + wait + ring + talk
        cause = pick_missed() if status == "missed" else ""
        modules = pick_entry() if direction == "inbound" else "[]"
        charge = (talk // 60 + 1) * 5000 if answered and "bill" in modules else 0
        recorded = answered and rand() < 0.45
        recording = (time.strftime("/var/spool/fsapp/recordings/%Y/%m/%d/", time.gmtime(start)) + uuid + ".wav"
                     if recorded else "")
        q1 = _quality(rng) if answered and rand() < 0.92 else (None, None, None, None)
        q2 = _quality(rng) if q1[0] is not None else (None, None, None, None)
        with_agent = ext if status in ("answered", "missed", "transferred") or direction != "inbound" else ""
        row = (
            uuid, _iso(start), _iso(start + ivr + wait + ring) if answered else None, _iso(start + total),
            direction, caller, cname if direction == "inbound" else "", called, with_agent, status, total, talk,
            int(total > TOO_LONG), cid, cname, ctype, modules,
            "caller_id" if known and rand() < 0.6 else "pin" if known else "",
            "ok" if known else "", charge, recording, int(recorded and rand() < 0.03),
            MISSED_HANGUP[cause] if cause else CAUSES.get(status, "NORMAL_CLEARING"), with_agent,
            "main" if direction == "inbound" else "", "fs1", "left" if recorded else "", cause, ring, wait, hold,
            ("caller" if rand() < 0.55 else "callee") if answered else "caller" if status == "abandoned" else "",
            *q1, *q2, 1 + (ring > 0) + (status == "transferred"), 1,
            QUEUES[int(rand() ** 2 * len(QUEUES))] if direction == "inbound" and status not in ("completed", "rejected")
            else "",
        )
        yield row, (_analysis(rng, uuid, recording, start + total, talk, hold, q1[0]) if recorded else None)


def _analysis(rng: random.Random, uuid: str, recording: str, ended: float, talk: int, hold: int,
              mos: float | None) -> tuple[Any, ...]:
    share = round(rng.uniform(0.2, 0.7), 3)
    silence = round(rng.uniform(0.05, 0.35), 3)
    longest = round(rng.expovariate(1 / 4), 1)
    flags = [f for f, p in zip(FLAG_NAMES, (0.04, 0.03, 0.05, 0.02, 0.02), strict=True) if rng.random() < p]
    if longest > 15 and "long_silence" not in flags:
        flags.insert(0, "long_silence")
    return (
        uuid, "done", recording, "left", ended + 5, ended + 60, float(talk), round(talk * share, 1), share,
        round(talk * (1 - share - silence), 1), round(1 - share - silence, 3), round(talk * silence, 1), silence,
        longest, int(longest > 8), round(rng.uniform(0, 10), 1), rng.randrange(0, 12), mos, float(hold),
        ",".join(flags),
    )


def fill_url(url: str, n: int, seed: int = 7) -> tuple[Store, Made]:
    """A new journal at ``url`` with ``n`` generated calls: loaded into the schema before the
    journal's indexes (migration 11), which the store's migration then builds over the loaded
    rows, as on a site upgraded with a year of calls (far faster than keeping twenty indexes
    up to date row by row). The store, and what was made (``migrate_seconds`` included)."""
    full = storemod.MIGRATIONS
    cut = next(i for i, m in enumerate(full) if isinstance(m, str) and "calls_by_started_at" in m)
    storemod.MIGRATIONS = full[:cut]
    try:
        store = open_store(url)
        made = fill(store, n, seed, analyse=False)
    finally:
        storemod.MIGRATIONS = full
    t0 = time.perf_counter()
    store.migrate()
    store.refresh_statistics()
    made.migrate_seconds = time.perf_counter() - t0
    made.seconds += made.migrate_seconds
    return store, made


def fill(store: Store, n: int, seed: int = 7, *, analyse: bool = True) -> Made:
    """Put ``n`` generated calls (and their analysis rows) into ``store``; ANALYZE after."""
    made = Made()
    started = time.perf_counter()
    pending: list[tuple[Any, ...]] = []
    counts: dict[str, int] = {}

    def calls() -> Iterator[tuple[Any, ...]]:
        for row, analysis in generate(n, seed, made=made):
            counts[row[9]] = counts.get(row[9], 0) + 1
            if analysis is not None:
                pending.append(analysis)
            yield row

    made.rows = store.load_calls(CALL_COLUMNS, calls())
    made.analysed = store.load_analysis(ANALYSIS_COLUMNS, pending)
    if analyse:
        store.refresh_statistics()
    made.seconds = time.perf_counter() - started
    made.counts = dict(sorted(counts.items()))
    return made


def pg_database(admin_url: str, name: str, *, drop: bool = False, keep: bool = False) -> str:
    """A fresh database ``name`` on the server of ``admin_url`` (dropped first if there); its URL.
    ``drop``: only drop it. ``keep``: one already there is kept as it is. '' when none was made."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        there = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not (keep and there):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop:
                conn.execute(f'CREATE DATABASE "{name}"')
    return "" if drop or (keep and there) else admin_url.rpartition("/")[0] + "/" + name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=7)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="storage URL to fill (sqlite:///FILE or postgresql://...)")
    where.add_argument("--postgres", action="store_true",
                       help="database fsapp_bench_web on the server of $FSAPP_TEST_PG_URL (made afresh)")
    a = p.parse_args(argv)
    if a.postgres:
        admin = os.environ.get("FSAPP_TEST_PG_URL", "")
        if not admin:
            p.error("--postgres needs FSAPP_TEST_PG_URL (a PostgreSQL server's URL)")
        url = pg_database(admin, "fsapp_bench_web")
    else:
        url = a.url
    store, made = fill_url(url, a.rows, a.seed)
    store.close()
    print(json.dumps({"url": url.rsplit("@", 1)[-1], "rows": made.rows, "analysed": made.analysed,
                      "seconds": round(made.seconds, 1), "index_seconds": round(made.migrate_seconds, 1),
                      "statuses": made.counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
