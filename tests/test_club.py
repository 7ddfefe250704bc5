"""The customer club module over a real socket with the FreeSWITCH stand-in.

Covers the three validation types, recovery, registration of unknown callers, the
prompts (each switchable off), CRM failures against real local HTTP servers, PIN
secrecy in logs and the journal, and the PIN lockout across calls and daemons.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fsapp import log as logmod
from fsapp.config import Config
from fsapp.customers import parse_csv, save_rows
from fsapp.fakefs import FakeFreeSWITCH, Script, Step
from fsapp.simulate import wait_idle
from fsapp.store import Store
from tests.helpers import SOUNDS, Daemon, raw_server

PIN = "48273916"
WRONG_PIN = "51738264"
AUTH_ERROR = "hangup:CALL_REJECTED"
TOKEN_ENV = "FSAPP_TEST_CLUB_CRM_TOKEN"
SILENCE = "silence_stream://250"
EXPERT_DIAL = "{originate_timeout=20}user/%s@${domain_name}"

CUSTOMERS_CSV = """\
id,number,name,type,phones,mobile,pin,sales,support,other,debt
cus-1,C-1001,Sara Ahmadi,vip,09121234567;021 8877 6655,09121234567,48273916,1001,1002,,0
cus-2,C-1002,Reza Karimi,active,09351112233,,,1005,,,0
"""

PROMPT_KEYS = ("intro", "welcome", "enter_number", "wrong_number", "enter_pin", "wrong_pin", "auth_failed", "locked")
PROMPTS: dict[str, object] = {key: f"club/{key}" for key in PROMPT_KEYS}
NO_PROMPTS: dict[str, object] = dict.fromkeys(PROMPT_KEYS, "")

EXPERT = """
[[modules]]
code = "expert"
kind = "case_expert"
role = "sales"
ring_seconds = 20
next = "hangup:NORMAL_CLEARING"
error = "hangup:NO_ANSWER"
"""

CUSTOMER_JSON = {
    "id": "crm-77",
    "number": "C-1001",
    "name": "Sara Ahmadi",
    "type": "vip",
    "mobile": "+989121234567",
    "phones": ["+989121234567"],
    "responsible": {"sales": "1007", "support": "1002"},
}

ConfigMaker = Callable[..., Config]
DaemonMaker = Callable[[Config], Daemon]


# ------------------------------------------------------------------ helpers


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def club_toml(auth: str, **overrides: object) -> str:
    """A club module (all prompts set, entry of the call) chained to a sales case expert."""
    values: dict[str, object] = {
        "code": "club",
        "kind": "customer_club",
        "auth": auth,
        "max_attempts": 3,
        "timeout_ms": 3000,
        "next": "expert",
        "error": AUTH_ERROR,
    }
    if auth != "phone":
        values |= {"customer_number_prefix": "C-", "recovery_digit": "0", "recovery": "ext:1000"}
    values |= PROMPTS
    values |= overrides
    lines = ["[[modules]]", *(f"{key} = {_toml(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n" + EXPERT


def seed(store: Store) -> None:
    save_rows(store, parse_csv(CUSTOMERS_CSV))


def start(make_config: ConfigMaker, daemon: DaemonMaker, auth: str, *, extra: str = "",
          **overrides: object) -> Daemon:
    d = daemon(make_config(club_toml(auth, **overrides), entry="club", extra=extra))
    seed(d.store)
    return d


def path(prompt: str) -> str:
    return f"{SOUNDS}/fa/{prompt}.wav"


def asks(fake: FakeFreeSWITCH) -> list[Step]:
    return [s for s in fake.steps if s.app == "play_and_get_digits"]


def ask_file(step: Step) -> str:
    return step.arg.split(" ")[5]


def bridges(fake: FakeFreeSWITCH) -> list[str]:
    return [s.arg for s in fake.steps if s.app == "bridge"]


def assert_reached_error(fake: FakeFreeSWITCH, row: dict[str, Any] | None, dest: str = AUTH_ERROR) -> None:
    assert row is not None
    assert row["final_destination"] == dest
    assert fake.steps[-1].app == "hangup" and fake.steps[-1].arg == dest.split(":", 1)[1]
    assert "bridge" not in fake.apps()
    assert fake.exit_received and not fake.error


def assert_identified(fake: FakeFreeSWITCH, row: dict[str, Any] | None, customer_id: str, ext: str) -> None:
    """Identified: the next module (the sales case expert) bridged to that customer's own extension."""
    assert row is not None
    assert row["auth_result"] == "ok"
    assert row["customer_id"] == customer_id
    assert row["modules"] == ["club", "expert"]
    assert bridges(fake) == [EXPERT_DIAL % ext]
    assert row["status"] == "answered" and row["extension"] == ext


# ------------------------------------------------------------------ phone


@pytest.mark.parametrize("caller", ["09121234567", "+989121234567", "00989121234567", "989121234567"])
def test_phone_identifies_national_and_international_forms(make_config: ConfigMaker, daemon: DaemonMaker,
                                                          caller: str) -> None:
    """Every written form of the stored 09121234567 identifies that customer and passes them to next."""
    d = start(make_config, daemon, "phone")
    fake, row = d.call(caller=caller, bridges=["answer:30"])
    assert_identified(fake, row, "cus-1", "1001")
    assert row is not None
    assert row["auth_method"] == "phone"
    assert row["customer_name"] == "Sara Ahmadi" and row["customer_type"] == "vip"
    assert fake.prompts() == [path("club/intro"), path("club/welcome")]
    assert not asks(fake)


def test_phone_second_registered_number_identifies_too(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A customer's other phone (a Tehran landline written with a space) identifies them as well."""
    d = start(make_config, daemon, "phone")
    fake, row = d.call(caller="+982188776655", bridges=["answer:5"])
    assert_identified(fake, row, "cus-1", "1001")


@pytest.mark.parametrize("caller", ["09350000000", "+14155550100", "anonymous", ""])
def test_phone_unknown_caller_hears_auth_failed_then_error(make_config: ConfigMaker, daemon: DaemonMaker,
                                                          caller: str) -> None:
    """An unregistered, foreign, anonymous or missing caller ID: auth_failed, then the error destination."""
    d = start(make_config, daemon, "phone")
    fake, row = d.call(caller=caller)
    assert_reached_error(fake, row)
    assert row is not None
    assert fake.prompts() == [path("club/intro"), path("club/auth_failed")]
    assert row["auth_method"] == "phone" and row["auth_result"] == "unknown_phone"
    assert row["customer_id"] == "" and row["modules"] == ["club"]
    assert row["status"] == "completed"
    assert len(d.store.customer_rows()) == 2


# ------------------------------------------------------------------ customer number


@pytest.mark.parametrize(("typed", "customer_id", "ext"), [("1001", "cus-1", "1001"), ("1002", "cus-2", "1005")])
def test_customer_number_with_prefix_identifies(make_config: ConfigMaker, daemon: DaemonMaker, typed: str,
                                                customer_id: str, ext: str) -> None:
    """The typed digits with the prefix prepended (1001 -> C-1001) find the customer, whatever the caller ID."""
    d = start(make_config, daemon, "customer_number")
    fake, row = d.call(caller="5551234", dtmf=[typed], bridges=["answer:30"])
    assert_identified(fake, row, customer_id, ext)
    assert row is not None and row["auth_method"] == "customer_number"
    [ask] = asks(fake)
    assert ask_file(ask) == path("club/enter_number")
    assert ask.arg.startswith("1 12 1 3000 # ")
    assert fake.prompts() == [path("club/intro"), path("club/welcome")]


def test_customer_number_without_the_prefix_is_not_found(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """With no prefix configured, 1001 is looked up as 1001 and matches nobody."""
    d = start(make_config, daemon, "customer_number", customer_number_prefix="", max_attempts=1)
    fake, row = d.call(dtmf=["1001"])
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "wrong_number"


def test_customer_number_retries_after_wrong_and_no_input(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A wrong number and no input each cost an attempt with wrong_number played; the third try succeeds."""
    d = start(make_config, daemon, "customer_number")
    fake, row = d.call(dtmf=["9999", "", "1001"], bridges=["answer:10"])
    assert_identified(fake, row, "cus-1", "1001")
    assert [a.result for a in asks(fake)] == ["9999", "", "1001"]
    assert fake.prompts() == [path("club/intro"), path("club/wrong_number"), path("club/wrong_number"),
                              path("club/welcome")]


@pytest.mark.parametrize("dtmf", [["9999", "1", "77"], ["", "", ""], ["9999", "", "12"]])
def test_customer_number_max_attempts_then_auth_failed(make_config: ConfigMaker, daemon: DaemonMaker,
                                                       dtmf: list[str]) -> None:
    """max_attempts wrong numbers or silences: wrong_number between tries, auth_failed, then error."""
    d = start(make_config, daemon, "customer_number")
    fake, row = d.call(dtmf=[*dtmf, "1001"])
    assert_reached_error(fake, row)
    assert row is not None
    assert len(asks(fake)) == 3
    assert fake.prompts() == [path("club/intro"), path("club/wrong_number"), path("club/wrong_number"),
                              path("club/auth_failed")]
    assert row["auth_result"] == "wrong_number" and row["customer_id"] == ""
    assert row["status"] == "completed"


def test_customer_number_max_attempts_is_configurable(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """With max_attempts = 2 the second wrong number already ends in error."""
    d = start(make_config, daemon, "customer_number", max_attempts=2)
    fake, row = d.call(dtmf=["1", "2", "1001"])
    assert_reached_error(fake, row)
    assert len(asks(fake)) == 2


# ------------------------------------------------------------------ PIN


def test_pin_right_pin_identifies(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """Customer number then the right PIN: identified, passed to next with the customer on the context."""
    d = start(make_config, daemon, "pin")
    fake, row = d.call(dtmf=["1001", PIN], bridges=["answer:30"])
    assert_identified(fake, row, "cus-1", "1001")
    assert row is not None and row["auth_method"] == "pin"
    assert [ask_file(a) for a in asks(fake)] == [path("club/enter_number"), path("club/enter_pin")]
    assert asks(fake)[1].arg.startswith("1 8 1 3000 # ")
    assert fake.prompts() == [path("club/intro"), path("club/welcome")]


def test_pin_right_after_wrong_succeeds(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A wrong PIN plays wrong_pin and asks again; a right PIN then identifies and starts the customer's count again."""
    d = start(make_config, daemon, "pin", extra=LOCKOUT)
    fake, row = d.call(dtmf=["1001", WRONG_PIN, WRONG_PIN, PIN], bridges=["answer:30"])
    assert_identified(fake, row, "cus-1", "1001")
    assert fake.prompts() == [path("club/intro"), *[path("club/wrong_pin")] * 2, path("club/welcome")]
    fake, row = d.call(dtmf=["1001", WRONG_PIN, WRONG_PIN, WRONG_PIN])
    assert row is not None and row["auth_result"] == "locked"
    assert len(asks(fake)) == 4  # locked at this call's third wrong PIN: the two before the right one are forgotten


def test_pin_wrong_number_first_then_pin(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A wrong customer number is retried before the PIN is asked."""
    d = start(make_config, daemon, "pin")
    fake, row = d.call(dtmf=["5555", "1001", PIN], bridges=["answer:30"])
    assert_identified(fake, row, "cus-1", "1001")
    assert [ask_file(a) for a in asks(fake)] == [path("club/enter_number"), path("club/enter_number"),
                                                 path("club/enter_pin")]
    assert fake.prompts() == [path("club/intro"), path("club/wrong_number"), path("club/welcome")]


def test_pin_max_attempts_wrong_goes_to_error(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """max_attempts wrong PINs: wrong_pin between tries, auth_failed, error; the customer journaled, not passed on."""
    d = start(make_config, daemon, "pin", extra="[security]\npin_max_failures = 10\n")
    fake, row = d.call(dtmf=["1001", WRONG_PIN, "1234", "99999999", PIN], bridges=["answer:30"])
    assert_reached_error(fake, row)
    assert row is not None
    assert len(asks(fake)) == 4
    assert fake.prompts() == [path("club/intro"), path("club/wrong_pin"), path("club/wrong_pin"),
                              path("club/auth_failed")]
    assert row["auth_result"] == "wrong_pin"
    assert row["customer_id"] == "cus-1"
    assert row["modules"] == ["club"]


def test_pin_customer_without_pin_never_passes(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A customer with no PIN set cannot be authenticated by any PIN."""
    d = start(make_config, daemon, "pin", max_attempts=1)
    fake, row = d.call(dtmf=["1002", "0000"])
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "wrong_pin" and row["customer_id"] == "cus-2"


def test_pin_peppered_directory_without_the_pepper_is_an_error_not_a_wrong_pin(
        make_config: ConfigMaker, daemon: DaemonMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    """PINs hashed with FSAPP_PIN_PEPPER, daemon started without it: error, no failure counted."""
    from fsapp import pins

    monkeypatch.setenv(pins.PEPPER_ENV, "kept-outside-the-database")
    d = start(make_config, daemon, "pin")
    monkeypatch.delenv(pins.PEPPER_ENV)
    fake, row = d.call(dtmf=["1001", PIN])
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "crm_error" and row["status"] == "failed"
    assert d.store.db.query("SELECT * FROM pin_failures") == []


# ------------------------------------------------------------------ recovery


@pytest.mark.parametrize("auth", ["customer_number", "pin"])
@pytest.mark.parametrize("dtmf", [["0"], ["9999", "0"]])
def test_recovery_digit_at_number_prompt(make_config: ConfigMaker, daemon: DaemonMaker, auth: str,
                                         dtmf: list[str]) -> None:
    """The recovery digit at the number prompt (first try or a retry) goes to recovery (ext:1000)."""
    d = start(make_config, daemon, auth)
    fake, row = d.call(dtmf=dtmf, bridges=["answer:20"])
    assert row is not None
    assert len(asks(fake)) == len(dtmf)
    assert all(ask_file(a) == path("club/enter_number") for a in asks(fake))
    [target] = bridges(fake)
    assert target.endswith("user/1000@${domain_name}")
    assert row["final_destination"] == "ext:1000"
    assert row["auth_result"] == "recovery" and row["customer_id"] == ""
    assert row["modules"] == ["club"]
    assert row["status"] == "answered" and row["extension"] == "1000"
    assert path("club/auth_failed") not in fake.prompts()


def test_recovery_digit_at_pin_prompt(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """The recovery digit at the PIN prompt goes to recovery, also after a wrong PIN."""
    d = start(make_config, daemon, "pin")
    fake, row = d.call(dtmf=["1001", WRONG_PIN, "0"], bridges=["answer:20"])
    assert row is not None
    assert [ask_file(a) for a in asks(fake)] == [path("club/enter_number"), path("club/enter_pin"),
                                                 path("club/enter_pin")]
    [target] = bridges(fake)
    assert target.endswith("user/1000@${domain_name}")
    assert row["final_destination"] == "ext:1000"
    assert row["auth_result"] == "recovery"
    assert row["modules"] == ["club"]


def test_recovery_star_key(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """'*' works as the recovery key (the digit filter lets it through)."""
    d = start(make_config, daemon, "pin", recovery_digit="*")
    fake, row = d.call(dtmf=["1001", "*"], bridges=["answer:20"])
    assert row is not None and row["auth_result"] == "recovery"
    assert bridges(fake)[0].endswith("user/1000@${domain_name}")


# ------------------------------------------------------------------ register_unknown


def test_register_unknown_creates_customer_and_goes_to_unknown(make_config: ConfigMaker,
                                                                daemon: DaemonMaker) -> None:
    """An unknown caller is created in the local directory, journaled with the new id, sent to unknown."""
    d = start(make_config, daemon, "phone", register_unknown=True, unknown="queue:support")
    fake, row = d.call(caller="09359876543", bridges=["answer:15"])
    assert row is not None
    created = [r for r in d.store.customer_rows() if r["id"] not in ("cus-1", "cus-2")]
    assert len(created) == 1
    new = created[0]
    assert new["phones"] == ["+989359876543"]
    assert row["customer_id"] == new["id"]
    assert row["auth_result"] == "registered"
    assert row["final_destination"] == "queue:support"
    assert [s.arg for s in fake.steps if s.app == "callcenter"] == ["support@default"]
    assert row["modules"] == ["club"]
    assert path("club/auth_failed") not in fake.prompts()

    fake, row = d.call(caller="+989359876543", bridges=["answer:15"])
    assert row is not None
    assert row["auth_result"] == "ok" and row["customer_id"] == new["id"]
    assert row["modules"] == ["club", "expert"]
    assert len(d.store.customer_rows()) == 3


def test_register_unknown_without_unknown_goes_to_error(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """With no unknown destination a registered caller goes to error."""
    d = start(make_config, daemon, "phone", register_unknown=True)
    fake, row = d.call(caller="09359876543")
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "registered" and row["customer_id"]
    assert len(d.store.customer_rows()) == 3


def test_register_unknown_leaves_anonymous_callers_alone(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A caller without a caller ID is not registered: auth_failed and error."""
    d = start(make_config, daemon, "phone", register_unknown=True, unknown="queue:support")
    fake, row = d.call(caller="anonymous")
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "unknown_phone"
    assert len(d.store.customer_rows()) == 2


# ------------------------------------------------------------------ prompts


def test_all_prompts_off_plays_nothing(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """Every prompt set to "": no playback at all, every ask plays silence, in success and failure."""
    d = start(make_config, daemon, "pin", **NO_PROMPTS)
    fake, row = d.call(dtmf=["", "1001", WRONG_PIN, PIN], bridges=["answer:10"])
    assert_identified(fake, row, "cus-1", "1001")
    assert "playback" not in fake.apps()
    assert [ask_file(a) for a in asks(fake)] == [SILENCE] * 4

    fake, row = d.call(dtmf=["1001", WRONG_PIN, WRONG_PIN, WRONG_PIN])
    assert_reached_error(fake, row)
    assert "playback" not in fake.apps()
    assert [ask_file(a) for a in asks(fake)] == [SILENCE] * 4

    d.store.record_pin_failure("cus-1", time.time(), 900, 1, 600)
    fake, row = d.call(dtmf=["1001", PIN])
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "locked"
    assert "playback" not in fake.apps()


def test_phone_prompts_off_plays_nothing(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """Phone validation with every prompt off: identified or not, nothing is played."""
    d = start(make_config, daemon, "phone", **NO_PROMPTS)
    fake, row = d.call(caller="09121234567", bridges=["answer:10"])
    assert_identified(fake, row, "cus-1", "1001")
    assert "playback" not in fake.apps()
    fake, row = d.call(caller="09350000000")
    assert_reached_error(fake, row)
    assert "playback" not in fake.apps()


def test_all_prompts_on_play_in_order(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """Every prompt set: each plays at its step, with its exact file path."""
    d = start(make_config, daemon, "pin")
    fake, row = d.call(dtmf=["", "1001", WRONG_PIN, PIN], bridges=["answer:10"])
    assert_identified(fake, row, "cus-1", "1001")
    assert fake.prompts() == [path("club/intro"), path("club/wrong_number"), path("club/wrong_pin"),
                              path("club/welcome")]
    assert [ask_file(a) for a in asks(fake)] == [path("club/enter_number")] * 2 + [path("club/enter_pin")] * 2


# key set alone -> the call that reaches its step, and whether the file is played or asked with
SINGLE_PROMPT_CALLS: dict[str, tuple[list[str], str]] = {
    "intro": (["1001", PIN], "played"),
    "welcome": (["1001", PIN], "played"),
    "enter_number": (["1001", PIN], "asked"),
    "wrong_number": (["9", "1001", PIN], "played"),
    "enter_pin": (["1001", PIN], "asked"),
    "wrong_pin": (["1001", WRONG_PIN, PIN], "played"),
    "auth_failed": (["9", "9", "9"], "played"),
    "locked": (["1001", PIN], "played"),
}


@pytest.mark.parametrize("key", PROMPT_KEYS)
def test_each_prompt_plays_alone_when_set(make_config: ConfigMaker, daemon: DaemonMaker, key: str) -> None:
    """With only one prompt set, exactly that file is heard (played, or as the ask's prompt) at its step."""
    d = start(make_config, daemon, "pin", **(NO_PROMPTS | {key: f"club/{key}"}))
    if key == "locked":
        d.store.record_pin_failure("cus-1", time.time(), 900, 1, 600)
    dtmf, how = SINGLE_PROMPT_CALLS[key]
    fake, _row = d.call(dtmf=dtmf, bridges=["answer:10"])
    asked = [ask_file(a) for a in asks(fake) if ask_file(a) != SILENCE]
    if how == "played":
        assert fake.prompts() == [path(f"club/{key}")]
        assert asked == []
    else:
        assert fake.prompts() == []
        assert asked == [path(f"club/{key}")]


def test_locked_falls_back_to_auth_failed(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """With no locked prompt, a locked customer hears auth_failed."""
    d = start(make_config, daemon, "pin", locked="")
    d.store.record_pin_failure("cus-1", time.time(), 900, 1, 600)
    fake, row = d.call(dtmf=["1001", PIN])
    assert fake.prompts() == [path("club/intro"), path("club/auth_failed")]
    assert row is not None and row["auth_result"] == "locked"


# ------------------------------------------------------------------ CRM over HTTP


def http_crm(url: str, *, timeout: float = 1) -> str:
    return (f'[crm]\nkind = "http"\nurl = "{url}"\ntoken_env = "{TOKEN_ENV}"\n'
            f"timeout_seconds = {timeout}\nconnect_timeout_seconds = 0.5\n")


@pytest.fixture
def crm_token(monkeypatch: pytest.MonkeyPatch) -> str:
    token = "club-test-token"
    monkeypatch.setenv(TOKEN_ENV, token)
    return token


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    """Read whatever comes and never answer."""
    conn.settimeout(0.05)
    while not stop.is_set():
        try:
            if not conn.recv(4096):
                return
        except TimeoutError:
            continue


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server (in real threads) that accepts connections, reads and never answers."""
    with raw_server(_silent) as url:
        yield url


def closed_port_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def slow_response(_request: Request) -> Response:
    time.sleep(1.6)
    return Response(json.dumps({"ok": True}), content_type="application/json")


def timed_call(d: Daemon, **script: Any) -> tuple[FakeFreeSWITCH, dict[str, Any] | None, float]:
    t0 = time.monotonic()
    fake, row = d.call(**script)
    return fake, row, time.monotonic() - t0


def assert_crm_error(fake: FakeFreeSWITCH, row: dict[str, Any] | None, elapsed: float, limit: float = 2.0) -> None:
    """The caller reached error within the CRM timeout plus a second, journaled as a CRM failure."""
    assert elapsed < limit
    assert_reached_error(fake, row)
    assert row is not None
    assert row["auth_result"] == "crm_error"
    assert row["status"] == "failed"
    assert row["modules"] == ["club"]


@pytest.mark.parametrize("failure", ["refused", "hangs", "http_500", "garbage"])
def test_crm_failure_on_phone_lookup_reaches_error_in_time(make_config: ConfigMaker, daemon: DaemonMaker,
                                                           httpserver: HTTPServer, silent_server: str,
                                                           crm_token: str, failure: str) -> None:
    """Refused, silent past its timeout, 500 or garbage: the caller reaches error within timeout + 1 s."""
    if failure == "refused":
        url = closed_port_url()
    elif failure == "hangs":
        url = silent_server
    else:
        url = httpserver.url_for("/api")
        handler = httpserver.expect_request("/api/customers")
        if failure == "http_500":
            handler.respond_with_data("boom", status=500)
        else:
            handler.respond_with_data("<html>not json", status=200, content_type="application/json")
    d = start(make_config, daemon, "phone", extra=http_crm(url))
    fake, row, elapsed = timed_call(d, caller="09121234567", bridges=["answer:10"])
    assert_crm_error(fake, row, elapsed)
    if failure == "hangs":
        assert elapsed >= 0.9


def test_crm_failure_on_number_lookup(make_config: ConfigMaker, daemon: DaemonMaker, httpserver: HTTPServer,
                                      crm_token: str) -> None:
    """A 500 on the customer-number lookup ends the club in error at the first try, not after retries."""
    httpserver.expect_request("/api/customers", query_string={"number": "C-1001"}).respond_with_data("x", status=500)
    d = start(make_config, daemon, "customer_number", extra=http_crm(httpserver.url_for("/api")))
    fake, row, elapsed = timed_call(d, dtmf=["1001", "1001", "1001"])
    assert_crm_error(fake, row, elapsed)
    assert len(asks(fake)) == 1


@pytest.mark.parametrize("failure", ["hangs", "http_500"])
def test_crm_failure_on_pin_check(make_config: ConfigMaker, daemon: DaemonMaker, httpserver: HTTPServer,
                                  crm_token: str, failure: str) -> None:
    """The number is found but verify-pin fails or hangs: error within timeout + 1 s, no lockout counted."""
    httpserver.expect_request("/api/customers", query_string={"number": "C-1001"}).respond_with_json(CUSTOMER_JSON)
    pin_check = httpserver.expect_request("/api/customers/crm-77/verify-pin", method="POST")
    if failure == "hangs":
        pin_check.respond_with_handler(slow_response)
    else:
        pin_check.respond_with_data("boom", status=500)
    d = start(make_config, daemon, "pin", extra=http_crm(httpserver.url_for("/api")))
    fake, row, elapsed = timed_call(d, dtmf=["1001", PIN])
    assert_crm_error(fake, row, elapsed)
    assert d.store.db.query("SELECT * FROM pin_failures") == []


def test_http_crm_identifies_by_e164_phone(make_config: ConfigMaker, daemon: DaemonMaker, httpserver: HTTPServer,
                                           crm_token: str) -> None:
    """The HTTP CRM is asked for the E.164 caller with the bearer token; its customer is passed on."""
    httpserver.expect_request(
        "/api/customers", query_string={"phone": "+989121234567"},
        headers={"Authorization": f"Bearer {crm_token}"},
    ).respond_with_json(CUSTOMER_JSON)
    d = start(make_config, daemon, "phone", extra=http_crm(httpserver.url_for("/api")))
    fake, row = d.call(caller="00989121234567", bridges=["answer:10"])
    assert_identified(fake, row, "crm-77", "1007")


def test_http_crm_pin_flow(make_config: ConfigMaker, daemon: DaemonMaker, httpserver: HTTPServer,
                           crm_token: str) -> None:
    """Over HTTP a wrong then right PIN: the CRM's verdicts decide, and the PIN is sent only in the body."""
    httpserver.expect_request("/api/customers", query_string={"number": "C-1001"}).respond_with_json(CUSTOMER_JSON)
    httpserver.expect_oneshot_request("/api/customers/crm-77/verify-pin", method="POST",
                                      json={"pin": WRONG_PIN}).respond_with_json({"ok": False})
    httpserver.expect_oneshot_request("/api/customers/crm-77/verify-pin", method="POST",
                                      json={"pin": PIN}).respond_with_json({"ok": True})
    d = start(make_config, daemon, "pin", extra=http_crm(httpserver.url_for("/api")))
    fake, row = d.call(dtmf=["1001", WRONG_PIN, PIN], bridges=["answer:10"])
    assert_identified(fake, row, "crm-77", "1007")
    httpserver.check_assertions()
    assert all(PIN not in req.url for req, _resp in httpserver.log)


# ------------------------------------------------------------------ PIN secrecy


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The project's own log pipeline (redact included), JSON lines into a buffer, at debug level."""
    saved = structlog.get_config()
    buf = io.StringIO()
    logmod.configure("debug", json=True, stream=buf)
    try:
        yield buf
    finally:
        structlog.configure(**saved)


def test_pin_never_logged_nor_journaled(make_config: ConfigMaker, daemon: DaemonMaker,
                                        json_log: io.StringIO) -> None:
    """Right and wrong PINs typed during calls appear in no log line and no journal row."""
    d = start(make_config, daemon, "pin", extra="[security]\npin_max_failures = 10\n")
    ok_fake, ok_row = d.call(dtmf=["1001", WRONG_PIN, PIN], bridges=["answer:10"])
    bad_fake, bad_row = d.call(dtmf=["1001", WRONG_PIN, WRONG_PIN, WRONG_PIN])
    assert ok_row is not None and ok_row["auth_result"] == "ok"
    assert bad_row is not None and bad_row["auth_result"] == "wrong_pin"
    assert [a.result for a in asks(ok_fake)][1:] == [WRONG_PIN, PIN]  # the PINs really were typed
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert "club_identified" in events and "club_wrong_pin" in events and "call_ended" in events
    text = json_log.getvalue()
    assert PIN not in text and WRONG_PIN not in text
    journal = json.dumps(d.store.list_calls())
    assert PIN not in journal and WRONG_PIN not in journal


def test_pin_fields_are_redacted_in_log_output(json_log: io.StringIO) -> None:
    """A pin= field given to the logger is written as [redacted]."""
    logmod.get("fsapp.test").warning("pin_event", pin=PIN, new_pin=WRONG_PIN, customer_id="cus-1")
    [line] = [json.loads(x) for x in json_log.getvalue().splitlines()]
    assert line["pin"] == "[redacted]" and line["new_pin"] == "[redacted]"
    assert line["customer_id"] == "cus-1"
    assert PIN not in json_log.getvalue()


def test_redact_blanks_pin_fields() -> None:
    """redact blanks pin-named fields, keeps others, and masks card-like digit runs."""
    event = logmod.redact(None, "info", {
        "event": "x", "pin": PIN, "PIN": PIN, "new_pin": PIN, "customer_pin": PIN, "pinned": "kept",
        "note": "card 6037991234567890 used",
    })
    assert event["pin"] == event["PIN"] == event["new_pin"] == event["customer_pin"] == "[redacted]"
    assert event["pinned"] == "kept"
    assert event["note"] == "card 6037************ used"


# ------------------------------------------------------------------ lockout

LOCKOUT = "[security]\npin_max_failures = 3\npin_window_seconds = 900\npin_lockout_seconds = 600\n"


def test_lockout_holds_across_calls_and_daemons_then_expires(make_config: ConfigMaker,
                                                             daemon: DaemonMaker) -> None:
    """Three one-wrong-PIN calls lock the customer; the right PIN is refused on any daemon until expiry."""
    cfg = make_config(club_toml("pin", max_attempts=1), entry="club", extra=LOCKOUT)
    d = daemon(cfg)
    seed(d.store)
    results = []
    for _ in range(3):
        fake, row = d.call(dtmf=["1001", WRONG_PIN])
        assert row is not None
        results.append(row["auth_result"])
    assert results == ["wrong_pin", "wrong_pin", "locked"]
    assert fake.prompts() == [path("club/intro"), path("club/locked")]
    until = d.store.locked_until("cus-1", time.time())
    assert 590 < until - time.time() <= 600

    other = daemon(cfg)
    fake, row = other.call(dtmf=["1001", PIN, PIN], bridges=["answer:10"])
    assert_reached_error(fake, row)
    assert row is not None
    assert row["auth_result"] == "locked" and row["customer_id"] == "cus-1"
    assert fake.prompts() == [path("club/intro"), path("club/locked")]
    assert [ask_file(a) for a in asks(fake)] == [path("club/enter_number")]  # no PIN asked while locked

    fake, row = d.call(dtmf=["1001", PIN], bridges=["answer:10"])
    assert row is not None and row["auth_result"] == "locked"

    # The lockout runs out now: its end is after every failure it was set for, as a real one's is.
    d.store.db.execute("UPDATE lockouts SET until = ? WHERE customer_id = ?", (time.time(), "cus-1"))
    fake, row = other.call(dtmf=["1001", PIN], bridges=["answer:10"])
    assert_identified(fake, row, "cus-1", "1001")


def test_lockout_is_per_customer(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A locked customer does not lock another one."""
    d = start(make_config, daemon, "pin", extra=LOCKOUT)
    d.store.record_pin_failure("cus-2", time.time(), 900, 1, 600)
    fake, row = d.call(dtmf=["1001", PIN], bridges=["answer:10"])
    assert_identified(fake, row, "cus-1", "1001")


def test_wrong_pins_in_one_call_lock_at_the_limit(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """The failure that reaches pin_max_failures plays locked at once and ends the call in error."""
    d = start(make_config, daemon, "pin", max_attempts=5, extra=LOCKOUT)
    fake, row = d.call(dtmf=["1001", WRONG_PIN, WRONG_PIN, WRONG_PIN, PIN], bridges=["answer:10"])
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "locked"
    assert len(asks(fake)) == 4
    assert fake.prompts() == [path("club/intro"), path("club/wrong_pin"), path("club/wrong_pin"),
                              path("club/locked")]


def test_silence_at_pin_prompt_is_not_a_wrong_pin(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """No input at the PIN prompt costs an attempt but does not count toward the lockout."""
    d = start(make_config, daemon, "pin", extra=LOCKOUT)
    fake, row = d.call(dtmf=["1001", "", "", ""])
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "wrong_pin"
    assert d.store.locked_until("cus-1", time.time()) == 0.0
    assert d.store.db.query("SELECT * FROM pin_failures") == []


def test_lockout_by_another_daemon_mid_call_stops_further_tries(make_config: ConfigMaker,
                                                                 daemon: DaemonMaker) -> None:
    """A lockout set by another daemon while this call is in its PIN retries refuses the next PIN, even a right one."""
    d = start(make_config, daemon, "pin", extra=LOCKOUT)
    real = d.app.crm
    checked: list[str] = []

    class LockingCRM:
        """The directory, with another daemon locking the customer during the first PIN check."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def verify_pin(self, customer_id: str, pin: str) -> bool:
            checked.append(customer_id)
            if len(checked) == 1:
                d.store.record_pin_failure(customer_id, time.time(), 900, 1, 600)
            return bool(real.verify_pin(customer_id, pin))

    d.app.crm = LockingCRM()
    fake, row = d.call(dtmf=["1001", WRONG_PIN, PIN], bridges=["answer:10"])
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "locked"
    assert checked == ["cus-1"]
    assert len(asks(fake)) == 2  # the number and the one wrong PIN; the right one is never asked for
    assert fake.prompts() == [path("club/intro"), path("club/wrong_pin"), path("club/locked")]


def test_lockout_while_the_pin_is_typed_refuses_it(make_config: ConfigMaker, daemon: DaemonMaker) -> None:
    """A lockout set by another daemon while the caller types the PIN refuses that PIN unchecked."""
    d = start(make_config, daemon, "pin", extra=LOCKOUT)
    checked: list[str] = []
    real = d.app.crm

    class CountingCRM:
        """The directory, counting PIN checks."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def verify_pin(self, customer_id: str, pin: str) -> bool:
            checked.append(customer_id)
            return bool(real.verify_pin(customer_id, pin))

    class LockWhileTyping(FakeFreeSWITCH):
        """FreeSWITCH whose PIN prompt overlaps another daemon locking the customer."""

        def _app_play_and_get_digits(self, arg: str, app_uuid: str) -> None:
            if path("club/enter_pin") in arg:
                d.store.record_pin_failure("cus-1", time.time(), 900, 1, 600)
            super()._app_play_and_get_digits(arg, app_uuid)

    d.app.crm = CountingCRM()
    fake = LockWhileTyping(d.address, Script(dtmf=["1001", PIN], bridges=["answer:10"])).run()
    wait_idle(d.server)
    row = d.store.get_call(fake.uuid)
    assert_reached_error(fake, row)
    assert row is not None and row["auth_result"] == "locked"
    assert checked == []
    assert fake.prompts() == [path("club/intro"), path("club/locked")]
