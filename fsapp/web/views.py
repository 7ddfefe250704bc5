"""The console's pages: login, the journal (filters, sort, keyset pages, CSV), a call, its recording."""

from __future__ import annotations

import datetime as dt
import functools
import mimetypes
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)

from fsapp import digits, instants, journal, phones
from fsapp import log as logmod
from fsapp.analysis import svg
from fsapp.analysis.flags import NAMES as FLAG_NAMES
from fsapp.cdr import classify
from fsapp.store import SORTABLE_CALL_FIELDS
from fsapp.web import auth, i18n
from fsapp.web.context import current_config, current_store

views = Blueprint("views", __name__)
log = logmod.get("fsapp.web")

PAGE = 50
EXPORT_PAGE = 500
FILTER_KEYS = ("from", "to", "status", "missed_cause", "direction", "extension", "queue", "customer", "number",
               "too_long", "recording", "min_mos", "max_mos", "flag", "text", "group", "sort", "desc")
# The journal's columns after its date and time: those of `fsapp calls`, and what the CDR and the analysis add.
COLUMNS = ("status", "direction", "caller", "called", "extension", "queue", "total_seconds", "wait_seconds",
           "ring_seconds", "talk_seconds", "hold_seconds", "too_long", "missed_cause", "hangup_by", "mos",
           "analysis_flags", "recording", "customer_name", "customer_type", "charge")


def need(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The view answers 403 to a user whose role is below ``role``."""
    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not auth.may(g.user["role"], role):
                abort(403, f"this needs the {role} role")
            return view(*args, **kwargs)
        return guarded
    return wrap


# ------------------------------------------------------------------ login


@views.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = ""
    if request.method == "POST":
        error = _try_login(request.form.get("name", ""), request.form.get("password", ""))
        if not error:
            return redirect(url_for("views.calls"))
    status = 429 if error == "too_many" else 401 if error else 200
    return render_template("login.html", error=error), status


def _try_login(name: str, password: str) -> str:
    """'' when logged in, else the label key of why not; counts failures per user and per address."""
    cfg, store, now = current_config(), current_store(), time.time()
    window = cfg.web.login_window_seconds
    keys = [f"user:{name}", f"addr:{request.remote_addr or ''}"]
    if any(store.web_login_failures(k, now - window) >= cfg.web.login_max_failures for k in keys):
        log.warning("web_login_refused", user=name, address=request.remote_addr, reason="rate_limited")
        return "too_many"
    user = store.web_user(name)
    # an unknown name costs the same scrypt as a known one: the answer's time tells nothing
    if not auth.check_password(password, user["password_hash"] if user else auth.DUMMY_HASH) or user is None:
        store.web_login_failed(keys, now, window)
        log.warning("web_login_failed", user=name, address=request.remote_addr)
        return "bad_login"
    store.web_login_clear(keys[0])
    lang = session.get("lang")
    session.clear()
    session.update(user=name, password=auth.password_mark(user["password_hash"]), csrf=auth.new_token(),
                   **({"lang": lang} if lang else {}))
    log.info("web_login", user=name, address=request.remote_addr)
    return ""


@views.route("/logout", methods=["POST"])
def logout() -> Any:
    session.clear()
    return redirect(url_for("views.login"))


# ------------------------------------------------------------------ journal


def remembered_search() -> dict[str, str]:
    """The search in the query string; none given: the last one remembered in the session."""
    if request.args.get("reset"):
        session.pop("search", None)
        return {}
    given = {k: request.args[k] for k in FILTER_KEYS if request.args.get(k)}
    if given or request.args.get("search"):
        session["search"] = given
        return given
    return dict(session.get("search", {}))


def search_filters(search: dict[str, str]) -> tuple[dict[str, Any], str, bool, list[str]]:
    """The store's filters, sort column and direction from a search; the problems with it."""
    problems: list[str] = []
    f = {**_period(search, problems), **_choices(search, problems), **_measures(search, problems)}
    if search.get("group", "") not in ("", "day"):
        problems.append(f"group: only by day, not {search['group']!r}")
    f["customer"] = search.get("customer", "").strip()
    f["number"] = phones.search_key(search.get("number", "").strip(), current_config().crm.region)
    f["extension"] = digits.to_ascii(search.get("extension", "").strip())
    f["queue"] = search.get("queue", "").strip()
    f["text"] = search.get("text", "").strip()
    f["too_long"] = bool(search.get("too_long"))
    sort = search.get("sort") or "started_at"
    if sort not in SORTABLE_CALL_FIELDS:
        problems.append(f"sort: cannot sort by {sort!r}")
        sort = "started_at"
    descending = search.get("desc", "1" if "sort" not in search else "") == "1"
    return f, sort, descending, problems


def _period(search: dict[str, str], problems: list[str]) -> dict[str, str]:
    """``from`` and ``to`` as the stored UTC instants of those days' bounds in ``[journal] timezone``."""
    f = {}
    tz = current_config().journal.zone
    for key, dest, days in (("from", "date_from", 0), ("to", "date_to", 1)):  # to: up to the next day's start
        if search.get(key):
            try:
                f[dest] = instants.day_start(i18n.parse_date(search[key]) + dt.timedelta(days=days), tz)
            except (ValueError, OverflowError):
                problems.append(f"{key}: not a date (YYYY-MM-DD, or Solar Hijri YYYY/MM/DD): {search[key]!r}")
    return f


def _choices(search: dict[str, str], problems: list[str]) -> dict[str, Any]:
    """The filters whose value is one of a list: status, direction, missed cause, flag, recording."""
    f: dict[str, Any] = {}
    for key, allowed in (("status", journal.STATUSES), ("direction", journal.DIRECTIONS),
                         ("missed_cause", journal.MISSED_CAUSES), ("flag", FLAG_NAMES)):
        if search.get(key):
            if search[key] in allowed:
                f[key] = search[key]
            else:
                problems.append(f"{key}: unknown {key.replace('_', ' ')} {search[key]!r} (one of {', '.join(allowed)})")
    if search.get("recording", "") not in ("", "1", "0"):
        problems.append(f"recording: 1 (with a recording) or 0 (without), not {search['recording']!r}")
    elif search.get("recording"):
        f["has_recording"] = search["recording"] == "1"
    return f


def _measures(search: dict[str, str], problems: list[str]) -> dict[str, float]:
    f = {}
    for key in ("min_mos", "max_mos"):
        if search.get(key):
            value = _mos(search[key])
            if value is None:
                problems.append(f"{key}: not a MOS between 1 and 5: {search[key]!r}")
            else:
                f[key] = value
    return f


def _mos(text: str) -> float | None:
    try:
        value = float(digits.to_ascii(text.strip()))
    except ValueError:
        return None
    return value if 1.0 <= value <= 5.0 else None


def _days(rows: list[dict[str, Any]], grouped: bool) -> list[dict[str, Any]]:
    """The page's rows in runs of one local day (``[journal] timezone``), each with its calls,
    answered, missed and talk counted over those rows; one run of every row when not ``grouped``."""
    tz = current_config().journal.zone
    days: list[dict[str, Any]] = []
    for r in rows:
        local = instants.local(r["started_at"], tz) if grouped else None
        key = local.date() if local else None
        if not days or days[-1]["key"] != key:
            days.append({"key": key, "started_at": r["started_at"], "rows": [], "calls": 0, "answered": 0,
                         "missed": 0, "talk_seconds": 0})
        day = days[-1]
        day["rows"].append(r)
        day["calls"] += 1
        day["answered"] += r["status"] == "answered"
        day["missed"] += r["status"] == "missed"
        day["talk_seconds"] += int(r["talk_seconds"] or 0)
    return days


def _whole_days(days: list[dict[str, Any]], filters: dict[str, Any]) -> None:
    """Each day's header counts every call of that local day the filters match, not only the
    page's rows: one grouped count over the page's days (``Store.calls_by_day``)."""
    keys = [d["key"] for d in days if d["key"] is not None]
    if not keys:
        return
    clock = journal.Clock(current_config().journal.zone)
    lo = instants.day_start(min(keys), clock.tz)
    hi = instants.day_start(max(keys) + dt.timedelta(days=1), clock.tz)
    period = {**filters, "date_from": max(filters.get("date_from") or lo, lo),
              "date_to": min(filters.get("date_to") or hi, hi)}
    buckets = current_store().calls_by_day(width=journal.bucket_width(clock), **period)
    totals = {g["date"]: g for g in journal.by_day(buckets, clock)}
    for d in days:
        whole = totals.get(d["key"].isoformat()) if d["key"] is not None else None
        if whole is not None:
            d.update({k: whole[k] for k in ("calls", "answered", "missed", "talk_seconds")})


class RowLinks:
    """The links of a journal row (its call, its customer's calls, its customer's page), each built
    once around a marker and filled per row: url_for for every row and link costs a page some
    milliseconds. The values are quoted as Werkzeug quotes them (path segment, query value)."""

    MARK = "ROWLINKMARK"

    def __init__(self) -> None:
        self.call = self._filled(url_for("views.call", uuid=self.MARK), "!$&'()*+,/:;=@", quote)
        self.history = self._filled(url_for("views.calls", customer=self.MARK, search="1"), "!$'()*,/:;?@", quote_plus)
        self.customer = self._filled(url_for("customer.page", customer_id=self.MARK), "!$&'()*+,/:;=@", quote)

    def _filled(self, url: str, safe: str, quoting: Callable[..., str]) -> Callable[[str], str]:
        head, _, tail = url.partition(self.MARK)
        return lambda value: head + quoting(str(value), safe=safe) + tail


@views.route("/")
def calls() -> Any:
    search = remembered_search()
    filters, sort, descending, problems = search_filters(search)
    rows = current_store().page_calls(order=sort, descending=descending, after=request.args.get("after", ""),
                                      limit=PAGE + 1, **filters)
    more = len(rows) > PAGE
    rows = [{**r, "mos": journal.call_mos(r)} for r in rows[:PAGE]]
    next_after = rows[-1]["uuid"] if more else ""
    cfg = current_config()
    days = _days(rows, search.get("group") == "day")
    if search.get("group") == "day":
        _whole_days(days, filters)
    return render_template("calls.html", days=days, search=search, sort=sort,
                           descending=descending, problems=problems, next_after=next_after, columns=COLUMNS,
                           links=RowLinks(),
                           sortable=SORTABLE_CALL_FIELDS, statuses=journal.STATUSES,
                           directions=journal.DIRECTIONS, causes=journal.MISSED_CAUSES, flags=FLAG_NAMES,
                           poor_mos=cfg.analysis.min_mos or 3.5), 400 if problems else 200


@views.route("/calls.csv")
def export() -> Any:
    """Exactly the filtered rows, streamed page by page through the renderer's CSV rules."""
    filters, sort, descending, problems = search_filters({k: request.args[k] for k in FILTER_KEYS if k in request.args})
    if problems:
        abort(400, "; ".join(problems))
    store = current_store()

    def rows() -> Iterator[dict[str, Any]]:
        after = ""
        while True:
            page = store.page_calls(order=sort, descending=descending, after=after, limit=EXPORT_PAGE, **filters)
            yield from page
            if len(page) < EXPORT_PAGE:
                return
            after = page[-1]["uuid"]

    def body() -> Iterator[bytes]:
        if request_bom:
            yield "\ufeff".encode()
        for chunk in journal.csv_stream(rows(), clock):
            yield chunk.encode()

    request_bom = request.args.get("bom") == "1"
    clock = journal.Clock.of(current_config().journal)  # the stream runs after the request's context is gone
    log.info("web_export", user=g.user["name"], filters={k: v for k, v in filters.items() if v})
    return Response(body(), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=calls.csv", "Content-Type": "text/csv; charset=utf-8"})


# ------------------------------------------------------------------ one call


def _call_or_404(uuid: str) -> dict[str, Any]:
    row = current_store().get_call(uuid)
    if row is None:
        abort(404, f"no call with uuid {uuid!r}")
    return row


@views.route("/call/<uuid>")
def call(uuid: str) -> Any:
    """The call's timeline (modules, identification, attempts, talk, hangup, charge, CRM deliveries),
    its line quality per leg, and its analysis (timeline SVG, figures, flags, transcript) when there is one."""
    row = _call_or_404(uuid)
    store = current_store()
    analysis = store.analysis_get(uuid)
    timeline = ""
    if analysis and analysis["state"] == "done" and analysis["duration_seconds"]:
        timeline = svg.timeline(analysis)
    return render_template("call.html", row=row, charges=store.call_charges(uuid),
                           deliveries=store.call_deliveries(uuid), legs=classify.attempts(store.cdr_leg_facts(uuid)),
                           analysis=analysis, timeline=timeline, poor_mos=current_config().analysis.min_mos or 3.5)


@views.route("/call/<uuid>/recording")
@need("reviewer")
def recording(uuid: str) -> Any:
    """The recording, with range requests (206); ``?download=1`` as an attachment, which sets the mark."""
    row = _call_or_404(uuid)
    path = _recording_path(row["recording"])
    download = request.args.get("download") == "1"
    response = send_file(path, mimetype=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                         conditional=True, as_attachment=download, download_name=path.name)
    if download:
        current_store().mark_downloaded(uuid)
        log.info("web_recording_downloaded", user=g.user["name"], uuid=uuid, address=request.remote_addr)
    return response


def _recording_path(recorded: str) -> Path:
    """The recording's file, only from under ``[journal] record_dir`` (symlinks resolved)."""
    if not recorded:
        abort(404, "this call has no recording")
    root = Path(os.path.realpath(current_config().journal.record_dir))
    path = Path(os.path.realpath(recorded))
    if not path.is_relative_to(root):
        log.warning("web_recording_refused", user=g.user["name"], path=recorded)
        abort(403, "the recording is outside the recordings folder")
    if not path.is_file():
        abort(404, "the recording file is missing")
    return path


# ------------------------------------------------------------------ admin


@views.route("/ledger")
@need("admin")
def ledger() -> Any:
    """The ledger, newest first, a page at a time (keyset on the row id); ``?customer=`` for one customer."""
    customer = request.args.get("customer", "").strip()
    before = request.args.get("before", "")
    if before and not before.isdigit():
        abort(400, f"before: not a ledger row id: {before!r}")
    rows = current_store().recent_charges(limit=PAGE + 1, customer=customer, before=int(before or 0))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return render_template("ledger.html", rows=rows, customer=customer, next_before=rows[-1]["id"] if more else "")


@views.route("/users")
@need("admin")
def users() -> Any:
    return render_template("users.html", users=current_store().web_users())


@views.app_errorhandler(400)
@views.app_errorhandler(403)
@views.app_errorhandler(404)
def error(exc: Any) -> Any:
    return render_template("error.html", code=exc.code, message=exc.description), exc.code
