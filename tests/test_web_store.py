"""The store's parts of the web console on SQLite and PostgreSQL: keyset pages, users, failed logins."""

from __future__ import annotations

import pytest

from fsapp.store import open_store, tie


def _rows(store) -> list[str]:  # noqa: ANN001 - a Store
    uuids = []
    for i, (talk, status) in enumerate([(5, "answered"), (5, "missed"), (0, "missed"), (90, "answered"),
                                        (5, "answered"), (0, "failed"), (30, "answered")]):
        uuid = f"u{i:02}"
        store.call_finished(uuid, {"started_at": f"2024-03-0{1 + i % 3}T10:00:0{i}", "status": status,
                                   "talk_seconds": talk, "caller": f"0912{i}"})
        uuids.append(uuid)
    return uuids


@pytest.mark.parametrize("order", ["started_at", "talk_seconds", "status", "caller", "missed_cause", "ring_seconds"])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_keyset_pages_walk_the_sorted_journal_once(store_url: str, order: str, descending: bool, size: int) -> None:
    store = open_store(store_url)
    _rows(store)
    seen: list[dict] = []
    after = ""
    while True:
        page = store.page_calls(order=order, descending=descending, after=after, limit=size)
        seen += page
        if len(page) < size:
            break
        after = page[-1]["uuid"]
    keys = [(r[order], *map(r.get, tie(order))) for r in seen]
    assert keys == sorted(keys, reverse=descending)
    assert len({r["uuid"] for r in seen}) == len(seen) == 7
    store.close()


def test_keyset_pages_keep_the_filters(store_url: str) -> None:
    store = open_store(store_url)
    _rows(store)
    first = store.page_calls(order="talk_seconds", limit=1, status="missed")
    rest = store.page_calls(order="talk_seconds", after=first[0]["uuid"], limit=10, status="missed")
    assert [r["uuid"] for r in first + rest] == ["u02", "u01"]
    with pytest.raises(ValueError, match="cannot page by 'recording'"):
        store.page_calls(order="recording")
    store.close()


def test_web_users_and_login_failures(store_url: str) -> None:
    store = open_store(store_url)
    assert store.web_user_set("sara", "viewer", "h1") is True
    assert store.web_user_set("sara", "admin", "h2") is False
    user = store.web_user("sara")
    assert user is not None and (user["role"], user["password_hash"]) == ("admin", "h2")
    assert [u["name"] for u in store.web_users()] == ["sara"] and "password_hash" not in store.web_users()[0]
    store.web_login_failed(["user:sara", "addr:10.0.0.1"], now=1000.0, window=60)
    store.web_login_failed(["user:sara"], now=1030.0, window=60)
    assert store.web_login_failures("user:sara", since=990.0) == 2
    assert store.web_login_failures("addr:10.0.0.1", since=1010.0) == 0
    store.web_login_failed(["user:bob"], now=1100.0, window=60)  # forgets what is older than the window
    assert store.web_login_failures("user:sara", since=0.0) == 0
    store.web_login_clear("user:bob")
    assert store.web_login_failures("user:bob", since=0.0) == 0
    store.close()


def test_recent_charges_page_newest_first(store_url: str) -> None:
    store = open_store(store_url)
    for i, customer in enumerate(["A", "B", "A", "A"]):
        meter = {"call_uuid": f"c{i}", "module": "paid", "customer_id": customer, "interval_minutes": 1,
                 "amount_per_interval": 10, "opened_at": 0.0, "beat_at": 0.0}
        assert store.meter_open(meter)
        assert store.settle(meter, talk_seconds=60, units=1, amount=10 + i, source="call", outbox=[], now=1.0)
    ids = [r["id"] for r in store.charges()]
    assert [r["id"] for r in store.recent_charges(limit=2)] == ids[::-1][:2]
    assert [r["id"] for r in store.recent_charges(limit=2, before=ids[2])] == [ids[1], ids[0]]
    assert [r["amount"] for r in store.recent_charges(limit=9, customer="A")] == [13, 12, 10]
    store.close()


def test_queue_and_recording_filters(store_url: str) -> None:
    store = open_store(store_url)
    store.call_finished("q1", {"started_at": "2024-03-01T10:00:00Z", "status": "answered", "queue": "support",
                               "recording": "/r/q1.wav", "attempts": [{"target": "queue:support",
                                                                       "outcome": "answered"}]})
    store.call_finished("q2", {"started_at": "2024-03-01T10:00:01Z", "status": "missed", "queue": "sales"})
    store.call_finished("q3", {"started_at": "2024-03-01T10:00:02Z", "status": "answered", "recording": "/r/q3.wav"})

    def uuids(**f: object) -> list[str]:
        return [r["uuid"] for r in store.page_calls(limit=10, **f)]

    assert uuids(queue="support") == ["q1"]
    assert uuids(queue="sales") == ["q2"]
    assert uuids(queue="supp") == []  # a whole name
    assert uuids(has_recording=True) == ["q1", "q3"]
    assert uuids(has_recording=False) == ["q2"]
    assert uuids(has_recording=True, queue="support") == ["q1"]
    assert store.get_call("q1")["attempts"] == [{"target": "queue:support", "outcome": "answered"}]
    assert store.get_call("q3")["attempts"] == []
    store.close()
