"""``fsapp simulate``: one call played against the daemon, printed as a transcript."""

from __future__ import annotations

import time
from typing import Any

import gevent

from fsapp.config import Config
from fsapp.fakefs import FakeFreeSWITCH


def in_process_server(cfg: Config) -> Any:
    """A daemon inside this process on a free loopback port (for simulate and tests)."""
    from fsapp.app import App
    from fsapp.server import Server

    app = App(cfg)
    server = Server(app, listener=("127.0.0.1", 0))
    server.start()
    return server


def wait_idle(server: Any, timeout: float = 10.0) -> None:
    """Wait until the daemon has finished (and journaled) every call."""
    deadline = time.monotonic() + timeout
    while server.calls and time.monotonic() < deadline:
        gevent.sleep(0.005)


def describe(cfg: Config, call: FakeFreeSWITCH, row: dict[str, Any] | None) -> str:
    """A transcript a person can read."""
    base = cfg.sounds.fs_dir or str(cfg.sounds.dir)
    prefix = f"{base}/{cfg.sounds.language}/"

    def name(path: str) -> str:
        if path.startswith(prefix) and path.endswith(".wav"):
            return path[len(prefix) : -4]
        return path

    s = call.script
    lines = [f"call {call.uuid}", f"  from {s.caller} ({s.caller_name}) to {s.destination}, {s.direction}"]
    if s.variables.get("fsapp_module"):
        lines.append(f"  entry module {s.variables['fsapp_module']}")
    for st in call.steps:
        if st.app == "playback":
            files = st.arg[len("file_string://") :].split("!") if st.arg.startswith("file_string://") else [st.arg]
            lines.append("  play    " + " + ".join(name(f) for f in files) + _mark(st.result, "FILE PLAYED"))
        elif st.app == "play_and_get_digits":
            parts = st.arg.split(" ")
            prompt = name(parts[5]) if len(parts) > 5 and not parts[5].startswith("silence_stream") else "(silence)"
            got = st.result or "no input"
            if got.startswith("invalid:"):
                got = f"{got[8:]} (rejected)"
            lines.append(f"  ask     {prompt} -> keys {got}")
        elif st.app == "bridge":
            lines.append(f"  bridge  {st.arg} -> {st.result}")
        elif st.app == "callcenter":
            lines.append(f"  queue   {st.arg} -> {st.result}")
        elif st.app == "transfer":
            lines.append(f"  transfer {st.arg}")
        elif st.app == "hangup":
            lines.append(f"  hangup  {st.arg}")
        elif st.app in ("answer", "multiset", "set"):
            continue
        else:
            lines.append(f"  {st.app:7} {st.arg}{_mark(st.result, '_none_')}")
    if not call.up and call.hangup_cause and not any(st.app == "hangup" for st in call.steps):
        lines.append(f"  caller hung up ({call.hangup_cause})")
    if row:
        lines.append(
            f"outcome: {row['status']}; modules {' -> '.join(row['modules']) or '-'}; "
            f"talk {row['talk_seconds']} s of {row['total_seconds']} s; charge {row['charge']:,} rial"
        )
        if row.get("customer_id"):
            lines.append(
                f"customer: {row['customer_id']} {row['customer_name']} ({row['customer_type']}); "
                f"auth {row['auth_method']} {row['auth_result']}"
            )
        if row.get("extension"):
            lines.append(f"extension: {row['extension']}")
    if call.error:
        lines.append(f"stand-in error: {call.error}")
    return "\n".join(lines)


def _mark(result: str, normal: str) -> str:
    return "" if not result or result == normal else f"  [{result}]"


def seed_sample_directory(cfg: Config) -> str:
    """On the shipped sample config, an empty local directory gets the sample customers.

    Returns the line to tell the user, or "" when nothing was loaded.
    """
    from fsapp import config as configmod
    from fsapp import customers
    from fsapp.store import open_store, sqlite_path

    if cfg.crm.kind != "local":
        return ""
    store = open_store(cfg.storage_url, pool_size=cfg.storage_pool_size)
    try:
        if store.customer_count():
            return ""
        sample = configmod.PACKAGE_DIR / "sample" / "customers.csv"
        rows = customers.parse_csv(sample.read_text(encoding="utf-8"), source=str(sample), region=cfg.crm.region)
        customers.save_rows(store, rows)
        return (f"(sample customer directory loaded into {sqlite_path(cfg.storage_url)}: "
                f"{', '.join(r['id'] for r in rows)})\n")
    finally:
        store.close()
