"""How fast the web console answers over a large journal (made by ``bench/web_gen.py``).

Through the real Flask app (``fsapp.web.app.create_app``, its test client, logged in as
a viewer), for each single filter of the journal and each sort column
(``SORTABLE_CALL_FIELDS``) in both directions, the first page and a deep keyset page
(``after`` a row from the middle of the filtered rows); then the statistics page over a
month, and the CSV export of every row, streamed, with the process's resident memory
sampled as it goes (and Python's traced allocations over one month's export). Server
time is the time to produce the whole response body; beside it, the store's query alone. Last, what a daemon's journal
writes (start, then finish, of one call) cost on a table that size.

    python bench/web_bench.py --backend sqlite --rows 100000
    python bench/web_bench.py --backend postgresql --rows 1000000   # needs $FSAPP_TEST_PG_URL

Results go to ``bench/web_results.json`` (one entry per backend, kept across runs) and a
table is printed: the worst p95 (ms) of each filter x sort, both directions and pages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import web_gen  # noqa: E402

from fsapp import config as configmod  # noqa: E402
from fsapp.store import SORTABLE_CALL_FIELDS, Store, open_store  # noqa: E402
from fsapp.web import views  # noqa: E402
from fsapp.web.app import create_app  # noqa: E402
from fsapp.web.auth import hash_password  # noqa: E402

RESULTS = Path(__file__).with_name("web_results.json")
PASSWORD = "bench password 1"
SECRET_ENV = "FSAPP_WEB_BENCH_SECRET"
MONTH = ("2026-06-01", "2026-06-30")
PAGE_TARGET_MS, STATS_TARGET_MS = 100.0, 300.0


def filter_cases(seed: int) -> list[tuple[str, dict[str, str]]]:
    """(label, the journal's query string) for each single filter, values picked from the generated data."""
    rng = random.Random(seed)
    people = web_gen._customers(rng, 5000)  # the generator's own customers, in its order
    busiest, rare = people[0], people[-1]
    return [
        ("none", {}),
        ("period (month)", {"from": MONTH[0], "to": MONTH[1]}),
        ("status=missed", {"status": "missed"}),
        ("status=rejected (rare)", {"status": "rejected"}),
        ("missed_cause=busy", {"missed_cause": "busy"}),
        ("direction=local", {"direction": "local"}),
        ("extension=1025", {"extension": "1025"}),
        ("queue=vip", {"queue": "vip"}),
        (f"customer={busiest[0]} (busiest)", {"customer": busiest[0]}),
        (f"customer={rare[0]} (rare)", {"customer": rare[0]}),
        ("number (whole, 0912...)", {"number": "0" + busiest[1]}),
        ("number (last 7 digits)", {"number": rare[1][-7:]}),
        ("too_long", {"too_long": "1"}),
        ("has recording", {"recording": "1"}),
        ("min_mos=4.4", {"min_mos": "4.4"}),
        ("flag=long_silence", {"flag": "long_silence"}),
    ]


def web_filters() -> set[str]:
    return set(views.FILTER_KEYS)


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def timed(fn: Callable[[], Any], repeat: int, slow_ms: float = 1500.0) -> tuple[list[float], Any]:
    """Wall times (ms) of ``fn`` over ``repeat`` runs after a warm-up (fewer when one run is slower than
    ``slow_ms``, the warm-up's alone when it is: a case that slow is slow however often it is run);
    the last result."""
    t0 = time.perf_counter()
    out = fn()
    warm = (time.perf_counter() - t0) * 1000
    if warm > slow_ms:
        return [warm], out
    times: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
        if times[-1] > slow_ms:
            break
    return times, out


def make_app(url: str, tmp: Path, store: Store) -> Any:
    os.environ[SECRET_ENV] = "bench-secret-" + "x" * 20
    cfg = configmod.from_dict({"storage": {"url": url}, "web": {"secret_env": SECRET_ENV},
                               "journal": {"timezone": "Asia/Tehran", "record_dir": str(tmp)}},
                              base=tmp, check_files=False)
    store.web_user_set("bench", "viewer", hash_password(PASSWORD))
    return create_app(cfg, store)


def login(client: Any) -> None:
    import re

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, "no CSRF field on the login page"
    r = client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": token.group(1)})
    assert r.status_code == 302, f"login failed: {r.status_code}"


def store_filters(app: Any, query: dict[str, str]) -> dict[str, Any]:
    """The store's filters the console makes of a query string."""
    with app.test_request_context("/?" + urlencode(query)):
        filters, _sort, _desc, problems = views.search_filters(query)
    assert not problems, problems
    return filters


def deep_row(app: Any, store: Store, query: dict[str, str]) -> str:
    """A row from the middle of the filtered rows (by start time): the ``after`` of a deep page."""
    filters = store_filters(app, query)
    middle = dict(filters)
    middle["date_from"] = max(middle.get("date_from") or "", "2026-07-01T00:00:00Z")
    rows = store.page_calls(order="started_at", limit=1, **middle) or store.page_calls(
        order="started_at", limit=1, **filters)
    return rows[0]["uuid"] if rows else ""


def bench_pages(app: Any, client: Any, store: Store, seed: int, repeat: int, only: list[str],
                save: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    known = web_filters()
    results = []
    cases = filter_cases(seed)
    if only:  # in the order asked
        cases = [c for o in only for c in cases if c[0].startswith(o)]
    for label, query in cases:
        if not set(query) <= known:
            print(f"  {label}: not a filter of this console ({', '.join(sorted(set(query) - known))}); skipped")
            continue
        after = deep_row(app, store, query)
        filters = store_filters(app, query)
        for sort in SORTABLE_CALL_FIELDS:
            for desc in ("", "1"):
                for page, extra in (("first", {}), ("deep", {"after": after} if after else None)):
                    if extra is None:
                        continue
                    url = "/?" + urlencode({**query, "sort": sort, "desc": desc, "search": "1", **extra})

                    def get(url: str = url) -> int:
                        r = client.get(url)
                        body = r.get_data()
                        assert r.status_code == 200, f"{url}: {r.status_code} {body[:300]!r}"
                        return body.count(b'data-uuid="')

                    def query_only(sort: str = sort, desc: str = desc, after: str = extra.get("after", ""),
                                   filters: dict[str, Any] = filters) -> None:
                        store.page_calls(order=sort, descending=bool(desc), after=after, limit=51, **filters)

                    times, rows = timed(get, repeat)
                    query_times, _ = timed(query_only, repeat)
                    results.append({"filter": label, "query": query, "sort": sort, "desc": bool(desc),
                                    "page": page, "rows": rows, "runs": len(times),
                                    "p50_ms": round(percentile(times, 50), 1),
                                    "p95_ms": round(percentile(times, 95), 1),
                                    "query_p95_ms": round(percentile(query_times, 95), 1)})
        worst = max(r["p95_ms"] for r in results if r["filter"] == label)
        print(f"  {label}: worst p95 {worst:.0f} ms", flush=True)
        if save is not None:
            save({"pages": [r for r in results if r["filter"] == label]})
    return results


def bench_stats(client: Any, repeat: int) -> dict[str, Any]:
    url = "/stats?" + urlencode({"from": MONTH[0], "to": MONTH[1], "search": "1"})

    def get() -> int:
        r = client.get(url)
        body = r.get_data()
        assert r.status_code == 200, f"{url}: {r.status_code} {body[:300]!r}"
        return len(body)

    times, size = timed(get, repeat)
    return {"url": url, "bytes": size, "runs": len(times), "p50_ms": round(percentile(times, 50), 1),
            "p95_ms": round(percentile(times, 95), 1)}


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stream(client: Any, url: str, every: int, sample: Callable[[], int]) -> tuple[int, float, list[tuple[int, int]]]:
    """Read the streamed export at ``url``: rows, seconds, and (rows so far, ``sample()``) every ``every`` rows."""
    t0 = time.perf_counter()
    r = client.get(url, buffered=False)
    assert r.status_code == 200, f"{url}: {r.status_code}"
    lines, samples, next_at = 0, [(0, sample())], every
    for chunk in r.response:
        lines += chunk.count(b"\n")
        if lines >= next_at:
            samples.append((lines, sample()))
            next_at += every
    r.close()
    seconds = time.perf_counter() - t0
    samples.append((lines, sample()))
    return lines - 1, seconds, samples  # the header line is no row


def bench_export(client: Any, rows: int) -> dict[str, Any]:
    every = max(1000, rows // 20)
    n, seconds, rss = stream(client, "/calls.csv", every, rss_kib)
    month_url = "/calls.csv?" + urlencode({"from": MONTH[0], "to": MONTH[1]})
    tracemalloc.start()
    try:
        m, m_seconds, traced = stream(client, month_url, 5000, lambda: tracemalloc.get_traced_memory()[0] // 1024)
        traced_peak = tracemalloc.get_traced_memory()[1] // 1024
    finally:
        tracemalloc.stop()
    return {"rows": n, "seconds": round(seconds, 1), "rows_per_s": round(n / seconds),
            "rss_kib": rss, "rss_growth_kib": rss[-1][1] - rss[1][1] if len(rss) > 2 else 0,
            "month_rows": m, "month_seconds_traced": round(m_seconds, 1),
            "month_traced_kib": traced, "month_traced_peak_kib": traced_peak}


def bench_writes(store: Store, n: int = 2000) -> dict[str, Any]:
    """The daemon's two journal writes per call (start, finish) on the big table: calls per second."""
    rows = []
    for row, _analysis in web_gen.generate(n, seed=99, customers=50):
        r = dict(zip(web_gen.CALL_COLUMNS, row, strict=True))
        r["uuid"] = "w" + r["uuid"][1:]
        rows.append(r)
    t0 = time.perf_counter()
    for r in rows:
        store.call_started({**r, "status": "active", "answered_at": None, "ended_at": None, "modules": []})
        store.call_finished(r["uuid"], {**r, "modules": json.loads(r["modules"])})
    seconds = time.perf_counter() - t0
    return {"calls": n, "seconds": round(seconds, 2), "calls_per_s": round(n / seconds),
            "ms_per_call": round(seconds / n * 1000, 2)}


def table(pages: list[dict[str, Any]]) -> str:
    sorts = list(SORTABLE_CALL_FIELDS)
    short = {s: s.replace("_seconds", "").replace("customer_name", "cust")[:8] for s in sorts}
    lines = [f"{'filter (worst p95 ms, both ways, both pages)':44}" + "".join(f"{short[s]:>9}" for s in sorts)]
    for label in dict.fromkeys(p["filter"] for p in pages):
        cells = []
        for s in sorts:
            worst = max(p["p95_ms"] for p in pages if p["filter"] == label and p["sort"] == s)
            cells.append(f"{worst:>8.0f}{'*' if worst >= PAGE_TARGET_MS else ' '}")
        lines.append(f"{label[:44]:44}" + "".join(cells))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "load_average": [round(x, 2) for x in load],
            "note": (f"{os.cpu_count()} cores; load average {load[0]:.1f} at the start: " + (
                "nothing else running" if load[0] < 2.5 else "shared with other work running at the same time"))}


PARTS = ("pages", "stats", "export", "writes")


def run(a: argparse.Namespace) -> dict[str, Any]:
    """One backend's run: the parts asked for (``a.parts``), pages of the filters asked for (``a.only``)."""
    out: dict[str, Any] = {"backend": a.backend, "rows": a.rows, "repeat": a.repeat}
    with tempfile.TemporaryDirectory(prefix="fsapp-web-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with database(a.backend, a.reuse, tmp) as (url, fresh):
            if not fresh:
                store = open_store(url)
            else:
                print(f"{a.backend}: generating {a.rows:,} calls ...", flush=True)
                store, made = web_gen.fill_url(url, a.rows, a.seed)
                print(f"{a.backend}: {made.rows:,} calls ({made.analysed:,} analysed) in {made.seconds:.0f} s, "
                      f"of which {made.migrate_seconds:.0f} s building the journal's indexes", flush=True)
                out.update(generated_seconds=round(made.seconds, 1), index_build_seconds=round(made.migrate_seconds, 1))
            app = make_app(url, tmp, store)
            client = app.test_client()
            login(client)
            if "pages" in a.parts:
                print(f"{a.backend}: journal pages", flush=True)
                out["pages"] = bench_pages(app, client, store, a.seed, a.repeat, a.only,
                                           lambda part: save(a.backend, {**out, **part, "machine": machine()}))
            if "stats" in a.parts:
                out["stats"] = bench_stats(client, a.repeat)
            if "export" in a.parts:
                print(f"{a.backend}: CSV export", flush=True)
                out["export"] = bench_export(client, a.rows)
            if "writes" in a.parts:
                out["writes"] = bench_writes(store)
            store.close()
    out["machine"] = machine()
    return out


def merged(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """An earlier run's results with this run's in place of the same parts (pages: of the same filters)."""
    if saved.get("rows") != new["rows"]:
        saved = {}
    pages = [p for p in saved.get("pages", []) if p["filter"] not in {q["filter"] for q in new.get("pages", [])}]
    out = {**saved, **new, "pages": pages + new.get("pages", [])}
    out["pages_over_target"] = [p for p in out["pages"] if p["p95_ms"] >= PAGE_TARGET_MS]
    return out


class database:
    """The database the run fills: a SQLite file in ``tmp`` (or ``reuse``), or fsapp_bench_web, dropped after."""

    def __init__(self, backend: str, reuse: str, tmp: Path) -> None:
        self.backend, self.reuse, self.tmp = backend, reuse, tmp
        self.admin = os.environ.get("FSAPP_TEST_PG_URL", "")

    def __enter__(self) -> tuple[str, bool]:
        """Its URL, and whether it is new (to be generated)."""
        if self.backend == "sqlite":
            path = Path(self.reuse) if self.reuse else self.tmp / "journal.db"
            return f"sqlite:///{path}", not path.exists()
        if not self.admin:
            raise SystemExit("--backend postgresql needs FSAPP_TEST_PG_URL (a PostgreSQL server's URL)")
        name = self.reuse or "fsapp_bench_web"
        made = web_gen.pg_database(self.admin, name, keep=bool(self.reuse))
        return made or self.admin.rpartition("/")[0] + "/" + name, bool(made)

    def __exit__(self, *exc: Any) -> None:
        if self.backend == "postgresql" and not self.reuse:
            web_gen.pg_database(self.admin, "fsapp_bench_web", drop=True)


def report(r: dict[str, Any]) -> Iterator[str]:
    m = r["machine"]
    yield f"\n{r['backend']}: {r['rows']:,} calls; {m['cpus']} CPUs, load average {m['load_average']}"
    if r.get("pages"):
        yield table(r["pages"])
        over = r["pages_over_target"]
        yield (f"{len(r['pages']) - len(over)} of {len(r['pages'])} page cases under {PAGE_TARGET_MS:.0f} ms at p95"
               + ("; over: " + ", ".join(sorted({p['filter'] for p in over})) if over else ""))
    if r.get("stats"):
        s = r["stats"]
        yield f"statistics page, one month: p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms (target {STATS_TARGET_MS:.0f})"
    if r.get("export"):
        e = r["export"]
        yield (f"CSV export: {e['rows']:,} rows in {e['seconds']} s ({e['rows_per_s']:,} rows/s); resident memory "
               f"{e['rss_kib'][1][1] // 1024} MiB after the first rows, {e['rss_kib'][-1][1] // 1024} MiB at the end;"
               f" one month ({e['month_rows']:,} rows) traced Python memory peak {e['month_traced_peak_kib']:,} KiB")
    if r.get("writes"):
        w = r["writes"]
        yield (f"daemon writes on this table: {w['calls_per_s']:,} calls/s ({w['ms_per_call']} ms per call,"
               " start + finish)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per case, after a warm-up")
    p.add_argument("--reuse", default="", help="a journal to keep between runs (generated when empty):"
                   " a SQLite file, or a PostgreSQL database name")
    p.add_argument("--only", default="", help="pages of these filters only (comma-separated label prefixes)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"what to measure (of {', '.join(PARTS)})")
    a = p.parse_args(argv)
    a.only = [o for o in a.only.split(",") if o]
    a.parts = [x for x in a.parts.split(",") if x]
    if set(a.parts) - set(PARTS):
        p.error(f"--parts: unknown {', '.join(sorted(set(a.parts) - set(PARTS)))} (known: {', '.join(PARTS)})")
    for line in report(save(a.backend, run(a))):
        print(line)
    return 0


def save(backend: str, result: dict[str, Any]) -> dict[str, Any]:
    """Merge ``result`` into the backend's saved results (``RESULTS``); what is saved now."""
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[backend] = merged(saved.get(backend, {}), result)
    RESULTS.write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n")
    return saved[backend]


if __name__ == "__main__":
    raise SystemExit(main())
