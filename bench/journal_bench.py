"""How fast `fsapp calls` lists a busy journal.

Fills a fresh SQLite journal with realistic rows (default 10,000 over 60 days: mixed
statuses, customers, directions, some too long) through the store, then times the
listing with filters, both as `fsapp calls` in-process (output to a null sink) and
as the store query alone. Prints median wall times over several repetitions, the
query plan SQLite chose for each filter, and the machine.

    python bench/journal_bench.py [--rows 10000] [--days 60] [--repeat 7]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsapp import cli  # noqa: E402
from fsapp.store import Store, now_iso, open_store  # noqa: E402

TOO_LONG = 600
STATUSES = [("answered", 55), ("missed", 15), ("abandoned", 12), ("transferred", 8), ("completed", 7), ("failed", 3)]
ENTRIES = [["main"], ["main", "club"], ["main", "club", "balance"], ["main", "club", "bill"], ["club", "expert"]]


def _mobile(rng: random.Random) -> str:
    return f"09{rng.choice(['12', '13', '19', '35', '36', '01', '02'])}{rng.randrange(10_000_000):07}"


def make_rows(n: int, days: int, seed: int = 4) -> list[dict[str, Any]]:
    """``n`` journal rows spread over the last ``days`` days, as the daemon writes them."""
    rng = random.Random(seed)
    customers = [(f"C{i:05}", _mobile(rng), f"Customer {i}", rng.choice(["active", "prospect", "vip", "problem"]))
                 for i in range(800)]
    weights = [1 / (i + 1) for i in range(len(customers))]  # a few customers call a lot
    statuses, status_weights = zip(*STATUSES, strict=True)
    today = dt.date.today()
    rows = []
    for i in range(n):
        day = today - dt.timedelta(days=rng.randrange(days))
        at = dt.datetime.combine(day, dt.time(rng.choice(range(8, 21)), rng.randrange(60), rng.randrange(60)))
        start = at.timestamp()
        known = rng.random() < 0.75
        cid, phone, name, ctype = rng.choices(customers, weights)[0] if known else ("", _mobile(rng), "", "")
        outbound = rng.random() < 0.2
        status = rng.choices(statuses, status_weights)[0]
        ext = f"10{rng.randrange(1, 31):02}"
        ivr = rng.randint(5, 60)
        talk = min(int(rng.lognormvariate(4.8, 0.9)), 5400) if status == "answered" else 0
        ring = rng.randint(3, 30) if status in ("answered", "missed") else 0
        modules = rng.choice(ENTRIES) if not outbound else []
        charge = (talk // 60 + 1) * 5000 if status == "answered" and "bill" in modules else 0
        total = ivr + ring + talk
        recorded = rng.random() < 0.3
        rows.append({
            "uuid": f"{i:08x}-bench-{rng.getrandbits(48):012x}",
            "started_at": now_iso(start),
            "answered_at": now_iso(start + ivr + ring) if status == "answered" else None,
            "ended_at": now_iso(start + total),
            "direction": "outbound" if outbound else "inbound",
            "caller": ext if outbound else phone,
            "caller_name": "",
            "called": phone if outbound else "7000",
            "extension": ext if status == "answered" else "",
            "status": status,
            "total_seconds": total,
            "talk_seconds": talk,
            "too_long": talk > TOO_LONG,
            "customer_id": cid,
            "customer_name": name,
            "customer_type": ctype,
            "modules": modules,
            "auth_method": "phone" if "club" in modules else "",
            "auth_result": ("ok" if cid else "unknown_phone") if "club" in modules else "",
            "charge": charge,
            "recording": f"/var/lib/freeswitch/recordings/fsapp/{day:%Y/%m/%d}/{i}.wav" if recorded else "",
            "hangup_cause": "NORMAL_CLEARING" if status != "missed" else rng.choice(["NO_ANSWER", "USER_BUSY"]),
            "final_destination": "hangup:NORMAL_CLEARING",
            "entry_module": modules[0] if modules else "",
            "daemon": "bench:1",
        })
    return rows


def fill(store: Store, rows: list[dict[str, Any]]) -> float:
    """Write every row as the daemon does (active at start, finished at the end); seconds taken."""
    t0 = time.perf_counter()
    for row in rows:
        store.call_started({**row, "status": "active", "answered_at": None, "ended_at": None})
        store.call_finished(row["uuid"], row)
    return time.perf_counter() - t0


def median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and minimum wall time of ``fn`` in milliseconds, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


@contextlib.contextmanager
def null_stdout() -> Iterator[None]:
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        yield


def query_plan(store: Store, kwargs: dict[str, Any]) -> str:
    """The plan SQLite picks for the SELECT ``list_calls(**kwargs)`` runs."""
    seen: list[tuple[str, Any]] = []
    real = store.db.query

    def spy(sql: str, params: Any = ()) -> list[dict[str, Any]]:
        seen.append((sql, params))
        return real(sql, params)

    store.db.query = spy  # type: ignore[method-assign]
    try:
        store.list_calls(**kwargs)
    finally:
        store.db.query = real  # type: ignore[method-assign]
    sql, params = seen[-1]
    plan = store.db.conn.execute("EXPLAIN QUERY PLAN " + sql, list(params)).fetchall()
    return "; ".join(str(r[3]) for r in plan)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)

    rows = make_rows(args.rows, args.days)
    with tempfile.TemporaryDirectory(prefix="fsapp-journal-bench-") as tmp:
        db = Path(tmp) / "journal.db"
        cfg = Path(tmp) / "fsapp.toml"
        cfg.write_text(f'[storage]\nurl = "sqlite:///{db}"\n\n[journal]\ntoo_long_seconds = {TOO_LONG}\n',
                       encoding="utf-8")
        store = open_store(f"sqlite:///{db}")
        fill_s = fill(store, rows)

        # filters picked from the data so each returns a realistic slice
        counts = Counter(r["customer_id"] for r in rows if r["customer_id"])
        ranked = [c for c, _ in counts.most_common()]
        busiest, typical = ranked[0], ranked[len(ranked) // 2]
        days = sorted({r["started_at"][:10] for r in rows})
        week_from, week_to = days[len(days) // 2], days[min(len(days) - 1, len(days) // 2 + 6)]
        number = next(r["caller"] for r in rows if r["direction"] == "inbound")[-7:]
        cases: list[tuple[str, list[str], dict[str, Any]]] = [
            ("everything (table)", [], {}),
            ("everything (json)", ["--format", "json"], {}),
            ("everything (csv)", ["--format", "csv"], {}),
            (f"--customer {busiest} (busiest)", ["--customer", busiest], {"customer": busiest}),
            (f"--customer {typical}", ["--customer", typical], {"customer": typical}),
            (f"--status answered --from {week_from} --to {week_to}",
             ["--status", "answered", "--from", week_from, "--to", week_to],
             {"status": "answered", "date_from": week_from, "date_to": week_to}),
            (f"--from {week_from} --to {week_to}", ["--from", week_from, "--to", week_to],
             {"date_from": week_from, "date_to": week_to}),
            (f"--number {number}", ["--number", number], {"number": number}),
            ("--too-long", ["--too-long"], {"too_long": True}),
            ("--direction outbound --status missed", ["--direction", "outbound", "--status", "missed"],
             {"direction": "outbound", "status": "missed"}),
            ("--sort talk_seconds --desc --limit 50", ["--sort", "talk_seconds", "--desc", "--limit", "50"],
             {"order": "talk_seconds", "descending": True, "limit": 50}),
            ("--group-by date", ["--group-by", "date"], {}),
            ("--group-by date --format json", ["--group-by", "date", "--format", "json"], {}),
        ]

        print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
              f"{platform.processor() or 'cpu unknown'}")
        print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
        print(f"journal: {args.rows} rows over {args.days} days, written in {fill_s:.2f} s "
              f"({args.rows / fill_s:,.0f} calls/s, start + finish each); medians of {args.repeat} runs\n")
        head = f"{'listing':58} {'rows':>6} {'store ms':>9} {'fsapp calls ms':>15}"
        print(head)
        print("-" * len(head))
        worst = 0.0
        plans: list[tuple[str, str]] = []
        for label, argv_extra, kwargs in cases:
            if "--group-by" in argv_extra:  # the database counts per day; rows: the calls counted
                fetch: Callable[..., list[dict[str, Any]]] = store.calls_by_day
                n = sum(d["calls"] for d in fetch(**kwargs))
            else:
                fetch = store.list_calls
                n = len(fetch(**kwargs))
            store_ms, _ = median_ms(lambda kw=kwargs, f=fetch: f(**kw), args.repeat)

            def run_cli(extra: list[str] = argv_extra) -> None:
                with null_stdout():
                    code = cli.main(["--log-level", "warning", "calls", "-c", str(cfg), *extra])
                if code != 0:
                    raise SystemExit(f"fsapp calls {' '.join(extra)} exited {code}")

            cli_ms, _ = median_ms(run_cli, args.repeat)
            worst = max(worst, cli_ms)
            print(f"{label:58} {n:>6} {store_ms:>9.1f} {cli_ms:>15.1f}")
            if kwargs:
                plans.append((label, query_plan(store, kwargs)))
        print("\nquery plans:")
        for label, plan in plans:
            print(f"  {label}: {plan}")
        print(f"\nslowest `fsapp calls`: {worst:.0f} ms ({'under' if worst < 1000 else 'OVER'} one second)")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
