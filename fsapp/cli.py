"""The ``fsapp`` command line. Exit codes: 0 ok, 1 runtime failure, 2 bad input or config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from fsapp import config as configmod
from fsapp import log as logmod

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input: the message names the argument or file at fault."""


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="config file (default: fsapp.toml if present, else the shipped sample)")


def _config_path(args: argparse.Namespace) -> str | None:
    if args.config:
        return args.config
    return "fsapp.toml" if os.path.exists("fsapp.toml") else None


def load_config(args: argparse.Namespace, *, check_files: bool = True) -> configmod.Config:
    return configmod.load(_config_path(args), check_files=check_files)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fsapp", description="Customer-club engine for FreeSWITCH (outbound ESL).")
    p.add_argument("--log-level", default=os.environ.get("FSAPP_LOG_LEVEL", ""),
                   help="debug, info, warning, error (default: info; warning for simulate)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the daemon")
    _config_arg(s)

    s = sub.add_parser("check", help="validate the config and every prompt it names")
    _config_arg(s)

    s = sub.add_parser("init", help="lay out a site: config, prompts FreeSWITCH can read, customer directory")
    s.add_argument("dir", metavar="DIR", help="folder for fsapp.toml (made if missing)")
    s.add_argument("--sounds-dir", default="", help="where the prompts go (default: DIR/sounds); "
                   "FreeSWITCH must read it, e.g. /usr/share/freeswitch/sounds/fsapp")
    s.add_argument("--language", default="fa", choices=("fa", "en"))
    s.add_argument("--storage", default="sqlite:fsapp.db", help="[storage] url (default: sqlite:fsapp.db beside it)")
    s.add_argument("--customers", default="empty", choices=("empty", "sample"),
                   help="an empty customer directory (default) or the sample customers")

    s = sub.add_parser("simulate", help="play FreeSWITCH's side of one call and print a transcript")
    _config_arg(s)
    s.add_argument("--caller", required=True, help="caller ID number, e.g. 09121234567")
    s.add_argument("--caller-name", default="Simulated caller")
    s.add_argument("--called", default="7000", help="destination number")
    s.add_argument("--module", default="", help="entry module code (the fsapp_module channel variable)")
    s.add_argument("--direction", default="inbound", choices=("inbound", "outbound"))
    s.add_argument("--dtmf", default="", help="comma-separated inputs, one per digit prompt ('' = no input)")
    s.add_argument("--bridge", action="append", default=[],
                   help="answer:SECONDS[:caller] | no-answer | busy | unregistered | failed (repeat per bridge)")
    s.add_argument("--hangup-after", type=int, default=None, help="caller hangs up during the Nth app")
    s.add_argument("--connect", default="", help="HOST:PORT of a running daemon (default: in-process)")

    s = sub.add_parser("sounds", help="the prompt pipeline: build, check, tts")
    ssub = s.add_subparsers(dest="sounds_command", required=True, metavar="ACTION")
    b = ssub.add_parser("build", help="convert a designer's drop folder into the prompt layout")
    _config_arg(b)
    b.add_argument("--src", required=True, help="drop folder laid out as <language>/<group>/<name>.<ext>")
    b.add_argument("--dest", default="", help="prompt folder (default: [sounds] dir)")
    b.add_argument("--silence-thresh", type=float, default=-50.0, help="dBFS below which edges are trimmed")
    b.add_argument("--loudness", type=float, default=None, metavar="LUFS",
                   help="EBU R128 loudness to normalise to (default: [sounds] loudness_lufs, -20)")
    c = ssub.add_parser("check", help="list prompts the config names that are missing or in the wrong format")
    _config_arg(c)
    t = ssub.add_parser("tts", help="render placeholder prompts from <dir>/<language>/prompts.toml (espeak-ng)")
    _config_arg(t)
    t.add_argument("--language", default="", help="fa or en (default: [sounds] language)")
    t.add_argument("--overwrite", nargs="*", default=None, metavar="NAME",
                   help="re-render the placeholders tts made (recordings are kept); "
                        "with prompt names, replace exactly those, recordings too")

    from fsapp import journal

    journal.add_cli(sub, _config_arg)
    from fsapp import customers, ledger, loadtest

    loadtest.add_cli(sub)
    customers.add_cli(sub, _config_arg)
    ledger.add_cli(sub, _config_arg)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "simulate", "loadtest"):
        # Cooperative sockets for requests (the HTTP CRM) and psycopg: one slow
        # CRM or database answer must not stall the other calls.
        from gevent import monkey

        if not monkey.is_module_patched("socket"):
            monkey.patch_all(thread=False, subprocess=False)
    logmod.configure(args.log_level or ("warning" if args.command in ("simulate", "loadtest") else "info"),
                     buffered=args.command == "serve")
    try:
        handler = HANDLERS.get(args.command) or getattr(args, "handler", None)
        if handler is None:
            parser.error(f"unknown command {args.command}")
        return int(handler(args) or 0)
    except configmod.ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except UsageError as exc:
        print(f"fsapp {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_RUNTIME


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if cfg.crm.kind != "local":
        # What serve would refuse: a CRM section that cannot work (its token variable unset, ...).
        from fsapp.app import NullMetrics, make_crm

        try:
            make_crm(cfg, None, NullMetrics())  # type: ignore[arg-type]
        except ValueError as exc:
            print(f"{cfg.file}:{exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    print(f"{cfg.file}: ok ({len(cfg.modules)} modules)")
    _site_warnings(cfg, sample=_config_path(args) is None)
    return EXIT_OK


def _site_warnings(cfg: configmod.Config, *, sample: bool = False) -> None:
    """What will not stop the daemon but will stop calls: prompts FreeSWITCH cannot read, no customers.

    The shipped sample loads its sample customers itself (simulate), so its directory is not reported.
    """
    from fsapp import site

    for line in (site.access_warning(cfg), None if sample else site.empty_directory_note(cfg)):
        if line:
            print(line, file=sys.stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fsapp import site

    try:
        made = site.lay_out(Path(args.dir), sounds_dir=Path(args.sounds_dir) if args.sounds_dir else None,
                            language=args.language, storage_url=args.storage, customers=args.customers)
    except site.SiteError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {made.config}")
    print(f"prompts: {made.copied} files copied to {made.sounds}" + (f", {made.kept} already there kept"
                                                                     if made.kept else ""))
    if made.customers:
        print(f"customers: the sample directory loaded ({', '.join(made.customers)})")
    cfg = configmod.load(str(made.config))
    print(f"{cfg.file}: ok ({len(cfg.modules)} modules)")
    _site_warnings(cfg)
    print(f"next: fsapp check -c {made.config}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from fsapp.app import App
    from fsapp.server import Server
    from fsapp.store import StorageError

    path = _config_path(args)
    cfg = configmod.load(path)
    metrics = None
    if cfg.server.metrics_listen:
        from fsapp.metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
    try:
        app = App(cfg, metrics=metrics)
    except StorageError as exc:
        msg = str(exc)
        print(msg if msg.startswith("storage.url") else f"{cfg.file}:storage.url: {msg}", file=sys.stderr)
        return EXIT_RUNTIME
    except ValueError as exc:  # a CRM section that cannot work (missing token variable, ...)
        print(f"{cfg.file}:{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        server = Server(app)
    except OSError as exc:  # the port is taken, the address is not this host's, a port below 1024...
        app.stop()
        listen = f"{cfg.server.listen_host}:{cfg.server.listen_port}"
        print(f"{cfg.file}:server.listen: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    log = logmod.get("fsapp")
    from fsapp import site

    if site.empty_directory_note(cfg):
        log.warning("customer_directory_empty", storage=cfg.storage_url, hint=site.EMPTY_DIRECTORY)
    http = None
    if metrics is not None:
        from fsapp.metrics import health_of, start_http

        try:
            http = start_http(cfg.server.metrics_listen, metrics, health_of(server))
        except OSError as exc:
            print(f"{cfg.file}:server.metrics_listen: {exc}", file=sys.stderr)
            return EXIT_RUNTIME

    def reload() -> None:
        try:
            new = configmod.load(path)
            app.reconfigure(new)
        except (configmod.ConfigError, ValueError) as exc:
            problems = exc.problems if isinstance(exc, configmod.ConfigError) else [f"{cfg.file}:{exc}"]
            log.error("config_reload_rejected", problems=problems)
            app.metrics.config_reload(False)
            return
        app.metrics.config_reload(True)
        log.info("config_reloaded", modules=len(new.modules))

    server.on_reload = reload
    try:
        server.serve_forever()
    finally:
        if http is not None:
            http.stop(timeout=1)
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    import gevent

    from fsapp import simulate
    from fsapp.fakefs import BridgePlan, Script, run_call

    for plan in args.bridge:
        try:
            BridgePlan.parse(plan)
        except ValueError as exc:
            raise UsageError(f"--bridge: {exc}") from None
    dtmf = args.dtmf.split(",") if args.dtmf else []
    variables = {"fsapp_module": args.module} if args.module else {}
    script = Script(caller=args.caller, caller_name=args.caller_name, destination=args.called,
                    direction=args.direction, variables=variables, dtmf=dtmf, bridges=args.bridge,
                    hangup_after=args.hangup_after)
    cfg = load_config(args)
    if _config_path(args) is None:
        _seed_sample_directory(cfg)
    else:
        from fsapp import site

        note = site.empty_directory_note(cfg)
        print(f"({note.split(': warning: ', 1)[1]})\n" if note else "", end="")
    if args.connect:
        try:
            host, port = configmod.parse_listen(args.connect)
        except ValueError as exc:
            raise UsageError(f"--connect: {exc}") from None
        call = run_call((host, port), script)
        row = None
        try:
            from fsapp.store import open_store

            gevent.sleep(0.2)
            row = open_store(cfg.storage_url, pool_size=cfg.storage_pool_size).get_call(call.uuid)
        except Exception:  # noqa: BLE001 - the daemon's journal may live elsewhere
            row = None
        print(simulate.describe(cfg, call, row))
        return EXIT_OK if not call.error else EXIT_RUNTIME
    server = simulate.in_process_server(cfg)
    try:
        call = run_call(server.address, script)
        simulate.wait_idle(server)
        row = server.app.store.get_call(call.uuid)
    finally:
        server.stream.close()
        server.app.stop()
    print(simulate.describe(cfg, call, row))
    return EXIT_OK if not call.error else EXIT_RUNTIME


def cmd_sounds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fsapp import sounds

    cfg = load_config(args, check_files=False)
    writes_dir = args.sounds_command == "tts" or (args.sounds_command == "build" and not args.dest)
    if writes_dir and cfg.sounds.dir == configmod.INSTALLED_SOUNDS:
        raise UsageError(f"[sounds] dir is the prompt set installed with fsapp ({cfg.sounds.dir}), not to be "
                         "written: lay out a site (fsapp init DIR) and use its config, or give --dest")
    try:
        if args.sounds_command == "build":
            dest = Path(args.dest) if args.dest else cfg.sounds.dir
            loudness = cfg.sounds.loudness_lufs if args.loudness is None else args.loudness
            reports = sounds.build(Path(args.src), dest, silence_thresh_dbfs=args.silence_thresh,
                                   loudness_lufs=loudness)
            print(sounds.format_report(reports))
            return EXIT_BAD_INPUT if any(r.status == "error" for r in reports) else EXIT_OK
        if args.sounds_command == "tts":
            report = sounds.tts(cfg.sounds.dir, args.language or cfg.sounds.language,
                                overwrite=args.overwrite is not None, names=args.overwrite or (),
                                loudness_lufs=cfg.sounds.loudness_lufs)
            print(report.describe())
            return EXIT_OK
    except sounds.SoundsError as exc:
        raise UsageError(str(exc)) from None
    problems = configmod.check_prompt_files(cfg)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    print(f"{len(configmod.prompt_names(cfg))} prompts ok in {cfg.sounds.dir}/{cfg.sounds.language}")
    return EXIT_OK


def _seed_sample_directory(cfg: configmod.Config) -> None:
    """On the shipped sample config, an empty local directory gets the sample customers."""
    from fsapp import customers
    from fsapp.store import open_store

    if cfg.crm.kind != "local":
        return
    store = open_store(cfg.storage_url, pool_size=cfg.storage_pool_size)
    try:
        if store.customer_count():
            return
        sample = configmod.PACKAGE_DIR / "sample" / "customers.csv"
        rows = customers.parse_csv(sample.read_text(encoding="utf-8"), source=str(sample), region=cfg.crm.region)
        customers.save_rows(store, rows)
        print(f"(sample customer directory loaded into {configmod.sqlite_path(cfg.storage_url)}: "
              f"{', '.join(r['id'] for r in rows)})\n")
    finally:
        store.close()


HANDLERS: dict[str, Any] = {
    "sounds": cmd_sounds,
    "serve": cmd_serve,
    "check": cmd_check,
    "init": cmd_init,
    "simulate": cmd_simulate,
}


if __name__ == "__main__":
    sys.exit(main())
