"""Persian first: labels in Persian and English, Persian digits, Solar Hijri dates (jdatetime)."""

from __future__ import annotations

import datetime as dt
import functools

import jdatetime

from fsapp import instants

LANGUAGES = ("fa", "en")
_FA_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
_TO_ASCII = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")

LABELS: dict[str, tuple[str, str]] = {  # key: (English, Persian)
    "title": ("Call console", "کنسول تماس‌ها"),
    "journal": ("Journal", "گزارش تماس‌ها"),
    "users": ("Users", "کاربران"),
    "logout": ("Log out", "خروج"),
    "login": ("Log in", "ورود"),
    "name": ("User name", "نام کاربری"),
    "password": ("Password", "گذرواژه"),
    "bad_login": ("Wrong user name or password.", "نام کاربری یا گذرواژه نادرست است."),
    "too_many": ("Too many failed logins; try again later.", "تلاش‌های ناموفق بسیار؛ بعداً دوباره بکوشید."),
    "date": ("Date", "تاریخ"), "time": ("Time", "ساعت"), "status": ("Status", "وضعیت"),
    "direction": ("Direction", "جهت"), "caller": ("Caller", "تماس‌گیرنده"), "called": ("Called", "مقصد"),
    "extension": ("Ext.", "داخلی"), "total_seconds": ("Total", "کل"), "talk_seconds": ("Talk", "مکالمه"),
    "too_long": ("Too long", "طولانی"), "customer_name": ("Customer", "مشتری"),
    "customer_type": ("Type", "نوع"), "charge": ("Charge", "هزینه"), "started_at": ("Start", "شروع"),
    "from": ("From", "از"), "to": ("To", "تا"), "customer": ("Customer id", "شناسه مشتری"),
    "number": ("Number", "شماره"), "any": ("any", "همه"), "filter": ("Filter", "جستجو"),
    "reset": ("Clear", "پاک کردن"), "csv": ("CSV export", "خروجی CSV"), "bom": ("with BOM (Excel)", "با BOM (اکسل)"),
    "next": ("Next page", "صفحه بعد"), "first": ("First page", "صفحه اول"), "no_calls": ("No calls.", "تماسی نیست."),
    "inbound": ("incoming", "ورودی"), "outbound": ("outgoing", "خروجی"),
    "answered": ("answered", "پاسخ داده"), "missed": ("missed", "بی‌پاسخ"), "abandoned": ("abandoned", "رها شده"),
    "transferred": ("transferred", "منتقل شده"), "completed": ("completed", "پایان یافته"),
    "failed": ("failed", "ناموفق"), "active": ("active", "در جریان"), "rejected": ("rejected", "رد شده"),
    "local": ("internal", "داخلی به داخلی"),
    "call": ("Call", "تماس"), "modules": ("Modules passed", "ماژول‌های پیموده"),
    "identification": ("Identification", "شناسایی"), "auth_method": ("Method", "روش"),
    "auth_result": ("Result", "نتیجه"), "ledger": ("Ledger", "دفتر حساب"), "module": ("Module", "ماژول"),
    "units": ("Units", "واحد"), "amount": ("Amount", "مبلغ"), "debt_after": ("Debt after", "بدهی پس از آن"),
    "recording": ("Recording", "ضبط مکالمه"), "download": ("Download", "دریافت"),
    "downloaded": ("downloaded", "دریافت شده"), "hangup_cause": ("Hangup cause", "علت قطع"),
    "ended_at": ("End", "پایان"), "answered_at": ("Answered", "پاسخ"), "role": ("Role", "نقش"),
    "created_at": ("Added", "افزوده شده"), "desc": ("descending", "نزولی"), "sort": ("Sort", "مرتب‌سازی"),
    "no_recording": ("No recording.", "ضبطی نیست."), "rial": ("rial", "ریال"),
    "lang_other": ("فارسی", "English"), "yes": ("yes", "بله"),
    "comma": (", ", "، "), "semicolon": ("; ", "؛ "),  # Persian has its own (U+060C, U+061B)
    "stats": ("Statistics", "آمار"), "calls": ("Calls", "تماس‌ها"), "total": ("Total", "جمع"),
    # the journal's CDR and analysis columns and filters, and the call page's timeline, quality and analysis
    "queue": ("Queue", "صف"), "wait_seconds": ("Wait", "انتظار"), "ring_seconds": ("Ring", "زنگ"),
    "hold_seconds": ("Hold", "نگه‌داشت"), "missed_cause": ("Missed cause", "علت بی‌پاسخی"),
    "hangup_by": ("Hung up by", "قطع‌کننده"), "mos": ("MOS", "کیفیت (MOS)"), "analysis_flags": ("Flags", "نشانه‌ها"),
    "with_recording": ("with a recording", "با ضبط"), "without_recording": ("without a recording", "بدون ضبط"),
    "min_mos": ("MOS at least", "MOS دست‌کم"), "max_mos": ("MOS at most", "MOS حداکثر"),
    "flag": ("Analysis flag", "نشانه تحلیل"), "text": ("Transcript words", "واژه‌های متن گفتگو"),
    "group_day": ("Group by day", "گروه‌بندی روزانه"),
    "no_answer": ("no answer", "پاسخ نداد"), "busy": ("busy", "اشغال"), "cancelled": ("cancelled", "لغو شد"),
    "unregistered": ("unregistered", "ثبت‌نشده"), "callee": ("callee", "پاسخ‌دهنده"), "system": ("system", "سامانه"),
    "long_silence": ("long silence", "سکوت طولانی"), "overtalk": ("overtalk", "هم‌زمان‌گویی"),
    "agent_share": ("agent talks too much", "پرحرفی کارشناس"), "low_mos": ("low MOS", "کیفیت پایین"),
    "long_hold": ("long hold", "نگه‌داشت طولانی"), "poor_quality": ("poor quality", "کیفیت ضعیف"),
    "no": ("no", "خیر"), "timeline": ("Timeline", "روند تماس"), "attempts": ("Bridge attempts", "تلاش‌های اتصال"),
    "target": ("Target", "مقصد اتصال"), "outcome": ("Outcome", "نتیجه"), "quality": ("Call quality", "کیفیت تماس"),
    "leg": ("Leg", "سو"), "caller_side": ("caller's side", "سوی تماس‌گیرنده"),
    "callee_side": ("callee's side", "سوی پاسخ‌دهنده"), "quality_percentage": ("Quality %", "درصد کیفیت"),
    "flaws": ("Flaws", "خطاها"), "jitter": ("Jitter (ms)", "لرزش (میلی‌ثانیه)"),
    "analysis": ("Analysis", "تحلیل مکالمه"), "analysis_state": ("Analysis state", "وضعیت تحلیل"),
    "share_customer": ("Customer's share of talk", "سهم مشتری از گفتگو"),
    "share_agent": ("Agent's share of talk", "سهم کارشناس از گفتگو"),
    "silences": ("Silence", "سکوت"), "longest_silence": ("Longest silence", "طولانی‌ترین سکوت"),
    "overtalk_time": ("Overtalk", "هم‌زمان‌گویی"),
    "interruptions": ("Interruptions (customer / agent)", "قطع صحبت (مشتری / کارشناس)"),
    "transcript": ("Transcript", "متن گفتگو"), "deliveries": ("CRM deliveries", "ارسال‌ها به CRM"),
    "kind": ("Kind", "نوع"), "delivered": ("delivered", "تحویل شد"), "waiting": ("waiting", "در صف ارسال"),
    "tries": ("Tries", "تلاش‌ها"), "last_error": ("Last error", "آخرین خطا"),
    "invoice": ("invoice", "صورت‌حساب"), "payment_link": ("payment link", "پیوند پرداخت"),
    "call_log": ("call log", "ثبت تماس در CRM"), "cdr_legs": ("FreeSWITCH's legs (CDR)", "پایه‌های تماس (CDR)"),
    "pending": ("pending", "در انتظار"), "running": ("running", "در حال انجام"), "done": ("done", "انجام شد"),
    "missing": ("file missing", "فایل نیست"), "corrupt": ("unreadable", "خراب"), "skipped": ("skipped", "رد شد"),
    "seconds": ("s", "ث"),
    # the live page, user management, the customer page
    "live": ("Live", "زنده"), "daemon_health": ("Daemon health", "سلامت سرویس"), "daemon": ("Daemon", "سرویس"),
    "health_not_configured": ("not known: set [web] daemon_health_url or [server] metrics_listen",
                              "نامعلوم: [web] daemon_health_url یا [server] metrics_listen را تنظیم کنید"),
    "up": ("up", "برقرار"), "down": ("down", "از کار افتاده"), "unreachable": ("Unreachable", "در دسترس نیست"),
    "accepting": ("Taking calls", "پذیرش تماس"), "draining": ("draining", "در حال تخلیه"),
    "storage": ("Database", "پایگاه داده"), "ok": ("ok", "سالم"), "failing": ("failing", "دچار خطا"),
    "crm": ("CRM", "CRM"), "failed_writes": ("Failed writes", "نوشتن‌های ناموفق"),
    "live_calls": ("Live calls (daemon)", "تماس‌های زنده (سرویس)"),
    "in_journal": ("In progress (journal)", "در جریان (گزارش)"),
    "outbox_backlog": ("Outbox backlog", "صف ارسال به CRM"), "oldest": ("oldest", "قدیمی‌ترین"),
    "daemons": ("Daemons with calls", "سرویس‌های دارای تماس"), "in_progress": ("Calls in progress", "تماس‌های در جریان"),
    "since": ("Since", "از"), "duration": ("For", "مدت"), "talk_so_far": ("Talk so far", "مکالمه تا کنون"),
    "stale": ("no heartbeat", "بی‌ضربان"), "no_live_calls": ("No call in progress.", "تماسی در جریان نیست."),
    "refresh_every": ("This page refreshes every", "این صفحه تازه می‌شود هر"), "seconds_word": ("seconds", "ثانیه"),
    "add_user": ("New user", "کاربر تازه"), "add": ("Add", "افزودن"),
    "role_viewer": ("viewer", "بیننده"), "role_reviewer": ("reviewer", "بازبین"), "role_admin": ("admin", "مدیر"),
    "change_role": ("Change role", "تغییر نقش"), "reset_password": ("New password", "گذرواژه تازه"),
    "remove": ("Remove", "حذف"), "user_added": ("User added", "کاربر افزوده شد"),
    "role_changed": ("Role changed", "نقش تغییر کرد"), "password_reset": ("Password changed", "گذرواژه تغییر کرد"),
    "user_removed": ("User removed", "کاربر حذف شد"),
    "customer_page": ("Customer's page", "صفحه مشتری"), "source": ("From", "منبع"),
    "source_crm": ("the CRM", "CRM"), "source_directory": ("the local directory", "فهرست محلی"),
    "source_journal": ("the journal only", "فقط گزارش تماس‌ها"), "mobile": ("Mobile", "همراه"),
    "phones": ("Phones", "تلفن‌ها"), "responsible": ("Responsible", "مسئول"), "resp_sales": ("sales", "فروش"),
    "resp_support": ("support", "پشتیبانی"), "resp_other": ("other", "سایر"), "debt": ("Debt", "بدهی"),
    "charged_total": ("Charged in all", "جمع هزینه‌ها"), "charges": ("charges", "هزینه"),
    "no_charges": ("No charges.", "هزینه‌ای نیست."),
}
LABELS.update({  # the statistics page
    "show": ("Show", "نمایش"), "other": ("other", "سایر"),
    "answer_rate": ("Answer rate", "نرخ پاسخ"), "avg_talk": ("Average talk", "میانگین مکالمه"),
    "avg_wait": ("Average wait", "میانگین انتظار"), "too_long_calls": ("Too-long calls", "تماس‌های طولانی"),
    "per_day": ("Calls per day", "تماس‌ها در هر روز"),
    "per_hour": ("Calls per hour of the day", "تماس‌ها در هر ساعت روز"),
    "per_extension": ("Per extension", "به تفکیک داخلی"), "no_extension": ("(none)", "(بی‌داخلی)"),
    "filtered_by": ("Also filtered by the journal's search:", "با جستجوی گزارش تماس‌ها نیز:"),
    "stats_defs": ("Answer rate: answered ÷ (answered + missed + abandoned); calls of other statuses (completed in "
                   "the IVR, transferred, failed, rejected, active) are in neither part. Average talk: over the "
                   "answered calls. Average wait: from a call's start until a person answered, over the answered "
                   "calls with FreeSWITCH's CDR. Days and hours are the site's time zone's.",
                   "نرخ پاسخ: پاسخ داده ÷ (پاسخ داده + بی‌پاسخ + رها شده)؛ تماس‌های با وضعیت‌های دیگر (پایان یافته در "
                   "منوی صوتی، منتقل شده، ناموفق، رد شده، در جریان) در هیچ‌یک شمرده نمی‌شوند. میانگین مکالمه: روی "
                   "تماس‌های پاسخ داده. میانگین انتظار: از آغاز تماس تا پاسخ یک نفر، روی تماس‌های پاسخ داده‌ای که "
                   "CDR فری‌سوییچ را دارند. روزها و ساعت‌ها به منطقه زمانی سامانه‌اند."),
})


def label(lang: str, key: str) -> str:
    en, fa = LABELS.get(key, (key, key))
    return fa if lang == "fa" else en


def digits(lang: str, value: object) -> str:
    """Numbers as the language writes them: Persian digits for fa; integers with separators."""
    s = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    return s.translate(_FA_DIGITS).replace(",", "٬") if lang == "fa" else s


def moment(lang: str, iso: str | None, tz: dt.tzinfo | None = None) -> tuple[str, str]:
    """A journal time (stored ISO 8601) in ``tz`` as (date, time): Solar Hijri with Persian digits for fa."""
    if not iso:
        return "", ""
    try:
        when = instants.local(iso, tz)
    except ValueError:
        return iso, ""
    assert when is not None
    clock = f"{when.hour:02}:{when.minute:02}:{when.second:02}"
    if lang != "fa":
        return f"{when.year:04}-{when.month:02}-{when.day:02}", clock
    return _solar_day(when.date()), clock.translate(_FA_DIGITS)


@functools.lru_cache(maxsize=1024)
def _solar_day(day: dt.date) -> str:
    """``day`` in Solar Hijri with Persian digits (``۱۴۰۵/۰۹/۱۰``), worked out once per day: a
    journal page shows fifty calls of a few days."""
    return jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d").translate(_FA_DIGITS)


def parse_date(text: str) -> dt.date:
    """A day a manager typed: YYYY-MM-DD, or Solar Hijri YYYY/MM/DD (a year below 1700;
    Persian or Arabic-Indic digits welcome). ValueError if it is neither."""
    return instants.day_of(text.strip().translate(_TO_ASCII).replace("/", "-"))


def percent(lang: str, ratio: float | None) -> str:
    """A ratio (0..1) as a percent with one decimal, ``85.7%`` or ``۸۵٫۷٪``; "—" for None."""
    if ratio is None:
        return "—"
    text = f"{ratio * 100:.1f}"
    return digits(lang, text).replace(".", "٫") + "٪" if lang == "fa" else text + "%"


def duration(lang: str, seconds: int | None) -> str:
    s = int(seconds or 0)
    text = f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"
    return digits(lang, text)
