"""Instants: kept in UTC (``2026-12-01T05:38:37Z``), shown in the site's zone with its offset.

The journal and the ledger store UTC strings of one width, so text order is time
order and a day of the site's zone is a range of them. ``[journal] timezone`` (an
IANA name, default the host's zone) is where they are read, written with the
offset (``2026-12-01T09:08:37+03:30``); ``[journal] calendar = "jalali"`` adds the
Solar Hijri date (jdatetime).

Times written before the journal kept UTC are naive; they were the host's local time,
and ``parse`` reads them so.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo

UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CALENDARS = ("gregorian", "jalali")


def utc_iso(ts: float | None = None) -> str:
    """``ts`` (epoch seconds; now when None) as the stored UTC text."""
    return time.strftime(UTC_FORMAT, time.gmtime(time.time() if ts is None else ts))


def stored(text: str | None) -> str | None:
    """A time as the stored UTC text; text already in UTC, and text that is no time, as is."""
    if not text or text.endswith("Z"):
        return text
    try:
        return parse(text).astimezone(dt.UTC).strftime(UTC_FORMAT)  # type: ignore[union-attr]
    except ValueError:
        return text


def zone(name: str) -> dt.tzinfo | None:
    """The zone ``name`` names; None (the host's zone) for "". Raises ValueError for an unknown name."""
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Asia/Tehran)") from exc


def parse(text: str | None) -> dt.datetime | None:
    """A stored or sent time as an aware datetime: ``Z``, an offset, or naive (the host's local time)."""
    if not text:
        return None
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.astimezone()


def local(text: str | None, tz: dt.tzinfo | None) -> dt.datetime | None:
    """The instant ``text`` in ``tz`` (the host's zone when None)."""
    when = parse(text)
    return when.astimezone(tz) if when is not None else None


def show(text: str | None, tz: dt.tzinfo | None) -> str | None:
    """``text`` in ``tz`` with its offset: ``2026-12-01T09:08:37+03:30``."""
    when = local(text, tz)
    return when.isoformat(timespec="seconds") if when is not None else None


def day_start(day: dt.date, tz: dt.tzinfo | None) -> str:
    """The stored UTC text of ``day``'s first instant in ``tz``."""
    midnight = dt.datetime.combine(day, dt.time())
    midnight = midnight.replace(tzinfo=tz) if tz is not None else midnight.astimezone()
    return midnight.astimezone(dt.UTC).strftime(UTC_FORMAT)


def jalali(day: dt.date) -> str:
    """``day`` in the Solar Hijri calendar, ``1405-09-10``."""
    import jdatetime

    return jdatetime.date.fromgregorian(date=day).strftime("%Y-%m-%d")


def day_of(text: str) -> dt.date:
    """``YYYY-MM-DD`` as a day: Gregorian, or Solar Hijri for a year before 1700. Raises ValueError."""
    if text[:4].isdigit() and int(text[:4]) < 1700:
        return from_jalali(text)
    return dt.date.fromisoformat(text)


def from_jalali(text: str) -> dt.date:
    """A Solar Hijri ``YYYY-MM-DD`` as its Gregorian day. Raises ValueError."""
    import jdatetime

    year, month, day = (int(p) for p in text.split("-"))
    if not 1 <= year < 1700:
        raise ValueError(f"not a Jalali year: {year}")
    return jdatetime.date(year, month, day).togregorian()
