"""Baseline (c) of ``bench/run.py``: the bench's short IVR on Genesis (asyncio) ``Outbound``.

Genesis's own setup sends ``connect``; its ``events``/``linger`` options are turned off
so that the app itself sends ``myevents`` and ``linger`` (Genesis would otherwise send
``filter`` + ``event plain all``), as fsapp and greenswitch do. Then: answer, playback of
a prompt, play_and_get_digits, bridge to user 1001 when the caller pressed 1, hangup and
``exit``. The same prompt, digit collection and dial string as fsapp's bench module.

    python bench/peer_genesis.py PORT [--uvloop]

Prints ``ready 127.0.0.1:PORT`` on stderr once listening; SIGTERM stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from genesis import Outbound, Session, use_uvloop

PROMPT = str(Path(__file__).resolve().parents[1] / "sounds" / "fa" / "menu" / "main.wav")
DIAL = "{originate_timeout=30}user/1001@${domain_name}"


async def menu(session: Session) -> None:
    """One call, after Genesis's ``connect``."""
    await session.send("myevents")
    await session.send("linger")
    session.is_lingering = True
    channel = session.channel
    if channel is None:
        raise RuntimeError("Genesis built no channel for this session")
    await channel.answer()
    await channel.playback(PROMPT)
    event = await channel.play_and_get_digits(tries=1, timeout=5000, terminators="#", file=PROMPT, minimal=1,
                                              maximum=1, regexp="^(1)$", var_name="bench_choice",
                                              invalid_file="silence_stream://250", digit_timeout=3000)
    if event.get("variable_bench_choice") == "1":
        # Channel.bridge joins two known channels; a dial string goes through sendmsg.
        await session.sendmsg("execute", "bridge", DIAL, block=True)
    await channel.hangup()
    await session.send("exit")


async def serve(port: int) -> int:
    app = Outbound(menu, "127.0.0.1", port, events=False, linger=False)
    await app.start(block=False)
    assert app.server is not None
    bound = app.server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready 127.0.0.1:{bound}", file=sys.stderr, flush=True)
    await stop.wait()
    await app.stop()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (Genesis's use_uvloop)")
    args = parser.parse_args(argv)
    if args.uvloop and not use_uvloop():
        print("uvloop is not available", file=sys.stderr)
        return 2
    return asyncio.run(serve(args.port))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
