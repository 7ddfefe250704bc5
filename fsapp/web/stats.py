"""The statistics page: the journal's calls over a period, per day and per hour of the site's zone, per extension.

The period is the journal's search (its other filters too), or the last seven days.
The database sums per quarter hour and per extension (``fsapp.store.stats``);
``fsapp.callstats`` folds the quarters into local days and hours; ``charts`` draws them.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import jdatetime
from flask import Blueprint, render_template, request

from fsapp import callstats
from fsapp.web import charts, i18n
from fsapp.web.context import current_config, current_store, language
from fsapp.web.views import remembered_search, search_filters

stats = Blueprint("stats", __name__)

DEFAULT_DAYS = 7
PERIOD_KEYS = ("from", "to")


@stats.route("/stats")
def page() -> Any:
    search = remembered_search()
    others = {k: v for k, v in search.items() if k not in PERIOD_KEYS}
    ext_sort, ext_desc, problems = _extension_sort()
    _f, _s, _d, more = search_filters(_unsorted(search))
    problems += more
    view: dict[str, Any] = {"search": search, "others": others, "ext_sort": ext_sort, "ext_desc": ext_desc,
                            "period": {k: search.get(k, "") for k in PERIOD_KEYS}}
    if not problems:
        problems += _fill(view, search)
    if problems:
        return render_template("stats.html", problems=problems, **view), 400
    return render_template("stats.html", problems=[], **view)


def _unsorted(search: dict[str, str]) -> dict[str, str]:
    """The search without the journal's sort, which the statistics have no use for."""
    return {k: v for k, v in search.items() if k not in ("sort", "desc")}


def _extension_sort() -> tuple[str, bool, list[str]]:
    sort = request.args.get("ext_sort", "calls")
    descending = request.args.get("ext_desc", "1") == "1"
    if sort not in callstats.EXTENSION_SORTS:
        return "calls", True, [f"ext_sort: cannot sort the extensions by {sort!r} "
                               f"(one of {', '.join(callstats.EXTENSION_SORTS)})"]
    return sort, descending, []


def _fill(view: dict[str, Any], search: dict[str, str]) -> list[str]:
    """The period's figures into ``view``; the problems with the period, if any (then nothing is counted)."""
    tz, lang = current_config().journal.zone, language()
    first, last = _period(search, dt.datetime.now(tz).date())
    if first > last:
        return [f"to: the period ends ({last}) before it starts ({first})"]
    if (last - first).days >= callstats.MAX_DAYS:
        return [f"from: a period is at most {callstats.MAX_DAYS} days; this one is {(last - first).days + 1}"]
    view["period"] = {"from": _shown(lang, first), "to": _shown(lang, last)}
    filters = search_filters({**_unsorted(search), "from": first.isoformat(), "to": last.isoformat()})[0]
    store = current_store()
    folded = callstats.fold(store.call_stats_quarters(**filters), tz, first, last)
    view.update(total=callstats.figures(folded.total),
                extensions=callstats.extensions(store.call_stats_extensions(**filters), view["ext_sort"],
                                                view["ext_desc"]),
                day_chart=_day_chart(folded, lang), hour_chart=_hour_chart(folded, lang))
    return []


def _period(search: dict[str, str], today: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day: as searched (already checked), else up to today, seven days."""
    first = i18n.parse_date(search["from"]) if search.get("from") else None
    last = i18n.parse_date(search["to"]) if search.get("to") else None
    if last is None:
        last = max(today, first) if first else today
    return first or last - dt.timedelta(days=DEFAULT_DAYS - 1), last


def _shown(lang: str, day: dt.date) -> str:
    """A day as the period's field shows it: Solar Hijri ``۱۴۰۵/۰۹/۱۰`` in Persian, else ISO."""
    if lang == "fa":
        return i18n.digits(lang, jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d"))
    return day.isoformat()


def _parts(sums: dict[str, int]) -> dict[str, int]:
    return {s: v for s, v in callstats.figures(sums).items() if s in callstats.STACKED}


def _day_chart(folded: callstats.Folded, lang: str) -> Any:
    bars = [charts.Bar(day.isoformat(), _shown(lang, day)[5:], _shown(lang, day), _parts(sums))
            for day, sums in folded.days.items()]
    return charts.stacked(bars, callstats.STACKED, label_every=math.ceil(len(bars) / 16), **_chart_args(lang,
                          "per_day"))


def _hour_chart(folded: callstats.Folded, lang: str) -> Any:
    bars = [charts.Bar(f"{h:02}", i18n.digits(lang, f"{h:02}"), i18n.digits(lang, f"{h:02}:00–{h + 1:02}:00"),
                       _parts(sums)) for h, sums in enumerate(folded.hours)]
    return charts.stacked(bars, callstats.STACKED, **_chart_args(lang, "per_hour"))


def _chart_args(lang: str, caption: str) -> dict[str, Any]:
    return {"names": lambda key: i18n.label(lang, key), "num": lambda v: i18n.digits(lang, v),
            "caption": i18n.label(lang, caption), "rtl": lang == "fa"}
